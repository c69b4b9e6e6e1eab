//! Circe (ATLAS) cohort definitions: parse the JSON that ATLAS exports, compile it to SQL, run it on a
//! site's engine, and return the cohort rows `(subject_id, cohort_start_date, cohort_end_date)`.
//!
//! The parser is strict in the other direction from a browser: every element of the definition is
//! either understood or refused with its JSON path ([`CohortError::Unsupported`]). Nothing is silently
//! ignored, because an ignored inclusion rule would give a larger cohort that looks right.
//!
//! Supported today (the rest is refused with its path):
//! - concept sets with descendants and `isExcluded` items (resolved through `concept` and
//!   `concept_ancestor`, as Circe does);
//! - primary criteria `ConditionOccurrence`, `ConditionEra`, `DrugExposure`, `DrugEra`,
//!   `ProcedureOccurrence`, `VisitOccurrence`, `Observation`, `Measurement`, `Death` (concept set on
//!   the cause) and `ObservationPeriod`, each with `CodesetId`, `First`, `Age` and `Gender`, and
//!   `ValueAsNumber` and `Unit` on measurements and observations, and the record-type filters
//!   (`ConditionType`/`ConditionTypeExclude` and the like); several criteria are a union;
//! - the observation window, primary/qualified/expression limits (`All`, `First`, `Last`);
//! - additional criteria and inclusion rules: `ALL`/`ANY` groups of correlated criteria with start
//!   windows (index start or end, event start or end), occurrence exactly / at most / at least,
//!   `RestrictVisit`, `IgnoreObservationPeriod`, and demographic age and gender (nested groups, end
//!   windows and distinct counts are refused);
//! - censoring criteria;
//! - end strategies: observation-period end (default), `DateOffset` on the start or end date, and
//!   `CustomEra` (continuous drug exposure with a gap and an offset), capped at the end of the
//!   observation period;
//! - era collapse with `EraPad`.
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
