//! Combine steps: released statistics of all sites → pooled result.

use medfed_privacy::{Released, Suppression};
use medfed_protocol::study::AnalysisSpec;
use serde::{Deserialize, Serialize};

/// What one site contributed to one analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteContribution {
    pub site: String,
    #[serde(flatten)]
    pub outcome: SiteOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SiteOutcome {
    /// The value entered the pooled result.
    Released {
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u64>,
    },
    /// The site released the statistic with its value withheld.
    Suppressed { rule: Suppression },
    /// The site would not run the analysis.
    Refused { reason: String },
}

/// One analysis's pooled result, as it goes into `results.json` and the national statistics DB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PooledResult {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The pooled answer; `null` when no site released one.
    pub value: serde_json::Value,
    pub sites: Vec<SiteContribution>,
    pub notes: Vec<String>,
}

/// The sites of an analysis fitted in rounds: those taking part (their values are in the pooled
/// result), and those left out with why (also as notes, `"{site} {left_out}: {why}"`).
pub fn round_sites(
    taking_part: &[String],
    excluded: &[(String, String)],
    left_out: &str,
) -> (Vec<SiteContribution>, Vec<String>) {
    let mut sites: Vec<SiteContribution> = taking_part
        .iter()
        .map(|s| SiteContribution {
            site: s.clone(),
            outcome: SiteOutcome::Released { value: None },
        })
        .collect();
    let mut notes = Vec::new();
    for (s, why) in excluded {
        sites.push(SiteContribution {
            site: s.clone(),
            outcome: SiteOutcome::Refused {
                reason: why.clone(),
            },
        });
        notes.push(format!("{s} {left_out}: {why}"));
    }
    (sites, notes)
}

/// What the hub got from one site for one analysis.
pub enum SiteInput<'a> {
    Released(&'a Released),
    Refused(&'a str),
    /// A secure-aggregation phase message (regression rounds only).
    Secagg(&'a medfed_protocol::regression::SecaggMessage),
}

/// Pool the sites' released statistics for `spec`.
pub fn combine(spec: &AnalysisSpec, inputs: &[(String, SiteInput<'_>)]) -> PooledResult {
    match spec {
        AnalysisSpec::PersonCount(_) | AnalysisSpec::CohortCount(_) => combine_count(spec, inputs),
        AnalysisSpec::Beacon(b) => crate::beacon::combine(b, inputs),
        _ => combine_tables(spec, inputs),
    }
}

/// Table analyses: pool the tables cell by cell, then compute the analysis's summary.
fn combine_tables(spec: &AnalysisSpec, inputs: &[(String, SiteInput<'_>)]) -> PooledResult {
    let mut sites = Vec::new();
    let mut released: Vec<(String, &[medfed_privacy::ReleasedTable])> = Vec::new();
    for (site, input) in inputs {
        let outcome = match input {
            SiteInput::Released(r) => match (r.tables(), r.suppression()) {
                (Some(_), Some(rule)) => SiteOutcome::Suppressed { rule: rule.clone() },
                (Some(t), None) => {
                    released.push((site.clone(), t));
                    SiteOutcome::Released { value: None }
                }
                (None, _) => SiteOutcome::Refused {
                    reason: "released statistic is not a table".into(),
                },
            },
            SiteInput::Refused(reason) => SiteOutcome::Refused {
                reason: reason.to_string(),
            },
            SiteInput::Secagg(_) => SiteOutcome::Refused {
                reason: "sent a secure-aggregation message for a plain analysis".into(),
            },
        };
        sites.push(SiteContribution {
            site: site.clone(),
            outcome,
        });
    }
    let mut tables = crate::pooled::pool_tables(&released);
    let mut notes = crate::pooled::table_notes(&tables);
    for s in &sites {
        match &s.outcome {
            SiteOutcome::Suppressed { rule } => notes.push(format!(
                "withheld whole at {}: {}",
                s.site,
                crate::pooled::describe(rule)
            )),
            SiteOutcome::Refused { reason } => {
                notes.push(format!("not run at {}: {reason}", s.site))
            }
            SiteOutcome::Released { .. } => {}
        }
    }
    notes.extend(noise_note(inputs));
    let summary = crate::pooled::summarize(spec, &mut tables);
    PooledResult {
        id: spec.id().to_string(),
        kind: spec.type_name().to_string(),
        value: if released.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({ "summary": summary, "tables": tables })
        },
        sites,
        notes,
    }
}

fn combine_count(spec: &AnalysisSpec, inputs: &[(String, SiteInput<'_>)]) -> PooledResult {
    let mut total: u64 = 0;
    let mut released = 0usize;
    let mut sites = Vec::new();
    let mut notes = Vec::new();
    let mut suppressed_upper: u64 = 0;
    let mut unbounded = false;
    for (site, input) in inputs {
        let outcome = match input {
            SiteInput::Released(r) => match (r.count(), r.suppression()) {
                (Some(v), _) => {
                    total += v;
                    released += 1;
                    SiteOutcome::Released { value: Some(v) }
                }
                (None, Some(rule)) => {
                    match rule {
                        Suppression::MinCellCount { threshold } => {
                            suppressed_upper += threshold.saturating_sub(1)
                        }
                        // Any size: no upper bound can be given.
                        Suppression::Differencing { .. }
                        | Suppression::MinCohortSize { .. }
                        | Suppression::Complementary { .. }
                        | Suppression::ModelParameters { .. }
                        | Suppression::ProbeBudget { .. }
                        | Suppression::NoProbeLedger => unbounded = true,
                    }
                    SiteOutcome::Suppressed { rule: rule.clone() }
                }
                (None, None) => SiteOutcome::Refused {
                    reason: "released statistic is not a count".into(),
                },
            },
            SiteInput::Refused(reason) => SiteOutcome::Refused {
                reason: reason.to_string(),
            },
            SiteInput::Secagg(_) => SiteOutcome::Refused {
                reason: "sent a secure-aggregation message for a plain analysis".into(),
            },
        };
        sites.push(SiteContribution {
            site: site.clone(),
            outcome,
        });
    }
    let named = |keep: fn(&SiteOutcome) -> bool| -> Vec<&str> {
        sites
            .iter()
            .filter(|s| keep(&s.outcome))
            .map(|s| s.site.as_str())
            .collect()
    };
    let suppressed = named(|o| matches!(o, SiteOutcome::Suppressed { .. }));
    if !suppressed.is_empty() {
        let bound = if unbounded {
            "at least one site withheld its count as too close to a count it released before (differencing), so no upper bound can be given".to_string()
        } else if released == 0 {
            format!("the total is between 1 and {suppressed_upper}")
        } else {
            format!("the true total is at most {}", total + suppressed_upper)
        };
        notes.push(format!(
            "counts withheld at {}: the pooled value is a lower bound; {bound}",
            suppressed.join(", ")
        ));
    }
    let refused = named(|o| matches!(o, SiteOutcome::Refused { .. }));
    if !refused.is_empty() {
        notes.push(format!("not run at {}", refused.join(", ")));
    }
    notes.extend(noise_note(inputs));
    PooledResult {
        id: spec.id().to_string(),
        kind: spec.type_name().to_string(),
        value: if released > 0 {
            serde_json::json!(total)
        } else {
            serde_json::Value::Null
        },
        sites,
        notes,
    }
}

/// A note saying which sites added differential-privacy noise, and how much.
fn noise_note(inputs: &[(String, SiteInput<'_>)]) -> Option<String> {
    let noisy: Vec<String> = inputs
        .iter()
        .filter_map(|(site, i)| match i {
            SiteInput::Released(r) => r.noise().map(|n| {
                format!(
                    "{site} ({:?}, ε = {}, scale {:.2})",
                    n.mechanism, n.epsilon, n.scale
                )
            }),
            SiteInput::Refused(_) | SiteInput::Secagg(_) => None,
        })
        .collect();
    (!noisy.is_empty()).then(|| {
        format!(
            "differentially private: counts carry noise from {}; each site's noise is independent, so a pooled count's noise variance is the sum of theirs",
            noisy.join(", ")
        )
    })
}
