//! Farrington Flexible (Farrington et al. 1996; Noufaily et al. 2013), as R
//! `surveillance::farringtonFlexible` computes it: for each time point a quasi-Poisson log-linear
//! model on the same season of `b` previous years (windows of ±`w` periods, plus, with more than one
//! `noPeriods`, the rest of each year cut into seasonal factor levels), with a time trend kept only when it
//! is significant and does not extrapolate, past outbreaks down-weighted by their Anscombe residuals,
//! and a threshold from the 2/3-power normal approximation (`delta`) or the negative binomial plug-in
//! quantile (`nbPlugin`, Noufaily's).

use crate::dist::{pnbinom_upper, pnorm_upper, ppois_upper, pt_two_sided, qnbinom, qnorm, qpois};
use crate::glm::{quasi_poisson, Fit};
use crate::{Point, SurveilError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Threshold {
    /// Farrington's: the 2/3-power transformed normal approximation with the delta method.
    Delta,
    /// Noufaily's: a negative binomial quantile at the predicted mean (plug-in).
    NbPlugin,
    /// The negative binomial quantile at the upper α quantile of the predicted mean.
    Muan,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarringtonControl {
    /// Years back.
    pub b: usize,
    /// Half-width of the window around each reference point.
    pub w: usize,
    pub reweight: bool,
    pub weights_threshold: f64,
    pub alpha: f64,
    pub trend: bool,
    pub p_threshold_trend: f64,
    /// No alarm unless at least `.0` cases in the last `.1` periods.
    pub limit54: (f64, usize),
    pub no_periods: usize,
    /// Recent periods left out of the baseline (`None` = `w`).
    pub past_weeks_not_included: Option<usize>,
    pub threshold: Threshold,
}

impl FarringtonControl {
    /// Farrington et al. (1996) as `farringtonFlexible` reproduces it.
    pub fn original() -> Self {
        FarringtonControl {
            b: 5,
            w: 3,
            reweight: true,
            weights_threshold: 1.0,
            alpha: 0.05,
            trend: true,
            p_threshold_trend: 0.05,
            limit54: (5.0, 4),
            no_periods: 1,
            past_weeks_not_included: None,
            threshold: Threshold::Delta,
        }
    }

    /// The improved method of Noufaily et al. (2013): 10 seasonal periods, all trends kept,
    /// weights above 2.58, the last 26 weeks out of the baseline, the negative binomial quantile.
    pub fn noufaily() -> Self {
        FarringtonControl {
            weights_threshold: 2.58,
            p_threshold_trend: 1.0,
            no_periods: 10,
            past_weeks_not_included: Some(26),
            threshold: Threshold::NbPlugin,
            ..Self::original()
        }
    }
}

/// A count series: `freq` periods per year and, optionally, each period's start as days since
/// 1970-01-01 (reference points are then found by calendar year, as R does for date-indexed weekly
/// series).
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    pub observed: &'a [f64],
    pub freq: usize,
    pub dates: Option<&'a [i64]>,
}

/// Civil date of days since 1970-01-01 (proleptic Gregorian).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date; day overflow rolls into the next month (R's POSIXlt).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn weekday(days: i64) -> i64 {
    (days + 4).rem_euclid(7)
}

/// Indices of the reference points of `k` (k itself first, then one per year back).
fn reference_points(s: &Series<'_>, k: usize, b: usize) -> Result<Vec<usize>, SurveilError> {
    let missing = || SurveilError::TooShort {
        needed: b * s.freq + 1,
        first: k,
    };
    match s.dates {
        None => (0..=b)
            .map(|i| k.checked_sub(i * s.freq).ok_or_else(missing))
            .collect(),
        Some(dates) => {
            let day = dates[k];
            let (y, m, d) = civil(day);
            (0..=b)
                .map(|i| {
                    let r = days_from_civil(y - i as i64, m, d);
                    let r = if s.freq == 52 {
                        let a = r - (weekday(r) - weekday(day));
                        let bb = a + if a > r { -7 } else { 7 };
                        if (a - r).abs() > (bb - r).abs() {
                            bb
                        } else {
                            a
                        }
                    } else {
                        r
                    };
                    dates.iter().position(|&x| x == r).ok_or_else(missing)
                })
                .collect()
        }
    }
}

/// Seasonal block of every index for time point `k` (R's `blocks`); `None` = not in the baseline.
fn blocks(
    n: usize,
    refs: &[usize],
    w: usize,
    p: usize,
) -> Result<Vec<Option<usize>>, SurveilError> {
    let mut f = vec![None; n];
    let now = refs[0];
    for x in f.iter_mut().take(now + 1).skip(now.saturating_sub(w)) {
        *x = Some(p);
    }
    for i in 1..refs.len() {
        let r = refs[i];
        if r < w || r + w >= n {
            return Err(SurveilError::TooShort {
                needed: w,
                first: r,
            });
        }
        for x in f.iter_mut().take(r + w + 1).skip(r - w) {
            *x = Some(p);
        }
        if p != 1 {
            let period = refs[i - 1] as i64 - 2 * w as i64 - 1 - r as i64;
            if period < p as i64 - (2 * w as i64 + 1) || period < (p - 1) as i64 {
                return Err(SurveilError::Control(
                    "number of seasonal periods too large".into(),
                ));
            }
            let (len, rest) = (period as usize / (p - 1), period as usize % (p - 1));
            let mut start = r + w + 1;
            for j in 1..p {
                let l = len + usize::from(j <= rest);
                for x in f.iter_mut().skip(start).take(l) {
                    *x = Some(j);
                }
                start += l;
            }
        }
    }
    Ok(f)
}

struct Model {
    fit: Fit,
    phi: f64,
    /// The dispersion `summary.glm` and `predict.glm` see afterwards. R's `fitGLM.flexible` replaces
    /// the model's working weights by the Anscombe weights ω after computing φ, so the standard
    /// errors of the trend test and of the prediction use Σ ω ((y − μ)/μ)² ⁄ (n − p). Reproduced, so
    /// that bounds agree with R's.
    summary_dispersion: f64,
    trend: bool,
}

fn design(wtime: &[f64], groups: &[usize], levels: &[usize], trend: bool) -> Vec<Vec<f64>> {
    wtime
        .iter()
        .zip(groups)
        .map(|(t, g)| row(*t, *g, levels, trend))
        .collect()
}

fn row(t: f64, g: usize, levels: &[usize], trend: bool) -> Vec<f64> {
    let mut r = vec![1.0];
    if trend {
        r.push(t);
    }
    r.extend(levels.iter().skip(1).map(|l| f64::from(u8::from(*l == g))));
    r
}

/// `algo.farrington.fitGLM.flexible`: fit, fall back to no trend if it does not converge, then
/// refit with Anscombe-residual weights.
fn fit_flexible(
    y: &[f64],
    wtime: &[f64],
    groups: &[usize],
    levels: &[usize],
    trend: bool,
    ctl: &FarringtonControl,
) -> Option<Model> {
    let ones = vec![1.0; y.len()];
    let mut trend = trend;
    let mut x = design(wtime, groups, levels, trend);
    let mut fit = quasi_poisson(&x, y, &ones).filter(|f| f.converged);
    if fit.is_none() && trend {
        trend = false;
        x = design(wtime, groups, levels, trend);
        fit = quasi_poisson(&x, y, &ones).filter(|f| f.converged);
    }
    let mut fit = fit?;
    let mut phi = fit.dispersion.max(1.0);
    if ctl.reweight {
        let s: Vec<f64> = (0..y.len())
            .map(|i| {
                let mu = fit.fitted[i];
                1.5 * (y[i].powf(2.0 / 3.0) * mu.powf(-1.0 / 6.0) - mu.sqrt())
                    / (phi * (1.0 - fit.hat[i])).sqrt()
            })
            .collect();
        let thr = ctl.weights_threshold;
        let denom: f64 = s
            .iter()
            .map(|&v| if v > thr { v.powi(-2) } else { 1.0 })
            .sum();
        let gamma = s.len() as f64 / denom;
        let omega: Vec<f64> = s
            .iter()
            .map(|&v| if v > thr { gamma * v.powi(-2) } else { gamma })
            .collect();
        fit = quasi_poisson(&x, y, &omega)?;
        phi = fit.dispersion.max(1.0);
        let summary_dispersion = (0..y.len())
            .map(|i| {
                let r = (y[i] - fit.fitted[i]) / fit.fitted[i];
                omega[i] * r * r
            })
            .sum::<f64>()
            / fit.df_residual;
        return Some(Model {
            summary_dispersion,
            fit,
            phi,
            trend,
        });
    }
    Some(Model {
        summary_dispersion: fit.dispersion,
        fit,
        phi,
        trend,
    })
}

/// Farrington Flexible at each index of `range` (0-based). A point whose model cannot be fitted gets
/// no bound and no alarm, as in R.
pub fn farrington_flexible(
    s: &Series<'_>,
    range: std::ops::Range<usize>,
    ctl: &FarringtonControl,
) -> Result<Vec<Point>, SurveilError> {
    if ctl.no_periods == 0 || ctl.b == 0 || !(0.0..1.0).contains(&ctl.alpha) {
        return Err(SurveilError::Control(
            "Farrington: b ≥ 1, noPeriods ≥ 1, 0 < alpha < 1".into(),
        ));
    }
    if let Some(d) = s.dates {
        if d.len() != s.observed.len() {
            return Err(SurveilError::Control(
                "dates and counts differ in length".into(),
            ));
        }
    }
    let obs = s.observed;
    let n = obs.len();
    if range.end > n {
        return Err(SurveilError::TooShort {
            needed: n,
            first: range.end,
        });
    }
    let pwni = ctl.past_weeks_not_included.unwrap_or(ctl.w);
    let z = qnorm(1.0 - ctl.alpha);
    let mut out = Vec::with_capacity(range.len());
    for k in range {
        // R gives no bound and no alarm without `limit54` cases in the last weeks; skip the fit.
        let (need, last) = ctl.limit54;
        let recent: f64 = obs[(k + 1).saturating_sub(last)..=k].iter().sum();
        if recent < need {
            out.push(Point::new(k, obs[k], f64::NAN, f64::NAN));
            continue;
        }
        let refs = reference_points(s, k, ctl.b)?;
        let mut bl = blocks(n, &refs, ctl.w, ctl.no_periods)?;
        for x in bl.iter_mut().take(k + 1).skip(k.saturating_sub(pwni)) {
            *x = None;
        }
        let idx: Vec<usize> = (0..n)
            .filter(|&i| bl[i].is_some() && obs[i].is_finite())
            .collect();
        let first = idx.first().copied().unwrap_or(0);
        let time = |i: usize| match s.dates {
            Some(d) => (d[i] - d[first]) as f64 / (d[1] - d[0]) as f64,
            None => (i + 1) as f64,
        };
        let y: Vec<f64> = idx.iter().map(|&i| obs[i]).collect();
        let wtime: Vec<f64> = idx.iter().map(|&i| time(i)).collect();
        let groups: Vec<usize> = idx.iter().map(|&i| bl[i].unwrap_or(0)).collect();
        let mut levels = if ctl.no_periods != 1 {
            let mut l = groups.clone();
            l.sort_unstable();
            l.dedup();
            l
        } else {
            vec![]
        };
        if levels.is_empty() {
            levels.push(usize::MAX);
        }
        let t0 = time(k);
        let model = fit_flexible(&y, &wtime, &groups, &levels, ctl.trend, ctl).and_then(|m| {
            if !m.trend {
                return Some(m);
            }
            let x0 = row(t0, ctl.no_periods, &levels, true);
            let (eta, _) = m.fit.predict_link(&x0, m.summary_dispersion);
            let se_w = (m.summary_dispersion * m.fit.cov_unscaled[1][1]).sqrt();
            let p = pt_two_sided(m.fit.beta[1] / se_w, m.fit.df_residual);
            let max_y = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if ctl.b >= 3 && p < ctl.p_threshold_trend && eta.exp() <= max_y {
                Some(m)
            } else {
                fit_flexible(&y, &wtime, &groups, &levels, false, ctl)
            }
        });
        let Some(m) = model else {
            out.push(Point::new(k, obs[k], f64::NAN, f64::NAN));
            continue;
        };
        let x0 = row(t0, ctl.no_periods, &levels, m.trend);
        let (eta0, se_eta) = m.fit.predict_link(&x0, m.summary_dispersion);
        let yk = obs[k];
        let (upper, expected, pred_fit, prob) = match ctl.threshold {
            Threshold::Delta => {
                let mu0 = eta0.exp();
                let se_mu = se_eta * mu0;
                let tau = m.phi + se_mu * se_mu / mu0;
                let se = (4.0 / 9.0 * mu0.powf(1.0 / 3.0) * tau).sqrt();
                let upper = (mu0.powf(2.0 / 3.0) + z * se).powf(1.5);
                let prob = pnorm_upper((yk.powf(2.0 / 3.0) - mu0.powf(2.0 / 3.0)) / se);
                (upper, mu0, mu0, prob)
            }
            Threshold::NbPlugin | Threshold::Muan => {
                let mu_q = if ctl.threshold == Threshold::NbPlugin {
                    eta0.exp()
                } else {
                    (eta0 + z * se_eta).exp()
                };
                if !mu_q.is_finite() {
                    (f64::NAN, eta0.exp(), eta0, f64::NAN)
                } else if m.phi > 1.0 {
                    let size = mu_q / (m.phi - 1.0);
                    let upper = qnbinom(1.0 - ctl.alpha, size, 1.0 / m.phi);
                    (
                        upper,
                        eta0.exp(),
                        eta0,
                        pnbinom_upper(yk - 1.0, size, 1.0 / m.phi),
                    )
                } else {
                    (
                        qpois(1.0 - ctl.alpha, mu_q),
                        eta0.exp(),
                        eta0,
                        ppois_upper(yk - 1.0, mu_q),
                    )
                }
            }
        };
        let enough = true;
        let score = (yk - pred_fit) / (upper - pred_fit);
        let mut p = Point::new(k, yk, if enough { upper } else { f64::NAN }, expected);
        p.alarm = enough && score.is_finite() && score > 1.0 && yk != 0.0;
        p.score = enough.then_some(score).filter(|v| v.is_finite());
        p.p_value = Some(prob).filter(|v| v.is_finite());
        out.push(p);
    }
    Ok(out)
}
