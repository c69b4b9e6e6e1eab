//! The CDC's Early Aberration Reporting System methods C1, C2 and C3 (Hutwagner et al. 2003), as
//! R `surveillance::earsC` computes them.

use crate::dist::{mean_sd, qnorm};
use crate::{Point, SurveilError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EarsMethod {
    C1,
    C2,
    C3,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarsControl {
    pub method: EarsMethod,
    /// Number of baseline time points (at least 3; R's default 7).
    pub baseline: usize,
    pub alpha: f64,
    /// Floor under the baseline's standard deviation (R's `minSigma`, default 0). With sparse daily
    /// counts a baseline of zeros has no spread; a floor keeps the bound finite.
    pub min_sigma: f64,
}

impl EarsControl {
    pub fn new(method: EarsMethod) -> EarsControl {
        EarsControl {
            method,
            baseline: 7,
            alpha: match method {
                EarsMethod::C3 => 0.025,
                _ => 0.001,
            },
            min_sigma: 0.0,
        }
    }

    /// Earliest index (0-based) the method can be evaluated at.
    pub fn first(&self) -> usize {
        self.baseline
            + match self.method {
                EarsMethod::C1 => 0,
                EarsMethod::C2 => 2,
                EarsMethod::C3 => 4,
            }
    }
}

/// Mean and floored SD of the baseline of `t`: `baseline` points ending `lag` points before `t`.
fn reference(obs: &[f64], t: usize, baseline: usize, lag: usize, min_sigma: f64) -> (f64, f64) {
    let (m, s) = mean_sd(&obs[t - lag - baseline..t - lag]);
    // R's pmax(sd, minSigma) propagates NaN.
    (m, if s.is_nan() { s } else { s.max(min_sigma) })
}

/// EARS at each index of `range` (0-based, ascending). Upper bounds are R's: C1 and C2 are
/// `mean + z(1−α)·sd` of the 7 points before `t` (C2 skipping two); C3's bound is R's
/// `observed + sd·(z − Σ max(0, C2 − 1) over the two previous points)`, floored at 0, so that the
/// alarm rule `observed > bound` is the C3 rule of `surveillance` 1.20.
pub fn ears(
    obs: &[f64],
    range: std::ops::Range<usize>,
    ctl: &EarsControl,
) -> Result<Vec<Point>, SurveilError> {
    if ctl.baseline < 3 {
        return Err(SurveilError::Control(
            "EARS needs a baseline of at least 3".into(),
        ));
    }
    if ctl.min_sigma < 0.0 || !(0.0..1.0).contains(&ctl.alpha) {
        return Err(SurveilError::Control(
            "EARS: minSigma ≥ 0 and 0 < alpha < 1".into(),
        ));
    }
    if range.start < ctl.first() || range.end > obs.len() {
        return Err(SurveilError::TooShort {
            needed: ctl.first(),
            first: range.start,
        });
    }
    let z = qnorm(1.0 - ctl.alpha);
    let b = ctl.baseline;
    let c2 = |t: usize| {
        let (m, s) = reference(obs, t, b, 2, ctl.min_sigma);
        (obs[t] - m) / s
    };
    let mut out = Vec::with_capacity(range.len());
    for t in range {
        let (ub, expected) = match ctl.method {
            EarsMethod::C1 | EarsMethod::C2 => {
                let lag = if ctl.method == EarsMethod::C1 { 0 } else { 2 };
                let (m, s) = reference(obs, t, b, lag, ctl.min_sigma);
                (m + z * s, m)
            }
            EarsMethod::C3 => {
                let (m, s) = reference(obs, t, b, 2, ctl.min_sigma);
                let part = |v: f64| if v.is_nan() { v } else { (v - 1.0).max(0.0) };
                let ub = obs[t] + s * (z - (part(c2(t - 2)) + part(c2(t - 1))));
                (if ub.is_nan() { ub } else { ub.max(0.0) }, m)
            }
        };
        out.push(Point::new(t, obs[t], ub, expected));
    }
    Ok(out)
}
