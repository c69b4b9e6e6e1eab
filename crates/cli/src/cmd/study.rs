//! `medfed study …`: the researcher's commands, over the network or in one process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use medfed_hub::{db::Sqlite, store::Store, Hub};
use medfed_node::{Node, NodeConfig, NodeDir, PostAck, Transport, TransportError};
use medfed_protocol::{SecretKey, Signed};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Submit a study to the hub; with --wait, wait for the pooled results.
    Submit(SubmitArgs),
    /// Show a study's progress: every task and what each site answered.
    Status(IdArgs),
    /// Fetch a study's pooled results.
    Results(ResultsArgs),
    /// Run a study in this process over site stores: the same node, release and combine code as the
    /// network, over an in-memory transport.
    Run(RunArgs),
}

#[derive(clap::Args, Clone)]
pub struct HubArgs {
    /// Hub URL.
    #[arg(long, env = "MEDFED_HUB")]
    pub hub: Option<String>,
    /// Certificate (PEM) to trust for the hub's TLS.
    #[arg(long, env = "MEDFED_HUB_CA")]
    pub ca: Option<PathBuf>,
    /// Researcher token.
    #[arg(long, env = "MEDFED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A local hub folder: takes URL, certificate and token from it (for a hub on this machine).
    #[arg(long)]
    pub hub_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SubmitArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Study file (medfed-study/1 JSON).
    study: PathBuf,
    /// Wait until the study is complete and print (or write) the results.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Write results.json here (with --wait).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct IdArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Study id (as printed by submit); without it, list studies.
    id: Option<String>,
}

#[derive(clap::Args)]
struct ResultsArgs {
    #[command(flatten)]
    hub: HubArgs,
    id: String,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Write results.json into this folder as well.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Csv,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Study file (medfed-study/1 JSON).
    study: PathBuf,
    /// Sites (store folders or postgres://…?schema=… URLs); each acts as one node.
    #[arg(long = "site", required = true)]
    sites: Vec<PathBuf>,
    /// Disclosure policy applied at every site (default: minimum cell count 10).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Output folder: results.json and the nodes' audit logs.
    #[arg(long, default_value = "study-out")]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Submit(a) => submit(a),
        Command::Status(a) => status(a),
        Command::Results(a) => results(a),
        Command::Run(a) => run_local(a),
    }
}

/// Read a study file and inline cohort `{"file": …}` references (relative to the study file).
pub fn load_study(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(cohorts) = v.get_mut("cohorts").and_then(|c| c.as_object_mut()) {
        for (id, def) in cohorts.iter_mut() {
            if let Some(f) = def.get("file").and_then(|f| f.as_str()) {
                let p = path.parent().unwrap_or(Path::new(".")).join(f);
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("cohort {id}: cannot read {}", p.display()))?;
                let c: serde_json::Value = serde_json::from_str(&t)
                    .with_context(|| format!("cohort {id}: {} is not JSON", p.display()))?;
                *def = serde_json::json!({ "circe": c });
            }
        }
    }
    let text = serde_json::to_string(&v)?;
    medfed_protocol::study::parse_study(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text)
}

/// A researcher's HTTPS client for one hub.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(h: &HubArgs) -> anyhow::Result<Client> {
        let (base, ca, token) = if let Some(d) = &h.hub_dir {
            let hd = medfed_hub::HubDir(d.clone());
            let cfg = hd.load_config()?;
            let addr = std::fs::read_to_string(d.join("hub.addr")).unwrap_or(cfg.listen.clone());
            (
                h.hub.clone().unwrap_or(format!("https://{}", addr.trim())),
                h.ca.clone().unwrap_or(hd.cert(&cfg)),
                h.token.clone().unwrap_or(hd.token_value()?),
            )
        } else {
            (
                h.hub
                    .clone()
                    .context("give --hub URL (or MEDFED_HUB), or --hub-dir")?,
                h.ca.clone().context(
                    "give --ca PEM (or MEDFED_HUB_CA): the certificate to trust for the hub",
                )?,
                h.token
                    .clone()
                    .context("give --token (or MEDFED_TOKEN): the researcher token")?,
            )
        };
        let pem = std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let http = medfed_node::transport::client(&pem, Duration::from_secs(60))
            .map_err(anyhow::Error::msg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            rt,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut req = self.http.request(method, &url).bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status();
            let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            if !status.is_success() {
                bail!(
                    "hub answered {status}: {}",
                    v["error"].as_str().unwrap_or("(no message)")
                );
            }
            Ok(v)
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::GET, path, None)
    }
    pub fn post(&self, path: &str, body: String) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::POST, path, Some(body))
    }
    pub fn submit(&self, text: String) -> anyhow::Result<medfed_hub::Submitted> {
        Ok(serde_json::from_value(self.call(
            reqwest::Method::POST,
            "/v1/studies",
            Some(text),
        )?)?)
    }
    pub fn status(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::GET, &format!("/v1/studies/{id}"), None)
    }
    pub fn studies(&self) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::GET, "/v1/studies", None)
    }
    pub fn results(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/studies/{id}/results"),
            None,
        )
    }

    /// Poll until complete; `tick(done, total)` after every poll.
    pub fn wait(
        &self,
        id: &str,
        timeout: Duration,
        mut tick: impl FnMut(usize, usize),
    ) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            let s = self.status(id)?;
            let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
            let done = tasks.iter().filter(|t| t["status"] == "done").count();
            tick(done, tasks.len());
            if s["status"] == "complete" {
                return self.results(id);
            }
            if start.elapsed() > timeout {
                bail!(
                    "study {id} not complete after {} s ({done}/{} tasks answered)",
                    timeout.as_secs(),
                    tasks.len()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// The notes of one pooled result, joined for a line of text.
pub fn notes_text(r: &serde_json::Value) -> String {
    r["notes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// How many sites of one pooled result have `status` (released, suppressed, refused).
pub fn sites_with(r: &serde_json::Value, status: &str) -> usize {
    r["sites"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["status"] == status).count())
        .unwrap_or(0)
}

/// One line per analysis: id, pooled value (or the size of its tables), notes.
pub fn print_summary(results: &serde_json::Value) {
    for r in results["results"].as_array().into_iter().flatten() {
        let v = &r["value"];
        let model = &v["summary"]["coefficients"];
        let shown = match v.get("tables").and_then(|t| t.as_array()) {
            _ if r["type"] == "gwas" => gwas_summary(v),
            _ if r["type"] == "beacon" => beacon_summary(v),
            _ if r["type"] == "surveillance" => format!("{} alerts raised", v["alerts_raised"]),
            _ if model.is_object() => format!(
                "{} coefficients, {} rounds{}",
                model.as_object().map_or(0, |m| m.len()),
                v["summary"]["iterations"],
                v["summary"]["evaluation"]["auc"]
                    .as_f64()
                    .map(|a| format!(", AUC {a:.3}"))
                    .unwrap_or_default()
            ),
            Some(t) => format!(
                "{} table{}, {} cells",
                t.len(),
                if t.len() == 1 { "" } else { "s" },
                t.iter()
                    .map(|x| x["cells"].as_array().map_or(0, |c| c.len()))
                    .sum::<usize>()
            ),
            None => v.to_string(),
        };
        let notes = notes_text(r);
        let notes = if notes.chars().count() > 160 {
            format!("{}…", notes.chars().take(160).collect::<String>())
        } else {
            notes
        };
        println!(
            "  {:<24} {:>10}  {}",
            r["id"].as_str().unwrap_or(""),
            shown,
            notes
        );
    }
}

/// One line about a beacon look-up: each variant carried or not, with carriers where counted.
fn beacon_summary(v: &serde_json::Value) -> String {
    let parts: Vec<String> = v["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let e = match x["exists"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "withheld",
            };
            match (
                x["carriers"].as_u64(),
                x["carriers_min"].as_u64(),
                x["carriers_max"].as_u64(),
            ) {
                (Some(c), _, _) => format!("{} {e} ({c})", x["variant"].as_str().unwrap_or("")),
                (None, Some(lo), Some(hi)) => {
                    format!("{} {e} ({lo}-{hi})", x["variant"].as_str().unwrap_or(""))
                }
                _ => format!("{} {e}", x["variant"].as_str().unwrap_or("")),
            }
        })
        .collect();
    format!(
        "beacon at {} level: {}",
        v["answered"].as_str().unwrap_or("?"),
        parts.join("; ")
    )
}

/// One line about a pooled GWAS: samples, variants, λ, hits, and the top variant.
fn gwas_summary(v: &serde_json::Value) -> String {
    let Ok(g) = serde_json::from_value::<medfed_analysis::gwas::GwasResult>(v.clone()) else {
        return "unreadable GWAS result".into();
    };
    let top = g.top.first().and_then(|i| g.results.get(*i)).map(|t| {
        format!(
            "; top {} (chr{}:{}) p = {:.2e}",
            t.snp,
            t.chrom,
            t.pos,
            g.p_of(t).unwrap_or(f64::NAN)
        )
    });
    format!(
        "{} test, {} cases / {} controls ({} samples), {} variants, λ = {:.3}, {} under Bonferroni {:.1e}, {} at FDR 5%{}",
        g.test,
        g.cases,
        g.controls,
        g.samples,
        g.tested,
        g.lambda_gc.unwrap_or(f64::NAN),
        g.significant,
        g.bonferroni.unwrap_or(f64::NAN),
        g.fdr_significant,
        top.unwrap_or_default()
    )
}

/// The long form of the results: one row per number (see `medfed_analysis::flatten`).
pub fn stat_rows(results: &serde_json::Value) -> Vec<medfed_analysis::StatRow> {
    results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value::<medfed_analysis::PooledResult>(r.clone()).ok())
        .flat_map(|r| medfed_analysis::flatten(&r))
        .collect()
}

/// Write `results.json`, and the national-statistics long form as `results.csv` and
/// `results.parquet` (study, analysis, type, table, stratum, statistic, value, sites released,
/// sites that withheld it), into `out`.
pub fn write_results(out: &Path, results: &serde_json::Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let p = out.join("results.json");
    std::fs::write(&p, serde_json::to_string_pretty(results)? + "\n")?;
    let rows = stat_rows(results);
    let study = results["study"]["id"].as_str().unwrap_or("");
    let mut csv = String::new();
    write_csv(&mut csv, study, &rows);
    std::fs::write(out.join("results.csv"), csv)?;
    write_parquet(&out.join("results.parquet"), study, &rows)?;
    write_plink_files(out, results)?;
    Ok(p)
}

/// Every GWAS of the results as PLINK 1.9 report files, `<analysis id>.<ext>` (`.assoc`, `.model`,
/// `.hwe`, `.frq.cc`, `.assoc.logistic`, …).
fn write_plink_files(out: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    for r in results["results"].as_array().into_iter().flatten() {
        if r["type"] != "gwas" {
            continue;
        }
        let id = r["id"].as_str().unwrap_or("gwas");
        let g: medfed_analysis::gwas::GwasResult = serde_json::from_value(r["value"].clone())
            .map_err(|e| anyhow::anyhow!("GWAS {id}: unreadable result: {e}"))?;
        for (ext, text) in medfed_analysis::gwas::plink_files(&g) {
            std::fs::write(out.join(format!("{id}.{ext}")), text)?;
        }
    }
    Ok(())
}

fn write_parquet(
    path: &Path,
    study: &str,
    rows: &[medfed_analysis::StatRow],
) -> anyhow::Result<()> {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let text = |f: &dyn Fn(&medfed_analysis::StatRow) -> String| -> ArrayRef {
        std::sync::Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("study_id", DataType::Utf8, false),
        Field::new("analysis_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("stratum", DataType::Utf8, false),
        Field::new("statistic", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("sites_released", DataType::Int64, false),
        Field::new("withheld_at", DataType::Utf8, false),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            text(&|_| study.to_string()),
            text(&|r| r.analysis_id.clone()),
            text(&|r| r.kind.clone()),
            text(&|r| r.table.clone()),
            text(&|r| r.stratum.clone()),
            text(&|r| r.statistic.clone()),
            std::sync::Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
            std::sync::Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| r.sites_released as i64)
                    .collect::<Vec<_>>(),
            )),
            text(&|r| r.withheld_at.clone()),
        ],
    )?;
    let tmp = path.with_extension("parquet.tmp");
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', ';']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(out: &mut String, study: &str, rows: &[medfed_analysis::StatRow]) {
    use std::fmt::Write;
    out.push_str(
        "study_id,analysis_id,type,table_name,stratum,statistic,value,sites_released,withheld_at\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(study),
            csv_field(&r.analysis_id),
            r.kind,
            csv_field(&r.table),
            csv_field(&r.stratum),
            csv_field(&r.statistic),
            r.value.map(|v| v.to_string()).unwrap_or_default(),
            r.sites_released,
            csv_field(&r.withheld_at)
        );
    }
}

fn print_csv(results: &serde_json::Value) {
    let mut s = String::new();
    write_csv(
        &mut s,
        results["study"]["id"].as_str().unwrap_or(""),
        &stat_rows(results),
    );
    print!("{s}");
}

fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let text = load_study(&a.study)?;
    let c = Client::new(&a.hub)?;
    let started = Instant::now();
    let ack = c.submit(text)?;
    println!(
        "study {} submitted: {} tasks to {}",
        ack.study_id,
        ack.tasks,
        ack.nodes.join(", ")
    );
    if !a.wait {
        return Ok(());
    }
    let bar = super::progress::count_bar(ack.tasks as u64, "tasks");
    let results = c.wait(&ack.study_id, Duration::from_secs(a.timeout), |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    println!("complete in {:.2} s", started.elapsed().as_secs_f64());
    match &a.out {
        Some(o) => println!("results: {}", write_results(o, &results)?.display()),
        None => println!("{}", serde_json::to_string_pretty(&results)?),
    }
    Ok(())
}

fn status(a: IdArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.hub)?;
    let Some(id) = a.id else {
        for s in c.studies()?["studies"].as_array().into_iter().flatten() {
            println!(
                "{}  {:<9} {}",
                s["id"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    };
    let s = c.status(&id)?;
    println!(
        "study {} {:?}: {}",
        id,
        s["name"].as_str().unwrap_or(""),
        s["status"].as_str().unwrap_or("")
    );
    for t in s["tasks"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<16} {:<5} {}",
            t["analysis_id"].as_str().unwrap_or(""),
            t["node"].as_str().unwrap_or(""),
            t["status"].as_str().unwrap_or(""),
            t["outcome"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn results(a: ResultsArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.hub)?;
    let r = c.results(&a.id)?;
    if let Some(o) = &a.out {
        eprintln!("results: {}", write_results(o, &r)?.display());
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Format::Csv => print_csv(&r),
    }
    Ok(())
}

/// The in-process transport: a node talks to a hub object in the same process.
pub struct InProcess {
    pub hub: Arc<Hub>,
    pub node: String,
}

impl Transport for InProcess {
    async fn poll(&self, wait_s: u64) -> Result<Vec<Signed>, TransportError> {
        self.hub
            .poll(&self.node, Duration::from_secs(wait_s))
            .await
            .map_err(|e| TransportError::Unavailable(e.to_string()))
    }
    async fn post(&self, result: &Signed) -> Result<PostAck, TransportError> {
        self.hub
            .post_result(&self.node, result)
            .map(|a| PostAck { applied: a.applied })
            .map_err(|e| TransportError::Refused {
                status: 400,
                message: e.to_string(),
            })
    }
}

/// Run `study_text` over `sites` in this process; node folders go under `out/nodes`.
pub fn run_in_process(
    study_text: &str,
    sites: &[PathBuf],
    policy: Option<&str>,
    out: &Path,
) -> anyhow::Result<serde_json::Value> {
    Ok(run_in_process_keep(study_text, sites, policy, out, None)?.0)
}

/// [`run_in_process`], keeping the in-memory hub (for what only the hub holds, such as a
/// surveillance stream's totals); `progress` shows the tasks answered.
pub fn run_in_process_keep(
    study_text: &str,
    sites: &[PathBuf],
    policy: Option<&str>,
    out: &Path,
    progress: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<(serde_json::Value, Arc<Hub>)> {
    let nodes_dir = out.join("nodes");
    if nodes_dir.exists() {
        std::fs::remove_dir_all(&nodes_dir)
            .with_context(|| format!("cannot clear {}", nodes_dir.display()))?;
    }
    std::fs::create_dir_all(&nodes_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::new(Box::new(Sqlite::open(":memory:")?))?;
        let hub = Hub::new("in-process", SecretKey::generate(), store, 60);
        let mut nodes = Vec::new();
        for site in sites {
            let (name, site) = super::node::site_identity(site)?;
            medfed_protocol::study::check_id(&name, "site name")
                .map_err(|e| anyhow::anyhow!("{}: {e}", site.display()))?;
            let cfg = NodeConfig {
                name: name.clone(),
                hub_url: "in-process".into(),
                hub_public_key: hub.public_key().to_hex(),
                site: Some(site),
                vehicle_events: None,
                poll_wait_s: 0,
            };
            let (dir, pk) = NodeDir::init(&nodes_dir.join(&name), &cfg, None, policy)?;
            hub.add_node(&name, &pk.to_hex(), false)?;
            let mut node = Node::open(dir, InProcess { hub: hub.clone(), node: name })?;
            node.set_quiet(true);
            nodes.push(node);
        }
        let ack = hub.submit(study_text)?;
        // Rounds: a fit takes tens; a surveillance analysis four per chunk of days.
        for _round in 0..100_000 {
            for n in nodes.iter_mut() {
                n.step(0).await?;
            }
            let st = hub.status(&ack.study_id)?;
            if let Some(pb) = progress {
                let done = st.tasks.iter().filter(|t| t.status != "open").count();
                pb.set_message(format!("{done} tasks answered"));
            }
            if st.study.status == "complete" {
                return Ok((hub.results(&ack.study_id)?, hub.clone()));
            }
            if st.tasks.iter().all(|t| t.status != "open") {
                break;
            }
        }
        // The hub runs surveillance detectors on a thread of its own once every task is answered.
        let mut st = hub.status(&ack.study_id)?;
        while st.study.status == "detecting" {
            if let Some(pb) = progress {
                pb.set_message("running the surveillance detectors at the hub");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            st = hub.status(&ack.study_id)?;
        }
        if st.study.status == "complete" {
            return Ok((hub.results(&ack.study_id)?, hub.clone()));
        }
        let open: Vec<String> = st.tasks.iter().filter(|t| t.status == "open").map(|t| format!("{} at {}", t.analysis_id, t.node)).collect();
        bail!("study did not complete; still open: {} (tasks waiting for approval need `medfed node approve`)", open.join(", "))
    })
}

fn run_local(a: RunArgs) -> anyhow::Result<()> {
    let text = load_study(&a.study)?;
    let policy = match &a.policy {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let started = Instant::now();
    let results = run_in_process(&text, &a.sites, policy.as_deref(), &a.out)?;
    let p = write_results(&a.out, &results)?;
    print_summary(&results);
    println!(
        "results: {} ({:.2} s); audit logs in {}",
        p.display(),
        started.elapsed().as_secs_f64(),
        a.out.join("nodes").display()
    );
    Ok(())
}
