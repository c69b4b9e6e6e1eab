//! Evaluating a risk model across sites without pooling rows. Each site bins its predicted risks
//! on a fixed grid and releases, per bin, the number of persons with and without the outcome and
//! the sum of predicted risks ([`RiskHistogram`]); the hub adds the histograms and derives the
//! discrimination (AUC, with a stated bound for the pairs that share a bin) and the calibration by
//! decile of predicted risk.

use serde::{Deserialize, Serialize};

/// Per-bin sums over a site's (or the network's) persons. The bins are equal widths of the logit of
/// the risk over [`LOGIT_RANGE`] (risks beyond it go to the end bins): risks of a few per cent, the
/// usual case, then spread over many bins instead of sharing the first few.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskHistogram {
    pub events: Vec<f64>,
    pub non_events: Vec<f64>,
    /// Σ predicted risk in the bin (over everyone in it).
    pub risk_sum: Vec<f64>,
}

/// The logits the bins cover.
pub const LOGIT_RANGE: (f64, f64) = (-10.0, 10.0);

/// The bin of a risk in `[0, 1]` among `bins`.
pub fn risk_bin(r: f64, bins: usize) -> usize {
    let (lo, hi) = LOGIT_RANGE;
    let logit = (r / (1.0 - r)).ln();
    let b = ((logit - lo) / (hi - lo) * bins as f64).floor();
    if b.is_nan() || b < 0.0 {
        0
    } else {
        (b as usize).min(bins - 1)
    }
}

impl RiskHistogram {
    pub fn new(bins: usize) -> RiskHistogram {
        RiskHistogram {
            events: vec![0.0; bins],
            non_events: vec![0.0; bins],
            risk_sum: vec![0.0; bins],
        }
    }

    /// A site's local step: bin its predicted risks by outcome. Risks outside [0, 1] are an error.
    pub fn of(risks: &[f64], outcomes: &[bool], bins: usize) -> Result<RiskHistogram, String> {
        if risks.len() != outcomes.len() || bins == 0 {
            return Err(format!(
                "{} risks for {} outcomes",
                risks.len(),
                outcomes.len()
            ));
        }
        let mut h = RiskHistogram::new(bins);
        for (i, (&r, &o)) in risks.iter().zip(outcomes).enumerate() {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("row {i}: predicted risk {r} is not a probability"));
            }
            let b = risk_bin(r, bins);
            if o {
                h.events[b] += 1.0;
            } else {
                h.non_events[b] += 1.0;
            }
            h.risk_sum[b] += r;
        }
        Ok(h)
    }

    pub fn add(&mut self, o: &RiskHistogram) {
        for (a, b) in self.events.iter_mut().zip(&o.events) {
            *a += b;
        }
        for (a, b) in self.non_events.iter_mut().zip(&o.non_events) {
            *a += b;
        }
        for (a, b) in self.risk_sum.iter_mut().zip(&o.risk_sum) {
            *a += b;
        }
    }

    /// AUC (probability that a person with the outcome has the higher risk, ties counting half)
    /// with pairs in the same bin counted as ties, and the bound on its error: the share of
    /// event/non-event pairs that share a bin (their true order is unknown to the hub).
    pub fn auc(&self) -> Option<(f64, f64)> {
        let (e, ne): (f64, f64) = (self.events.iter().sum(), self.non_events.iter().sum());
        if e == 0.0 || ne == 0.0 {
            return None;
        }
        let (mut below, mut concordant, mut tied) = (0.0, 0.0, 0.0);
        for b in 0..self.events.len() {
            concordant += self.events[b] * below;
            tied += self.events[b] * self.non_events[b];
            below += self.non_events[b];
        }
        let pairs = e * ne;
        Some(((concordant + 0.5 * tied) / pairs, 0.5 * tied / pairs))
    }

    /// Calibration by decile of predicted risk: groups of consecutive bins holding about a tenth of
    /// the persons each, with persons, mean predicted risk and observed rate.
    pub fn calibration(&self, groups: usize) -> Vec<CalibrationGroup> {
        let total: f64 = self.events.iter().sum::<f64>() + self.non_events.iter().sum::<f64>();
        let mut out = Vec::new();
        let mut cur = CalibrationGroup::default();
        let mut seen = 0.0;
        for b in 0..self.events.len() {
            let n = self.events[b] + self.non_events[b];
            cur.persons += n;
            cur.observed += self.events[b];
            cur.expected += self.risk_sum[b];
            seen += n;
            let target = total * (out.len() + 1) as f64 / groups as f64;
            if cur.persons > 0.0 && (seen >= target || b + 1 == self.events.len()) {
                out.push(std::mem::take(&mut cur));
            }
        }
        out
    }
}

/// One calibration group: persons, Σ outcomes (observed) and Σ predicted risk (expected).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationGroup {
    pub persons: f64,
    pub observed: f64,
    pub expected: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact AUC by comparing every pair (the pooled computation the histogram must match).
    fn pairwise_auc(risks: &[f64], outcomes: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &ri) in risks.iter().enumerate() {
            if !outcomes[i] {
                continue;
            }
            for (j, &rj) in risks.iter().enumerate() {
                if outcomes[j] {
                    continue;
                }
                den += 1.0;
                num += if ri > rj {
                    1.0
                } else if ri == rj {
                    0.5
                } else {
                    0.0
                };
            }
        }
        num / den
    }

    #[test]
    fn pooled_histograms_give_the_pooled_auc_within_the_bound_and_calibration() {
        // Three sites' predicted risks and outcomes (deterministic, outcome more likely at high risk).
        let mut sites = Vec::new();
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for s in 0..3 {
            let n = 700 + 200 * s;
            let risks: Vec<f64> = (0..n).map(|_| next().powf(1.5 + s as f64 * 0.3)).collect();
            let outcomes: Vec<bool> = risks.iter().map(|r| next() < *r).collect();
            sites.push((risks, outcomes));
        }
        let (all_r, all_o): (Vec<f64>, Vec<bool>) = sites
            .iter()
            .flat_map(|(r, o)| r.iter().copied().zip(o.iter().copied()))
            .unzip();
        let exact = pairwise_auc(&all_r, &all_o);
        for bins in [20, 1000] {
            let mut total = RiskHistogram::new(bins);
            for (r, o) in &sites {
                total.add(&RiskHistogram::of(r, o, bins).unwrap());
            }
            let (auc, bound) = total.auc().unwrap();
            assert!(
                (auc - exact).abs() <= bound + 1e-12,
                "{bins} bins: {auc} vs {exact} (bound {bound})"
            );
            if bins == 1000 {
                assert!(bound < 0.002, "{bound}");
            }
            let deciles = total.calibration(10);
            assert!((9..=10).contains(&deciles.len()), "{}", deciles.len());
            let persons: f64 = deciles.iter().map(|g| g.persons).sum();
            assert_eq!(persons, all_r.len() as f64);
            let observed: f64 = deciles.iter().map(|g| g.observed).sum();
            assert_eq!(observed, all_o.iter().filter(|o| **o).count() as f64);
            let expected: f64 = deciles.iter().map(|g| g.expected).sum();
            assert!((expected - all_r.iter().sum::<f64>()).abs() < 1e-9);
            // Risks were drawn so that outcomes follow them: each decile is calibrated within noise.
            for g in &deciles {
                let sd = (g.expected.max(1.0)).sqrt();
                assert!((g.observed - g.expected).abs() < 4.0 * sd + 2.0, "{g:?}");
            }
        }
        assert!(RiskHistogram::of(&[1.5], &[true], 10).is_err());
    }
}
