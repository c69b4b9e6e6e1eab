//! Aberration detection on surveillance counts. Every detector is a plain function over a count
//! series (or, for the scan statistic, a district × day table) and is checked against R
//! `surveillance` 1.20.3 on its reference series (`tests/reference.rs`).
//!
//! - [`ears`]: EARS C1, C2 and C3;
//! - [`cusum`]: the Poisson CUSUM (standard transformation);
//! - [`farrington`]: Farrington Flexible with the original and the Noufaily (2013) settings;
//! - [`scan`]: a prospective expectation-based Poisson space–time scan over districts (Kulldorff
//!   2005 style, circles of nearest centroids), with Monte Carlo p-values;
//! - [`alerts`]: grouping of every detector's alarms across detectors, neighbouring districts and
//!   nearby days into one alert per event, with a severity score.

pub mod alerts;
pub mod cusum;
pub mod dist;
pub mod ears;
pub mod farrington;
pub mod glm;
pub mod scan;

use serde::{Deserialize, Serialize};

pub use cusum::{cusum, cusum_moving, CusumControl};
pub use ears::{ears, EarsControl, EarsMethod};
pub use farrington::{farrington_flexible, FarringtonControl, Series, Threshold};

#[derive(Debug, thiserror::Error)]
pub enum SurveilError {
    #[error("the series is too short: the first point evaluated ({first}) needs {needed} earlier points")]
    TooShort { needed: usize, first: usize },
    #[error("invalid control: {0}")]
    Control(String),
}

/// One evaluated time point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Index into the series (0-based).
    pub t: usize,
    pub observed: f64,
    /// Threshold: an alarm is `observed > upperbound` (CUSUM: the sum reaching `h`). `None` where the
    /// method gives no bound (R's `NA`).
    pub upperbound: Option<f64>,
    /// The baseline expectation the bound was built on.
    pub expected: Option<f64>,
    pub alarm: bool,
    /// Method-specific: CUSUM's sum, Farrington's exceedance score.
    pub score: Option<f64>,
    pub p_value: Option<f64>,
}

impl Point {
    fn new(t: usize, observed: f64, upperbound: f64, expected: f64) -> Point {
        let ub = Some(upperbound).filter(|v| v.is_finite());
        Point {
            t,
            observed,
            alarm: ub.is_some_and(|u| observed > u),
            upperbound: ub,
            expected: Some(expected).filter(|v| v.is_finite()),
            score: None,
            p_value: None,
        }
    }
}
