//! `medfed node …`: the hospital data steward's commands.

use std::path::PathBuf;

use anyhow::{bail, Context};
use medfed_node::audit::{AuditLog, Event};
use medfed_node::{HttpTransport, Node, NodeConfig, NodeDir};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a node folder: key pair, configuration, default disclosure policy. Prints the public key
    /// to register at the hub.
    Init(InitArgs),
    /// Poll the hub and answer tasks until interrupted (outbound connections only).
    Run(RunArgs),
    /// List tasks waiting for approval, or approve / decline one.
    Approve(ApproveArgs),
    /// Print everything that ever left this hospital and verify the audit chain.
    Audit(AuditArgs),
    /// Record, withdraw or list patients' consents to share a health profile with a service.
    Consent(ConsentArgs),
    /// Derive the consented profiles for a service from the site store, sign them, record them in
    /// the audit log and write the signed batch for the service (categories and age band only).
    Profiles(ProfilesArgs),
}

#[derive(clap::Args)]
struct ConsentArgs {
    /// The node folder (as `medfed node init` made it).
    #[arg(long)]
    dir: PathBuf,
    #[command(subcommand)]
    action: ConsentAction,
}

#[derive(clap::Subcommand)]
enum ConsentAction {
    /// A patient consents to share their profile with a service under a subject id of theirs.
    Grant {
        /// The patient's person_id in this site's CDM.
        #[arg(long)]
        person: i64,
        /// `vehicles` (the in-car emergency service) or `city` (smart-city warnings).
        #[arg(long)]
        service: String,
        /// What the service knows the person by: the car's VIN, the app's id.
        #[arg(long)]
        subject: String,
    },
    /// Withdraw a consent: the next batch tells the service to delete the profile.
    Withdraw {
        #[arg(long)]
        consent: String,
    },
    /// List standing consents.
    List,
}

#[derive(clap::Args)]
struct ProfilesArgs {
    /// The node folder (as `medfed node init` made it).
    #[arg(long)]
    dir: PathBuf,
    /// `vehicles` or `city`.
    #[arg(long)]
    service: String,
    /// Where to write the signed batch (JSON: payload and signature).
    #[arg(long)]
    out: PathBuf,
    /// Also POST the batch to the service's profiles endpoint, e.g.
    /// `https://city.example:8443/v1/profiles` (the node connects out; nothing connects in).
    #[arg(long)]
    push: Option<String>,
    /// PEM to trust for the push (the service's certificate or its CA).
    #[arg(long)]
    push_ca: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Node folder to create.
    #[arg(long)]
    dir: PathBuf,
    /// Hub URL, e.g. https://hub.example.kr:8443.
    #[arg(long)]
    hub: String,
    /// The site this node answers from: a site store folder, or the hospital's OMOP CDM in
    /// PostgreSQL as postgres://user@host:port/db?schema=cdm.
    #[arg(
        long,
        required_unless_present = "vehicle_events",
        conflicts_with = "vehicle_events"
    )]
    site: Option<PathBuf>,
    /// Instead of a site: a vehicle service's state folder (or its events.jsonl). The node then
    /// answers `vehicle_events` only; register it with `medfed hub add-node --serves vehicle_events`.
    #[arg(long, requires = "name")]
    vehicle_events: Option<PathBuf>,
    /// Node name as registered at the hub (default: the site store's name).
    #[arg(long)]
    name: Option<String>,
    /// Certificate (PEM) to trust for the hub's TLS: the hub's own for a self-signed hub.
    #[arg(long)]
    hub_ca: PathBuf,
    /// The hub's public signing key (hex). Without it the key is fetched from the hub over the
    /// verified TLS connection; compare it with what the hub operator tells you.
    #[arg(long)]
    hub_key: Option<String>,
    /// Policy file to start from (default: minimum cell count 10, person_count allowed).
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Handle what is waiting, then exit.
    #[arg(long)]
    once: bool,
}

#[derive(clap::Args)]
struct ApproveArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Task to approve (see the list without this flag).
    #[arg(long)]
    task: Option<String>,
    /// Approve every waiting task.
    #[arg(long, conflicts_with = "task")]
    all: bool,
    /// Decline instead of approve.
    #[arg(long)]
    deny: bool,
}

#[derive(clap::Args)]
struct AuditArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Print each entry as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Init(a) => init(a),
        Command::Run(a) => run_node(a),
        Command::Approve(a) => approve(a),
        Command::Audit(a) => audit(a),
        Command::Consent(a) => consent(a),
        Command::Profiles(a) => profiles(a),
    }
}

/// Fetch the hub's public key over TLS that trusts only `ca_pem`.
pub fn fetch_hub_key(hub: &str, ca_pem: &[u8]) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = medfed_node::transport::client(ca_pem, std::time::Duration::from_secs(15))
            .map_err(anyhow::Error::msg)?;
        let url = format!("{}/v1/hub", hub.trim_end_matches('/'));
        let v: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?
            .error_for_status()?
            .json()
            .await?;
        v["public_key"]
            .as_str()
            .map(str::to_string)
            .context("the hub did not send its public key")
    })
}

/// A site's default name and the form the node keeps: a store folder (its site.toml name, absolute
/// path), or a PostgreSQL URL (its schema; the URL as given).
pub fn site_identity(site: &std::path::Path) -> anyhow::Result<(String, PathBuf)> {
    let text = site.to_string_lossy();
    if medfed_engine::is_postgres_url(&text) {
        let pg = medfed_engine::PgSite::parse(&text)?;
        return Ok((pg.schema, site.to_path_buf()));
    }
    let store = medfed_cdm::SiteStore::open(site)?;
    Ok((store.meta.site.clone(), std::fs::canonicalize(site)?))
}

/// What a node answers from.
pub enum NodeSource<'a> {
    /// A hospital's site store or CDM in PostgreSQL.
    Site(&'a std::path::Path),
    /// A vehicle service's state folder or events log.
    VehicleEvents(&'a std::path::Path),
}

/// Create a node folder; returns the node's name and public key (hex).
pub fn init_node(
    dir: &std::path::Path,
    hub: &str,
    source: NodeSource<'_>,
    name: Option<&str>,
    hub_ca: &std::path::Path,
    hub_key: Option<&str>,
    policy: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let (default_name, site, vehicle_events) = match source {
        NodeSource::Site(site) => {
            let (n, s) = site_identity(site)?;
            (Some(n), Some(s), None)
        }
        NodeSource::VehicleEvents(p) => {
            let p = std::fs::canonicalize(p)
                .with_context(|| format!("vehicle events log {}", p.display()))?;
            medfed_protocol::vehicles::read_events(&p).map_err(anyhow::Error::msg)?;
            (None, None, Some(p))
        }
    };
    let name = name
        .map(str::to_string)
        .or(default_name)
        .context("a vehicle service's node needs --name")?;
    medfed_protocol::study::check_id(&name, "node name")?;
    let pem = std::fs::read(hub_ca).with_context(|| format!("cannot read {}", hub_ca.display()))?;
    let hub_key = match hub_key {
        Some(k) => k.to_string(),
        None => fetch_hub_key(hub, &pem)?,
    };
    let cfg = NodeConfig {
        name: name.clone(),
        hub_url: hub.to_string(),
        hub_public_key: hub_key,
        site,
        vehicle_events,
        poll_wait_s: 20,
    };
    let (_, pk) = NodeDir::init(dir, &cfg, Some(&pem), policy)?;
    Ok((name, pk.to_hex()))
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let policy = match &a.policy {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let source = match (&a.site, &a.vehicle_events) {
        (_, Some(v)) => NodeSource::VehicleEvents(v),
        (Some(s), None) => NodeSource::Site(s),
        (None, None) => anyhow::bail!("give --site or --vehicle-events"),
    };
    let serves = if a.vehicle_events.is_some() {
        " --serves vehicle_events"
    } else {
        ""
    };
    let (name, pk) = init_node(
        &a.dir,
        &a.hub,
        source,
        a.name.as_deref(),
        &a.hub_ca,
        a.hub_key.as_deref(),
        policy.as_deref(),
    )?;
    println!("node {name:?} created in {}", a.dir.display());
    println!("  public key: {pk}");
    println!("  policy:     {}", a.dir.join("policy.toml").display());
    println!("ask the hub operator to run:");
    println!("  medfed hub add-node --dir HUB_DIR --name {name} --key {pk}{serves}");
    println!("then: medfed node run --dir {}", a.dir.display());
    Ok(())
}

fn run_node(a: RunArgs) -> anyhow::Result<()> {
    let dir = NodeDir(a.dir.clone());
    let cfg = dir.load_config()?;
    let transport = HttpTransport::new(
        &cfg.hub_url,
        &dir.hub_ca(),
        &cfg.name,
        dir.load_key()?,
        cfg.poll_wait_s,
    )
    .map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut node = Node::open(dir, transport)?;
        println!("[{}] polling {} (outbound only)", node.name(), cfg.hub_url);
        if a.once {
            let r = node.step(0).await?;
            println!("[{}] {r:?}", node.name());
            return Ok(());
        }
        node.run(super::shutdown_signal()).await?;
        println!("[{}] stopped", node.name());
        Ok(())
    })
}

fn approve(a: ApproveArgs) -> anyhow::Result<()> {
    let dir = NodeDir(a.dir.clone());
    let mut waiting: Vec<medfed_protocol::Task> = dir
        .tasks_in_progress()?
        .iter()
        .filter_map(|s| s.peek())
        .collect();
    waiting.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let chosen: Vec<&medfed_protocol::Task> = match (&a.task, a.all) {
        (Some(id), _) => {
            let t = waiting.iter().find(|t| &t.task_id == id);
            match t {
                Some(t) => vec![t],
                None => bail!("no task {id} is waiting at this node"),
            }
        }
        (None, true) => waiting.iter().collect(),
        (None, false) => {
            if waiting.is_empty() {
                println!("no tasks are waiting");
            }
            for t in &waiting {
                println!(
                    "{}  study {}  {} {}\n    {}",
                    t.task_id,
                    t.study_id,
                    t.analysis.type_name(),
                    t.analysis.id(),
                    serde_json::to_string(&t.analysis)?
                );
            }
            return Ok(());
        }
    };
    std::fs::create_dir_all(dir.approvals())?;
    for t in chosen {
        let name = if a.deny {
            format!("{}.deny", t.task_id)
        } else {
            t.task_id.clone()
        };
        std::fs::write(
            dir.approvals().join(name),
            format!("{}\n", medfed_protocol::now()),
        )?;
        println!(
            "{} {}",
            if a.deny { "declined" } else { "approved" },
            t.task_id
        );
    }
    Ok(())
}

fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let dir = NodeDir(a.dir);
    if !dir.audit().exists() {
        println!(
            "nothing has left this hospital yet ({} does not exist)",
            dir.audit().display()
        );
        return Ok(());
    }
    let entries =
        AuditLog::verify(&dir.audit()).map_err(|e| anyhow::anyhow!("AUDIT CHAIN BROKEN: {e}"))?;
    let mut sent = 0;
    for e in &entries {
        if a.json {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let what = match e.event {
            Event::Release => "RELEASED",
            Event::Refusal => "REFUSAL ",
            Event::Rejected => "rejected",
            Event::Profiles => "PROFILES",
        };
        println!(
            "#{:<5} {} {} task {} study {} analysis {}: {}",
            e.seq, e.at, what, e.task_id, e.study_id, e.analysis_id, e.detail
        );
        if e.sent {
            sent += 1;
            println!("        sent: {}", e.payload);
        }
    }
    println!(
        "audit chain verified: {} entries, {} sent to the hub",
        entries.len(),
        sent
    );
    Ok(())
}

fn consent(a: ConsentArgs) -> anyhow::Result<()> {
    let dir = NodeDir(a.dir.clone());
    dir.load_config()?;
    let c = medfed_node::consent::Consents::new(&dir);
    match a.action {
        ConsentAction::Grant {
            person,
            service,
            subject,
        } => {
            let id = c.grant(person, &service, &subject)?;
            println!("consent {id}: person {person} shares a profile with {service} as {subject}");
        }
        ConsentAction::Withdraw { consent } => {
            let w = c.withdraw(&consent)?;
            println!(
                "consent {consent} withdrawn: the next batch for {} tells it to delete {}",
                w.service, w.subject
            );
        }
        ConsentAction::List => {
            let (standing, _) = c.standing(None)?;
            println!(
                "{:<14} {:>10} {:<9} subject",
                "consent", "person", "service"
            );
            for c in standing {
                println!(
                    "{:<14} {:>10} {:<9} {}",
                    c.consent_id, c.person_id, c.service, c.subject
                );
            }
        }
    }
    Ok(())
}

fn profiles(a: ProfilesArgs) -> anyhow::Result<()> {
    let dir = NodeDir(a.dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (signed, batch) = rt.block_on(medfed_node::consent::profile_batch(&dir, &a.service))?;
    medfed_node::consent::write_batch(&a.out, &signed)?;
    let key = dir.load_key()?.public().to_hex();
    println!(
        "{} profiles and {} withdrawals for {} signed by {} into {}",
        batch.profiles.len(),
        batch.withdrawn.len(),
        a.service,
        batch.node,
        a.out.display()
    );
    println!("the service verifies it with the node's public key: {key}");
    if let Some(url) = &a.push {
        let pem = match &a.push_ca {
            Some(p) => std::fs::read(p).with_context(|| p.display().to_string())?,
            None => anyhow::bail!("--push needs --push-ca (the service's certificate or its CA)"),
        };
        let client = medfed_tls::client(&pem, std::time::Duration::from_secs(60))
            .map_err(anyhow::Error::msg)?;
        let answer = rt.block_on(async {
            let r = client.post(url).json(&signed).send().await?;
            let status = r.status();
            anyhow::Ok((status, r.text().await?))
        })?;
        anyhow::ensure!(answer.0.is_success(), "{url}: {} {}", answer.0, answer.1);
        println!("pushed to {url}: {}", answer.1);
    }
    Ok(())
}
