//! Database characterization in the spirit of OHDSI Achilles: each analysis is one SQL statement that
//! returns its stratum columns (as text) followed by its measures, one table per analysis.
//!
//! Ids and meanings follow Achilles where an Achilles analysis exists (1 persons, 2 by gender, 400
//! persons by condition concept, …). Counts of persons are distinct persons; counts of records are
//! rows. The SQL is written once for a [`Dialect`], so the same statements run on the site's
//! DataFusion engine, on PostgreSQL, and in DuckDB for the reference tests and benchmarks.

use medfed_privacy::{Measure, MeasureKind};

pub use medfed_engine::Dialect;

/// An integer stratum as text.
pub fn text(e: &str) -> String {
    format!("CAST(CAST({e} AS BIGINT) AS VARCHAR)")
}

/// One Achilles analysis of the catalog.
pub struct Analysis {
    pub id: u32,
    pub name: &'static str,
    /// Stratum columns and whether each partitions what is counted.
    pub dims: &'static [(&'static str, bool)],
    pub measures: &'static [(&'static str, MeasureKind)],
    build: fn(Dialect) -> String,
}

impl Analysis {
    pub fn sql(&self, d: Dialect) -> String {
        (self.build)(d)
    }
    pub fn measures(&self) -> Vec<Measure> {
        self.measures
            .iter()
            .map(|(n, k)| Measure {
                name: n.to_string(),
                kind: *k,
            })
            .collect()
    }
}

const C: MeasureKind = MeasureKind::Count;
const S: MeasureKind = MeasureKind::Sum;
const PERSONS: &[(&str, MeasureKind)] = &[("persons", C)];
const RECORDS: &[(&str, MeasureKind)] = &[("records", C)];
const DIST: &[(&str, MeasureKind)] = &[("n", C), ("sum", S), ("sum_sq", S)];

/// Table, concept column and start-date column of the event domains.
const CONDITION: (&str, &str, &str) = (
    "condition_occurrence",
    "condition_concept_id",
    "condition_start_date",
);
const PROCEDURE: (&str, &str, &str) = (
    "procedure_occurrence",
    "procedure_concept_id",
    "procedure_date",
);
const DRUG: (&str, &str, &str) = (
    "drug_exposure",
    "drug_concept_id",
    "drug_exposure_start_date",
);
const OBSERVATION: (&str, &str, &str) =
    ("observation", "observation_concept_id", "observation_date");
const MEASUREMENT: (&str, &str, &str) =
    ("measurement", "measurement_concept_id", "measurement_date");
const VISIT: (&str, &str, &str) = ("visit_occurrence", "visit_concept_id", "visit_start_date");

fn persons_by_concept((t, c, _): (&str, &str, &str)) -> String {
    format!(
        "SELECT {}, CAST(COUNT(DISTINCT person_id) AS BIGINT) FROM {t} GROUP BY 1",
        text(c)
    )
}

fn records_by_concept((t, c, _): (&str, &str, &str)) -> String {
    format!(
        "SELECT {}, CAST(COUNT(*) AS BIGINT) FROM {t} GROUP BY 1",
        text(c)
    )
}

fn persons_by_concept_month(d: Dialect, (t, c, date): (&str, &str, &str)) -> String {
    format!(
        "SELECT {}, {}, CAST(COUNT(DISTINCT person_id) AS BIGINT) FROM {t} GROUP BY 1, 2",
        text(c),
        text(&d.yyyymm(date))
    )
}

/// Persons with their first observation period start (`fo.s`).
const FIRST_OBS: &str = "(SELECT person_id, MIN(observation_period_start_date) AS s FROM observation_period GROUP BY person_id) fo";

fn age_at_first_obs(d: Dialect) -> String {
    format!("({} - p.year_of_birth)", d.year("fo.s"))
}

/// The first observation period of each person, with its length in days (`len`).
fn first_period_len(d: Dialect) -> String {
    format!(
        "(SELECT op.person_id, {} - {} AS len FROM observation_period op JOIN {FIRST_OBS} \
         ON fo.person_id = op.person_id AND op.observation_period_start_date = fo.s) f",
        d.days("op.observation_period_end_date"),
        d.days("op.observation_period_start_date")
    )
}

/// Every analysis of the catalog, in id order.
pub static CATALOG: &[Analysis] = &[
    Analysis { id: 1, name: "Number of persons", dims: &[], measures: PERSONS,
        build: |_| "SELECT CAST(COUNT(DISTINCT person_id) AS BIGINT) FROM person".into() },
    Analysis { id: 2, name: "Number of persons by gender", dims: &[("gender_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1", text("gender_concept_id")) },
    Analysis { id: 3, name: "Number of persons by year of birth", dims: &[("year_of_birth", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1", text("year_of_birth")) },
    Analysis { id: 4, name: "Number of persons by race", dims: &[("race_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1", text("race_concept_id")) },
    Analysis { id: 5, name: "Number of persons by ethnicity", dims: &[("ethnicity_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1", text("ethnicity_concept_id")) },
    Analysis { id: 10, name: "Number of persons by year of birth and gender", dims: &[("year_of_birth", true), ("gender_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1, 2", text("year_of_birth"), text("gender_concept_id")) },
    Analysis { id: 12, name: "Number of persons by race and ethnicity", dims: &[("race_concept_id", true), ("ethnicity_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, {}, CAST(COUNT(*) AS BIGINT) FROM person GROUP BY 1, 2", text("race_concept_id"), text("ethnicity_concept_id")) },
    Analysis { id: 101, name: "Number of persons by age at first observation period start", dims: &[("age", true)], measures: PERSONS,
        build: |d| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM person p JOIN {FIRST_OBS} ON fo.person_id = p.person_id GROUP BY 1", text(&age_at_first_obs(d))) },
    Analysis { id: 102, name: "Number of persons by age at first observation period start and gender", dims: &[("age", true), ("gender_concept_id", true)], measures: PERSONS,
        build: |d| format!("SELECT {}, {}, CAST(COUNT(*) AS BIGINT) FROM person p JOIN {FIRST_OBS} ON fo.person_id = p.person_id GROUP BY 1, 2", text(&age_at_first_obs(d)), text("p.gender_concept_id")) },
    Analysis { id: 103, name: "Distribution of age at first observation period start", dims: &[], measures: DIST,
        build: |d| { let a = age_at_first_obs(d); format!("SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM({a}) AS DOUBLE PRECISION), CAST(SUM({a} * {a}) AS DOUBLE PRECISION) FROM person p JOIN {FIRST_OBS} ON fo.person_id = p.person_id") } },
    Analysis { id: 105, name: "Distribution of the length of the first observation period (days)", dims: &[], measures: DIST,
        build: |d| format!("SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM(len) AS DOUBLE PRECISION), CAST(SUM(CAST(len AS DOUBLE PRECISION) * len) AS DOUBLE PRECISION) FROM {}", first_period_len(d)) },
    Analysis { id: 108, name: "Number of persons by length of the first observation period, in 30-day increments", dims: &[("days_30", true)], measures: PERSONS,
        build: |d| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM {} GROUP BY 1", text("FLOOR(len / 30.0)"), first_period_len(d)) },
    // Calendar years 1900–2099 (a generated list, so that the SQL is the same in every dialect).
    Analysis { id: 109, name: "Number of persons with continuous observation in each year", dims: &[("year", false)], measures: PERSONS,
        build: |d| format!(
            "SELECT {}, CAST(COUNT(DISTINCT op.person_id) AS BIGINT) FROM observation_period op JOIN \
             (SELECT 1900 + a.n * 100 + b.n * 10 + c.n AS y FROM (VALUES (0),(1)) a(n), \
             (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) b(n), (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) c(n)) yr \
             ON (({sy} < yr.y) OR ({sy} = yr.y AND EXTRACT(MONTH FROM op.observation_period_start_date) = 1 AND EXTRACT(DAY FROM op.observation_period_start_date) = 1)) \
             AND (({ey} > yr.y) OR ({ey} = yr.y AND EXTRACT(MONTH FROM op.observation_period_end_date) = 12 AND EXTRACT(DAY FROM op.observation_period_end_date) = 31)) \
             GROUP BY 1",
            text("yr.y"), sy = d.year("op.observation_period_start_date"), ey = d.year("op.observation_period_end_date")) },
    Analysis { id: 111, name: "Number of persons by month of the first observation period start", dims: &[("yyyymm", true)], measures: PERSONS,
        build: |d| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM {FIRST_OBS} GROUP BY 1", text(&d.yyyymm("fo.s"))) },
    Analysis { id: 113, name: "Number of persons by number of observation periods", dims: &[("periods", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, CAST(COUNT(*) AS BIGINT) FROM (SELECT person_id, COUNT(*) AS n FROM observation_period GROUP BY person_id) x GROUP BY 1", text("n")) },
    Analysis { id: 200, name: "Number of persons with at least one visit, by visit_concept_id", dims: &[("visit_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(VISIT) },
    Analysis { id: 201, name: "Number of visit records by visit_concept_id", dims: &[("visit_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(VISIT) },
    Analysis { id: 202, name: "Number of persons by visit_concept_id and visit start month", dims: &[("visit_concept_id", false), ("yyyymm", false)], measures: PERSONS,
        build: |d| persons_by_concept_month(d, VISIT) },
    Analysis { id: 211, name: "Distribution of the length of visits (days) by visit_concept_id", dims: &[("visit_concept_id", true)], measures: DIST,
        build: |d| { let l = format!("({} - {})", d.days("visit_end_date"), d.days("visit_start_date")); format!("SELECT {}, CAST(COUNT(*) AS BIGINT), CAST(SUM({l}) AS DOUBLE PRECISION), CAST(SUM(CAST({l} AS DOUBLE PRECISION) * {l}) AS DOUBLE PRECISION) FROM visit_occurrence GROUP BY 1", text("visit_concept_id")) } },
    Analysis { id: 400, name: "Number of persons with at least one condition occurrence, by condition_concept_id", dims: &[("condition_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(CONDITION) },
    Analysis { id: 401, name: "Number of condition occurrence records by condition_concept_id", dims: &[("condition_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(CONDITION) },
    Analysis { id: 402, name: "Number of persons by condition_concept_id and condition start month", dims: &[("condition_concept_id", false), ("yyyymm", false)], measures: PERSONS,
        build: |d| persons_by_concept_month(d, CONDITION) },
    Analysis { id: 404, name: "Number of persons with at least one condition occurrence, by condition_concept_id and gender", dims: &[("condition_concept_id", false), ("gender_concept_id", true)], measures: PERSONS,
        build: |_| format!("SELECT {}, {}, CAST(COUNT(DISTINCT co.person_id) AS BIGINT) FROM condition_occurrence co JOIN person p ON p.person_id = co.person_id GROUP BY 1, 2", text("co.condition_concept_id"), text("p.gender_concept_id")) },
    Analysis { id: 405, name: "Number of condition occurrence records by condition_concept_id and condition_type_concept_id", dims: &[("condition_concept_id", true), ("condition_type_concept_id", true)], measures: RECORDS,
        build: |_| format!("SELECT {}, {}, CAST(COUNT(*) AS BIGINT) FROM condition_occurrence GROUP BY 1, 2", text("condition_concept_id"), text("condition_type_concept_id")) },
    Analysis { id: 600, name: "Number of persons with at least one procedure occurrence, by procedure_concept_id", dims: &[("procedure_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(PROCEDURE) },
    Analysis { id: 601, name: "Number of procedure occurrence records by procedure_concept_id", dims: &[("procedure_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(PROCEDURE) },
    Analysis { id: 602, name: "Number of persons by procedure_concept_id and procedure month", dims: &[("procedure_concept_id", false), ("yyyymm", false)], measures: PERSONS,
        build: |d| persons_by_concept_month(d, PROCEDURE) },
    Analysis { id: 700, name: "Number of persons with at least one drug exposure, by drug_concept_id", dims: &[("drug_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(DRUG) },
    Analysis { id: 701, name: "Number of drug exposure records by drug_concept_id", dims: &[("drug_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(DRUG) },
    Analysis { id: 702, name: "Number of persons by drug_concept_id and drug exposure start month", dims: &[("drug_concept_id", false), ("yyyymm", false)], measures: PERSONS,
        build: |d| persons_by_concept_month(d, DRUG) },
    Analysis { id: 800, name: "Number of persons with at least one observation, by observation_concept_id", dims: &[("observation_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(OBSERVATION) },
    Analysis { id: 801, name: "Number of observation records by observation_concept_id", dims: &[("observation_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(OBSERVATION) },
    Analysis { id: 1800, name: "Number of persons with at least one measurement, by measurement_concept_id", dims: &[("measurement_concept_id", false)], measures: PERSONS,
        build: |_| persons_by_concept(MEASUREMENT) },
    Analysis { id: 1801, name: "Number of measurement records by measurement_concept_id", dims: &[("measurement_concept_id", true)], measures: RECORDS,
        build: |_| records_by_concept(MEASUREMENT) },
    Analysis { id: 1815, name: "Distribution of numeric measurement values by measurement_concept_id and unit_concept_id", dims: &[("measurement_concept_id", false), ("unit_concept_id", false)],
        measures: &[("persons", C), ("n", C), ("sum", S), ("sum_sq", S)],
        build: |_| format!("SELECT {}, {}, CAST(COUNT(DISTINCT person_id) AS BIGINT), CAST(COUNT(*) AS BIGINT), CAST(SUM(value_as_number) AS DOUBLE PRECISION), CAST(SUM(value_as_number * value_as_number) AS DOUBLE PRECISION) FROM measurement WHERE value_as_number IS NOT NULL GROUP BY 1, 2", text("measurement_concept_id"), text("COALESCE(unit_concept_id, 0)")) },
    Analysis { id: 2000, name: "Number of persons with at least one condition and at least one drug exposure", dims: &[], measures: PERSONS,
        build: |_| "SELECT CAST(COUNT(*) AS BIGINT) FROM person p WHERE EXISTS (SELECT 1 FROM condition_occurrence c WHERE c.person_id = p.person_id) AND EXISTS (SELECT 1 FROM drug_exposure d WHERE d.person_id = p.person_id)".into() },
];

/// The catalog entry of an Achilles id.
pub fn analysis(id: u32) -> Option<&'static Analysis> {
    CATALOG.iter().find(|a| a.id == id)
}

#[cfg(test)]
mod tests {
    /// The study parser's list of Achilles ids (the protocol crate cannot see this catalog) names
    /// exactly the analyses implemented here.
    #[test]
    fn protocol_list_matches_the_catalog() {
        let ids: Vec<u32> = super::CATALOG.iter().map(|a| a.id).collect();
        assert_eq!(ids, medfed_protocol::study::ACHILLES_IDS);
    }
}
