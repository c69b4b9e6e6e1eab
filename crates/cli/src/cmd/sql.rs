use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use medfed_engine::SiteEngine;

/// Run one read-only SQL query over a site store's CDM tables through DataFusion.
///
/// Every CDM table is available under its name (person, condition_occurrence, concept, …). DDL, DML and
/// COPY are refused: this is a local, read-only tool for the hospital's data steward. Nothing here is
/// sent anywhere.
#[derive(clap::Args)]
pub struct Args {
    /// Site store folder.
    #[arg(long, value_name = "SITE_DIR")]
    site: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The SQL query (PostgreSQL-like dialect).
    query: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let engine = SiteEngine::open(&a.site)?;
    let batches = engine.sql_blocking(&a.query)?;
    print_batches(&batches, a.format)
}

fn print_batches(batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match format {
        Format::Table => println!("{}", arrow::util::pretty::pretty_format_batches(batches)?),
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(stdout.lock());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            println!();
        }
    }
    Ok(())
}
