//! The OMOP Common Data Model as a hospital holds it: schema, site store and validated import.
//!
//! This crate owns the on-disk form of one hospital's data (the *site store*: Parquet per CDM table,
//! `site.toml` with checksums, quarantine of refused rows, optional PLINK genotypes). It knows nothing
//! about queries, networks or analyses; those crates read the store through [`SiteStore`].
//!
//! ```no_run
//! use medfed_cdm::{import_csv_dir, ImportOptions, NoProgress, SiteStore};
//! let report = import_csv_dir("eunomia/".as_ref(), "site-a".as_ref(),
//!                             &ImportOptions { site: None, extra: None }, &NoProgress).unwrap();
//! println!("{} rows quarantined", report.total_quarantined());
//! let store = SiteStore::open("site-a").unwrap();
//! assert_eq!(store.rows("person"), Some(2694));
//! ```

pub mod import;
pub mod spec;
pub mod store;
pub mod value;

use std::path::Path;

pub use import::{import_csv_dir, ImportOptions, ImportReport, NoProgress, Progress, TableReport};
pub use spec::{CdmSpec, CdmType, FieldSpec, TableSpec, CDM_VERSION};
pub use store::{FileMeta, SiteMeta, SiteStore, StoreWriter, TableWriter};

#[derive(Debug, thiserror::Error)]
pub enum CdmError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Import(String),
    #[error("{0}")]
    Store(String),
}

impl CdmError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> CdmError {
        CdmError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
