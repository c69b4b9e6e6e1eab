//! Beacon look-ups: "does anyone here carry this allele?", answered at the level the site allows
//! (GA4GH Beacon v2's boolean, count and aggregated-frequency granularities), with a budget on
//! probes of rare variants per requester.
//!
//! Why a budget: a beacon's yes/no answers about rare alleles identify its members. Shringarpure and
//! Bustamante (AJHG 2015) showed a likelihood-ratio test over a person's rare variants tells whether
//! their genome is in a beacon after a few hundred queries; the answers about common variants carry
//! almost no information. Raisaro et al. (JAMIA 2017) proposed charging each user for rare-variant
//! queries and refusing them past a budget. Here a look-up is *rare* when the variant's alternate
//! allele frequency at this site is under `rare_frequency` (absent variants included, so that whether
//! a probe is charged depends on the site's frequencies only, never on one person), each distinct rare
//! variant costs a requester one probe for the life of the node, a repeated probe costs nothing (its
//! answer is the same), and once `probe_budget` distinct rare variants are spent the requester's
//! further rare look-ups are withheld. Look-ups of common variants are free.
//!
//! Small cells: a count answer whose carriers are 1..`min_cell_count` − 1 says only that the allele
//! exists. A frequency answer (allele count, allele number, genotype counts) is given only when no
//! genotype class is 1..`min_cell_count` − 1, since carriers and allele count together give the
//! homozygotes; otherwise the site answers at count level.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Inner, Policy, Released, ReleasedKind, SiteStatistic, Suppression};

/// How much a beacon answer says, from least to most (Beacon v2 `requestedGranularity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Whether at least one sample carries the allele.
    #[default]
    Boolean,
    /// And how many samples carry it.
    Count,
    /// And the allele count, allele number and genotype counts (Beacon's `frequencyInPopulations`).
    Frequency,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Boolean => "boolean",
            Granularity::Count => "count",
            Granularity::Frequency => "frequency",
        }
    }
}

/// The site's beacon rules (`[beacon]` in `policy.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconPolicy {
    /// The most this site answers; a request for more is answered at this level.
    #[serde(default = "default_granularity")]
    pub granularity: Granularity,
    /// A variant whose alternate allele frequency here is under this is rare (absent ones too).
    #[serde(default = "default_rare")]
    pub rare_frequency: f64,
    /// Distinct rare variants one requester may look up at this site, for the life of the node.
    #[serde(default = "default_budget")]
    pub probe_budget: u64,
}

fn default_granularity() -> Granularity {
    Granularity::Count
}
fn default_rare() -> f64 {
    0.05
}
fn default_budget() -> u64 {
    50
}

impl Default for BeaconPolicy {
    fn default() -> Self {
        BeaconPolicy {
            granularity: default_granularity(),
            rare_frequency: default_rare(),
            probe_budget: default_budget(),
        }
    }
}

impl BeaconPolicy {
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.rare_frequency >= 0.0 && self.rare_frequency <= 0.5) {
            return Err("beacon.rare_frequency must be between 0 and 0.5".into());
        }
        Ok(())
    }
}

/// One looked-up variant at this site, before disclosure control.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// The variant as the ledger knows it (`chrom:pos:ref:alt`, normalised).
    pub key: String,
    /// Whether the site's panel has the variant at all (the panel is public: no charge).
    pub typed: bool,
    /// Called samples homozygous for the alternate allele, heterozygous, homozygous reference.
    pub hom_alt: u64,
    pub het: u64,
    pub hom_ref: u64,
}

impl Lookup {
    pub fn carriers(&self) -> u64 {
        self.hom_alt + self.het
    }
    pub fn called(&self) -> u64 {
        self.hom_alt + self.het + self.hom_ref
    }
    /// Alternate allele frequency among called samples (0 when none is called).
    pub fn frequency(&self) -> f64 {
        let n = self.called();
        if n == 0 {
            0.0
        } else {
            (2 * self.hom_alt + self.het) as f64 / (2 * n) as f64
        }
    }
}

impl SiteStatistic {
    /// A beacon look-up of `lookups` asked at `requested` granularity by `requester`. Released only
    /// through [`release`], which needs the requester's probe ledger; every other release path
    /// withholds it whole.
    pub fn beacon(
        lookups: Vec<Lookup>,
        requested: Granularity,
        requester: String,
    ) -> SiteStatistic {
        SiteStatistic(Inner::Beacon {
            lookups,
            requested,
            requester,
        })
    }
}

/// What a site says about one variant. Absent fields were not asked for, or were withheld (`withheld`
/// says by which rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Whether the site's panel has the variant.
    pub typed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// Samples carrying at least one alternate allele.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carriers: Option<u64>,
    /// Alternate alleles among called samples, and the alleles called (Beacon's alleleCount and
    /// alleleNumber).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allele_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allele_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hom_alt: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub het: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Suppression>,
}

/// The requester's probes so far at this site (kept by the node, never sent).
pub trait ProbeLedger {
    /// The distinct rare variants `requester` has been charged for.
    fn probed(&self, requester: &str) -> BTreeSet<String>;
}

/// A released beacon answer and the rare variants it charged to the requester, which the node must
/// record before the answer leaves.
pub struct BeaconRelease {
    pub released: Released,
    pub charged: Vec<String>,
}

/// Release a beacon look-up under the site's policy and the requester's probe ledger.
pub fn release(stat: SiteStatistic, policy: &Policy, ledger: &dyn ProbeLedger) -> BeaconRelease {
    let Inner::Beacon {
        lookups,
        requested,
        requester,
    } = stat.0
    else {
        return BeaconRelease {
            released: crate::release(stat, policy),
            charged: Vec::new(),
        };
    };
    let b = &policy.beacon;
    let k = policy.min_cell_count;
    let small = |n: u64| n > 0 && n < k;
    let level = requested.min(b.granularity);
    let probed = ledger.probed(&requester);
    let mut spent = probed.len() as u64;
    let mut charged: Vec<String> = Vec::new();
    let mut answers = Vec::with_capacity(lookups.len());
    for l in &lookups {
        let mut a = Answer {
            typed: l.typed,
            ..Answer::default()
        };
        if !l.typed {
            a.exists = Some(false);
            answers.push(a);
            continue;
        }
        let rare = l.frequency() < b.rare_frequency;
        if rare && !probed.contains(&l.key) && !charged.contains(&l.key) {
            if spent >= b.probe_budget {
                a.withheld = Some(Suppression::ProbeBudget {
                    budget: b.probe_budget,
                });
                answers.push(a);
                continue;
            }
            spent += 1;
            charged.push(l.key.clone());
        }
        let carriers = l.carriers();
        a.exists = Some(carriers > 0);
        if level >= Granularity::Count {
            if small(carriers) {
                a.withheld = Some(Suppression::MinCellCount { threshold: k });
            } else {
                a.carriers = Some(carriers);
            }
        }
        if level == Granularity::Frequency && a.withheld.is_none() {
            if small(l.hom_alt) || small(l.het) || small(l.hom_ref) {
                a.withheld = Some(Suppression::MinCellCount { threshold: k });
            } else {
                a.allele_count = Some(2 * l.hom_alt + l.het);
                a.allele_number = Some(2 * l.called());
                a.hom_alt = Some(l.hom_alt);
                a.het = Some(l.het);
            }
        }
        answers.push(a);
    }
    BeaconRelease {
        released: Released {
            kind: ReleasedKind::Beacon {
                granularity: level,
                answers,
            },
            suppressed: None,
            noise: None,
        },
        charged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Ledger(BTreeMap<String, BTreeSet<String>>);
    impl ProbeLedger for Ledger {
        fn probed(&self, r: &str) -> BTreeSet<String> {
            self.0.get(r).cloned().unwrap_or_default()
        }
    }
    impl Ledger {
        fn ask(&mut self, who: &str, l: Vec<Lookup>, g: Granularity, p: &Policy) -> Vec<Answer> {
            let r = release(SiteStatistic::beacon(l, g, who.into()), p, self);
            self.0.entry(who.into()).or_default().extend(r.charged);
            r.released.beacon().expect("a beacon answer").1.to_vec()
        }
    }

    fn lookup(key: &str, hom_alt: u64, het: u64, hom_ref: u64) -> Lookup {
        Lookup {
            key: key.into(),
            typed: true,
            hom_alt,
            het,
            hom_ref,
        }
    }

    #[test]
    fn granularity_is_the_lesser_of_request_and_policy_and_small_cells_only_say_exists() {
        let mut p = Policy::default();
        p.beacon.granularity = Granularity::Frequency;
        let mut led = Ledger(BTreeMap::new());
        let common = lookup("1:100:A:G", 100, 400, 500);
        let a = led.ask("ann", vec![common.clone()], Granularity::Frequency, &p);
        assert_eq!(a[0].exists, Some(true));
        assert_eq!(a[0].carriers, Some(500));
        assert_eq!(a[0].allele_count, Some(600));
        assert_eq!(a[0].allele_number, Some(2000));
        assert_eq!((a[0].hom_alt, a[0].het), (Some(100), Some(400)));
        // The site allows count only: no frequencies, whatever was asked.
        p.beacon.granularity = Granularity::Count;
        let a = led.ask("ann", vec![common.clone()], Granularity::Frequency, &p);
        assert_eq!((a[0].carriers, a[0].allele_count), (Some(500), None));
        let a = led.ask("ann", vec![common], Granularity::Boolean, &p);
        assert_eq!((a[0].exists, a[0].carriers), (Some(true), None));
        // 3 carriers: exists, but how many is withheld.
        let rare = lookup("1:200:C:T", 0, 3, 997);
        let a = led.ask("ann", vec![rare], Granularity::Count, &p);
        assert_eq!(a[0].exists, Some(true));
        assert_eq!(a[0].carriers, None);
        assert_eq!(
            a[0].withheld,
            Some(Suppression::MinCellCount { threshold: 10 })
        );
        // 2 homozygotes among 300 carriers: carriers and allele count would give them away.
        p.beacon.granularity = Granularity::Frequency;
        let a = led.ask(
            "ann",
            vec![lookup("1:300:G:A", 2, 298, 700)],
            Granularity::Frequency,
            &p,
        );
        assert_eq!(a[0].carriers, Some(300));
        assert_eq!((a[0].allele_count, a[0].hom_alt), (None, None));
    }

    #[test]
    fn rare_probes_are_charged_once_per_variant_and_stop_at_the_budget() {
        let mut p = Policy::default();
        p.beacon.probe_budget = 3;
        let mut led = Ledger(BTreeMap::new());
        let rare: Vec<Lookup> = (0..5)
            .map(|i| lookup(&format!("2:{i}:A:C"), 0, 20, 980))
            .collect();
        let absent = lookup("2:99:A:T", 0, 0, 1000);
        let common = lookup("2:500:A:G", 50, 300, 650);
        let a = led.ask(
            "mallory",
            vec![rare[0].clone(), common.clone(), rare[1].clone()],
            Granularity::Count,
            &p,
        );
        assert!(a.iter().all(|a| a.withheld.is_none()));
        assert_eq!(led.probed("mallory").len(), 2);
        // The same rare variant again costs nothing; an absent one costs like a rare one.
        let a = led.ask(
            "mallory",
            vec![rare[0].clone(), absent.clone()],
            Granularity::Count,
            &p,
        );
        assert_eq!(a[1].exists, Some(false));
        assert_eq!(led.probed("mallory").len(), 3);
        // The budget is spent: further rare variants are withheld, common ones still answered,
        // and the ones already charged are answered again.
        let a = led.ask(
            "mallory",
            vec![
                rare[2].clone(),
                common.clone(),
                rare[1].clone(),
                rare[3].clone(),
            ],
            Granularity::Count,
            &p,
        );
        let budget = Some(Suppression::ProbeBudget { budget: 3 });
        assert_eq!((a[0].exists, &a[0].withheld), (None, &budget));
        assert_eq!(a[1].carriers, Some(350));
        assert_eq!(a[2].carriers, Some(20));
        assert_eq!(a[3].withheld, budget);
        assert_eq!(led.probed("mallory").len(), 3);
        // Another requester has a budget of their own.
        let a = led.ask("ann", vec![rare[4].clone()], Granularity::Count, &p);
        assert_eq!(a[0].carriers, Some(20));
        // Within one request, the budget stops part way.
        let a = led.ask("bob", rare.clone(), Granularity::Boolean, &p);
        let answered = a.iter().filter(|a| a.exists.is_some()).count();
        assert_eq!(answered, 3);
    }

    #[test]
    fn a_beacon_statistic_never_leaves_through_the_ordinary_release() {
        let s = SiteStatistic::beacon(
            vec![lookup("1:1:A:G", 0, 1, 10)],
            Granularity::Count,
            "ann".into(),
        );
        let r = crate::release(s, &Policy::default());
        assert!(r.is_suppressed());
        assert!(r.beacon().is_none());
    }
}
