//! Per-variant regression, PLINK's `--linear`/`--logistic` and plink2's `--glm`, as sums that add up
//! across sites.
//!
//! Model for variant `v`: outcome ~ intercept + A1 dosage + covariates, on the samples with a called
//! genotype. A site holds its samples' outcomes and covariates ([`Design`]) and returns, for each
//! variant, sums over its samples:
//!
//! - linear: `XᵀX`, `Xᵀy`, `yᵀy` and `n` once; the hub's least squares on the summed matrices is
//!   the pooled fit exactly;
//! - logistic: for the current coefficients, the information `XᵀWX`, the score `Xᵀ(y − μ)` and the
//!   log-likelihood. The hub adds them and takes one Newton step for every variant at once, and
//!   repeats until the steps vanish: the federated fit is the pooled maximum-likelihood fit, not an
//!   approximation (sPLINK's scheme).
//!
//! Dosages are counted in `.bim` A1 order; a hub that reports the minor allele (PLINK's rule) flips
//! the fitted model exactly ([`Wald::flipped`]).

use crate::dist::{chisq_upper, pt_two_sided, qnorm};

/// Dosage by 2-bit PLINK code: 00 two A1, 01 missing, 10 one, 11 none.
const DOSE: [f64; 4] = [2.0, f64::NAN, 1.0, 0.0];

/// A site's samples in a regression: `.fam` index, outcome and covariates (row-major, `q` a row)
/// of every sample in the analysis (missing outcome or covariate: not listed).
#[derive(Clone, Debug, Default)]
pub struct Design {
    pub samples: Vec<usize>,
    pub y: Vec<f64>,
    pub covariates: Vec<f64>,
    pub q: usize,
}

impl Design {
    /// Parameters: intercept, A1 dosage, covariates.
    pub fn k(&self) -> usize {
        self.q + 2
    }

    fn row(&self, j: usize, g: f64, x: &mut [f64]) {
        x[0] = 1.0;
        x[1] = g;
        x[2..].copy_from_slice(&self.covariates[j * self.q..(j + 1) * self.q]);
    }
}

/// One site's sums for one variant (`k × k` matrices row-major).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sums {
    /// Samples with a called genotype.
    pub n: u64,
    /// Linear: `XᵀX`; logistic: `XᵀWX` at the current coefficients.
    pub xtx: Vec<f64>,
    /// Linear: `Xᵀy`; logistic: the score `Xᵀ(y − μ)`.
    pub xty: Vec<f64>,
    /// Linear: `yᵀy`; logistic: 0 (the Newton step does not need the log-likelihood).
    pub scalar: f64,
}

impl Sums {
    pub fn zero(k: usize) -> Sums {
        Sums {
            n: 0,
            xtx: vec![0.0; k * k],
            xty: vec![0.0; k],
            scalar: 0.0,
        }
    }

    pub fn add(&mut self, o: &Sums) {
        self.n += o.n;
        self.xtx.iter_mut().zip(&o.xtx).for_each(|(a, b)| *a += b);
        self.xty.iter_mut().zip(&o.xty).for_each(|(a, b)| *a += b);
        self.scalar += o.scalar;
    }

    /// Every value as one flat vector (`n`, `XᵀX` upper triangle, `Xᵀy`, scalar) for masking, and
    /// back.
    pub fn flatten(&self, k: usize, out: &mut Vec<f64>) {
        out.push(self.n as f64);
        for i in 0..k {
            for j in i..k {
                out.push(self.xtx[i * k + j]);
            }
        }
        out.extend_from_slice(&self.xty);
        out.push(self.scalar);
    }

    pub fn width(k: usize) -> usize {
        2 + k + k * (k + 1) / 2
    }

    pub fn unflatten(k: usize, v: &[f64]) -> Sums {
        let mut s = Sums::zero(k);
        s.n = v[0].round().max(0.0) as u64;
        let mut p = 1;
        for i in 0..k {
            for j in i..k {
                s.xtx[i * k + j] = v[p];
                s.xtx[j * k + i] = v[p];
                p += 1;
            }
        }
        s.xty.copy_from_slice(&v[p..p + k]);
        s.scalar = v[p + k];
        s
    }
}

fn accumulate(s: &mut Sums, x: &[f64], w: f64, r: f64) {
    let k = x.len();
    for (i, &xi) in x.iter().enumerate() {
        let wi = w * xi;
        for (h, &xj) in s.xtx[i * k + i..(i + 1) * k].iter_mut().zip(&x[i..]) {
            *h += wi * xj;
        }
        s.xty[i] += r * xi;
    }
}

fn symmetrize(s: &mut Sums, k: usize) {
    for i in 0..k {
        for j in 0..i {
            s.xtx[i * k + j] = s.xtx[j * k + i];
        }
    }
}

/// Linear-model sums of one packed variant.
pub fn linear_sums(d: &Design, packed: &[u8]) -> Sums {
    let k = d.k();
    let mut s = Sums::zero(k);
    let mut x = vec![0.0; k];
    for (j, &i) in d.samples.iter().enumerate() {
        let g = DOSE[((packed[i / 4] >> (2 * (i % 4))) & 3) as usize];
        if g.is_nan() {
            continue;
        }
        d.row(j, g, &mut x);
        let y = d.y[j];
        accumulate(&mut s, &x, 1.0, y);
        s.scalar += y * y;
        s.n += 1;
    }
    symmetrize(&mut s, k);
    s
}

/// Logistic-model sums of one packed variant at coefficients `beta` (outcome coded 0/1).
///
/// The usual designs (up to 6 covariates) run a kernel with the parameter count fixed at compile
/// time, so that the per-sample loops unroll and index without bounds checks; the sums are the
/// same as the general loop's, added in the same order.
pub fn logistic_sums(d: &Design, packed: &[u8], beta: &[f64]) -> Sums {
    match d.k() {
        2 => logistic_fixed::<2>(d, packed, beta),
        3 => logistic_fixed::<3>(d, packed, beta),
        4 => logistic_fixed::<4>(d, packed, beta),
        5 => logistic_fixed::<5>(d, packed, beta),
        6 => logistic_fixed::<6>(d, packed, beta),
        7 => logistic_fixed::<7>(d, packed, beta),
        8 => logistic_fixed::<8>(d, packed, beta),
        _ => logistic_any(d, packed, beta),
    }
}

/// μ for linear predictor η with one exponential, stable for large |η|: e = e^−|η|, μ = 1/(1+e)
/// or e/(1+e).
#[inline(always)]
fn logistic_mu(eta: f64) -> f64 {
    let e = (-eta.abs()).exp();
    if eta >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

fn logistic_fixed<const K: usize>(d: &Design, packed: &[u8], beta: &[f64]) -> Sums {
    let Ok(b) = <[f64; K]>::try_from(beta) else {
        return logistic_any(d, packed, beta);
    };
    let q = K - 2;
    let mut xtx = [[0.0f64; K]; K];
    let mut xty = [0.0f64; K];
    let mut n = 0u64;
    if d.covariates.len() < d.samples.len() * q || d.y.len() < d.samples.len() {
        return logistic_any(d, packed, beta);
    }
    for (j, &i) in d.samples.iter().enumerate() {
        let g = DOSE[((packed[i / 4] >> (2 * (i % 4))) & 3) as usize];
        if g.is_nan() {
            continue;
        }
        let mut x = [0.0f64; K];
        x[0] = 1.0;
        x[1] = g;
        x[2..].copy_from_slice(&d.covariates[j * q..j * q + q]);
        let mut eta = 0.0;
        for p in 0..K {
            eta += x[p] * b[p];
        }
        let mu = logistic_mu(eta);
        let (w, r) = (mu * (1.0 - mu), d.y[j] - mu);
        for a in 0..K {
            let wa = w * x[a];
            for c in a..K {
                xtx[a][c] += wa * x[c];
            }
            xty[a] += r * x[a];
        }
        n += 1;
    }
    let mut s = Sums::zero(K);
    for (a, row) in xtx.iter().enumerate() {
        s.xtx[a * K + a..(a + 1) * K].copy_from_slice(&row[a..]);
    }
    s.xty.copy_from_slice(&xty);
    s.n = n;
    symmetrize(&mut s, K);
    s
}

fn logistic_any(d: &Design, packed: &[u8], beta: &[f64]) -> Sums {
    let k = d.k();
    let mut s = Sums::zero(k);
    let mut x = vec![0.0; k];
    for (j, &i) in d.samples.iter().enumerate() {
        let g = DOSE[((packed[i / 4] >> (2 * (i % 4))) & 3) as usize];
        if g.is_nan() {
            continue;
        }
        d.row(j, g, &mut x);
        let eta: f64 = x.iter().zip(beta).map(|(a, b)| a * b).sum();
        // The Newton step needs the score and information only; no log-likelihood is summed
        // (`scalar` stays 0), which saves a logarithm a sample and round.
        let mu = logistic_mu(eta);
        let y = d.y[j];
        accumulate(&mut s, &x, mu * (1.0 - mu), y - mu);
        s.n += 1;
    }
    symmetrize(&mut s, k);
    s
}

/// Inverse of a symmetric positive-definite `k × k` matrix by Cholesky; `None` when singular.
pub fn inverse_spd(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut v = a[i * k + j];
            for p in 0..j {
                v -= l[i * k + p] * l[j * k + p];
            }
            if i == j {
                // Relative pivot guard: a collinear column (a monomorphic variant) is singular.
                if v <= a[i * k + i].abs() * 1e-10 || v <= 0.0 {
                    return None;
                }
                l[i * k + i] = v.sqrt();
            } else {
                l[i * k + j] = v / l[j * k + j];
            }
        }
    }
    // inv = L⁻ᵀ L⁻¹, column by column.
    let mut inv = vec![0.0; k * k];
    let mut e = vec![0.0; k];
    for c in 0..k {
        // Solve L z = e_c.
        for i in 0..k {
            let mut v = if i == c { 1.0 } else { 0.0 };
            for p in 0..i {
                v -= l[i * k + p] * e[p];
            }
            e[i] = v / l[i * k + i];
        }
        // Solve Lᵀ x = z.
        for i in (0..k).rev() {
            let mut v = e[i];
            for p in i + 1..k {
                v -= l[p * k + i] * inv[p * k + c];
            }
            inv[i * k + c] = v / l[i * k + i];
        }
    }
    Some(inv)
}

/// The fit of one variant: coefficients (intercept, A1 dosage, covariates), standard errors, and the
/// dosage's test.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wald {
    pub n: u64,
    pub beta: Vec<f64>,
    pub se: Vec<f64>,
    /// t (linear) or z (logistic) of each coefficient.
    pub stat: Vec<f64>,
    pub p: Vec<f64>,
    /// Linear: R² of the model; logistic: Newton iterations.
    pub extra: f64,
}

impl Wald {
    /// The same fit with A1 and A2 exchanged (dosage `2 − g`): the dosage's coefficient and test
    /// change sign, the intercept absorbs `2β`, standard errors and p-values stay.
    pub fn flipped(&self) -> Wald {
        let mut w = self.clone();
        w.beta[0] += 2.0 * self.beta[1];
        w.beta[1] = -self.beta[1];
        w.stat[1] = -self.stat[1];
        // The intercept's standard error changes with the coding; it is not reported.
        w.se[0] = f64::NAN;
        w.stat[0] = f64::NAN;
        w.p[0] = f64::NAN;
        w
    }

    /// Confidence interval of coefficient `i` on the link scale.
    pub fn ci(&self, i: usize, level: f64) -> (f64, f64) {
        let z = qnorm(0.5 + level / 2.0);
        (self.beta[i] - z * self.se[i], self.beta[i] + z * self.se[i])
    }
}

/// Least squares from summed `XᵀX`, `Xᵀy`, `yᵀy`; `None` when `XᵀX` is singular (a monomorphic
/// variant) or no residual degree of freedom is left.
pub fn linear_fit(s: &Sums, k: usize) -> Option<Wald> {
    let n = s.n as f64;
    if s.n as usize <= k {
        return None;
    }
    let inv = inverse_spd(&s.xtx, k)?;
    let beta: Vec<f64> = (0..k)
        .map(|i| (0..k).map(|j| inv[i * k + j] * s.xty[j]).sum())
        .collect();
    let fitted: f64 = beta.iter().zip(&s.xty).map(|(b, v)| b * v).sum();
    let rss = (s.scalar - fitted).max(0.0);
    let df = n - k as f64;
    let sigma2 = rss / df;
    let se: Vec<f64> = (0..k).map(|i| (inv[i * k + i] * sigma2).sqrt()).collect();
    let stat: Vec<f64> = beta.iter().zip(&se).map(|(b, s)| b / s).collect();
    let p = stat.iter().map(|t| pt_two_sided(*t, df)).collect();
    let ybar = s.xty[0] / n;
    let tss = s.scalar - n * ybar * ybar;
    Some(Wald {
        n: s.n,
        beta,
        se,
        stat,
        p,
        extra: if tss > 0.0 { 1.0 - rss / tss } else { f64::NAN },
    })
}

/// One Newton step from summed logistic sums at `beta`: the next coefficients and the largest
/// change; `None` when the information matrix is singular.
pub fn newton_step(s: &Sums, k: usize, beta: &[f64]) -> Option<(Vec<f64>, f64)> {
    let inv = inverse_spd(&s.xtx, k)?;
    let mut next = beta.to_vec();
    let mut change = 0.0f64;
    for i in 0..k {
        let d: f64 = (0..k).map(|j| inv[i * k + j] * s.xty[j]).sum();
        next[i] += d;
        change = change.max(d.abs() / (1.0 + beta[i].abs()));
    }
    Some((next, change))
}

/// Newton stops once no coefficient moves by more than this (relative to 1 + |β|).
pub const NEWTON_TOL: f64 = 1e-10;
/// PLINK gives up on a variant after this many iterations.
pub const NEWTON_MAX: usize = 25;

/// The Wald test of a converged logistic fit from the sums at its coefficients.
pub fn logistic_wald(s: &Sums, k: usize, beta: &[f64], iterations: usize) -> Option<Wald> {
    let inv = inverse_spd(&s.xtx, k)?;
    let se: Vec<f64> = (0..k).map(|i| inv[i * k + i].sqrt()).collect();
    let stat: Vec<f64> = beta.iter().zip(&se).map(|(b, s)| b / s).collect();
    let p = stat.iter().map(|z| chisq_upper(z * z, 1)).collect();
    Some(Wald {
        n: s.n,
        beta: beta.to_vec(),
        se,
        stat,
        p,
        extra: iterations as f64,
    })
}

/// A pooled logistic fit of one variant over sites that each return sums for given coefficients:
/// the driver the hub runs round by round, here in one process (tests, single-site use).
pub fn logistic_fit(k: usize, mut sums_at: impl FnMut(&[f64]) -> Sums) -> Option<Wald> {
    let mut beta = vec![0.0; k];
    for it in 1..=NEWTON_MAX {
        let s = sums_at(&beta);
        let (next, change) = newton_step(&s, k, &beta)?;
        beta = next;
        if !beta.iter().all(|b| b.is_finite()) {
            return None;
        }
        if change < NEWTON_TOL {
            let s = sums_at(&beta);
            return logistic_wald(&s, k, &beta, it);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_size_kernel_gives_the_general_loops_sums_bit_for_bit() {
        // 1,000 samples of a pseudo-random design with 2 and 5 covariates, some genotypes missing.
        let mut seed = 12345u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 1000;
        let packed: Vec<u8> = (0..n / 4).map(|_| (next() * 256.0) as u8).collect();
        for q in [2usize, 5] {
            let d = Design {
                samples: (0..n).filter(|i| i % 7 != 3).collect(),
                y: (0..n).map(|_| f64::from(u8::from(next() < 0.3))).collect(),
                covariates: (0..n * q).map(|_| next() * 50.0).collect(),
                q,
            };
            let beta: Vec<f64> = (0..q + 2).map(|_| next() * 0.1 - 0.05).collect();
            let any = logistic_any(&d, &packed, &beta);
            let fixed = logistic_sums(&d, &packed, &beta);
            assert_eq!(any, fixed, "q = {q}");
            assert!(any.n > 500 && any.xtx.iter().all(|v| v.is_finite()));
        }
    }
}
