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

pub mod beacon;
pub mod dp;
mod policy;
mod table;

pub use policy::{Decision, Policy, PolicyError, CATALOG_TYPES};
pub use table::{Measure, MeasureKind, ReleasedCell, ReleasedTable, Table, ALL};

use serde::{Deserialize, Serialize};

/// A statistic computed from a site's rows, before disclosure control. Not serializable on purpose.
pub struct SiteStatistic(Inner);

enum Inner {
    Count(u64),
    /// A count of distinct persons, with the persons (sorted, distinct) so that the release step can
    /// check it against earlier releases (differencing).
    Persons(Vec<i64>),
    /// Tables about a base population (a cohort: sorted, distinct persons) or about the whole site.
    Tables {
        tables: Vec<Table>,
        base: Option<Vec<i64>>,
    },
    /// A model's per-site sums (score, information, deviance, …) over `rows` rows with `parameters`
    /// parameters, `events` and `non_events` outcomes among them (`None`: not counted for this family).
    ModelSums {
        values: Vec<f64>,
        parameters: u64,
        rows: u64,
        events: Option<u64>,
        non_events: Option<u64>,
    },
    /// Counts that only ever leave the site masked for secure aggregation (syndromic surveillance).
    AggregateOnly {
        values: Vec<f64>,
    },
    /// A genotype panel's variant list: reference information about the assay, about no person.
    Panel {
        variants: Vec<String>,
    },
    /// Per-variant sums of a genetic association, `width` values a variant, with each variant's
    /// minor-allele count at the site.
    VariantSums {
        values: Vec<f64>,
        width: usize,
        mac: Vec<u64>,
        rows: u64,
        classes: Vec<u64>,
        min_mac: u64,
    },
    /// A beacon look-up for `requester` (released only by [`beacon::release`]).
    Beacon {
        lookups: Vec<beacon::Lookup>,
        requested: beacon::Granularity,
        requester: String,
    },
}

impl SiteStatistic {
    /// The number of distinct persons (or events) matching a criterion at this site.
    pub fn count(n: u64) -> SiteStatistic {
        SiteStatistic(Inner::Count(n))
    }

    /// The distinct persons matching a criterion; released as their count.
    pub fn persons(mut ids: Vec<i64>) -> SiteStatistic {
        ids.sort_unstable();
        ids.dedup();
        SiteStatistic(Inner::Persons(ids))
    }

    /// Tables about the whole site.
    pub fn tables(tables: Vec<Table>) -> SiteStatistic {
        SiteStatistic(Inner::Tables { tables, base: None })
    }

    /// Tables about a cohort: the cohort's persons go through the minimum-cohort-size and
    /// differencing checks before any cell does.
    pub fn cohort_tables(tables: Vec<Table>, mut base: Vec<i64>) -> SiteStatistic {
        base.sort_unstable();
        base.dedup();
        SiteStatistic(Inner::Tables {
            tables,
            base: Some(base),
        })
    }

    /// A model's sums at the site (a federated fit's local step): released as a vector only when the
    /// model passes [`check_model`] for its rows and, where counted, events and non-events are each at
    /// least `min_cell_count` — so no released sum is about a handful of persons' outcomes.
    pub fn model_sums(
        values: Vec<f64>,
        parameters: u64,
        rows: u64,
        events: Option<u64>,
        non_events: Option<u64>,
    ) -> SiteStatistic {
        SiteStatistic(Inner::ModelSums {
            values,
            parameters,
            rows,
            events,
            non_events,
        })
    }

    /// Counts (e.g. syndrome cases by district × group × day) that the hub may only ever see added
    /// over sites. They are released without the small-cell rule — the rule applies to the network
    /// totals the hub publishes — and the released value cannot be serialised: the only way it leaves
    /// the site is [`Released::mask`], as one input of a secure aggregation.
    pub fn aggregate_only(values: Vec<f64>) -> SiteStatistic {
        SiteStatistic(Inner::AggregateOnly { values })
    }

    /// Per-variant sums of a genetic association (genotype tables or regression sums), `width` values
    /// a variant, over `rows` samples in phenotype `classes` (cases and controls; empty for a
    /// quantitative trait). The whole vector is withheld when the samples make too small a cohort or a
    /// class is under the minimum cell count; otherwise each variant whose minor-allele count here is
    /// 1..T−1 is withheld (its values zeroed and its index listed), T the larger of the site's
    /// `min_minor_allele_count` and the study's `min_mac`.
    pub fn variant_sums(
        values: Vec<f64>,
        width: usize,
        mac: Vec<u64>,
        rows: u64,
        classes: Vec<u64>,
        min_mac: u64,
    ) -> SiteStatistic {
        SiteStatistic(Inner::VariantSums {
            values,
            width,
            mac,
            rows,
            classes,
            min_mac,
        })
    }

    /// The variant list of the site's genotype panel (`chrom:pos:id:a1:a2`, the `.bim` in order),
    /// which a GWAS needs to name its results and to check that every site typed the same variants.
    /// It describes the assay, not a person, and is released as it is; a site whose panel was
    /// filtered by its own samples' calls (dropping monomorphic variants, say) must not send one.
    pub fn panel(variants: Vec<String>) -> SiteStatistic {
        SiteStatistic(Inner::Panel { variants })
    }

    /// The person set behind a count or a cohort's tables, for the node's local release history
    /// (never sent).
    pub fn person_set(&self) -> Option<&[i64]> {
        match &self.0 {
            Inner::Persons(p) => Some(p),
            Inner::Tables { base: Some(b), .. } => Some(b),
            Inner::Count(_)
            | Inner::Tables { base: None, .. }
            | Inner::ModelSums { .. }
            | Inner::AggregateOnly { .. }
            | Inner::Panel { .. }
            | Inner::VariantSums { .. }
            | Inner::Beacon { .. } => None,
        }
    }
}

/// The person sets of counts this site has already released (kept locally by the node).
pub trait History {
    /// Released sets whose size is within `within` of `size` (only those can differ by fewer than
    /// `within` persons).
    fn similar(&self, size: u64, within: u64) -> Vec<Vec<i64>>;
}

/// No history: for callers that release once (tests, benchmarks).
pub struct NoHistory;
impl History for NoHistory {
    fn similar(&self, _: u64, _: u64) -> Vec<Vec<i64>> {
        Vec::new()
    }
}

/// Whether `set` (sorted, distinct) differs from a set released before by 1..`k - 1` persons, so that
/// the difference of the two releases would describe those few: the differencing and tracker check.
fn near_an_earlier_release(set: &[i64], k: u64, history: &dyn History) -> bool {
    history.similar(set.len() as u64, k).iter().any(|earlier| {
        let d = symmetric_difference(set, earlier);
        d > 0 && d < k
    })
}

/// Size of the symmetric difference of two sorted, distinct lists.
fn symmetric_difference(a: &[i64], b: &[i64]) -> u64 {
    let (mut i, mut j, mut d) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                d += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                d += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    d + (a.len() - i) as u64 + (b.len() - j) as u64
}

/// Why a value was withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Suppression {
    /// 0 < n < threshold: the small-cell rule.
    MinCellCount { threshold: u64 },
    /// The persons counted differ from those of a count this site released before by at least one
    /// and fewer than `threshold` persons, so the difference of the two counts would describe them.
    Differencing { threshold: u64 },
    /// A table about a cohort of 1..`threshold` persons.
    MinCohortSize { threshold: u64 },
    /// Secondary suppression: withheld so that a small cell withheld in the same line of the table
    /// cannot be recovered from the line's margin.
    Complementary { threshold: u64 },
    /// A model with more parameters than the site's `max_parameter_ratio` allows for its rows.
    ModelParameters {
        parameters: u64,
        max_parameters: u64,
    },
    /// A beacon look-up of a rare variant by a requester who has spent their budget of `budget`
    /// distinct rare variants at this site (membership inference by repeated probing).
    ProbeBudget { budget: u64 },
    /// A beacon look-up that reached a release path without the requester's probe ledger.
    NoProbeLedger,
}

/// The disclosure check of a model before any of its statistics leave the site, after DataSHIELD's
/// GLM filters: the rows must make a cohort of at least `min_cohort_size` persons, and the model may
/// have at most `max_parameter_ratio` × rows parameters. A model with as many parameters as rows is
/// saturated: its fitted values are the rows themselves, and its score and information sums let the
/// hub solve for them.
pub fn check_model(parameters: u64, rows: u64, policy: &Policy) -> Result<(), Suppression> {
    if rows < policy.min_cohort_size {
        return Err(Suppression::MinCohortSize {
            threshold: policy.min_cohort_size,
        });
    }
    let max_parameters = (policy.max_parameter_ratio * rows as f64).floor() as u64;
    if parameters > max_parameters {
        return Err(Suppression::ModelParameters {
            parameters,
            max_parameters,
        });
    }
    Ok(())
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
    /// Present when the counts carry differential-privacy noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    noise: Option<dp::Noise>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ReleasedKind {
    Count {
        value: Option<u64>,
    },
    Tables {
        tables: Vec<ReleasedTable>,
    },
    /// A model's sums; empty when withheld.
    Vector {
        values: Vec<f64>,
    },
    /// A genotype panel's variant list.
    Panel {
        variants: Vec<String>,
    },
    /// Per-variant sums; `withheld` variants' values are zero. Empty when withheld whole.
    Variants {
        values: Vec<f64>,
        width: usize,
        withheld: Vec<u32>,
    },
    /// A beacon answer per looked-up variant, at `granularity`.
    Beacon {
        granularity: beacon::Granularity,
        answers: Vec<beacon::Answer>,
    },
    /// Counts for secure aggregation. `skip`: serde refuses to serialise (or read) this variant, so
    /// these values cannot be put on the wire except masked.
    #[serde(skip)]
    AggregateOnly {
        values: Vec<f64>,
    },
}

impl Released {
    /// The released count, `None` when suppressed or when this is not a count.
    pub fn count(&self) -> Option<u64> {
        match &self.kind {
            ReleasedKind::Count { value } => *value,
            ReleasedKind::Tables { .. }
            | ReleasedKind::Vector { .. }
            | ReleasedKind::Variants { .. }
            | ReleasedKind::Panel { .. }
            | ReleasedKind::Beacon { .. }
            | ReleasedKind::AggregateOnly { .. } => None,
        }
    }

    /// A released beacon answer: the granularity answered at and one answer per variant.
    pub fn beacon(&self) -> Option<(beacon::Granularity, &[beacon::Answer])> {
        match (&self.kind, &self.suppressed) {
            (
                ReleasedKind::Beacon {
                    granularity,
                    answers,
                },
                None,
            ) => Some((*granularity, answers)),
            _ => None,
        }
    }

    /// A released genotype panel (variant list).
    pub fn panel(&self) -> Option<&[String]> {
        match &self.kind {
            ReleasedKind::Panel { variants } => Some(variants),
            _ => None,
        }
    }

    /// Released per-variant sums: the values (`width` a variant; withheld variants zero), the width
    /// and the indices withheld at this site. `None` when withheld whole or not per-variant sums.
    pub fn variants(&self) -> Option<(&[f64], usize, &[u32])> {
        match (&self.kind, &self.suppressed) {
            (
                ReleasedKind::Variants {
                    values,
                    width,
                    withheld,
                },
                None,
            ) => Some((values, *width, withheld)),
            _ => None,
        }
    }

    /// The released model sums, `None` when withheld or when this is not a vector.
    pub fn vector(&self) -> Option<&[f64]> {
        match (&self.kind, &self.suppressed) {
            (ReleasedKind::Vector { values }, None) => Some(values),
            _ => None,
        }
    }

    /// What a secure aggregation may mask: a released model-sums vector or aggregate-only counts.
    pub fn maskable(&self) -> Option<&[f64]> {
        match (&self.kind, &self.suppressed) {
            (ReleasedKind::Vector { values }, None)
            | (ReleasedKind::AggregateOnly { values }, None) => Some(values),
            _ => None,
        }
    }

    /// Whether this release may only leave the site masked.
    pub fn is_aggregate_only(&self) -> bool {
        matches!(self.kind, ReleasedKind::AggregateOnly { .. })
    }

    /// The released tables, `None` when this is a count.
    pub fn tables(&self) -> Option<&[ReleasedTable]> {
        match &self.kind {
            ReleasedKind::Tables { tables } => Some(tables),
            ReleasedKind::Count { .. }
            | ReleasedKind::Vector { .. }
            | ReleasedKind::Variants { .. }
            | ReleasedKind::Panel { .. }
            | ReleasedKind::Beacon { .. }
            | ReleasedKind::AggregateOnly { .. } => None,
        }
    }

    /// One line for the node's audit log: what left, and what was withheld by which rule.
    pub fn describe(&self) -> String {
        let rule = |r: &Suppression| serde_json::to_string(r).unwrap_or_default();
        match (&self.kind, &self.suppressed) {
            (_, Some(r)) => format!("released with the value withheld: {}", rule(r)),
            (ReleasedKind::Count { value: Some(v) }, None) => format!("released count {v}"),
            (ReleasedKind::Count { value: None }, None) => "released an empty count".into(),
            (ReleasedKind::Vector { values }, None) => {
                format!("released model sums ({} numbers)", values.len())
            }
            (
                ReleasedKind::Variants {
                    values,
                    width,
                    withheld,
                },
                None,
            ) => format!(
                "released per-variant sums ({} variants × {width} numbers); withheld at this site: {} variants with a minor-allele count under the minimum",
                values.len() / (*width).max(1),
                withheld.len()
            ),
            (
                ReleasedKind::Beacon {
                    granularity,
                    answers,
                },
                None,
            ) => format!(
                "released a beacon answer at {} level for {} variants; withheld: {}",
                granularity.name(),
                answers.len(),
                answers.iter().filter(|a| a.withheld.is_some()).count()
            ),
            (ReleasedKind::Panel { variants }, None) => format!(
                "released the genotype panel's variant list ({} variants; no person's data)",
                variants.len()
            ),
            (ReleasedKind::AggregateOnly { values }, None) => format!(
                "counts for secure aggregation ({} numbers, {} in total), sent only masked",
                values.len(),
                values.iter().sum::<f64>()
            ),
            (ReleasedKind::Tables { tables }, None) => {
                let mut withheld: std::collections::BTreeMap<String, usize> = Default::default();
                let mut cells = 0;
                for c in tables.iter().flat_map(|t| &t.cells) {
                    cells += 1;
                    if let Some(r) = &c.suppressed {
                        *withheld.entry(rule(r)).or_default() += 1;
                    }
                }
                let w: Vec<String> = withheld.iter().map(|(r, n)| format!("{n} × {r}")).collect();
                format!(
                    "released {} tables, {cells} cells; withheld: {}",
                    tables.len(),
                    if w.is_empty() {
                        "none".to_string()
                    } else {
                        w.join(", ")
                    }
                )
            }
        }
    }

    /// Whether anything was released (a count or a table that was not withheld whole).
    pub fn has_value(&self) -> bool {
        match &self.kind {
            ReleasedKind::Count { value } => value.is_some(),
            ReleasedKind::Tables { tables } => tables.iter().all(|t| t.suppressed.is_none()),
            ReleasedKind::Vector { .. }
            | ReleasedKind::Variants { .. }
            | ReleasedKind::Panel { .. }
            | ReleasedKind::Beacon { .. }
            | ReleasedKind::AggregateOnly { .. } => self.suppressed.is_none(),
        }
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppressed.is_some()
    }

    pub fn suppression(&self) -> Option<&Suppression> {
        self.suppressed.as_ref()
    }

    /// The differential-privacy noise in the released counts, if any.
    pub fn noise(&self) -> Option<&dp::Noise> {
        self.noise.as_ref()
    }
}

/// A released vector after secure-aggregation masking: what leaves a site in place of its sums when
/// they are added under secure aggregation. Only [`Released::mask`] makes one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masked {
    #[serde(with = "words_b64")]
    values: Vec<u64>,
}

/// Masked words on the wire: base64 of their little-endian bytes (a surveillance chunk is a few
/// hundred thousand uniformly random words; decimal JSON would be three times the size).
mod words_b64 {
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|w| w.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("masked values: {e}")))?;
        if bytes.len() % 8 != 0 {
            return Err(D::Error::custom(
                "masked values: not a whole number of 64-bit words",
            ));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

impl Masked {
    pub fn values(&self) -> &[u64] {
        &self.values
    }
}

impl Released {
    /// Mask a released (not withheld) vector or aggregate-only counts with `mask` (fixed-point
    /// encoding and the pairwise and self masks); `None` when there is nothing to mask.
    pub fn mask<E>(
        &self,
        mask: impl FnOnce(&[f64]) -> Result<Vec<u64>, E>,
    ) -> Option<Result<Masked, E>> {
        self.maskable()
            .map(|v| mask(v).map(|values| Masked { values }))
    }
}

/// Apply the site's disclosure policy to one statistic.
///
/// Counts: zero is released (a zero discloses nothing about a person), `1..min_cell_count` is
/// suppressed, larger counts are released exactly.
pub fn release(stat: SiteStatistic, policy: &Policy) -> Released {
    release_checked(stat, policy, &NoHistory)
}

/// [`release`], plus the differencing check against the site's earlier releases: a person count
/// whose persons differ from an already released count's by 1..`min_cell_count` persons is withheld.
pub fn release_checked(stat: SiteStatistic, policy: &Policy, history: &dyn History) -> Released {
    let k = policy.min_cell_count;
    let n = match stat.0 {
        Inner::Tables { tables, base } => {
            let rule = base
                .as_deref()
                .and_then(|b| table::check_base(b, policy, history));
            let tables: Vec<ReleasedTable> = tables
                .into_iter()
                .map(|t| table::release_table(t, policy, rule.clone()))
                .collect();
            return Released {
                kind: ReleasedKind::Tables { tables },
                suppressed: rule,
                noise: None,
            };
        }
        Inner::ModelSums {
            values,
            parameters,
            rows,
            events,
            non_events,
        } => {
            let few = |n: Option<u64>| n.is_some_and(|n| n < k);
            let rule = match check_model(parameters, rows, policy) {
                Err(r) => Some(r),
                Ok(()) if few(events) || few(non_events) => {
                    Some(Suppression::MinCellCount { threshold: k })
                }
                Ok(()) => None,
            };
            let values = if rule.is_some() || values.iter().any(|v| !v.is_finite()) {
                Vec::new()
            } else {
                values
            };
            return Released {
                kind: ReleasedKind::Vector { values },
                suppressed: rule,
                noise: None,
            };
        }
        Inner::AggregateOnly { values } => {
            return Released {
                kind: ReleasedKind::AggregateOnly { values },
                suppressed: None,
                noise: None,
            };
        }
        Inner::Panel { variants } => {
            return Released {
                kind: ReleasedKind::Panel { variants },
                suppressed: None,
                noise: None,
            };
        }
        Inner::VariantSums {
            mut values,
            width,
            mac,
            rows,
            classes,
            min_mac,
        } => {
            let rule = if rows < policy.min_cohort_size {
                Some(Suppression::MinCohortSize {
                    threshold: policy.min_cohort_size,
                })
            } else if classes.iter().any(|&c| c < k)
                || width == 0
                || values.len() != width * mac.len()
                || values.iter().any(|v| !v.is_finite())
            {
                Some(Suppression::MinCellCount { threshold: k })
            } else {
                None
            };
            if rule.is_some() {
                return Released {
                    kind: ReleasedKind::Variants {
                        values: Vec::new(),
                        width,
                        withheld: Vec::new(),
                    },
                    suppressed: rule,
                    noise: None,
                };
            }
            let t = policy.min_minor_allele_count.max(min_mac);
            let mut withheld = Vec::new();
            for (v, &m) in mac.iter().enumerate() {
                if m > 0 && m < t {
                    values[v * width..(v + 1) * width]
                        .iter_mut()
                        .for_each(|x| *x = 0.0);
                    withheld.push(v as u32);
                }
            }
            return Released {
                kind: ReleasedKind::Variants {
                    values,
                    width,
                    withheld,
                },
                suppressed: None,
                noise: None,
            };
        }
        Inner::Beacon { .. } => {
            return Released {
                kind: ReleasedKind::Beacon {
                    granularity: beacon::Granularity::Boolean,
                    answers: Vec::new(),
                },
                suppressed: Some(Suppression::NoProbeLedger),
                noise: None,
            };
        }
        Inner::Count(n) => n,
        Inner::Persons(p) => {
            let n = p.len() as u64;
            if policy.differencing && n >= k && near_an_earlier_release(&p, k, history) {
                return Released {
                    kind: ReleasedKind::Count { value: None },
                    suppressed: Some(Suppression::Differencing { threshold: k }),
                    noise: None,
                };
            }
            n
        }
    };
    if n > 0 && n < k {
        Released {
            kind: ReleasedKind::Count { value: None },
            suppressed: Some(Suppression::MinCellCount { threshold: k }),
            noise: None,
        }
    } else {
        Released {
            kind: ReleasedKind::Count { value: Some(n) },
            suppressed: None,
            noise: None,
        }
    }
}

/// What [`release_private`] did: the released statistic and the ε it spent.
pub struct PrivateRelease {
    pub released: Released,
    pub epsilon_spent: f64,
}

/// The ε a statistic costs under the policy's DP settings, or why it cannot be released under DP.
pub fn dp_cost(stat: &SiteStatistic, d: &dp::DpPolicy) -> Result<f64, String> {
    match &stat.0 {
        Inner::Count(_) | Inner::Persons(_) => Ok(d.epsilon),
        Inner::ModelSums { .. } => Err(
            "model sums cannot be released under differential privacy in this build: their sensitivity to one person is not bounded"
                .into(),
        ),
        Inner::AggregateOnly { .. } => Err(
            "surveillance counts are added under secure aggregation, not released under differential privacy, in this build"
                .into(),
        ),
        Inner::Panel { .. } => Ok(0.0),
        Inner::Beacon { .. } => Err(
            "beacon look-ups are released under the small-cell rule and a per-requester probe budget, not differential privacy, in this build"
                .into(),
        ),
        Inner::VariantSums { .. } => Err(
            "per-variant genetic sums are released under the minor-allele-count rule or secure aggregation, not differential privacy, in this build"
                .into(),
        ),
        Inner::Tables { tables, .. } => {
            let mut cost = 0.0;
            for t in tables {
                if let Some(i) = t.partition.iter().position(|p| !*p) {
                    return Err(format!(
                        "table {} cannot be released under differential privacy: a person can be in many {} cells, so one person's influence is unbounded",
                        t.name, t.dims[i]
                    ));
                }
                if let Some(m) = t
                    .measures
                    .iter()
                    .find(|m| m.kind != MeasureKind::Count || m.name != "persons")
                {
                    return Err(format!(
                        "table {} cannot be released under differential privacy: its measure {} is not a count of persons, so one person's influence is unbounded",
                        t.name, m.name
                    ));
                }
                cost += d.epsilon * t.measures.len() as f64;
            }
            Ok(cost)
        }
    }
}

/// [`release_checked`] under the policy's optional differential privacy. Without a `[dp]` section it
/// is exactly `release_checked` and spends nothing. With one, it refuses (returns the reason) when the
/// statistic has no bounded per-person sensitivity or when its cost would overspend the study's or
/// the site's budget in `ledger`; otherwise every count gets noise, is rounded and clamped at zero,
/// and then goes through the small-cell and complementary rules (post-processing). The
/// differencing and cohort-size checks, whose decisions depend on exact data, are replaced by the
/// noise and the budget.
pub fn release_private(
    stat: SiteStatistic,
    policy: &Policy,
    history: &dyn History,
    ledger: &dyn dp::Ledger,
    study: &str,
    rng: &mut impl rand::Rng,
) -> Result<PrivateRelease, String> {
    let Some(d) = &policy.dp else {
        return Ok(PrivateRelease {
            released: release_checked(stat, policy, history),
            epsilon_spent: 0.0,
        });
    };
    let cost = dp_cost(&stat, d)?;
    let (spent_study, spent_site) = (ledger.spent_by_study(study), ledger.spent_total());
    if spent_study + cost > d.study_budget + 1e-9 {
        return Err(format!(
            "privacy budget exhausted: this study has spent ε = {spent_study:.3} of its {:.3} at this site and the task needs {cost:.3}",
            d.study_budget
        ));
    }
    if spent_site + cost > d.site_budget + 1e-9 {
        return Err(format!(
            "privacy budget exhausted: this site has spent ε = {spent_site:.3} of its lifetime {:.3} and the task needs {cost:.3}",
            d.site_budget
        ));
    }
    let mut noisy = |n: f64| (n + d.noise(rng)).round().max(0.0);
    let stat = match stat.0 {
        Inner::ModelSums { .. }
        | Inner::AggregateOnly { .. }
        | Inner::VariantSums { .. }
        | Inner::Beacon { .. } => {
            unreachable!("dp_cost refuses these")
        }
        Inner::Panel { variants } => SiteStatistic::panel(variants),
        Inner::Count(n) => SiteStatistic::count(noisy(n as f64) as u64),
        Inner::Persons(p) => SiteStatistic::count(noisy(p.len() as f64) as u64),
        Inner::Tables { mut tables, .. } => {
            for t in &mut tables {
                for v in t.cells.values_mut() {
                    for x in v.iter_mut() {
                        *x = noisy(*x);
                    }
                }
            }
            SiteStatistic::tables(tables)
        }
    };
    let plain = Policy {
        differencing: false,
        min_cohort_size: 0,
        ..policy.clone()
    };
    let mut released = release_checked(stat, &plain, &NoHistory);
    released.noise = Some(dp::Noise {
        mechanism: d.mechanism,
        epsilon: d.epsilon,
        delta: (d.mechanism == dp::Mechanism::Gaussian).then_some(d.delta),
        scale: d.scale(),
    });
    Ok(PrivateRelease {
        released,
        epsilon_spent: cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a model with as many parameters as rows (saturated: its fit is the rows) is refused
    /// before anything leaves, and so is one just over the ratio or on too small a cohort.
    #[test]
    fn saturated_and_overparameterised_models_are_refused() {
        let p = Policy::default();
        assert_eq!(
            check_model(50, 50, &p),
            Err(Suppression::ModelParameters {
                parameters: 50,
                max_parameters: 16
            })
        );
        assert_eq!(
            check_model(17, 50, &p),
            Err(Suppression::ModelParameters {
                parameters: 17,
                max_parameters: 16
            })
        );
        assert_eq!(check_model(16, 50, &p), Ok(()));
        assert_eq!(
            check_model(2, 19, &p),
            Err(Suppression::MinCohortSize { threshold: 20 })
        );
        let strict = Policy::parse("max_parameter_ratio = 0.1").unwrap();
        assert!(check_model(16, 50, &strict).is_err());
        assert_eq!(check_model(1_000, 1_000_000, &strict), Ok(()));
        // The reason travels in the result like any other withheld value.
        let json = serde_json::to_string(&check_model(50, 50, &p).unwrap_err()).unwrap();
        assert_eq!(
            json,
            r#"{"rule":"model_parameters","parameters":50,"max_parameters":16}"#
        );
    }

    #[test]
    fn rare_variants_are_withheld_per_site() {
        // Three variants, two values each: carried by nobody, by one person (a minor-allele count
        // of 1: that person's membership is as good as published), and by many.
        let p = Policy::default();
        let stat = |classes: Vec<u64>, rows: u64| {
            SiteStatistic::variant_sums(
                vec![0.0, 50.0, 1.0, 49.0, 30.0, 20.0],
                2,
                vec![0, 1, 30],
                rows,
                classes,
                3,
            )
        };
        let r = release(stat(vec![25, 25], 50), &p);
        let (values, width, withheld) = r.variants().unwrap();
        assert_eq!(width, 2);
        assert_eq!(withheld, [1]);
        assert_eq!(values, [0.0, 50.0, 0.0, 0.0, 30.0, 20.0]);
        // The study may ask for more than the site's floor; never less.
        let strict =
            SiteStatistic::variant_sums(vec![1.0; 6], 2, vec![4, 6, 9], 50, vec![25, 25], 7);
        assert_eq!(release(strict, &p).variants().unwrap().2, [0, 1]);
        let lax = SiteStatistic::variant_sums(vec![1.0; 6], 2, vec![4, 6, 9], 50, vec![25, 25], 0);
        assert_eq!(release(lax, &p).variants().unwrap().2, [0]);
        // Too few samples, or too few cases, and nothing leaves.
        let r = release(stat(vec![25, 25], 10), &p);
        assert!(r.variants().is_none() && r.is_suppressed());
        let r = release(stat(vec![3, 47], 50), &p);
        assert!(r.variants().is_none() && r.is_suppressed());
        // What does leave reads back the same off the wire.
        let r = release(stat(vec![25, 25], 50), &p);
        let back: Released = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(
            r.describe().contains("withheld at this site: 1 variants"),
            "{}",
            r.describe()
        );
    }

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

    struct Past(Vec<Vec<i64>>);
    impl History for Past {
        fn similar(&self, size: u64, within: u64) -> Vec<Vec<i64>> {
            self.0
                .iter()
                .filter(|s| (s.len() as u64).abs_diff(size) < within)
                .cloned()
                .collect()
        }
    }

    #[test]
    fn differencing_attack_is_blocked() {
        let p = Policy {
            min_cell_count: 5,
            ..Policy::default()
        };
        let base: Vec<i64> = (1..=100).collect();
        let past = Past(vec![base.clone()]);
        // The same persons again: nothing new, released.
        let r = release_checked(SiteStatistic::persons(base.clone()), &p, &past);
        assert_eq!(r.count(), Some(100));
        // One person more or less: the difference would single them out.
        let mut plus_one = base.clone();
        plus_one.push(1000);
        for set in [plus_one, base[1..].to_vec()] {
            let r = release_checked(SiteStatistic::persons(set), &p, &past);
            assert_eq!(r.count(), None);
            assert_eq!(
                r.suppression(),
                Some(&Suppression::Differencing { threshold: 5 })
            );
        }
        // Same size, four persons swapped: differs by 8 >= 5, released.
        let mut swapped = base[4..].to_vec();
        swapped.extend([1001, 1002, 1003, 1004]);
        assert_eq!(
            release_checked(SiteStatistic::persons(swapped), &p, &past).count(),
            Some(100)
        );
        assert_eq!(symmetric_difference(&[1, 2, 3], &[2, 3, 4, 5]), 3);
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

#[cfg(test)]
mod aggregate_only_tests {
    use super::*;

    #[test]
    fn aggregate_only_counts_cannot_be_serialised_only_masked() {
        let policy = Policy::default();
        let r = release(SiteStatistic::aggregate_only(vec![0.0, 3.0, 1.0]), &policy);
        // No small-cell rule on the way to the aggregation…
        assert_eq!(r.maskable(), Some(&[0.0, 3.0, 1.0][..]));
        assert!(r.vector().is_none() && r.count().is_none() && r.is_aggregate_only());
        // …and no way onto the wire but masked.
        assert!(serde_json::to_string(&r).is_err());
        let m = r.mask(|v| Ok::<_, ()>(v.iter().map(|x| *x as u64 ^ 0xdead_beef).collect()));
        let m = m.unwrap().unwrap();
        let wire = serde_json::to_string(&m).unwrap();
        let back: Masked = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.values(), m.values());
    }
}
