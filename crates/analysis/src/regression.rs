//! The `regression` analysis at a site: the design matrix from the covariate spec ([`extract`]) and
//! each round's local step ([`local_step`]): the model's sums at the hub's coefficients, or risk
//! histograms for evaluation. The rows never leave the node; what leaves goes through
//! `medfed_privacy::release` like every other statistic.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use medfed_engine::SiteEngine;
use medfed_model::{Family, ModelError, Rows, SiteSums};
use medfed_privacy::{Measure, Policy, SiteStatistic, Table};
use medfed_protocol::study::{
    AnalysisSpec, FeatureKind, MeasurementSpec, ModelOutcome, ModelStep, Regression, Window,
};

use crate::local::{expand, AnalysisError};
use crate::tables::{
    entries, first_outcome, i64_column, outcome_days, shape, time_at_risk, year_of,
};

/// A site's rows for one model. Person-level: it never leaves the node.
#[derive(Clone, Debug, Default)]
pub struct Design {
    pub columns: Vec<String>,
    /// Row-major, `columns.len()` values per row.
    pub x: Vec<f64>,
    /// Outcome (GLM families), or time at risk in days (Cox).
    pub y: Vec<f64>,
    /// Cox: whether the outcome ended the time at risk.
    pub event: Vec<bool>,
    /// The person of each row (for joining other person-level data at the site, e.g. genotypes).
    pub persons: Vec<i64>,
    /// Poisson: log person-years at risk.
    pub offset: Option<Vec<f64>>,
    /// Persons in the population (first entries) before any was left out.
    pub population: usize,
    /// Persons left out, by reason (a covariate's name, `no time at risk`, `sex not male or female`,
    /// `outcome measurement`), in the order the reasons were met.
    pub dropped: BTreeMap<String, usize>,
}

impl Design {
    pub fn rows(&self) -> usize {
        self.y.len()
    }
    pub fn p(&self) -> usize {
        self.columns.len()
    }
}

fn f64_column(b: &RecordBatch, i: usize, id: &str) -> Result<Vec<Option<f64>>, AnalysisError> {
    let c = cast(b.column(i), &DataType::Float64).map_err(|e| shape(id, e.to_string()))?;
    let a = c
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| shape(id, "not a number column"))?;
    Ok((0..a.len())
        .map(|r| if a.is_null(r) { None } else { Some(a.value(r)) })
        .collect())
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The latest usable record per person within each person's window: `(day, tie-break id, value)`.
type Latest = HashMap<i64, (i32, i64, f64)>;

/// Records of `table` with `concept_col IN concepts` and their day in `[lo, hi]`, as
/// (person, day, id, value columns…) rows; the caller keeps what falls in each person's window.
#[allow(clippy::too_many_arguments)]
async fn records(
    engine: &SiteEngine,
    id: &str,
    table: &str,
    id_col: &str,
    concept_col: &str,
    date_col: &str,
    value_cols: &[&str],
    concepts: &[i64],
    (lo, hi): (i32, i32),
) -> Result<Vec<(i64, i32, i64, Vec<Option<f64>>)>, AnalysisError> {
    let day = engine.dialect().days(date_col);
    let values: String = value_cols.iter().map(|c| format!(", {c}")).collect();
    let sql = format!(
        "SELECT person_id, {day} AS d, {id_col}{values} FROM {table} \
         WHERE {concept_col} IN ({}) AND {day} BETWEEN {lo} AND {hi}",
        list(concepts)
    );
    let mut out = Vec::new();
    for b in engine.sql(&sql).await? {
        let person = i64_column(&b, 0, id)?;
        let d = i64_column(&b, 1, id)?;
        let rid = i64_column(&b, 2, id)?;
        let vals: Vec<Vec<Option<f64>>> = (0..value_cols.len())
            .map(|k| f64_column(&b, 3 + k, id))
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            if let (Some(p), Some(d)) = (person[r], d[r]) {
                out.push((
                    p,
                    d as i32,
                    rid[r].unwrap_or(0),
                    vals.iter().map(|v| v[r]).collect(),
                ));
            }
        }
    }
    Ok(out)
}

/// The value of a measurement record in the model's unit, or `None` when its unit is not listed.
fn harmonise(m: &MeasurementSpec, value: f64, unit: Option<f64>) -> Option<f64> {
    if m.units.is_empty() {
        return Some(value);
    }
    let unit = unit? as i64;
    m.units.get(&unit.to_string()).map(|f| value * f)
}

/// Keep, per person, the latest record whose day is within `[from(idx), to(idx)]`.
fn keep_latest(latest: &mut Latest, person: i64, day: i32, rid: i64, value: f64) {
    let e = latest.entry(person).or_insert((i32::MIN, i64::MIN, value));
    if (day, rid) > (e.0, e.1) {
        *e = (day, rid, value);
    }
}

/// Latest harmonised measurement value per person within a window around each person's index day.
async fn latest_measurement(
    engine: &SiteEngine,
    id: &str,
    m: &MeasurementSpec,
    index: &HashMap<i64, (i32, i32)>,
    window: impl Fn(i32, i32) -> (i32, i32),
) -> Result<Latest, AnalysisError> {
    let span = index
        .values()
        .map(|&(a, b)| window(a, b))
        .fold((i32::MAX, i32::MIN), |acc, w| {
            (acc.0.min(w.0), acc.1.max(w.1))
        });
    let mut latest = Latest::new();
    if span.0 > span.1 {
        return Ok(latest);
    }
    let rows = records(
        engine,
        id,
        "measurement",
        "measurement_id",
        "measurement_concept_id",
        "measurement_date",
        &["value_as_number", "unit_concept_id"],
        &m.concepts,
        span,
    )
    .await?;
    for (p, d, rid, v) in rows {
        let Some(&(a, b)) = index.get(&p) else {
            continue;
        };
        let (from, to) = window(a, b);
        if d < from || d > to {
            continue;
        }
        if let Some(value) = v[0].and_then(|x| harmonise(m, x, v[1])) {
            keep_latest(&mut latest, p, d, rid, value);
        }
    }
    Ok(latest)
}

fn around(index: i32, w: &Window) -> (i32, i32) {
    (index + w.start, index + w.end)
}

/// A covariate's value for each person of the population (absent: missing).
async fn feature_values(
    engine: &SiteEngine,
    id: &str,
    kind: &FeatureKind,
    idx: &HashMap<i64, (i32, i32)>,
) -> Result<HashMap<i64, Vec<f64>>, AnalysisError> {
    let span = |w: &Window| {
        idx.values()
            .map(|&(i, _)| around(i, w))
            .fold((i32::MAX, i32::MIN), |acc, x| {
                (acc.0.min(x.0), acc.1.max(x.1))
            })
    };
    let mut out: HashMap<i64, Vec<f64>> = HashMap::new();
    match kind {
        FeatureKind::Age | FeatureKind::Male => {
            return Err(shape(id, "age and sex come from the person table"))
        }
        FeatureKind::Measurement { window, .. } => {
            let m = kind.measurement().unwrap_or_default();
            let latest = latest_measurement(engine, id, &m, idx, |i, _| around(i, window)).await?;
            out.extend(latest.into_iter().map(|(p, (_, _, v))| (p, vec![v])));
        }
        FeatureKind::Category {
            concepts,
            window,
            levels,
            missing_is_reference,
        } => {
            let rows = records(
                engine,
                id,
                "observation",
                "observation_id",
                "observation_concept_id",
                "observation_date",
                &["value_as_concept_id"],
                concepts,
                span(window),
            )
            .await?;
            let mut latest = Latest::new();
            for (p, d, rid, v) in rows {
                let Some(&(i, _)) = idx.get(&p) else { continue };
                let (from, to) = around(i, window);
                if d >= from && d <= to {
                    keep_latest(&mut latest, p, d, rid, v[0].unwrap_or(0.0));
                }
            }
            let level_of = |value: f64| {
                levels
                    .iter()
                    .position(|l| l.values.iter().any(|c| *c as f64 == value))
            };
            for &p in idx.keys() {
                let dummies = match latest.get(&p) {
                    Some(&(_, _, value)) => {
                        let mut d = vec![0.0; levels.len()];
                        if let Some(k) = level_of(value) {
                            d[k] = 1.0;
                        }
                        d
                    }
                    None if *missing_is_reference => vec![0.0; levels.len()],
                    None => continue,
                };
                out.insert(p, dummies);
            }
        }
        FeatureKind::Genotype { variant } => {
            let bed = genotypes(engine, id)?;
            let v = bed
                .variants
                .iter()
                .position(|x| x.id == *variant)
                .ok_or_else(|| {
                    shape(
                        id,
                        format!("variant {variant} is not in the site's genotypes"),
                    )
                })?;
            let packed = bed.packed(v);
            for (i, sample) in bed.samples.iter().enumerate() {
                let Ok(person) = sample.iid.parse::<i64>() else {
                    continue;
                };
                if idx.contains_key(&person) {
                    if let Some(d) = medfed_genomics::a1_dosage(packed, i) {
                        out.insert(person, vec![f64::from(d)]);
                    }
                }
            }
        }
        FeatureKind::Condition { concepts, window } | FeatureKind::Drug { concepts, window } => {
            let (table, id_col, concept_col, date_col) = match kind {
                FeatureKind::Condition { .. } => (
                    "condition_occurrence",
                    "condition_occurrence_id",
                    "condition_concept_id",
                    "condition_start_date",
                ),
                _ => (
                    "drug_exposure",
                    "drug_exposure_id",
                    "drug_concept_id",
                    "drug_exposure_start_date",
                ),
            };
            let concepts = expand(engine, concepts).await?;
            let rows = records(
                engine,
                id,
                table,
                id_col,
                concept_col,
                date_col,
                &[],
                &concepts,
                span(window),
            )
            .await?;
            for &p in idx.keys() {
                out.insert(p, vec![0.0]);
            }
            for (p, d, _, _) in rows {
                let Some(&(i, _)) = idx.get(&p) else { continue };
                let (from, to) = around(i, window);
                if d >= from && d <= to {
                    out.insert(p, vec![1.0]);
                }
            }
        }
    }
    Ok(out)
}

/// The site's PLINK genotypes (`genotypes/site.bed`).
pub(crate) fn genotypes(
    engine: &SiteEngine,
    id: &str,
) -> Result<medfed_genomics::Bed, AnalysisError> {
    let prefix = engine
        .store()
        .and_then(|s| s.genotype_prefix())
        .ok_or_else(|| {
            shape(
                id,
                "genotype covariates need a site store with genotypes/site.bed",
            )
        })?;
    medfed_genomics::Bed::open(&prefix).map_err(|e| shape(id, e.to_string()))
}

fn regression_of(spec: &AnalysisSpec) -> Result<&Regression, AnalysisError> {
    match spec {
        AnalysisSpec::Regression(r) => Ok(r),
        other => Err(shape(other.id(), "not a regression analysis")),
    }
}

/// The site's design matrix for a `regression` analysis: one row per person of the population (first
/// entry), with a time at risk and every covariate present; everyone else is left out and counted by
/// reason in [`Design::dropped`].
pub async fn extract(engine: &SiteEngine, spec: &AnalysisSpec) -> Result<Design, AnalysisError> {
    let r = regression_of(spec)?;
    let id = spec.id();
    // The population: each person's first entry.
    let mut pop = entries(engine, spec, &r.population).await?;
    pop.dedup_by_key(|e| e.person);
    let mut design = Design {
        columns: r.columns(),
        population: pop.len(),
        ..Design::default()
    };
    let mut drop = |reason: &str| *design.dropped.entry(reason.to_string()).or_default() += 1;
    // Time at risk per person: (index day, (start, end)).
    let mut tar: HashMap<i64, (i32, i32)> = HashMap::new();
    let mut index: HashMap<i64, (i32, i32)> = HashMap::new();
    for e in &pop {
        match time_at_risk(e, &r.tar) {
            Some(t) => {
                tar.insert(e.person, t);
                index.insert(e.person, (e.start, 0));
            }
            None => drop("no time at risk"),
        }
    }
    // The outcome.
    let (mut outcome_count, mut outcome_value) = (HashMap::new(), Latest::new());
    match &r.outcome {
        ModelOutcome::Cohort(c) => outcome_count = outcome_days(engine, spec, c).await?,
        ModelOutcome::Measurement(m) => {
            let win: HashMap<i64, (i32, i32)> = tar.clone();
            outcome_value = latest_measurement(engine, id, m, &win, |s, t| (s, t)).await?;
        }
    }
    // Covariates other than age and sex.
    let mut values: Vec<Option<HashMap<i64, Vec<f64>>>> = Vec::new();
    for f in &r.covariates {
        values.push(match &f.kind {
            FeatureKind::Age | FeatureKind::Male => None,
            k => Some(feature_values(engine, id, k, &index).await?),
        });
    }
    let p = design.columns.len();
    let mut row = Vec::with_capacity(p);
    'person: for e in &pop {
        let Some(&(s, t)) = tar.get(&e.person) else {
            continue;
        };
        row.clear();
        if r.has_intercept() {
            row.push(1.0);
        }
        for (f, v) in r.covariates.iter().zip(&values) {
            match (&f.kind, v) {
                (FeatureKind::Age, _) => row.push((year_of(e.start) - e.year_of_birth) as f64),
                (FeatureKind::Male, _) => match e.sex {
                    "male" => row.push(1.0),
                    "female" => row.push(0.0),
                    _ => {
                        drop("sex not male or female");
                        continue 'person;
                    }
                },
                (_, Some(v)) => match v.get(&e.person) {
                    Some(x) => row.extend_from_slice(x),
                    None => {
                        drop(&f.name);
                        continue 'person;
                    }
                },
                (_, None) => return Err(shape(id, "covariate without values")),
            }
        }
        let days = outcome_count.get(&e.person);
        let y = match (&r.outcome, r.family) {
            (ModelOutcome::Measurement(_), _) => match outcome_value.get(&e.person) {
                Some(&(_, _, v)) => v,
                None => {
                    drop("outcome measurement");
                    continue 'person;
                }
            },
            (_, Family::Binomial) => first_outcome(days, s, t).is_some() as u8 as f64,
            (_, Family::Poisson) => {
                days.map_or(0, |d| d.iter().filter(|x| **x >= s && **x <= t).count()) as f64
            }
            (_, Family::Cox) => {
                let first = first_outcome(days, s, t);
                design.event.push(first.is_some());
                (first.unwrap_or(t) - s + 1) as f64
            }
            (_, Family::Gaussian) => return Err(shape(id, "a gaussian model needs a measurement")),
        };
        if r.family == Family::Poisson {
            design
                .offset
                .get_or_insert_with(Vec::new)
                .push((((t - s + 1) as f64) / 365.25).ln());
        }
        design.x.extend_from_slice(&row);
        design.y.push(y);
        design.persons.push(e.person);
    }
    if design.x.len() != p * design.y.len() {
        return Err(shape(id, "design matrix has ragged rows"));
    }
    Ok(design)
}

/// Events and non-events as the release rule counts them for `family`.
fn outcome_counts(d: &Design, family: Family) -> (Option<u64>, Option<u64>) {
    let n = d.rows() as u64;
    match family {
        Family::Binomial => {
            let e = d.y.iter().filter(|y| **y > 0.0).count() as u64;
            (Some(e), Some(n - e))
        }
        Family::Poisson => (Some(d.y.iter().sum::<f64>() as u64), None),
        Family::Cox => (Some(d.event.iter().filter(|e| **e).count() as u64), None),
        Family::Gaussian => (None, None),
    }
}

/// The sums of the site at `beta` (no disclosure check: the caller releases them).
pub fn sums(d: &Design, family: Family, beta: &[f64]) -> Result<SiteSums, ModelError> {
    match family {
        Family::Cox => medfed_model::cox_sums(
            &medfed_model::CoxRows {
                p: d.p(),
                x: &d.x,
                time: &d.y,
                event: &d.event,
            },
            beta,
        ),
        f => medfed_model::glm_sums(
            f,
            &Rows {
                p: d.p(),
                x: &d.x,
                y: &d.y,
                offset: d.offset.as_deref(),
            },
            beta,
        ),
    }
}

/// Predicted risk of a binomial model for each row.
pub fn risks(d: &Design, beta: &[f64]) -> Vec<f64> {
    let p = d.p();
    d.x.chunks_exact(p.max(1))
        .map(|x| {
            let eta: f64 = x.iter().zip(beta).map(|(a, b)| a * b).sum();
            1.0 / (1.0 + (-eta).exp())
        })
        .collect()
}

/// The risk histogram as a releasable table: one row per occupied bin, counts of persons with and
/// without the outcome (small-cell rule) and the sum of their predicted risks.
pub fn risk_table(h: &medfed_model::RiskHistogram) -> Table {
    let mut t = Table::new(
        "risk",
        &[("bin", true)],
        vec![
            Measure::count("events"),
            Measure::count("non_events"),
            Measure::sum("risk_sum"),
        ],
    );
    for b in 0..h.events.len() {
        if h.events[b] + h.non_events[b] > 0.0 {
            t.add(
                vec![format!("{b:03}")],
                &[h.events[b], h.non_events[b], h.risk_sum[b]],
            );
        }
    }
    t
}

/// One round's local step on the site's design matrix. Sums: released as a vector after the model
/// disclosure check (parameters against rows, events and non-events). Evaluate: the risk histogram as
/// a table (small-cell rule per bin).
pub fn local_step(
    d: &Design,
    spec: &AnalysisSpec,
    step: &ModelStep,
    policy: &Policy,
) -> Result<SiteStatistic, AnalysisError> {
    let r = regression_of(spec)?;
    let beta = step.coefficients().unwrap_or_default();
    if beta.len() != d.p() || beta.iter().any(|b| !b.is_finite()) {
        return Err(shape(
            spec.id(),
            format!(
                "the task carries {} coefficients for {} columns",
                beta.len(),
                d.p()
            ),
        ));
    }
    let (events, non_events) = outcome_counts(d, r.family);
    let (p, n) = (d.p() as u64, d.rows() as u64);
    match step {
        ModelStep::Sums { .. } | ModelStep::SecaggKeys { .. } => {
            // Compute only what the release will let out.
            let probe = medfed_privacy::release(
                SiteStatistic::model_sums(Vec::new(), p, n, events, non_events),
                policy,
            );
            let values = if probe.is_suppressed() {
                Vec::new()
            } else {
                sums(d, r.family, beta)
                    .map_err(|e| shape(spec.id(), e.to_string()))?
                    .to_vec()
            };
            Ok(SiteStatistic::model_sums(values, p, n, events, non_events))
        }
        ModelStep::SecaggShares { .. }
        | ModelStep::SecaggMasked { .. }
        | ModelStep::SecaggUnmask { .. } => Err(shape(
            spec.id(),
            "a secure-aggregation phase carries no coefficients",
        )),
        ModelStep::GwasPanel | ModelStep::GwasTables { .. } | ModelStep::GwasFit { .. } => Err(
            shape(spec.id(), "a GWAS step was sent for a regression analysis"),
        ),
        ModelStep::Evaluate { .. } => {
            if r.family != Family::Binomial {
                return Err(shape(
                    spec.id(),
                    "only binomial models are evaluated by risk",
                ));
            }
            let outcomes: Vec<bool> = d.y.iter().map(|y| *y > 0.0).collect();
            let h = medfed_model::RiskHistogram::of(
                &risks(d, beta),
                &outcomes,
                medfed_protocol::regression::RISK_BINS,
            )
            .map_err(|e| shape(spec.id(), e))?;
            Ok(SiteStatistic::tables(vec![risk_table(&h)]))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hub's side: rounds of the fit, and the pooled result.

/// One round of a fit, for the record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    pub coefficients: Vec<f64>,
    pub deviance: f64,
    pub log_likelihood: f64,
    /// Largest relative change of a coefficient made by this round's Newton step.
    pub max_change: f64,
}

/// The hub's state of one fit, kept between rounds (JSON in the hub's store).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitState {
    /// The round whose tasks are out (1-based).
    pub round: u32,
    /// Sites whose sums enter the fit (fixed by round 1: the fit is over the same rows every round).
    pub participants: Vec<String>,
    /// Sites left out, with the reason.
    pub excluded: Vec<(String, String)>,
    pub history: Vec<RoundRecord>,
    pub fit: Option<medfed_model::Fit>,
    /// Events (or Σy) and rows of the network.
    pub events: f64,
    pub evaluation: Option<serde_json::Value>,
    /// Why the fit stopped without a model.
    pub error: Option<String>,
    /// The study adds every round's sums under secure aggregation.
    #[serde(default)]
    pub secure: bool,
    /// The secure aggregation in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg: Option<SecaggState>,
}

use crate::secure::Phase;
pub use crate::secure::SecaggState;

/// Fixed-point fraction bits of sums added under secure aggregation, in the two-word encoding
/// (`FixedPoint::encode_wide`): resolution 2^-40, per-site sums up to 2^44 in magnitude. The secure
/// fit then equals the plain one to about 1e-12.
pub const FRAC_BITS: u32 = 40;

/// What the hub does after a round.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Send each of these sites its step, as the next round.
    Round(Vec<(String, ModelStep)>),
    /// The analysis is finished (fitted, evaluated, or failed: see [`FitState`]).
    Done,
}

/// Largest relative coefficient change at which the fit has converged (as `medfed_model::fit`).
pub const TOLERANCE: f64 = 1e-10;

/// The first round: zero coefficients, to every node (under secure aggregation, the key phase of
/// the first aggregation).
pub fn first_round(
    r: &Regression,
    state: &mut FitState,
    nodes: &[String],
) -> Vec<(String, ModelStep)> {
    sums_round_steps(state, vec![0.0; r.columns().len()], nodes)
}

fn to_all(nodes: &[String], step: ModelStep) -> Vec<(String, ModelStep)> {
    nodes.iter().map(|n| (n.clone(), step.clone())).collect()
}

/// The steps that ask `nodes` for their sums at `beta`: directly, or by starting a secure aggregation.
fn sums_round_steps(
    state: &mut FitState,
    beta: Vec<f64>,
    nodes: &[String],
) -> Vec<(String, ModelStep)> {
    if !state.secure {
        return to_all(nodes, ModelStep::Sums { coefficients: beta });
    }
    let (sa, steps) = crate::secure::start(nodes, beta, None);
    state.secagg = Some(sa);
    steps
}

fn outcome_of(input: &crate::SiteInput<'_>) -> Result<(), String> {
    match input {
        crate::SiteInput::Refused(reason) => Err(format!("refused: {reason}")),
        crate::SiteInput::Secagg(_) => Err("sent a secure-aggregation message".into()),
        crate::SiteInput::Released(r) => match r.suppression() {
            Some(rule) => Err(format!(
                "withheld its sums: {}",
                crate::pooled::describe(rule)
            )),
            None => Ok(()),
        },
    }
}

/// Advance a fit with one round's answers: `step` is what the round asked, `inputs` the answers of the
/// sites it went to.
pub fn advance(
    r: &Regression,
    state: &mut FitState,
    step: &ModelStep,
    inputs: &[(String, crate::SiteInput<'_>)],
) -> Next {
    match step {
        ModelStep::Sums { coefficients } => sums_round(r, state, coefficients, inputs),
        ModelStep::Evaluate { .. } => {
            state.evaluation = Some(evaluation(inputs));
            Next::Done
        }
        ModelStep::GwasPanel | ModelStep::GwasTables { .. } | ModelStep::GwasFit { .. } => fail(
            state,
            "a GWAS step was answered for a regression analysis".into(),
        ),
        ModelStep::SecaggKeys { .. }
        | ModelStep::SecaggShares { .. }
        | ModelStep::SecaggMasked { .. }
        | ModelStep::SecaggUnmask { .. } => secagg_phase(r, state, step, inputs),
    }
}

/// One phase of a secure aggregation: collect what the sites sent and start the next phase; after the
/// last, unmask the network's sums and take the Newton step.
fn secagg_phase(
    r: &Regression,
    state: &mut FitState,
    step: &ModelStep,
    inputs: &[(String, crate::SiteInput<'_>)],
) -> Next {
    let Some(mut sa) = state.secagg.take() else {
        return fail(
            state,
            "a secure-aggregation answer without a session".into(),
        );
    };
    let first = state.history.is_empty();
    let mut excluded = Vec::new();
    let next = match crate::secure::phase(
        &mut sa,
        step,
        inputs,
        &mut excluded,
        crate::secure::Encoding::Wide {
            frac_bits: FRAC_BITS,
        },
        1,
    ) {
        Phase::Failed(why) => {
            return fail(state, format!("round {}: {why}", state.history.len() + 1))
        }
        Phase::Sum { total, survivors } => {
            let p = sa.coefficients.len();
            let Some(total) = SiteSums::from_vec(p, &total) else {
                return fail(state, "unmasked sums of the wrong length".into());
            };
            if first {
                state.participants = survivors;
                state.excluded.extend(excluded);
            } else if survivors != state.participants {
                return fail(
                    state,
                    format!(
                        "secure round {}: sums from {} of {} sites; an exact fit needs the same sites every round",
                        state.history.len() + 1,
                        survivors.len(),
                        state.participants.len()
                    ),
                );
            }
            let beta = sa.coefficients.clone();
            state.secagg = None;
            return newton(r, state, &beta, total);
        }
        Phase::Next(next) => next,
    };
    // A site that left during an aggregation: in the first Newton round it is left out of the fit
    // (the survivors' sums are still exact); later, the fit cannot stay exact.
    if !excluded.is_empty() {
        if first {
            for (s, why) in excluded {
                state
                    .excluded
                    .push((s, format!("{why} (secure aggregation)")));
            }
        } else {
            let (s, why) = &excluded[0];
            return fail(
                state,
                format!(
                    "site {s} left secure round {}: {why}; an exact fit needs the same sites every round",
                    state.history.len() + 1
                ),
            );
        }
    }
    state.round += 1;
    state.secagg = Some(sa);
    Next::Round(next)
}

fn fail(state: &mut FitState, why: String) -> Next {
    state.error = Some(why);
    Next::Done
}

fn sums_round(
    r: &Regression,
    state: &mut FitState,
    beta: &[f64],
    inputs: &[(String, crate::SiteInput<'_>)],
) -> Next {
    let p = beta.len();
    let mut parts = Vec::new();
    for (site, input) in inputs {
        let sums = outcome_of(input).and_then(|()| match input {
            crate::SiteInput::Released(rel) => rel
                .vector()
                .and_then(|v| SiteSums::from_vec(p, v))
                .ok_or_else(|| "released malformed sums".to_string()),
            _ => Err(String::new()),
        });
        match sums {
            Ok(s) => parts.push((site.clone(), s)),
            Err(why) if state.round == 1 => state.excluded.push((site.clone(), why)),
            Err(why) => {
                return fail(
                    state,
                    format!(
                    "site {site} {why} in round {}; an exact fit needs the same sites every round",
                    state.round
                ),
                )
            }
        }
    }
    if state.round == 1 {
        state.participants = parts.iter().map(|(s, _)| s.clone()).collect();
    }
    let Some(total) = SiteSums::total(parts.into_iter().map(|(_, s)| s)) else {
        return fail(state, "no site released sums".into());
    };
    newton(r, state, beta, total)
}

/// The hub's step from the network's sums at `beta`: the next round's coefficients, or the fit.
fn newton(r: &Regression, state: &mut FitState, beta: &[f64], total: SiteSums) -> Next {
    state.events = total.events;
    let next = match medfed_model::newton_step(beta, &total, r.l2, r.has_intercept()) {
        Ok(n) => n,
        Err(e) => return fail(state, format!("round {}: {e}", state.round)),
    };
    let moved = next
        .iter()
        .zip(beta)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
        .fold(0.0, f64::max);
    state.history.push(RoundRecord {
        round: state.history.len() as u32 + 1,
        coefficients: beta.to_vec(),
        deviance: total.deviance,
        log_likelihood: total.loglik,
        max_change: moved,
    });
    let iterations = state.history.len();
    if moved < TOLERANCE {
        // Converged at `beta`: the sums in hand are the ones at the estimate.
        match medfed_model::summarize(r.family, beta, &total, iterations) {
            Ok(f) => state.fit = Some(f),
            Err(e) => return fail(state, e.to_string()),
        }
        return if r.family == Family::Binomial {
            state.round += 1;
            Next::Round(to_all(
                &state.participants,
                ModelStep::Evaluate {
                    coefficients: beta.to_vec(),
                },
            ))
        } else {
            Next::Done
        };
    }
    if iterations >= r.max_iterations as usize {
        return fail(
            state,
            format!(
                "no convergence after {} rounds (the last step still moved a coefficient by {moved:.1e}, relative)",
                r.max_iterations
            ),
        );
    }
    state.round += 1;
    let nodes = state.participants.clone();
    Next::Round(sums_round_steps(state, next, &nodes))
}

fn histogram_of(
    t: &crate::PooledTable,
    value: impl Fn(&crate::PooledCell) -> bool,
) -> medfed_model::RiskHistogram {
    let bins = medfed_protocol::regression::RISK_BINS;
    let mut h = medfed_model::RiskHistogram::new(bins);
    let (e, ne, rs) = (
        t.measure("events"),
        t.measure("non_events"),
        t.measure("risk_sum"),
    );
    for c in &t.cells {
        let Some(b) = c.key.first().and_then(|k| k.parse::<usize>().ok()) else {
            continue; // the margin
        };
        if b >= bins || !value(c) {
            continue;
        }
        if let (Some(e), Some(ne), Some(rs)) = (e, ne, rs) {
            h.events[b] += c.values[e];
            h.non_events[b] += c.values[ne];
            h.risk_sum[b] += c.values[rs];
        }
    }
    h
}

fn performance(h: &medfed_model::RiskHistogram) -> serde_json::Value {
    let persons: f64 = h.events.iter().sum::<f64>() + h.non_events.iter().sum::<f64>();
    let (auc, bound) = h.auc().map_or((None, None), |(a, b)| (Some(a), Some(b)));
    serde_json::json!({
        "persons": persons,
        "events": h.events.iter().sum::<f64>(),
        "auc": auc,
        "auc_bound": bound,
        "calibration": h.calibration(10),
    })
}

/// Discrimination and calibration from a (pooled) risk table.
pub fn evaluate_table(t: &crate::PooledTable) -> serde_json::Value {
    performance(&histogram_of(t, |_| true))
}

/// Discrimination and calibration from the sites' risk histograms: pooled, and per site.
fn evaluation(inputs: &[(String, crate::SiteInput<'_>)]) -> serde_json::Value {
    let mut released = Vec::new();
    let mut per_site = serde_json::Map::new();
    for (site, input) in inputs {
        if let crate::SiteInput::Released(rel) = input {
            if let (Some(t), None) = (rel.tables(), rel.suppression()) {
                released.push((site.clone(), t));
                let own = crate::pooled::pool_tables(&[(site.clone(), t)]);
                if let Some(t) = own.first() {
                    per_site.insert(site.clone(), performance(&histogram_of(t, |c| c.sites > 0)));
                }
            }
        }
    }
    let pooled = crate::pooled::pool_tables(&released);
    let Some(t) = pooled.first() else {
        return serde_json::json!({"error": "no site released a risk histogram"});
    };
    let mut v = evaluate_table(t);
    let withheld: f64 = t
        .cells
        .iter()
        .filter(|c| !c.withheld_at.is_empty() && c.key.first().is_some_and(|k| k != "*"))
        .count() as f64;
    v["per_site"] = serde_json::Value::Object(per_site);
    v["bins_withheld_somewhere"] = serde_json::json!(withheld);
    v
}

/// The pooled result of a regression analysis from the hub's state of its fit.
pub fn pooled(r: &Regression, state: &FitState) -> crate::PooledResult {
    let (sites, mut notes) =
        crate::combine::round_sites(&state.participants, &state.excluded, "left out of the fit");
    if let Some(e) = &state.error {
        notes.push(format!("no model: {e}"));
    }
    let value = match &state.fit {
        None => serde_json::Value::Null,
        Some(f) => {
            let columns = r.columns();
            let coefficients: serde_json::Map<String, serde_json::Value> = columns
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    (
                        c.clone(),
                        serde_json::json!({
                            "estimate": f.coefficients[j],
                            "std_error": f.std_errors[j],
                            "z": f.z[j],
                            "p_value": f.p_values[j],
                            "ci_low": f.ci_low[j],
                            "ci_high": f.ci_high[j],
                        }),
                    )
                })
                .collect();
            serde_json::json!({
                "summary": {
                    "family": r.family,
                    "columns": columns,
                    "coefficients": coefficients,
                    "n": f.n,
                    "events": state.events,
                    "deviance": f.deviance,
                    "log_likelihood": f.log_likelihood,
                    "aic": f.aic,
                    "scale": f.scale,
                    "iterations": f.iterations,
                    "l2": r.l2,
                    "rounds": state.history,
                    "evaluation": state.evaluation,
                },
                "tables": [],
            })
        }
    };
    crate::PooledResult {
        id: r.id.clone(),
        kind: "regression".into(),
        value,
        sites,
        notes,
    }
}

/// Format of an exported model.
pub const MODEL_FORMAT: &str = "medfed-model/1";

/// A fitted model as the hub's registry keeps and exports it: the covariate spec, the cohorts and the
/// time at risk it was trained on, the coefficients, and how well it did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredModel {
    pub format: String,
    /// `<study id>.<analysis id>`.
    pub id: String,
    pub name: String,
    pub study: String,
    pub trained_at: i64,
    /// The analysis as the study gave it (covariates, population and outcome cohorts, time at risk).
    pub spec: Regression,
    pub columns: Vec<String>,
    pub coefficients: Vec<f64>,
    pub std_errors: Vec<f64>,
    pub n: f64,
    pub events: f64,
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_json::Value>,
}

/// The registry entry of a finished fit (`None` when the fit produced no model).
pub fn registered(
    study_id: &str,
    study_name: &str,
    r: &Regression,
    state: &FitState,
    now: i64,
) -> Option<RegisteredModel> {
    let f = state.fit.as_ref()?;
    Some(RegisteredModel {
        format: MODEL_FORMAT.into(),
        id: format!("{study_id}.{}", r.id),
        name: r
            .label
            .clone()
            .unwrap_or_else(|| format!("{study_name}: {}", r.id)),
        study: study_id.into(),
        trained_at: now,
        spec: r.clone(),
        columns: r.columns(),
        coefficients: f.coefficients.clone(),
        std_errors: f.std_errors.clone(),
        n: f.n,
        events: state.events,
        sites: state.participants.clone(),
        evaluation: state.evaluation.clone(),
    })
}

impl RegisteredModel {
    /// Parse an exported model, checking its spec as a study would be checked.
    pub fn parse(text: &str) -> Result<RegisteredModel, String> {
        let m: RegisteredModel =
            serde_json::from_str(text).map_err(|e| format!("not a medfed model: {e}"))?;
        if m.format != MODEL_FORMAT {
            return Err(format!("format {:?}; expected {MODEL_FORMAT:?}", m.format));
        }
        let spec = serde_json::json!(AnalysisSpec::Regression(m.spec.clone()));
        medfed_protocol::study::parse_analysis(&spec, "$.spec").map_err(|e| e.to_string())?;
        if m.columns != m.spec.columns() || m.coefficients.len() != m.columns.len() {
            return Err("$.coefficients: do not match the covariate spec's columns".into());
        }
        if m.coefficients.iter().any(|c| !c.is_finite()) {
            return Err("$.coefficients: not finite".into());
        }
        Ok(m)
    }

    /// The design-matrix row of one person described by covariate values: numbers by covariate name
    /// (`male` 0/1, condition and drug covariates 0/1), a categorical covariate by its level's name
    /// (or the reference level's, or absent when it is missing and treated as the reference).
    pub fn row(
        &self,
        values: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<f64>, String> {
        let mut row = Vec::with_capacity(self.columns.len());
        if self.spec.has_intercept() {
            row.push(1.0);
        }
        for f in &self.spec.covariates {
            let v = values.get(&f.name);
            match &f.kind {
                FeatureKind::Category {
                    levels,
                    missing_is_reference,
                    ..
                } => {
                    let mut d = vec![0.0; levels.len()];
                    match v {
                        Some(serde_json::Value::String(level)) => {
                            if let Some(k) = levels.iter().position(|l| l.name == *level) {
                                d[k] = 1.0;
                            }
                        }
                        None if *missing_is_reference => {}
                        Some(serde_json::Value::Null) if *missing_is_reference => {}
                        _ => {
                            return Err(format!(
                                "{}: a level name ({}, or anything else for the reference)",
                                f.name,
                                levels
                                    .iter()
                                    .map(|l| l.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }
                    }
                    row.extend(d);
                }
                _ => match v.and_then(serde_json::Value::as_f64) {
                    Some(x) if x.is_finite() => row.push(x),
                    _ => return Err(format!("{}: a number is needed", f.name)),
                },
            }
        }
        Ok(row)
    }

    /// The linear predictor of a design-matrix row.
    pub fn linear_predictor(&self, row: &[f64]) -> f64 {
        row.iter().zip(&self.coefficients).map(|(a, b)| a * b).sum()
    }

    /// What the model predicts for a design-matrix row: the risk over the time at risk (binomial), the
    /// rate per person-year (Poisson), the mean (Gaussian), or the hazard ratio against a person with
    /// every covariate 0 (Cox: no baseline hazard is released).
    pub fn predict(&self, row: &[f64]) -> f64 {
        let lp = self.linear_predictor(row);
        match self.spec.family {
            Family::Binomial => 1.0 / (1.0 + (-lp).exp()),
            Family::Poisson | Family::Cox => lp.exp(),
            Family::Gaussian => lp,
        }
    }
}
