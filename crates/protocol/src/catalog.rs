//! The stratified analyses of the catalog (everything that returns tables rather than one count):
//! their study-file form and its checks. Cohorts are named by id; `parse_study` puts each referenced
//! cohort's Circe expression into the analysis's `definitions`, so that every task is self-contained.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::study::{check_id, check_text, StudyError};

fn err(path: impl Into<String>, message: impl Into<String>) -> StudyError {
    StudyError {
        path: path.into(),
        message: message.into(),
    }
}

/// Achilles-style database characterization: a set of the catalog's Achilles analyses (all of them
/// when `analyses` is empty), each one table with its own run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Characterization {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Covariate prevalences and means in a cohort, at its index date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortCharacterization {
    pub id: String,
    pub cohort: String,
    /// Look-back window for condition and drug covariates, in days before the index date.
    #[serde(default = "default_window")]
    pub window_days: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_window() -> u32 {
    365
}

/// A person-level covariate for cross-tabulation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Covariate {
    /// `gender_concept_id`.
    Sex,
    /// Ten-year age group at the first observation period start.
    AgeGroup,
    RaceConceptId,
    EthnicityConceptId,
    /// Province (`location.state`) of the person's location.
    Province,
    /// Has any record of the concepts or their descendants (`yes`/`no`).
    Condition(Vec<i64>),
    Drug(Vec<i64>),
}

/// Persons by two covariates, with margins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossTab {
    pub id: String,
    pub rows: Covariate,
    pub cols: Covariate,
    /// Restrict to the persons of a cohort of the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The variable of a descriptive analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Variable {
    /// Age in years at the first observation period start (one value per person).
    Age,
    /// Length in days of each observation period.
    ObservationDays,
    /// `value_as_number` of each measurement record of the concept (no descendants).
    Measurement(i64),
}

/// Count, mean, SD, and quantiles from an exact fixed-width histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptive {
    pub id: String,
    pub variable: Variable,
    /// Histogram bin width; quantiles are exact to within one bin.
    pub bin_width: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    CohortStart,
    CohortEnd,
}

/// Time at risk relative to a cohort entry (OHDSI's convention: both ends inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeAtRisk {
    #[serde(default = "start")]
    pub start_anchor: Anchor,
    #[serde(default)]
    pub start_offset: i32,
    #[serde(default = "end")]
    pub end_anchor: Anchor,
    #[serde(default)]
    pub end_offset: i32,
}

fn start() -> Anchor {
    Anchor::CohortStart
}
fn end() -> Anchor {
    Anchor::CohortEnd
}

impl Default for TimeAtRisk {
    fn default() -> Self {
        TimeAtRisk {
            start_anchor: Anchor::CohortStart,
            start_offset: 0,
            end_anchor: Anchor::CohortEnd,
            end_offset: 0,
        }
    }
}

fn default_band() -> u32 {
    10
}
fn default_interval() -> u32 {
    30
}

/// Outcomes per 1,000 person-years in a target cohort, by age group and sex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidenceRate {
    pub id: String,
    pub target: String,
    pub outcome: String,
    #[serde(default)]
    pub tar: TimeAtRisk,
    /// Width of the age groups, in years.
    #[serde(default = "default_band")]
    pub age_band: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Survival without the outcome from the start of time at risk, pooled from per-site risk-set counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KaplanMeier {
    pub id: String,
    pub target: String,
    pub outcome: String,
    #[serde(default)]
    pub tar: TimeAtRisk,
    /// Event and censoring times are rounded up to this grid (1 gives the exact daily curve).
    #[serde(default = "default_interval")]
    pub interval_days: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Two exposure cohorts and one outcome: crude and age/sex-stratified (Mantel–Haenszel) rate ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparativeCohort {
    pub id: String,
    pub target: String,
    pub comparator: String,
    pub outcome: String,
    #[serde(default)]
    pub tar: TimeAtRisk,
    #[serde(default = "default_band")]
    pub age_band: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Achilles analysis ids this build implements (see `medfed_analysis::achilles`).
pub const ACHILLES_IDS: &[u32] = &[
    1, 2, 3, 4, 5, 10, 12, 101, 102, 103, 105, 108, 109, 111, 113, 200, 201, 202, 211, 400, 401,
    402, 404, 405, 600, 601, 602, 700, 701, 702, 800, 801, 1800, 1801, 1815, 2000,
];

pub(crate) fn check_concepts(ids: &[i64], path: &str) -> Result<(), StudyError> {
    if ids.is_empty() {
        return Err(err(path, "needs at least one concept id"));
    }
    if ids.len() > crate::study::MAX_CONCEPTS {
        return Err(err(
            path,
            format!(
                "{} concept ids; at most {}",
                ids.len(),
                crate::study::MAX_CONCEPTS
            ),
        ));
    }
    for (i, c) in ids.iter().enumerate() {
        if *c <= 0 || *c > i64::from(i32::MAX) {
            return Err(err(
                format!("{path}[{i}]"),
                format!("{c} is not a valid concept id (1..=2147483647)"),
            ));
        }
    }
    Ok(())
}

fn check_label(l: &Option<String>, path: &str) -> Result<(), StudyError> {
    match l {
        Some(l) => check_text(l, &format!("{path}.label")),
        None => Ok(()),
    }
}

fn check_covariate(c: &Covariate, path: &str) -> Result<(), StudyError> {
    match c {
        Covariate::Condition(ids) | Covariate::Drug(ids) => check_concepts(ids, path),
        _ => Ok(()),
    }
}

pub(crate) fn check_tar(t: &TimeAtRisk, path: &str) -> Result<(), StudyError> {
    const LIMIT: i32 = 36_500;
    if t.start_offset.abs() > LIMIT || t.end_offset.abs() > LIMIT {
        return Err(err(
            format!("{path}.tar"),
            format!("offsets must be within ±{LIMIT} days"),
        ));
    }
    if t.start_anchor == t.end_anchor && t.end_offset < t.start_offset {
        return Err(err(
            format!("{path}.tar"),
            "the time at risk ends before it starts",
        ));
    }
    Ok(())
}

fn check_band(b: u32, path: &str) -> Result<(), StudyError> {
    if !(1..=130).contains(&b) {
        return Err(err(format!("{path}.age_band"), "must be 1..=130 years"));
    }
    Ok(())
}

/// Check the fields of a catalog analysis that the types do not already guarantee.
pub(crate) fn check(spec: &crate::AnalysisSpec, path: &str) -> Result<(), StudyError> {
    use crate::AnalysisSpec as A;
    for c in spec.cohort_refs() {
        check_id(c, &format!("{path}: cohort"))?;
    }
    match spec {
        A::Characterization(c) => {
            for (i, a) in c.analyses.iter().enumerate() {
                if !ACHILLES_IDS.contains(a) {
                    return Err(err(
                        format!("{path}.analyses[{i}]"),
                        format!(
                            "Achilles analysis {a} is not in this build's catalog; known: {}",
                            ACHILLES_IDS
                                .iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            check_label(&c.label, path)
        }
        A::CohortCharacterization(c) => {
            if c.window_days > 36_500 {
                return Err(err(format!("{path}.window_days"), "at most 36500"));
            }
            check_label(&c.label, path)
        }
        A::CrossTab(c) => {
            check_covariate(&c.rows, &format!("{path}.rows"))?;
            check_covariate(&c.cols, &format!("{path}.cols"))?;
            if c.rows == c.cols {
                return Err(err(format!("{path}.cols"), "the same covariate as rows"));
            }
            check_label(&c.label, path)
        }
        A::Descriptive(d) => {
            if !(d.bin_width.is_finite() && d.bin_width > 0.0 && d.bin_width <= 1e9) {
                return Err(err(
                    format!("{path}.bin_width"),
                    "must be a positive number of at most 1e9",
                ));
            }
            if let Variable::Measurement(c) = d.variable {
                check_concepts(&[c], &format!("{path}.variable.measurement"))?;
            }
            check_label(&d.label, path)
        }
        A::IncidenceRate(r) => {
            check_tar(&r.tar, path)?;
            check_band(r.age_band, path)?;
            check_label(&r.label, path)
        }
        A::KaplanMeier(k) => {
            check_tar(&k.tar, path)?;
            if !(1..=3650).contains(&k.interval_days) {
                return Err(err(
                    format!("{path}.interval_days"),
                    "must be 1..=3650 days",
                ));
            }
            check_label(&k.label, path)
        }
        A::ComparativeCohort(c) => {
            check_tar(&c.tar, path)?;
            check_band(c.age_band, path)?;
            if c.target == c.comparator {
                return Err(err(
                    format!("{path}.comparator"),
                    "the comparator must differ from the target",
                ));
            }
            check_label(&c.label, path)
        }
        A::Regression(r) => crate::regression::check(r, path),
        A::Surveillance(s) => s.check(path),
        A::Gwas(g) => g.check(path),
        A::Beacon(b) => b.check(path),
        A::VehicleEvents(v) => v.check(path),
        A::PersonCount(_) | A::CohortCount(_) => Ok(()),
    }
}
