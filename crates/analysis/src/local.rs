//! Local steps: site rows → a statistic that has not yet been through disclosure control.

use arrow::array::{Array, Int64Array};
use medfed_engine::{EngineError, SiteEngine};
use medfed_privacy::SiteStatistic;
use medfed_protocol::study::{AnalysisSpec, CohortCount, Domain, PersonCount};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("analysis {id}: cohort definition: {message}")]
    Cohort { id: String, message: String },
    #[error("analysis {id}: unexpected result shape: {message}")]
    Shape { id: String, message: String },
    /// The node does not hold the data the analysis counts, or cannot read it.
    #[error("analysis {id}: {message}")]
    Data { id: String, message: String },
}

/// Table, concept column and date column of a domain.
fn domain_columns(d: Domain) -> (&'static str, &'static str, &'static str) {
    match d {
        Domain::Condition => (
            "condition_occurrence",
            "condition_concept_id",
            "condition_start_date",
        ),
        Domain::Drug => (
            "drug_exposure",
            "drug_concept_id",
            "drug_exposure_start_date",
        ),
        Domain::Measurement => ("measurement", "measurement_concept_id", "measurement_date"),
        Domain::Observation => ("observation", "observation_concept_id", "observation_date"),
        Domain::Procedure => (
            "procedure_occurrence",
            "procedure_concept_id",
            "procedure_date",
        ),
    }
}

/// The SQL of an analysis's local step. Only validated integers are interpolated: concept ids and ages
/// are range-checked numbers, table and column names come from the match above.
pub fn sql_for(spec: &AnalysisSpec) -> Result<String, AnalysisError> {
    match spec {
        AnalysisSpec::PersonCount(p) => Ok(person_count_sql(p)),
        AnalysisSpec::CohortCount(c) => {
            let cohort = cohort_of(c)?;
            Ok(medfed_cohort::count_sql(&cohort))
        }
        other => Err(AnalysisError::Shape {
            id: other.id().to_string(),
            message: format!(
                "{} runs several statements; no single SQL",
                other.type_name()
            ),
        }),
    }
}

fn person_count_sql(p: &PersonCount) -> String {
    person_sql(p, false)
}

/// Count (`list == false`) or list the distinct persons of a person_count.
fn person_sql(p: &PersonCount, list: bool) -> String {
    let (table, concept_col, date_col) = domain_columns(p.domain);
    let ids = p
        .concepts
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let concept_filter = if p.descendants {
        format!(
            "{concept_col} IN (SELECT descendant_concept_id FROM concept_ancestor \
             WHERE ancestor_concept_id IN ({ids})) OR {concept_col} IN ({ids})"
        )
    } else {
        format!("{concept_col} IN ({ids})")
    };
    let mut filters = Vec::new();
    if let Some(a) = p.age {
        // Circe's convention: age is the year of the event minus the year of birth.
        filters.push(format!(
            "(EXTRACT(YEAR FROM f.first_date) - p.year_of_birth) BETWEEN {} AND {}",
            a.min, a.max
        ));
    }
    if !p.sex.is_empty() {
        let g = p
            .sex
            .iter()
            .map(|s| s.concept_id().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        filters.push(format!("p.gender_concept_id IN ({g})"));
    }
    let wher = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let select = if list {
        "DISTINCT CAST(f.person_id AS BIGINT) AS person_id"
    } else {
        "CAST(COUNT(*) AS BIGINT) AS n"
    };
    format!(
        "WITH f AS (SELECT person_id, MIN({date_col}) AS first_date FROM {table} \
         WHERE {concept_filter} GROUP BY person_id) \
         SELECT {select} FROM f JOIN person p ON p.person_id = f.person_id {wher}"
    )
}

/// Run the local step of `spec` on a site.
/// The local step of `vehicle_events` at a vehicle service's node: its events log (the file, or the
/// service's state folder) counted by district, age group and kind.
pub fn vehicle_events(
    log: &std::path::Path,
    spec: &medfed_protocol::vehicles::VehicleEvents,
) -> Result<SiteStatistic, AnalysisError> {
    let t0 = std::time::Instant::now();
    let events =
        medfed_protocol::vehicles::read_events(log).map_err(|message| AnalysisError::Data {
            id: spec.id.clone(),
            message,
        })?;
    let mut t = medfed_protocol::vehicles::count(&events, spec);
    t.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(SiteStatistic::tables(vec![t]))
}

pub async fn run_local(
    engine: &SiteEngine,
    spec: &AnalysisSpec,
) -> Result<SiteStatistic, AnalysisError> {
    // Both analyses list their distinct persons; the release step counts them and checks the set
    // against the site's earlier releases (differencing). The list never leaves the node.
    let sql = match spec {
        AnalysisSpec::PersonCount(p) if p.descendants => {
            // Expand the concept set through concept_ancestor first (a tiny table), so that the scan
            // of the event table filters on a plain IN list instead of a semi-join (faster at 10 M).
            let expanded = expand(engine, &p.concepts).await?;
            if expanded.len() <= 5_000 {
                let mut q = p.clone();
                q.concepts = expanded;
                q.descendants = false;
                person_sql(&q, true)
            } else {
                // A very broad concept set: keep the semi-join rather than a huge IN list.
                person_sql(p, true)
            }
        }
        AnalysisSpec::PersonCount(p) => person_sql(p, true),
        AnalysisSpec::CohortCount(c) => {
            let cohort = cohort_of(c)?;
            engine
                .dialect()
                .portable(&medfed_cohort::persons_sql(&cohort))
        }
        other => return crate::tables::run_tables(engine, other).await,
    };
    let mut ids = Vec::new();
    for b in engine.sql(&sql).await? {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| AnalysisError::Shape {
                id: spec.id().to_string(),
                message: "person_id is not BIGINT".into(),
            })?;
        ids.extend(col.iter().flatten());
    }
    Ok(SiteStatistic::persons(ids))
}

/// The Circe cohort a `cohort_count` task carries, parsed (unsupported elements refused with their path).
fn cohort_of(c: &CohortCount) -> Result<medfed_cohort::Cohort, AnalysisError> {
    let def = c.definition.as_ref().ok_or_else(|| AnalysisError::Cohort {
        id: c.id.clone(),
        message: "the task carries no cohort definition".into(),
    })?;
    parse_cohort(&c.id, def, "")
}

/// Parse a Circe definition carried by the task of analysis `id`; `prefix` goes before the parser's
/// message (which names the JSON path of anything unsupported).
pub(crate) fn parse_cohort(
    id: &str,
    def: &serde_json::Value,
    prefix: &str,
) -> Result<medfed_cohort::Cohort, AnalysisError> {
    medfed_cohort::parse(&def.to_string()).map_err(|e| AnalysisError::Cohort {
        id: id.to_string(),
        message: format!("{prefix}{e}"),
    })
}

/// The concepts and all their descendants, sorted.
pub(crate) async fn expand(engine: &SiteEngine, ids: &[i64]) -> Result<Vec<i64>, AnalysisError> {
    let list = ids
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let q = format!(
        "SELECT CAST(descendant_concept_id AS BIGINT) FROM concept_ancestor WHERE ancestor_concept_id IN ({list})"
    );
    let mut out: Vec<i64> = ids.to_vec();
    for b in engine.sql(&q).await? {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| AnalysisError::Shape {
                id: "concept set".into(),
                message: "descendant_concept_id is not BIGINT".into(),
            })?;
        out.extend(col.iter().flatten());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
