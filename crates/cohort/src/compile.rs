//! [`Cohort`] → SQL (DataFusion dialect, dates as integer days) → cohort rows.
//!
//! The query follows Circe's own generation steps: codesets, primary events inside an observation
//! period, primary / qualified / expression limits, end strategy capped at the observation period end,
//! and era collapse with the pad. Only validated integers are interpolated.

use arrow::array::{Array, Int32Array, Int64Array};
use medfed_engine::SiteEngine;

use crate::parse::{Cohort, ConceptSet, Criterion, Domain, EndStrategy, Group, Limit, NumRange};
use crate::CohortError;

/// One cohort entry. Dates are days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CohortRow {
    pub subject_id: i64,
    pub start: i32,
    pub end: i32,
}

fn ids(v: &[i64]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Concepts of a set, as Circe resolves them: listed concepts present in `concept`, plus valid
/// descendants of the items marked `includeDescendants`; minus the excluded items resolved the same way.
fn codeset_sql(set: &ConceptSet) -> String {
    let resolve = |excluded: bool| -> Option<String> {
        let items: Vec<_> = set
            .items
            .iter()
            .filter(|i| i.excluded == excluded)
            .collect();
        if items.is_empty() {
            return None;
        }
        let all: Vec<i64> = items.iter().map(|i| i.concept_id).collect();
        let desc: Vec<i64> = items
            .iter()
            .filter(|i| i.descendants)
            .map(|i| i.concept_id)
            .collect();
        let mut q = format!(
            "SELECT concept_id FROM concept WHERE concept_id IN ({})",
            ids(&all)
        );
        if !desc.is_empty() {
            q.push_str(&format!(
                " UNION SELECT c.concept_id FROM concept c JOIN concept_ancestor ca ON c.concept_id = ca.descendant_concept_id \
                 WHERE ca.ancestor_concept_id IN ({}) AND c.invalid_reason IS NULL",
                ids(&desc)
            ));
        }
        Some(q)
    };
    let include = resolve(false)
        .unwrap_or_else(|| "SELECT CAST(NULL AS BIGINT) AS concept_id WHERE FALSE".into());
    match resolve(true) {
        Some(ex) => format!("SELECT concept_id FROM ({include}) i WHERE concept_id NOT IN (SELECT concept_id FROM ({ex}) x)"),
        None => include,
    }
}

/// Table, id, concept, start, end expressions of a criterion's domain (Circe's defaults for the end).
fn domain(
    d: Domain,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    String,
) {
    let plus1 = |c: &str| format!("CAST({c} AS INT) + 1");
    match d {
        Domain::ConditionOccurrence => ("condition_occurrence", "condition_occurrence_id", "condition_concept_id", "condition_start_date",
            format!("COALESCE(CAST(condition_end_date AS INT), {})", plus1("condition_start_date"))),
        Domain::ConditionEra => ("condition_era", "condition_era_id", "condition_concept_id", "condition_era_start_date",
            "CAST(condition_era_end_date AS INT)".into()),
        Domain::DrugExposure => ("drug_exposure", "drug_exposure_id", "drug_concept_id", "drug_exposure_start_date",
            format!("COALESCE(CAST(drug_exposure_end_date AS INT), CAST(drug_exposure_start_date AS INT) + CAST(days_supply AS INT), {})", plus1("drug_exposure_start_date"))),
        Domain::DrugEra => ("drug_era", "drug_era_id", "drug_concept_id", "drug_era_start_date", "CAST(drug_era_end_date AS INT)".into()),
        Domain::ProcedureOccurrence => ("procedure_occurrence", "procedure_occurrence_id", "procedure_concept_id", "procedure_date",
            format!("COALESCE(CAST(procedure_end_date AS INT), {})", plus1("procedure_date"))),
        Domain::VisitOccurrence => ("visit_occurrence", "visit_occurrence_id", "visit_concept_id", "visit_start_date",
            "CAST(visit_end_date AS INT)".into()),
        Domain::Observation => ("observation", "observation_id", "observation_concept_id", "observation_date", plus1("observation_date")),
        Domain::Measurement => ("measurement", "measurement_id", "measurement_concept_id", "measurement_date", plus1("measurement_date")),
        // Circe: a death starts and ends on the death date (end = date + 1); the concept set applies
        // to the cause. One death per person, so the person is the event id.
        Domain::Death => ("death", "person_id", "cause_concept_id", "death_date", plus1("death_date")),
        Domain::ObservationPeriod => ("observation_period", "observation_period_id", "period_type_concept_id",
            "observation_period_start_date", "CAST(observation_period_end_date AS INT)".into()),
    }
}

fn range_sql(expr: &str, r: &NumRange) -> String {
    let v = r.value;
    match (r.op.as_str(), r.extent) {
        ("lt", _) => format!("{expr} < {v}"),
        ("lte", _) => format!("{expr} <= {v}"),
        ("eq", _) => format!("{expr} = {v}"),
        ("gt", _) => format!("{expr} > {v}"),
        ("gte", _) => format!("{expr} >= {v}"),
        ("bt", Some(x)) => format!("{expr} BETWEEN {v} AND {x}"),
        (_, Some(x)) => format!("NOT ({expr} BETWEEN {v} AND {x})"),
        _ => "FALSE".into(),
    }
}

fn criterion_sql(c: &Criterion) -> String {
    let (table, id, concept, start, end) = domain(c.domain);
    let visit = match c.domain {
        Domain::ConditionEra | Domain::DrugEra | Domain::Death | Domain::ObservationPeriod => {
            "CAST(NULL AS BIGINT)"
        }
        _ => "CAST(visit_occurrence_id AS BIGINT)",
    };
    // Value and unit of measurements and observations (NULL elsewhere; the parser allows the
    // filters only on those two).
    let (vnum, unit) = match c.domain {
        Domain::Measurement | Domain::Observation => (
            "CAST(value_as_number AS DOUBLE PRECISION)",
            "CAST(unit_concept_id AS BIGINT)",
        ),
        _ => ("CAST(NULL AS DOUBLE PRECISION)", "CAST(NULL AS BIGINT)"),
    };
    let type_col = match c.domain {
        Domain::ConditionOccurrence => "CAST(condition_type_concept_id AS BIGINT)",
        Domain::DrugExposure => "CAST(drug_type_concept_id AS BIGINT)",
        Domain::ProcedureOccurrence => "CAST(procedure_type_concept_id AS BIGINT)",
        Domain::VisitOccurrence => "CAST(visit_type_concept_id AS BIGINT)",
        Domain::Observation => "CAST(observation_type_concept_id AS BIGINT)",
        Domain::Measurement => "CAST(measurement_type_concept_id AS BIGINT)",
        Domain::Death => "CAST(death_type_concept_id AS BIGINT)",
        _ => "CAST(NULL AS BIGINT)",
    };
    let filter = match c.codeset {
        Some(cs) => format!("WHERE {concept} IN (SELECT concept_id FROM codeset_{cs})"),
        None => String::new(),
    };
    let mut outer = Vec::new();
    if c.first {
        outer.push("e.ordinal = 1".to_string());
    }
    if let Some(a) = &c.age {
        outer.push(range_sql(
            "(EXTRACT(YEAR FROM e.start_date) - p.year_of_birth)",
            a,
        ));
    }
    if !c.gender.is_empty() {
        outer.push(format!("p.gender_concept_id IN ({})", ids(&c.gender)));
    }
    if let Some(v) = &c.value {
        outer.push(range_sql("e.v_num", v));
    }
    if !c.unit.is_empty() {
        outer.push(format!("e.u_id IN ({})", ids(&c.unit)));
    }
    // Circe: `<Domain>Type` keeps those record types; with `<Domain>TypeExclude` it drops them (and
    // keeps records of unknown type). An empty list filters nothing either way.
    if !c.types.is_empty() {
        outer.push(if c.types_exclude {
            format!("(e.t_id IS NULL OR e.t_id NOT IN ({}))", ids(&c.types))
        } else {
            format!("e.t_id IN ({})", ids(&c.types))
        });
    }
    let wher = if outer.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", outer.join(" AND "))
    };
    format!(
        "SELECT e.person_id, e.event_id, e.s, e.e, e.visit_id FROM (\
           SELECT person_id, CAST({id} AS BIGINT) AS event_id, {start} AS start_date, CAST({start} AS INT) AS s, {end} AS e, {visit} AS visit_id, {vnum} AS v_num, {unit} AS u_id, {type_col} AS t_id, \
           ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY {start}, {id}) AS ordinal FROM {table} {filter}) e \
         JOIN person p ON p.person_id = e.person_id {wher}"
    )
}

/// The columns of `primary_events` and of every CTE derived from it.
const PE_COLUMNS: &str = "pe_id, person_id, event_id, s, e, visit_id, op_s, op_e";

fn limit_sql(input: &str, l: Limit) -> String {
    match l {
        Limit::All => format!("SELECT * FROM {input}"),
        Limit::First | Limit::Last => {
            let dir = if l == Limit::First { "ASC" } else { "DESC" };
            // Explicit columns (the columns of primary_events), not `* EXCLUDE`, so that the same
            // statement runs on PostgreSQL.
            format!(
                "SELECT {PE_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY s {dir}, event_id) AS rn FROM {input}) lim WHERE rn = 1"
            )
        }
    }
}

/// The whole cohort as one SQL statement returning `subject_id, start_day, end_day`.
pub fn sql_for(c: &Cohort) -> String {
    format!(
        "WITH {} SELECT CAST(person_id AS BIGINT) AS subject_id, CAST(MIN(s) AS INT) AS start_day, CAST(MAX(pe) - {} AS INT) AS end_day \
         FROM rows_grouped GROUP BY person_id, era ORDER BY 1, 2, 3",
        ctes(c),
        c.era_pad
    )
}

/// Distinct persons in the cohort, as one SQL statement returning one BIGINT.
pub fn count_sql(c: &Cohort) -> String {
    format!(
        "WITH {} SELECT CAST(COUNT(DISTINCT person_id) AS BIGINT) AS n FROM rows_grouped",
        ctes(c)
    )
}

/// The distinct persons of the cohort (one BIGINT column), for the node's differencing check.
pub fn persons_sql(c: &Cohort) -> String {
    format!(
        "WITH {} SELECT DISTINCT CAST(person_id AS BIGINT) AS person_id FROM rows_grouped",
        ctes(c)
    )
}

/// The common table expressions of a cohort, ending with `rows_grouped(person_id, s, pe, era)`.
fn ctes(c: &Cohort) -> String {
    let mut ctes: Vec<String> = c
        .concept_sets
        .iter()
        .map(|s| format!("codeset_{} AS ({})", s.id, codeset_sql(s)))
        .collect();
    let union = c
        .primary
        .iter()
        .map(criterion_sql)
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    ctes.push(format!("events AS ({union})"));
    ctes.push(format!(
        "primary_events AS (SELECT ROW_NUMBER() OVER (ORDER BY ev.person_id, ev.s, ev.event_id, ev.e) AS pe_id, ev.person_id, ev.event_id, ev.s, ev.e, ev.visit_id, \
         CAST(op.observation_period_start_date AS INT) AS op_s, \
         CAST(op.observation_period_end_date AS INT) AS op_e FROM events ev JOIN observation_period op ON op.person_id = ev.person_id \
         WHERE CAST(op.observation_period_start_date AS INT) <= ev.s - {} AND ev.s + {} <= CAST(op.observation_period_end_date AS INT))",
        c.prior_days, c.post_days
    ));
    ctes.push(format!(
        "limited AS ({})",
        limit_sql("primary_events", c.primary_limit)
    ));
    // Circe applies the qualified limit only together with additional criteria (ATLAS shows it only
    // then); without them it has no effect. v11 of the Eunomia conformance set depends on this.
    match &c.additional {
        Some(g) => {
            let passed = group_filter(g, "limited", "additional", &mut ctes);
            ctes.push(format!(
                "qualified AS ({})",
                limit_sql(&passed, c.qualified_limit)
            ));
        }
        None => ctes.push("qualified AS (SELECT * FROM limited)".to_string()),
    }
    let mut input = "qualified".to_string();
    for (i, rule) in c.inclusion.iter().enumerate() {
        input = group_filter(rule, &input, &format!("rule{i}"), &mut ctes);
    }
    ctes.push(format!(
        "included_all AS ({})",
        limit_sql(&input, c.expression_limit)
    ));
    // Censoring: an entry ends at the first censoring event on or after its start (within its
    // observation period).
    if c.censoring.is_empty() {
        ctes.push("included AS (SELECT *, CAST(NULL AS INT) AS cs FROM included_all)".to_string());
    } else {
        let union = c
            .censoring
            .iter()
            .map(criterion_sql)
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        ctes.push(format!(
            "censor AS (SELECT i.pe_id, MIN(x.s) AS cs FROM included_all i JOIN ({union}) x ON x.person_id = i.person_id \
             AND x.s >= i.s AND x.s <= i.op_e GROUP BY i.pe_id)"
        ));
        ctes.push("included AS (SELECT i.*, c.cs FROM included_all i LEFT JOIN censor c ON c.pe_id = i.pe_id)".to_string());
    }
    let pad = c.era_pad;
    match c.end {
        EndStrategy::ObservationEnd => ctes.push(format!(
            "cohort_rows AS (SELECT person_id, s, LEAST(op_e, COALESCE(cs, op_e)) + {pad} AS pe FROM included)"
        )),
        EndStrategy::DateOffset { from_end, offset } => {
            let base = if from_end { "e" } else { "s" };
            ctes.push(format!(
                "cohort_rows AS (SELECT person_id, s, LEAST({base} + {offset}, op_e, COALESCE(cs, op_e)) + {pad} AS pe FROM included)"
            ))
        }
        EndStrategy::CustomEra {
            codeset,
            gap,
            offset,
        } => {
            // Continuous exposure: every exposure of the drug concept set, with ends as Circe computes
            // them, bridged when the gap is at most `gap` days; the entry ends with the era that
            // contains its start.
            ctes.push(format!(
                "exposures AS (SELECT person_id, CAST(drug_exposure_start_date AS INT) AS s, \
                 COALESCE(CAST(drug_exposure_end_date AS INT), CAST(drug_exposure_start_date AS INT) + CAST(days_supply AS INT), CAST(drug_exposure_start_date AS INT) + 1) + {gap} AS pe \
                 FROM drug_exposure WHERE drug_concept_id IN (SELECT concept_id FROM codeset_{codeset}))"
            ));
            ctes.push(era_ctes("exposures", "exp"));
            ctes.push(format!(
                "drug_eras AS (SELECT person_id, MIN(s) AS era_s, MAX(pe) - {gap} AS era_e FROM exp_grouped GROUP BY person_id, era)"
            ));
            ctes.push(format!(
                "cohort_rows AS (SELECT i.person_id, i.s, LEAST(d.era_e + {offset}, i.op_e, COALESCE(i.cs, i.op_e)) + {pad} AS pe FROM included i \
                 JOIN drug_eras d ON d.person_id = i.person_id AND i.s BETWEEN d.era_s AND d.era_e)"
            ));
        }
    }
    // Era collapse of the cohort rows with the cohort's pad.
    ctes.push(era_ctes("cohort_rows", "rows"));
    ctes.join(", ")
}

/// Add CTEs that keep the rows of `input` satisfying group `g`; returns the name of the last one.
fn group_filter(g: &Group, input: &str, name: &str, ctes: &mut Vec<String>) -> String {
    let mut joins = String::new();
    let mut conds = Vec::new();
    for (i, cc) in g.criteria.iter().enumerate() {
        let w = &cc.window;
        let idx = if w.use_index_end { "q.e" } else { "q.s" };
        let ev = if w.use_event_end { "a.e" } else { "a.s" };
        let mut on = vec!["a.person_id = q.person_id".to_string()];
        if let Some(d) = w.start.days {
            on.push(format!("{ev} >= {idx} + ({})", w.start.coeff * d));
        }
        if let Some(d) = w.end.days {
            on.push(format!("{ev} <= {idx} + ({})", w.end.coeff * d));
        }
        if !cc.ignore_observation_period {
            on.push("a.s >= q.op_s AND a.s <= q.op_e".into());
        }
        if cc.restrict_visit {
            on.push("a.visit_id = q.visit_id".into());
        }
        ctes.push(format!(
            "{name}_c{i} AS (SELECT q.pe_id, COUNT(a.event_id) AS n FROM {input} q LEFT JOIN ({}) a ON {} GROUP BY q.pe_id)",
            criterion_sql(&cc.criterion),
            on.join(" AND ")
        ));
        joins.push_str(&format!(" JOIN {name}_c{i} c{i} ON c{i}.pe_id = q.pe_id"));
        let op = match cc.occurrence {
            0 => "=",
            1 => "<=",
            _ => ">=",
        };
        conds.push(format!("c{i}.n {op} {}", cc.count));
    }
    for d in &g.demographics {
        let mut parts = Vec::new();
        if let Some(a) = &d.age {
            parts.push(range_sql(
                "(EXTRACT(YEAR FROM CAST(q.s AS DATE)) - p.year_of_birth)",
                a,
            ));
        }
        if !d.gender.is_empty() {
            parts.push(format!("p.gender_concept_id IN ({})", ids(&d.gender)));
        }
        if !parts.is_empty() {
            conds.push(format!("({})", parts.join(" AND ")));
        }
    }
    let wher = if conds.is_empty() {
        "TRUE".to_string()
    } else if g.any {
        conds.join(" OR ")
    } else {
        conds.join(" AND ")
    };
    ctes.push(format!(
        "{name} AS (SELECT q.* FROM {input} q{joins} JOIN person p ON p.person_id = q.person_id WHERE {wher})"
    ));
    name.to_string()
}

/// CTEs `{name}_marked` and `{name}_grouped` over `input(person_id, s, pe)` (pe: padded end). A row
/// joins the current era when it starts on or before the padded end of every earlier row of the
/// person; group by `(person_id, era)` and take `MIN(s)` and `MAX(pe)` minus the pad.
fn era_ctes(input: &str, name: &str) -> String {
    format!(
        "{name}_marked AS (SELECT person_id, s, pe, MAX(pe) OVER (PARTITION BY person_id ORDER BY s, pe ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev FROM {input}), \
         {name}_grouped AS (SELECT person_id, s, pe, SUM(CASE WHEN prev IS NULL OR s > prev THEN 1 ELSE 0 END) OVER (PARTITION BY person_id ORDER BY s, pe ROWS UNBOUNDED PRECEDING) AS era FROM {name}_marked)"
    )
}

/// Run a cohort on a site and return its rows sorted by subject, start, end.
pub async fn generate(engine: &SiteEngine, c: &Cohort) -> Result<Vec<CohortRow>, CohortError> {
    let batches = engine
        .sql(&engine.dialect().portable(&sql_for(c)))
        .await
        .map_err(|e| CohortError::Engine(e.to_string()))?;
    let mut rows = Vec::new();
    for b in batches {
        let shape = || CohortError::Engine("unexpected column types".into());
        let p = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(shape)?;
        let s = b
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(shape)?;
        let e = b
            .column(2)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(shape)?;
        for i in 0..b.num_rows() {
            if p.is_null(i) || s.is_null(i) || e.is_null(i) {
                return Err(CohortError::Engine(format!("null in cohort row {i}")));
            }
            rows.push(CohortRow {
                subject_id: p.value(i),
                start: s.value(i),
                end: e.value(i),
            });
        }
    }
    rows.sort_unstable();
    Ok(rows)
}
