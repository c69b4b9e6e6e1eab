//! Optional differential privacy for released counts, with a privacy budget.
//!
//! When the policy has a `[dp]` section, every count that leaves the site carries Laplace or
//! Gaussian noise calibrated to a sensitivity of one person, and costs `epsilon` from two budgets the
//! node keeps in a persisted ledger: one per study and one for the site's lifetime. A task whose
//! cost would overspend either budget is refused. Repeating a query to average the noise away
//! therefore runs out of budget after `study_budget / epsilon` answers.
//!
//! Only statistics whose sensitivity is one person can be noised this way: person counts, and tables
//! whose every dimension partitions the persons and whose every measure counts persons (each person
//! is in exactly one cell, so the cells compose in parallel and the table costs `epsilon` per
//! measure). Tables of records, sums, or overlapping strata have no bounded per-person contribution
//! here and are refused under DP rather than released with a false guarantee.

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// ε-DP: noise Laplace(0, 1/ε).
    Laplace,
    /// (ε, δ)-DP: noise N(0, σ²) with σ = √(2 ln(1.25/δ)) / ε (Dwork & Roth, Thm A.1; ε < 1).
    Gaussian,
}

/// The `[dp]` section of the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpPolicy {
    #[serde(default = "laplace")]
    pub mechanism: Mechanism,
    /// ε spent by each released count (or each measure of a table).
    pub epsilon: f64,
    /// δ of the Gaussian mechanism.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Total ε one study may spend at this site.
    pub study_budget: f64,
    /// Total ε all studies together may spend at this site.
    pub site_budget: f64,
}

fn laplace() -> Mechanism {
    Mechanism::Laplace
}
fn default_delta() -> f64 {
    1e-6
}

impl DpPolicy {
    pub fn check(&self) -> Result<(), String> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if !pos(self.epsilon) || !pos(self.study_budget) || !pos(self.site_budget) {
            return Err("dp: epsilon and budgets must be positive numbers".into());
        }
        if self.mechanism == Mechanism::Gaussian
            && (self.epsilon >= 1.0 || !(0.0 < self.delta && self.delta < 1e-3))
        {
            return Err(
                "dp: the Gaussian mechanism needs epsilon < 1 and 0 < delta < 0.001".into(),
            );
        }
        Ok(())
    }

    /// Standard deviation-like scale of the noise: b of Laplace, σ of Gaussian.
    pub fn scale(&self) -> f64 {
        match self.mechanism {
            Mechanism::Laplace => 1.0 / self.epsilon,
            Mechanism::Gaussian => (2.0 * (1.25 / self.delta).ln()).sqrt() / self.epsilon,
        }
    }

    /// One draw of noise.
    pub fn noise(&self, rng: &mut impl Rng) -> f64 {
        let s = self.scale();
        match self.mechanism {
            Mechanism::Laplace => {
                // Inverse CDF on u in (-1/2, 1/2).
                let u: f64 = rng.random::<f64>() - 0.5;
                -s * u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()
            }
            Mechanism::Gaussian => {
                let (u1, u2): (f64, f64) =
                    (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                s * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            }
        }
    }
}

/// What a researcher is told about the noise in a released value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    pub mechanism: Mechanism,
    pub epsilon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Laplace b or Gaussian σ of the noise added to each count.
    pub scale: f64,
}

/// The site's record of ε spent: per study and in total. The node persists it.
pub trait Ledger {
    fn spent_by_study(&self, study: &str) -> f64;
    fn spent_total(&self) -> f64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noise_has_the_calibrated_spread() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for mechanism in [Mechanism::Laplace, Mechanism::Gaussian] {
            let p = DpPolicy {
                mechanism,
                epsilon: 0.5,
                delta: 1e-6,
                study_budget: 1.0,
                site_budget: 10.0,
            };
            p.check().unwrap();
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| p.noise(&mut rng)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let want = match mechanism {
                Mechanism::Laplace => 2.0 * p.scale().powi(2),
                Mechanism::Gaussian => p.scale().powi(2),
            };
            assert!(mean.abs() < 0.05 * p.scale(), "{mechanism:?} mean {mean}");
            assert!(
                (var / want - 1.0).abs() < 0.03,
                "{mechanism:?} var {var} vs {want}"
            );
        }
    }
}
