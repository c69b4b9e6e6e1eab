//! `medfed cohort generate`: run an ATLAS/Circe cohort definition on a site, for its data steward.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use medfed_engine::SiteEngine;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write the cohort table (subject_id,cohort_start_date,cohort_end_date) of a Circe cohort JSON.
    /// Local only: cohort rows never cross the network.
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The site store.
    #[arg(long)]
    site: PathBuf,
    /// Cohort definition as exported by ATLAS (Circe JSON).
    cohort: PathBuf,
    /// Output CSV (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the generated SQL instead of running it.
    #[arg(long)]
    sql: bool,
    /// SQL dialect for --sql: datafusion (the node's engine), duckdb or postgres.
    #[arg(long, default_value = "datafusion", value_parser = ["datafusion", "duckdb", "postgres"])]
    dialect: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Command::Generate(a) = a.command;
    let text = std::fs::read_to_string(&a.cohort)
        .with_context(|| format!("cannot read {}", a.cohort.display()))?;
    let cohort =
        medfed_cohort::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.cohort.display()))?;
    if a.sql {
        let d =
            medfed_engine::Dialect::parse(&a.dialect).unwrap_or(medfed_engine::Dialect::DataFusion);
        println!("{}", d.portable(&medfed_cohort::sql_for(&cohort)));
        return Ok(());
    }
    let engine = SiteEngine::open(&a.site)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(medfed_cohort::generate(&engine, &cohort))?;
    let mut text = String::from("subject_id,cohort_start_date,cohort_end_date\n");
    for r in &rows {
        text.push_str(&format!(
            "{},{},{}\n",
            r.subject_id,
            medfed_synth::date_string(r.start),
            medfed_synth::date_string(r.end)
        ));
    }
    let persons = {
        let mut p: Vec<i64> = rows.iter().map(|r| r.subject_id).collect();
        p.dedup();
        p.len()
    };
    match &a.out {
        Some(o) => {
            std::fs::write(o, &text).with_context(|| format!("cannot write {}", o.display()))?;
            eprintln!(
                "{persons} persons, {} cohort entries → {}",
                rows.len(),
                o.display()
            );
        }
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
            eprintln!("{persons} persons, {} cohort entries", rows.len());
        }
    }
    Ok(())
}
