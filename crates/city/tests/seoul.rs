//! The indices on the real Seoul series (`../shared/data/seoul_air_quality`, `seoul_weather`):
//! hand-worked cases from the published tables, and every hour and day against an independent
//! Python implementation of the same published definitions (`tests/reference/indices.py`).

use medfed_city::cai::{PmAverage, Table};
use medfed_city::feed::{self, FlagKind, Hour, Pollutant, POLLUTANTS};
use medfed_city::indices::{self, HourRow};
use medfed_city::{seoul, series};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel)
}

const AIR: &str = "seoul_air_quality/seoul_air_hourly_2018_2022.csv";
const WEATHER: &str = "seoul_weather/seoul_daily_weather_2016_2025.csv";

fn rows() -> (Vec<HourRow>, Vec<feed::Flag>) {
    let got = feed::read_air_file(&shared(AIR), &seoul::air_options()).unwrap();
    assert!(got.quarantined.is_empty(), "{:?}", got.quarantined);
    let mut flags = got.flags;
    let s = series::air_series("seoul", got.records, &mut flags);
    assert_eq!(s.len(), 1);
    (
        indices::air(&Table::standard(), &s[0], PmAverage::Trailing24h),
        flags,
    )
}

fn cell(x: Option<u32>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

#[test]
fn embedded_series_are_the_shared_files() {
    for (gz, rel) in [(seoul::AIR_GZ, AIR), (seoul::WEATHER_GZ, WEATHER)] {
        let unpacked = feed::gunzip("embedded", gz).unwrap();
        assert_eq!(unpacked, std::fs::read(shared(rel)).unwrap(), "{rel}");
    }
}

#[test]
fn the_seoul_file_has_its_known_faults_flagged() {
    let (rows, flags) = rows();
    let count = |k: FlagKind| flags.iter().filter(|f| f.kind == k).count();
    // 2019-12-01 is in the file twice; 2019-12-07 and 2020-02-29 are not in it at all.
    assert_eq!(count(FlagKind::Duplicate), 24);
    let gaps: Vec<_> = flags
        .iter()
        .filter(|f| f.kind == FlagKind::Gap)
        .map(|f| (f.hour.as_str(), f.detail.as_str()))
        .collect();
    assert_eq!(
        gaps,
        vec![
            (
                "2019-12-07 01:00",
                "24 hour(s) with no record, to 2019-12-07 24:00"
            ),
            (
                "2020-02-29 01:00",
                "24 hour(s) with no record, to 2020-02-29 24:00"
            ),
        ]
    );
    // One CO reading is "-".
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| f.kind == FlagKind::Missing)
        .collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(
        (missing[0].hour.as_str(), missing[0].field.as_str()),
        ("2019-08-01 15:00", "co")
    );
    assert_eq!(count(FlagKind::Implausible), 0);
    assert_eq!(rows.len(), 43_776 + 48);
    // The gap hours are in the series as nothing, not as guesses.
    let gap = rows
        .iter()
        .find(|r| r.hour == Hour::parse("2019-12-07 12:00").unwrap())
        .unwrap();
    assert!(gap.hourly.iter().all(Option::is_none) && gap.cai.cai.is_none() && gap.aqhi.is_none());
}

#[test]
fn hand_worked_cases() {
    let (rows, _) = rows();
    let by_hour: HashMap<Hour, &HourRow> = rows.iter().map(|r| (r.hour, r)).collect();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cai_cases.csv"),
    )
    .unwrap();
    let body = medfed_city::cai::without_comments(&text);
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let mut n = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        let hour = Hour::parse(&rec[0]).unwrap();
        let row = by_hour[&hour];
        let near = |want: &str, got: Option<f64>, tol: f64| match (want.is_empty(), got) {
            (true, None) => true,
            (false, Some(g)) => (want.parse::<f64>().unwrap() - g).abs() <= tol,
            _ => false,
        };
        assert!(
            near(&rec[1], row.pm25_24h, 0.005),
            "{hour} pm25_24h {:?}",
            row.pm25_24h
        );
        assert!(
            near(&rec[2], row.pm10_24h, 0.005),
            "{hour} pm10_24h {:?}",
            row.pm10_24h
        );
        for (k, p) in [
            (7, Pollutant::Pm25),
            (8, Pollutant::Pm10),
            (9, Pollutant::O3),
            (10, Pollutant::No2),
            (11, Pollutant::Co),
            (12, Pollutant::So2),
        ] {
            assert_eq!(
                cell(row.cai.sub[p.index()].map(|s| s.index)),
                &rec[k],
                "{hour} {}",
                p.name()
            );
        }
        let (cai, grade, main) = match row.cai.cai {
            Some((p, s)) => (
                s.index.to_string(),
                s.grade.name().to_string(),
                p.name().to_string(),
            ),
            None => Default::default(),
        };
        assert_eq!(
            (cai.as_str(), grade.as_str(), main.as_str()),
            (&rec[13], &rec[14], &rec[15]),
            "{hour}"
        );
        assert_eq!(
            row.aqhi.map(|a| a.label()).unwrap_or_default(),
            &rec[16],
            "{hour} aqhi"
        );
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn every_hour_and_day_match_the_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (py_hours, py_heat) = (
        dir.path().join("ref_hourly.csv"),
        dir.path().join("ref_heat.csv"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/indices.py");
    let st = Command::new("python3")
        .arg(script)
        .args([
            shared(AIR),
            shared(WEATHER),
            py_hours.clone(),
            py_heat.clone(),
        ])
        .status()
        .expect("python3 runs");
    assert!(st.success());

    let (rows, _) = rows();
    let mut r = csv::Reader::from_path(&py_hours).unwrap();
    let header = r.headers().unwrap().clone();
    let refs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(refs.len(), rows.len());
    let mut compared = 0;
    let mut with_cai = 0;
    for (row, want) in rows.iter().zip(&refs) {
        assert_eq!(row.hour.to_string(), &want[0]);
        let mut got = vec![row.hour.to_string()];
        got.extend(
            POLLUTANTS
                .iter()
                .map(|p| cell(row.cai.sub[p.index()].map(|s| s.index))),
        );
        match row.cai.cai {
            Some((p, s)) => {
                with_cai += 1;
                got.extend([s.index.to_string(), s.grade.name().into(), p.name().into()])
            }
            None => got.extend([String::new(), String::new(), String::new()]),
        }
        got.push(row.aqhi.map(|a| a.label()).unwrap_or_default());
        for (k, g) in got.iter().enumerate() {
            assert_eq!(g, &want[k], "{} {}", row.hour, &header[k]);
        }
        compared += 1;
    }
    assert_eq!(compared, 43_824);
    assert!(with_cai > 43_600, "{with_cai}");

    let days = feed::read_weather_daily_csv(
        WEATHER,
        &std::fs::read(shared(WEATHER)).unwrap(),
        &feed::CsvOptions {
            station: Some("seoul".into()),
            aliases: vec![],
        },
    )
    .unwrap();
    assert!(days.quarantined.is_empty() && days.flags.is_empty());
    let heat = indices::heat_from_daily(&days.records);
    let mut r = csv::Reader::from_path(&py_heat).unwrap();
    let refs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(refs.len(), heat.len());
    let mut levels = HashMap::new();
    for (d, want) in heat.iter().zip(&refs) {
        assert_eq!(d.date.to_string(), &want[0]);
        let fl = d.feels_like_max_c.unwrap();
        assert!(
            (fl - want[1].parse::<f64>().unwrap()).abs() <= 0.006,
            "{} {fl} vs {}",
            d.date,
            &want[1]
        );
        assert_eq!(d.level.name(), &want[2], "{}", d.date);
        *levels.entry(d.level.name()).or_insert(0) += 1;
    }
    // The 2018 heat wave is in the data: both levels occur.
    assert!(
        levels.get("warning").copied().unwrap_or(0) > 0
            && levels.get("advisory").copied().unwrap_or(0) > 0
    );
}
