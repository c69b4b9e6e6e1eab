//! `medfed import`: OMOP CDM CSV → site store, with validation and quarantine.
//!
//! Accepts what real sites and OHDSI tools export: CDM 5.3 or 5.4, comma or tab, `.csv`/`.tsv`/`.txt`,
//! optionally gzip-compressed, upper- or lower-case file and column names, dates as `YYYY-MM-DD` or
//! `YYYYMMDD`.
//!
//! Every row is either loaded or written to `quarantine/<table>.csv` with its file, line, field and
//! reason; nothing is dropped silently. A table whose header lacks a required column has all its rows
//! quarantined. The import fails (and leaves any existing store untouched) only when a store cannot be
//! made faithfully: an unreadable or truncated file, or an unusable `person` table.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use flate2::read::MultiGzDecoder;
use serde::Serialize;

use crate::spec::{v53_rename, CdmSpec, TableSpec};
use crate::store::{SiteMeta, StoreWriter, QUARANTINE_DIR};
use crate::value::{parse_value, ColumnBuilder, Value};
use crate::CdmError;

const BATCH_ROWS: usize = 64 * 1024;

/// What happened to one table.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TableReport {
    pub table: String,
    /// Source file, or `None` when the table was absent (stored empty).
    pub file: Option<String>,
    pub read: u64,
    pub loaded: u64,
    pub quarantined: u64,
    /// Columns in the file that are not in CDM 5.4 (after 5.3 renames); their values are not stored.
    pub ignored_columns: Vec<String>,
    /// Optional 5.4 columns the file lacks; stored as NULL.
    pub missing_columns: Vec<String>,
    /// Quarantine reasons with counts, most frequent first.
    pub reasons: Vec<(String, u64)>,
    /// Rows loaded although an earlier, different row had the same primary key (event tables only;
    /// exact duplicates are quarantined instead).
    pub shared_primary_keys: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    pub site: String,
    pub source_cdm_version: String,
    pub tables: Vec<TableReport>,
    /// Files in the input folder that are not CDM tables.
    pub unrecognised_files: Vec<String>,
}

impl ImportReport {
    pub fn table(&self, name: &str) -> Option<&TableReport> {
        self.tables.iter().find(|t| t.table == name)
    }
    pub fn total_quarantined(&self) -> u64 {
        self.tables.iter().map(|t| t.quarantined).sum()
    }
}

/// Progress callbacks; the library knows nothing about terminals.
pub trait Progress: Sync {
    /// A new input file of `bytes` (on-disk size) starts.
    fn file(&self, _table: &str, _bytes: u64) {}
    /// `bytes` more of the current file were read.
    fn advance(&self, _bytes: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

pub struct ImportOptions<'a> {
    /// Site name written to `site.toml`; defaults to the output folder's name.
    pub site: Option<String>,
    /// Writes more files into the store being built (its staging folder), before it is committed:
    /// the site's genotypes (`genotypes/site.{bed,bim,fam}`). Returns each file's path relative to
    /// the store and its row count. An error leaves no store.
    pub extra: Option<&'a ExtraFiles<'a>>,
}

/// See [`ImportOptions::extra`].
pub type ExtraFiles<'a> = dyn Fn(&Path) -> Result<Vec<(String, u64)>, CdmError> + 'a;

/// Import every CDM table found in `csv_dir` into a new store at `out`.
pub fn import_csv_dir(
    csv_dir: &Path,
    out: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, CdmError> {
    let spec = CdmSpec::v54();
    let (files, unrecognised) = discover(csv_dir, spec)?;
    let site = opts.site.clone().unwrap_or_else(|| {
        out.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "site".into())
    });
    let mut writer = StoreWriter::create(out)?;
    let mut ctx = Context::default();
    let mut report = ImportReport {
        site: site.clone(),
        unrecognised_files: unrecognised,
        ..Default::default()
    };
    for table in spec.load_order() {
        let tr = match files.get(&table.name) {
            Some(path) => import_table(table, path, &mut writer, &mut ctx, progress)?,
            None => {
                let tw = writer.table_writer(table)?;
                let (rel, rows) = tw.finish()?;
                writer.record_rows(&rel, rows);
                TableReport {
                    table: table.name.clone(),
                    ..Default::default()
                }
            }
        };
        if table.name == "person" && tr.file.is_some() && tr.loaded == 0 && tr.read > 0 {
            return Err(CdmError::Import(format!(
                "{}: no person row could be loaded ({} quarantined, first reason: {}); every other table \
                 references person, so no store was made",
                tr.file.as_deref().unwrap_or("person"),
                tr.quarantined,
                tr.reasons.first().map(|r| r.0.as_str()).unwrap_or("?")
            )));
        }
        report.tables.push(tr);
    }
    if let Some(extra) = opts.extra {
        for (rel, rows) in extra(writer.staging_dir())? {
            writer.record_rows(&rel, rows);
        }
    }
    report.source_cdm_version = if ctx.saw_v53 {
        "5.3".into()
    } else {
        "5.4".into()
    };
    let meta = SiteMeta {
        site,
        cdm_version: String::new(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: format!("medfed import --cdm {}", csv_dir.display()),
        source_cdm_version: ctx.saw_v53.then(|| "5.3".into()),
        files: BTreeMap::new(),
    };
    writer.commit(meta)?;
    Ok(report)
}

/// Cross-table state gathered while loading.
#[derive(Default)]
struct Context {
    persons: HashSet<i64>,
    saw_v53: bool,
}

/// Map lower-case table name → file. Several files for one table is an error (ambiguous).
fn discover(
    dir: &Path,
    spec: &CdmSpec,
) -> Result<(BTreeMap<String, PathBuf>, Vec<String>), CdmError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unrecognised = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| CdmError::io(dir, e))?;
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for path in names {
        let fname = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_ascii_lowercase();
        let stem = ["csv.gz", "tsv.gz", "txt.gz", "csv", "tsv", "txt"]
            .iter()
            .find_map(|ext| fname.strip_suffix(&format!(".{ext}")));
        match stem.and_then(|s| spec.table(s)) {
            Some(t) => {
                if let Some(prev) = found.insert(t.name.clone(), path.clone()) {
                    return Err(CdmError::Import(format!(
                        "two files for table {}: {} and {}; keep one",
                        t.name,
                        prev.display(),
                        path.display()
                    )));
                }
            }
            None => unrecognised.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
            ),
        }
    }
    if found.is_empty() {
        return Err(CdmError::Import(format!(
            "{}: no OMOP CDM table files found (expected e.g. person.csv or PERSON.csv.gz)",
            dir.display()
        )));
    }
    Ok((found, unrecognised))
}

/// Counts bytes read from the underlying file (compressed bytes for gzip) for progress.
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

fn open_input(path: &Path, counter: Arc<AtomicU64>) -> Result<Box<dyn BufRead>, CdmError> {
    let f = File::open(path).map_err(|e| CdmError::io(path, e))?;
    let raw = Counting {
        inner: f,
        n: counter,
    };
    let gz = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("gz"))
        .unwrap_or(false);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(BufReader::new(raw)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, raw))
    })
}

/// Choose the delimiter from the header line: tab if it has more tabs than commas.
fn sniff_delimiter(reader: &mut dyn BufRead, path: &Path) -> Result<u8, CdmError> {
    let buf = reader.fill_buf().map_err(|e| read_error(path, 1, e))?;
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let header = &buf[..line_end];
    let commas = header.iter().filter(|&&b| b == b',').count();
    let tabs = header.iter().filter(|&&b| b == b'\t').count();
    Ok(if tabs > commas { b'\t' } else { b',' })
}

fn read_error(path: &Path, line: u64, e: impl std::fmt::Display) -> CdmError {
    let msg = e.to_string();
    let hint = if msg.contains("invalid gzip header")
        || msg.contains("corrupt deflate")
        || msg.contains("unexpected end of file")
        || msg.contains("failed to fill whole buffer")
    {
        " (the gzip stream is truncated or corrupt; re-export the file)"
    } else {
        ""
    };
    CdmError::Import(format!(
        "{}: read failed near line {line}: {msg}{hint}; no store was made",
        path.display()
    ))
}

/// Per-table validation state.
struct Checks<'a> {
    table: &'a TableSpec,
    pk: Option<usize>,
    /// Primary key → hash of the first row that had it.
    pk_seen: HashMap<i64, u64>,
    /// Whether another table references this key, so that a second row with it would be ambiguous.
    pk_referenced: bool,
    /// Rows kept although their key was already used by a different row (event tables only).
    shared_keys: u64,
    person_fk: Option<usize>,
    deaths: HashSet<i64>,
    /// observation_period: accepted periods per person, to refuse overlaps.
    periods: HashMap<i64, Vec<(i32, i32)>>,
    op_cols: Option<(usize, usize)>,
}

impl<'a> Checks<'a> {
    fn new(table: &'a TableSpec) -> Checks<'a> {
        let op_cols = (table.name == "observation_period").then(|| {
            (
                table
                    .field_index("observation_period_start_date")
                    .expect("spec"),
                table
                    .field_index("observation_period_end_date")
                    .expect("spec"),
            )
        });
        Checks {
            table,
            pk: table
                .primary_key()
                .filter(|&i| table.fields[i].ty == crate::spec::CdmType::Integer),
            pk_seen: HashMap::new(),
            pk_referenced: matches!(
                table.name.as_str(),
                "person"
                    | "visit_occurrence"
                    | "visit_detail"
                    | "location"
                    | "care_site"
                    | "provider"
                    | "concept"
            ),
            shared_keys: 0,
            person_fk: if table.name == "person" {
                None
            } else {
                table.person_fk()
            },
            deaths: HashSet::new(),
            periods: HashMap::new(),
            op_cols,
        }
    }

    /// Row-level rules that involve other rows or tables. Returns (field, reason) on failure.
    /// Only on success is any state updated, so a refused row leaves no trace.
    fn check(
        &mut self,
        vals: &[Value],
        row_hash: u64,
        ctx: &Context,
    ) -> Result<(), (String, String)> {
        let int = |i: usize| match vals[i] {
            Value::Int(v) => Some(v),
            _ => None,
        };
        let field = |i: usize| self.table.fields[i].name.clone();
        let mut shared_key = false;
        if let Some(i) = self.pk {
            if let Some(v) = int(i) {
                if let Some(&first) = self.pk_seen.get(&v) {
                    if first == row_hash {
                        return Err((
                            field(i),
                            format!("exact duplicate of an earlier row with key {v}"),
                        ));
                    }
                    if self.pk_referenced {
                        return Err((
                            field(i),
                            format!("duplicate primary key {v} (referenced by other tables)"),
                        ));
                    }
                    // Event tables: some real exports (Eunomia GiBleed among them) reuse ids across
                    // different records. They are kept and counted, not dropped.
                    shared_key = true;
                }
            }
        }
        if let Some(i) = self.person_fk {
            if let Some(p) = int(i) {
                if !ctx.persons.contains(&p) {
                    return Err((field(i), format!("person_id {p} is not in person")));
                }
            }
        }
        if self.table.name == "death" {
            if let Some(p) = self.person_fk.and_then(int) {
                if self.deaths.contains(&p) {
                    return Err((
                        "person_id".into(),
                        format!("second death record for person {p}"),
                    ));
                }
            }
        }
        let mut period = None;
        if let Some((s, e)) = self.op_cols {
            if let (Value::Date(start), Value::Date(end), Some(p)) =
                (&vals[s], &vals[e], self.person_fk.and_then(int))
            {
                if end < start {
                    return Err((field(e), "observation period ends before it starts".into()));
                }
                if let Some(prev) = self
                    .periods
                    .get(&p)
                    .and_then(|v| v.iter().find(|(a, b)| start <= b && a <= end))
                {
                    return Err((
                        field(s),
                        format!(
                            "observation period overlaps an earlier one of person {p} ({} to {})",
                            fmt_day(prev.0),
                            fmt_day(prev.1)
                        ),
                    ));
                }
                period = Some((p, *start, *end));
            }
        }
        // Accepted: record state.
        if let Some(v) = self.pk.and_then(int) {
            if shared_key {
                self.shared_keys += 1;
            } else {
                self.pk_seen.insert(v, row_hash);
            }
        }
        if self.table.name == "death" {
            if let Some(p) = self.person_fk.and_then(int) {
                self.deaths.insert(p);
            }
        }
        if let Some((p, s, e)) = period {
            self.periods.entry(p).or_default().push((s, e));
        }
        Ok(())
    }
}

fn fmt_day(d: i32) -> String {
    chrono::DateTime::from_timestamp(d as i64 * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| d.to_string())
}

/// Quarantine file for one table, created on the first refused row.
struct Quarantine {
    path: PathBuf,
    rel: String,
    writer: Option<csv::Writer<File>>,
    rows: u64,
    reasons: HashMap<String, u64>,
}

impl Quarantine {
    fn new(staging: &Path, table: &str) -> Quarantine {
        let rel = format!("{QUARANTINE_DIR}/{table}.csv");
        Quarantine {
            path: staging.join(&rel),
            rel,
            writer: None,
            rows: 0,
            reasons: HashMap::new(),
        }
    }

    fn put(
        &mut self,
        file: &str,
        line: u64,
        field: &str,
        reason: &str,
        record: &str,
    ) -> Result<(), CdmError> {
        if self.writer.is_none() {
            let mut w =
                csv::Writer::from_path(&self.path).map_err(|e| CdmError::Store(e.to_string()))?;
            w.write_record(["file", "line", "field", "reason", "record"])
                .map_err(|e| CdmError::Store(e.to_string()))?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("created above");
        w.write_record([file, &line.to_string(), field, reason, record])
            .map_err(|e| CdmError::Store(e.to_string()))?;
        self.rows += 1;
        // Group reasons by their shape so the report stays short (numbers stripped).
        let mut key = String::with_capacity(reason.len());
        for c in reason.chars() {
            if c.is_ascii_digit() {
                if !key.ends_with('N') {
                    key.push('N');
                }
            } else {
                key.push(c);
            }
        }
        *self.reasons.entry(format!("{field}: {key}")).or_default() += 1;
        Ok(())
    }

    fn finish(self, writer: &mut StoreWriter) -> Result<Vec<(String, u64)>, CdmError> {
        if let Some(w) = self.writer {
            let f = w.into_inner().map_err(|e| CdmError::Store(e.to_string()))?;
            f.sync_all().map_err(|e| CdmError::io(&self.path, e))?;
            writer.record_rows(&self.rel, self.rows);
        }
        let mut reasons: Vec<(String, u64)> = self.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(reasons)
    }
}

fn import_table(
    table: &TableSpec,
    path: &Path,
    writer: &mut StoreWriter,
    ctx: &mut Context,
    progress: &dyn Progress,
) -> Result<TableReport, CdmError> {
    let display = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    progress.file(&table.name, size);
    let counter = Arc::new(AtomicU64::new(0));
    let mut input = open_input(path, counter.clone())?;
    let delim = sniff_delimiter(&mut *input, path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    let header = rdr
        .byte_headers()
        .map_err(|e| read_error(path, 1, e))?
        .clone();

    // Map file columns to spec fields.
    let mut col_to_field: Vec<Option<usize>> = Vec::with_capacity(header.len());
    let mut ignored = Vec::new();
    for raw in header.iter() {
        let name = String::from_utf8_lossy(raw)
            .trim()
            .trim_start_matches('\u{feff}')
            .trim_matches('"')
            .to_ascii_lowercase();
        let name = match v53_rename(&table.name, &name) {
            Some(n) => {
                ctx.saw_v53 = true;
                n.to_string()
            }
            None => name,
        };
        let idx = table.field_index(&name);
        if idx.is_none() {
            ignored.push(name);
        } else if col_to_field.contains(&idx) {
            return Err(CdmError::Import(format!(
                "{}: column {name} appears twice in the header",
                path.display()
            )));
        }
        col_to_field.push(idx);
    }
    let present: HashSet<usize> = col_to_field.iter().flatten().copied().collect();
    let missing_required: Vec<&str> = table
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| f.required && !present.contains(i))
        .map(|(_, f)| f.name.as_str())
        .collect();
    let missing_optional: Vec<String> = table
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| !f.required && !present.contains(i))
        .map(|(_, f)| f.name.clone())
        .collect();
    let header_problem = if missing_required.is_empty() {
        None
    } else {
        let delim_hint = if header.len() == 1
            && header.as_slice().iter().any(|&b| b == b';' || b == b'|')
        {
            " (the header is one column: the file seems to use another delimiter; use comma or tab)"
        } else {
            ""
        };
        Some((
            missing_required.join(","),
            format!("required column(s) missing from header{delim_hint}"),
        ))
    };

    let mut builders: Vec<ColumnBuilder> = table
        .fields
        .iter()
        .map(|f| ColumnBuilder::new(f.ty, BATCH_ROWS))
        .collect();
    let mut tw = writer.table_writer(table)?;
    let mut quarantine = Quarantine::new(writer.staging_dir(), &table.name);
    let mut checks = Checks::new(table);
    let mut report = TableReport {
        table: table.name.clone(),
        file: Some(display.clone()),
        ignored_columns: ignored,
        missing_columns: missing_optional,
        ..Default::default()
    };
    let nfields = table.fields.len();
    let mut record = csv::ByteRecord::new();
    let mut in_batch = 0usize;
    let mut last_reported = 0u64;
    let mut new_persons: Vec<i64> = Vec::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(read_error(path, line, e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        report.read += 1;
        let raw_line = || {
            record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
                .join(&(delim as char).to_string())
        };
        if let Some((field, reason)) = &header_problem {
            quarantine.put(&display, line, field, reason, &raw_line())?;
            continue;
        }
        if record.len() != header.len() {
            let reason = format!("expected {} fields, found {}", header.len(), record.len());
            quarantine.put(&display, line, "", &reason, &raw_line())?;
            continue;
        }
        // Parse every field first so that a refused row appends nothing.
        let mut vals: Vec<Value> = vec![Value::Null; nfields];
        let mut problem: Option<(String, String)> = None;
        for (col, bytes) in record.iter().enumerate() {
            let Some(fi) = col_to_field[col] else {
                continue;
            };
            let f = &table.fields[fi];
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    problem = Some((f.name.clone(), "not valid UTF-8".into()));
                    break;
                }
            };
            match parse_value(text, f.ty) {
                Ok(v) => vals[fi] = v,
                Err(reason) => {
                    problem = Some((f.name.clone(), reason));
                    break;
                }
            }
        }
        if problem.is_none() {
            if let Some(fi) = table
                .fields
                .iter()
                .enumerate()
                .position(|(i, f)| f.required && vals[i] == Value::Null)
            {
                problem = Some((
                    table.fields[fi].name.clone(),
                    "required value is empty".into(),
                ));
            }
        }
        if problem.is_none() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            record.as_slice().hash(&mut h);
            problem = checks.check(&vals, h.finish(), ctx).err();
        }
        if let Some((field, reason)) = problem {
            quarantine.put(&display, line, &field, &reason, &raw_line())?;
            continue;
        }
        if table.name == "person" {
            if let Value::Int(p) = vals[0] {
                new_persons.push(p);
            }
        }
        for (b, v) in builders.iter_mut().zip(&vals) {
            b.append(v);
        }
        report.loaded += 1;
        in_batch += 1;
        if in_batch == BATCH_ROWS {
            flush(table, &mut builders, &mut tw)?;
            in_batch = 0;
            let n = counter.load(Ordering::Relaxed);
            progress.advance(n - last_reported);
            last_reported = n;
        }
    }
    if in_batch > 0 {
        flush(table, &mut builders, &mut tw)?;
    }
    progress.advance(
        counter
            .load(Ordering::Relaxed)
            .saturating_sub(last_reported),
    );
    ctx.persons.extend(new_persons);
    let (rel, rows) = tw.finish()?;
    writer.record_rows(&rel, rows);
    report.quarantined = quarantine.rows;
    report.shared_primary_keys = checks.shared_keys;
    report.reasons = quarantine.finish(writer)?;
    debug_assert_eq!(report.read, report.loaded + report.quarantined);
    Ok(report)
}

fn flush(
    table: &TableSpec,
    builders: &mut [ColumnBuilder],
    tw: &mut crate::store::TableWriter,
) -> Result<(), CdmError> {
    let cols = builders.iter_mut().map(|b| b.finish()).collect();
    let batch = RecordBatch::try_new(table.schema(), cols)
        .map_err(|e| CdmError::Store(format!("{}: {e}", table.name)))?;
    tw.write(&batch)
}
