//! Heat: the KMA summer feels-like temperature and the KMA heat-wave rules.
//!
//! Since 2022 the Korea Meteorological Administration computes the summer (May–September)
//! feels-like temperature from air temperature `Ta` and the wet-bulb temperature `Tw` (Stull 2011,
//! from `Ta` and relative humidity):
//!
//! `FL = −0.2442 + 0.55399·Tw + 0.45535·Ta − 0.0022·Tw² + 0.00278·Tw·Ta + 3.0`
//!
//! A heat-wave **advisory** (폭염주의보) is issued when the daily maximum feels-like temperature is
//! expected to reach 33 °C on two or more consecutive days, a **warning** (폭염경보) at 35 °C. On
//! observed data, [`levels`] marks each day that belongs to such a run.

use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;

/// Stull (2011), J. Appl. Meteor. Climatol. 50:2267: wet-bulb temperature (°C) from air
/// temperature (°C) and relative humidity (%), within 1 °C for RH 5–99 % and −20–50 °C.
pub fn wet_bulb(ta: f64, rh: f64) -> f64 {
    ta * (0.151977 * (rh + 8.313659).sqrt()).atan() + (ta + rh).atan() - (rh - 1.676331).atan()
        + 0.00391838 * rh.powf(1.5) * (0.023101 * rh).atan()
        - 4.686035
}

/// The KMA summer feels-like temperature (°C).
pub fn feels_like(ta: f64, rh: f64) -> f64 {
    let tw = wet_bulb(ta, rh);
    -0.2442 + 0.55399 * tw + 0.45535 * ta - 0.0022 * tw * tw + 0.00278 * tw * ta + 3.0
}

/// Saturation vapour pressure (hPa), Magnus form with the WMO coefficients.
pub fn saturation_vp(t: f64) -> f64 {
    6.112 * (17.62 * t / (243.12 + t)).exp()
}

/// Relative humidity at the day's maximum temperature, from the daily mean temperature and mean
/// humidity, assuming the day's vapour pressure stays at its mean (humidity falls as the air
/// warms). Used when only daily summaries are available.
pub fn rh_at_tmax(tmax: f64, tavg: f64, rh_mean: f64) -> f64 {
    let e = rh_mean / 100.0 * saturation_vp(tavg);
    (100.0 * e / saturation_vp(tmax)).clamp(1.0, 100.0)
}

/// The summer months the KMA formula and the heat rules apply to.
pub fn summer(d: NaiveDate) -> bool {
    (5..=9).contains(&d.month())
}

pub const ADVISORY_C: f64 = 33.0;
pub const WARNING_C: f64 = 35.0;

/// A warning level: the KMA's heat levels, and the personal rules' levels.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    None,
    Advisory,
    Warning,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Advisory => "advisory",
            Level::Warning => "warning",
        }
    }
}

/// The daily maximum feels-like temperature from hourly (temperature, humidity) pairs: the
/// largest hourly value, when at least 18 of the day's 24 hours have both.
pub fn daily_max_from_hours(hours: &[(f64, f64)]) -> Option<f64> {
    (hours.len() >= 18).then(|| {
        hours
            .iter()
            .map(|&(t, h)| feels_like(t, h))
            .fold(f64::MIN, f64::max)
    })
}

/// KMA heat levels on observed daily maxima: a day at or above a threshold is at that level when
/// the day before or the day after is too (a run of two or more days). Missing days break runs.
/// Days outside May–September are `None`.
pub fn levels(daily_max: &BTreeMap<NaiveDate, f64>) -> BTreeMap<NaiveDate, Level> {
    let over = |d: NaiveDate, c: f64| daily_max.get(&d).is_some_and(|&v| v >= c && summer(d));
    daily_max
        .keys()
        .map(|&d| {
            let run = |c: f64| {
                over(d, c) && (over(d - Duration::days(1), c) || over(d + Duration::days(1), c))
            };
            let l = if run(WARNING_C) {
                Level::Warning
            } else if run(ADVISORY_C) {
                Level::Advisory
            } else {
                Level::None
            };
            (d, l)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stull_and_kma_reference_points() {
        // Stull's paper: 20 °C and 50 % give Tw = 13.7 °C.
        assert!(
            (wet_bulb(20.0, 50.0) - 13.7).abs() < 0.05,
            "{}",
            wet_bulb(20.0, 50.0)
        );
        // 33 °C at 50 %: psychrometric tables give Tw = 24.8 °C at sea level.
        let tw = wet_bulb(33.0, 50.0);
        assert!((tw - 24.8).abs() < 0.3, "{tw}");
        let fl = feels_like(33.0, 50.0);
        let by_hand =
            -0.2442 + 0.55399 * tw + 0.45535 * 33.0 - 0.0022 * tw * tw + 0.00278 * tw * 33.0 + 3.0;
        assert!((fl - by_hand).abs() < 1e-12);
        // The KMA's own reading of its formula: at 55 % humidity the feels-like temperature is about
        // the air temperature, and it moves about 1 °C for every 10 % of humidity.
        assert!((feels_like(33.0, 55.0) - 33.0).abs() < 0.1);
        let step = feels_like(33.0, 65.0) - feels_like(33.0, 55.0);
        assert!((0.8..1.2).contains(&step), "{step}");
        // Dry heat feels cooler than the thermometer.
        assert!(feels_like(35.0, 20.0) < 35.0);
    }

    #[test]
    fn runs_of_two_days_make_a_level() {
        let d = |m, day| NaiveDate::from_ymd_opt(2018, m, day).unwrap();
        let maxima: BTreeMap<_, _> = [
            (d(7, 1), 34.0), // alone: none
            (d(7, 3), 33.5),
            (d(7, 4), 36.0),
            (d(7, 5), 35.2),
            (d(7, 6), 30.0),
            (d(10, 1), 36.0),
            (d(10, 2), 36.0), // October: outside the summer rules
        ]
        .into_iter()
        .collect();
        let l = levels(&maxima);
        assert_eq!(l[&d(7, 1)], Level::None);
        assert_eq!(l[&d(7, 3)], Level::Advisory);
        assert_eq!(l[&d(7, 4)], Level::Warning);
        assert_eq!(l[&d(7, 5)], Level::Warning);
        assert_eq!(l[&d(7, 6)], Level::None);
        assert_eq!(l[&d(10, 1)], Level::None);
    }
}
