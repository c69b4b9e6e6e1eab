//! The study file, `medfed-study/1`: the public format researchers write and script against.
//!
//! Parsing is strict. Unknown fields, unknown analysis types, wrong types, oversized inputs and
//! free text that looks like SQL are refused with the JSON path of the offending element. The hub
//! runs this at submit time and every node runs it again on each task: a node trusts no study.
//! Identifiers are restricted to `[a-z][a-z0-9_]*` and every number is range-checked, so nothing a
//! study says can reach a query as text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::catalog::{
    Anchor, Characterization, CohortCharacterization, ComparativeCohort, Covariate, CrossTab,
    Descriptive, IncidenceRate, KaplanMeier, TimeAtRisk, Variable, ACHILLES_IDS,
};
pub use crate::regression::{
    Feature, FeatureKind, Level, MeasurementSpec, ModelOutcome, ModelStep, Regression, Window,
};

pub const FORMAT: &str = "medfed-study/1";
/// Largest accepted study file.
pub const MAX_STUDY_BYTES: usize = 1 << 20;
pub const MAX_ANALYSES: usize = 256;
pub const MAX_CONCEPTS: usize = 10_000;
pub const MAX_ID_LEN: usize = 64;
pub const MAX_TEXT_LEN: usize = 2_000;
/// Tasks live at most this long (30 days).
pub const MAX_TASK_TTL_S: u64 = 30 * 24 * 3600;

/// A refusal, with the JSON path of what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StudyError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> StudyError {
    StudyError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Study {
    pub format: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cohort definitions by id (`{"circe": {…}}`); used by the cohort analyses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cohorts: BTreeMap<String, Value>,
    pub analyses: Vec<AnalysisSpec>,
    pub privacy: StudyPrivacy,
    /// How long each task stays valid, in seconds (default one day).
    pub task_ttl_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyPrivacy {
    /// Sum the sites' statistics under secure aggregation (pairwise masks), so that the hub sees
    /// network totals only.
    #[serde(default)]
    pub secure_aggregation: bool,
    /// How long each secure-aggregation phase waits for the sites, in seconds; a site that has not
    /// answered by then has dropped out, and the round goes on without it (default 120).
    #[serde(default = "default_phase_timeout")]
    pub phase_timeout_s: u64,
}

fn default_phase_timeout() -> u64 {
    120
}

impl Default for StudyPrivacy {
    fn default() -> Self {
        StudyPrivacy {
            secure_aggregation: false,
            phase_timeout_s: default_phase_timeout(),
        }
    }
}

/// Analysis types this build knows (the privacy crate's catalog: each has a release rule). A study
/// naming any other type is refused.
pub const ANALYSIS_TYPES: &[&str] = medfed_privacy::CATALOG_TYPES;

/// One analysis of a study. Serialised with its `type` tag next to the other fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnalysisSpec {
    PersonCount(PersonCount),
    CohortCount(CohortCount),
    Characterization(Characterization),
    CohortCharacterization(CohortCharacterization),
    CrossTab(CrossTab),
    Descriptive(Descriptive),
    IncidenceRate(IncidenceRate),
    KaplanMeier(KaplanMeier),
    ComparativeCohort(ComparativeCohort),
    Regression(Regression),
    Surveillance(crate::surveil::Surveillance),
    Gwas(crate::gwas::Gwas),
    Beacon(crate::beacon::Beacon),
    VehicleEvents(crate::vehicles::VehicleEvents),
}

/// Distinct persons in a cohort of the study (a Circe definition), counted at each site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortCount {
    pub id: String,
    /// Id of a cohort in the study's `cohorts`.
    pub cohort: String,
    /// The cohort's Circe expression, put in by the hub from the study's `cohorts` so that each task
    /// is self-contained; a study does not write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The kinds of data a node answers from: a hospital's CDM store, or a vehicle service's events log.
pub const SOURCES: &[&str] = &["cdm", "vehicle_events"];

impl AnalysisSpec {
    /// The kind of data (one of [`SOURCES`]) a node must hold to answer this analysis; the hub sends
    /// its tasks only to nodes registered as serving it.
    pub fn source(&self) -> &'static str {
        match self {
            AnalysisSpec::VehicleEvents(_) => "vehicle_events",
            _ => "cdm",
        }
    }

    pub fn id(&self) -> &str {
        use AnalysisSpec as A;
        match self {
            A::PersonCount(p) => &p.id,
            A::CohortCount(c) => &c.id,
            A::Characterization(c) => &c.id,
            A::CohortCharacterization(c) => &c.id,
            A::CrossTab(c) => &c.id,
            A::Descriptive(d) => &d.id,
            A::IncidenceRate(r) => &r.id,
            A::KaplanMeier(k) => &k.id,
            A::ComparativeCohort(c) => &c.id,
            A::Regression(r) => &r.id,
            A::Surveillance(s) => &s.id,
            A::Gwas(g) => &g.id,
            A::Beacon(b) => &b.id,
            A::VehicleEvents(v) => &v.id,
        }
    }
    pub fn type_name(&self) -> &'static str {
        use AnalysisSpec as A;
        match self {
            A::PersonCount(_) => "person_count",
            A::CohortCount(_) => "cohort_count",
            A::Characterization(_) => "characterization",
            A::CohortCharacterization(_) => "cohort_characterization",
            A::CrossTab(_) => "cross_tab",
            A::Descriptive(_) => "descriptive",
            A::IncidenceRate(_) => "incidence_rate",
            A::KaplanMeier(_) => "kaplan_meier",
            A::ComparativeCohort(_) => "comparative_cohort",
            A::Regression(_) => "regression",
            A::Surveillance(_) => "surveillance",
            A::Gwas(_) => "gwas",
            A::Beacon(_) => "beacon",
            A::VehicleEvents(_) => "vehicle_events",
        }
    }

    /// Ids of the study cohorts this analysis uses (other than `cohort_count`'s own definition).
    pub fn cohort_refs(&self) -> Vec<&str> {
        use AnalysisSpec as A;
        match self {
            A::PersonCount(_)
            | A::CohortCount(_)
            | A::Characterization(_)
            | A::Surveillance(_)
            | A::Beacon(_)
            | A::VehicleEvents(_) => Vec::new(),
            A::CohortCharacterization(c) => vec![c.cohort.as_str()],
            A::CrossTab(c) => c.cohort.iter().map(String::as_str).collect(),
            A::Descriptive(d) => d.cohort.iter().map(String::as_str).collect(),
            A::IncidenceRate(r) => vec![r.target.as_str(), r.outcome.as_str()],
            A::KaplanMeier(k) => vec![k.target.as_str(), k.outcome.as_str()],
            A::ComparativeCohort(c) => {
                vec![c.target.as_str(), c.comparator.as_str(), c.outcome.as_str()]
            }
            A::Regression(r) => r.cohort_refs(),
            A::Gwas(g) => g.cohort_refs(),
        }
    }

    /// The Circe definitions carried by the task, by cohort id.
    pub fn definitions(&self) -> Option<&BTreeMap<String, Value>> {
        use AnalysisSpec as A;
        match self {
            A::PersonCount(_)
            | A::CohortCount(_)
            | A::Characterization(_)
            | A::Surveillance(_)
            | A::Beacon(_)
            | A::VehicleEvents(_) => None,
            A::CohortCharacterization(c) => Some(&c.definitions),
            A::CrossTab(c) => Some(&c.definitions),
            A::Descriptive(d) => Some(&d.definitions),
            A::IncidenceRate(r) => Some(&r.definitions),
            A::KaplanMeier(k) => Some(&k.definitions),
            A::ComparativeCohort(c) => Some(&c.definitions),
            A::Regression(r) => Some(&r.definitions),
            A::Gwas(g) => Some(&g.definitions),
        }
    }

    fn definitions_mut(&mut self) -> Option<&mut BTreeMap<String, Value>> {
        use AnalysisSpec as A;
        match self {
            A::PersonCount(_)
            | A::CohortCount(_)
            | A::Characterization(_)
            | A::Surveillance(_)
            | A::Beacon(_)
            | A::VehicleEvents(_) => None,
            A::CohortCharacterization(c) => Some(&mut c.definitions),
            A::CrossTab(c) => Some(&mut c.definitions),
            A::Descriptive(d) => Some(&mut d.definitions),
            A::IncidenceRate(r) => Some(&mut r.definitions),
            A::KaplanMeier(k) => Some(&mut k.definitions),
            A::ComparativeCohort(c) => Some(&mut c.definitions),
            A::Regression(r) => Some(&mut r.definitions),
            A::Gwas(g) => Some(&mut g.definitions),
        }
    }
}

/// The CDM domain a concept set is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Condition,
    Drug,
    Measurement,
    Observation,
    Procedure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

impl Sex {
    /// OMOP gender concept.
    pub fn concept_id(self) -> i64 {
        match self {
            Sex::Female => 8532,
            Sex::Male => 8507,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeRange {
    #[serde(default)]
    pub min: u32,
    #[serde(default = "max_age")]
    pub max: u32,
}

fn max_age() -> u32 {
    130
}
fn yes() -> bool {
    true
}

/// Distinct persons with at least one record of a concept set (with descendants, through
/// `concept_ancestor`), optionally restricted by age at the first such record and by sex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonCount {
    pub id: String,
    pub domain: Domain,
    pub concepts: Vec<i64>,
    #[serde(default = "yes")]
    pub descendants: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sex: Vec<Sex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl<'de> Deserialize<'de> for AnalysisSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_analysis(&v, "analysis").map_err(serde::de::Error::custom)
    }
}

/// Parse and check one analysis object; `path` names it in errors.
pub fn parse_analysis(v: &Value, path: &str) -> Result<AnalysisSpec, StudyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, "an analysis must be an object"))?;
    let ty = obj
        .get("type")
        .ok_or_else(|| err(path, "missing \"type\""))?
        .as_str()
        .ok_or_else(|| err(format!("{path}.type"), "must be a string"))?;
    let mut rest = obj.clone();
    rest.remove("type");
    let rest = Value::Object(rest);
    fn de<T: serde::de::DeserializeOwned>(v: Value, path: &str) -> Result<T, StudyError> {
        serde_json::from_value(v).map_err(|e| err(path, e.to_string()))
    }
    use AnalysisSpec as A;
    let spec = match ty {
        "person_count" => A::PersonCount(de(rest, path)?),
        "cohort_count" => A::CohortCount(de(rest, path)?),
        "characterization" => A::Characterization(de(rest, path)?),
        "cohort_characterization" => A::CohortCharacterization(de(rest, path)?),
        "cross_tab" => A::CrossTab(de(rest, path)?),
        "descriptive" => A::Descriptive(de(rest, path)?),
        "incidence_rate" => A::IncidenceRate(de(rest, path)?),
        "kaplan_meier" => A::KaplanMeier(de(rest, path)?),
        "comparative_cohort" => A::ComparativeCohort(de(rest, path)?),
        "regression" => A::Regression(de(rest, path)?),
        "surveillance" => A::Surveillance(de(rest, path)?),
        "gwas" => A::Gwas(de(rest, path)?),
        "beacon" => A::Beacon(de(rest, path)?),
        "vehicle_events" => A::VehicleEvents(de(rest, path)?),
        other => {
            return Err(err(
                format!("{path}.type"),
                format!(
                    "unknown analysis type {:?}; this build knows: {}",
                    truncate(other),
                    ANALYSIS_TYPES.join(", ")
                ),
            ))
        }
    };
    check_analysis(&spec, path)?;
    Ok(spec)
}

fn check_analysis(spec: &AnalysisSpec, path: &str) -> Result<(), StudyError> {
    check_id(spec.id(), &format!("{path}.id"))?;
    match spec {
        AnalysisSpec::CohortCount(c) => {
            check_id(&c.cohort, &format!("{path}.cohort"))?;
            if let Some(l) = &c.label {
                check_text(l, &format!("{path}.label"))?;
            }
            if let Some(d) = &c.definition {
                if !d.is_object() {
                    return Err(err(
                        format!("{path}.definition"),
                        "must be a Circe cohort object",
                    ));
                }
            }
        }
        AnalysisSpec::PersonCount(p) => {
            crate::catalog::check_concepts(&p.concepts, &format!("{path}.concepts"))?;
            if let Some(a) = p.age {
                if a.min > a.max || a.max > 130 {
                    return Err(err(
                        format!("{path}.age"),
                        format!("{}..{} is not an age range within 0..130", a.min, a.max),
                    ));
                }
            }
            if let Some(l) = &p.label {
                check_text(l, &format!("{path}.label"))?;
            }
        }
        AnalysisSpec::Surveillance(s) => s.check(path)?,
        AnalysisSpec::Gwas(g) => g.check(path)?,
        AnalysisSpec::Beacon(b) => b.check(path)?,
        other => crate::catalog::check(other, path)?,
    }
    Ok(())
}

/// Parse and check a whole study file.
pub fn parse_study(text: &str) -> Result<Study, StudyError> {
    if text.len() > MAX_STUDY_BYTES {
        return Err(err(
            "$",
            format!("study is {} bytes; at most {MAX_STUDY_BYTES}", text.len()),
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| err("$", format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err("$", "a study must be a JSON object"))?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "format" | "name" | "description" | "cohorts" | "analyses" | "privacy" | "task_ttl_s"
        ) {
            return Err(err(format!("$.{}", truncate(k)), "unknown field"));
        }
    }
    let format = obj
        .get("format")
        .and_then(Value::as_str)
        .ok_or_else(|| err("$.format", format!("must be \"{FORMAT}\"")))?;
    if format != FORMAT {
        return Err(err(
            "$.format",
            format!(
                "{:?} is not supported; expected \"{FORMAT}\"",
                truncate(format)
            ),
        ));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err("$.name", "must be a string"))?;
    check_text(name, "$.name")?;
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_text(s, "$.description")?;
            Some(s.clone())
        }
        Some(_) => return Err(err("$.description", "must be a string")),
    };
    let mut cohorts = BTreeMap::new();
    if let Some(c) = obj.get("cohorts") {
        let c = c
            .as_object()
            .ok_or_else(|| err("$.cohorts", "must be an object of cohort id → definition"))?;
        for (id, def) in c {
            let p = format!("$.cohorts.{}", truncate(id));
            check_id(id, &p)?;
            let d = def
                .as_object()
                .ok_or_else(|| err(&p, "must be an object"))?;
            if d.len() != 1 || !d.get("circe").is_some_and(Value::is_object) {
                return Err(err(
                    &p,
                    "must be {\"circe\": {…}} (a \"file\" reference is inlined by `study submit`)",
                ));
            }
            cohorts.insert(id.clone(), def.clone());
        }
    }
    let list = obj
        .get("analyses")
        .and_then(Value::as_array)
        .ok_or_else(|| err("$.analyses", "must be a list"))?;
    if list.is_empty() {
        return Err(err("$.analyses", "needs at least one analysis"));
    }
    if list.len() > MAX_ANALYSES {
        return Err(err(
            "$.analyses",
            format!("{} analyses; at most {MAX_ANALYSES}", list.len()),
        ));
    }
    let mut analyses = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for (i, a) in list.iter().enumerate() {
        let mut spec = parse_analysis(a, &format!("$.analyses[{i}]"))?;
        if let AnalysisSpec::CohortCount(c) = &mut spec {
            // The task carries the definition itself, so that a node needs nothing but the task.
            let def = cohorts
                .get(&c.cohort)
                .and_then(|d| d.get("circe"))
                .ok_or_else(|| {
                    err(
                        format!("$.analyses[{i}].cohort"),
                        format!("no cohort {:?} in $.cohorts", c.cohort),
                    )
                })?;
            c.definition = Some(def.clone());
        }
        let refs: Vec<String> = spec.cohort_refs().iter().map(|s| s.to_string()).collect();
        for r in refs {
            let def = cohorts
                .get(&r)
                .and_then(|d| d.get("circe"))
                .ok_or_else(|| {
                    err(
                        format!("$.analyses[{i}]"),
                        format!("no cohort {r:?} in $.cohorts"),
                    )
                })?
                .clone();
            if let Some(defs) = spec.definitions_mut() {
                defs.insert(r, def);
            }
        }
        if !seen.insert(spec.id().to_string()) {
            return Err(err(
                format!("$.analyses[{i}].id"),
                format!("duplicate analysis id {:?}", spec.id()),
            ));
        }
        analyses.push(spec);
    }
    let privacy: StudyPrivacy = match obj.get("privacy") {
        None => StudyPrivacy::default(),
        Some(p) => {
            serde_json::from_value(p.clone()).map_err(|e| err("$.privacy", e.to_string()))?
        }
    };
    if privacy.secure_aggregation {
        // Only the regression rounds are added under secure aggregation in this build; a study that
        // asks for it must not have other analyses released site by site without noticing.
        if let Some((i, a)) = analyses.iter().enumerate().find(|(_, a)| {
            !matches!(
                a,
                AnalysisSpec::Regression(_) | AnalysisSpec::Surveillance(_)
            )
        }) {
            return Err(err(
                format!("$.analyses[{i}]"),
                format!(
                    "{} would be released site by site: secure aggregation covers regression and surveillance analyses only in this build",
                    a.type_name()
                ),
            ));
        }
        if !(5..=3600).contains(&privacy.phase_timeout_s) {
            return Err(err("$.privacy.phase_timeout_s", "must be 5..=3600 seconds"));
        }
    }
    let task_ttl_s = match obj.get("task_ttl_s") {
        None => 24 * 3600,
        Some(v) => match v.as_u64() {
            Some(t) if (1..=MAX_TASK_TTL_S).contains(&t) => t,
            _ => {
                return Err(err(
                    "$.task_ttl_s",
                    format!("must be an integer number of seconds in 1..={MAX_TASK_TTL_S}"),
                ))
            }
        },
    };
    Ok(Study {
        format: FORMAT.to_string(),
        name: name.to_string(),
        description,
        cohorts,
        analyses,
        privacy,
        task_ttl_s,
    })
}

/// Identifiers: `[a-z][a-z0-9_]{0,63}`.
pub fn check_id(id: &str, path: &str) -> Result<(), StudyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(err(
            path,
            format!(
                "{:?} is not an identifier: use a lower-case letter, then letters, digits or _ (at most {MAX_ID_LEN})",
                truncate(id)
            ),
        ))
    }
}

/// Free text (names, labels): bounded, printable, and nothing that looks like SQL. Free text is never
/// put into a query, but a study that tries is hostile and is refused as such.
pub fn check_text(s: &str, path: &str) -> Result<(), StudyError> {
    if s.chars().count() > MAX_TEXT_LEN {
        return Err(err(path, format!("longer than {MAX_TEXT_LEN} characters")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(err(path, "contains control characters"));
    }
    if looks_like_sql(s) {
        return Err(err(path, "looks like SQL; studies carry no query text"));
    }
    Ok(())
}

/// Statement separators, comments, and keyword pairs that only occur in SQL.
pub fn looks_like_sql(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if l.contains(';') || l.contains("--") || l.contains("/*") || l.contains("*/") {
        return true;
    }
    let words: Vec<&str> = l
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect();
    let pairs = [
        ("select", "from"),
        ("union", "select"),
        ("drop", "table"),
        ("delete", "from"),
        ("insert", "into"),
        ("update", "set"),
        ("alter", "table"),
        ("create", "table"),
        ("or", "1"),
    ];
    pairs.iter().any(|(a, b)| {
        words
            .iter()
            .position(|w| w == a)
            .is_some_and(|i| words[i + 1..].contains(b))
    }) || l.contains("' or ")
        || l.contains("or '1'='1")
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(analyses: &str) -> String {
        format!(r#"{{"format":"medfed-study/1","name":"t","analyses":{analyses}}}"#)
    }

    #[test]
    fn parses_a_study_and_round_trips_analyses() {
        let s = parse_study(&study(
            r#"[{"id":"n_t2d","type":"person_count","domain":"condition","concepts":[201826],
                 "age":{"min":30},"sex":["female"]}]"#,
        ))
        .unwrap();
        assert_eq!(s.analyses.len(), 1);
        let j = serde_json::to_value(&s.analyses[0]).unwrap();
        assert_eq!(j["type"], "person_count");
        let back: AnalysisSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, s.analyses[0]);
        assert_eq!(s.task_ttl_s, 86400);
    }

    #[test]
    fn hostile_and_malformed_studies_are_refused_with_a_path() {
        let cases = [
            (
                study(r#"[{"id":"x","type":"rows","table":"person"}]"#),
                "$.analyses[0].type",
            ),
            (
                study(
                    r#"[{"id":"x","type":"person_count","domain":"condition","concepts":["1"]}]"#,
                ),
                "$.analyses[0]",
            ),
            (
                study(
                    r#"[{"id":"x; DROP TABLE person","type":"person_count","domain":"condition","concepts":[1]}]"#,
                ),
                "$.analyses[0].id",
            ),
            (
                study(r#"[{"id":"x","type":"person_count","domain":"condition","concepts":[-4]}]"#),
                "$.analyses[0].concepts[0]",
            ),
            (
                study(
                    r#"[{"id":"x","type":"person_count","domain":"condition","concepts":[1],"sql":"SELECT 1"}]"#,
                ),
                "$.analyses[0]",
            ),
            (
                study(r#"[{"id":"x","type":"person_count","domain":"person","concepts":[1]}]"#),
                "$.analyses[0]",
            ),
            (
                study(
                    r#"[{"id":"x","type":"person_count","domain":"condition","concepts":[1],"age":{"min":50,"max":20}}]"#,
                ),
                "$.analyses[0].age",
            ),
            (study("[]"), "$.analyses"),
            (
                r#"{"format":"medfed-study/1","name":"x' OR '1'='1","analyses":[]}"#.to_string(),
                "$.name",
            ),
            (
                r#"{"format":"medfed-study/1","name":"a; select * from person","analyses":[]}"#
                    .to_string(),
                "$.name",
            ),
            (
                r#"{"format":"medfed-study/2","name":"a","analyses":[]}"#.to_string(),
                "$.format",
            ),
            (
                r#"{"format":"medfed-study/1","name":"a","analyses":[],"extra":1}"#.to_string(),
                "$.extra",
            ),
            (
                study(&format!(
                    "[{}]",
                    [r#"{"id":"a","type":"person_count","domain":"drug","concepts":[1]}"#; 2]
                        .join(",")
                )),
                "$.analyses[1].id",
            ),
            (
                study(&format!(
                    r#"[{{"id":"a","type":"person_count","domain":"drug","concepts":[{}]}}]"#,
                    vec!["1"; MAX_CONCEPTS + 1].join(",")
                )),
                "$.analyses[0].concepts",
            ),
            (" ".repeat(MAX_STUDY_BYTES + 1), "$"),
        ];
        for (text, path) in cases {
            let e = parse_study(&text).expect_err(&text[..text.len().min(120)]);
            assert_eq!(e.path, path, "{e}");
        }
        assert!(!looks_like_sql("Crohn's disease in adults 40-60"));
        assert!(looks_like_sql("union all select password from users"));
    }
}

#[cfg(test)]
mod example_tests {
    /// Every example study in the repository parses.
    #[test]
    fn example_studies_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/studies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                let mut v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                // Inline `{"file": …}` cohorts as `study submit` does.
                if let Some(cs) = v.get_mut("cohorts").and_then(|c| c.as_object_mut()) {
                    for def in cs.values_mut() {
                        if let Some(f) = def.get("file").and_then(|f| f.as_str()) {
                            let c: serde_json::Value = serde_json::from_str(
                                &std::fs::read_to_string(dir.join(f)).unwrap(),
                            )
                            .unwrap();
                            *def = serde_json::json!({ "circe": c });
                        }
                    }
                }
                let text = v.to_string();
                super::parse_study(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }
}
