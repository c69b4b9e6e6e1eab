//! The `regression` analysis: an exact federated GLM or Cox model over a covariate spec, fitted by the
//! hub in rounds (`medfed-study/1`).
//!
//! The design matrix is defined here, not at the sites: [`Regression::columns`] lists its columns in
//! order (the intercept, then each covariate; a categorical covariate contributes one indicator per
//! declared level, the reference level none), so every site encodes the same way and the hub knows the
//! number of parameters before any site answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use medfed_model::Family;

use crate::catalog::{check_concepts, TimeAtRisk};
use crate::study::{check_id, check_text, StudyError};

fn err(path: impl Into<String>, message: impl Into<String>) -> StudyError {
    StudyError {
        path: path.into(),
        message: message.into(),
    }
}

/// Most covariates in one model, and most levels of one categorical covariate.
pub const MAX_COVARIATES: usize = 200;
pub const MAX_LEVELS: usize = 50;
/// Most Newton rounds a study may ask for.
pub const MAX_ITERATIONS: u32 = 100;
/// Bins of the risk histograms of an evaluation round (predicted risk in [0, 1]).
pub const RISK_BINS: usize = 100;

/// A regression model of an outcome on covariates measured at each person's index date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    pub id: String,
    pub family: Family,
    /// The population: a study cohort. Each person's first entry is the index date.
    pub population: String,
    pub outcome: ModelOutcome,
    /// When the outcome counts, relative to the population entry (and never past the end of the
    /// observation period).
    #[serde(default)]
    pub tar: TimeAtRisk,
    pub covariates: Vec<Feature>,
    #[serde(default = "yes")]
    pub intercept: bool,
    /// L2 penalty λ on every coefficient but the intercept (0: plain maximum likelihood).
    #[serde(default)]
    pub l2: f64,
    #[serde(default = "default_iterations")]
    pub max_iterations: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_iterations() -> u32 {
    25
}

/// What the model predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelOutcome {
    /// A study cohort. Binomial: 1 when the person enters it during the time at risk. Poisson: the
    /// number of entries during the time at risk, with log person-years as the offset. Cox: days from
    /// the start of the time at risk to the first entry, censored at its end.
    Cohort(String),
    /// Gaussian: the latest value of a measurement during the time at risk (persons without one are
    /// left out and counted).
    Measurement(MeasurementSpec),
}

/// A measurement's value, harmonised to one unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementSpec {
    /// Measurement concepts (no descendants: lab codes are leaves).
    pub concepts: Vec<i64>,
    /// Factor that converts a value recorded in this unit (`unit_concept_id`, as a string key) into
    /// the model's unit. A value in a unit not listed is treated as missing, unless `units` is empty
    /// (then every value is taken as it is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, f64>,
}

/// A window of days relative to the index date, both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: i32,
    pub end: i32,
}

/// One covariate of the model: `{"name": …, "kind": …, <the kind's fields>}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

impl<'de> Deserialize<'de> for Feature {
    // By hand: serde's `flatten` cannot refuse unknown fields, and a misspelt field must not be
    // silently ignored.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut m = serde_json::Map::deserialize(d)?;
        let name = match m.remove("name") {
            Some(Value::String(s)) => s,
            _ => return Err(D::Error::custom("a covariate needs a \"name\" string")),
        };
        let kind = serde_json::from_value(Value::Object(m)).map_err(D::Error::custom)?;
        Ok(Feature { name, kind })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureKind {
    /// Years: the index year minus the year of birth (Circe's and the OHDSI tools' convention).
    Age,
    /// 1 for male (8507), 0 for female (8532); persons recorded otherwise are left out and counted.
    Male,
    /// The latest value in the window (ties on the same day: the largest measurement id).
    Measurement {
        concepts: Vec<i64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        units: BTreeMap<String, f64>,
        window: Window,
    },
    /// The latest `value_as_concept_id` of an observation in the window, as indicators of the declared
    /// levels; a value in no level is the reference. Without any record the person is left out,
    /// unless `missing_is_reference`.
    Category {
        concepts: Vec<i64>,
        window: Window,
        levels: Vec<Level>,
        #[serde(default)]
        missing_is_reference: bool,
    },
    /// 1 when the person has a condition record of the concepts (or their descendants) in the window.
    Condition { concepts: Vec<i64>, window: Window },
    /// 1 when the person has a drug exposure of the concepts (or their descendants) starting in the
    /// window.
    Drug { concepts: Vec<i64>, window: Window },
    /// Copies of the counted allele (A1) of a variant in the site's PLINK genotypes
    /// (`genotypes/site.bed`, sample id = person_id); persons not genotyped, or with a missing call,
    /// are left out.
    Genotype { variant: String },
}

impl FeatureKind {
    /// The measurement a `measurement` covariate reads.
    pub fn measurement(&self) -> Option<MeasurementSpec> {
        match self {
            FeatureKind::Measurement {
                concepts, units, ..
            } => Some(MeasurementSpec {
                concepts: concepts.clone(),
                units: units.clone(),
            }),
            _ => None,
        }
    }
}

/// A level of a categorical covariate and the value concepts that make it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub name: String,
    pub values: Vec<i64>,
}

impl Regression {
    /// Names of the design matrix's columns, in order: `(intercept)` when there is one, then each
    /// covariate (`name[level]` for the levels of a categorical one). Cox models have no intercept.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.has_intercept() {
            out.push("(intercept)".to_string());
        }
        for f in &self.covariates {
            match &f.kind {
                FeatureKind::Category { levels, .. } => {
                    out.extend(levels.iter().map(|l| format!("{}[{}]", f.name, l.name)))
                }
                _ => out.push(f.name.clone()),
            }
        }
        out
    }

    pub fn has_intercept(&self) -> bool {
        self.intercept && self.family != Family::Cox
    }

    /// The study cohorts the model reads: the population, then the outcome cohort if any.
    pub fn cohort_refs(&self) -> Vec<&str> {
        let mut v = vec![self.population.as_str()];
        if let ModelOutcome::Cohort(c) = &self.outcome {
            v.push(c.as_str());
        }
        v
    }
}

/// What a round asks of a site, carried by its task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelStep {
    /// The site's score, information, deviance and log-likelihood at these coefficients.
    Sums { coefficients: Vec<f64> },
    /// Histograms of predicted risk at these coefficients by outcome (binomial models), for
    /// discrimination and calibration without pooling rows.
    Evaluate { coefficients: Vec<f64> },
    /// A `gwas` analysis: the site's genotype panel (its `.bim` variant list), which every site must
    /// share.
    GwasPanel,
    /// A `gwas` analysis: the genotype tables (12 counts a variant) of variants
    /// `first..first + count` of the panel.
    GwasTables { first: u32, count: u32 },
    /// A `gwas` analysis: regression sums of variants `first..first + count`. Linear: least-squares
    /// sums (`coefficients` empty). Logistic: the sums at `coefficients[i]` for variant `first + i`;
    /// an empty entry means the variant needs none (converged or given up).
    GwasFit {
        first: u32,
        count: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        coefficients: Vec<Vec<f64>>,
    },
    /// Secure aggregation of one round's sums (Bonawitz et al. 2017), phase 1: the site computes its
    /// sums at these coefficients and releases them to itself through its policy; if they pass, it
    /// advertises fresh X25519 keys for the session as participant `id`.
    SecaggKeys {
        coefficients: Vec<f64>,
        /// 32 random bytes, hex: binds every key, share and mask to this aggregation.
        session: String,
        id: u32,
        threshold: u32,
        /// For a `surveillance` analysis: the days (first, last, `YYYY-MM-DD`) whose counts this
        /// aggregation adds; `coefficients` is then empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        days: Option<(String, String)>,
    },
    /// Phase 2: every participant's keys; the site secret-shares its mask key and self-mask seed
    /// among them, each share sealed for its recipient.
    SecaggShares {
        session: String,
        adverts: Vec<medfed_secagg::Advert>,
    },
    /// Phase 3: the shares sealed for this site; it sends its sums, fixed-point encoded and masked.
    SecaggMasked {
        session: String,
        shares: Vec<medfed_secagg::Sealed>,
        /// Participants whose shares the hub received (the masks are agreed among them).
        sharers: Vec<u32>,
        frac_bits: u32,
        /// Integer counts: one ring word per value (`FixedPoint` with no fraction bits) instead of
        /// the two-word encoding of model sums.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        integer: bool,
    },
    /// Phase 4: who sent a masked vector and who dropped out; the site reveals, per participant, the
    /// share of its self-mask seed (survivors) or of its mask key (dropped), never both.
    SecaggUnmask {
        session: String,
        survivors: Vec<u32>,
        dropped: Vec<u32>,
    },
}

impl ModelStep {
    /// The coefficients a step evaluates the model at (`None` for the later secure-aggregation
    /// phases, which carry protocol messages only).
    pub fn coefficients(&self) -> Option<&[f64]> {
        match self {
            ModelStep::Sums { coefficients }
            | ModelStep::Evaluate { coefficients }
            | ModelStep::SecaggKeys { coefficients, .. } => Some(coefficients),
            _ => None,
        }
    }

    /// The secure-aggregation session of a phase step.
    pub fn session(&self) -> Option<&str> {
        match self {
            ModelStep::SecaggKeys { session, .. }
            | ModelStep::SecaggShares { session, .. }
            | ModelStep::SecaggMasked { session, .. }
            | ModelStep::SecaggUnmask { session, .. } => Some(session),
            _ => None,
        }
    }
}

/// What a site sends in a secure-aggregation phase: keys, sealed shares, its masked sums, or the
/// shares it reveals. None of it is a statistic: the masked sums are a `Released` vector masked by
/// `Released::mask`, uniform to anyone without the other sites' masks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecaggMessage {
    Keys { advert: medfed_secagg::Advert },
    Shares { sealed: Vec<medfed_secagg::Sealed> },
    Masked { masked: medfed_privacy::Masked },
    Unmask { reveals: Vec<medfed_secagg::Reveal> },
}

fn check_window(w: &Window, path: &str) -> Result<(), StudyError> {
    const LIMIT: i32 = 36_500;
    if w.start.abs() > LIMIT || w.end.abs() > LIMIT || w.end < w.start {
        return Err(err(
            format!("{path}.window"),
            format!("must be start <= end, both within ±{LIMIT} days"),
        ));
    }
    Ok(())
}

fn check_measurement(m: &MeasurementSpec, path: &str) -> Result<(), StudyError> {
    check_concepts(&m.concepts, &format!("{path}.concepts"))?;
    for (k, f) in &m.units {
        let ok = k
            .parse::<i64>()
            .is_ok_and(|c| c > 0 && c <= i64::from(i32::MAX));
        if !ok {
            return Err(err(
                format!("{path}.units"),
                format!("{k:?} is not a unit concept id"),
            ));
        }
        if !(f.is_finite() && *f > 0.0 && *f < 1e9) {
            return Err(err(
                format!("{path}.units.{k}"),
                "must be a positive finite factor",
            ));
        }
    }
    Ok(())
}

/// Check what the types do not: identifiers, concept ids, windows, sizes and the fit's settings.
pub(crate) fn check(r: &Regression, path: &str) -> Result<(), StudyError> {
    if let Some(l) = &r.label {
        check_text(l, &format!("{path}.label"))?;
    }
    if r.covariates.is_empty() {
        return Err(err(
            format!("{path}.covariates"),
            "needs at least one covariate",
        ));
    }
    if r.covariates.len() > MAX_COVARIATES {
        return Err(err(
            format!("{path}.covariates"),
            format!(
                "{} covariates; at most {MAX_COVARIATES}",
                r.covariates.len()
            ),
        ));
    }
    if !(r.l2.is_finite() && r.l2 >= 0.0 && r.l2 <= 1e9) {
        return Err(err(format!("{path}.l2"), "must be a finite number >= 0"));
    }
    if !(1..=MAX_ITERATIONS).contains(&r.max_iterations) {
        return Err(err(
            format!("{path}.max_iterations"),
            format!("must be 1..={MAX_ITERATIONS}"),
        ));
    }
    crate::catalog::check_tar(&r.tar, path)?;
    match (&r.outcome, r.family) {
        (ModelOutcome::Cohort(_), Family::Gaussian) => {
            return Err(err(
                format!("{path}.outcome"),
                "a gaussian model needs a measurement outcome",
            ))
        }
        (ModelOutcome::Measurement(_), f) if f != Family::Gaussian => {
            return Err(err(
                format!("{path}.outcome"),
                "a measurement outcome needs the gaussian family",
            ))
        }
        (ModelOutcome::Measurement(m), _) => {
            check_measurement(m, &format!("{path}.outcome.measurement"))?
        }
        (ModelOutcome::Cohort(c), _) => check_id(c, &format!("{path}.outcome.cohort"))?,
    }
    let mut names = std::collections::HashSet::new();
    for (i, f) in r.covariates.iter().enumerate() {
        let p = format!("{path}.covariates[{i}]");
        check_id(&f.name, &format!("{p}.name"))?;
        if !names.insert(f.name.as_str()) {
            return Err(err(
                format!("{p}.name"),
                format!("duplicate covariate {:?}", f.name),
            ));
        }
        match &f.kind {
            FeatureKind::Age | FeatureKind::Male => {}
            FeatureKind::Measurement { window, .. } => {
                check_measurement(&f.kind.measurement().unwrap_or_default(), &p)?;
                check_window(window, &p)?;
            }
            FeatureKind::Category {
                concepts,
                window,
                levels,
                ..
            } => {
                check_concepts(concepts, &format!("{p}.concepts"))?;
                check_window(window, &p)?;
                if levels.is_empty() || levels.len() > MAX_LEVELS {
                    return Err(err(
                        format!("{p}.levels"),
                        format!("needs 1..={MAX_LEVELS} levels besides the reference"),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for (j, l) in levels.iter().enumerate() {
                    check_id(&l.name, &format!("{p}.levels[{j}].name"))?;
                    check_concepts(&l.values, &format!("{p}.levels[{j}].values"))?;
                    for v in &l.values {
                        if !seen.insert(*v) {
                            return Err(err(
                                format!("{p}.levels[{j}].values"),
                                format!("value concept {v} is in two levels"),
                            ));
                        }
                    }
                }
            }
            FeatureKind::Condition { concepts, window }
            | FeatureKind::Drug { concepts, window } => {
                check_concepts(concepts, &format!("{p}.concepts"))?;
                check_window(window, &p)?;
            }
            FeatureKind::Genotype { variant } => {
                let ok = !variant.is_empty()
                    && variant.len() <= 64
                    && variant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c));
                if !ok {
                    return Err(err(
                        format!("{p}.variant"),
                        "a variant id of up to 64 letters, digits and _ : . -",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<crate::AnalysisSpec, StudyError> {
        crate::study::parse_analysis(&v, "$.analyses[0]")
    }

    #[test]
    fn columns_follow_the_spec_with_fixed_dummy_coding() {
        let a = parse(serde_json::json!({
            "type": "regression", "id": "t2d", "family": "binomial", "population": "pop",
            "outcome": {"cohort": "t2d"},
            "covariates": [
                {"name": "age", "kind": "age"},
                {"name": "smoking", "kind": "category", "concepts": [43054909], "window": {"start": -365, "end": 0},
                 "levels": [{"name": "current", "values": [4298794]}, {"name": "former", "values": [4310250]}]},
                {"name": "glucose", "kind": "measurement", "concepts": [3004501], "units": {"8840": 1.0, "8753": 18.016},
                 "window": {"start": -365, "end": 0}}
            ]
        }))
        .unwrap();
        let crate::AnalysisSpec::Regression(r) = a else {
            panic!()
        };
        assert_eq!(
            r.columns(),
            [
                "(intercept)",
                "age",
                "smoking[current]",
                "smoking[former]",
                "glucose"
            ]
        );
        assert_eq!(r.cohort_refs(), ["pop", "t2d"]);
    }

    #[test]
    fn bad_specs_are_refused_with_a_path() {
        let base = serde_json::json!({
            "type": "regression", "id": "m", "family": "binomial", "population": "pop",
            "outcome": {"cohort": "o"}, "covariates": [{"name": "age", "kind": "age"}]
        });
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            parse(b).unwrap_err().to_string()
        };
        assert!(with("l2", serde_json::json!(-1.0)).contains("$.analyses[0].l2"));
        assert!(with("max_iterations", serde_json::json!(0)).contains("max_iterations"));
        assert!(with("family", serde_json::json!("gaussian")).contains("measurement outcome"));
        assert!(with("covariates", serde_json::json!([])).contains("at least one"));
        let e = with(
            "covariates",
            serde_json::json!([{"name": "age", "kind": "age"}, {"name": "age", "kind": "male"}]),
        );
        assert!(
            e.contains("covariates[1].name") && e.contains("duplicate"),
            "{e}"
        );
        let e = with(
            "covariates",
            serde_json::json!([{"name": "x", "kind": "condition", "concepts": [1], "window": {"start": 0, "end": -5}}]),
        );
        assert!(e.contains("covariates[0].window"), "{e}");
        let e = with(
            "covariates",
            serde_json::json!([{"name": "s", "kind": "category", "concepts": [1], "window": {"start": -1, "end": 0},
                "levels": [{"name": "a", "values": [5]}, {"name": "b", "values": [5]}]}]),
        );
        assert!(
            e.contains("levels[1].values") && e.contains("two levels"),
            "{e}"
        );
        let e = with(
            "covariates",
            serde_json::json!([{"name": "g", "kind": "measurement", "concepts": [1], "units": {"mg": 1.0},
                "window": {"start": -1, "end": 0}}]),
        );
        assert!(e.contains("covariates[0].units"), "{e}");
        let e = with(
            "covariates",
            serde_json::json!([{"name": "DROP TABLE", "kind": "age"}]),
        );
        assert!(e.contains("covariates[0].name"), "{e}");
    }
}
