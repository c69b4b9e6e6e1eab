#![allow(clippy::needless_range_loop)] // small dense linear algebra reads best with indices
//! The quasi-Poisson log-linear fit Farrington's method needs, computed as R's `glm.fit` does (start
//! at `y + 0.1`, IRLS until the relative deviance change is below 1e-8, at most 25 iterations), and
//! reporting what `summary.glm`, `hatvalues` and `predict.glm` report: they use the working weights of
//! the last weighted least-squares solve, so this keeps them.

pub struct Fit {
    pub beta: Vec<f64>,
    /// (X'WX)^-1 at the last solve's weights.
    pub cov_unscaled: Vec<Vec<f64>>,
    pub fitted: Vec<f64>,
    pub hat: Vec<f64>,
    /// Pearson dispersion Σ W(y−μ)²/μ² ⁄ (n − p), as `summary.glm` (not floored at 1).
    pub dispersion: f64,
    pub df_residual: f64,
    pub converged: bool,
}

/// Solve the symmetric positive definite system by Cholesky; `None` if it is singular.
pub fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let p = a.len();
    let mut l = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in 0..=i {
            let mut s = a[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            if i == j {
                if s <= 1e-12 * a[i][i].abs().max(1e-300) {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // inv(L), then inv(A) = inv(L)' inv(L).
    let mut li = vec![vec![0.0; p]; p];
    for i in 0..p {
        li[i][i] = 1.0 / l[i][i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i][k] * li[k][j];
            }
            li[i][j] = s / l[i][i];
        }
    }
    let mut inv = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = (i..p).map(|k| li[k][i] * li[k][j]).sum();
            inv[i][j] = s;
            inv[j][i] = s;
        }
    }
    Some(inv)
}

fn deviance(y: &[f64], mu: &[f64], w: &[f64]) -> f64 {
    y.iter()
        .zip(mu)
        .zip(w)
        .map(|((&y, &m), &w)| {
            let ylog = if y > 0.0 { y * (y / m).ln() } else { 0.0 };
            2.0 * w * (ylog - (y - m))
        })
        .sum()
}

/// Fit `log μ = Xβ` with prior weights `w`. `None` when the information matrix is singular.
pub fn quasi_poisson(x: &[Vec<f64>], y: &[f64], w: &[f64]) -> Option<Fit> {
    let (n, p) = (y.len(), x.first().map_or(0, |r| r.len()));
    let mut mu: Vec<f64> = y.iter().map(|v| v + 0.1).collect();
    let mut eta: Vec<f64> = mu.iter().map(|m| m.ln()).collect();
    let mut devold = deviance(y, &mu, w);
    let mut converged = false;
    let mut beta = vec![0.0; p];
    let mut ww = vec![0.0; n];
    let mut inv = Vec::new();
    for _ in 0..25 {
        for i in 0..n {
            ww[i] = w[i] * mu[i];
        }
        let mut xtwx = vec![vec![0.0; p]; p];
        let mut xtwz = vec![0.0; p];
        for i in 0..n {
            let z = eta[i] + (y[i] - mu[i]) / mu[i];
            for a in 0..p {
                let xa = x[i][a] * ww[i];
                xtwz[a] += xa * z;
                for b in 0..=a {
                    xtwx[a][b] += xa * x[i][b];
                }
            }
        }
        for a in 0..p {
            for b in 0..a {
                xtwx[b][a] = xtwx[a][b];
            }
        }
        inv = invert(&xtwx)?;
        for a in 0..p {
            beta[a] = (0..p).map(|b| inv[a][b] * xtwz[b]).sum();
        }
        for i in 0..n {
            eta[i] = (0..p).map(|a| x[i][a] * beta[a]).sum();
            mu[i] = eta[i].exp();
        }
        let dev = deviance(y, &mu, w);
        if !dev.is_finite() {
            return None;
        }
        if (dev - devold).abs() / (dev.abs() + 0.1) < 1e-8 {
            converged = true;
            break;
        }
        devold = dev;
    }
    let n_ok = w.iter().filter(|&&v| v != 0.0).count();
    let df = n_ok as f64 - p as f64;
    let pearson: f64 = (0..n)
        .filter(|&i| ww[i] > 0.0)
        .map(|i| {
            let r = (y[i] - mu[i]) / mu[i];
            ww[i] * r * r
        })
        .sum();
    let hat = (0..n)
        .map(|i| {
            let q: f64 = (0..p)
                .map(|a| x[i][a] * (0..p).map(|b| inv[a][b] * x[i][b]).sum::<f64>())
                .sum();
            ww[i] * q
        })
        .collect();
    Some(Fit {
        beta,
        cov_unscaled: inv,
        fitted: mu,
        hat,
        dispersion: if df > 0.0 { pearson / df } else { f64::NAN },
        df_residual: df,
        converged,
    })
}

impl Fit {
    /// Linear predictor at `x0` and its standard error at dispersion `phi`.
    pub fn predict_link(&self, x0: &[f64], phi: f64) -> (f64, f64) {
        let eta: f64 = x0.iter().zip(&self.beta).map(|(a, b)| a * b).sum();
        let p = x0.len();
        let v: f64 = (0..p)
            .map(|a| x0[a] * (0..p).map(|b| self.cov_unscaled[a][b] * x0[b]).sum::<f64>())
            .sum();
        (eta, (v * phi).sqrt())
    }
}
