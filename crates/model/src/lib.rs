//! Exact federated generalized linear models, as DataSHIELD's `ds.glm` does them: every Newton
//! iteration each site computes its score vector and information matrix at the hub's current
//! coefficients ([`site_sums`], the local step, after the model disclosure check), the hub adds them
//! and takes the Newton step ([`newton_step`]); at convergence the coefficients equal those of the
//! pooled fit, because the pooled log-likelihood's derivatives are the sums of the sites'.
//!
//! Families with canonical links: Gaussian (identity), binomial (logit), Poisson (log, with an
//! offset for rates). Optional L2 penalty on every coefficient but the intercept.

mod evaluate;

pub use evaluate::{risk_bin, CalibrationGroup, RiskHistogram, LOGIT_RANGE};
use medfed_privacy::{check_model, Policy, Suppression};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Gaussian,
    Binomial,
    Poisson,
    /// Cox proportional hazards with Breslow ties, stratified by site; sums from
    /// [`cox_site_sums`].
    Cox,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("rows: {0}")]
    Rows(String),
    /// The site's disclosure check refused the model.
    #[error("refused by the site's disclosure policy: {0:?}")]
    Refused(Suppression),
    #[error("the information matrix is singular (collinear covariates?)")]
    Singular,
    #[error("no convergence after {0} iterations")]
    NoConvergence(usize),
}

/// A site's rows for one model: `x` row-major with `p` columns (the intercept, if any, is column 0),
/// response `y`, optional offset (Poisson log person-time).
#[derive(Clone, Debug)]
pub struct Rows<'a> {
    pub p: usize,
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub offset: Option<&'a [f64]>,
}

impl Rows<'_> {
    pub fn n(&self) -> usize {
        self.y.len()
    }
    fn check(&self, family: Family) -> Result<(), ModelError> {
        if self.p == 0 || self.x.len() != self.p * self.y.len() {
            return Err(ModelError::Rows(format!(
                "x has {} values for {} rows of {} columns",
                self.x.len(),
                self.y.len(),
                self.p
            )));
        }
        if let Some(o) = self.offset {
            if o.len() != self.y.len() {
                return Err(ModelError::Rows("offset length differs from rows".into()));
            }
        }
        for (i, &y) in self.y.iter().enumerate() {
            let ok = match family {
                Family::Gaussian => y.is_finite(),
                Family::Binomial => y == 0.0 || y == 1.0,
                Family::Poisson => y >= 0.0 && y.fract() == 0.0,
                Family::Cox => false,
            };
            if !ok {
                return Err(ModelError::Rows(format!(
                    "row {i}: response {y} is not valid for {family:?}"
                )));
            }
        }
        finite_covariates(self.x, self.p)
    }
}

/// Every covariate finite, or the row and column that is not.
fn finite_covariates(x: &[f64], p: usize) -> Result<(), ModelError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(ModelError::Rows(format!(
            "row {}: covariate {} is not finite",
            i / p,
            i % p
        ))),
        None => Ok(()),
    }
}

/// The site's events and non-events (infinite where the family has none) must each reach the
/// policy's minimum cell count, or nothing about the outcomes leaves the site.
fn enough_events(events: f64, non_events: f64, policy: &Policy) -> Result<(), ModelError> {
    let min = policy.min_cell_count as f64;
    if events < min || non_events < min {
        return Err(ModelError::Refused(Suppression::MinCellCount {
            threshold: policy.min_cell_count,
        }));
    }
    Ok(())
}

/// What a site releases in one iteration: sums over its rows at the given coefficients. Every
/// field is a sum over rows, so the network's totals are the sums of the sites' (and can be added
/// under secure aggregation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteSums {
    pub n: f64,
    /// Score: Σ xᵢ (yᵢ − μᵢ).
    pub score: Vec<f64>,
    /// Information: Σ wᵢ xᵢ xᵢᵀ (p × p, row-major), w = the variance function at μ.
    pub information: Vec<f64>,
    /// Deviance at the given coefficients.
    pub deviance: f64,
    /// Log-likelihood terms that do not depend on the scale (Σ y log μ + … ), for AIC.
    pub loglik: f64,
    /// Σ y (events for binomial and Poisson models).
    pub events: f64,
}

impl SiteSums {
    /// Nothing summed yet over `n` rows with `events` outcomes, for a model of `p` parameters.
    fn zero(p: usize, n: usize, events: f64) -> SiteSums {
        SiteSums {
            n: n as f64,
            score: vec![0.0; p],
            information: vec![0.0; p * p],
            deviance: 0.0,
            loglik: 0.0,
            events,
        }
    }

    /// The flat vector `[n, score…, information…, deviance, loglik, events]` for secure aggregation.
    /// Length of [`SiteSums::to_vec`] for `p` parameters: what a site releases each round.
    pub fn released_len(p: usize) -> usize {
        p + p * p + 4
    }

    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = vec![self.n];
        v.extend(&self.score);
        v.extend(&self.information);
        v.extend([self.deviance, self.loglik, self.events]);
        v
    }
    pub fn from_vec(p: usize, v: &[f64]) -> Option<SiteSums> {
        if v.len() != 1 + p + p * p + 3 {
            return None;
        }
        Some(SiteSums {
            n: v[0],
            score: v[1..1 + p].to_vec(),
            information: v[1 + p..1 + p + p * p].to_vec(),
            deviance: v[1 + p + p * p],
            loglik: v[2 + p + p * p],
            events: v[3 + p + p * p],
        })
    }
    /// The network's sums: the sites' parts added (None without any part).
    pub fn total(parts: impl IntoIterator<Item = SiteSums>) -> Option<SiteSums> {
        let mut it = parts.into_iter();
        let mut t = it.next()?;
        for p in it {
            t.add(&p);
        }
        Some(t)
    }

    pub fn add(&mut self, o: &SiteSums) {
        self.n += o.n;
        for (a, b) in self.score.iter_mut().zip(&o.score) {
            *a += b;
        }
        for (a, b) in self.information.iter_mut().zip(&o.information) {
            *a += b;
        }
        self.deviance += o.deviance;
        self.loglik += o.loglik;
        self.events += o.events;
    }
}

/// The local step: the site's sums at `beta`, after its disclosure checks — the model's parameters
/// against the site's rows (`privacy::check_model`), and for binomial and Poisson models at least
/// `min_cell_count` events and (binomial) non-events at the site, so that no released sum is about
/// a handful of persons' outcomes.
pub fn site_sums(
    family: Family,
    rows: &Rows,
    beta: &[f64],
    policy: &Policy,
) -> Result<SiteSums, ModelError> {
    if family == Family::Cox {
        return Err(ModelError::Rows(
            "a Cox model takes times and events: use cox_site_sums".into(),
        ));
    }
    rows.check(family)?;
    let n = rows.n();
    check_model(rows.p as u64, n as u64, policy).map_err(ModelError::Refused)?;
    // Events (Σy) are known before any sum is computed; a site with too few releases nothing.
    let events: f64 = rows.y.iter().sum();
    match family {
        Family::Binomial => enough_events(events, n as f64 - events, policy)?,
        Family::Poisson => enough_events(events, f64::INFINITY, policy)?,
        Family::Gaussian | Family::Cox => {}
    }
    glm_sums(family, rows, beta)
}

/// The sums of a GLM's rows at `beta`, without the disclosure check: for a caller that releases them
/// through `medfed_privacy::release` (the node), which applies the same checks.
pub fn glm_sums(family: Family, rows: &Rows, beta: &[f64]) -> Result<SiteSums, ModelError> {
    if family == Family::Cox {
        return Err(ModelError::Rows(
            "a Cox model takes times and events: use cox_sums".into(),
        ));
    }
    rows.check(family)?;
    if beta.len() != rows.p {
        return Err(ModelError::Rows(format!(
            "{} coefficients for {} columns",
            beta.len(),
            rows.p
        )));
    }
    let (n, p) = (rows.n(), rows.p);
    let events: f64 = rows.y.iter().sum();
    let mut s = SiteSums::zero(p, n, events);
    for i in 0..n {
        let xi = &rows.x[i * p..(i + 1) * p];
        let eta: f64 = xi.iter().zip(beta).map(|(a, b)| a * b).sum::<f64>()
            + rows.offset.map_or(0.0, |o| o[i]);
        let y = rows.y[i];
        let (mu, w) = match family {
            Family::Gaussian | Family::Cox => (eta, 1.0),
            Family::Binomial => {
                let mu = 1.0 / (1.0 + (-eta).exp());
                (mu, mu * (1.0 - mu))
            }
            Family::Poisson => {
                let mu = eta.exp();
                (mu, mu)
            }
        };
        let r = y - mu;
        for j in 0..p {
            s.score[j] += xi[j] * r;
            let wx = w * xi[j];
            for (k, xk) in xi.iter().enumerate().skip(j) {
                s.information[j * p + k] += wx * xk;
            }
        }
        match family {
            Family::Gaussian | Family::Cox => s.deviance += r * r,
            Family::Binomial => {
                let ll = if y == 1.0 { mu.ln() } else { (1.0 - mu).ln() };
                s.loglik += ll;
                s.deviance -= 2.0 * ll;
            }
            Family::Poisson => {
                s.loglik += y * eta - mu - libm::lgamma(y + 1.0);
                s.deviance += 2.0 * (if y > 0.0 { y * (y / mu).ln() } else { 0.0 } - r);
            }
        }
    }
    for j in 0..p {
        for k in 0..j {
            s.information[j * p + k] = s.information[k * p + j];
        }
    }
    Ok(s)
}

/// Cholesky factor of a symmetric positive definite p × p matrix (row-major), or None.
fn cholesky(a: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= l[i * p + k] * l[j * p + k];
            }
            if i == j {
                if s <= 1e-12 * a[i * p + i].abs().max(1e-300) {
                    return None;
                }
                l[i * p + i] = s.sqrt();
            } else {
                l[i * p + j] = s / l[j * p + j];
            }
        }
    }
    Some(l)
}

fn solve_chol(l: &[f64], p: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in 0..p {
        for k in 0..i {
            z[i] -= l[i * p + k] * z[k];
        }
        z[i] /= l[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            z[i] -= l[k * p + i] * z[k];
        }
        z[i] /= l[i * p + i];
    }
    z
}

fn inverse(a: &[f64], p: usize) -> Result<Vec<f64>, ModelError> {
    let l = cholesky(a, p).ok_or(ModelError::Singular)?;
    let mut inv = vec![0.0; p * p];
    for j in 0..p {
        let mut e = vec![0.0; p];
        e[j] = 1.0;
        for (i, v) in solve_chol(&l, p, &e).into_iter().enumerate() {
            inv[i * p + j] = v;
        }
    }
    Ok(inv)
}

/// The penalty's diagonal: λ on every coefficient but the intercept (column 0 when `intercept`).
fn penalty(p: usize, l2: f64, intercept: bool) -> Vec<f64> {
    (0..p)
        .map(|j| if intercept && j == 0 { 0.0 } else { l2 })
        .collect()
}

/// The hub's step: new coefficients from the network's sums at `beta`,
/// β + (I + λP)⁻¹ (U − λPβ).
pub fn newton_step(
    beta: &[f64],
    total: &SiteSums,
    l2: f64,
    intercept: bool,
) -> Result<Vec<f64>, ModelError> {
    let p = beta.len();
    let pen = penalty(p, l2, intercept);
    let mut h = total.information.clone();
    for j in 0..p {
        h[j * p + j] += pen[j];
    }
    let g: Vec<f64> = (0..p).map(|j| total.score[j] - pen[j] * beta[j]).collect();
    let l = cholesky(&h, p).ok_or(ModelError::Singular)?;
    let d = solve_chol(&l, p, &g);
    Ok(beta.iter().zip(d).map(|(b, d)| b + d).collect())
}

/// A fitted model, in statsmodels' terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub family: Family,
    pub coefficients: Vec<f64>,
    pub std_errors: Vec<f64>,
    pub z: Vec<f64>,
    pub p_values: Vec<f64>,
    /// 95 % Wald intervals.
    pub ci_low: Vec<f64>,
    pub ci_high: Vec<f64>,
    pub deviance: f64,
    /// Dispersion: residual sum of squares / (n − p) for the Gaussian family, 1 otherwise.
    pub scale: f64,
    pub log_likelihood: f64,
    pub aic: f64,
    pub n: f64,
    pub iterations: usize,
}

fn normal_two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// Summarize a fit from the network's sums at the final coefficients.
pub fn summarize(
    family: Family,
    beta: &[f64],
    total: &SiteSums,
    iterations: usize,
) -> Result<Fit, ModelError> {
    let p = beta.len();
    let scale = match family {
        Family::Gaussian => total.deviance / (total.n - p as f64),
        _ => 1.0,
    };
    let inv = inverse(&total.information, p)?;
    let se: Vec<f64> = (0..p).map(|j| (scale * inv[j * p + j]).sqrt()).collect();
    let z: Vec<f64> = beta.iter().zip(&se).map(|(b, s)| b / s).collect();
    const Z975: f64 = 1.959_963_984_540_054;
    // statsmodels' GLM log-likelihood; Gaussian with the scale at the MLE (deviance / n).
    let llf = match family {
        Family::Gaussian => {
            let s = total.deviance / total.n;
            -total.n / 2.0 * ((2.0 * std::f64::consts::PI * s).ln() + 1.0)
        }
        _ => total.loglik,
    };
    // statsmodels: aic = -2 llf + 2 (df_model + 1) = -2 llf + 2p with an intercept (the Gaussian
    // scale is not counted); for the Cox model (no intercept) -2 log partial likelihood + 2p.
    let aic = -2.0 * llf + 2.0 * p as f64;
    Ok(Fit {
        family,
        coefficients: beta.to_vec(),
        p_values: z.iter().map(|z| normal_two_sided_p(*z)).collect(),
        ci_low: beta.iter().zip(&se).map(|(b, s)| b - Z975 * s).collect(),
        ci_high: beta.iter().zip(&se).map(|(b, s)| b + Z975 * s).collect(),
        std_errors: se,
        z,
        deviance: total.deviance,
        scale,
        log_likelihood: llf,
        aic,
        n: total.n,
        iterations,
    })
}

/// Drive a fit to convergence over any way of getting the network's sums at given coefficients
/// (in-process sites in tests, the network's rounds in a study). Converged when no coefficient moves
/// by more than 1e-10 (relative to max(1, |β|)).
pub fn fit(
    family: Family,
    p: usize,
    l2: f64,
    intercept: bool,
    max_iter: usize,
    mut network_sums: impl FnMut(&[f64]) -> Result<SiteSums, ModelError>,
) -> Result<Fit, ModelError> {
    let mut beta = vec![0.0; p];
    for it in 1..=max_iter {
        let total = network_sums(&beta)?;
        let next = newton_step(&beta, &total, l2, intercept)?;
        let moved = next
            .iter()
            .zip(&beta)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0, f64::max);
        beta = next;
        if moved < 1e-10 {
            let total = network_sums(&beta)?;
            return summarize(family, &beta, &total, it);
        }
    }
    Err(ModelError::NoConvergence(max_iter))
}

/// A site's survival rows for a Cox model: `x` row-major with `p` columns (no intercept), follow-up
/// `time` and `event` (1 event, 0 censored).
#[derive(Clone, Debug)]
pub struct CoxRows<'a> {
    pub p: usize,
    pub x: &'a [f64],
    pub time: &'a [f64],
    pub event: &'a [bool],
}

impl CoxRows<'_> {
    fn check(&self, beta: &[f64]) -> Result<(), ModelError> {
        let (p, n) = (self.p, self.time.len());
        if p == 0 || self.x.len() != p * n || self.event.len() != n || beta.len() != p {
            return Err(ModelError::Rows(format!(
                "x has {} values, {} times, {} events, {} coefficients for {p} columns",
                self.x.len(),
                n,
                self.event.len(),
                beta.len()
            )));
        }
        if let Some(i) = self.time.iter().position(|t| !t.is_finite() || *t < 0.0) {
            return Err(ModelError::Rows(format!(
                "row {i}: time {} is not a duration",
                self.time[i]
            )));
        }
        finite_covariates(self.x, p)
    }
}

/// The local step of a Cox model stratified by site: the site's partial-likelihood score and
/// information at `beta`, Breslow's method for tied times, after the same disclosure checks as a GLM
/// (parameters against rows, at least `min_cell_count` events). The site is its own stratum, so the
/// network's sums are those of the site-stratified pooled fit exactly.
pub fn cox_site_sums(
    rows: &CoxRows,
    beta: &[f64],
    policy: &Policy,
) -> Result<SiteSums, ModelError> {
    rows.check(beta)?;
    check_model(rows.p as u64, rows.time.len() as u64, policy).map_err(ModelError::Refused)?;
    let events = rows.event.iter().filter(|e| **e).count() as f64;
    enough_events(events, f64::INFINITY, policy)?;
    cox_sums(rows, beta)
}

/// The partial-likelihood sums of a site's survival rows at `beta`, without the disclosure check
/// (for a caller that releases them through `medfed_privacy::release`).
pub fn cox_sums(rows: &CoxRows, beta: &[f64]) -> Result<SiteSums, ModelError> {
    rows.check(beta)?;
    let (p, n) = (rows.p, rows.time.len());
    let events = rows.event.iter().filter(|e| **e).count() as f64;
    // Latest times first: the risk set grows as time goes back.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| rows.time[*b].total_cmp(&rows.time[*a]));
    let mut s = SiteSums::zero(p, n, events);
    let (mut s0, mut s1, mut s2) = (0.0, vec![0.0; p], vec![0.0; p * p]);
    let mut i = 0;
    while i < n {
        let t = rows.time[order[i]];
        // Everyone with this time joins the risk set; the events among them are the tie.
        let mut d = 0.0;
        let mut xs = vec![0.0; p];
        let mut j = i;
        while j < n && rows.time[order[j]] == t {
            let k = order[j];
            let xk = &rows.x[k * p..(k + 1) * p];
            let eta: f64 = xk.iter().zip(beta).map(|(a, b)| a * b).sum();
            let w = eta.exp();
            s0 += w;
            for a in 0..p {
                s1[a] += w * xk[a];
                for b in 0..p {
                    s2[a * p + b] += w * xk[a] * xk[b];
                }
            }
            if rows.event[k] {
                d += 1.0;
                for a in 0..p {
                    xs[a] += xk[a];
                }
                s.loglik += eta;
            }
            j += 1;
        }
        if d > 0.0 {
            s.loglik -= d * s0.ln();
            for a in 0..p {
                s.score[a] += xs[a] - d * s1[a] / s0;
                for b in 0..p {
                    s.information[a * p + b] +=
                        d * (s2[a * p + b] / s0 - s1[a] * s1[b] / (s0 * s0));
                }
            }
        }
        i = j;
    }
    s.deviance = -2.0 * s.loglik;
    Ok(s)
}
