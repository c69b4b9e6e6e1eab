//! A site's local query engine: Apache DataFusion over the site store's Parquet files.
//!
//! This is the only crate that links DataFusion. It registers every CDM table of a [`SiteStore`] under
//! its CDM name (`person`, `condition_occurrence`, …) and runs read-only SQL. The engine is local by
//! construction: it returns Arrow batches to its caller in the same process and has no network code.
//!
//! ```no_run
//! # async fn f() -> Result<(), medfed_engine::EngineError> {
//! let engine = medfed_engine::SiteEngine::open("site-a")?;
//! let batches = engine.sql("SELECT gender_concept_id, COUNT(*) FROM person GROUP BY 1").await?;
//! # Ok(()) }
//! ```

use std::path::Path;

use arrow::record_batch::RecordBatch;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::ParquetReadOptions;
use medfed_cdm::{CdmError, SiteStore};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] CdmError),
    #[error("query failed: {0}")]
    Query(String),
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EngineError::Query(e.to_string())
    }
}

mod pg;

pub use pg::PgSite;

/// A site's query engine: DataFusion over the site store's Parquet, or the hospital's own
/// PostgreSQL holding its OMOP CDM (`postgres://user@host:port/db?schema=cdm`).
pub struct SiteEngine(Backend);

enum Backend {
    Parquet {
        store: SiteStore,
        ctx: SessionContext,
    },
    Postgres(PgSite),
}

/// Whether a site argument names a PostgreSQL CDM rather than a site store folder.
pub fn is_postgres_url(site: &str) -> bool {
    site.starts_with("postgres://") || site.starts_with("postgresql://")
}

impl SiteEngine {
    /// Open a site: a store folder, or a `postgres://…?schema=…` URL.
    pub fn open(site: impl AsRef<Path>) -> Result<SiteEngine, EngineError> {
        let text = site.as_ref().to_string_lossy().to_string();
        if is_postgres_url(&text) {
            return Ok(SiteEngine(Backend::Postgres(PgSite::parse(&text)?)));
        }
        let store = SiteStore::open(site)?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            );
        let ctx = SessionContext::new_with_config(config);
        Ok(SiteEngine(Backend::Parquet { store, ctx }))
    }

    /// The site store, when the site is one.
    pub fn store(&self) -> Option<&SiteStore> {
        match &self.0 {
            Backend::Parquet { store, .. } => Some(store),
            Backend::Postgres(_) => None,
        }
    }

    /// The SQL dialect of this site's engine.
    pub fn dialect(&self) -> Dialect {
        match &self.0 {
            Backend::Parquet { .. } => Dialect::DataFusion,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    async fn register(&self, store: &SiteStore, ctx: &SessionContext) -> Result<(), EngineError> {
        for table in store.tables() {
            if ctx.table_exist(table.as_str())? {
                continue;
            }
            let path = store.table_path(&table);
            ctx.register_parquet(
                table.as_str(),
                path.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Run one read-only SQL statement and collect the result. On a store: DataFusion with DDL, DML
    /// and COPY refused. On PostgreSQL: inside a READ ONLY transaction.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, EngineError> {
        match &self.0 {
            Backend::Parquet { store, ctx } => {
                self.register(store, ctx).await?;
                let opts = SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                let df = ctx.sql_with_options(query, opts).await?;
                Ok(df.collect().await?)
            }
            Backend::Postgres(p) => p.query(query).await,
        }
    }

    /// Blocking convenience for command-line use: runs `sql` on a private runtime.
    pub fn sql_blocking(&self, query: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Query(format!("cannot start runtime: {e}")))?;
        rt.block_on(self.sql(query))
    }
}

/// SQL dialects medfed writes queries for: the site engine (DataFusion), a hospital's PostgreSQL, and
/// DuckDB (the reference engine of the tests and benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    DataFusion,
    DuckDb,
    Postgres,
}

impl Dialect {
    /// Days since 1970-01-01 of a DATE expression, as an integer.
    pub fn days(self, e: &str) -> String {
        match self {
            Dialect::DataFusion => format!("CAST({e} AS INT)"),
            Dialect::DuckDb | Dialect::Postgres => format!("({e} - DATE '1970-01-01')"),
        }
    }
    /// The calendar year of a DATE expression, as BIGINT.
    pub fn year(self, e: &str) -> String {
        format!("CAST(EXTRACT(YEAR FROM {e}) AS BIGINT)")
    }
    /// `yyyymm` of a DATE expression, as BIGINT.
    pub fn yyyymm(self, e: &str) -> String {
        format!(
            "(CAST(EXTRACT(YEAR FROM {e}) AS BIGINT) * 100 + CAST(EXTRACT(MONTH FROM {e}) AS BIGINT))"
        )
    }
    pub fn parse(s: &str) -> Option<Dialect> {
        match s {
            "datafusion" => Some(Dialect::DataFusion),
            "duckdb" => Some(Dialect::DuckDb),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }

    /// Rewrite SQL written for DataFusion's date arithmetic into this dialect: `CAST(x_date AS INT)`
    /// (days since the epoch) and `CAST(n AS DATE)` (the date n days after the epoch), where the
    /// operand is a plain column reference.
    pub fn portable(self, sql: &str) -> String {
        if self == Dialect::DataFusion {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(i) = rest.find("CAST(") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 5..];
            let ident_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(after.len());
            let ident = &after[..ident_len];
            let tail = &after[ident_len..];
            if !ident.is_empty() && ident.ends_with("_date") && tail.starts_with(" AS INT)") {
                out.push_str(&format!("({ident} - DATE '1970-01-01')"));
                rest = &tail[" AS INT)".len()..];
            } else if !ident.is_empty() && tail.starts_with(" AS DATE)") {
                out.push_str(&format!("(DATE '1970-01-01' + {ident})"));
                rest = &tail[" AS DATE)".len()..];
            } else {
                out.push_str("CAST(");
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod dialect_tests {
    use super::Dialect;

    #[test]
    fn date_arithmetic_is_rewritten_for_postgres_and_duckdb() {
        let q = "SELECT CAST(op.observation_period_end_date AS INT) + 1, CAST(q.s AS DATE), CAST(days_supply AS INT), CAST(NULL AS INT)";
        assert_eq!(Dialect::DataFusion.portable(q), q);
        assert_eq!(
            Dialect::Postgres.portable(q),
            "SELECT (op.observation_period_end_date - DATE '1970-01-01') + 1, (DATE '1970-01-01' + q.s), CAST(days_supply AS INT), CAST(NULL AS INT)"
        );
    }
}
