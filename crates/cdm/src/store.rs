//! The site store: one hospital's CDM on disk.
//!
//! Layout of `SITE_DIR/`:
//!
//! ```text
//! site.toml                  name, CDM version, creation time, per-file row counts and SHA-256
//! cdm/<table>.parquet        every CDM v5.4 table (empty tables are present with their schema)
//! genotypes/site.{bed,bim,fam}   optional PLINK 1 binary genotypes
//! quarantine/<table>.csv     rows refused on import, with file, line, field and reason
//! ```
//!
//! A store is only ever made whole: [`StoreWriter`] writes into a hidden sibling directory and swaps it
//! into place with one atomic rename (`renameat2(RENAME_EXCHANGE)` when replacing an existing store).
//! A crash before the swap leaves the previous store untouched; the hidden directory is removed by the
//! writer's `Drop` or by the next writer.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::{CdmSpec, TableSpec, CDM_VERSION};
use crate::CdmError;

pub const META_FILE: &str = "site.toml";
pub const CDM_DIR: &str = "cdm";
pub const GENOTYPE_DIR: &str = "genotypes";
pub const QUARANTINE_DIR: &str = "quarantine";

/// Rows per Parquet row group: large enough for fast scans, small enough to bound writer memory.
const ROW_GROUP_ROWS: usize = 512 * 1024;

/// `site.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteMeta {
    pub site: String,
    pub cdm_version: String,
    /// RFC 3339. `synth` sets it from the population's reference date so that output is reproducible.
    pub created: String,
    /// What the store was made from (`import of …`, `medfed synth seed=…`).
    pub source: String,
    /// CDM version of the source data, when it was not 5.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cdm_version: Option<String>,
    /// Every data file, by path relative to the store.
    pub files: BTreeMap<String, FileMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileMeta {
    /// Rows for tables, records for other files (quarantine rows, genotyped samples).
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes a new site store; nothing is visible at the destination until [`StoreWriter::commit`].
pub struct StoreWriter {
    dest: PathBuf,
    tmp: PathBuf,
    rows: BTreeMap<String, u64>,
    committed: bool,
}

impl StoreWriter {
    pub fn create(dest: impl AsRef<Path>) -> Result<StoreWriter, CdmError> {
        let dest = dest.as_ref().to_path_buf();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| CdmError::io(&parent, e))?;
        let name = dest
            .file_name()
            .ok_or_else(|| CdmError::Store(format!("{} is not a directory name", dest.display())))?
            .to_string_lossy()
            .to_string();
        if dest.exists()
            && !dest.join(META_FILE).exists()
            && fs::read_dir(&dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            return Err(CdmError::Store(format!(
                "{} exists, is not empty and is not a site store (no {META_FILE}); refusing to replace it",
                dest.display()
            )));
        }
        // Leftovers of an earlier interrupted write for the same destination.
        if let Ok(entries) = fs::read_dir(&parent) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with(&format!(".{name}.tmp-"))
                    || n.starts_with(&format!(".{name}.old-"))
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        for sub in [CDM_DIR, QUARANTINE_DIR] {
            fs::create_dir_all(tmp.join(sub)).map_err(|e| CdmError::io(&tmp, e))?;
        }
        Ok(StoreWriter {
            dest,
            tmp,
            rows: BTreeMap::new(),
            committed: false,
        })
    }

    /// Directory being written; callers may add files under it (genotypes) before committing.
    pub fn staging_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn table_writer(&self, table: &TableSpec) -> Result<TableWriter, CdmError> {
        let rel = format!("{CDM_DIR}/{}.parquet", table.name);
        let path = self.tmp.join(&rel);
        let file = File::create(&path).map_err(|e| CdmError::io(&path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by("medfed".to_string())
            .build();
        let writer = ArrowWriter::try_new(file, table.schema(), Some(props))
            .map_err(|e| CdmError::Store(format!("{}: {e}", path.display())))?;
        Ok(TableWriter {
            rel,
            path,
            writer,
            schema: table.schema(),
            rows: 0,
        })
    }

    /// Record a finished table's row count (called by [`TableWriter::finish`]'s caller).
    pub fn record_rows(&mut self, rel: &str, rows: u64) {
        self.rows.insert(rel.to_string(), rows);
    }

    /// Write `site.toml` with checksums of every file under the staging directory, then swap into place.
    pub fn commit(mut self, mut meta: SiteMeta) -> Result<SiteMeta, CdmError> {
        meta.cdm_version = CDM_VERSION.to_string();
        meta.files = BTreeMap::new();
        for rel in list_files(&self.tmp)? {
            if rel == META_FILE {
                continue;
            }
            let path = self.tmp.join(&rel);
            let (bytes, sha) = hash_file(&path)?;
            let rows = self.rows.get(&rel).copied().unwrap_or(0);
            meta.files.insert(
                rel,
                FileMeta {
                    rows,
                    bytes,
                    sha256: sha,
                },
            );
        }
        let text = toml::to_string_pretty(&meta).map_err(|e| CdmError::Store(e.to_string()))?;
        write_synced(&self.tmp.join(META_FILE), text.as_bytes())?;
        sync_dir(&self.tmp);
        swap_into_place(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(meta)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Streams record batches of one table into its Parquet file.
pub struct TableWriter {
    rel: String,
    path: PathBuf,
    writer: ArrowWriter<File>,
    schema: arrow::datatypes::SchemaRef,
    rows: u64,
}

impl TableWriter {
    /// Append a batch. A null in a column the CDM requires is refused: Parquet's REQUIRED columns
    /// have no way to hold it, and the writer would otherwise store a default value in its place.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), CdmError> {
        let schema = self.schema.clone();
        for (f, col) in schema.fields().iter().zip(batch.columns()) {
            if !f.is_nullable() && col.null_count() > 0 {
                return Err(CdmError::Store(format!(
                    "{}: column {} is required but {} of {} values are null",
                    self.path.display(),
                    f.name(),
                    col.null_count(),
                    col.len()
                )));
            }
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| CdmError::Store(format!("{}: {e}", self.path.display())))
    }

    /// Close the file (fsynced) and return its path relative to the store and its row count.
    pub fn finish(self) -> Result<(String, u64), CdmError> {
        let path = self.path.clone();
        let file = self
            .writer
            .into_inner()
            .map_err(|e| CdmError::Store(format!("{}: {e}", path.display())))?;
        file.sync_all().map_err(|e| CdmError::io(&path, e))?;
        Ok((self.rel, self.rows))
    }
}

/// An existing, complete site store.
#[derive(Debug, Clone)]
pub struct SiteStore {
    pub dir: PathBuf,
    pub meta: SiteMeta,
}

impl SiteStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<SiteStore, CdmError> {
        let dir = dir.as_ref().to_path_buf();
        let meta_path = dir.join(META_FILE);
        let text = fs::read_to_string(&meta_path).map_err(|e| {
            CdmError::Store(format!(
                "{} is not a site store: cannot read {}: {e}",
                dir.display(),
                META_FILE
            ))
        })?;
        let meta: SiteMeta = toml::from_str(&text)
            .map_err(|e| CdmError::Store(format!("{}: {e}", meta_path.display())))?;
        Ok(SiteStore { dir, meta })
    }

    /// Path of a CDM table's Parquet file.
    pub fn table_path(&self, table: &str) -> PathBuf {
        self.dir
            .join(CDM_DIR)
            .join(format!("{}.parquet", table.to_ascii_lowercase()))
    }

    /// Tables present in the store (all CDM tables for a store made by medfed).
    pub fn tables(&self) -> Vec<String> {
        CdmSpec::v54()
            .tables()
            .map(|t| t.name.clone())
            .filter(|t| self.table_path(t).exists())
            .collect()
    }

    pub fn rows(&self, table: &str) -> Option<u64> {
        self.meta
            .files
            .get(&format!("{CDM_DIR}/{}.parquet", table.to_ascii_lowercase()))
            .map(|f| f.rows)
    }

    /// PLINK fileset prefix of the site's genotypes, if it has any.
    pub fn genotype_prefix(&self) -> Option<PathBuf> {
        let p = self.dir.join(GENOTYPE_DIR).join("site");
        p.with_extension("bed").exists().then_some(p)
    }

    /// Re-hash every file and compare with `site.toml`; also reports files that are missing or extra.
    pub fn verify(&self) -> Result<(), CdmError> {
        let mut problems = Vec::new();
        for (rel, fm) in &self.meta.files {
            match hash_file(&self.dir.join(rel)) {
                Ok((bytes, sha)) if bytes == fm.bytes && sha == fm.sha256 => {}
                Ok(_) => problems.push(format!("{rel}: checksum differs from {META_FILE}")),
                Err(e) => problems.push(format!("{rel}: {e}")),
            }
        }
        for rel in list_files(&self.dir)? {
            if rel != META_FILE && !self.meta.files.contains_key(&rel) {
                problems.push(format!("{rel}: not listed in {META_FILE}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CdmError::Store(format!(
                "store {} failed verification: {}",
                self.dir.display(),
                problems.join("; ")
            )))
        }
    }
}

fn list_files(root: &Path) -> Result<Vec<String>, CdmError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(|e| CdmError::io(&dir, e))? {
            let e = e.map_err(|e| CdmError::io(&dir, e))?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn hash_file(path: &Path) -> Result<(u64, String), CdmError> {
    let f = File::open(path).map_err(|e| CdmError::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| CdmError::io(path, e))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, hex::encode(h.finalize())))
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CdmError> {
    let mut f = File::create(path).map_err(|e| CdmError::io(path, e))?;
    f.write_all(bytes).map_err(|e| CdmError::io(path, e))?;
    f.sync_all().map_err(|e| CdmError::io(path, e))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Put `tmp` at `dest`. A fresh destination is one rename. An existing store is exchanged atomically
/// (Linux `renameat2(RENAME_EXCHANGE)`), then the old copy, now at `tmp`, is deleted.
fn swap_into_place(tmp: &Path, dest: &Path) -> Result<(), CdmError> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dest.exists() {
        fs::rename(tmp, dest).map_err(|e| CdmError::io(dest, e))?;
        sync_dir(parent);
        return Ok(());
    }
    if exchange(tmp, dest).is_ok() {
        sync_dir(parent);
        let _ = fs::remove_dir_all(tmp);
        return Ok(());
    }
    // Portable fallback: two renames. A crash between them leaves `.NAME.old-*` beside a missing
    // destination; the next `StoreWriter::create` for this destination cleans it up.
    let name = dest
        .file_name()
        .expect("checked in create")
        .to_string_lossy()
        .to_string();
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    fs::rename(dest, &old).map_err(|e| CdmError::io(dest, e))?;
    fs::rename(tmp, dest).map_err(|e| CdmError::io(dest, e))?;
    sync_dir(parent);
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated paths for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no atomic exchange",
    ))
}
