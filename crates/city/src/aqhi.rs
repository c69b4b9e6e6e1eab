//! Canada's Air Quality Health Index (AQHI).
//!
//! `AQHI = (1000 / 10.4) · [(e^{0.000871·NO2} − 1) + (e^{0.000537·O3} − 1) + (e^{0.000487·PM2.5} − 1)]`
//! with 3-hour mean NO2 and O3 in ppb and PM2.5 in µg/m³ (Stieb et al. 2008, J Air Waste Manag
//! Assoc 58:435). The published value is rounded to a whole number, at least 1; above 10 it is
//! "10+". Bands: 1–3 low, 4–6 moderate, 7–10 high, 10+ very high risk.

use crate::feed::Pollutant;
use crate::series::{self, AirSeries};
use serde::Serialize;

pub const BETA_NO2: f64 = 0.000871;
pub const BETA_O3: f64 = 0.000537;
pub const BETA_PM25: f64 = 0.000487;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Moderate,
    High,
    VeryHigh,
}

impl Risk {
    pub fn name(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Moderate => "moderate",
            Risk::High => "high",
            Risk::VeryHigh => "very_high",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Aqhi {
    pub exact: f64,
    /// The published whole number, 1–11, where 11 stands for "10+".
    pub value: u32,
    pub risk: Risk,
}

impl Aqhi {
    /// "1" … "10", or "10+".
    pub fn label(&self) -> String {
        if self.value > 10 {
            "10+".into()
        } else {
            self.value.to_string()
        }
    }
}

/// The AQHI from 3-hour means: NO2 and O3 in ppb, PM2.5 in µg/m³.
pub fn aqhi(no2_ppb: f64, o3_ppb: f64, pm25: f64) -> Aqhi {
    let exact = 1000.0 / 10.4
        * ((BETA_NO2 * no2_ppb).exp_m1()
            + (BETA_O3 * o3_ppb).exp_m1()
            + (BETA_PM25 * pm25).exp_m1());
    let value = ((exact + 0.5).floor().max(1.0) as u32).min(11);
    let risk = match value {
        0..=3 => Risk::Low,
        4..=6 => Risk::Moderate,
        7..=10 => Risk::High,
        _ => Risk::VeryHigh,
    };
    Aqhi { exact, value, risk }
}

/// The AQHI for every hour of a station's series (3-hour means, 2 of 3 hours needed for each of
/// NO2, O3 and PM2.5). The series holds ppm; the formula takes ppb.
pub fn hourly(s: &AirSeries) -> Vec<Option<Aqhi>> {
    let mean = |p: Pollutant| {
        series::moving_mean(&s.column(p), series::AQHI_WINDOW, series::AQHI_MIN_VALID)
    };
    let (no2, o3, pm) = (
        mean(Pollutant::No2),
        mean(Pollutant::O3),
        mean(Pollutant::Pm25),
    );
    (0..s.len())
        .map(|t| Some(aqhi(no2[t]? * 1000.0, o3[t]? * 1000.0, pm[t]?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        // NO2 20 ppb, O3 30 ppb, PM2.5 10: (e^0.01742 − 1) + (e^0.01611 − 1) + (e^0.00487 − 1)
        // = 0.017573 + 0.016241 + 0.004882 = 0.038696; × 96.1538 = 3.72 → 4, moderate.
        let a = aqhi(20.0, 30.0, 10.0);
        assert!((a.exact - 3.7208).abs() < 1e-3, "{}", a.exact);
        assert_eq!((a.value, a.risk), (4, Risk::Moderate));
        assert_eq!(aqhi(0.0, 0.0, 0.0).value, 1);
        assert_eq!(aqhi(60.0, 60.0, 150.0).label(), "10+");
    }
}
