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

/// DataFusion session over one site store.
pub struct SiteEngine {
    store: SiteStore,
    ctx: SessionContext,
}

impl SiteEngine {
    /// Open a store and register its tables. Registration is lazy (file footers are read at planning).
    pub fn open(dir: impl AsRef<Path>) -> Result<SiteEngine, EngineError> {
        let store = SiteStore::open(dir)?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            );
        let ctx = SessionContext::new_with_config(config);
        Ok(SiteEngine { store, ctx })
    }

    pub fn store(&self) -> &SiteStore {
        &self.store
    }

    async fn register(&self) -> Result<(), EngineError> {
        for table in self.store.tables() {
            if self.ctx.table_exist(table.as_str())? {
                continue;
            }
            let path = self.store.table_path(&table);
            self.ctx
                .register_parquet(
                    table.as_str(),
                    path.to_string_lossy().as_ref(),
                    ParquetReadOptions::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Run one read-only SQL statement (no DDL, no DML, no COPY) and collect the result.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, EngineError> {
        self.register().await?;
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(query, opts).await?;
        Ok(df.collect().await?)
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
