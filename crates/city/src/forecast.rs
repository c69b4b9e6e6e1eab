//! The next-24-hour outlook: a damped-anomaly regression per lead time, on a log scale, around an
//! hour-of-day × month climatology.
//!
//! For a pollutant `x`, let `z = ln(x + 1)` and `c(m, h)` the training mean of `z` in month `m` at
//! hour of day `h`. For each lead `k = 1..24` the model is
//!
//! `z(t+k) − c(t+k) = a_k + φ_k·(z(t) − c(t)) + ψ_k·(z̄₂₄(t) − c̄₂₄(t))`
//!
//! fitted by least squares on training years: the anomaly now, and the anomaly of the last 24
//! hours, decay toward the climatology at rates learned per lead. The forecast is
//! `exp(ẑ) − 1`. It is judged on later years against persistence (the value now) and climatology
//! alone, by mean absolute error per lead ([`evaluate`]).
//!
//! Daily maximum temperature is forecast the same way, a day or two ahead, around a day-of-year
//! climatology ([`TmaxModel`]), for the heat rules' "expected for two days".

use crate::feed::Hour;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;

pub const LEADS: usize = 24;

/// A fitted hourly model for one pollutant.
#[derive(Clone, Debug)]
pub struct Model {
    /// `clim[month0][hour_of_day0]` on the log scale.
    clim: [[f64; 24]; 12],
    /// `(a, φ, ψ)` per lead 1..=24.
    coef: Vec<[f64; 3]>,
}

fn z(x: f64) -> f64 {
    (x.max(0.0) + 1.0).ln()
}

/// (month 0–11, hour of day 0–23) of an hour, by integer arithmetic, as this runs for every hour of
/// every fit and forecast.
fn slot(h: Hour) -> (usize, usize) {
    let (_, month, _) = medfed_surveil::farrington::civil((h.0 - 1).div_euclid(24));
    ((month - 1) as usize, (h.0 - 1).rem_euclid(24) as usize)
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let p = (c..3).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..3 {
            let f = a[r][c] / a[c][c];
            let pivot = a[c];
            for (x, p) in a[r].iter_mut().zip(pivot).skip(c) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        x[r] = (b[r] - (r + 1..3).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    Some(x)
}

/// The features at position `t` of a series starting at `start`: the anomaly now and the mean
/// anomaly of the last 24 hours (18 of them needed).
fn features(
    model_clim: &[[f64; 24]; 12],
    x: &[Option<f64>],
    start: Hour,
    t: usize,
) -> Option<(f64, f64)> {
    let now = x[t]?;
    let anomaly = |i: usize| {
        let (m, h) = slot(Hour(start.0 + i as i64));
        x[i].map(|v| z(v) - model_clim[m][h])
    };
    let lo = t.saturating_sub(23);
    let past: Vec<f64> = (lo..=t).filter_map(anomaly).collect();
    if past.len() < 18 {
        return None;
    }
    let (m, h) = slot(Hour(start.0 + t as i64));
    Some((
        z(now) - model_clim[m][h],
        past.iter().sum::<f64>() / past.len() as f64,
    ))
}

impl Model {
    /// Fits on positions `train` of the series (which starts at hour `start`).
    pub fn fit(x: &[Option<f64>], start: Hour, train: std::ops::Range<usize>) -> Option<Model> {
        Model::fit_where(x, start, |t| train.contains(&t))
    }

    /// Fits on the positions `train` accepts (for leaving a year out).
    pub fn fit_where(
        x: &[Option<f64>],
        start: Hour,
        train: impl Fn(usize) -> bool,
    ) -> Option<Model> {
        let mut sum = [[0.0; 24]; 12];
        let mut n = [[0usize; 24]; 12];
        for t in (0..x.len()).filter(|&t| train(t)) {
            if let Some(v) = x[t] {
                let (m, h) = slot(Hour(start.0 + t as i64));
                sum[m][h] += z(v);
                n[m][h] += 1;
            }
        }
        let mut clim = [[0.0; 24]; 12];
        for m in 0..12 {
            for h in 0..24 {
                if n[m][h] == 0 {
                    return None;
                }
                clim[m][h] = sum[m][h] / n[m][h] as f64;
            }
        }
        let feats: Vec<Option<(f64, f64)>> = (0..x.len())
            .map(|t| {
                if train(t) {
                    features(&clim, x, start, t)
                } else {
                    None
                }
            })
            .collect();
        let mut coef = Vec::with_capacity(LEADS);
        for k in 1..=LEADS {
            let mut xtx = [[0.0; 3]; 3];
            let mut xty = [0.0; 3];
            for t in 0..x.len().saturating_sub(k) {
                if !train(t) || !train(t + k) {
                    continue;
                }
                let (Some((a, b)), Some(y)) = (feats[t], x[t + k]) else {
                    continue;
                };
                let (m, h) = slot(Hour(start.0 + (t + k) as i64));
                let target = z(y) - clim[m][h];
                let row = [1.0, a, b];
                for i in 0..3 {
                    for j in 0..3 {
                        xtx[i][j] += row[i] * row[j];
                    }
                    xty[i] += row[i] * target;
                }
            }
            coef.push(solve3(xtx, xty)?);
        }
        Some(Model { clim, coef })
    }

    /// The forecast for leads 1..=24 from position `t`, or `None` when the features are missing.
    pub fn predict(&self, x: &[Option<f64>], start: Hour, t: usize) -> Option<[f64; LEADS]> {
        let (a, b) = features(&self.clim, x, start, t)?;
        let mut out = [0.0; LEADS];
        for (k, c) in self.coef.iter().enumerate() {
            let (m, h) = slot(Hour(start.0 + (t + k + 1) as i64));
            out[k] = ((self.clim[m][h] + c[0] + c[1] * a + c[2] * b).exp() - 1.0).max(0.0);
        }
        Some(out)
    }

    /// Climatology alone at an hour.
    pub fn climatology(&self, h: Hour) -> f64 {
        let (m, hh) = slot(h);
        (self.clim[m][hh].exp() - 1.0).max(0.0)
    }

    /// The fitted `(a, φ, ψ)` for lead `k` (1-based).
    pub fn coefficients(&self, k: usize) -> [f64; 3] {
        self.coef[k - 1]
    }
}

/// Forecast error by lead on a test period.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Forecasts scored per lead.
    pub n: Vec<usize>,
    pub mae: Vec<f64>,
    pub mae_persistence: Vec<f64>,
    pub mae_climatology: Vec<f64>,
    /// Bias (mean forecast − observed) per lead.
    pub bias: Vec<f64>,
}

/// Scores forecasts issued at every position in `test` against what was observed.
pub fn evaluate(
    model: &Model,
    x: &[Option<f64>],
    start: Hour,
    test: std::ops::Range<usize>,
) -> Evaluation {
    let mut e = Evaluation {
        n: vec![0; LEADS],
        mae: vec![0.0; LEADS],
        mae_persistence: vec![0.0; LEADS],
        mae_climatology: vec![0.0; LEADS],
        bias: vec![0.0; LEADS],
    };
    for t in test.clone() {
        let Some(f) = model.predict(x, start, t) else {
            continue;
        };
        let now = x[t].unwrap_or(0.0);
        for k in 1..=LEADS {
            let Some(&Some(y)) = x.get(t + k) else {
                continue;
            };
            if t + k >= test.end {
                continue;
            }
            let i = k - 1;
            e.n[i] += 1;
            e.mae[i] += (f[i] - y).abs();
            e.bias[i] += f[i] - y;
            e.mae_persistence[i] += (now - y).abs();
            e.mae_climatology[i] += (model.climatology(Hour(start.0 + (t + k) as i64)) - y).abs();
        }
    }
    for i in 0..LEADS {
        let n = e.n[i].max(1) as f64;
        e.mae[i] /= n;
        e.bias[i] /= n;
        e.mae_persistence[i] /= n;
        e.mae_climatology[i] /= n;
    }
    e
}

/// Daily maximum temperature one and two days ahead: damped anomaly persistence around a
/// day-of-year climatology (a 31-day window of the training years).
#[derive(Clone, Debug)]
pub struct TmaxModel {
    clim: Vec<f64>,
    /// `(a, φ)` for 1 and 2 days ahead.
    coef: [[f64; 2]; 2],
}

fn doy(d: NaiveDate) -> usize {
    (d.ordinal0() as usize).min(364)
}

impl TmaxModel {
    pub fn fit(
        tmax: &BTreeMap<NaiveDate, f64>,
        train: std::ops::RangeInclusive<NaiveDate>,
    ) -> Option<TmaxModel> {
        TmaxModel::fit_where(tmax, |d| train.contains(&d))
    }

    /// Fits on the days `train` accepts.
    pub fn fit_where(
        tmax: &BTreeMap<NaiveDate, f64>,
        train: impl Fn(NaiveDate) -> bool,
    ) -> Option<TmaxModel> {
        let mut clim = vec![0.0; 365];
        for (d, c) in clim.iter_mut().enumerate() {
            let (mut s, mut n) = (0.0, 0);
            for (day, v) in tmax.iter().filter(|(d, _)| train(**d)) {
                let dist = (doy(*day) as i64 - d as i64).rem_euclid(365);
                if dist.min(365 - dist) <= 15 {
                    s += v;
                    n += 1;
                }
            }
            if n == 0 {
                return None;
            }
            *c = s / n as f64;
        }
        let mut coef = [[0.0; 2]; 2];
        for (k, cf) in coef.iter_mut().enumerate() {
            let (mut sx, mut sy, mut sxx, mut sxy, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (day, v) in tmax.iter().filter(|(d, _)| train(**d)) {
                let ahead = *day + chrono::Duration::days(k as i64 + 1);
                let Some(y) = tmax.get(&ahead) else { continue };
                if !train(ahead) {
                    continue;
                }
                let (a, b) = (v - clim[doy(*day)], y - clim[doy(ahead)]);
                sx += a;
                sy += b;
                sxx += a * a;
                sxy += a * b;
                n += 1.0;
            }
            let phi = (n * sxy - sx * sy) / (n * sxx - sx * sx);
            *cf = [(sy - phi * sx) / n, phi];
        }
        Some(TmaxModel { clim, coef })
    }

    /// The forecast for `days` (1 or 2) after `day`, given that day's maximum.
    pub fn predict(&self, day: NaiveDate, tmax: f64, days: usize) -> f64 {
        let ahead = day + chrono::Duration::days(days as i64);
        let [a, phi] = self.coef[days - 1];
        self.clim[doy(ahead)] + a + phi * (tmax - self.clim[doy(day)])
    }

    pub fn climatology(&self, day: NaiveDate) -> f64 {
        self.clim[doy(day)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_agrees_with_the_calendar() {
        let mut h = Hour::parse("1999-12-31 01:00").unwrap();
        while h < Hour::parse("2031-03-02 01:00").unwrap() {
            assert_eq!(
                slot(h),
                (h.day().month0() as usize, (h.hour_of_day() - 1) as usize),
                "{h}"
            );
            h = Hour(h.0 + 7);
        }
    }

    #[test]
    fn solve3_solves() {
        let x = solve3(
            [[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]],
            [3.0, 5.0, 5.0],
        )
        .unwrap();
        for (g, w) in x.iter().zip([1.0, 1.0, 1.0]) {
            assert!((g - w).abs() < 1e-12);
        }
        assert!(solve3(
            [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]],
            [1.0, 2.0, 3.0]
        )
        .is_none());
    }

    #[test]
    fn recovers_a_known_ar_process() {
        // A synthetic log-AR(1) with φ = 0.9 per hour around a flat climatology: the fitted φ_1 is
        // near 0.9 and the 1-hour forecast beats persistence's error only slightly, as it should.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 24 * 365 * 2;
        let mut a = 0.0f64;
        let mut x = Vec::with_capacity(n);
        for _ in 0..n {
            let e: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            a = 0.9 * a + 0.2 * e;
            x.push(Some((3.0 + a).exp() - 1.0));
        }
        let start = Hour::parse("2018-01-01 01:00").unwrap();
        let m = Model::fit(&x, start, 0..n / 2).unwrap();
        let [_, phi, _] = m.coefficients(1);
        assert!((phi - 0.9).abs() < 0.05, "{phi}");
        let e = evaluate(&m, &x, start, n / 2..n);
        assert!(e.mae[0] <= e.mae_persistence[0] * 1.01);
        assert!(e.mae[23] < e.mae_persistence[23]);
    }
}
