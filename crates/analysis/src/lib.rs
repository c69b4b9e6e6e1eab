//! The analysis catalog. Every analysis has two halves:
//!
//! - the **local step** ([`local`]) runs at a node on its own site store and returns a
//!   [`SiteStatistic`](medfed_privacy::SiteStatistic), which cannot leave the site until
//!   [`release`](medfed_privacy::release) has checked it;
//! - the **combine step** ([`combine`]) runs at the hub over the released statistics of all sites and
//!   returns the pooled result, saying which sites contributed and what was withheld.
//!
//! Architecture invariant: local steps know nothing of HTTP or the hub; combine steps know nothing of
//! sites' storage. The same functions run in `medfed study run` (in one process) and over the network.

pub mod achilles;
pub mod beacon;
pub mod combine;
pub mod gwas;
pub mod local;
pub mod pooled;
pub mod profile;
pub mod regression;
pub mod secure;
pub mod surveil;
mod tables;

pub use combine::{combine, PooledResult, SiteContribution, SiteInput, SiteOutcome};
pub use local::{run_local, sql_for, AnalysisError};
pub use pooled::{flatten, PooledCell, PooledTable, StatRow};
pub use tables::{age_group, sex_label, year_of};
