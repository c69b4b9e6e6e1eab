use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow::array::{Array, Int64Array};
use medfed_engine::SiteEngine;
use medfed_synth::{generate, GroundTruth, SynthConfig};

use super::progress::count_bar;
use super::report::{esc, pyramid_svg};

/// Run the national network on this machine and write a report.
///
/// Builds (or reuses) a synthetic population of six hospitals, starts a hub and one node per hospital as
/// real processes on loopback (HTTPS, signed tasks and results), submits the standard study, writes the
/// pooled results into the hub's national statistics database and a self-contained report.html with
/// plots, then stops everything it started.
#[derive(clap::Args)]
pub struct Args {
    /// Persons in the national population (pilot scale: 10000000).
    #[arg(long, default_value_t = 1_000_000)]
    persons: u64,
    /// Number of hospitals.
    #[arg(long, default_value_t = 6)]
    hospitals: usize,
    /// Random seed of the population.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output folder for the population, the network and the report.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Keep the hub serving on this address after the study (for a browser); Ctrl-C stops it.
    #[arg(long)]
    serve: Option<String>,
}

/// The standard study the demo submits.
pub const STUDY: &str = include_str!("../../../../examples/studies/national-demo.json");
/// The cohort definition the standard study refers to (`../cohorts/gi-bleed.json`).
pub const GI_BLEED_COHORT: &str = include_str!("../../../../examples/cohorts/gi-bleed.json");
/// The R&D catalog study the demo submits second, and the cohorts it adds.
pub const CATALOG_STUDY: &str = include_str!("../../../../examples/studies/rd-catalog.json");
const COHORTS: &[(&str, &str)] = &[
    ("gi-bleed.json", GI_BLEED_COHORT),
    (
        "diclofenac.json",
        include_str!("../../../../examples/cohorts/diclofenac.json"),
    ),
    (
        "celecoxib.json",
        include_str!("../../../../examples/cohorts/celecoxib.json"),
    ),
    (
        "t2d-free-2019.json",
        include_str!("../../../../examples/cohorts/t2d-free-2019.json"),
    ),
    (
        "t2d.json",
        include_str!("../../../../examples/cohorts/t2d.json"),
    ),
    (
        "cvd-free-2019.json",
        include_str!("../../../../examples/cohorts/cvd-free-2019.json"),
    ),
    (
        "mace.json",
        include_str!("../../../../examples/cohorts/mace.json"),
    ),
];
/// The risk-model study the demo submits third.
pub const RISK_STUDY: &str = include_str!("../../../../examples/studies/risk-models.json");
pub const GWAS_STUDY: &str = include_str!("../../../../examples/studies/gwas.json");

struct Bar(indicatif::ProgressBar);
impl medfed_synth::Progress for Bar {
    fn persons(&self, done: u64, _: u64) {
        self.0.set_position(done);
    }
    fn stage(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

pub(super) fn ints(engine: &SiteEngine, q: &str) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut rows = Vec::new();
    for b in engine.sql_blocking(q)? {
        for r in 0..b.num_rows() {
            let mut row = Vec::new();
            for c in 0..b.num_columns() {
                let col = b
                    .column(c)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .context("expected an integer column")?;
                row.push(if col.is_null(r) { 0 } else { col.value(r) });
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

struct SiteStats {
    name: String,
    persons: i64,
    /// [sex][band] counts, sex 0 male.
    pyramid: [[i64; 18]; 2],
    t2d: i64,
    htn: i64,
    adults: i64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let pop = a.out.join("population");
    let cfg = SynthConfig {
        persons: a.persons,
        hospitals: a.hospitals,
        seed: a.seed,
        ..Default::default()
    };
    let truth_path = pop.join("ground_truth.json");
    let reuse = std::fs::read_to_string(&truth_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|t| t["config"] == serde_json::to_value(&cfg).unwrap_or_default())
        .unwrap_or(false);
    if reuse {
        println!("reusing the population in {}", pop.display());
    } else {
        println!(
            "building a synthetic population of {} persons in {} hospitals …",
            a.persons, a.hospitals
        );
        let bar = Bar(count_bar(a.persons, "persons"));
        let _: GroundTruth = generate(&cfg, &pop, &bar)?;
        bar.0.finish_and_clear();
    }
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&truth_path)?)?;
    let mut stats = Vec::new();
    for s in truth["sites"]
        .as_array()
        .context("ground truth lists sites")?
    {
        let name = s["name"].as_str().unwrap_or("?").to_string();
        let e = SiteEngine::open(pop.join(&name))?;
        let persons = ints(&e, "SELECT COUNT(*) FROM person")?[0][0];
        let mut pyramid = [[0i64; 18]; 2];
        for r in ints(&e, "SELECT CASE WHEN gender_concept_id = 8507 THEN 0 ELSE 1 END, LEAST((2024 - year_of_birth) / 5, 17), COUNT(*) FROM person p JOIN observation_period o ON o.person_id = p.person_id WHERE o.observation_period_end_date >= DATE '2024-12-31' GROUP BY 1, 2")? {
            pyramid[r[0] as usize][r[1] as usize] = r[2];
        }
        let with = |ancestor: i64| -> anyhow::Result<i64> {
            Ok(ints(&e, &format!("SELECT COUNT(DISTINCT c.person_id) FROM condition_occurrence c JOIN concept_ancestor ca ON ca.descendant_concept_id = c.condition_concept_id JOIN person p ON p.person_id = c.person_id WHERE ca.ancestor_concept_id = {ancestor} AND 2024 - p.year_of_birth >= 30"))?[0][0])
        };
        let adults = ints(
            &e,
            "SELECT COUNT(*) FROM person WHERE 2024 - year_of_birth >= 30",
        )?[0][0];
        stats.push(SiteStats {
            name,
            persons,
            pyramid,
            t2d: with(201826)?,
            htn: with(316866)?,
            adults,
        });
    }
    let sites: Vec<PathBuf> = stats.iter().map(|s| pop.join(&s.name)).collect();
    let listen = a.serve.clone().unwrap_or_else(|| "127.0.0.1:0".to_string());
    println!(
        "starting a hub and {} hospital nodes on loopback …",
        sites.len()
    );
    let local = super::network::LocalNetwork::start(&a.out.join("network"), &sites, &listen)?;
    // Drivers who consented at the first hospital: its node derives their categories from the CDM
    // and signs the batch the vehicle service loads. The in-car step runs next, and its events log
    // is what the vehicle service's node later answers from.
    let consented = consent_drivers(&local, &sites[0])?;
    let vehicles = super::vehicles::demo(&a.out, &consented)?;
    let city_started = std::time::Instant::now();
    let city = super::city::demo(&a.out, &local, &sites[0])?;
    println!(
        "city step done in {:.1} s",
        city_started.elapsed().as_secs_f64()
    );
    let net = network(&a, &sites, local, &a.out.join("vehicles/service"))?;
    // Concept names for the report (vocabulary, not patient data) from the first store.
    let names = concept_names(&SiteEngine::open(&sites[0])?)?;
    let report = a.out.join("report.html");
    std::fs::write(
        &report,
        render(&stats, &truth, &net, &names, &vehicles, &city),
    )?;
    let total: i64 = stats.iter().map(|s| s.persons).sum();
    println!("{total} persons across {} hospitals", stats.len());
    for s in &stats {
        println!(
            "  {:<12} {:>9} persons   T2D {:>5.1}%   hypertension {:>5.1}% (ages 30+)",
            s.name,
            s.persons,
            100.0 * s.t2d as f64 / s.adults.max(1) as f64,
            100.0 * s.htn as f64 / s.adults.max(1) as f64
        );
    }
    println!("site stores:   {}", pop.display());
    println!("ground truth:  {}", truth_path.display());
    println!(
        "hub:           {} (state {})",
        net.url,
        net.hub_db.display()
    );
    println!(
        "node folders:  {} (audit logs: medfed node audit --dir …)",
        a.out.join("network/nodes").display()
    );
    println!("results:       {}", net.results_path.display());
    println!("report:        {}", report.display());
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(mut running) = net.running {
        println!(
            "hub serving the national statistics at {}/ — Ctrl-C to stop",
            net.url
        );
        running.stop_nodes();
        running.wait_hub()?;
    }
    Ok(())
}

/// What the network part of the demo produced.
struct NetworkRun {
    url: String,
    hub_db: PathBuf,
    results: serde_json::Value,
    results_path: PathBuf,
    latency_s: f64,
    /// Per analysis: the same query on every site's store, summed (the pooled-data answer).
    direct: Vec<(String, u64)>,
    /// Pooled results of the R&D catalog study.
    catalog: serde_json::Value,
    catalog_latency_s: f64,
    /// Pooled results of the risk-model study.
    models: serde_json::Value,
    models_latency_s: f64,
    /// Pooled results of the GWAS study.
    gwas: serde_json::Value,
    gwas_latency_s: f64,
    /// Pooled results of the surveillance study, and its detectors scored against the planted
    /// outbreaks (from the hub's internal store, which only the operator on this machine can read).
    lookups: super::beacon::DemoLookups,
    surveil: serde_json::Value,
    surveil_latency_s: f64,
    surveil_scores: Option<serde_json::Value>,
    /// The city's exposure–response evidence, fitted on the environment stream's totals.
    evidence: Option<super::evidence::Report>,
    /// Pooled results of the in-car emergency counts study (the vehicle service's node).
    vehicle_events: serde_json::Value,
    running: Option<super::network::LocalNetwork>,
}

/// Drivers of the demo fleet who consented at the first hospital: 24 of its persons of driving age
/// get the fleet's VINs as subjects, and the node builds, signs and audits their profile batch.
fn consent_drivers(
    net: &super::network::LocalNetwork,
    site: &Path,
) -> anyhow::Result<super::vehicles::Consented> {
    let (name, node_dir) = net.nodes.first().context("no hospital node")?;
    let dir = medfed_node::NodeDir(node_dir.clone());
    let consents = medfed_node::consent::Consents::new(&dir);
    let persons = ints(
        &SiteEngine::open(site)?,
        "SELECT person_id FROM person WHERE year_of_birth BETWEEN 1945 AND 2004 ORDER BY person_id LIMIT 24",
    )?;
    let vins = medfed_vehicles::fleet::vins(super::vehicles::DEMO_SEED, persons.len());
    for (p, vin) in persons.iter().zip(&vins) {
        consents.grant(p[0], "vehicles", vin)?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (signed, batch) = rt.block_on(medfed_node::consent::profile_batch(&dir, "vehicles"))?;
    let file = node_dir.join("profiles-vehicles.json");
    medfed_node::consent::write_batch(&file, &signed)?;
    println!(
        "{name}: {} drivers consented to the in-car service; their categories, signed by the node, in {}",
        batch.profiles.len(),
        file.display()
    );
    Ok(super::vehicles::Consented {
        node: name.clone(),
        file,
        key: dir.load_key()?.public(),
        batch,
    })
}

fn network(
    a: &Args,
    sites: &[PathBuf],
    net: super::network::LocalNetwork,
    vehicle_log: &Path,
) -> anyhow::Result<NetworkRun> {
    let study_path = a.out.join("network/national-demo.json");
    std::fs::write(&study_path, STUDY)?;
    std::fs::create_dir_all(a.out.join("cohorts"))?;
    for (name, text) in COHORTS {
        std::fs::write(a.out.join("cohorts").join(name), text)?;
    }
    let client = super::study::Client::new(&super::study::HubArgs {
        hub: None,
        ca: None,
        token: None,
        hub_dir: Some(net.hub_dir.clone()),
    })?;
    let t0 = std::time::Instant::now();
    let ack = client.submit(super::study::load_study(&study_path)?)?;
    println!(
        "study {} submitted: {} tasks to {} nodes",
        ack.study_id,
        ack.tasks,
        ack.nodes.len()
    );
    let bar = count_bar(ack.tasks as u64, "tasks");
    let results = client.wait(
        &ack.study_id,
        std::time::Duration::from_secs(3600),
        |d, _| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    let latency_s = t0.elapsed().as_secs_f64();
    println!("pooled results in {latency_s:.2} s");
    let results_path = super::study::write_results(&a.out.join("results"), &results)?;
    // Cross-check: the same local-step query run directly on every store and summed.
    let study = medfed_protocol::study::parse_study(&super::study::load_study(&study_path)?)?;
    let engines: Vec<SiteEngine> = sites
        .iter()
        .map(SiteEngine::open)
        .collect::<Result<_, _>>()?;
    let mut direct = Vec::new();
    for an in &study.analyses {
        let q = medfed_analysis::sql_for(an)?;
        let mut n = 0u64;
        for e in &engines {
            n += ints(e, &q)?[0][0] as u64;
        }
        direct.push((an.id().to_string(), n));
    }
    super::study::print_summary(&results);
    // The R&D catalog through the same network.
    let catalog_path = a.out.join("network/rd-catalog.json");
    std::fs::write(&catalog_path, CATALOG_STUDY)?;
    let t1 = std::time::Instant::now();
    let ack = client.submit(super::study::load_study(&catalog_path)?)?;
    println!(
        "R&D catalog study {} submitted: {} tasks (characterization, cohorts, incidence, survival, comparative)",
        ack.study_id, ack.tasks
    );
    let bar = count_bar(ack.tasks as u64, "tasks");
    let catalog = client.wait(
        &ack.study_id,
        std::time::Duration::from_secs(3600),
        |d, _| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    let catalog_latency_s = t1.elapsed().as_secs_f64();
    println!("pooled catalog results in {catalog_latency_s:.2} s");
    super::study::write_results(&a.out.join("results/catalog"), &catalog)?;
    super::study::print_summary(&catalog);
    // The risk models: regressions fitted by the hub in rounds.
    let (models, models_latency_s) = run_in_rounds(
        a,
        &client,
        RoundsStudy {
            file: "risk-models.json",
            text: RISK_STUDY,
            submitted: "risk-model study {} submitted: type 2 diabetes and cardiovascular events in five years, fitted in Newton rounds",
            working: "fitting risk models",
            spinner: "fitting risk models (rounds of signed tasks)",
            done: "risk models fitted in",
            results: "results/models",
        },
    )?;
    // Genome-wide association over the hospitals' biobanks.
    let (gwas, gwas_latency_s) = run_in_rounds(
        a,
        &client,
        RoundsStudy {
            file: "gwas.json",
            text: GWAS_STUDY,
            submitted: "GWAS study {} submitted: type 2 diabetes and cardiovascular events over every hospital's genotypes (tables by chunk of variants, then logistic regression in Newton rounds)",
            working: "GWAS",
            spinner: "GWAS: genotype tables and regression rounds",
            done: "GWAS done in",
            results: "results/gwas",
        },
    )?;
    // Variant look-ups: a clinician's question, and a second researcher probing rare variants.
    let prober = super::study::Client::new(&super::study::HubArgs {
        hub: None,
        ca: None,
        token: Some(
            std::fs::read_to_string(net.hub_dir.join("researchers/prober.token"))?
                .trim()
                .to_string(),
        ),
        hub_dir: Some(net.hub_dir.clone()),
    })?;
    let lookups = super::beacon::demo_lookups(&client, &prober, &sites[0])?;
    print!("{}", super::beacon::render(&lookups.clinician));
    let withheld = lookups.prober["info"]["network"]["variants"]
        .as_array()
        .map_or(0, |v| {
            v.iter()
                .filter(|x| {
                    x["withheld"]
                        .as_array()
                        .is_some_and(|w| w.iter().any(|p| p[1]["rule"] == "probe_budget"))
                })
                .count()
        });
    println!(
        "beacon: the researcher 'prober' asked for {} rare variants; {withheld} were withheld somewhere because the budget was spent",
        lookups.probes
    );
    std::fs::create_dir_all(a.out.join("results/beacon"))?;
    std::fs::write(
        a.out.join("results/beacon/lookups.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "clinician": lookups.clinician, "prober": lookups.prober}))?,
    )?;
    // Syndromic surveillance: four secure-aggregation phases per chunk of days.
    let surveil_path = a.out.join("network/surveillance.json");
    std::fs::write(&surveil_path, super::surveil::DEFAULT_STUDY)?;
    let t3 = std::time::Instant::now();
    let ack = client.submit(super::study::load_study(&surveil_path)?)?;
    println!(
        "surveillance study {} submitted: syndromes by district × vulnerable group, 2020–2024, added under secure aggregation",
        ack.study_id
    );
    let bar = super::progress::spinner("surveillance: counting under secure aggregation");
    let surveil = client.wait(
        &ack.study_id,
        std::time::Duration::from_secs(3 * 3600),
        |d, _| bar.set_message(format!("surveillance: {d} tasks answered")),
    )?;
    bar.finish_and_clear();
    let surveil_latency_s = t3.elapsed().as_secs_f64();
    println!("surveillance alerts in {surveil_latency_s:.2} s");
    super::study::write_results(&a.out.join("results/surveillance"), &surveil)?;
    super::surveil::print_alerts(&surveil);
    // The environment stream: daily respiratory and cardiovascular cases by district, the counts
    // the city's exposure–response evidence is fitted on at the hub.
    run_in_rounds(
        a,
        &client,
        RoundsStudy {
            file: "environment.json",
            text: super::evidence::STUDY,
            submitted: "environment stream {} submitted: respiratory and cardiovascular cases by district and day, 2020–2024, added under secure aggregation",
            working: "environment stream",
            spinner: "environment stream: counting under secure aggregation",
            done: "environment stream counted in",
            results: "results/environment",
        },
    )?;
    // In-car emergencies into the national statistics: the vehicle service runs a node of its own
    // that answers `vehicle_events` from its events log through the same release step.
    let mut net = net;
    net.add_vehicle_node(
        "vehicle_service",
        vehicle_log,
        &super::vehicles::demo_node_policy(),
    )?;
    let vehicle_study = a.out.join("network/vehicle-events.json");
    std::fs::write(&vehicle_study, super::vehicles::DEMO_STUDY)?;
    let ack = client.submit(super::study::load_study(&vehicle_study)?)?;
    let vehicle_events = client.wait(
        &ack.study_id,
        std::time::Duration::from_secs(600),
        |_, _| {},
    )?;
    super::study::write_results(&a.out.join("results/vehicle_events"), &vehicle_events)?;
    println!(
        "in-car emergency counts (study {}) pooled into the national statistics",
        ack.study_id
    );
    let hub_db = net.hub_dir.join("hub.sqlite");
    let surveil_scores = score_surveillance(&hub_db, &a.out.join("population/ground_truth.json"))
        .map_err(|e| println!("(surveillance not scored: {e:#})"))
        .ok();
    let evidence = environment_evidence(&hub_db, &a.out)
        .map_err(|e| println!("(environment evidence not fitted: {e:#})"))
        .ok();
    let url = net.url.clone();
    let running = if a.serve.is_some() {
        Some(net)
    } else {
        drop(net);
        None
    };
    Ok(NetworkRun {
        url,
        hub_db,
        results,
        results_path,
        latency_s,
        direct,
        catalog,
        catalog_latency_s,
        models,
        models_latency_s,
        gwas,
        gwas_latency_s,
        lookups,
        surveil,
        surveil_latency_s,
        surveil_scores,
        evidence,
        vehicle_events,
        running,
    })
}

/// The city's exposure–response evidence from the environment stream's totals in the hub's own
/// database (the operator's view on this machine), against the population's district series.
fn environment_evidence(hub_db: &Path, out: &Path) -> anyhow::Result<super::evidence::Report> {
    let cube = super::evidence::hub_cube(hub_db, &super::evidence::default_stream()?)?;
    let dir = out.join("city/evidence");
    std::fs::create_dir_all(&dir)?;
    let r = super::evidence::report(
        &cube,
        &out.join("population/environment.csv"),
        Some(&out.join("population/ground_truth.json")),
        &dir,
    )?;
    super::evidence::print(&r);
    std::fs::write(dir.join("evidence.json"), serde_json::to_string_pretty(&r)?)?;
    Ok(r)
}

/// A demo study the hub runs in rounds, and what the console says about it.
struct RoundsStudy {
    file: &'static str,
    text: &'static str,
    /// Printed on submit; `{}` is the study id.
    submitted: &'static str,
    /// The spinner's message while tasks are answered (`"{working}: {n} tasks answered"`).
    working: &'static str,
    spinner: &'static str,
    done: &'static str,
    results: &'static str,
}

/// Submit a study whose analyses run in rounds, show a spinner until its results are in, write them
/// and print the summary; returns the results and the seconds from submit to results.
fn run_in_rounds(
    a: &Args,
    client: &super::study::Client,
    s: RoundsStudy,
) -> anyhow::Result<(serde_json::Value, f64)> {
    let path = a.out.join("network").join(s.file);
    std::fs::write(&path, s.text)?;
    let t = std::time::Instant::now();
    let ack = client.submit(super::study::load_study(&path)?)?;
    println!("{}", s.submitted.replacen("{}", &ack.study_id, 1));
    let bar = super::progress::spinner(s.spinner);
    let results = client.wait(
        &ack.study_id,
        std::time::Duration::from_secs(3600),
        |d, _| bar.set_message(format!("{}: {d} tasks answered", s.working)),
    )?;
    bar.finish_and_clear();
    let latency_s = t.elapsed().as_secs_f64();
    println!("{} {latency_s:.2} s", s.done);
    super::study::write_results(&a.out.join(s.results), &results)?;
    super::study::print_summary(&results);
    Ok((results, latency_s))
}

/// The demo's detectors against the planted outbreaks: the stream's totals read from the hub's own
/// database (the operator's view on this machine; no API serves them).
fn score_surveillance(hub_db: &Path, truth: &Path) -> anyhow::Result<serde_json::Value> {
    let study = medfed_protocol::study::parse_study(super::surveil::DEFAULT_STUDY)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let known = super::surveil::planted(truth)?;
    let mut store = medfed_hub::store::Store::new(Box::new(medfed_hub::db::Sqlite::open(
        &hub_db.to_string_lossy(),
    )?))?;
    let mut out = serde_json::Map::new();
    for a in &study.analyses {
        if let medfed_protocol::AnalysisSpec::Surveillance(s) = a {
            let Some(cube) = store.surveillance_cube(s)? else {
                continue;
            };
            let det = medfed_analysis::surveil::detect(s, &cube, &|_| {});
            let scores = medfed_analysis::surveil::evaluate(&det, &cube, &known, 7);
            super::surveil::print_scores(&s.id, &scores);
            out.insert(s.id.clone(), serde_json::to_value(&scores)?);
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Horizontal bars of a percentage per site, with an optional target line.
fn bars_svg(items: &[(String, f64)], target: Option<f64>, color: &str) -> String {
    let (w, row) = (520.0, 24.0);
    let max = items
        .iter()
        .map(|x| x.1)
        .fold(target.unwrap_or(0.0), f64::max)
        .max(1e-9)
        * 1.15;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}">"#,
        items.len() as f64 * row + 20.0
    );
    for (i, (name, v)) in items.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let bw = v / max * (w - 200.0);
        let _ = write!(
            s,
            r#"<text x="0" y="{:.1}" font-size="12">{}</text><rect x="110" y="{y}" width="{bw:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{:.1}%</text>"#,
            y + 14.0,
            esc(name),
            row - 6.0,
            115.0 + bw,
            y + 14.0,
            100.0 * v
        );
    }
    if let Some(t) = target {
        let x = 110.0 + t / max * (w - 200.0);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="0" y2="{}" stroke="#333" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10">published {:.1}%</text>"##,
            items.len() as f64 * row + 4.0,
            x + 3.0,
            items.len() as f64 * row + 16.0,
            100.0 * t
        );
    }
    s.push_str("</svg>");
    s
}

fn concept_names(e: &SiteEngine) -> anyhow::Result<std::collections::HashMap<i64, String>> {
    use arrow::array::StringArray;
    let mut out = std::collections::HashMap::new();
    for b in e.sql_blocking(
        "SELECT CAST(concept_id AS BIGINT), CAST(concept_name AS VARCHAR) FROM concept",
    )? {
        let (Some(ids), Some(names)) = (
            b.column(0).as_any().downcast_ref::<Int64Array>(),
            b.column(1).as_any().downcast_ref::<StringArray>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if !ids.is_null(i) && !names.is_null(i) {
                out.insert(ids.value(i), names.value(i).to_string());
            }
        }
    }
    Ok(out)
}

fn render(
    stats: &[SiteStats],
    truth: &serde_json::Value,
    net: &NetworkRun,
    names: &std::collections::HashMap<i64, String>,
    vehicles: &super::vehicles::VehiclesDemo,
    city: &super::city::CityDemo,
) -> String {
    let mut pooled = [[0i64; 18]; 2];
    for s in stats {
        for (pooled_sex, site_sex) in pooled.iter_mut().zip(&s.pyramid) {
            for (p, v) in pooled_sex.iter_mut().zip(site_sex) {
                *p += v;
            }
        }
    }
    let pct = |n: i64, d: i64| n as f64 / d.max(1) as f64;
    let t2d: Vec<(String, f64)> = stats
        .iter()
        .map(|s| (s.name.clone(), pct(s.t2d, s.adults)))
        .collect();
    let htn: Vec<(String, f64)> = stats
        .iter()
        .map(|s| (s.name.clone(), pct(s.htn, s.adults)))
        .collect();
    let mut h = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>medfed demo report</title>
<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}h2{margin-top:2em}</style></head><body>"#,
    );
    let _ = write!(h, "<h1>medfed — national network demo</h1><p>{} hospitals, {} persons. A hub and {} hospital nodes ran as separate processes on this machine; the hub sent signed tasks, each node ran them on its own OMOP CDM store, applied its disclosure policy and sent back signed statistics only.</p>",
        stats.len(), stats.iter().map(|s| s.persons).sum::<i64>(), stats.len());
    h.push_str(&network_section(net));
    h.push_str(&super::report::catalog_section(
        &net.catalog,
        names,
        truth,
        net.catalog_latency_s,
    ));
    h.push_str(&super::report::models_section(
        &net.models,
        truth,
        net.models_latency_s,
    ));
    h.push_str(&super::gwas_report::gwas_section(
        &net.gwas,
        truth,
        net.gwas_latency_s,
    ));
    h.push_str(&super::beacon::section(&net.lookups));
    h.push_str(&super::report::surveillance_section(
        &net.surveil,
        net.surveil_scores.as_ref(),
        net.surveil_latency_s,
    ));
    h.push_str(&super::vehicles::section(vehicles, &net.vehicle_events));
    h.push_str(&super::city::section(city, net.evidence.as_ref()));
    h.push_str("<h2>Hospitals (site-side summary)</h2><p>Computed by each site's data steward with <code>medfed sql</code> on the local store; in the network these become catalog analyses.</p><table><tr><th>site</th><th>persons</th><th>adults 30+</th><th>T2D (30+)</th><th>hypertension (30+)</th></tr>");
    for s in stats {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.persons,
            s.adults,
            s.t2d,
            s.htn
        );
    }
    h.push_str("</table><h2>Population pyramid (pooled, in observation on 2024-12-31)</h2>");
    h.push_str(&pyramid_svg(&pooled));
    h.push_str(
        "<h2>Type 2 diabetes, adults 30+ (any record, incl. descendants via concept_ancestor)</h2>",
    );
    h.push_str(&bars_svg(&t2d, Some(0.155), "#8064a2"));
    h.push_str("<p>hospital_b codes diabetes with a descendant concept; the concept_ancestor roll-up makes it comparable.</p><h2>Hypertension, adults 30+</h2>");
    h.push_str(&bars_svg(&htn, None, "#4bacc6"));
    h.push_str("<h2>Planted truth (for checking analyses)</h2><table><tr><th>check</th><th>target</th><th>realised</th></tr>");
    for c in truth["prevalence"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1}%</td><td>{:.1}%</td></tr>",
            esc(c["what"].as_str().unwrap_or("")),
            100.0 * c["target"].as_f64().unwrap_or(0.0),
            100.0 * c["realised"].as_f64().unwrap_or(0.0)
        );
    }
    h.push_str("</table><h3>Planted outbreaks</h3><table><tr><th>district</th><th>group</th><th>syndrome</th><th>start</th><th>days</th><th>excess cases</th></tr>");
    for o in truth["outbreaks"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(o["district_name"].as_str().unwrap_or("")),
            esc(o["group_name"].as_str().unwrap_or("")),
            esc(o["syndrome_name"].as_str().unwrap_or("")),
            esc(o["start_date"].as_str().unwrap_or("")),
            o["days"],
            o["realised_excess_cases"]
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Pooled results of the network study: a table with per-site status, and bars of the pooled counts
/// stacked by site.
fn network_section(net: &NetworkRun) -> String {
    let mut h = String::new();
    let _ = write!(h, "<h2>Network study: pooled results</h2><p>Submitted to the hub at {} and answered by every node in <b>{:.2} s</b> (submit to pooled result). Results are in the hub's national statistics database and in <code>results/results.json</code>. Each count was checked against the same query run on every store directly and summed.</p>",
        esc(&net.url), net.latency_s);
    h.push_str("<table><tr><th>analysis</th><th>pooled value</th><th>direct on pooled data</th><th>sites released</th><th>sites suppressed (&lt; min cell)</th><th>notes</th></tr>");
    let results = net.results["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let palette = [
        "#4a78b5", "#c0504d", "#9bbb59", "#8064a2", "#4bacc6", "#f79646", "#7f7f7f", "#2c4d75",
    ];
    let mut sites: Vec<String> = Vec::new();
    for r in &results {
        for s in r["sites"].as_array().into_iter().flatten() {
            let n = s["site"].as_str().unwrap_or("").to_string();
            if !sites.contains(&n) {
                sites.push(n);
            }
        }
    }
    for r in &results {
        let id = r["id"].as_str().unwrap_or("");
        let direct = net.direct.iter().find(|d| d.0 == id).map(|d| d.1);
        let by = |st: &str| {
            r["sites"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|s| s["status"] == st)
                        .map(|s| s["site"].as_str().unwrap_or("").to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let value = r["value"].as_u64();
        let check = match (value, direct) {
            (Some(v), Some(d)) if v == d => format!("{d} ✓"),
            (_, Some(d)) => format!("{d} (differs by the suppressed cells)"),
            _ => String::new(),
        };
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style='text-align:left'>{}</td></tr>",
            esc(id), value.map(|v| v.to_string()).unwrap_or("—".into()), esc(&check), super::study::sites_with(r, "released"), esc(&by("suppressed").join(", ")),
            esc(&super::study::notes_text(r)));
    }
    h.push_str("</table>");
    // Stacked bars: one row per analysis, segments by site (suppressed sites have no segment).
    let max = results
        .iter()
        .filter_map(|r| r["value"].as_u64())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (w, row, left) = (760.0, 26.0, 170.0);
    let _ = write!(
        h,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img" aria-label="pooled counts by site">"#,
        results.len() as f64 * row + 40.0
    );
    for (i, r) in results.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let _ = write!(
            h,
            r#"<text x="0" y="{:.1}" font-size="12">{}</text>"#,
            y + 15.0,
            esc(r["id"].as_str().unwrap_or(""))
        );
        let mut x = left;
        for s in r["sites"].as_array().into_iter().flatten() {
            let Some(v) = s["value"].as_u64() else {
                continue;
            };
            let k = sites
                .iter()
                .position(|n| n == s["site"].as_str().unwrap_or(""))
                .unwrap_or(0);
            let bw = v as f64 / max * (w - left - 80.0);
            let _ = write!(
                h,
                r#"<rect x="{x:.1}" y="{y}" width="{bw:.1}" height="{}" fill="{}"><title>{}: {v}</title></rect>"#,
                row - 6.0,
                palette[k % palette.len()],
                esc(s["site"].as_str().unwrap_or(""))
            );
            x += bw;
        }
        let _ = write!(
            h,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            x + 4.0,
            y + 15.0,
            r["value"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or("suppressed".into())
        );
    }
    let ly = results.len() as f64 * row + 20.0;
    for (k, n) in sites.iter().enumerate() {
        let x = left + k as f64 * 95.0;
        let _ = write!(
            h,
            r#"<rect x="{x}" y="{ly}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            palette[k % palette.len()],
            x + 14.0,
            ly + 9.0,
            esc(n)
        );
    }
    h.push_str("</svg>");
    h
}
