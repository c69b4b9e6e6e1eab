//! The 24-hour outlook on the real Seoul series: fitted on 2018–2020, scored on 2021–2022.

use chrono::NaiveDate;
use medfed_city::feed::{Hour, Pollutant};
use medfed_city::forecast::{self, TmaxModel, LEADS};
use medfed_city::{seoul, series};
use std::collections::BTreeMap;

#[test]
fn pollutant_outlook_beats_persistence_and_climatology_on_later_years() {
    let got = seoul::air().unwrap();
    let mut flags = got.flags;
    let s = series::air_series("seoul", got.records, &mut flags).remove(0);
    let split = s.at(Hour::parse("2021-01-01 01:00").unwrap()).unwrap();
    for p in [Pollutant::Pm25, Pollutant::Pm10, Pollutant::O3] {
        let x: Vec<Option<f64>> = s
            .column(p)
            .iter()
            .map(|v| v.map(|c| if p.unit() == "ppm" { c * 1000.0 } else { c }))
            .collect();
        let m = forecast::Model::fit(&x, s.start, 0..split).unwrap();
        let e = forecast::evaluate(&m, &x, s.start, split..x.len());
        eprintln!("{}: lead, n, MAE, persistence, climatology", p.label());
        for k in [1, 3, 6, 12, 24] {
            eprintln!(
                "  {k:2} {} {:.2} {:.2} {:.2}",
                e.n[k - 1],
                e.mae[k - 1],
                e.mae_persistence[k - 1],
                e.mae_climatology[k - 1]
            );
        }
        assert!(e.n.iter().all(|&n| n > 16_000), "{:?}", e.n);
        for k in 1..=LEADS {
            let i = k - 1;
            // Never worse than climatology, and better than persistence from a few hours out.
            assert!(e.mae[i] < e.mae_climatology[i], "{} lead {k}", p.label());
            if k >= 3 {
                assert!(e.mae[i] < e.mae_persistence[i], "{} lead {k}", p.label());
            }
        }
    }
}

#[test]
fn tmax_outlook_beats_persistence_and_climatology() {
    let days = seoul::weather().unwrap();
    let tmax: BTreeMap<NaiveDate, f64> = days
        .records
        .iter()
        .filter_map(|d| Some((d.date, d.tmax_c?)))
        .collect();
    let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
    let m = TmaxModel::fit(&tmax, d(2016, 1, 1)..=d(2020, 12, 31)).unwrap();
    for k in 1..=2 {
        let (mut n, mut mae, mut pers, mut clim) = (0.0, 0.0, 0.0, 0.0);
        for (day, v) in tmax.range(d(2021, 1, 1)..) {
            let Some(y) = tmax.get(&(*day + chrono::Duration::days(k as i64))) else {
                continue;
            };
            n += 1.0;
            mae += (m.predict(*day, *v, k) - y).abs();
            pers += (v - y).abs();
            clim += (m.climatology(*day + chrono::Duration::days(k as i64)) - y).abs();
        }
        eprintln!(
            "tmax +{k} d: n {n} MAE {:.2} persistence {:.2} climatology {:.2}",
            mae / n,
            pers / n,
            clim / n
        );
        assert!(mae < pers && mae < clim);
    }
}
