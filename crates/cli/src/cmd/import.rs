use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::ProgressBar;
use medfed_cdm::{import_csv_dir, ImportOptions, Progress};

use super::progress::bytes_bar;

/// Import an OMOP CDM CSV folder into a site store.
///
/// Accepts CDM 5.3 and 5.4, comma or tab delimited, .csv or .csv.gz, any case of file and column
/// names, dates as YYYY-MM-DD or YYYYMMDD. Rows that fail validation (types, required values, dates,
/// person references, duplicate keys, one death per person, overlapping observation periods) are
/// written to SITE_DIR/quarantine/<table>.csv with file, line, field and reason. The store is written
/// atomically: a failed import leaves any existing store untouched.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of OMOP CDM CSV files (one file per table, e.g. person.csv, CONDITION_OCCURRENCE.csv.gz).
    #[arg(long, value_name = "CSV_DIR")]
    cdm: PathBuf,
    /// Site store to create (replaced atomically if it exists), or a PostgreSQL schema to load
    /// with the CDM DDL: postgres://user@host:port/db?schema=cdm (replaced atomically too).
    #[arg(long, value_name = "SITE_DIR|POSTGRES_URL")]
    out: PathBuf,
    /// Site name recorded in site.toml [default: the output folder's name].
    #[arg(long)]
    site: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// With a PostgreSQL target: where to keep the quarantined rows [default: ./quarantine-SCHEMA].
    #[arg(long, value_name = "DIR")]
    quarantine: Option<PathBuf>,
    /// The site's genotypes as VCF (plain, .gz or BGZF .vcf.gz) or BCF (.bcf, BGZF or
    /// uncompressed), written into the store as PLINK 1
    /// binary (genotypes/site.{bed,bim,fam}); multi-allelic records become one variant per ALT.
    /// Sample ids must be person_ids unless --vcf-ids maps them.
    #[arg(long, value_name = "VCF")]
    vcf: Option<PathBuf>,
    /// Two columns (VCF sample id, person_id), tab or space separated; samples it does not list are
    /// left out and counted.
    #[arg(long, value_name = "TSV", requires = "vcf")]
    vcf_ids: Option<PathBuf>,
}

/// The `--vcf` import into a store's staging folder.
fn import_genotypes(
    vcf: &Path,
    ids: Option<&Path>,
    staging: &Path,
) -> Result<(medfed_genomics::vcf::VcfImport, Vec<(String, u64)>), medfed_cdm::CdmError> {
    let fail = |m: String| medfed_cdm::CdmError::Import(m);
    let map = match ids {
        None => None,
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            let mut m = std::collections::HashMap::new();
            for (i, line) in text.lines().enumerate() {
                let t: Vec<&str> = line.split_whitespace().collect();
                if t.is_empty() || t[0].starts_with('#') {
                    continue;
                }
                if t.len() != 2 || t[1].parse::<i64>().is_err() {
                    return Err(fail(format!(
                        "{} line {}: expected a VCF sample id and an integer person_id",
                        p.display(),
                        i + 1
                    )));
                }
                m.insert(t[0].to_string(), t[1].to_string());
            }
            Some(m)
        }
    };
    let dir = staging.join(medfed_cdm::store::GENOTYPE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let r = medfed_genomics::vcf::import_vcf(vcf, &dir.join("site"), map.as_ref())
        .map_err(|e| fail(e.to_string()))?;
    if map.is_none() {
        let fam =
            medfed_genomics::read_fam(&dir.join("site.fam")).map_err(|e| fail(e.to_string()))?;
        if let Some(s) = fam.iter().find(|s| s.iid.parse::<i64>().is_err()) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(fail(format!(
                "{}: sample {:?} is not a person_id; map the VCF's samples with --vcf-ids",
                vcf.display(),
                s.iid
            )));
        }
    }
    let rows = vec![
        ("genotypes/site.bed".to_string(), r.variants),
        ("genotypes/site.bim".to_string(), r.variants),
        ("genotypes/site.fam".to_string(), r.kept_samples as u64),
    ];
    Ok((r, rows))
}

struct Bar(ProgressBar);
impl Progress for Bar {
    fn file(&self, table: &str, _bytes: u64) {
        self.0.set_message(table.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let target = a.out.to_string_lossy().to_string();
    if medfed_engine::is_postgres_url(&target) {
        // Validate and quarantine exactly as for a store, into a staging store, then load it.
        let schema = medfed_engine::PgSite::parse(&target)?.schema;
        let staging = tempfile::tempdir()?;
        let store = staging.path().join("store");
        run(Args {
            cdm: a.cdm.clone(),
            out: store.clone(),
            site: a.site.clone().or_else(|| Some(schema.clone())),
            json: a.json,
            quarantine: None,
            vcf: a.vcf.clone(),
            vcf_ids: a.vcf_ids.clone(),
        })?;
        let q = store.join("quarantine");
        if std::fs::read_dir(&q)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            let keep = a
                .quarantine
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("quarantine-{schema}")));
            let _ = std::fs::remove_dir_all(&keep);
            super::pgload::copy_dir(&q, &keep)?;
            println!("quarantined rows kept in {}", keep.display());
        }
        let loaded = super::pgload::load(&store, &target)?;
        println!(
            "loaded {} tables, {} rows into PostgreSQL schema {schema}",
            loaded.len(),
            loaded.iter().map(|x| x.1).sum::<u64>(),
        );
        return Ok(());
    }
    let total: u64 = std::fs::read_dir(&a.cdm)
        .with_context(|| format!("cannot read {}", a.cdm.display()))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let bar = Bar(bytes_bar(total, "importing"));
    let genotypes = std::cell::RefCell::new(None);
    let extra = |staging: &Path| -> Result<Vec<(String, u64)>, medfed_cdm::CdmError> {
        let Some(vcf) = &a.vcf else {
            return Ok(Vec::new());
        };
        bar.0.set_message("genotypes (VCF)");
        let (r, rows) = import_genotypes(vcf, a.vcf_ids.as_deref(), staging)?;
        *genotypes.borrow_mut() = Some(r);
        Ok(rows)
    };
    let report = import_csv_dir(
        &a.cdm,
        &a.out,
        &ImportOptions {
            site: a.site.clone(),
            extra: Some(&extra),
        },
        &bar,
    )?;
    bar.0.finish_and_clear();
    if let Some(g) = genotypes.borrow().as_ref() {
        println!(
            "genotypes from {}: {} samples ({} kept, {} not in --vcf-ids), {} records → {} variants ({} multi-allelic records split, {} without ALT skipped); {} missing, {} half and {} other-ALT calls set missing",
            a.vcf.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            g.samples,
            g.kept_samples,
            g.unmapped.len(),
            g.records,
            g.variants,
            g.multiallelic_records,
            g.no_alt_records,
            g.missing_calls,
            g.half_calls,
            g.other_alt_calls
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "site store {} (source CDM {})",
        a.out.display(),
        report.source_cdm_version
    );
    println!(
        "{:<24} {:>12} {:>12} {:>12}  file",
        "table", "read", "loaded", "quarantined"
    );
    for t in &report.tables {
        if t.file.is_none() {
            continue;
        }
        println!(
            "{:<24} {:>12} {:>12} {:>12}  {}",
            t.table,
            t.read,
            t.loaded,
            t.quarantined,
            t.file.as_deref().unwrap_or("")
        );
        for (reason, n) in t.reasons.iter().take(5) {
            println!("{:<24} {:>38}  quarantined: {reason}", "", n);
        }
        if t.shared_primary_keys > 0 {
            println!(
                "{:<24} {:>38}  loaded although their {} id was already used by a different row",
                "", t.shared_primary_keys, t.table
            );
        }
        if !t.ignored_columns.is_empty() {
            println!(
                "{:<24} ignored columns not in CDM 5.4: {}",
                "",
                t.ignored_columns.join(", ")
            );
        }
    }
    let absent: Vec<&str> = report
        .tables
        .iter()
        .filter(|t| t.file.is_none())
        .map(|t| t.table.as_str())
        .collect();
    println!("absent tables (stored empty): {}", absent.join(", "));
    if !report.unrecognised_files.is_empty() {
        println!(
            "files that are not CDM tables (not imported): {}",
            report.unrecognised_files.join(", ")
        );
    }
    let q = report.total_quarantined();
    if q > 0 {
        println!("{q} rows quarantined: see {}/quarantine/", a.out.display());
    }
    Ok(())
}
