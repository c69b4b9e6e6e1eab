//! `medfed model …`: the hub's model registry, scoring, and a site's own view of a model's rows.

use std::path::PathBuf;

use anyhow::{bail, Context};
use medfed_analysis::regression::{self, RegisteredModel};
use medfed_engine::SiteEngine;
use medfed_privacy::{release, Policy};
use medfed_protocol::study::AnalysisSpec;

use super::study::{Client, HubArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the models in the hub's registry.
    List(ListArgs),
    /// Export a registered model as JSON (medfed-model/1: covariate spec, cohorts, coefficients,
    /// performance).
    Export(ExportArgs),
    /// Apply a model: to persons described in a file (locally, or through the hub with --hub/--hub-dir),
    /// or at a site, releasing only the distribution of predicted risk (--site).
    Score(ScoreArgs),
    /// Write a site's design matrix for a regression of a study, for the site's own checks (local only:
    /// the rows never leave this machine through medfed).
    Features(FeaturesArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Model id (`<study id>.<analysis id>`, as `medfed model list` shows).
    id: String,
    /// Write the model here instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScoreArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// The model: an exported model file, or (with a hub) a registered model's id.
    model: String,
    /// Persons to score: JSON `{"persons": [{"age": 61, "male": 1, "smoking": "current", …}]}`.
    #[arg(long, conflicts_with = "site")]
    input: Option<PathBuf>,
    /// Apply the model at this site (store folder or postgres://… URL) to the model's own population
    /// and print only the released distribution of predicted risk.
    #[arg(long)]
    site: Option<PathBuf>,
    /// Disclosure policy for --site (default: minimum cell count 10).
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FeaturesArgs {
    /// Study file with the regression or GWAS.
    study: PathBuf,
    /// The regression's or GWAS's analysis id (default: the study's first regression or GWAS).
    #[arg(long)]
    analysis: Option<String>,
    /// Site store folder or postgres://… URL.
    #[arg(long)]
    site: PathBuf,
    /// File to write. A regression: CSV (columns, then the outcome, and the offset, time or event
    /// where the family has them). A GWAS: a PLINK phenotype and covariate file (`FID IID PHENO` and
    /// the covariates; case 2, control 1), to check this site's answers with PLINK itself.
    #[arg(long, default_value = "design.csv")]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::List(a) => {
            let c = Client::new(&a.hub)?;
            let v = c.get("/v1/models")?;
            let models = v["models"].as_array().cloned().unwrap_or_default();
            if models.is_empty() {
                println!(
                    "no models registered yet (a completed regression analysis registers one)"
                );
            }
            for m in models {
                println!(
                    "{:<40} {:<9} {}",
                    m["id"].as_str().unwrap_or(""),
                    m["family"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Export(a) => {
            let c = Client::new(&a.hub)?;
            let v = c.get(&format!("/v1/models/{}", a.id))?;
            let text = serde_json::to_string_pretty(&v)?;
            match a.out {
                Some(p) => {
                    std::fs::write(&p, text + "\n")
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    println!("wrote {}", p.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Score(a) => score(a),
        Command::Features(a) => features(a),
    }
}

fn hub_given(h: &HubArgs) -> bool {
    h.hub.is_some() || h.hub_dir.is_some()
}

fn load_model(path: &str) -> anyhow::Result<RegisteredModel> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read model {path}"))?;
    RegisteredModel::parse(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))
}

fn score(a: ScoreArgs) -> anyhow::Result<()> {
    if let Some(site) = &a.site {
        let model = load_model(&a.model)?;
        let policy = match &a.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        return site_distribution(&model, site, &policy);
    }
    let input = a
        .input
        .as_ref()
        .context("give --input persons.json, or --site to apply the model at a site")?;
    let body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {}", input.display()))?,
    )
    .with_context(|| format!("{}: not JSON", input.display()))?;
    let out = if hub_given(&a.hub) {
        Client::new(&a.hub)?.post(&format!("/v1/models/{}/score", a.model), body.to_string())?
    } else {
        let model = load_model(&a.model)?;
        let persons = body["persons"]
            .as_array()
            .with_context(|| format!("{}: $.persons must be a list", input.display()))?;
        let mut results = Vec::new();
        for (i, p) in persons.iter().enumerate() {
            let obj = p.as_object().with_context(|| {
                format!("{}: $.persons[{i}] must be an object", input.display())
            })?;
            let row = model
                .row(obj)
                .map_err(|e| anyhow::anyhow!("{}: $.persons[{i}].{e}", input.display()))?;
            results.push(serde_json::json!({
                "linear_predictor": model.linear_predictor(&row),
                "prediction": model.predict(&row),
            }));
        }
        serde_json::json!({"model": model.id, "family": model.spec.family,
            "predicts": medfed_hub::core::predicts(&model), "results": results})
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Apply a model at a site to its population and print the released risk distribution only.
fn site_distribution(
    model: &RegisteredModel,
    site: &std::path::Path,
    policy: &Policy,
) -> anyhow::Result<()> {
    if model.spec.family != medfed_protocol::regression::Family::Binomial {
        bail!("--site shows a distribution of predicted risk: the model must be binomial");
    }
    let engine = SiteEngine::open(site)?;
    let spec = AnalysisSpec::Regression(model.spec.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let design = rt.block_on(regression::extract(&engine, &spec))?;
    // The same local step as a network evaluation round, through the same release.
    let step = medfed_protocol::regression::ModelStep::Evaluate {
        coefficients: model.coefficients.clone(),
    };
    let released = release(
        regression::local_step(&design, &spec, &step, policy)?,
        policy,
    );
    let tables = released.tables().unwrap_or_default();
    let pooled = medfed_analysis::pooled::pool_tables(&[("site".to_string(), tables)]);
    let Some(t) = pooled.first() else {
        bail!("nothing released");
    };
    println!(
        "model {} at {}: {} persons in its population, {} scored",
        model.id,
        site.display(),
        design.population,
        design.rows()
    );
    for (why, n) in &design.dropped {
        println!("  left out ({why}): {n}");
    }
    let v = regression::evaluate_table(t);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// A GWAS's samples at one site as a PLINK phenotype/covariate file: the population's persons with
/// a phenotype and every covariate (FID = IID = person_id).
fn gwas_phenotypes(a: &FeaturesArgs, g: &medfed_protocol::gwas::Gwas) -> anyhow::Result<()> {
    let spec = AnalysisSpec::Regression(g.as_regression());
    let engine = SiteEngine::open(&a.site)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let d = rt.block_on(regression::extract(&engine, &spec))?;
    let p = d.p();
    let mut out = String::from("FID IID PHENO");
    for c in &d.columns[1..] {
        out.push(' ');
        out.push_str(&c.to_uppercase());
    }
    out.push('\n');
    for (i, person) in d.persons.iter().enumerate() {
        let y = if g.quantitative() {
            d.y[i].to_string()
        } else if d.y[i] > 0.5 {
            "2".into()
        } else {
            "1".into()
        };
        out.push_str(&format!("{person} {person} {y}"));
        for v in &d.x[i * p + 1..(i + 1) * p] {
            out.push_str(&format!(" {v}"));
        }
        out.push('\n');
    }
    std::fs::write(&a.out, out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "{}: {} persons in the population, {} with a phenotype and covariates written to {}",
        g.id,
        d.population,
        d.rows(),
        a.out.display()
    );
    Ok(())
}

fn features(a: FeaturesArgs) -> anyhow::Result<()> {
    let text = super::study::load_study(&a.study)?;
    let study = medfed_protocol::study::parse_study(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.study.display()))?;
    let spec = study
        .analyses
        .iter()
        .find(|s| {
            matches!(s, AnalysisSpec::Regression(_) | AnalysisSpec::Gwas(_))
                && a.analysis.as_deref().is_none_or(|id| s.id() == id)
        })
        .with_context(|| format!("{}: no such regression or GWAS analysis", a.study.display()))?;
    if let AnalysisSpec::Gwas(g) = spec {
        return gwas_phenotypes(&a, g);
    }
    let AnalysisSpec::Regression(r) = spec else {
        bail!("not a regression");
    };
    let engine = SiteEngine::open(&a.site)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let d = rt.block_on(regression::extract(&engine, spec))?;
    let mut out = String::new();
    let mut header: Vec<String> = d.columns.clone();
    header.push("y".into());
    if d.offset.is_some() {
        header.push("offset".into());
    }
    if r.family == medfed_protocol::regression::Family::Cox {
        header.push("event".into());
    }
    out.push_str(&header.join(","));
    out.push('\n');
    let p = d.p();
    for i in 0..d.rows() {
        let mut cells: Vec<String> = d.x[i * p..(i + 1) * p]
            .iter()
            .map(|v| v.to_string())
            .collect();
        cells.push(d.y[i].to_string());
        if let Some(o) = &d.offset {
            cells.push(o[i].to_string());
        }
        if let Some(e) = d.event.get(i) {
            cells.push((*e as u8).to_string());
        }
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    std::fs::write(&a.out, out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "{}: {} persons in the population, {} rows × {} columns written to {}",
        spec.id(),
        d.population,
        d.rows(),
        p,
        a.out.display()
    );
    for (why, n) in &d.dropped {
        println!("  left out ({why}): {n}");
    }
    Ok(())
}
