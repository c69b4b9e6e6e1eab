use medfed_analysis::achilles::{Dialect, CATALOG};

/// List the analysis catalog: the study analysis types, and the Achilles characterization analyses
/// with the SQL each runs at a site.
///
/// `--sql --dialect duckdb` prints the same statements for DuckDB, so that anyone can check a
/// characterization against the pooled data (the tests and benchmarks do exactly that).
#[derive(clap::Args)]
pub struct Args {
    /// Print each Achilles analysis's SQL.
    #[arg(long)]
    sql: bool,
    /// SQL dialect for --sql: datafusion (the node's engine), duckdb or postgres.
    #[arg(long, default_value = "datafusion", value_parser = ["datafusion", "duckdb", "postgres"])]
    dialect: String,
    /// Print JSON (id, name, dims, measures, sql) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let d = Dialect::parse(&a.dialect).unwrap_or(Dialect::DataFusion);
    if a.json {
        let list: Vec<serde_json::Value> = CATALOG
            .iter()
            .map(|x| {
                serde_json::json!({
                    "id": x.id, "name": x.name,
                    "dims": x.dims.iter().map(|(n, p)| serde_json::json!({"name": n, "partition": p})).collect::<Vec<_>>(),
                    "measures": x.measures().iter().map(|m| serde_json::json!({"name": m.name, "kind": m.kind})).collect::<Vec<_>>(),
                    "sql": x.sql(d),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "Study analysis types: {}",
        medfed_protocol::study::ANALYSIS_TYPES.join(", ")
    );
    println!(
        "\nAchilles characterization analyses (type \"characterization\", field \"analyses\"):"
    );
    for x in CATALOG {
        println!("  {:>5}  {}", x.id, x.name);
        if a.sql {
            println!("         {}", x.sql(d));
        }
    }
    Ok(())
}
