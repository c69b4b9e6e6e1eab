//! Disclosure control at the node: the policy a hospital sets, and [`release`], the one function that
//! turns a site-side statistic into something that may leave the hospital.
//!
//! A [`SiteStatistic`] is what an analysis computes on the site's rows. It is deliberately neither
//! `Serialize` nor `Debug`-printable as JSON: nothing can send it anywhere. The only way to obtain a
//! [`Released`] value, which is what the wire protocol carries, is [`release`], which applies the
//! policy (minimum cell count, analysis permissions) and records what it suppressed and why.
//!
//! ```
//! use medfed_privacy::{release, Policy, SiteStatistic};
//! let policy = Policy::default(); // minimum cell count 10
//! let out = release(SiteStatistic::count(7), &policy);
//! assert_eq!(out.count(), None); // 1..=9 never leaves the site
//! assert!(out.is_suppressed());
//! ```
//!
//! Architecture invariant: this crate knows nothing about storage, SQL or the network.

mod policy;

pub use policy::{Decision, Policy, PolicyError};

use serde::{Deserialize, Serialize};

/// A statistic computed from a site's rows, before disclosure control. Not serializable on purpose.
pub struct SiteStatistic(Inner);

enum Inner {
    Count(u64),
}

impl SiteStatistic {
    /// The number of distinct persons (or events) matching a criterion at this site.
    pub fn count(n: u64) -> SiteStatistic {
        SiteStatistic(Inner::Count(n))
    }
}

/// Why a value was withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Suppression {
    /// 0 < n < threshold: the small-cell rule.
    MinCellCount { threshold: u64 },
}

/// A statistic that passed the site's disclosure check, with the record of what was withheld.
///
/// Fields are private: outside this crate a `Released` comes only from [`release`] (or from reading
/// one off the wire at the hub, which cannot create data that a node did not release).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Released {
    kind: ReleasedKind,
    /// Present when the value was withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suppressed: Option<Suppression>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ReleasedKind {
    Count { value: Option<u64> },
}

impl Released {
    /// The released count, `None` when suppressed or when this is not a count.
    pub fn count(&self) -> Option<u64> {
        match &self.kind {
            ReleasedKind::Count { value } => *value,
        }
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppressed.is_some()
    }

    pub fn suppression(&self) -> Option<&Suppression> {
        self.suppressed.as_ref()
    }
}

/// Apply the site's disclosure policy to one statistic.
///
/// Counts: zero is released (a zero discloses nothing about a person), `1..min_cell_count` is
/// suppressed, larger counts are released exactly.
pub fn release(stat: SiteStatistic, policy: &Policy) -> Released {
    match stat.0 {
        Inner::Count(n) => {
            let k = policy.min_cell_count;
            if n > 0 && n < k {
                Released {
                    kind: ReleasedKind::Count { value: None },
                    suppressed: Some(Suppression::MinCellCount { threshold: k }),
                }
            } else {
                Released {
                    kind: ReleasedKind::Count { value: Some(n) },
                    suppressed: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cells_never_leave() {
        let p = Policy {
            min_cell_count: 5,
            ..Policy::default()
        };
        for n in 1..5 {
            let r = release(SiteStatistic::count(n), &p);
            assert_eq!(r.count(), None);
            let json = serde_json::to_string(&r).unwrap();
            assert!(!json.contains(&format!(":{n}")), "{json}");
            assert_eq!(
                r.suppression(),
                Some(&Suppression::MinCellCount { threshold: 5 })
            );
        }
        assert_eq!(release(SiteStatistic::count(0), &p).count(), Some(0));
        assert_eq!(release(SiteStatistic::count(5), &p).count(), Some(5));
        assert_eq!(release(SiteStatistic::count(123), &p).count(), Some(123));
    }

    #[test]
    fn wire_form_round_trips() {
        let r = release(SiteStatistic::count(42), &Policy::default());
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"kind":{"type":"count","value":42}}"#);
        let back: Released = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        assert!(
            serde_json::from_str::<Released>(r#"{"kind":{"type":"rows","value":[1]}}"#).is_err()
        );
    }
}
