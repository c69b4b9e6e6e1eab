//! The `beacon` analysis: look variants up in a site's genotypes (local step) and say across the
//! network whether, how often and at what frequency they are carried (combine step).
//!
//! At the site, each queried variant is found in the PLINK panel by identifier or by chromosome,
//! position and alleles (either orientation: the alternate allele may be A1 or A2), and its genotype
//! classes are counted with the popcount kernel. What may leave is decided by
//! `medfed_privacy::beacon::release`: granularity, small cells, the requester's rare-variant budget.

use std::collections::HashMap;

use medfed_engine::SiteEngine;
use medfed_genomics::Bed;
use medfed_privacy::beacon::{Answer, Granularity, Lookup};
use medfed_privacy::SiteStatistic;
use medfed_protocol::beacon::{normal_chrom, Beacon, VariantQuery};
use serde::{Deserialize, Serialize};

use crate::{AnalysisError, PooledResult, SiteContribution, SiteInput, SiteOutcome};

/// The site's look-ups for `b`, asked by `requester`.
pub fn local_step(
    engine: &SiteEngine,
    b: &Beacon,
    requester: &str,
) -> Result<SiteStatistic, AnalysisError> {
    let bed = crate::regression::genotypes(engine, &b.id)?;
    Ok(SiteStatistic::beacon(
        lookups(&bed, &b.variants),
        b.granularity,
        requester.to_string(),
    ))
}

/// Find and count each queried variant in `bed`.
pub fn lookups(bed: &Bed, queries: &[VariantQuery]) -> Vec<Lookup> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_pos: HashMap<(String, u64), Vec<usize>> = HashMap::new();
    for (i, v) in bed.variants.iter().enumerate() {
        by_id.entry(v.id.as_str()).or_insert(i);
        by_pos
            .entry((normal_chrom(&v.chrom), v.pos))
            .or_default()
            .push(i);
    }
    queries
        .iter()
        .map(|q| {
            let absent = Lookup {
                key: q.key(),
                typed: false,
                hom_alt: 0,
                het: 0,
                hom_ref: 0,
            };
            // (variant, whether its A1 is the alternate allele)
            let found: Option<(usize, bool)> = match (&q.id, &q.chrom, q.pos) {
                (Some(id), _, _) => by_id.get(id.as_str()).map(|&i| (i, true)),
                (None, Some(c), Some(p)) => {
                    let (r, a) = (
                        q.reference.as_deref().unwrap_or("").to_ascii_uppercase(),
                        q.alt.as_deref().unwrap_or("").to_ascii_uppercase(),
                    );
                    by_pos
                        .get(&(normal_chrom(c), p))
                        .into_iter()
                        .flatten()
                        .find_map(|&i| {
                            let v = &bed.variants[i];
                            let (a1, a2) = (v.a1.to_ascii_uppercase(), v.a2.to_ascii_uppercase());
                            if a1 == a && a2 == r {
                                Some((i, true))
                            } else if a1 == r && a2 == a {
                                Some((i, false))
                            } else if a1 == "0" && a2 == r {
                                // Monomorphic for the reference: typed, and nobody carries `a`.
                                Some((i, true))
                            } else {
                                None
                            }
                        })
                }
                _ => None,
            };
            let Some((i, a1_is_alt)) = found else {
                return absent;
            };
            let v = &bed.variants[i];
            let c = bed.counts(i);
            let (hom_alt, hom_ref) = if a1_is_alt {
                (c.hom_a1, c.hom_a2)
            } else {
                (c.hom_a2, c.hom_a1)
            };
            let (r, a) = if a1_is_alt {
                (&v.a2, &v.a1)
            } else {
                (&v.a1, &v.a2)
            };
            Lookup {
                key: format!("{}:{}:{}:{}", normal_chrom(&v.chrom), v.pos, r, a),
                typed: true,
                hom_alt,
                het: c.het,
                hom_ref,
            }
        })
        .collect()
}

/// The network's answer for one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantAnswer {
    /// The variant as asked (`chrom:pos:ref:alt`, or the id).
    pub variant: String,
    /// `true` when a site says the allele is carried; `false` when every site that typed it says
    /// not; `null` when some site withheld its answer and none said yes.
    pub exists: Option<bool>,
    /// Sites whose panel has the variant.
    pub sites_typed: usize,
    /// Sites saying the allele is carried.
    pub sites_exist: usize,
    /// Carriers added over the sites that gave a count, and bounds on the total counting the sites
    /// that said the allele exists but withheld how often (1..k−1 each).
    pub carriers: Option<u64>,
    pub carriers_min: Option<u64>,
    pub carriers_max: Option<u64>,
    /// Allele count and number added over the sites that gave frequencies, and their ratio.
    pub allele_count: Option<u64>,
    pub allele_number: Option<u64>,
    pub allele_frequency: Option<f64>,
    /// Sites whose answer for this variant was withheld, with the rule.
    pub withheld: Vec<(String, medfed_privacy::Suppression)>,
    /// Each site's answer.
    pub sites: Vec<(String, Answer)>,
}

/// A beacon look-up's pooled answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeaconResult {
    pub requested: Granularity,
    /// The least granularity any answering site used (what the pooled numbers can say).
    pub answered: Option<Granularity>,
    pub variants: Vec<VariantAnswer>,
}

/// Pool the sites' beacon answers.
pub fn combine(b: &Beacon, inputs: &[(String, SiteInput<'_>)]) -> PooledResult {
    let mut sites = Vec::new();
    let mut answers: Vec<(String, Granularity, &[Answer])> = Vec::new();
    let mut notes = Vec::new();
    for (site, input) in inputs {
        let outcome = match input {
            SiteInput::Released(r) => match (r.beacon(), r.suppression()) {
                (Some((g, a)), None) if a.len() == b.variants.len() => {
                    answers.push((site.clone(), g, a));
                    if g < b.granularity {
                        notes.push(format!("{site} answers at {} level only", g.name()));
                    }
                    SiteOutcome::Released { value: None }
                }
                (_, Some(rule)) => SiteOutcome::Suppressed { rule: rule.clone() },
                _ => SiteOutcome::Refused {
                    reason: "released statistic is not an answer to this look-up".into(),
                },
            },
            SiteInput::Refused(reason) => SiteOutcome::Refused {
                reason: reason.to_string(),
            },
            SiteInput::Secagg(_) => SiteOutcome::Refused {
                reason: "sent a secure-aggregation message for a beacon look-up".into(),
            },
        };
        if let SiteOutcome::Refused { reason } = &outcome {
            notes.push(format!("{site} did not answer: {reason}"));
        }
        sites.push(SiteContribution {
            site: site.clone(),
            outcome,
        });
    }
    let answered = answers.iter().map(|(_, g, _)| *g).min();
    let variants = b
        .variants
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut v = VariantAnswer {
                variant: q.key(),
                exists: None,
                sites_typed: 0,
                sites_exist: 0,
                carriers: None,
                carriers_min: None,
                carriers_max: None,
                allele_count: None,
                allele_number: None,
                allele_frequency: None,
                withheld: Vec::new(),
                sites: Vec::new(),
            };
            // Sites that said "carried" but withheld how often, and the most each could hide.
            let (mut said_no, mut counted, mut small, mut hidden) =
                (0usize, Some(0u64), 0u64, 0u64);
            let (mut ac, mut an, mut freq_sites) = (0u64, 0u64, 0usize);
            for (site, g, a) in &answers {
                let a = &a[i];
                v.sites.push((site.clone(), a.clone()));
                v.sites_typed += usize::from(a.typed);
                match a.exists {
                    Some(true) => v.sites_exist += 1,
                    Some(false) if a.typed => said_no += 1,
                    _ => {}
                }
                if let Some(w) = &a.withheld {
                    v.withheld.push((site.clone(), w.clone()));
                }
                if *g >= Granularity::Count {
                    match (a.exists, a.carriers) {
                        (_, Some(c)) => counted = counted.map(|t| t + c),
                        (Some(true), None) => {
                            small += 1;
                            hidden += match &a.withheld {
                                Some(medfed_privacy::Suppression::MinCellCount { threshold }) => {
                                    threshold.saturating_sub(1).max(1)
                                }
                                _ => 1,
                            };
                        }
                        (Some(false), None) => {}
                        (None, _) => counted = None,
                    }
                } else {
                    counted = None;
                }
                if let (Some(c), Some(n)) = (a.allele_count, a.allele_number) {
                    ac += c;
                    an += n;
                    freq_sites += 1;
                }
            }
            v.exists = if v.sites_exist > 0 {
                Some(true)
            } else if v.withheld.is_empty() && (said_no > 0 || v.sites_typed == 0) {
                Some(false)
            } else {
                None
            };
            if let Some(c) = counted.filter(|_| !answers.is_empty() && v.sites_typed > 0) {
                if small == 0 {
                    v.carriers = Some(c);
                }
                v.carriers_min = Some(c + small);
                v.carriers_max = Some(c + hidden);
            }
            if freq_sites > 0 {
                v.allele_count = Some(ac);
                v.allele_number = Some(an);
                v.allele_frequency = (an > 0).then(|| ac as f64 / an as f64);
                if freq_sites < answers.len() {
                    notes.push(format!(
                        "{}: frequency from {freq_sites} of {} sites",
                        v.variant,
                        answers.len()
                    ));
                }
            }
            v
        })
        .collect();
    let result = BeaconResult {
        requested: b.granularity,
        answered,
        variants,
    };
    PooledResult {
        id: b.id.clone(),
        kind: "beacon".into(),
        value: if answers.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&result).expect("beacon results serialise")
        },
        sites,
        notes,
    }
}
