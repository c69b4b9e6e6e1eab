//! Every index for a station: hour by hour for air, day by day for heat, and a summary by year.

use crate::aqhi::{self, Aqhi};
use crate::cai::{self, CaiHour, Grade, PmAverage, Table};
use crate::feed::{Hour, Pollutant, WeatherDay, POLLUTANTS};
use crate::heat::{self, Level};
use crate::series::{self, AirSeries, WeatherSeries};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One hour at one station.
#[derive(Clone, Debug)]
pub struct HourRow {
    pub station: String,
    pub hour: Hour,
    /// The hour's own readings, by [`Pollutant::index`].
    pub hourly: [Option<f64>; 6],
    /// The PM averages that entered the CAI.
    pub pm25_24h: Option<f64>,
    pub pm10_24h: Option<f64>,
    /// The 8-hour mean ozone (6 of 8 hours), for the 8-hour standard of 0.06 ppm.
    pub o3_8h: Option<f64>,
    pub cai: CaiHour,
    pub aqhi: Option<Aqhi>,
}

/// The air indices for every hour of a station's series.
pub fn air(table: &Table, s: &AirSeries, pm: PmAverage) -> Vec<HourRow> {
    let inputs = cai::inputs(s, pm);
    let cai = cai::from_inputs(table, &inputs);
    let aqhi = aqhi::hourly(s);
    let o3_8h = series::moving_mean(
        &s.column(Pollutant::O3),
        series::O3_WINDOW,
        series::O3_MIN_VALID,
    );
    (0..s.len())
        .map(|t| HourRow {
            station: s.station.clone(),
            hour: s.hour(t),
            hourly: s.values[t],
            pm25_24h: inputs[Pollutant::Pm25.index()][t],
            pm10_24h: inputs[Pollutant::Pm10.index()][t],
            o3_8h: o3_8h[t],
            cai: cai[t],
            aqhi: aqhi[t],
        })
        .collect()
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

/// Writes the hourly table as CSV.
pub fn write_hourly(path: &Path, rows: &[HourRow]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    let mut header = vec!["station".to_string(), "hour".to_string()];
    header.extend(POLLUTANTS.iter().map(|p| p.name().to_string()));
    header.extend(["pm25_24h", "pm10_24h", "o3_8h"].map(String::from));
    header.extend(POLLUTANTS.iter().map(|p| format!("cai_{}", p.name())));
    header.extend(["cai", "cai_grade", "cai_main", "aqhi", "aqhi_risk"].map(String::from));
    w.write_record(&header).map_err(std::io::Error::other)?;
    for r in rows {
        let mut rec = vec![r.station.clone(), r.hour.to_string()];
        for p in POLLUTANTS {
            rec.push(opt(
                r.hourly[p.index()],
                if p.unit() == "ppm" { 3 } else { 0 },
            ));
        }
        rec.push(opt(r.pm25_24h, 2));
        rec.push(opt(r.pm10_24h, 2));
        rec.push(opt(r.o3_8h, 4));
        for p in POLLUTANTS {
            rec.push(
                r.cai.sub[p.index()]
                    .map(|s| s.index.to_string())
                    .unwrap_or_default(),
            );
        }
        match r.cai.cai {
            Some((p, s)) => {
                rec.extend([s.index.to_string(), s.grade.name().into(), p.name().into()])
            }
            None => rec.extend([String::new(), String::new(), String::new()]),
        }
        match r.aqhi {
            Some(a) => rec.extend([a.label(), a.risk.name().into()]),
            None => rec.extend([String::new(), String::new()]),
        }
        w.write_record(&rec).map_err(std::io::Error::other)?;
    }
    w.flush()
}

/// One day's heat at one station.
#[derive(Clone, Debug)]
pub struct HeatDay {
    pub station: String,
    pub date: NaiveDate,
    pub tmax_c: Option<f64>,
    /// The humidity the feels-like maximum was computed with.
    pub rh_pct: Option<f64>,
    pub feels_like_max_c: Option<f64>,
    pub level: Level,
    /// "hourly" or "daily" (estimated from the daily summary, see [`heat::rh_at_tmax`]).
    pub basis: &'static str,
}

fn with_levels(mut days: Vec<HeatDay>) -> Vec<HeatDay> {
    let mut by_station: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for d in &days {
        if let Some(v) = d.feels_like_max_c {
            by_station
                .entry(d.station.clone())
                .or_default()
                .insert(d.date, v);
        }
    }
    let levels: BTreeMap<String, BTreeMap<NaiveDate, Level>> = by_station
        .iter()
        .map(|(s, m)| (s.clone(), heat::levels(m)))
        .collect();
    for d in &mut days {
        d.level = levels
            .get(&d.station)
            .and_then(|m| m.get(&d.date))
            .copied()
            .unwrap_or(Level::None);
    }
    days
}

/// Heat from daily summaries: the feels-like maximum at the day's maximum temperature, with the
/// humidity at that temperature estimated from the daily means ([`heat::rh_at_tmax`]). Summer
/// days only (May–September).
pub fn heat_from_daily(days: &[WeatherDay]) -> Vec<HeatDay> {
    let rows = days
        .iter()
        .filter(|d| heat::summer(d.date))
        .map(|d| {
            let rh = match (d.tmax_c, d.tavg_c, d.rh_pct) {
                (Some(tx), Some(ta), Some(rh)) => Some(heat::rh_at_tmax(tx, ta, rh)),
                _ => None,
            };
            HeatDay {
                station: d.station.clone(),
                date: d.date,
                tmax_c: d.tmax_c,
                rh_pct: rh,
                feels_like_max_c: d.tmax_c.zip(rh).map(|(t, h)| heat::feels_like(t, h)),
                level: Level::None,
                basis: "daily",
            }
        })
        .collect();
    with_levels(rows)
}

/// Heat from hourly weather: the largest hourly feels-like temperature of each summer day.
pub fn heat_from_hourly(series: &[WeatherSeries]) -> Vec<HeatDay> {
    let mut rows = Vec::new();
    for s in series {
        let mut by_day: BTreeMap<NaiveDate, Vec<(f64, f64)>> = BTreeMap::new();
        let mut tmax: BTreeMap<NaiveDate, f64> = BTreeMap::new();
        for (t, v) in s.values.iter().enumerate() {
            let day = Hour(s.start.0 + t as i64).day();
            if !heat::summer(day) {
                continue;
            }
            if let Some(ta) = v[0] {
                let e = tmax.entry(day).or_insert(f64::MIN);
                *e = e.max(ta);
            }
            let hours = by_day.entry(day).or_default();
            if let (Some(ta), Some(rh)) = (v[0], v[1]) {
                hours.push((ta, rh));
            }
        }
        for (day, hours) in by_day {
            let fl = heat::daily_max_from_hours(&hours);
            let at_max = hours
                .iter()
                .max_by(|a, b| heat::feels_like(a.0, a.1).total_cmp(&heat::feels_like(b.0, b.1)))
                .map(|h| h.1);
            rows.push(HeatDay {
                station: s.station.clone(),
                date: day,
                tmax_c: tmax.get(&day).copied(),
                rh_pct: fl.and(at_max),
                feels_like_max_c: fl,
                level: Level::None,
                basis: "hourly",
            });
        }
    }
    with_levels(rows)
}

pub fn write_heat(path: &Path, rows: &[HeatDay]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record([
        "station",
        "date",
        "tmax_c",
        "rh_pct",
        "feels_like_max_c",
        "level",
        "basis",
    ])
    .map_err(std::io::Error::other)?;
    for r in rows {
        w.write_record([
            r.station.clone(),
            r.date.to_string(),
            opt(r.tmax_c, 1),
            opt(r.rh_pct, 1),
            opt(r.feels_like_max_c, 2),
            r.level.name().to_string(),
            r.basis.to_string(),
        ])
        .map_err(std::io::Error::other)?;
    }
    w.flush()
}

/// Counts for one station and year.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct YearSummary {
    pub station: String,
    pub year: i32,
    pub hours: usize,
    /// Hours by CAI grade (good, moderate, unhealthy, very unhealthy).
    pub cai_hours: [usize; 4],
    /// Hours with no CAI (an input missing or its average incomplete).
    pub no_cai_hours: usize,
    /// Hours whose 24-hour PM2.5 was "very unhealthy" (76 µg/m³ and above).
    pub pm25_very_unhealthy_hours: usize,
    /// Hours with AQHI 7 or more (high or very high risk).
    pub aqhi_high_hours: usize,
    pub heat_advisory_days: usize,
    pub heat_warning_days: usize,
}

/// Summaries by station and year.
pub fn summarise(hours: &[HourRow], heat: &[HeatDay]) -> Vec<YearSummary> {
    let mut by: BTreeMap<(String, i32), YearSummary> = BTreeMap::new();
    fn entry<'a>(
        by: &'a mut BTreeMap<(String, i32), YearSummary>,
        station: &str,
        year: i32,
    ) -> &'a mut YearSummary {
        by.entry((station.to_string(), year))
            .or_insert_with(|| YearSummary {
                station: station.to_string(),
                year,
                ..Default::default()
            })
    }
    for r in hours {
        let s = entry(&mut by, &r.station, r.hour.day().year());
        s.hours += 1;
        match r.cai.cai {
            Some((_, x)) => s.cai_hours[x.grade as usize] += 1,
            None => s.no_cai_hours += 1,
        }
        if r.cai.sub[Pollutant::Pm25.index()].is_some_and(|x| x.grade == Grade::VeryUnhealthy) {
            s.pm25_very_unhealthy_hours += 1;
        }
        if r.aqhi.is_some_and(|a| a.value >= 7) {
            s.aqhi_high_hours += 1;
        }
    }
    for d in heat {
        let s = entry(&mut by, &d.station, d.date.year());
        match d.level {
            Level::Advisory => s.heat_advisory_days += 1,
            Level::Warning => s.heat_warning_days += 1,
            Level::None => {}
        }
    }
    by.into_values().collect()
}
