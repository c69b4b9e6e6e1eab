//! Circe (ATLAS) cohort definitions: parse the JSON that ATLAS exports, compile it to SQL, run it on a
//! site's engine, and return the cohort rows `(subject_id, cohort_start_date, cohort_end_date)`.
//!
//! The parser is strict in the other direction from a browser: every element of the definition is
//! either understood or refused with its JSON path ([`CohortError::Unsupported`]). Nothing is silently
//! ignored, because an ignored inclusion rule would give a larger cohort that looks right.
//!
//! Supported today (the rest is refused with its path):
//! - concept sets with descendants, `isExcluded` and `includeMapped` items (resolved through
//!   `concept`, `concept_ancestor` and `concept_relationship`, as Circe does);
//! - criteria `ConditionOccurrence`, `ConditionEra`, `DrugExposure`, `DrugEra`, `DoseEra`,
//!   `ProcedureOccurrence`, `VisitOccurrence`, `VisitDetail`, `Observation`, `Measurement`,
//!   `DeviceExposure`, `Specimen`, `Death` (concept set on the cause), `ObservationPeriod` and
//!   `PayerPlanPeriod`, each with `CodesetId`, `<Domain>SourceConcept`, `First`, `Age` and `Gender`,
//!   the record-type filters (`ConditionType`/`ConditionTypeExclude` and the like), `ConditionStatus`,
//!   `ValueAsNumber` and `Unit` on measurements and observations, Circe's attribute filters (see
//!   `parse::attribute`), `DateAdjustment`, user-defined observation periods and nested
//!   `CorrelatedCriteria`; several criteria are a union;
//! - the observation window, primary/qualified/expression limits (`All`, `First`, `Last`);
//! - additional criteria and inclusion rules: `ALL`/`ANY`/`AT_LEAST`/`AT_MOST` groups, nested to
//!   any depth, of correlated criteria with start and end windows (index start or end, event start
//!   or end, unbounded sides bounded by the observation period as Circe does), occurrence exactly /
//!   at most / at least, distinct counts (`IsDistinct` with `CountColumn`), `RestrictVisit`,
//!   `IgnoreObservationPeriod`, and demographic criteria (age, gender, race, ethnicity, index start
//!   and end dates);
//! - censoring criteria and the censor window;
//! - end strategies: observation-period end (default), `DateOffset` on the start or end date, and
//!   `CustomEra` (continuous drug exposure with a gap, an offset and an optional days-supply
//!   override); the exit is the earliest candidate on or after the entry, as in Circe;
//! - era collapse with `EraPad`.
//!
//! Conformance: circe-be's own generation fixtures, the 13 Eunomia definitions and 11 more for the
//! later features give the reference rows exactly (crates/cli/tests/cohort).
//!
//! Architecture invariant: cohort rows are for the hospital's own data steward; they never cross the
//! network. Analyses use cohorts only through released statistics.

mod compile;
mod parse;

pub use compile::{count_sql, generate, persons_sql, sql_for, CohortRow};
pub use parse::{parse, Cohort};

#[derive(Debug, thiserror::Error)]
pub enum CohortError {
    #[error("{path}: not supported by medfed's cohort engine yet: {what}")]
    Unsupported { path: String, what: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cohort query failed: {0}")]
    Engine(String),
}
