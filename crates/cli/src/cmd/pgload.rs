//! Load a site store into PostgreSQL with the OMOP CDM DDL, atomically: every table is created and
//! filled in a staging schema, which then replaces the target schema in one transaction.

use std::path::Path;

use anyhow::Context;
use medfed_cdm::spec::{CdmSpec, CdmType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// PostgreSQL type of a CDM field, as in the OHDSI PostgreSQL DDL (integers as BIGINT throughout, so
/// that one DDL serves the CDM's integer and bigint keys).
fn pg_type(t: CdmType) -> String {
    match t {
        CdmType::Integer => "BIGINT".into(),
        CdmType::Float => "NUMERIC".into(),
        CdmType::Date => "DATE".into(),
        CdmType::Datetime => "TIMESTAMP".into(),
        CdmType::Varchar(Some(n)) => format!("VARCHAR({n})"),
        CdmType::Varchar(None) => "TEXT".into(),
    }
}

/// CREATE TABLE statements of the CDM in `schema`.
pub fn ddl(schema: &str) -> String {
    let mut s = String::new();
    for t in CdmSpec::v54().tables() {
        let cols: Vec<String> = t
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{} {}{}",
                    f.name,
                    pg_type(f.ty),
                    if f.required { " NOT NULL" } else { "" }
                )
            })
            .collect();
        s.push_str(&format!(
            "CREATE TABLE {schema}.{} ({});\n",
            t.name,
            cols.join(", ")
        ));
    }
    s
}

pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// Load every table of the store at `store` into the schema named by `url`; returns rows per table.
pub fn load(store: &Path, url: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let site = medfed_engine::PgSite::parse(url)?;
    let schema = site.schema.clone();
    let staging = format!("{schema}_medfed_staging");
    let mut c = postgres::Client::connect(site.base_url(), postgres::NoTls)
        .with_context(|| "cannot connect to PostgreSQL")?;
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {staging} CASCADE; CREATE SCHEMA {staging};"
    ))?;
    c.batch_execute(&ddl(&staging))?;
    let store_h = medfed_cdm::SiteStore::open(store)?;
    let mut out = Vec::new();
    for t in CdmSpec::v54().tables() {
        let path = store_h.table_path(&t.name);
        if !path.exists() {
            out.push((t.name.clone(), 0));
            continue;
        }
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        let cols: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
        let mut w = c.copy_in(&format!(
            "COPY {staging}.{} ({}) FROM STDIN (FORMAT csv)",
            t.name,
            cols.join(", ")
        ))?;
        let mut n = 0u64;
        for batch in reader {
            let batch = batch?;
            n += batch.num_rows() as u64;
            let mut buf = Vec::new();
            {
                let mut cw = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S".to_string())
                    .build(&mut buf);
                cw.write(&batch)?;
            }
            std::io::Write::write_all(&mut w, &buf)?;
        }
        w.finish()
            .with_context(|| format!("loading {} into PostgreSQL", t.name))?;
        out.push((t.name.clone(), n));
    }
    // Statistics for the planner before anyone queries: without them PostgreSQL takes a freshly
    // loaded table for nearly empty and plans cohort queries as nested loops (a Circe cohort on
    // Eunomia went from under a second to minutes).
    for (table, _) in &out {
        c.batch_execute(&format!("ANALYZE {staging}.{table}"))
            .with_context(|| format!("analyzing {table}"))?;
    }
    // The switch: drop the old schema and rename the staging one, in one transaction.
    c.batch_execute(&format!(
        "BEGIN; DROP SCHEMA IF EXISTS {schema} CASCADE; ALTER SCHEMA {staging} RENAME TO {schema}; COMMIT;"
    ))?;
    Ok(out)
}
