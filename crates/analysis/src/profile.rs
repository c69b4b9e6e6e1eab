//! Consented health profiles, derived at the node from its CDM: for each consenting person, the
//! categories a service may receive (`medfed_protocol::profiles::SERVICES`) and an age band. Runs
//! on the site's engine; what leaves is built by the node from this, keyed by the subject the person
//! gave the service, never by person id.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, Int64Array};
use medfed_engine::SiteEngine;

use crate::AnalysisError;

/// How a category is recognised: any condition record of the concepts (or their descendants), or
/// an age range in whole years at the reference year.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub category: String,
    pub conditions: Vec<i64>,
    pub age: Option<(i64, i64)>,
}

/// The default definitions. OMOP standard concepts: atrial fibrillation 313217, COPD 255573, asthma
/// 317009, ischaemic heart disease 4185932, cerebrovascular disease 381591, heart failure 316139,
/// diabetes mellitus 201820. `pacemaker` and `pregnancy` have no default concept set (a device or
/// a pregnancy episode is recorded too differently between hospitals); a node derives them only when
/// its data steward sets their concepts (`categories.toml`).
pub fn default_definitions() -> Vec<Definition> {
    let c = |category: &str, conditions: &[i64]| Definition {
        category: category.into(),
        conditions: conditions.to_vec(),
        age: None,
    };
    let a = |category: &str, lo: i64, hi: i64| Definition {
        category: category.into(),
        conditions: Vec::new(),
        age: Some((lo, hi)),
    };
    vec![
        c("atrial_fibrillation", &[313217]),
        c("pacemaker", &[]),
        c("chronic_lung_disease", &[255573, 317009]),
        c("respiratory", &[317009, 255573]),
        c("cardiovascular", &[4185932, 381591, 316139, 313217]),
        c("diabetes", &[201820]),
        a("elderly", 65, 200),
        c("pregnancy", &[]),
        a("young_child", 0, 5),
    ]
}

/// One person's derived profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    pub categories: BTreeSet<String>,
    /// Age in whole years at the reference year (`None`: no year of birth).
    pub age: Option<i64>,
}

fn ints(b: &arrow::record_batch::RecordBatch, i: usize) -> Result<&Int64Array, AnalysisError> {
    b.column(i)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| AnalysisError::Shape {
            id: "profiles".into(),
            message: format!("column {i} is not BIGINT"),
        })
}

/// Derive the profiles of `persons` (who must have consented; the caller checks) under
/// `definitions`, with ages at `reference_year`. Persons not in the store get an empty profile.
pub async fn derive(
    engine: &SiteEngine,
    persons: &[i64],
    definitions: &[Definition],
    reference_year: i64,
) -> Result<BTreeMap<i64, Derived>, AnalysisError> {
    let mut out: BTreeMap<i64, Derived> =
        persons.iter().map(|p| (*p, Derived::default())).collect();
    // Concept → the categories it marks, through concept_ancestor.
    let mut marks: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for d in definitions.iter().filter(|d| !d.conditions.is_empty()) {
        for c in crate::local::expand(engine, &d.conditions).await? {
            marks.entry(c).or_default().push(&d.category);
        }
    }
    let concepts = marks
        .keys()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in persons.chunks(5_000) {
        let ids = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let q = format!(
            "SELECT CAST(person_id AS BIGINT), CAST(year_of_birth AS BIGINT) FROM person \
             WHERE person_id IN ({ids})"
        );
        for b in engine.sql(&q).await? {
            let (p, y) = (ints(&b, 0)?, ints(&b, 1)?);
            for i in 0..b.num_rows() {
                if let (Some(d), true) = (out.get_mut(&p.value(i)), y.is_valid(i)) {
                    d.age = Some(reference_year - y.value(i));
                }
            }
        }
        if !concepts.is_empty() {
            let q = format!(
                "SELECT DISTINCT CAST(person_id AS BIGINT), CAST(condition_concept_id AS BIGINT) \
                 FROM condition_occurrence WHERE person_id IN ({ids}) \
                 AND condition_concept_id IN ({concepts})"
            );
            for b in engine.sql(&q).await? {
                let (p, c) = (ints(&b, 0)?, ints(&b, 1)?);
                for i in 0..b.num_rows() {
                    if let (Some(d), Some(m)) = (out.get_mut(&p.value(i)), marks.get(&c.value(i))) {
                        d.categories.extend(m.iter().map(|s| s.to_string()));
                    }
                }
            }
        }
    }
    for d in out.values_mut() {
        if let Some(age) = d.age {
            for def in definitions {
                if let Some((lo, hi)) = def.age {
                    if (lo..=hi).contains(&age) {
                        d.categories.insert(def.category.clone());
                    }
                }
            }
        }
    }
    Ok(out)
}
