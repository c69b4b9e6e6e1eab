//! [`Cohort`] → SQL (DataFusion dialect, dates as integer days) → cohort rows.
//!
//! The query follows Circe's own generation steps: codesets, primary events inside an observation
//! period, primary / qualified / expression limits, end strategy capped at the observation period end,
//! and era collapse with the pad. Only validated integers are interpolated.

use arrow::array::{Array, Int32Array, Int64Array};
use medfed_engine::SiteEngine;

use crate::parse::{
    Cohort, ConceptSet, CountColumn, Criterion, DateRange, Domain, EndStrategy, Filter, Group,
    GroupType, Limit, NumRange, Range, Window,
};
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
/// descendants of the items marked `includeDescendants`, plus the concepts that map ('Maps to') to
/// the items marked `includeMapped` (and to their descendants); minus the excluded items resolved the
/// same way.
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
        let listed_and_descendants = |items: &[&crate::parse::ConceptItem]| {
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
            q
        };
        let mut q = listed_and_descendants(&items);
        let mapped: Vec<_> = items.iter().copied().filter(|i| i.mapped).collect();
        if !mapped.is_empty() {
            q.push_str(&format!(
                " UNION SELECT DISTINCT cr.concept_id_1 AS concept_id FROM ({}) m JOIN concept_relationship cr \
                 ON m.concept_id = cr.concept_id_2 AND cr.relationship_id = 'Maps to' AND cr.invalid_reason IS NULL",
                listed_and_descendants(&mapped)
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

/// Where a criterion's domain keeps its fields, and Circe's start and end dates for its records.
struct DomainCols {
    table: &'static str,
    id: &'static str,
    /// The record's concept (what a `CodesetId` filters on).
    concept: &'static str,
    start: &'static str,
    /// Integer-day expression of the record's end, with Circe's defaults for a missing end.
    end: String,
    /// `visit_occurrence_id`, or NULL where Circe has none.
    visit: &'static str,
    source: Option<&'static str>,
    type_col: Option<&'static str>,
}

fn domain(d: Domain) -> DomainCols {
    let day = |c: &str| format!("CAST({c} AS INT)");
    let plus1 = |c: &str| format!("CAST({c} AS INT) + 1");
    let null = "CAST(NULL AS BIGINT)";
    let visit = "CAST(visit_occurrence_id AS BIGINT)";
    let cols = |table, id, concept, start, end, visit, source, type_col| DomainCols {
        table,
        id,
        concept,
        start,
        end,
        visit,
        source,
        type_col,
    };
    match d {
        Domain::ConditionOccurrence => cols("condition_occurrence", "condition_occurrence_id", "condition_concept_id", "condition_start_date",
            format!("COALESCE({}, {})", day("condition_end_date"), plus1("condition_start_date")), visit,
            Some("condition_source_concept_id"), Some("condition_type_concept_id")),
        Domain::ConditionEra => cols("condition_era", "condition_era_id", "condition_concept_id", "condition_era_start_date",
            day("condition_era_end_date"), null, None, None),
        Domain::DrugExposure => cols("drug_exposure", "drug_exposure_id", "drug_concept_id", "drug_exposure_start_date",
            format!("COALESCE({}, CAST(drug_exposure_start_date AS INT) + CAST(days_supply AS INT), {})", day("drug_exposure_end_date"), plus1("drug_exposure_start_date")),
            visit, Some("drug_source_concept_id"), Some("drug_type_concept_id")),
        Domain::DrugEra => cols("drug_era", "drug_era_id", "drug_concept_id", "drug_era_start_date", day("drug_era_end_date"), null, None, None),
        Domain::DoseEra => cols("dose_era", "dose_era_id", "drug_concept_id", "dose_era_start_date", day("dose_era_end_date"), null, None, None),
        Domain::ProcedureOccurrence => cols("procedure_occurrence", "procedure_occurrence_id", "procedure_concept_id", "procedure_date",
            format!("COALESCE({}, {})", day("procedure_end_date"), plus1("procedure_date")), visit,
            Some("procedure_source_concept_id"), Some("procedure_type_concept_id")),
        Domain::VisitOccurrence => cols("visit_occurrence", "visit_occurrence_id", "visit_concept_id", "visit_start_date",
            day("visit_end_date"), visit, Some("visit_source_concept_id"), Some("visit_type_concept_id")),
        Domain::VisitDetail => cols("visit_detail", "visit_detail_id", "visit_detail_concept_id", "visit_detail_start_date",
            day("visit_detail_end_date"), visit, Some("visit_detail_source_concept_id"), Some("visit_detail_type_concept_id")),
        Domain::Observation => cols("observation", "observation_id", "observation_concept_id", "observation_date", plus1("observation_date"),
            visit, Some("observation_source_concept_id"), Some("observation_type_concept_id")),
        Domain::Measurement => cols("measurement", "measurement_id", "measurement_concept_id", "measurement_date", plus1("measurement_date"),
            visit, Some("measurement_source_concept_id"), Some("measurement_type_concept_id")),
        // Circe: a death starts and ends on the death date (end = date + 1); the concept set applies
        // to the cause. One death per person, so the person is the event id.
        Domain::Death => cols("death", "person_id", "cause_concept_id", "death_date", plus1("death_date"), null,
            Some("cause_source_concept_id"), Some("death_type_concept_id")),
        Domain::DeviceExposure => cols("device_exposure", "device_exposure_id", "device_concept_id", "device_exposure_start_date",
            format!("COALESCE({}, {})", day("device_exposure_end_date"), plus1("device_exposure_start_date")), visit,
            Some("device_source_concept_id"), Some("device_type_concept_id")),
        Domain::Specimen => cols("specimen", "specimen_id", "specimen_concept_id", "specimen_date", plus1("specimen_date"), null,
            None, Some("specimen_type_concept_id")),
        Domain::ObservationPeriod => cols("observation_period", "observation_period_id", "period_type_concept_id",
            "observation_period_start_date", day("observation_period_end_date"), null, None, None),
        Domain::PayerPlanPeriod => cols("payer_plan_period", "payer_plan_period_id", "payer_concept_id",
            "payer_plan_period_start_date", day("payer_plan_period_end_date"), null, None, None),
    }
}

fn op_sql(op: &str) -> &'static str {
    match op {
        "lt" => "<",
        "lte" => "<=",
        "eq" => "=",
        "!eq" => "<>",
        "gt" => ">",
        _ => ">=",
    }
}

/// A range over `expr`, its bounds written by `fmt`.
fn bounds_sql<T: Copy>(expr: &str, r: &Range<T>, fmt: impl Fn(T) -> String) -> String {
    let v = fmt(r.value);
    match (r.op.as_str(), r.extent) {
        ("bt", Some(x)) => format!("({expr} >= {v} AND {expr} <= {})", fmt(x)),
        ("!bt", Some(x)) => format!("NOT ({expr} >= {v} AND {expr} <= {})", fmt(x)),
        (op, _) => format!("{expr} {} {v}", op_sql(op)),
    }
}

/// A numeric range as Circe writes it. `integer` ranges (ages, counts, lengths) use the integer
/// part of their bounds and decimal ones four decimals, as Circe's SQL builder does.
fn range_sql(expr: &str, r: &NumRange, integer: bool) -> String {
    bounds_sql(expr, r, |x| {
        if integer {
            format!("{}", x.trunc() as i64)
        } else {
            format!("{x:.4}")
        }
    })
}

/// A date range over an integer-day expression.
fn date_range_sql(expr: &str, r: &DateRange) -> String {
    bounds_sql(expr, r, |d| d.to_string())
}

/// The records a criterion selects: `person_id, event_id, s, e, visit_id, c_id` (days as integers,
/// `c_id` the record's concept). A criterion with nested criteria adds CTEs (named after `name`) to
/// `ctes`, which must precede the statement that uses the returned query.
fn criterion_sql(c: &Criterion, name: &str, ctes: &mut Vec<String>) -> String {
    let d = domain(c.domain);
    let (table, id, start) = (d.table, d.id, d.start);
    // Concept sets filter the records before `First` picks the earliest, as in Circe.
    let mut inner = Vec::new();
    if let Some(cs) = c.codeset {
        inner.push(format!(
            "{} IN (SELECT concept_id FROM codeset_{cs})",
            d.concept
        ));
    }
    if let (Some(cs), Some(col)) = (c.source_codeset, d.source) {
        inner.push(format!("{col} IN (SELECT concept_id FROM codeset_{cs})"));
    }
    let filter = if inner.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", inner.join(" AND "))
    };
    let mut outer = Vec::new();
    if c.first {
        outer.push("e.ordinal = 1".to_string());
    }
    if let Some(a) = &c.age {
        outer.push(range_sql(
            "(EXTRACT(YEAR FROM CAST(e.s AS DATE)) - p.year_of_birth)",
            a,
            true,
        ));
    }
    if c.date_adjustment.is_some() {
        outer.push("e.e >= e.s".to_string());
    }
    if !c.gender.is_empty() {
        outer.push(format!("p.gender_concept_id IN ({})", ids(&c.gender)));
    }
    // The parser allows value and unit only on measurements and observations.
    if let Some(v) = &c.value {
        outer.push(range_sql(
            "CAST(e.value_as_number AS DOUBLE PRECISION)",
            v,
            false,
        ));
    }
    if !c.unit.is_empty() {
        outer.push(format!("e.unit_concept_id IN ({})", ids(&c.unit)));
    }
    // Circe: `<Domain>Type` keeps those record types; with `<Domain>TypeExclude` it drops them (and
    // keeps records of unknown type). An empty list filters nothing either way.
    if let (false, Some(col)) = (c.types.is_empty(), d.type_col) {
        outer.push(if c.types_exclude {
            format!("(e.{col} IS NULL OR e.{col} NOT IN ({}))", ids(&c.types))
        } else {
            format!("e.{col} IN ({})", ids(&c.types))
        });
    }
    if !c.condition_status.is_empty() {
        outer.push(format!(
            "e.condition_status_concept_id IN ({})",
            ids(&c.condition_status)
        ));
    }
    for f in &c.filters {
        match f {
            Filter::Num {
                expr,
                range,
                integer,
            } => outer.push(range_sql(expr, range, *integer)),
            Filter::Date { expr, range } => outer.push(date_range_sql(expr, range)),
            Filter::Concepts { col, ids: list } if !list.is_empty() => {
                outer.push(format!("{col} IN ({})", ids(list)))
            }
            Filter::Concepts { .. } => {}
            Filter::VisitType(list) => outer.push(format!(
                "e.visit_id IN (SELECT visit_occurrence_id FROM visit_occurrence WHERE visit_concept_id IN ({}))",
                ids(list)
            )),
        }
    }
    // A user-defined period: the event is those dates, for periods that cover them.
    let (mut s_expr, mut e_expr) = ("e.s".to_string(), "e.e".to_string());
    if let Some(x) = c.user_period.0 {
        outer.push(format!("e.s <= {x} AND e.e >= {x}"));
        s_expr = format!("CAST({x} AS INT)");
    }
    if let Some(x) = c.user_period.1 {
        outer.push(format!("e.s <= {x} AND e.e >= {x}"));
        e_expr = format!("CAST({x} AS INT)");
    }
    let wher = if outer.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", outer.join(" AND "))
    };
    // The record's start and end days, adjusted when the criterion says so.
    let (s_raw, e_raw) = (format!("CAST({start} AS INT)"), d.end.clone());
    let (s_in, e_in) = match c.date_adjustment {
        None => (s_raw, e_raw),
        Some(a) => {
            let pick = |from_end: bool| {
                if from_end {
                    e_raw.clone()
                } else {
                    s_raw.clone()
                }
            };
            (
                format!("({} + {})", pick(a.start_from_end), a.start_offset),
                format!("({} + {})", pick(a.end_from_end), a.end_offset),
            )
        }
    };
    let records = format!(
        "SELECT e.person_id, e.event_id, {s_expr} AS s, {e_expr} AS e, e.visit_id, e.c_id FROM (\
           SELECT t.*, CAST({id} AS BIGINT) AS event_id, {s_in} AS s, {e_in} AS e, {visit} AS visit_id, \
           CAST({concept} AS BIGINT) AS c_id, \
           ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY {start}, {id}) AS ordinal FROM {table} t {filter}) e \
         JOIN person p ON p.person_id = e.person_id {wher}",
        visit = d.visit,
        concept = d.concept,
    );
    let Some(g) = &c.correlated else {
        return records;
    };
    // Nested criteria (Circe's wrapCriteriaQuery): the records become index events inside their
    // observation period, and those satisfying the group are kept.
    ctes.push(format!(
        "{name}_ev AS (SELECT ROW_NUMBER() OVER (ORDER BY r.person_id, r.s, r.event_id, r.e) AS pe_id, r.person_id, r.event_id, r.s, r.e, r.visit_id, r.c_id, \
         CAST(op.observation_period_start_date AS INT) AS op_s, CAST(op.observation_period_end_date AS INT) AS op_e \
         FROM ({records}) r JOIN observation_period op ON op.person_id = r.person_id \
         AND CAST(op.observation_period_start_date AS INT) <= r.s AND CAST(op.observation_period_end_date AS INT) >= r.s)"
    ));
    let pass = group_pass(g, &format!("{name}_ev"), &format!("{name}_n"), ctes);
    format!(
        "SELECT person_id, event_id, s, e, visit_id, c_id FROM {name}_ev WHERE pe_id IN (SELECT pe_id FROM {pass})"
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
        "WITH {} SELECT subject_id, start_day, end_day FROM final_cohort ORDER BY 1, 2, 3",
        ctes(c)
    )
}

/// Distinct persons in the cohort, as one SQL statement returning one BIGINT.
pub fn count_sql(c: &Cohort) -> String {
    format!(
        "WITH {} SELECT CAST(COUNT(DISTINCT subject_id) AS BIGINT) AS n FROM final_cohort",
        ctes(c)
    )
}

/// The distinct persons of the cohort (one BIGINT column), for the node's differencing check.
pub fn persons_sql(c: &Cohort) -> String {
    format!(
        "WITH {} SELECT DISTINCT subject_id AS person_id FROM final_cohort",
        ctes(c)
    )
}

/// The common table expressions of a cohort, ending with
/// `final_cohort(subject_id BIGINT, start_day INT, end_day INT)`.
fn ctes(c: &Cohort) -> String {
    let mut ctes: Vec<String> = c
        .concept_sets
        .iter()
        .map(|s| format!("codeset_{} AS ({})", s.id, codeset_sql(s)))
        .collect();
    let mut union = Vec::new();
    for (i, p) in c.primary.iter().enumerate() {
        union.push(criterion_sql(p, &format!("primary{i}"), &mut ctes));
    }
    ctes.push(format!("events AS ({})", union.join(" UNION ALL ")));
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
    // Each inclusion rule is decided on the qualified events independently, as in Circe (whose
    // inclusion mask also allows reporting each rule's impact); an event must pass them all. Rules
    // are not chained: DataFusion inlines every reference to a CTE, so a chain would re-evaluate
    // the earlier rules once per reference.
    let passes: Vec<String> = c
        .inclusion
        .iter()
        .enumerate()
        .map(|(i, rule)| group_pass(rule, "qualified", &format!("rule{i}"), &mut ctes))
        .collect();
    let input = if passes.is_empty() {
        "qualified".to_string()
    } else {
        let conds = passes
            .iter()
            .map(|p| format!("q.pe_id IN (SELECT pe_id FROM {p})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        ctes.push(format!(
            "ruled AS (SELECT q.* FROM qualified q WHERE {conds})"
        ));
        "ruled".to_string()
    };
    ctes.push(format!(
        "included AS ({})",
        limit_sql(&input, c.expression_limit)
    ));
    // End dates, as Circe computes them: candidates from the observation period end (except with a
    // date offset, which is capped at it itself), the end strategy and the first censoring event;
    // an entry ends at the earliest candidate on or after its start, and has no row without one.
    let mut candidates = Vec::new();
    match c.end {
        EndStrategy::ObservationEnd => {}
        EndStrategy::DateOffset { from_end, offset } => {
            let base = if from_end { "e" } else { "s" };
            ctes.push(format!(
                "strategy_ends AS (SELECT pe_id, person_id, s, CASE WHEN {base} + {offset} > op_e THEN op_e ELSE {base} + {offset} END AS end_day FROM included)"
            ));
        }
        EndStrategy::CustomEra {
            codeset,
            gap,
            offset,
            days_supply_override,
        } => {
            // Continuous exposure: exposures of the concept set (on the drug or its source concept),
            // ends as Circe computes them, bridged when the gap is at most `gap` days; an entry ends
            // with (the offset end of) the era that contains its start.
            let end = match days_supply_override {
                Some(d) => format!("CAST(drug_exposure_start_date AS INT) + {d}"),
                None => "COALESCE(CAST(drug_exposure_end_date AS INT), CAST(drug_exposure_start_date AS INT) + CAST(days_supply AS INT), CAST(drug_exposure_start_date AS INT) + 1)".into(),
            };
            let exposures = |col: &str| {
                format!(
                    "SELECT person_id, CAST(drug_exposure_start_date AS INT) AS s, {end} + {gap} AS pe \
                     FROM drug_exposure WHERE {col} IN (SELECT concept_id FROM codeset_{codeset}) \
                     AND person_id IN (SELECT person_id FROM included)"
                )
            };
            ctes.push(format!(
                "exposures AS ({} UNION ALL {})",
                exposures("drug_concept_id"),
                exposures("drug_source_concept_id")
            ));
            ctes.push(era_ctes("exposures", "exp"));
            ctes.push(format!(
                "drug_eras AS (SELECT person_id, MIN(s) AS era_s, MAX(pe) - {gap} + {offset} AS era_e FROM exp_grouped GROUP BY person_id, era)"
            ));
            ctes.push(
                "strategy_ends AS (SELECT i.pe_id, i.person_id, i.s, d.era_e AS end_day FROM included i \
                 JOIN drug_eras d ON d.person_id = i.person_id AND i.s >= d.era_s AND i.s <= d.era_e)"
                    .to_string(),
            );
        }
    }
    if !matches!(c.end, EndStrategy::DateOffset { .. }) {
        candidates.push("SELECT pe_id, person_id, s, op_e AS end_day FROM included".to_string());
    }
    if !matches!(c.end, EndStrategy::ObservationEnd) {
        candidates.push("SELECT pe_id, person_id, s, end_day FROM strategy_ends".to_string());
    }
    // Censoring: the first censoring event on or after the entry's start, within its observation
    // period.
    if !c.censoring.is_empty() {
        let mut union = Vec::new();
        for (i, x) in c.censoring.iter().enumerate() {
            union.push(criterion_sql(x, &format!("censor{i}"), &mut ctes));
        }
        let union = union.join(" UNION ALL ");
        ctes.push(format!(
            "censor AS (SELECT i.pe_id, i.person_id, i.s, MIN(x.s) AS end_day FROM included i JOIN ({union}) x ON x.person_id = i.person_id \
             AND x.s >= i.s AND x.s <= i.op_e GROUP BY i.pe_id, i.person_id, i.s)"
        ));
        candidates.push("SELECT pe_id, person_id, s, end_day FROM censor".to_string());
    }
    ctes.push(format!(
        "end_candidates AS ({})",
        candidates.join(" UNION ALL ")
    ));
    let pad = c.era_pad;
    ctes.push(format!(
        "cohort_rows AS (SELECT person_id, s, MIN(end_day) + {pad} AS pe FROM end_candidates \
         WHERE end_day >= s GROUP BY pe_id, person_id, s)"
    ));
    // Era collapse of the cohort rows with the cohort's pad.
    ctes.push(era_ctes("cohort_rows", "rows"));
    ctes.push(format!(
        "collapsed AS (SELECT CAST(person_id AS BIGINT) AS subject_id, CAST(MIN(s) AS INT) AS start_day, CAST(MAX(pe) - {pad} AS INT) AS end_day \
         FROM rows_grouped GROUP BY person_id, era)"
    ));
    // The censor window clips entries after collapsing and drops those left empty.
    let start = match c.censor_start {
        Some(d) => format!("CASE WHEN start_day > {d} THEN start_day ELSE {d} END"),
        None => "start_day".into(),
    };
    let end = match c.censor_end {
        Some(d) => format!("CASE WHEN end_day < {d} THEN end_day ELSE {d} END"),
        None => "end_day".into(),
    };
    ctes.push(format!(
        "final_cohort AS (SELECT subject_id, CAST({start} AS INT) AS start_day, CAST({end} AS INT) AS end_day FROM collapsed WHERE {start} <= {end})"
    ));
    ctes.join(", ")
}

/// Window bounds as Circe writes them: `idx`/`ev` are the index and event dates the window compares;
/// an unbounded side is bounded by the index event's observation period unless that is ignored.
fn window_clauses(w: &Window, ev: &str, check_op: bool, out: &mut Vec<String>) {
    let idx = if w.use_index_end { "q.e" } else { "q.s" };
    let op_bound = |coeff: i64| if coeff == -1 { "q.op_s" } else { "q.op_e" };
    match w.start.days {
        Some(d) => out.push(format!("{ev} >= {idx} + ({})", w.start.coeff * d)),
        None if check_op => out.push(format!("{ev} >= {}", op_bound(w.start.coeff))),
        None => {}
    }
    match w.end.days {
        Some(d) => out.push(format!("{ev} <= {idx} + ({})", w.end.coeff * d)),
        None if check_op => out.push(format!("{ev} <= {}", op_bound(w.end.coeff))),
        None => {}
    }
}

/// Add CTEs deciding group `g` for every row of `input`; returns the name of a CTE holding the
/// `pe_id` of the rows that satisfy it. As in Circe, each criterion, demographic criterion and
/// subgroup is one item; `ALL` needs every item, `ANY` one, `AT_LEAST`/`AT_MOST` a count of them.
fn group_pass(g: &Group, input: &str, name: &str, ctes: &mut Vec<String>) -> String {
    let mut joins = String::new();
    let mut items = Vec::new();
    for (i, cc) in g.criteria.iter().enumerate() {
        let check_op = !cc.ignore_observation_period;
        let mut on = vec!["a.person_id = q.person_id".to_string()];
        if check_op {
            on.push("a.s >= q.op_s AND a.s <= q.op_e".into());
        }
        let ev = if cc.window.use_event_end {
            "a.e"
        } else {
            "a.s"
        };
        window_clauses(&cc.window, ev, check_op, &mut on);
        if let Some(w) = &cc.end_window {
            let ev = if w.use_event_end { "a.e" } else { "a.s" };
            window_clauses(w, ev, check_op, &mut on);
        }
        if cc.restrict_visit {
            on.push("a.visit_id = q.visit_id".into());
        }
        let counted = match cc.distinct {
            None => "a.event_id".to_string(),
            Some(col) => format!(
                "DISTINCT {}",
                match col {
                    CountColumn::DomainConcept => "a.c_id",
                    CountColumn::StartDate => "a.s",
                    CountColumn::VisitId => "a.visit_id",
                }
            ),
        };
        let records = criterion_sql(&cc.criterion, &format!("{name}_c{i}"), ctes);
        ctes.push(format!(
            "{name}_c{i} AS (SELECT q.pe_id, COUNT({counted}) AS n FROM {input} q LEFT JOIN ({records}) a ON {} GROUP BY q.pe_id)",
            on.join(" AND ")
        ));
        joins.push_str(&format!(" JOIN {name}_c{i} c{i} ON c{i}.pe_id = q.pe_id"));
        let op = match cc.occurrence {
            0 => "=",
            1 => "<=",
            _ => ">=",
        };
        items.push(format!("c{i}.n {op} {}", cc.count));
    }
    for d in &g.demographics {
        let mut parts = Vec::new();
        if let Some(a) = &d.age {
            parts.push(range_sql(
                "(EXTRACT(YEAR FROM CAST(q.s AS DATE)) - p.year_of_birth)",
                a,
                true,
            ));
        }
        for (col, list) in [
            ("gender", &d.gender),
            ("race", &d.race),
            ("ethnicity", &d.ethnicity),
        ] {
            if !list.is_empty() {
                parts.push(format!("p.{col}_concept_id IN ({})", ids(list)));
            }
        }
        if let Some(r) = &d.start {
            parts.push(date_range_sql("q.s", r));
        }
        if let Some(r) = &d.end {
            parts.push(date_range_sql("q.e", r));
        }
        items.push(if parts.is_empty() {
            "TRUE".to_string()
        } else {
            format!("({})", parts.join(" AND "))
        });
    }
    for (j, sub) in g.groups.iter().enumerate() {
        let pass = group_pass(sub, input, &format!("{name}_g{j}"), ctes);
        joins.push_str(&format!(" LEFT JOIN {pass} g{j} ON g{j}.pe_id = q.pe_id"));
        items.push(format!("g{j}.pe_id IS NOT NULL"));
    }
    let pass = format!("{name}_pass");
    if items.is_empty() {
        // Circe: an empty group keeps every event.
        ctes.push(format!("{pass} AS (SELECT pe_id FROM {input})"));
        return pass;
    }
    let k = items
        .iter()
        .map(|c| format!("(CASE WHEN {c} THEN 1 ELSE 0 END)"))
        .collect::<Vec<_>>()
        .join(" + ");
    let cond = match g.kind {
        GroupType::All => format!("{k} = {}", items.len()),
        GroupType::Any => format!("{k} > 0"),
        GroupType::AtLeast(n) => format!("{k} >= {n}"),
        GroupType::AtMost(n) => format!("{k} <= {n}"),
    };
    ctes.push(format!(
        "{pass} AS (SELECT q.pe_id FROM {input} q{joins} JOIN person p ON p.person_id = q.person_id WHERE {cond})"
    ));
    pass
}

/// Add CTEs that keep the rows of `input` satisfying group `g`; returns the name of the last one.
fn group_filter(g: &Group, input: &str, name: &str, ctes: &mut Vec<String>) -> String {
    let pass = group_pass(g, input, name, ctes);
    ctes.push(format!(
        "{name} AS (SELECT q.* FROM {input} q WHERE q.pe_id IN (SELECT pe_id FROM {pass}))"
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
        // DataFusion returns BIGINT, INT, INT; the PostgreSQL backend every integer as Int64.
        let column = |i: usize, to: &arrow::datatypes::DataType| {
            arrow::compute::cast(b.column(i), to)
                .map_err(|e| CohortError::Engine(format!("cohort column {i}: {e}")))
        };
        let (p, s, e) = (
            column(0, &arrow::datatypes::DataType::Int64)?,
            column(1, &arrow::datatypes::DataType::Int32)?,
            column(2, &arrow::datatypes::DataType::Int32)?,
        );
        let shape = || CohortError::Engine("unexpected column types".into());
        let p = p.as_any().downcast_ref::<Int64Array>().ok_or_else(shape)?;
        let s = s.as_any().downcast_ref::<Int32Array>().ok_or_else(shape)?;
        let e = e.as_any().downcast_ref::<Int32Array>().ok_or_else(shape)?;
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
