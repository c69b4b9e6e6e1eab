//! Per-station hourly series and the averaging rules.
//!
//! A station's series covers every hour from its first record to its last. Hours with no record
//! are gaps: flagged once per run, and `None` in the series. Averages are trailing windows that
//! need a minimum share of valid hours (75 %, the completeness rule of the Korean and US
//! networks); short of it the average is `None`, never a guess.

use crate::feed::{AirObs, Flag, FlagKind, Hour, Pollutant, WeatherObs};
use std::collections::BTreeMap;

/// One station's hourly pollutant series.
#[derive(Clone, Debug)]
pub struct AirSeries {
    pub station: String,
    pub start: Hour,
    /// `values[t][p]` is pollutant `p` in hour `start + t`.
    pub values: Vec<[Option<f64>; 6]>,
}

impl AirSeries {
    pub fn hour(&self, t: usize) -> Hour {
        Hour(self.start.0 + t as i64)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// One pollutant's column.
    pub fn column(&self, p: Pollutant) -> Vec<Option<f64>> {
        self.values.iter().map(|v| v[p.index()]).collect()
    }

    /// The position of an hour, if the series covers it.
    pub fn at(&self, h: Hour) -> Option<usize> {
        let t = h.0 - self.start.0;
        (t >= 0 && (t as usize) < self.values.len()).then_some(t as usize)
    }
}

/// One station's hourly weather series.
#[derive(Clone, Debug)]
pub struct WeatherSeries {
    pub station: String,
    pub start: Hour,
    /// (temperature °C, relative humidity %, wind m/s) per hour.
    pub values: Vec<[Option<f64>; 3]>,
}

/// Per station: the first hour and the values of every hour from it.
type Grids<const N: usize> = BTreeMap<String, (Hour, Vec<[Option<f64>; N]>)>;

/// Sorts records into per-station series, flagging duplicates and gaps.
fn assemble<T, const N: usize>(
    source: &str,
    records: Vec<T>,
    key: impl Fn(&T) -> (&str, Hour),
    vals: impl Fn(&T) -> [Option<f64>; N],
    flags: &mut Vec<Flag>,
) -> Grids<N> {
    let mut by: BTreeMap<String, BTreeMap<Hour, [Option<f64>; N]>> = BTreeMap::new();
    for r in &records {
        let (station, hour) = key(r);
        let slot = by.entry(station.to_string()).or_default();
        if let std::collections::btree_map::Entry::Vacant(v) = slot.entry(hour) {
            v.insert(vals(r));
        } else {
            flags.push(Flag {
                source: source.into(),
                station: station.into(),
                hour: hour.to_string(),
                field: String::new(),
                kind: FlagKind::Duplicate,
                detail: "a second record for this station and hour; the first is kept".into(),
            });
        }
    }
    let mut out = BTreeMap::new();
    for (station, hours) in by {
        let (Some((&first, _)), Some((&last, _))) =
            (hours.first_key_value(), hours.last_key_value())
        else {
            continue;
        };
        let n = (last.0 - first.0 + 1) as usize;
        let mut v = vec![[None; N]; n];
        let mut prev: Option<Hour> = None;
        for (h, x) in hours {
            if let Some(p) = prev {
                if h.0 > p.0 + 1 {
                    flags.push(Flag {
                        source: source.into(),
                        station: station.clone(),
                        hour: Hour(p.0 + 1).to_string(),
                        field: String::new(),
                        kind: FlagKind::Gap,
                        detail: format!(
                            "{} hour(s) with no record, to {}",
                            h.0 - p.0 - 1,
                            Hour(h.0 - 1)
                        ),
                    });
                }
            }
            v[(h.0 - first.0) as usize] = x;
            prev = Some(h);
        }
        out.insert(station, (first, v));
    }
    out
}

/// Builds each station's pollutant series.
pub fn air_series(source: &str, records: Vec<AirObs>, flags: &mut Vec<Flag>) -> Vec<AirSeries> {
    assemble(
        source,
        records,
        |r| (r.station.as_str(), r.hour),
        |r| r.values,
        flags,
    )
    .into_iter()
    .map(|(station, (start, values))| AirSeries {
        station,
        start,
        values,
    })
    .collect()
}

/// Builds each station's weather series.
pub fn weather_series(
    source: &str,
    records: Vec<WeatherObs>,
    flags: &mut Vec<Flag>,
) -> Vec<WeatherSeries> {
    assemble(
        source,
        records,
        |r| (r.station.as_str(), r.hour),
        |r| [r.temp_c, r.rh_pct, r.wind_ms],
        flags,
    )
    .into_iter()
    .map(|(station, (start, values))| WeatherSeries {
        station,
        start,
        values,
    })
    .collect()
}

/// The trailing mean over `window` hours ending at each hour, when at least `min_valid` of them
/// have a value.
pub fn moving_mean(x: &[Option<f64>], window: usize, min_valid: usize) -> Vec<Option<f64>> {
    let mut out = Vec::with_capacity(x.len());
    let (mut sum, mut n) = (0.0, 0usize);
    for t in 0..x.len() {
        if let Some(v) = x[t] {
            sum += v;
            n += 1;
        }
        if t >= window {
            if let Some(v) = x[t - window] {
                sum -= v;
                n -= 1;
            }
        }
        out.push((n >= min_valid && n > 0).then(|| sum / n as f64));
    }
    out
}

/// Averaging periods and completeness for the indices.
pub const PM_WINDOW: usize = 24;
/// 18 of 24 hours (75 %).
pub const PM_MIN_VALID: usize = 18;
pub const O3_WINDOW: usize = 8;
/// 6 of 8 hours (75 %).
pub const O3_MIN_VALID: usize = 6;
/// The AQHI uses 3-hour means; 2 of 3 hours, as Environment Canada does.
pub const AQHI_WINDOW: usize = 3;
pub const AQHI_MIN_VALID: usize = 2;

/// AirKorea's 24-hour *predicted* moving average for PM (`C24E`), which its real-time CAI uses
/// so that the index reacts to a rising episode before a full day has passed:
///
/// `C24E = (12·C12 + 12·C4) / 24`, with `C12` the mean of the last 12 hours and `C4` the mean of
/// the last 4 hours' `Ca`, where `Ca = 0.75·C` when `C ≥ M` and `0.9 ≤ C/C12 ≤ 1.7` (a steady
/// high level is damped), else `Ca = C`. `M` is 70 µg/m³ for PM10 and 30 for PM2.5.
///
/// Each of the four `Ca` is judged against the 12-hour mean ending at its own hour. The result
/// needs all four recent hours and 9 of the 12 (75 %).
pub fn predicted_24h(x: &[Option<f64>], m: f64) -> Vec<Option<f64>> {
    let c12 = moving_mean(x, 12, 9);
    let ca: Vec<Option<f64>> = (0..x.len())
        .map(|t| {
            let c = x[t]?;
            match c12[t] {
                Some(m12) if c >= m && m12 > 0.0 && (0.9..=1.7).contains(&(c / m12)) => {
                    Some(0.75 * c)
                }
                _ => Some(c),
            }
        })
        .collect();
    let c4 = moving_mean(&ca, 4, 4);
    (0..x.len())
        .map(|t| Some((12.0 * c12[t]? + 12.0 * c4[t]?) / 24.0))
        .collect()
}

/// The threshold `M` of [`predicted_24h`].
pub fn predicted_threshold(p: Pollutant) -> Option<f64> {
    match p {
        Pollutant::Pm10 => Some(70.0),
        Pollutant::Pm25 => Some(30.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_mean_needs_enough_hours() {
        let x = [Some(1.0), None, Some(3.0), Some(5.0), None, None];
        let m = moving_mean(&x, 3, 2);
        assert_eq!(m, vec![None, None, Some(2.0), Some(4.0), Some(4.0), None]);
        let all = moving_mean(&x, 3, 3);
        assert_eq!(all, vec![None; 6]);
    }

    #[test]
    fn gaps_and_duplicates_are_flagged_not_filled() {
        let obs = |h: i64, v: f64| AirObs {
            station: "s".into(),
            hour: Hour(h),
            values: [Some(v), None, None, None, None, None],
        };
        let mut flags = Vec::new();
        let s = air_series(
            "f",
            vec![obs(10, 1.0), obs(11, 2.0), obs(11, 9.0), obs(15, 3.0)],
            &mut flags,
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].start, Hour(10));
        assert_eq!(
            s[0].column(Pollutant::Pm25),
            vec![Some(1.0), Some(2.0), None, None, None, Some(3.0)]
        );
        let kinds: Vec<_> = flags.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FlagKind::Duplicate, FlagKind::Gap]);
        assert!(flags[1].detail.starts_with("3 hour(s)"));
    }

    #[test]
    fn predicted_average_damps_a_steady_high_level() {
        // 12 steady hours at 80 µg/m³ PM10: C12 = 80, each Ca = 60, C24E = (12·80 + 12·60)/24 = 70.
        let x = vec![Some(80.0); 12];
        assert_eq!(predicted_24h(&x, 70.0)[11], Some(70.0));
        // A sharp rise is not damped: the last 4 hours at 200 after 8 at 50.
        let mut y = vec![Some(50.0); 8];
        y.extend([Some(200.0); 4]);
        // C12 at hour 11 = (8·50 + 4·200)/12 = 100; 200/100 = 2 > 1.7, so Ca = 200 at hour 11.
        // At hour 8: C12 = (8·50+200)/9 → only 9 hours, = 66.7, 200/66.7 = 3 → 200. Likewise 9, 10.
        let p = predicted_24h(&y, 70.0);
        assert!((p[11].unwrap() - (12.0 * 100.0 + 12.0 * 200.0) / 24.0).abs() < 1e-9);
    }
}
