#![allow(clippy::needless_range_loop)] // small dense linear algebra reads best with indices
//! Evidence for the thresholds: how daily visits follow PM2.5 and heat, from federated daily counts.
//!
//! The design is the time-series regression of air-pollution and temperature epidemiology, in its
//! time-stratified form (Armstrong, Gasparrini & Tobias 2014, "Conditional Poisson models: a flexible
//! alternative to conditional logistic case cross-over analysis"): one stratum per district, year and
//! calendar month absorbs the district's level, the season and the long-term trend; four harmonics
//! of the day of year follow the season's slope inside a month (without them a winter-peaking
//! syndrome, falling through August as the heat does, showed a spurious protective heat effect);
//! the day of the week and the lagged exposures are the other terms; overdispersion is the
//! quasi-Poisson Pearson scale.
//! Conditioning on each stratum's total removes the stratum intercepts, so 15,000 strata cost
//! nothing: the estimates are exactly those of a Poisson GLM with one dummy per stratum (checked
//! against statsmodels' `ConditionalPoisson` in the CLI's tests).
//!
//! [`analyse`] runs the analyses the city section shows:
//! - respiratory visits on the lag 0–2 mean PM2.5 (per 10 µg/m³), adjusted for heat;
//! - cardiovascular visits on the lag 0–1 mean daily maximum above a threshold (per °C), adjusted
//!   for PM2.5, the threshold chosen by profile likelihood over a grid (0.5 °C, then 0.1 °C near
//!   the best);
//! - each outcome's other exposure (no effect is expected);
//! - the lag structure of PM2.5 (lags 0–5 unconstrained, and their sum);
//! - exposure–response curves from piecewise-linear splines with knots at quantiles.

use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

use crate::feed::Quarantined;
use medfed_surveil::farrington::{civil, days_from_civil};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{0}")]
    Fit(String),
}

/// Daily series per district on one calendar: `values[unit * days + t]`, NaN where missing.
#[derive(Clone, Debug)]
pub struct Daily {
    pub units: Vec<String>,
    /// Days since 1970-01-01 of `t = 0`.
    pub first_day: i64,
    pub days: usize,
}

impl Daily {
    pub fn len(&self) -> usize {
        self.units.len() * self.days
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// District environment: daily PM2.5 (24-h mean) and maximum temperature.
#[derive(Clone, Debug)]
pub struct Environment {
    pub cal: Daily,
    pub pm25: Vec<f64>,
    pub tmax: Vec<f64>,
    /// Values that were empty or `-` (kept as missing, never filled).
    pub missing: usize,
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let n = days_from_civil(y, m, d);
    (civil(n) == (y, m, d)).then_some(n)
}

pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Read `district,date,pm25,tmax` (the synthetic population's `environment.csv`, or any district
/// series in that shape). Rows with an unreadable date or value, or a second row for a district and
/// day, go to the quarantine with their line and field; empty or `-` values are missing.
pub fn read_environment(path: &Path) -> Result<(Environment, Vec<Quarantined>), EvidenceError> {
    let file = path.display().to_string();
    let err = |m: String| EvidenceError::File {
        file: file.clone(),
        message: m,
    };
    let (_, bytes) = crate::feed::read_bytes(path).map_err(|e| err(e.to_string()))?;
    let q = |line: &str, field: &str, value: &str, reason: &str| {
        Quarantined::new(&file, line, field, value.to_string(), reason.to_string())
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let header = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .ok_or_else(|| err(format!("no column {name:?} (have {:?})", header)))
    };
    let (cd, ct, cp, cx) = (col("district")?, col("date")?, col("pm25")?, col("tmax")?);
    let mut quarantine = Vec::new();
    let mut rows: Vec<(usize, i64, f64, f64, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut units = Vec::new();
    let mut missing = 0;
    for (i, rec) in rdr.records().enumerate() {
        let line = (i + 2).to_string();
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                quarantine.push(q(&line, "", "", &e.to_string()));
                continue;
            }
        };
        let get = |c: usize| rec.get(c).unwrap_or("").trim();
        let district = get(cd);
        if district.is_empty() {
            quarantine.push(q(&line, "district", "", "empty"));
            continue;
        }
        let Some(day) = parse_date(get(ct)) else {
            quarantine.push(q(&line, "date", get(ct), "not a YYYY-MM-DD date"));
            continue;
        };
        let mut vals = [f64::NAN; 2];
        let mut bad = false;
        for (k, (c, name, lo, hi)) in [(cp, "pm25", 0.0, 1000.0), (cx, "tmax", -40.0, 50.0)]
            .into_iter()
            .enumerate()
        {
            let s = get(c);
            if s.is_empty() || s == "-" {
                missing += 1;
                continue;
            }
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => vals[k] = v,
                _ => {
                    quarantine.push(q(&line, name, s, &format!("not a number in {lo}..{hi}")));
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            continue;
        }
        let u = *index.entry(district.to_string()).or_insert_with(|| {
            units.push(district.to_string());
            units.len() - 1
        });
        rows.push((u, day, vals[0], vals[1], line));
    }
    let (Some(first), Some(last)) = (
        rows.iter().map(|r| r.1).min(),
        rows.iter().map(|r| r.1).max(),
    ) else {
        return Err(err("no readable rows".into()));
    };
    let days = (last - first + 1) as usize;
    let cal = Daily {
        units,
        first_day: first,
        days,
    };
    let mut pm25 = vec![f64::NAN; cal.len()];
    let mut tmax = vec![f64::NAN; cal.len()];
    let mut seen = vec![false; cal.len()];
    for (u, day, p, t, line) in rows {
        let i = u * days + (day - first) as usize;
        if seen[i] {
            quarantine.push(q(
                &line,
                "date",
                &date_string(day),
                &format!("a second row for district {} on this day", cal.units[u]),
            ));
            continue;
        }
        seen[i] = true;
        pm25[i] = p;
        tmax[i] = t;
    }
    missing += seen.iter().filter(|s| !**s).count() * 2;
    Ok((
        Environment {
            cal,
            pm25,
            tmax,
            missing,
        },
        quarantine,
    ))
}

/// The mean of lags `lo..=hi` of each unit's series (NaN where any is missing or before day 0).
pub fn lag_mean(cal: &Daily, x: &[f64], lo: usize, hi: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    for u in 0..cal.units.len() {
        let row = &x[u * cal.days..(u + 1) * cal.days];
        for t in hi..cal.days {
            let s: f64 = (lo..=hi).map(|l| row[t - l]).sum();
            out[u * cal.days + t] = s / (hi - lo + 1) as f64;
        }
    }
    out
}

/// One stratum per unit, year and month; `u32::MAX` never occurs.
pub fn strata_unit_year_month(cal: &Daily) -> Vec<u32> {
    let mut out = Vec::with_capacity(cal.len());
    let months: Vec<u32> = (0..cal.days)
        .map(|t| {
            let (y, m, _) = civil(cal.first_day + t as i64);
            ((y - 1970) * 12 + i64::from(m) - 1) as u32
        })
        .collect();
    let (m0, m1) = (months[0], *months.last().unwrap_or(&months[0]));
    let per_unit = m1 - m0 + 1;
    for u in 0..cal.units.len() {
        for t in 0..cal.days {
            out.push(u as u32 * per_unit + months[t] - m0);
        }
    }
    out
}

/// Six day-of-week indicators (Monday the reference).
pub fn day_of_week(cal: &Daily) -> Vec<(String, Vec<f64>)> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    // 1970-01-01 was a Thursday.
    let dow = |t: usize| ((cal.first_day + t as i64 + 3).rem_euclid(7)) as usize;
    (1..7)
        .map(|k| {
            let mut v = Vec::with_capacity(cal.len());
            for _ in 0..cal.units.len() {
                v.extend((0..cal.days).map(|t| f64::from(u8::from(dow(t) == k))));
            }
            (format!("dow_{}", NAMES[k]), v)
        })
        .collect()
}

/// Harmonics of the day of year (sin and cos of k·2π·doy/365.25, k = 1..=`k`): inside a month the
/// season still rises or falls, and a stratum intercept cannot follow that; these can.
pub fn season_harmonics(cal: &Daily, k: usize) -> Vec<(String, Vec<f64>)> {
    let doy: Vec<f64> = (0..cal.days)
        .map(|t| {
            let day = cal.first_day + t as i64;
            let (y, _, _) = civil(day);
            (day - days_from_civil(y, 1, 1) + 1) as f64
        })
        .collect();
    let mut out = Vec::new();
    for h in 1..=k {
        for (name, f) in [("sin", f64::sin as fn(f64) -> f64), ("cos", f64::cos)] {
            let mut v = Vec::with_capacity(cal.len());
            for _ in 0..cal.units.len() {
                v.extend(
                    doy.iter()
                        .map(|d| f(h as f64 * 2.0 * std::f64::consts::PI * d / 365.25)),
                );
            }
            out.push((format!("season_{name}{h}"), v));
        }
    }
    out
}

/// A conditional (stratum-eliminated) quasi-Poisson fit.
#[derive(Clone, Debug, Serialize)]
pub struct CondFit {
    pub names: Vec<String>,
    pub beta: Vec<f64>,
    /// Model-based covariance (inverse information), before the dispersion.
    pub cov_unscaled: Vec<Vec<f64>>,
    /// Pearson χ² / (rows − strata − terms).
    pub phi: f64,
    /// Conditional Poisson log-likelihood (up to a constant in the data).
    pub loglik: f64,
    pub rows: usize,
    pub strata: usize,
    pub cases: f64,
    pub iterations: usize,
}

impl CondFit {
    /// Standard error of `beta[k]` with the dispersion.
    pub fn se(&self, k: usize) -> f64 {
        (self.cov_unscaled[k][k] * self.phi.max(0.0)).sqrt()
    }
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
    /// `a'β` and its quasi standard error.
    pub fn contrast(&self, a: &[f64]) -> (f64, f64) {
        let p = a.len();
        let est: f64 = (0..p).map(|i| a[i] * self.beta[i]).sum();
        let v: f64 = (0..p)
            .map(|i| a[i] * (0..p).map(|j| self.cov_unscaled[i][j] * a[j]).sum::<f64>())
            .sum();
        (est, (v * self.phi.max(0.0)).sqrt())
    }
}

/// Fit `log μ = α_stratum + Σ βk xk` to counts `y` by Newton's method on the conditional likelihood
/// (multinomial within each stratum). Rows with a NaN anywhere are left out; strata with no cases
/// carry no information and are dropped, as in the unconditional model.
pub fn conditional_quasi_poisson(
    y: &[f64],
    terms: &[(String, Vec<f64>)],
    strata: &[u32],
) -> Result<CondFit, EvidenceError> {
    let p = terms.len();
    let n = y.len();
    if terms.iter().any(|(_, v)| v.len() != n) || strata.len() != n {
        return Err(EvidenceError::Fit("terms of different lengths".into()));
    }
    let mut rows: Vec<usize> = (0..n)
        .filter(|&i| y[i].is_finite() && y[i] >= 0.0 && terms.iter().all(|(_, v)| v[i].is_finite()))
        .collect();
    rows.sort_by_key(|&i| strata[i]);
    // Stratum ranges over `rows`, keeping those with a case.
    let mut ranges = Vec::new();
    let mut a = 0;
    while a < rows.len() {
        let mut b = a + 1;
        while b < rows.len() && strata[rows[b]] == strata[rows[a]] {
            b += 1;
        }
        let total: f64 = rows[a..b].iter().map(|&i| y[i]).sum();
        if total > 0.0 && b - a > 1 {
            ranges.push((a, b, total));
        }
        a = b;
    }
    let used: usize = ranges.iter().map(|r| r.1 - r.0).sum();
    if ranges.is_empty() || used <= ranges.len() + p {
        return Err(EvidenceError::Fit(format!(
            "{used} usable days in {} strata: too few for {p} terms",
            ranges.len()
        )));
    }
    // Dense copy of the used rows.
    let mut x = Vec::with_capacity(used * p);
    let mut yy = Vec::with_capacity(used);
    let mut spans = Vec::with_capacity(ranges.len());
    for &(a, b, total) in &ranges {
        let start = yy.len();
        for &i in &rows[a..b] {
            yy.push(y[i]);
            x.extend(terms.iter().map(|(_, v)| v[i]));
        }
        spans.push((start, yy.len(), total));
    }
    let cases: f64 = yy.iter().sum();
    let eval = |beta: &[f64], grad: bool| {
        let mut ll = 0.0;
        let mut u = vec![0.0; p];
        let mut h = vec![vec![0.0; p]; p];
        let mut eta = Vec::new();
        for &(a, b, total) in &spans {
            eta.clear();
            eta.extend((a..b).map(|i| {
                let r = &x[i * p..(i + 1) * p];
                (0..p).map(|k| r[k] * beta[k]).sum::<f64>()
            }));
            let m = eta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = eta.iter().map(|e| (e - m).exp()).sum();
            let ls = s.ln();
            for (j, i) in (a..b).enumerate() {
                ll += yy[i] * (eta[j] - m - ls);
            }
            if !grad {
                continue;
            }
            let mut xbar = vec![0.0; p];
            let mut sxx = vec![vec![0.0; p]; p];
            for (j, i) in (a..b).enumerate() {
                let pi = (eta[j] - m).exp() / s;
                let r = &x[i * p..(i + 1) * p];
                let resid = yy[i] - total * pi;
                for k in 0..p {
                    u[k] += resid * r[k];
                    xbar[k] += pi * r[k];
                    for l in 0..=k {
                        sxx[k][l] += pi * r[k] * r[l];
                    }
                }
            }
            for k in 0..p {
                for l in 0..=k {
                    h[k][l] += total * (sxx[k][l] - xbar[k] * xbar[l]);
                }
            }
        }
        for k in 0..p {
            for l in 0..k {
                h[l][k] = h[k][l];
            }
        }
        (ll, u, h)
    };
    let mut beta = vec![0.0; p];
    let (mut ll, mut u, mut h) = eval(&beta, true);
    let mut iterations = 0;
    let mut inv;
    loop {
        iterations += 1;
        inv = medfed_surveil::glm::invert(&h).ok_or_else(|| {
            EvidenceError::Fit(format!(
                "the terms are collinear or do not vary within strata: {}",
                terms
                    .iter()
                    .map(|t| t.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let step: Vec<f64> = (0..p)
            .map(|k| (0..p).map(|l| inv[k][l] * u[l]).sum())
            .collect();
        let mut f = 1.0;
        let mut accepted = None;
        for _ in 0..30 {
            let trial: Vec<f64> = (0..p).map(|k| beta[k] + f * step[k]).collect();
            let (lt, ..) = eval(&trial, false);
            if lt.is_finite() && lt >= ll - 1e-9 * ll.abs() {
                accepted = Some((trial, lt));
                break;
            }
            f /= 2.0;
        }
        let Some((trial, lt)) = accepted else {
            break;
        };
        let change = (lt - ll).abs();
        let biggest = step.iter().map(|s| (s * f).abs()).fold(0.0, f64::max);
        beta = trial;
        (ll, u, h) = eval(&beta, true);
        if change < 1e-10 * (ll.abs() + 1.0) && biggest < 1e-8 || iterations >= 50 {
            inv = medfed_surveil::glm::invert(&h)
                .ok_or_else(|| EvidenceError::Fit("singular information at the end".into()))?;
            break;
        }
    }
    // Pearson dispersion over the used rows.
    let mut pearson = 0.0;
    for &(a, b, total) in &spans {
        let eta: Vec<f64> = (a..b)
            .map(|i| {
                let r = &x[i * p..(i + 1) * p];
                (0..p).map(|k| r[k] * beta[k]).sum::<f64>()
            })
            .collect();
        let m = eta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = eta.iter().map(|e| (e - m).exp()).sum();
        for (j, i) in (a..b).enumerate() {
            let mu = total * (eta[j] - m).exp() / s;
            if mu > 0.0 {
                pearson += (yy[i] - mu).powi(2) / mu;
            }
        }
    }
    let df = used as f64 - spans.len() as f64 - p as f64;
    Ok(CondFit {
        names: terms.iter().map(|t| t.0.clone()).collect(),
        beta,
        cov_unscaled: inv,
        phi: pearson / df,
        loglik: ll,
        rows: used,
        strata: spans.len(),
        cases,
        iterations,
    })
}

/// The counts of one outcome on the environment's calendar and districts (NaN where not counted).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub y: Vec<f64>,
}

/// Put district-day counts on `env`'s calendar: `counts(district, day)` gives the count, or `None`
/// when that district and day were not counted (left out of every fit, never taken as zero).
pub fn align(env: &Environment, name: &str, counts: impl Fn(&str, i64) -> Option<f64>) -> Outcome {
    let cal = &env.cal;
    let mut y = vec![f64::NAN; cal.len()];
    for (u, code) in cal.units.iter().enumerate() {
        for t in 0..cal.days {
            if let Some(c) = counts(code, cal.first_day + t as i64) {
                y[u * cal.days + t] = c;
            }
        }
    }
    Outcome {
        name: name.to_string(),
        y,
    }
}

/// A relative risk with its 95 % interval.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub outcome: String,
    pub exposure: String,
    /// "lag 0-2 mean", …
    pub lags: String,
    /// "per 10 ug/m3", "per degree C above 28.0" …
    pub per: String,
    pub rr: f64,
    pub lo: f64,
    pub hi: f64,
    pub beta: f64,
    pub se: f64,
    pub phi: f64,
    pub days: usize,
    pub strata: usize,
    pub cases: f64,
}

/// The 95 % Wald limits of `exp(b)`.
fn lower(b: f64, se: f64) -> f64 {
    (b - 1.959964 * se).exp()
}
fn upper(b: f64, se: f64) -> f64 {
    (b + 1.959964 * se).exp()
}

fn estimate(
    fit: &CondFit,
    k: usize,
    outcome: &str,
    exposure: &str,
    lags: &str,
    per: &str,
) -> Estimate {
    let (b, se) = (fit.beta[k], fit.se(k));
    Estimate {
        outcome: outcome.into(),
        exposure: exposure.into(),
        lags: lags.into(),
        per: per.into(),
        rr: b.exp(),
        lo: lower(b, se),
        hi: upper(b, se),
        beta: b,
        se,
        phi: fit.phi,
        days: fit.rows,
        strata: fit.strata,
        cases: fit.cases,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LagPoint {
    /// `None` for the sum over all lags.
    pub lag: Option<usize>,
    pub rr: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub x: f64,
    pub rr: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub outcome: String,
    pub exposure: String,
    pub lags: String,
    pub unit: String,
    pub reference: f64,
    pub knots: Vec<f64>,
    pub points: Vec<CurvePoint>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThresholdProfile {
    pub outcome: String,
    /// (threshold, quasi-deviance above the best: 2 Δloglik / φ).
    pub grid: Vec<(f64, f64)>,
    pub best: f64,
    /// Thresholds whose quasi-deviance is below 3.84 (the 95 % profile interval).
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub first_day: String,
    pub last_day: String,
    pub districts: usize,
    pub estimates: Vec<Estimate>,
    pub threshold: ThresholdProfile,
    pub pm_lags: Vec<LagPoint>,
    pub curves: Vec<Curve>,
    pub method: &'static str,
}

pub const METHOD: &str = "conditional quasi-Poisson regression of daily district counts (strata: district x year x month; terms: day of week, four day-of-year harmonics and the exposures), as in Armstrong, Gasparrini & Tobias 2014; 95% Wald intervals with the Pearson dispersion";

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let h = (s.len() - 1) as f64 * q;
    let (i, f) = (h.floor() as usize, h - h.floor());
    s[i] + f * (s[(i + 1).min(s.len() - 1)] - s[i])
}

fn hinge(x: &[f64], thr: f64) -> Vec<f64> {
    x.iter().map(|v| (v - thr).max(0.0)).collect()
}

/// Piecewise-linear spline basis: x and (x − k)+ per knot.
fn spline(x: &[f64], knots: &[f64], name: &str) -> Vec<(String, Vec<f64>)> {
    let mut out = vec![(name.to_string(), x.to_vec())];
    for (i, k) in knots.iter().enumerate() {
        out.push((format!("{name}_k{i}"), hinge(x, *k)));
    }
    out
}

fn spline_row(x: f64, knots: &[f64]) -> Vec<f64> {
    let mut r = vec![x];
    r.extend(knots.iter().map(|k| (x - k).max(0.0)));
    r
}

/// The curve of a spline fitted as the first `1 + knots` terms, relative to `reference`.
fn curve_of(fit: &CondFit, knots: &[f64], reference: f64, xs: &[f64]) -> Vec<CurvePoint> {
    let p = fit.beta.len();
    let r0 = spline_row(reference, knots);
    xs.iter()
        .map(|&x| {
            let r = spline_row(x, knots);
            let mut a = vec![0.0; p];
            for k in 0..r.len() {
                a[k] = r[k] - r0[k];
            }
            let (e, se) = fit.contrast(&a);
            CurvePoint {
                x,
                rr: e.exp(),
                lo: lower(e, se),
                hi: upper(e, se),
            }
        })
        .collect()
}

/// Run every analysis on respiratory and cardiovascular counts aligned with `env`.
pub fn analyse(
    env: &Environment,
    respiratory: &Outcome,
    cardiovascular: &Outcome,
    progress: &dyn Fn(&str),
) -> Result<Evidence, EvidenceError> {
    let cal = &env.cal;
    let strata = strata_unit_year_month(cal);
    let mut dow = day_of_week(cal);
    dow.extend(season_harmonics(cal, 4));
    let pm02 = lag_mean(cal, &env.pm25, 0, 2);
    let pm10: Vec<f64> = pm02.iter().map(|v| v / 10.0).collect();
    let t01 = lag_mean(cal, &env.tmax, 0, 1);
    let with = |mut head: Vec<(String, Vec<f64>)>| {
        head.extend(dow.iter().cloned());
        head
    };
    // The heat threshold: profile over a grid, cardiovascular visits adjusted for PM2.5.
    progress("heat threshold profile");
    let profile_at = |thr: f64| {
        conditional_quasi_poisson(
            &cardiovascular.y,
            &with(vec![
                ("heat".into(), hinge(&t01, thr)),
                ("pm25_per10".into(), pm10.clone()),
            ]),
            &strata,
        )
        .map(|fit| (thr, fit))
    };
    // 23–33 °C by 0.5, then by 0.1 within 1 °C of the best of those: at a million persons the
    // profile is sharper than the coarse grid.
    let mut prof = (0..=20)
        .map(|i| profile_at(23.0 + 0.5 * f64::from(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let coarse = prof
        .iter()
        .max_by(|a, b| a.1.loglik.total_cmp(&b.1.loglik))
        .map(|p| p.0)
        .ok_or_else(|| EvidenceError::Fit("empty threshold grid".into()))?;
    for k in (-9i32..=9).filter(|k| k % 5 != 0) {
        prof.push(profile_at(((coarse * 10.0).round() + f64::from(k)) / 10.0)?);
    }
    prof.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = prof
        .iter()
        .max_by(|a, b| a.1.loglik.total_cmp(&b.1.loglik))
        .ok_or_else(|| EvidenceError::Fit("empty threshold grid".into()))?;
    let (thr, best_fit) = (best.0, best.1.clone());
    let qdev: Vec<(f64, f64)> = prof
        .iter()
        .map(|(t, f)| {
            (
                *t,
                2.0 * (best_fit.loglik - f.loglik) / best_fit.phi.max(1e-9),
            )
        })
        .collect();
    let inside: Vec<f64> = qdev.iter().filter(|q| q.1 < 3.84).map(|q| q.0).collect();
    let threshold = ThresholdProfile {
        outcome: cardiovascular.name.clone(),
        grid: qdev,
        best: thr,
        lo: inside.iter().cloned().fold(f64::INFINITY, f64::min),
        hi: inside.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    };
    let heat_per = format!("per degree C above {thr:.1}");
    let mut estimates = Vec::new();
    progress("relative risks");
    for o in [respiratory, cardiovascular] {
        let fit = conditional_quasi_poisson(
            &o.y,
            &with(vec![
                ("pm25_per10".into(), pm10.clone()),
                ("heat".into(), hinge(&t01, thr)),
            ]),
            &strata,
        )?;
        estimates.push(estimate(
            &fit,
            0,
            &o.name,
            "pm25",
            "lag 0-2 mean",
            "per 10 ug/m3",
        ));
        estimates.push(estimate(
            &fit,
            1,
            &o.name,
            "tmax",
            "lag 0-1 mean",
            &heat_per,
        ));
    }
    // PM2.5 lags 0–5, unconstrained.
    progress("PM2.5 lag structure");
    let mut terms: Vec<(String, Vec<f64>)> = (0..=5)
        .map(|l| {
            (
                format!("pm25_lag{l}"),
                lag_mean(cal, &env.pm25, l, l)
                    .iter()
                    .map(|v| v / 10.0)
                    .collect(),
            )
        })
        .collect();
    // Same rows as the lag-5 model for every lag: lag_mean(l, l) is NaN only before day l.
    let lag5 = lag_mean(cal, &env.pm25, 5, 5);
    for (_, v) in terms.iter_mut() {
        for (a, b) in v.iter_mut().zip(&lag5) {
            if b.is_nan() {
                *a = f64::NAN;
            }
        }
    }
    terms.push(("heat".into(), hinge(&t01, thr)));
    let fit = conditional_quasi_poisson(&respiratory.y, &with(terms), &strata)?;
    let mut pm_lags: Vec<LagPoint> = (0..=5)
        .map(|l| {
            let (b, se) = (fit.beta[l], fit.se(l));
            LagPoint {
                lag: Some(l),
                rr: b.exp(),
                lo: lower(b, se),
                hi: upper(b, se),
            }
        })
        .collect();
    let mut a = vec![0.0; fit.beta.len()];
    a[..6].fill(1.0);
    let (b, se) = fit.contrast(&a);
    pm_lags.push(LagPoint {
        lag: None,
        rr: b.exp(),
        lo: lower(b, se),
        hi: upper(b, se),
    });
    // Exposure–response curves: piecewise-linear splines, knots at the quartiles.
    progress("exposure-response curves");
    let mut curves = Vec::new();
    for (o, x, other, exposure, lags, unit) in [
        (
            respiratory,
            &pm02,
            ("heat".to_string(), hinge(&t01, thr)),
            "pm25",
            "lag 0-2 mean",
            "µg/m³",
        ),
        (
            cardiovascular,
            &t01,
            ("pm25_per10".to_string(), pm10.clone()),
            "tmax",
            "lag 0-1 mean",
            "°C",
        ),
    ] {
        let knots: Vec<f64> = [0.25, 0.5, 0.75, 0.9]
            .iter()
            .map(|q| (quantile(x, *q) * 10.0).round() / 10.0)
            .collect();
        let mut terms = spline(x, &knots, exposure);
        terms.push(other);
        let fit = conditional_quasi_poisson(&o.y, &with(terms), &strata)?;
        let (lo, hi) = (quantile(x, 0.01), quantile(x, 0.99));
        let xs: Vec<f64> = (0..=40)
            .map(|i| lo + (hi - lo) * f64::from(i) / 40.0)
            .collect();
        let reference = (quantile(x, 0.5) * 10.0).round() / 10.0;
        curves.push(Curve {
            outcome: o.name.clone(),
            exposure: exposure.into(),
            lags: lags.into(),
            unit: unit.into(),
            reference,
            points: curve_of(&fit, &knots, reference, &xs),
            knots,
        });
    }
    Ok(Evidence {
        first_day: date_string(cal.first_day),
        last_day: date_string(cal.first_day + cal.days as i64 - 1),
        districts: cal.units.len(),
        estimates,
        threshold,
        pm_lags,
        curves,
        method: METHOD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The conditional fit equals the unconditional quasi-Poisson GLM with one dummy per stratum
    /// (`medfed_surveil::glm`, R's glm.fit), estimates, standard errors and dispersion alike.
    #[test]
    fn conditional_fit_equals_the_glm_with_stratum_dummies() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (strata_n, per) = (12, 30);
        let n = strata_n * per;
        let x1: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 4.0).collect();
        let x2: Vec<f64> = (0..n).map(|_| f64::from(rng.random::<bool>())).collect();
        let strata: Vec<u32> = (0..n).map(|i| (i / per) as u32).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                let mu = (0.5 + 0.1 * f64::from(strata[i]) + 0.3 * x1[i] - 0.4 * x2[i]).exp();
                // Poisson by inversion, overdispersed by a gamma-ish multiplier.
                let m = mu * (0.5 + rng.random::<f64>());
                let (mut k, mut p, u) = (0.0, (-m).exp(), rng.random::<f64>());
                let mut c = p;
                while u > c {
                    k += 1.0;
                    p *= m / k;
                    c += p;
                }
                k
            })
            .collect();
        let fit = conditional_quasi_poisson(
            &y,
            &[("x1".into(), x1.clone()), ("x2".into(), x2.clone())],
            &strata,
        )
        .unwrap();
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let mut r = vec![x1[i], x2[i]];
                r.extend((0..strata_n).map(|s| f64::from(u8::from(strata[i] as usize == s))));
                r
            })
            .collect();
        let glm = medfed_surveil::glm::quasi_poisson(&rows, &y, &vec![1.0; n]).unwrap();
        for k in 0..2 {
            assert!(
                (fit.beta[k] - glm.beta[k]).abs() < 1e-7,
                "{k}: {} vs {}",
                fit.beta[k],
                glm.beta[k]
            );
            let se_glm = (glm.cov_unscaled[k][k] * glm.dispersion).sqrt();
            assert!((fit.se(k) - se_glm).abs() < 1e-6 * se_glm, "{k}");
        }
        // glm's Pearson uses the last solve's weights (one step behind its estimates).
        assert!((fit.phi - glm.dispersion).abs() < 1e-6 * glm.dispersion);
        assert!(fit.phi > 1.05, "the data are overdispersed: {}", fit.phi);
        assert_eq!((fit.rows, fit.strata), (n, strata_n));
    }

    #[test]
    fn strata_with_no_cases_and_missing_days_are_left_out() {
        let y = vec![0.0, 0.0, 0.0, 2.0, f64::NAN, 5.0, 1.0, 3.0];
        let x = vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 0.5];
        let strata = vec![0, 0, 0, 1, 1, 1, 1, 1];
        let fit = conditional_quasi_poisson(&y, &[("x".into(), x)], &strata).unwrap();
        assert_eq!((fit.rows, fit.strata, fit.cases), (4, 1, 11.0));
        // A term that does not vary inside any stratum is refused, by name.
        let e = conditional_quasi_poisson(&y, &[("flat".into(), vec![1.0; 8])], &strata)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flat"), "{e}");
    }

    #[test]
    fn environment_files_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.csv");
        std::fs::write(&p, "district,date,pm25\n11010,2020-01-01,3\n").unwrap();
        let e = read_environment(&p).unwrap_err().to_string();
        assert!(e.contains("env.csv") && e.contains("tmax"), "{e}");
        std::fs::write(
            &p,
            "district,date,pm25,tmax\n11010,2020-01-01,3,1\n11010,2020-01-02,-,2\n11010,2020-01-01,4,1\n11010,2020-01-03,5,99\n11010,2020-01-04,5,3\n",
        )
        .unwrap();
        let (env, q) = read_environment(&p).unwrap();
        assert_eq!((env.cal.days, env.cal.units.len()), (4, 1));
        assert!(env.pm25[1].is_nan() && env.tmax[1] == 2.0);
        assert_eq!(q.len(), 2, "{q:?}");
        assert_eq!((q[0].line.as_str(), q[0].field.as_str()), ("5", "tmax"));
        assert_eq!((q[1].line.as_str(), q[1].field.as_str()), ("4", "date"));
        // Day 3 lost its row: both values missing, and the dash on day 2.
        assert_eq!(env.missing, 3);
    }

    #[test]
    fn lags_strata_and_calendar() {
        let cal = Daily {
            units: vec!["a".into(), "b".into()],
            first_day: days_from_civil(2020, 1, 30),
            days: 3,
        };
        let x = vec![1.0, 2.0, 6.0, 10.0, 20.0, 30.0];
        let m = lag_mean(&cal, &x, 0, 1);
        assert!(m[0].is_nan() && m[3].is_nan());
        assert_eq!((m[1], m[2], m[5]), (1.5, 4.0, 25.0));
        let s = strata_unit_year_month(&cal);
        // 30 Jan, 31 Jan, 1 Feb per unit.
        assert_eq!(s[0], s[1]);
        assert_ne!(s[1], s[2]);
        assert_ne!(s[0], s[3]);
        // 2020-01-30 was a Thursday.
        let dow = day_of_week(&cal);
        assert_eq!(dow[2].0, "dow_thu");
        assert_eq!(dow[2].1[0], 1.0);
        assert_eq!(dow[3].1[1], 1.0);
    }
}
