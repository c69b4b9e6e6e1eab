//! Environment feeds: hourly pollutants and weather, per station, from CSV files and from JSON
//! shaped like the AirKorea and KMA open-API responses.
//!
//! Every reader returns an [`Ingest`]: the observations it could read, [`Flag`]s for values that
//! are missing or implausible (set to `None`, never imputed), and [`Quarantined`] rows that could
//! not be read at all, each naming the file, the line (or JSON item) and the field.

use chrono::{Duration, NaiveDate, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// The six pollutants of Korea's Comprehensive Air-quality Index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pollutant {
    Pm25,
    Pm10,
    O3,
    No2,
    Co,
    So2,
}

pub const POLLUTANTS: [Pollutant; 6] = [
    Pollutant::Pm25,
    Pollutant::Pm10,
    Pollutant::O3,
    Pollutant::No2,
    Pollutant::Co,
    Pollutant::So2,
];

impl Pollutant {
    pub fn name(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "pm25",
            Pollutant::Pm10 => "pm10",
            Pollutant::O3 => "o3",
            Pollutant::No2 => "no2",
            Pollutant::Co => "co",
            Pollutant::So2 => "so2",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "PM2.5",
            Pollutant::Pm10 => "PM10",
            Pollutant::O3 => "O3",
            Pollutant::No2 => "NO2",
            Pollutant::Co => "CO",
            Pollutant::So2 => "SO2",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Pollutant::Pm25 | Pollutant::Pm10 => "µg/m³",
            _ => "ppm",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Pollutant> {
        POLLUTANTS
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
    }

    /// The range a working monitor can report. Outside it a value is implausible: it is flagged
    /// and not used. The upper ends are well above the worst hours on record in Korea (PM10 near
    /// 1,000 µg/m³ in Asian-dust storms) and above the top of the CAI tables for the gases.
    pub fn plausible(self) -> (f64, f64) {
        match self {
            Pollutant::Pm25 => (0.0, 1000.0),
            Pollutant::Pm10 => (0.0, 3000.0),
            Pollutant::O3 => (0.0, 0.6),
            Pollutant::No2 => (0.0, 2.0),
            Pollutant::Co => (0.0, 50.0),
            Pollutant::So2 => (0.0, 1.0),
        }
    }

    /// Column names this pollutant is known by: our own, AirKorea's, and the Korean names.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Pollutant::Pm25 => &["pm25", "pm2.5", "pm25value", "초미세먼지"],
            Pollutant::Pm10 => &["pm10", "pm10value", "미세먼지"],
            Pollutant::O3 => &["o3", "o3value", "오존"],
            Pollutant::No2 => &["no2", "no2value", "이산화질소"],
            Pollutant::Co => &["co", "covalue", "일산화탄소"],
            Pollutant::So2 => &["so2", "so2value", "아황산가스"],
        }
    }
}

/// An hour in Korea Standard Time, named by its end as the Korean networks do: hour `h` covers
/// (h−1, h], "2018-01-01 01:00" is the first hour of 1 January and "2018-01-01 24:00" the last.
/// Counted from 1970-01-01 00:00 KST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hour(pub i64);

fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid epoch")
}

impl Hour {
    /// Parses "YYYY-MM-DD HH:MM" (HH 00–24, MM 00), "YYYY-MM-DDTHH:MM[:SS]", or AirKorea's
    /// "YYYYMMDDHH".
    pub fn parse(s: &str) -> Result<Hour, String> {
        let t = s.trim();
        let bad = || format!("'{t}' is not an hour (expected YYYY-MM-DD HH:00)");
        let (date, hh, mm) = if t.len() == 10 && t.bytes().all(|b| b.is_ascii_digit()) {
            let d = NaiveDate::parse_from_str(&t[..8], "%Y%m%d").map_err(|_| bad())?;
            (d, t[8..10].parse::<i64>().map_err(|_| bad())?, 0)
        } else {
            if t.len() < 16 {
                return Err(bad());
            }
            let d = NaiveDate::parse_from_str(&t[..10], "%Y-%m-%d").map_err(|_| bad())?;
            let sep = t.as_bytes()[10];
            if sep != b' ' && sep != b'T' || t.as_bytes()[13] != b':' {
                return Err(bad());
            }
            let hh = t[11..13].parse::<i64>().map_err(|_| bad())?;
            let mm = t[14..16].parse::<i64>().map_err(|_| bad())?;
            let rest = &t[16..];
            if !(rest.is_empty() || rest == ":00") {
                return Err(bad());
            }
            (d, hh, mm)
        };
        if !(0..=24).contains(&hh) || mm != 0 {
            return Err(format!("'{t}': hour must be 00–24 on the hour"));
        }
        let days = (date - epoch().date()).num_days();
        Ok(Hour(days * 24 + hh))
    }

    /// The calendar day the hour belongs to (the day of its start).
    pub fn day(self) -> NaiveDate {
        epoch().date() + Duration::days((self.0 - 1).div_euclid(24))
    }

    /// 1–24: which hour of its day this is.
    pub fn hour_of_day(self) -> u32 {
        ((self.0 - 1).rem_euclid(24) + 1) as u32
    }

    /// The clock time at the hour's start, 0–23.
    pub fn start_clock(self) -> u32 {
        (epoch() + Duration::hours(self.0 - 1)).hour()
    }

    pub fn from_day(day: NaiveDate, hour_of_day: u32) -> Hour {
        Hour((day - epoch().date()).num_days() * 24 + hour_of_day as i64)
    }
}

impl fmt::Display for Hour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:00",
            self.day().format("%Y-%m-%d"),
            self.hour_of_day()
        )
    }
}

/// One station's pollutant readings for one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct AirObs {
    pub station: String,
    pub hour: Hour,
    /// Indexed by [`Pollutant::index`]; `None` is missing or implausible (see the flags).
    pub values: [Option<f64>; 6],
}

/// One station's weather for one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct WeatherObs {
    pub station: String,
    pub hour: Hour,
    pub temp_c: Option<f64>,
    pub rh_pct: Option<f64>,
    pub wind_ms: Option<f64>,
}

/// One station's daily weather summary.
#[derive(Clone, Debug, PartialEq)]
pub struct WeatherDay {
    pub station: String,
    pub date: NaiveDate,
    pub tmax_c: Option<f64>,
    pub tmin_c: Option<f64>,
    pub tavg_c: Option<f64>,
    /// Daily mean relative humidity.
    pub rh_pct: Option<f64>,
    pub precip_mm: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The source said the value is missing ("-", empty, or an AirKorea status flag).
    Missing,
    /// Outside the plausible range: not used.
    Implausible,
    /// Kept, but doubtful (PM2.5 above PM10).
    Suspect,
    /// Hours with no record at all between a station's first and last hour.
    Gap,
    /// A second record for a station and hour; the first is kept.
    Duplicate,
}

/// A value the feeds could not use as given. Nothing is imputed: the value is `None` downstream,
/// and whatever needs it (a moving average, an index) says it is incomplete.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flag {
    pub source: String,
    pub station: String,
    pub hour: String,
    pub field: String,
    pub kind: FlagKind,
    pub detail: String,
}

/// A row that could not be read: it goes to the quarantine file, and nothing of it is used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quarantined {
    pub file: String,
    /// 1-based line of a CSV file (the header is line 1), or `items[i]` in a JSON response.
    pub line: String,
    pub field: String,
    pub value: String,
    pub reason: String,
}

/// What a reader produced.
#[derive(Debug)]
pub struct Ingest<T> {
    pub records: Vec<T>,
    pub flags: Vec<Flag>,
    pub quarantined: Vec<Quarantined>,
}

impl<T> Default for Ingest<T> {
    fn default() -> Self {
        Ingest {
            records: Vec::new(),
            flags: Vec::new(),
            quarantined: Vec::new(),
        }
    }
}

impl<T> Ingest<T> {
    pub fn extend(&mut self, other: Ingest<T>) {
        self.records.extend(other.records);
        self.flags.extend(other.flags);
        self.quarantined.extend(other.quarantined);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: the API answered {code} ({message})")]
    Api {
        file: String,
        code: String,
        message: String,
    },
}

fn file_err(file: &str, message: impl Into<String>) -> FeedError {
    FeedError::File {
        file: file.to_string(),
        message: message.into(),
    }
}

/// A cell's text as a number. `Ok(None)` for the sources' missing markers.
fn number(s: &str) -> Result<Option<f64>, String> {
    let t = s.trim();
    if t.is_empty() || t == "-" || t == "--" || t.eq_ignore_ascii_case("null") || t == "NA" {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("'{t}' is not a number")),
    }
}

/// Reads a pollutant value, flagging what is missing or implausible.
fn pollutant_value(
    p: Pollutant,
    raw: Option<f64>,
    source: &str,
    station: &str,
    hour: Hour,
    flags: &mut Vec<Flag>,
) -> Option<f64> {
    let flag = |kind, detail: String| Flag {
        source: source.to_string(),
        station: station.to_string(),
        hour: hour.to_string(),
        field: p.name().to_string(),
        kind,
        detail,
    };
    match raw {
        None => {
            flags.push(flag(FlagKind::Missing, "no value".into()));
            None
        }
        Some(x) => {
            let (lo, hi) = p.plausible();
            if x < lo || x > hi {
                flags.push(flag(
                    FlagKind::Implausible,
                    format!("{x} {} is outside {lo}–{hi}", p.unit()),
                ));
                None
            } else {
                Some(x)
            }
        }
    }
}

fn suspect_pm(obs: &AirObs, source: &str, flags: &mut Vec<Flag>) {
    if let (Some(pm25), Some(pm10)) = (
        obs.values[Pollutant::Pm25.index()],
        obs.values[Pollutant::Pm10.index()],
    ) {
        // The two monitors differ by a few µg/m³ in ordinary operation; beyond that PM2.5 cannot
        // exceed PM10, which contains it.
        if pm25 > pm10 * 1.1 + 5.0 {
            flags.push(Flag {
                source: source.to_string(),
                station: obs.station.clone(),
                hour: obs.hour.to_string(),
                field: "pm25".into(),
                kind: FlagKind::Suspect,
                detail: format!("PM2.5 {pm25} above PM10 {pm10}"),
            });
        }
    }
}

/// Options for the CSV readers.
#[derive(Clone, Debug, Default)]
pub struct CsvOptions {
    /// The station name for files without a station column.
    pub station: Option<String>,
    /// Extra column names for pollutants, e.g. `("이산화탄소", No2)` for the Seoul file, whose NO2
    /// column is mislabelled CO2.
    pub aliases: Vec<(String, Pollutant)>,
}

fn norm(h: &str) -> String {
    h.trim().trim_start_matches('\u{feff}').to_lowercase()
}

fn column(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    headers
        .iter()
        .position(|h| names.contains(&norm(h).as_str()))
}

fn csv_reader<'a>(
    file: &str,
    bytes: &'a [u8],
) -> Result<(csv::Reader<&'a [u8]>, csv::StringRecord), FeedError> {
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = r
        .headers()
        .map_err(|e| file_err(file, format!("line 1: {e}")))?
        .clone();
    Ok((r, headers))
}

/// The time (or date) column, one of `names`, and the station column, which may be absent when
/// the options name the station.
fn locate(
    file: &str,
    headers: &csv::StringRecord,
    opts: &CsvOptions,
    names: &[&str],
) -> Result<(usize, Option<usize>), FeedError> {
    let time = column(headers, names)
        .ok_or_else(|| file_err(file, format!("line 1: no time column (one of {names:?})")))?;
    let station = column(headers, STATION_COLUMNS);
    if station.is_none() && opts.station.is_none() {
        return Err(file_err(
            file,
            "line 1: no station column, and no station name was given",
        ));
    }
    Ok((time, station))
}

fn station_of(rec: &csv::StringRecord, col: Option<usize>, opts: &CsvOptions) -> String {
    match col {
        Some(c) => rec.get(c).unwrap_or("").trim().to_string(),
        None => opts.station.clone().unwrap_or_default(),
    }
}

const TIME_COLUMNS: &[&str] = &["일시", "time", "datetime", "datatime", "tm", "hour"];
const STATION_COLUMNS: &[&str] = &[
    "station",
    "stationname",
    "측정소명",
    "stnnm",
    "stnid",
    "district",
];

/// Reads hourly pollutants from CSV. Columns are found by name (our names, AirKorea's, or the
/// Korean ones); a time column and at least one pollutant are required.
pub fn read_air_csv(
    file: &str,
    bytes: &[u8],
    opts: &CsvOptions,
) -> Result<Ingest<AirObs>, FeedError> {
    let (mut r, headers) = csv_reader(file, bytes)?;
    let (time, station_col) = locate(file, &headers, opts, TIME_COLUMNS)?;
    let mut cols: Vec<(Pollutant, usize)> = Vec::new();
    for p in POLLUTANTS {
        let mut names: Vec<String> = p.aliases().iter().map(|s| s.to_string()).collect();
        names.extend(
            opts.aliases
                .iter()
                .filter(|(_, q)| *q == p)
                .map(|(n, _)| norm(n)),
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Some(i) = column(&headers, &names) {
            cols.push((p, i));
        }
    }
    if cols.is_empty() {
        return Err(file_err(
            file,
            "line 1: no pollutant column (pm25, pm10, o3, no2, co, so2)",
        ));
    }
    let mut out = Ingest::default();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let q = |field: &str, value: &str, reason: String| Quarantined {
            file: file.to_string(),
            line: line.to_string(),
            field: field.to_string(),
            value: value.to_string(),
            reason,
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.quarantined.push(q("", "", e.to_string()));
                continue;
            }
        };
        let t = rec.get(time).unwrap_or("");
        let hour = match Hour::parse(t) {
            Ok(h) => h,
            Err(e) => {
                out.quarantined
                    .push(q(headers.get(time).unwrap_or("time"), t, e));
                continue;
            }
        };
        let station = station_of(&rec, station_col, opts);
        if station.is_empty() {
            out.quarantined
                .push(q("station", "", "empty station".into()));
            continue;
        }
        let mut raw = [None; 6];
        let mut bad = None;
        for &(p, c) in &cols {
            let cell = rec.get(c).unwrap_or("");
            match number(cell) {
                Ok(v) => raw[p.index()] = Some(v),
                Err(e) => {
                    bad = Some(q(headers.get(c).unwrap_or(p.name()), cell, e));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        let mut values = [None; 6];
        for &(p, _) in &cols {
            values[p.index()] = pollutant_value(
                p,
                raw[p.index()].flatten(),
                file,
                &station,
                hour,
                &mut out.flags,
            );
        }
        let obs = AirObs {
            station,
            hour,
            values,
        };
        suspect_pm(&obs, file, &mut out.flags);
        out.records.push(obs);
    }
    Ok(out)
}

/// Reads hourly weather from CSV: time, temperature (°C), relative humidity (%), wind (m/s).
pub fn read_weather_csv(
    file: &str,
    bytes: &[u8],
    opts: &CsvOptions,
) -> Result<Ingest<WeatherObs>, FeedError> {
    let (mut r, headers) = csv_reader(file, bytes)?;
    let (time, station_col) = locate(file, &headers, opts, TIME_COLUMNS)?;
    let temp = column(&headers, &["temp_c", "ta", "temperature", "기온"]);
    let rh = column(&headers, &["humidity_pct", "hm", "rh", "humidity", "습도"]);
    let wind = column(&headers, &["wind_ms", "ws", "wind", "풍속"]);
    if temp.is_none() {
        return Err(file_err(file, "line 1: no temperature column (temp_c, ta)"));
    }
    let mut out = Ingest::default();
    for (i, rec) in r.records().enumerate() {
        let line = (i + 2).to_string();
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.quarantined.push(Quarantined {
                    file: file.into(),
                    line,
                    field: String::new(),
                    value: String::new(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let t = rec.get(time).unwrap_or("");
        let hour = match Hour::parse(t) {
            Ok(h) => h,
            Err(e) => {
                out.quarantined.push(Quarantined {
                    file: file.into(),
                    line,
                    field: headers.get(time).unwrap_or("time").into(),
                    value: t.into(),
                    reason: e,
                });
                continue;
            }
        };
        let station = station_of(&rec, station_col, opts);
        let cells = [("temp_c", temp), ("humidity_pct", rh), ("wind_ms", wind)];
        let mut vals = [None; 3];
        let mut bad = None;
        for (k, (name, col)) in cells.iter().enumerate() {
            let Some(c) = col else { continue };
            let cell = rec.get(*c).unwrap_or("");
            match number(cell) {
                Ok(v) => vals[k] = weather_value(name, v, file, &station, hour, &mut out.flags),
                Err(e) => {
                    bad = Some(Quarantined {
                        file: file.into(),
                        line: line.clone(),
                        field: headers.get(*c).unwrap_or(name).into(),
                        value: cell.into(),
                        reason: e,
                    });
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        out.records.push(WeatherObs {
            station,
            hour,
            temp_c: vals[0],
            rh_pct: vals[1],
            wind_ms: vals[2],
        });
    }
    Ok(out)
}

/// Plausible ranges for weather: the Korean records are −32.6 °C and 41.0 °C.
fn weather_range(field: &str) -> (f64, f64) {
    match field {
        "temp_c" | "tmax_c" | "tmin_c" | "tavg_c" => (-50.0, 50.0),
        "humidity_pct" => (0.0, 100.0),
        "wind_ms" => (0.0, 75.0),
        _ => (0.0, 1000.0),
    }
}

fn weather_value(
    field: &str,
    v: Option<f64>,
    source: &str,
    station: &str,
    hour: Hour,
    flags: &mut Vec<Flag>,
) -> Option<f64> {
    let (lo, hi) = weather_range(field);
    let flag = |kind, detail: String| Flag {
        source: source.into(),
        station: station.into(),
        hour: hour.to_string(),
        field: field.into(),
        kind,
        detail,
    };
    match v {
        None => {
            flags.push(flag(FlagKind::Missing, "no value".into()));
            None
        }
        Some(x) if x < lo || x > hi => {
            flags.push(flag(
                FlagKind::Implausible,
                format!("{x} is outside {lo}–{hi}"),
            ));
            None
        }
        Some(x) => Some(x),
    }
}

/// Reads daily weather from CSV: date, tmax_c, tmin_c, tavg_c, humidity_pct, precipitation_mm
/// (the Seoul file's columns), or the KMA daily names (maxTa, minTa, avgTa, avgRhm, sumRn).
pub fn read_weather_daily_csv(
    file: &str,
    bytes: &[u8],
    opts: &CsvOptions,
) -> Result<Ingest<WeatherDay>, FeedError> {
    let (mut r, headers) = csv_reader(file, bytes)?;
    let (date, station_col) = locate(file, &headers, opts, &["date", "tm", "일시", "day"])?;
    let cols = [
        ("tmax_c", column(&headers, &["tmax_c", "maxta", "최고기온"])),
        ("tmin_c", column(&headers, &["tmin_c", "minta", "최저기온"])),
        ("tavg_c", column(&headers, &["tavg_c", "avgta", "평균기온"])),
        (
            "humidity_pct",
            column(&headers, &["humidity_pct", "avgrhm", "평균상대습도"]),
        ),
        (
            "precipitation_mm",
            column(&headers, &["precipitation_mm", "sumrn", "일강수량"]),
        ),
    ];
    if cols[0].1.is_none() {
        return Err(file_err(
            file,
            "line 1: no daily maximum temperature column (tmax_c, maxTa)",
        ));
    }
    let mut out = Ingest::default();
    for (i, rec) in r.records().enumerate() {
        let line = (i + 2).to_string();
        let quarantine = |field: &str, value: &str, reason: String| Quarantined {
            file: file.into(),
            line: line.clone(),
            field: field.into(),
            value: value.into(),
            reason,
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.quarantined.push(quarantine("", "", e.to_string()));
                continue;
            }
        };
        let d = rec.get(date).unwrap_or("").trim();
        let Ok(day) = NaiveDate::parse_from_str(d, "%Y-%m-%d") else {
            out.quarantined.push(quarantine(
                "date",
                d,
                format!("'{d}' is not a date (YYYY-MM-DD)"),
            ));
            continue;
        };
        let station = station_of(&rec, station_col, opts);
        let mut vals = [None; 5];
        let mut bad = None;
        for (k, (name, col)) in cols.iter().enumerate() {
            let Some(c) = col else { continue };
            let cell = rec.get(*c).unwrap_or("");
            match number(cell) {
                Ok(v) => {
                    let noon = Hour::from_day(day, 12);
                    vals[k] = weather_value(name, v, file, &station, noon, &mut out.flags)
                }
                Err(e) => {
                    bad = Some(quarantine(headers.get(*c).unwrap_or(name), cell, e));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        out.records.push(WeatherDay {
            station,
            date: day,
            tmax_c: vals[0],
            tmin_c: vals[1],
            tavg_c: vals[2],
            rh_pct: vals[3],
            precip_mm: vals[4],
        });
    }
    Ok(out)
}

/// The item list of an open-API response: `response.body.items` as a list (AirKorea) or as
/// `{ "item": [...] }` (KMA), after checking `response.header.resultCode` is "00".
fn api_items<'a>(file: &str, v: &'a Value) -> Result<&'a [Value], FeedError> {
    let resp = v
        .get("response")
        .ok_or_else(|| file_err(file, "no 'response' object"))?;
    if let Some(h) = resp.get("header") {
        let code = h.get("resultCode").map(text).unwrap_or_default();
        if code != "00" {
            return Err(FeedError::Api {
                file: file.into(),
                code,
                message: h.get("resultMsg").map(text).unwrap_or_default(),
            });
        }
    }
    let items = resp
        .get("body")
        .and_then(|b| b.get("items"))
        .ok_or_else(|| file_err(file, "no 'response.body.items'"))?;
    let list = match items {
        Value::Array(a) => a.as_slice(),
        Value::Object(o) => match o.get("item") {
            Some(Value::Array(a)) => a.as_slice(),
            Some(one @ Value::Object(_)) => std::slice::from_ref(one),
            _ => &[],
        },
        Value::String(s) if s.is_empty() => &[],
        _ => {
            return Err(file_err(
                file,
                "'response.body.items' is neither a list nor {item: [...]}",
            ))
        }
    };
    Ok(list)
}

fn api_json(file: &str, bytes: &[u8]) -> Result<Value, FeedError> {
    serde_json::from_slice(bytes).map_err(|e| file_err(file, format!("not JSON: {e}")))
}

/// A KMA item's station: its name, else its number, else the caller's.
fn kma_station(item: &Value, station: Option<&str>) -> String {
    ["stnNm", "stnId"]
        .iter()
        .filter_map(|k| item.get(*k).map(text))
        .find(|s| !s.is_empty())
        .or_else(|| station.map(str::to_string))
        .unwrap_or_default()
}

impl Quarantined {
    pub fn new(file: &str, line: &str, field: &str, value: String, reason: String) -> Quarantined {
        Quarantined {
            file: file.into(),
            line: line.into(),
            field: field.into(),
            value,
            reason,
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads an AirKorea real-time response (`getMsrstnAcctoRltmMesureDnsty` and its siblings):
/// `dataTime`, `stationName`, and `pm25Value`, `pm10Value`, `o3Value`, `no2Value`, `coValue`,
/// `so2Value` as strings, "-" when missing. A non-empty status flag (`pm25Flag`, …: 통신장애,
/// 점검및교정, …) marks the value missing, with the flag as the reason.
pub fn read_airkorea_json(
    file: &str,
    bytes: &[u8],
    station: Option<&str>,
) -> Result<Ingest<AirObs>, FeedError> {
    let v = api_json(file, bytes)?;
    let mut out = Ingest::default();
    for (i, item) in api_items(file, &v)?.iter().enumerate() {
        let at = format!("items[{i}]");
        let q = |field: &str, value: String, reason: String| {
            Quarantined::new(file, &at, field, value, reason)
        };
        let t = item.get("dataTime").map(text).unwrap_or_default();
        let hour = match Hour::parse(&t) {
            Ok(h) => h,
            Err(e) => {
                out.quarantined.push(q("dataTime", t, e));
                continue;
            }
        };
        let name = item
            .get("stationName")
            .map(text)
            .filter(|s| !s.is_empty())
            .or_else(|| station.map(str::to_string));
        let Some(name) = name else {
            out.quarantined
                .push(q("stationName", String::new(), "no station name".into()));
            continue;
        };
        let mut values = [None; 6];
        let mut bad = None;
        for p in POLLUTANTS {
            let key = format!("{}Value", p.name());
            let raw = item.get(&key).map(text).unwrap_or_default();
            let status = item
                .get(format!("{}Flag", p.name()))
                .map(text)
                .unwrap_or_default();
            if !status.is_empty() {
                out.flags.push(Flag {
                    source: file.into(),
                    station: name.clone(),
                    hour: hour.to_string(),
                    field: p.name().into(),
                    kind: FlagKind::Missing,
                    detail: format!("station flag: {status}"),
                });
                continue;
            }
            match number(&raw) {
                Ok(x) => {
                    values[p.index()] = pollutant_value(p, x, file, &name, hour, &mut out.flags)
                }
                Err(e) => {
                    bad = Some(q(&key, raw, e));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        let obs = AirObs {
            station: name,
            hour,
            values,
        };
        suspect_pm(&obs, file, &mut out.flags);
        out.records.push(obs);
    }
    Ok(out)
}

/// Reads a KMA ASOS hourly response (`getWthrDataList`, `dataCd=ASOS`, `dateCd=HR`): `tm`,
/// `stnNm` (or `stnId`), `ta` °C, `hm` %, `ws` m/s; empty strings are missing.
pub fn read_kma_json(
    file: &str,
    bytes: &[u8],
    station: Option<&str>,
) -> Result<Ingest<WeatherObs>, FeedError> {
    let v = api_json(file, bytes)?;
    let mut out = Ingest::default();
    for (i, item) in api_items(file, &v)?.iter().enumerate() {
        let at = format!("items[{i}]");
        let t = item.get("tm").map(text).unwrap_or_default();
        let hour = match Hour::parse(&t) {
            Ok(h) => h,
            Err(e) => {
                out.quarantined
                    .push(Quarantined::new(file, &at, "tm", t, e));
                continue;
            }
        };
        let name = kma_station(item, station);
        let mut vals = [None; 3];
        let mut bad = None;
        for (k, (key, field)) in [("ta", "temp_c"), ("hm", "humidity_pct"), ("ws", "wind_ms")]
            .into_iter()
            .enumerate()
        {
            let raw = item.get(key).map(text).unwrap_or_default();
            match number(&raw) {
                Ok(x) => vals[k] = weather_value(field, x, file, &name, hour, &mut out.flags),
                Err(e) => {
                    bad = Some(Quarantined {
                        file: file.into(),
                        line: at.clone(),
                        field: key.into(),
                        value: raw,
                        reason: e,
                    });
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        out.records.push(WeatherObs {
            station: name,
            hour,
            temp_c: vals[0],
            rh_pct: vals[1],
            wind_ms: vals[2],
        });
    }
    Ok(out)
}

/// Reads a KMA ASOS daily response (`getWthrDataList`, `dataCd=ASOS`, `dateCd=DAY`): `tm` (the
/// date), `stnNm` (or `stnId`), `maxTa`, `minTa`, `avgTa` °C, `avgRhm` %, `sumRn` mm; empty strings
/// are missing.
pub fn read_kma_daily_json(
    file: &str,
    bytes: &[u8],
    station: Option<&str>,
) -> Result<Ingest<WeatherDay>, FeedError> {
    let v = api_json(file, bytes)?;
    let mut out = Ingest::default();
    for (i, item) in api_items(file, &v)?.iter().enumerate() {
        let at = format!("items[{i}]");
        let q = |field: &str, value: String, reason: String| {
            Quarantined::new(file, &at, field, value, reason)
        };
        let t = item.get("tm").map(text).unwrap_or_default();
        let Ok(date) = NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d") else {
            out.quarantined.push(q(
                "tm",
                t.clone(),
                format!("'{t}' is not a date (YYYY-MM-DD)"),
            ));
            continue;
        };
        let name = kma_station(item, station);
        let noon = Hour::from_day(date, 12);
        let mut vals = [None; 5];
        let mut bad = None;
        for (k, (key, field)) in [
            ("maxTa", "tmax_c"),
            ("minTa", "tmin_c"),
            ("avgTa", "tavg_c"),
            ("avgRhm", "humidity_pct"),
            ("sumRn", "precipitation_mm"),
        ]
        .into_iter()
        .enumerate()
        {
            let raw = item.get(key).map(text).unwrap_or_default();
            match number(&raw) {
                Ok(x) => vals[k] = weather_value(field, x, file, &name, noon, &mut out.flags),
                Err(e) => {
                    bad = Some(q(key, raw, e));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            out.quarantined.push(b);
            continue;
        }
        out.records.push(WeatherDay {
            station: name,
            date,
            tmax_c: vals[0],
            tmin_c: vals[1],
            tavg_c: vals[2],
            rh_pct: vals[3],
            precip_mm: vals[4],
        });
    }
    Ok(out)
}

/// A reader of an API response: (file name, bytes, station for items without one).
type JsonReader<T> = fn(&str, &[u8], Option<&str>) -> Result<Ingest<T>, FeedError>;
/// A reader of a CSV file.
type CsvReader<T> = fn(&str, &[u8], &CsvOptions) -> Result<Ingest<T>, FeedError>;

/// Reads a feed file by its extension (`.gz` unpacked first): `.json` with `json`, anything else
/// with `csv`.
fn read_file<T>(
    path: &Path,
    opts: &CsvOptions,
    json: JsonReader<T>,
    csv: CsvReader<T>,
) -> Result<Ingest<T>, FeedError> {
    let (name, bytes) = read_bytes(path)?;
    let file = path.display().to_string();
    if name.ends_with(".json") {
        json(&file, &bytes, opts.station.as_deref())
    } else {
        csv(&file, &bytes, opts)
    }
}

/// Reads daily weather: a KMA ASOS daily response (`.json`) or CSV.
pub fn read_weather_daily_file(
    path: &Path,
    opts: &CsvOptions,
) -> Result<Ingest<WeatherDay>, FeedError> {
    read_file(path, opts, read_kma_daily_json, read_weather_daily_csv)
}

/// Reads pollutants: an AirKorea response (`.json`) or CSV; `.gz` files are unpacked first.
pub fn read_air_file(path: &Path, opts: &CsvOptions) -> Result<Ingest<AirObs>, FeedError> {
    read_file(path, opts, read_airkorea_json, read_air_csv)
}

/// Reads hourly weather: a KMA ASOS response (`.json`) or CSV.
pub fn read_weather_file(path: &Path, opts: &CsvOptions) -> Result<Ingest<WeatherObs>, FeedError> {
    read_file(path, opts, read_kma_json, read_weather_csv)
}

/// The file's bytes (unpacked if it ends in `.gz`) and its name without `.gz`.
pub fn read_bytes(path: &Path) -> Result<(String, Vec<u8>), FeedError> {
    let file = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| file_err(&file, e.to_string()))?;
    match file.strip_suffix(".gz") {
        Some(stem) => Ok((stem.to_string(), gunzip(&file, &raw)?)),
        None => Ok((file, raw)),
    }
}

pub fn gunzip(file: &str, raw: &[u8]) -> Result<Vec<u8>, FeedError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| file_err(file, format!("gzip: {e}")))?;
    Ok(out)
}

/// Writes quarantined rows as CSV (file, line, field, value, reason).
pub fn write_quarantine(path: &Path, rows: &[Quarantined]) -> std::io::Result<()> {
    write_csv(path, rows)
}

/// Writes flags as CSV (source, station, hour, field, kind, detail).
pub fn write_flags(path: &Path, rows: &[Flag]) -> std::io::Result<()> {
    write_csv(path, rows)
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r).map_err(std::io::Error::other)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_named_by_their_end() {
        let h = Hour::parse("2018-01-01 24:00").unwrap();
        assert_eq!(h, Hour::parse("2018-01-02 00:00").unwrap());
        assert_eq!(h.day(), NaiveDate::from_ymd_opt(2018, 1, 1).unwrap());
        assert_eq!(h.hour_of_day(), 24);
        assert_eq!(h.start_clock(), 23);
        assert_eq!(h.to_string(), "2018-01-01 24:00");
        let first = Hour::parse("2018-01-01 01:00").unwrap();
        assert_eq!(first.to_string(), "2018-01-01 01:00");
        assert_eq!(first.start_clock(), 0);
        assert_eq!(Hour::parse("2018010101").unwrap(), first);
        assert_eq!(Hour::parse("2018-01-01T01:00:00").unwrap(), first);
        assert_eq!(h.0 - first.0, 23);
        assert_eq!(Hour::from_day(h.day(), 24), h);
        for bad in [
            "2018-01-01 25:00",
            "2018-01-01 01:30",
            "2018-13-01 01:00",
            "yesterday",
            "",
        ] {
            assert!(Hour::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_rows_flag_missing_and_implausible_and_quarantine_unreadable() {
        let csv = "일시,초미세먼지,미세먼지,오존,이산화탄소,일산화탄소,아황산가스\n\
                   2018-01-01 01:00,17,31,0.018,0.021,0.4,0.005\n\
                   2018-01-01 02:00,16,29,0.019,0.02,-,0.005\n\
                   2018-01-01 03:00,abc,28,0.014,0.025,0.4,0.005\n\
                   2018-01-01 04:00,-3,33,0.013,0.025,0.4,0.005\n\
                   2018-01-01 4:00,16,33,0.013,0.025,0.4,0.005\n\
                   2018-01-01 05:00,90,40,0.013,0.025,0.4,0.005\n";
        let opts = CsvOptions {
            station: Some("seoul".into()),
            aliases: vec![("이산화탄소".into(), Pollutant::No2)],
        };
        let got = read_air_csv("air.csv", csv.as_bytes(), &opts).unwrap();
        assert_eq!(got.records.len(), 4);
        assert_eq!(got.records[0].values[Pollutant::No2.index()], Some(0.021));
        assert_eq!(got.records[1].values[Pollutant::Co.index()], None);
        assert_eq!(got.records[2].values[Pollutant::Pm25.index()], None);
        let kinds: Vec<_> = got
            .flags
            .iter()
            .map(|f| (f.hour.as_str(), f.field.as_str(), f.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("2018-01-01 02:00", "co", FlagKind::Missing),
                ("2018-01-01 04:00", "pm25", FlagKind::Implausible),
                ("2018-01-01 05:00", "pm25", FlagKind::Suspect),
            ]
        );
        assert_eq!(got.quarantined.len(), 2);
        assert_eq!(
            (
                got.quarantined[0].line.as_str(),
                got.quarantined[0].field.as_str()
            ),
            ("4", "초미세먼지")
        );
        assert_eq!(got.quarantined[1].line, "6");
        assert!(
            got.quarantined[1].reason.contains("4:00"),
            "{:?}",
            got.quarantined[1]
        );
        // Without the alias the mislabelled column is not read as anything.
        let plain = CsvOptions {
            station: Some("seoul".into()),
            aliases: vec![],
        };
        let got = read_air_csv("air.csv", csv.as_bytes(), &plain).unwrap();
        assert!(got
            .records
            .iter()
            .all(|r| r.values[Pollutant::No2.index()].is_none()));
    }

    #[test]
    fn airkorea_json_reads_values_flags_and_bad_items() {
        let body = r#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_CODE"},
          "body":{"totalCount":3,"pageNo":1,"numOfRows":10,"items":[
            {"dataTime":"2024-03-01 14:00","stationName":"종로구","pm25Value":"21","pm10Value":"40",
             "o3Value":"0.031","no2Value":"0.022","coValue":"0.4","so2Value":"0.003","pm25Flag":null},
            {"dataTime":"2024-03-01 14:00","stationName":"중구","pm25Value":"-","pm10Value":"38",
             "o3Value":"0.030","no2Value":"0.020","coValue":"0.4","so2Value":"0.002","pm25Flag":"통신장애"},
            {"dataTime":"2024-03-01 14:00","stationName":"용산구","pm25Value":"x1","pm10Value":"38"}
          ]}}}"#;
        let got = read_airkorea_json("resp.json", body.as_bytes(), None).unwrap();
        assert_eq!(got.records.len(), 2);
        assert_eq!(got.records[0].station, "종로구");
        assert_eq!(got.records[0].values[Pollutant::O3.index()], Some(0.031));
        assert_eq!(got.records[1].values[Pollutant::Pm25.index()], None);
        assert!(got.flags.iter().any(|f| f.detail.contains("통신장애")));
        assert_eq!(got.quarantined[0].line, "items[2]");
        assert_eq!(got.quarantined[0].field, "pm25Value");
        let err = r#"{"response":{"header":{"resultCode":"30","resultMsg":"SERVICE_KEY_IS_NOT_REGISTERED_ERROR"}}}"#;
        let e = read_airkorea_json("resp.json", err.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("30") && e.contains("SERVICE_KEY"), "{e}");
    }

    #[test]
    fn kma_daily_json_reads_days_and_quarantines_bad_items() {
        let body = r#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_SERVICE"},
          "body":{"dataType":"JSON","items":{"item":[
            {"tm":"2018-08-01","stnId":"108","stnNm":"서울","maxTa":"39.6","minTa":"30.3","avgTa":"33.6","avgRhm":"56.9","sumRn":""},
            {"tm":"2018-08-02","stnId":"108","stnNm":"서울","maxTa":"37.9","minTa":"","avgTa":"31.9","avgRhm":"x","sumRn":""},
            {"tm":"08/03/2018","stnId":"108","stnNm":"서울","maxTa":"36.0"}
          ]}}}}"#;
        let got = read_kma_daily_json("day.json", body.as_bytes(), None).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].tmax_c, Some(39.6));
        assert_eq!(got.records[0].rh_pct, Some(56.9));
        assert_eq!(got.records[0].precip_mm, None);
        let q: Vec<_> = got
            .quarantined
            .iter()
            .map(|q| (q.line.as_str(), q.field.as_str()))
            .collect();
        assert_eq!(q, vec![("items[1]", "avgRhm"), ("items[2]", "tm")]);
    }

    #[test]
    fn kma_json_reads_hourly_weather() {
        let body = r#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_SERVICE"},
          "body":{"dataType":"JSON","items":{"item":[
            {"tm":"2018-08-01 15:00","stnId":"108","stnNm":"서울","ta":"39.6","hm":"29","ws":"2.6"},
            {"tm":"2018-08-01 16:00","stnId":"108","stnNm":"서울","ta":"","hm":"31","ws":"3.1"},
            {"tm":"2018-08-01 17:00","stnId":"108","stnNm":"서울","ta":"380","hm":"31","ws":"3.1"}
          ]}}}}"#;
        let got = read_kma_json("kma.json", body.as_bytes(), None).unwrap();
        assert_eq!(got.records.len(), 3);
        assert_eq!(got.records[0].temp_c, Some(39.6));
        assert_eq!(got.records[1].temp_c, None);
        assert_eq!(got.records[2].temp_c, None);
        let kinds: Vec<_> = got.flags.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FlagKind::Missing, FlagKind::Implausible]);
    }
}
