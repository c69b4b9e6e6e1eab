//! Local steps of the stratified analyses: site rows → tables (before disclosure control).
//!
//! Person-level work that scales with the site (grouping events by concept, binning values) is SQL;
//! work over cohort entries (time at risk, first outcome, survival times) is Rust over the cohort's
//! rows, which are small next to the event tables.

use std::collections::HashMap;
use std::time::Instant;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use medfed_engine::SiteEngine;
use medfed_privacy::{Measure, SiteStatistic, Table};
use medfed_protocol::study::{
    AnalysisSpec, Anchor, CohortCharacterization, ComparativeCohort, Covariate, CrossTab,
    Descriptive, IncidenceRate, KaplanMeier, TimeAtRisk, Variable,
};

use crate::achilles::{self, text};
use crate::local::{expand, parse_cohort, AnalysisError};

pub(crate) fn shape(id: &str, message: impl Into<String>) -> AnalysisError {
    AnalysisError::Shape {
        id: id.to_string(),
        message: message.into(),
    }
}

/// Fill `t` from batches whose first columns are the strata and the rest the measures.
fn fill(t: &mut Table, batches: &[RecordBatch], id: &str) -> Result<(), AnalysisError> {
    let nd = t.dims.len();
    let nm = t.measures.len();
    for b in batches {
        if b.num_columns() != nd + nm {
            return Err(shape(
                id,
                format!("{} columns, expected {}", b.num_columns(), nd + nm),
            ));
        }
        let mut keys = Vec::with_capacity(nd);
        for i in 0..nd {
            let c = cast(b.column(i), &DataType::Utf8).map_err(|e| shape(id, e.to_string()))?;
            keys.push(c);
        }
        let mut vals = Vec::with_capacity(nm);
        for i in 0..nm {
            let c =
                cast(b.column(nd + i), &DataType::Float64).map_err(|e| shape(id, e.to_string()))?;
            vals.push(c);
        }
        let keys: Vec<&StringArray> = keys
            .iter()
            .map(|c| {
                c.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8")
            })
            .collect();
        let vals: Vec<&Float64Array> = vals
            .iter()
            .map(|c| {
                c.as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("cast to Float64")
            })
            .collect();
        for r in 0..b.num_rows() {
            let key: Vec<String> = keys
                .iter()
                .map(|k| {
                    if k.is_null(r) {
                        "null".to_string()
                    } else {
                        k.value(r).to_string()
                    }
                })
                .collect();
            let v: Vec<f64> = vals
                .iter()
                .map(|a| if a.is_null(r) { 0.0 } else { a.value(r) })
                .collect();
            t.add(key, &v);
        }
    }
    Ok(())
}

async fn query_table(
    engine: &SiteEngine,
    mut t: Table,
    sql: &str,
    id: &str,
) -> Result<Table, AnalysisError> {
    let started = Instant::now();
    let batches = engine.sql(sql).await?;
    fill(&mut t, &batches, id)?;
    t.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(t)
}

/// The SQL of a study cohort (from the task's definitions), returning `subject_id, start_day, end_day`.
pub(crate) fn cohort_sql(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    cohort: &str,
) -> Result<String, AnalysisError> {
    let def = spec
        .definitions()
        .and_then(|d| d.get(cohort))
        .ok_or_else(|| AnalysisError::Cohort {
            id: spec.id().to_string(),
            message: format!("the task carries no definition of cohort {cohort:?}"),
        })?;
    let c = parse_cohort(spec.id(), def, &format!("cohort {cohort}: "))?;
    Ok(engine.dialect().portable(&medfed_cohort::sql_for(&c)))
}

pub(crate) fn i64_column(
    b: &RecordBatch,
    i: usize,
    id: &str,
) -> Result<Vec<Option<i64>>, AnalysisError> {
    let c = cast(b.column(i), &DataType::Int64).map_err(|e| shape(id, e.to_string()))?;
    let a = c
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("cast to Int64");
    Ok((0..a.len())
        .map(|r| if a.is_null(r) { None } else { Some(a.value(r)) })
        .collect())
}

/// Distinct persons of a cohort (the base population of its tables).
async fn cohort_persons(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    cohort: &str,
) -> Result<Vec<i64>, AnalysisError> {
    let sql = format!(
        "SELECT DISTINCT subject_id FROM ({}) c",
        cohort_sql(engine, spec, cohort)?
    );
    let mut out = Vec::new();
    for b in engine.sql(&sql).await? {
        out.extend(i64_column(&b, 0, spec.id())?.into_iter().flatten());
    }
    Ok(out)
}

/// One cohort entry with what the time-at-risk analyses need.
pub(crate) struct Entry {
    pub(crate) person: i64,
    pub(crate) start: i32,
    pub(crate) end: i32,
    pub(crate) op_end: i32,
    pub(crate) sex: &'static str,
    pub(crate) year_of_birth: i64,
}

pub(crate) async fn entries(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    cohort: &str,
) -> Result<Vec<Entry>, AnalysisError> {
    let sql = format!(
        "SELECT c.subject_id, c.start_day, c.end_day, {op_end}, p.gender_concept_id, p.year_of_birth \
         FROM ({cohort}) c JOIN person p ON p.person_id = c.subject_id \
         JOIN observation_period op ON op.person_id = c.subject_id \
         AND {op_start} <= c.start_day AND c.start_day <= {op_end}",
        cohort = cohort_sql(engine, spec, cohort)?,
        op_start = engine.dialect().days("op.observation_period_start_date"),
        op_end = engine.dialect().days("op.observation_period_end_date"),
    );
    let mut out = Vec::new();
    for b in engine.sql(&sql).await? {
        let cols: Vec<Vec<Option<i64>>> = (0..6)
            .map(|i| i64_column(&b, i, spec.id()))
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            let (Some(person), Some(start), Some(end), Some(op_end)) =
                (cols[0][r], cols[1][r], cols[2][r], cols[3][r])
            else {
                return Err(shape(spec.id(), "a cohort entry without dates"));
            };
            out.push(Entry {
                person,
                start: start as i32,
                end: end as i32,
                op_end: op_end as i32,
                sex: sex_label(cols[4][r]),
                year_of_birth: cols[5][r].unwrap_or(0),
            });
        }
    }
    out.sort_by_key(|e| (e.person, e.start));
    Ok(out)
}

/// Outcome cohort start days by person, sorted.
pub(crate) async fn outcome_days(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    cohort: &str,
) -> Result<HashMap<i64, Vec<i32>>, AnalysisError> {
    let sql = format!(
        "SELECT subject_id, start_day FROM ({}) o",
        cohort_sql(engine, spec, cohort)?
    );
    let mut out: HashMap<i64, Vec<i32>> = HashMap::new();
    for b in engine.sql(&sql).await? {
        let p = i64_column(&b, 0, spec.id())?;
        let d = i64_column(&b, 1, spec.id())?;
        for (p, d) in p.into_iter().zip(d) {
            if let (Some(p), Some(d)) = (p, d) {
                out.entry(p).or_default().push(d as i32);
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

pub fn sex_label(gender: Option<i64>) -> &'static str {
    match gender {
        Some(8507) => "male",
        Some(8532) => "female",
        _ => "other",
    }
}

/// Calendar year of a day number (days since 1970-01-01).
pub fn year_of(day: i32) -> i64 {
    use chrono::Datelike;
    chrono::NaiveDate::from_num_days_from_ce_opt(day + 719_163)
        .map(|d| i64::from(d.year()))
        .unwrap_or(1970)
}

pub fn age_group(age: i64, band: u32) -> String {
    let band = i64::from(band.max(1));
    let lo = age.max(0) / band * band;
    if band == 1 {
        lo.to_string()
    } else {
        format!("{lo}-{}", lo + band - 1)
    }
}

/// The time at risk of an entry, both ends inclusive, capped at its observation period's end.
pub(crate) fn time_at_risk(e: &Entry, tar: &TimeAtRisk) -> Option<(i32, i32)> {
    let anchor = |a: Anchor| match a {
        Anchor::CohortStart => e.start,
        Anchor::CohortEnd => e.end,
    };
    let s = anchor(tar.start_anchor) + tar.start_offset;
    let t = (anchor(tar.end_anchor) + tar.end_offset).min(e.op_end);
    (t >= s).then_some((s, t))
}

/// The first outcome in `[s, t]`, if any.
pub(crate) fn first_outcome(days: Option<&Vec<i32>>, s: i32, t: i32) -> Option<i32> {
    let days = days?;
    let i = days.partition_point(|d| *d < s);
    days.get(i).copied().filter(|d| *d <= t)
}

/// Incidence measures: entries, outcomes and person-days of each entry in its time at risk, the
/// person-time ending at the first outcome.
fn add_incidence(
    t: &mut Table,
    prefix: &[&str],
    entries: &[Entry],
    outcomes: &HashMap<i64, Vec<i32>>,
    tar: &TimeAtRisk,
    band: u32,
) {
    for e in entries {
        let Some((s, end)) = time_at_risk(e, tar) else {
            continue;
        };
        let o = first_outcome(outcomes.get(&e.person), s, end);
        let days = o.unwrap_or(end) - s + 1;
        let mut key: Vec<String> = prefix.iter().map(|p| p.to_string()).collect();
        key.push(age_group(year_of(e.start) - e.year_of_birth, band));
        key.push(e.sex.to_string());
        t.add(key, &[1.0, o.is_some() as u8 as f64, f64::from(days)]);
    }
}

fn incidence_measures() -> Vec<Measure> {
    vec![
        Measure::count("entries"),
        Measure::count("outcomes"),
        Measure::sum("person_days"),
    ]
}

fn persons_of(entries: &[Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.person).collect()
}

async fn incidence_rate(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    r: &IncidenceRate,
) -> Result<SiteStatistic, AnalysisError> {
    let started = Instant::now();
    let target = entries(engine, spec, &r.target).await?;
    let outcomes = outcome_days(engine, spec, &r.outcome).await?;
    let mut t = Table::new(
        "incidence",
        &[("age_group", true), ("sex", true)],
        incidence_measures(),
    );
    add_incidence(&mut t, &[], &target, &outcomes, &r.tar, r.age_band);
    t.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(SiteStatistic::cohort_tables(vec![t], persons_of(&target)))
}

async fn comparative(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    c: &ComparativeCohort,
) -> Result<SiteStatistic, AnalysisError> {
    let started = Instant::now();
    let target = entries(engine, spec, &c.target).await?;
    let comparator = entries(engine, spec, &c.comparator).await?;
    let outcomes = outcome_days(engine, spec, &c.outcome).await?;
    let mut t = Table::new(
        "comparative",
        &[("arm", true), ("age_group", true), ("sex", true)],
        incidence_measures(),
    );
    add_incidence(&mut t, &["target"], &target, &outcomes, &c.tar, c.age_band);
    add_incidence(
        &mut t,
        &["comparator"],
        &comparator,
        &outcomes,
        &c.tar,
        c.age_band,
    );
    // The site's Mantel–Haenszel terms over its own strata (site × age group × sex): sums over
    // many persons that stay informative when the stratum cells are too small to release.
    let mut terms = Table::new(
        "mh_terms",
        &[],
        vec![
            Measure::count("outcomes_target"),
            Measure::count("outcomes_comparator"),
            Measure::sum("person_years_target"),
            Measure::sum("person_years_comparator"),
            Measure::sum("mh_numerator"),
            Measure::sum("mh_denominator"),
            Measure::sum("mh_variance"),
        ],
    );
    let sums = crate::pooled::MhSums::of(t.cells.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    terms.add(Vec::new(), &sums.terms());
    t.elapsed_ms = started.elapsed().as_millis() as u64;
    let mut base = persons_of(&target);
    base.extend(persons_of(&comparator));
    Ok(SiteStatistic::cohort_tables(vec![t, terms], base))
}

async fn kaplan_meier(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    k: &KaplanMeier,
) -> Result<SiteStatistic, AnalysisError> {
    let started = Instant::now();
    let target = entries(engine, spec, &k.target).await?;
    let outcomes = outcome_days(engine, spec, &k.outcome).await?;
    let mut t = Table::new(
        "survival",
        &[("day", true), ("status", true)],
        vec![Measure::count("entries")],
    );
    let step = k.interval_days as i32;
    for e in &target {
        let Some((s, end)) = time_at_risk(e, &k.tar) else {
            continue;
        };
        let (day, status) = match first_outcome(outcomes.get(&e.person), s, end) {
            Some(o) => (o - s, "event"),
            None => (end - s, "censored"),
        };
        // Round up to the grid: an event on day 1..=30 of a 30-day grid counts at day 30.
        let day = (day + step - 1) / step * step;
        t.add(vec![day.to_string(), status.to_string()], &[1.0]);
    }
    t.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(SiteStatistic::cohort_tables(vec![t], persons_of(&target)))
}

async fn cohort_characterization(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    c: &CohortCharacterization,
) -> Result<SiteStatistic, AnalysisError> {
    let started = Instant::now();
    let cohort = cohort_sql(engine, spec, &c.cohort)?;
    let index = format!(
        "(SELECT subject_id, MIN(start_day) AS idx FROM ({cohort}) c0 GROUP BY subject_id) ix"
    );
    // Demographics and prior observation at the index date, in Rust over one row per person.
    let sql = format!(
        "SELECT ix.subject_id, ix.idx, p.gender_concept_id, p.year_of_birth, MIN({op_start}) \
         FROM {index} JOIN person p ON p.person_id = ix.subject_id \
         LEFT JOIN observation_period op ON op.person_id = ix.subject_id AND {op_start} <= ix.idx AND ix.idx <= {op_end} \
         GROUP BY 1, 2, 3, 4",
        op_start = engine.dialect().days("op.observation_period_start_date"),
        op_end = engine.dialect().days("op.observation_period_end_date"),
    );
    let mut demo = Table::new(
        "demographics",
        &[("age_group", true), ("sex", true)],
        vec![Measure::count("persons")],
    );
    let dist = || {
        vec![
            Measure::count("n"),
            Measure::sum("sum"),
            Measure::sum("sum_sq"),
        ]
    };
    let mut age = Table::new("age_at_index", &[], dist());
    let mut prior = Table::new("prior_observation_days", &[], dist());
    let mut base = Vec::new();
    for b in engine.sql(&sql).await? {
        let cols: Vec<Vec<Option<i64>>> = (0..5)
            .map(|i| i64_column(&b, i, spec.id()))
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            let (Some(person), Some(idx)) = (cols[0][r], cols[1][r]) else {
                continue;
            };
            base.push(person);
            let a = year_of(idx as i32) - cols[3][r].unwrap_or(0);
            demo.add(
                vec![age_group(a, 10), sex_label(cols[2][r]).to_string()],
                &[1.0],
            );
            let af = a as f64;
            age.add(vec![], &[1.0, af, af * af]);
            if let Some(op) = cols[4][r] {
                let d = (idx - op) as f64;
                prior.add(vec![], &[1.0, d, d * d]);
            }
        }
    }
    demo.elapsed_ms = started.elapsed().as_millis() as u64;
    let mut tables = vec![demo, age, prior];
    let w = c.window_days;
    for (name, table, concept, date) in [
        (
            "conditions",
            "condition_occurrence",
            "condition_concept_id",
            "condition_start_date",
        ),
        (
            "drugs",
            "drug_exposure",
            "drug_concept_id",
            "drug_exposure_start_date",
        ),
    ] {
        let t = Table::new(
            name,
            &[("concept_id", false)],
            vec![Measure::count("persons")],
        );
        let sql = format!(
            "SELECT {}, CAST(COUNT(DISTINCT x.person_id) AS BIGINT) FROM {table} x JOIN {index} ON ix.subject_id = x.person_id \
             WHERE {d} BETWEEN ix.idx - {w} AND ix.idx GROUP BY 1",
            text(&format!("x.{concept}")),
            d = engine.dialect().days(&format!("x.{date}")),
        );
        tables.push(query_table(engine, t, &sql, spec.id()).await?);
    }
    let t = Table::new(
        "measurements",
        &[("concept_id", false)],
        vec![
            Measure::count("persons"),
            Measure::count("n"),
            Measure::sum("sum"),
            Measure::sum("sum_sq"),
        ],
    );
    let sql = format!(
        "SELECT {}, CAST(COUNT(DISTINCT x.person_id) AS BIGINT), CAST(COUNT(*) AS BIGINT), CAST(SUM(x.value_as_number) AS DOUBLE PRECISION), CAST(SUM(x.value_as_number * x.value_as_number) AS DOUBLE PRECISION) \
         FROM measurement x JOIN {index} ON ix.subject_id = x.person_id \
         WHERE x.value_as_number IS NOT NULL AND {d} BETWEEN ix.idx - {w} AND ix.idx GROUP BY 1",
        text("x.measurement_concept_id"),
        d = engine.dialect().days("x.measurement_date"),
    );
    tables.push(query_table(engine, t, &sql, spec.id()).await?);
    Ok(SiteStatistic::cohort_tables(tables, base))
}

/// The SQL expression of a covariate over `person p` (with `fo`, `l` and the covariate's own join),
/// plus that join.
async fn covariate(
    engine: &SiteEngine,
    c: &Covariate,
    alias: &str,
) -> Result<(String, String), AnalysisError> {
    let age = format!(
        "COALESCE({}, 'unknown')",
        text(&format!(
            "FLOOR(({} - p.year_of_birth) / 10.0) * 10",
            engine.dialect().year("fo.s")
        ))
    );
    Ok(match c {
        Covariate::Sex => (text("p.gender_concept_id"), String::new()),
        Covariate::AgeGroup => (age, String::new()),
        Covariate::RaceConceptId => (text("p.race_concept_id"), String::new()),
        Covariate::EthnicityConceptId => (text("p.ethnicity_concept_id"), String::new()),
        Covariate::Province => ("COALESCE(l.state, 'unknown')".to_string(), String::new()),
        Covariate::Condition(ids) | Covariate::Drug(ids) => {
            let (table, col) = if matches!(c, Covariate::Condition(_)) {
                ("condition_occurrence", "condition_concept_id")
            } else {
                ("drug_exposure", "drug_concept_id")
            };
            let ids = expand(engine, ids).await?;
            let list = ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!("CASE WHEN {alias}.person_id IS NULL THEN 'no' ELSE 'yes' END"),
                format!(
                    "LEFT JOIN (SELECT DISTINCT person_id FROM {table} WHERE {col} IN ({list})) {alias} ON {alias}.person_id = p.person_id"
                ),
            )
        }
    })
}

fn covariate_name(c: &Covariate) -> &'static str {
    match c {
        Covariate::Sex => "gender_concept_id",
        Covariate::AgeGroup => "age_group",
        Covariate::RaceConceptId => "race_concept_id",
        Covariate::EthnicityConceptId => "ethnicity_concept_id",
        Covariate::Province => "province",
        Covariate::Condition(_) => "condition",
        Covariate::Drug(_) => "drug",
    }
}

async fn cross_tab(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    x: &CrossTab,
) -> Result<SiteStatistic, AnalysisError> {
    let (re, rj) = covariate(engine, &x.rows, "rj").await?;
    let (ce, cj) = covariate(engine, &x.cols, "cj").await?;
    let (mut rn, mut cn) = (covariate_name(&x.rows), covariate_name(&x.cols));
    if rn == cn {
        (rn, cn) = ("rows", "cols");
    }
    let restrict = match &x.cohort {
        Some(c) => format!(
            "WHERE p.person_id IN (SELECT subject_id FROM ({}) c)",
            cohort_sql(engine, spec, c)?
        ),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {re}, {ce}, CAST(COUNT(*) AS BIGINT) FROM person p \
         LEFT JOIN {FIRST} ON fo.person_id = p.person_id \
         LEFT JOIN location l ON l.location_id = p.location_id {rj} {cj} {restrict} GROUP BY 1, 2",
        FIRST = "(SELECT person_id, MIN(observation_period_start_date) AS s FROM observation_period GROUP BY person_id) fo",
    );
    let t = Table::new(
        "crosstab",
        &[(rn, true), (cn, true)],
        vec![Measure::count("persons")],
    );
    let t = query_table(engine, t, &sql, spec.id()).await?;
    Ok(match &x.cohort {
        Some(c) => SiteStatistic::cohort_tables(vec![t], cohort_persons(engine, spec, c).await?),
        None => SiteStatistic::tables(vec![t]),
    })
}

async fn descriptive(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    d: &Descriptive,
) -> Result<SiteStatistic, AnalysisError> {
    let values = match d.variable {
        Variable::Age => format!(
            "SELECT p.person_id, CAST({} - p.year_of_birth AS DOUBLE PRECISION) AS v FROM person p JOIN \
             (SELECT person_id, MIN(observation_period_start_date) AS s FROM observation_period GROUP BY person_id) fo ON fo.person_id = p.person_id",
            engine.dialect().year("fo.s")
        ),
        Variable::ObservationDays => format!(
            "SELECT person_id, CAST({} - {} AS DOUBLE PRECISION) AS v FROM observation_period",
            engine.dialect().days("observation_period_end_date"),
            engine.dialect().days("observation_period_start_date")
        ),
        Variable::Measurement(c) => format!(
            "SELECT person_id, CAST(value_as_number AS DOUBLE PRECISION) AS v FROM measurement \
             WHERE measurement_concept_id = {c} AND value_as_number IS NOT NULL"
        ),
    };
    let values = match &d.cohort {
        Some(c) => format!(
            "SELECT * FROM ({values}) v0 WHERE person_id IN (SELECT subject_id FROM ({}) c)",
            cohort_sql(engine, spec, c)?
        ),
        None => values,
    };
    let w = d.bin_width;
    let summary = Table::new(
        "summary",
        &[],
        vec![
            Measure::count("n"),
            Measure::count("persons"),
            Measure::sum("sum"),
            Measure::sum("sum_sq"),
        ],
    );
    let summary = query_table(
        engine,
        summary,
        &format!(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT person_id) AS BIGINT), SUM(v), SUM(v * v) FROM ({values}) x"
        ),
        spec.id(),
    )
    .await?;
    let hist = Table::new("histogram", &[("bin", true)], vec![Measure::count("n")]);
    let hist = query_table(
        engine,
        hist,
        &format!(
            "SELECT {}, CAST(COUNT(*) AS BIGINT) FROM ({values}) x GROUP BY 1",
            text(&format!("FLOOR(v / {w:?})"))
        ),
        spec.id(),
    )
    .await?;
    let tables = vec![summary, hist];
    Ok(match &d.cohort {
        Some(c) => SiteStatistic::cohort_tables(tables, cohort_persons(engine, spec, c).await?),
        None => SiteStatistic::tables(tables),
    })
}

async fn characterization(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
    ids: &[u32],
) -> Result<SiteStatistic, AnalysisError> {
    let chosen: Vec<&achilles::Analysis> = if ids.is_empty() {
        achilles::CATALOG.iter().collect()
    } else {
        ids.iter().filter_map(|i| achilles::analysis(*i)).collect()
    };
    let mut tables = Vec::with_capacity(chosen.len());
    for a in chosen {
        let t = Table::new(&a.id.to_string(), a.dims, a.measures());
        tables.push(query_table(engine, t, &a.sql(engine.dialect()), spec.id()).await?);
    }
    Ok(SiteStatistic::tables(tables))
}

/// Run the local step of a table analysis.
pub async fn run_tables(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
) -> Result<SiteStatistic, AnalysisError> {
    use AnalysisSpec as A;
    match spec {
        A::Characterization(c) => characterization(engine, spec, &c.analyses).await,
        A::CohortCharacterization(c) => cohort_characterization(engine, spec, c).await,
        A::CrossTab(x) => cross_tab(engine, spec, x).await,
        A::Descriptive(d) => descriptive(engine, spec, d).await,
        A::IncidenceRate(r) => incidence_rate(engine, spec, r).await,
        A::KaplanMeier(k) => kaplan_meier(engine, spec, k).await,
        A::ComparativeCohort(c) => comparative(engine, spec, c).await,
        A::Surveillance(_) => Err(shape(
            spec.id(),
            "surveillance counts are only ever added under secure aggregation; this task carries no aggregation step",
        )),
        A::VehicleEvents(_) => Err(AnalysisError::Data {
            id: spec.id().to_string(),
            message: "vehicle events are counted from a vehicle service's events log, which this node does not hold".into(),
        }),
        A::PersonCount(_) | A::CohortCount(_) | A::Regression(_) | A::Gwas(_) | A::Beacon(_) => {
            Err(shape(spec.id(), "not a table analysis"))
        }
    }
}
