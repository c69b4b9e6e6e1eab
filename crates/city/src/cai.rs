//! Korea's Comprehensive Air-quality Index (CAI, 통합대기환경지수).
//!
//! Each pollutant's concentration becomes a sub-index by linear interpolation within its band of
//! the published breakpoint table ([`BREAKPOINTS`], kept as CSV in the repository); the CAI is the
//! largest sub-index, and its pollutant is the main pollutant. PM10 and PM2.5 enter as 24-hour
//! averages (trailing, or AirKorea's predicted average, see [`PmAverage`]); the gases as 1-hour
//! values. As on AirKorea, the CAI is only given when PM10, PM2.5, NO2 and O3 are all present.
//!
//! Concentrations are truncated to the table's precision before the band is looked up (so
//! 35.9 µg/m³ PM2.5 is 35, "moderate"), as the US AQI does; above the table's top the sub-index
//! is 500.

use crate::feed::{Pollutant, POLLUTANTS};
use crate::series::{self, AirSeries};
use serde::Serialize;

/// The breakpoint table as published.
pub const BREAKPOINTS: &str = include_str!("cai_breakpoints.csv");

/// A CSV text without its `#` comment lines (the tables and reference cases keep their sources
/// in comments).
pub fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The four CAI grades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// 좋음, 0–50.
    Good,
    /// 보통, 51–100.
    Moderate,
    /// 나쁨, 101–250.
    Unhealthy,
    /// 매우나쁨, 251–500.
    VeryUnhealthy,
}

pub const GRADES: [Grade; 4] = [
    Grade::Good,
    Grade::Moderate,
    Grade::Unhealthy,
    Grade::VeryUnhealthy,
];

impl Grade {
    pub fn name(self) -> &'static str {
        match self {
            Grade::Good => "good",
            Grade::Moderate => "moderate",
            Grade::Unhealthy => "unhealthy",
            Grade::VeryUnhealthy => "very_unhealthy",
        }
    }

    pub fn korean(self) -> &'static str {
        match self {
            Grade::Good => "좋음",
            Grade::Moderate => "보통",
            Grade::Unhealthy => "나쁨",
            Grade::VeryUnhealthy => "매우나쁨",
        }
    }

    /// AirKorea's colours.
    pub fn color(self) -> &'static str {
        match self {
            Grade::Good => "#1e88e5",
            Grade::Moderate => "#43a047",
            Grade::Unhealthy => "#fb8c00",
            Grade::VeryUnhealthy => "#e53935",
        }
    }

    fn parse(s: &str) -> Option<Grade> {
        GRADES.into_iter().find(|g| g.name() == s)
    }

    /// The grade of a (rounded) index value.
    pub fn of_index(i: u32) -> Grade {
        match i {
            0..=50 => Grade::Good,
            51..=100 => Grade::Moderate,
            101..=250 => Grade::Unhealthy,
            _ => Grade::VeryUnhealthy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Band {
    grade: Grade,
    bp_lo: f64,
    bp_hi: f64,
    i_lo: f64,
    i_hi: f64,
}

/// A parsed breakpoint table.
#[derive(Clone, Debug)]
pub struct Table {
    bands: [Vec<Band>; 6],
    decimals: [i32; 6],
}

/// One pollutant's sub-index.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SubIndex {
    /// The concentration used, after truncation.
    pub concentration: f64,
    /// The interpolated index, unrounded.
    pub exact: f64,
    /// The index as published: rounded half up.
    pub index: u32,
    pub grade: Grade,
}

impl Table {
    /// The published table ([`BREAKPOINTS`]).
    pub fn standard() -> Table {
        Table::parse(BREAKPOINTS).expect("the CAI table in the repository parses")
    }

    /// Parses a table in the format of `cai_breakpoints.csv`: bands must be contiguous in index,
    /// increasing in concentration, and cover every pollutant.
    pub fn parse(text: &str) -> Result<Table, String> {
        let body = without_comments(text);
        let mut r = csv::Reader::from_reader(body.as_bytes());
        let mut bands: [Vec<Band>; 6] = Default::default();
        let mut decimals = [-1; 6];
        for (i, rec) in r.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| format!("CAI table line {line}: {e}"))?;
            let get = |k: usize| rec.get(k).unwrap_or("").trim();
            let p = Pollutant::parse(get(0))
                .ok_or_else(|| format!("CAI table line {line}: unknown pollutant '{}'", get(0)))?;
            let num = |k: usize, name: &str| {
                get(k).parse::<f64>().map_err(|_| {
                    format!("CAI table line {line}: {name} '{}' is not a number", get(k))
                })
            };
            let d = get(3)
                .parse::<i32>()
                .map_err(|_| format!("CAI table line {line}: decimals"))?;
            if decimals[p.index()] >= 0 && decimals[p.index()] != d {
                return Err(format!(
                    "CAI table line {line}: {} has two precisions",
                    p.name()
                ));
            }
            decimals[p.index()] = d;
            let grade = Grade::parse(get(4))
                .ok_or_else(|| format!("CAI table line {line}: grade '{}'", get(4)))?;
            let b = Band {
                grade,
                bp_lo: num(5, "bp_lo")?,
                bp_hi: num(6, "bp_hi")?,
                i_lo: num(7, "i_lo")?,
                i_hi: num(8, "i_hi")?,
            };
            if b.bp_hi <= b.bp_lo || b.i_hi <= b.i_lo {
                return Err(format!("CAI table line {line}: empty band"));
            }
            if let Some(prev) = bands[p.index()].last() {
                if b.bp_lo <= prev.bp_hi || b.i_lo != prev.i_hi + 1.0 {
                    return Err(format!(
                        "CAI table line {line}: bands of {} are not in order",
                        p.name()
                    ));
                }
            }
            bands[p.index()].push(b);
        }
        for p in POLLUTANTS {
            if bands[p.index()].is_empty() {
                return Err(format!("CAI table: no bands for {}", p.name()));
            }
        }
        Ok(Table { bands, decimals })
    }

    /// The sub-index of a concentration.
    pub fn sub_index(&self, p: Pollutant, c: f64) -> Option<SubIndex> {
        if !c.is_finite() || c < 0.0 {
            return None;
        }
        let scale = 10f64.powi(self.decimals[p.index()]);
        // Truncate to the table's precision; the small tolerance keeps 0.021 (stored as
        // 0.0209999…) at 0.021.
        let ct = ((c * scale) + 1e-9).floor() / scale;
        let bands = &self.bands[p.index()];
        let top = bands.last()?;
        let (exact, grade) = if ct > top.bp_hi {
            (top.i_hi, top.grade)
        } else {
            let b = bands.iter().find(|b| ct >= b.bp_lo && ct <= b.bp_hi)?;
            (
                (b.i_hi - b.i_lo) / (b.bp_hi - b.bp_lo) * (ct - b.bp_lo) + b.i_lo,
                b.grade,
            )
        };
        Some(SubIndex {
            concentration: ct,
            exact,
            index: (exact + 0.5).floor() as u32,
            grade,
        })
    }
}

/// How PM enters the CAI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PmAverage {
    /// The trailing 24-hour mean (18 of 24 hours needed): the table's definition.
    #[default]
    Trailing24h,
    /// AirKorea's real-time predicted 24-hour average ([`series::predicted_24h`]).
    Predicted,
}

/// The CAI of one hour.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CaiHour {
    /// Indexed by [`Pollutant::index`].
    pub sub: [Option<SubIndex>; 6],
    /// The largest sub-index and its pollutant; `None` when PM10, PM2.5, NO2 or O3 is missing.
    pub cai: Option<(Pollutant, SubIndex)>,
}

/// The concentrations that enter the CAI, hour by hour: PM averaged, gases as measured.
pub fn inputs(s: &AirSeries, pm: PmAverage) -> [Vec<Option<f64>>; 6] {
    POLLUTANTS.map(|p| {
        let col = s.column(p);
        match (p, pm) {
            (Pollutant::Pm10 | Pollutant::Pm25, PmAverage::Trailing24h) => {
                series::moving_mean(&col, series::PM_WINDOW, series::PM_MIN_VALID)
            }
            (Pollutant::Pm10 | Pollutant::Pm25, PmAverage::Predicted) => series::predicted_24h(
                &col,
                series::predicted_threshold(p).unwrap_or(f64::INFINITY),
            ),
            _ => col,
        }
    })
}

/// The CAI for every hour of a station's series.
pub fn hourly(table: &Table, s: &AirSeries, pm: PmAverage) -> Vec<CaiHour> {
    from_inputs(table, &inputs(s, pm))
}

/// The CAI for every hour, from the concentrations [`inputs`] gives.
pub fn from_inputs(table: &Table, inp: &[Vec<Option<f64>>; 6]) -> Vec<CaiHour> {
    (0..inp[0].len())
        .map(|t| {
            let sub = POLLUTANTS.map(|p| inp[p.index()][t].and_then(|c| table.sub_index(p, c)));
            let required = [
                Pollutant::Pm10,
                Pollutant::Pm25,
                Pollutant::No2,
                Pollutant::O3,
            ];
            let cai = if required.iter().all(|p| sub[p.index()].is_some()) {
                POLLUTANTS
                    .iter()
                    .filter_map(|&p| sub[p.index()].map(|x| (p, x)))
                    // The first pollutant in table order wins a tie.
                    .fold(
                        None,
                        |best: Option<(Pollutant, SubIndex)>, (p, x)| match best {
                            Some((_, b)) if b.exact >= x.exact => best,
                            _ => Some((p, x)),
                        },
                    )
            } else {
                None
            };
            CaiHour { sub, cai }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_bad_tables_are_refused() {
        let t = Table::standard();
        assert_eq!(t.bands[Pollutant::Pm25.index()].len(), 4);
        let broken = BREAKPOINTS.replace(
            "pm25,24h,µg/m³,0,moderate,16,35,51,100",
            "pm25,24h,µg/m³,0,moderate,16,35,52,100",
        );
        assert!(Table::parse(&broken).unwrap_err().contains("not in order"));
    }

    #[test]
    fn band_edges_and_truncation() {
        let t = Table::standard();
        let pm25 = |c| t.sub_index(Pollutant::Pm25, c).unwrap();
        assert_eq!(pm25(15.0).index, 50);
        assert_eq!(pm25(15.9).index, 50);
        assert_eq!(pm25(16.0).index, 51);
        assert_eq!(pm25(35.0).grade, Grade::Moderate);
        assert_eq!(pm25(36.0).grade, Grade::Unhealthy);
        assert_eq!(pm25(76.0).grade, Grade::VeryUnhealthy);
        assert_eq!(pm25(900.0).index, 500);
        let no2 = t.sub_index(Pollutant::No2, 0.021 + 0.010).unwrap();
        assert_eq!(no2.concentration, 0.031);
        assert_eq!(no2.index, 51);
    }
}
