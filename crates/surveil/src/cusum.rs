//! The Poisson CUSUM of R `surveillance::algo.cusum` with the standard transformation (Rossi et al.
//! 1999): observations standardised by the baseline mean `m`, `S_t = max(0, S_{t−1} + z_t − k)`, an
//! alarm when `S_t ≥ h`.

use crate::{Point, SurveilError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CusumControl {
    pub k: f64,
    pub h: f64,
    /// Baseline mean; `None` = the mean of every observation before the range, as R does.
    pub m: Option<f64>,
    /// Restart the sum after an alarm (R does not; a surveillance run over years should, or one
    /// outbreak keeps the alarm on for weeks).
    pub reset: bool,
}

impl Default for CusumControl {
    fn default() -> Self {
        CusumControl {
            k: 1.04,
            h: 2.26,
            m: None,
            reset: false,
        }
    }
}

pub fn cusum(
    obs: &[f64],
    range: std::ops::Range<usize>,
    ctl: &CusumControl,
) -> Result<Vec<Point>, SurveilError> {
    if range.end > obs.len() || (ctl.m.is_none() && range.start == 0) {
        return Err(SurveilError::TooShort {
            needed: 1,
            first: range.start,
        });
    }
    let m = ctl
        .m
        .unwrap_or_else(|| obs[..range.start].iter().sum::<f64>() / range.start as f64);
    Ok(run(obs, range, ctl, |_| m))
}

/// The CUSUM recursion over `range`, with the baseline mean of each day from `mean`.
fn run(
    obs: &[f64],
    range: std::ops::Range<usize>,
    ctl: &CusumControl,
    mut mean: impl FnMut(usize) -> f64,
) -> Vec<Point> {
    let mut s = 0.0f64;
    let mut out = Vec::with_capacity(range.len());
    for t in range {
        let m = mean(t);
        let prev = s;
        let ub = (m.sqrt() * (ctl.h + ctl.k - prev) + m).ceil();
        s = (prev + (obs[t] - m) / m.sqrt() - ctl.k).max(0.0);
        let mut p = Point::new(t, obs[t], if ub.is_nan() { 0.0 } else { ub.max(0.0) }, m);
        p.alarm = s >= ctl.h;
        p.score = Some(s);
        if ctl.reset && p.alarm {
            s = 0.0;
        }
        out.push(p);
    }
    out
}

/// The CUSUM for long daily series, as syndromic systems run it: the baseline mean is the mean of
/// the `baseline` days ending `lag` days before each day (floored at `min_mean`, so that a quiet
/// series does not divide by zero), and the sum restarts after each alarm.
pub fn cusum_moving(
    obs: &[f64],
    range: std::ops::Range<usize>,
    ctl: &CusumControl,
    baseline: usize,
    lag: usize,
    min_mean: f64,
) -> Result<Vec<Point>, SurveilError> {
    if range.end > obs.len() || range.start < baseline + lag || baseline == 0 {
        return Err(SurveilError::TooShort {
            needed: baseline + lag,
            first: range.start,
        });
    }
    // Running sum of the baseline window.
    let start = range.start;
    let mut win: f64 = obs[start - lag - baseline..start - lag].iter().sum();
    Ok(run(obs, range, ctl, |t| {
        if t > start {
            win += obs[t - 1 - lag] - obs[t - 1 - lag - baseline];
        }
        (win / baseline as f64).max(min_mean)
    }))
}
