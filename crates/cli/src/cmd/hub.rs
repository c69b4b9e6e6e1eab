//! `medfed hub …`: the national hub's operator commands.

use std::path::PathBuf;

use anyhow::Context;
use medfed_hub::HubDir;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a hub folder: Ed25519 signing key, self-signed TLS certificate, researcher token, state.
    Init(InitArgs),
    /// Serve the HTTPS API until interrupted.
    Serve(ServeArgs),
    /// Register a hospital node by name and public key (printed by `medfed node init`).
    AddNode(AddNodeArgs),
    /// Give a researcher a bearer token of their own (written to DIR/researchers/NAME.token). Their
    /// studies and beacon look-ups carry their name to the nodes, which keep rare-variant probe
    /// budgets per researcher. Takes effect when the hub is next started.
    AddResearcher(AddResearcherArgs),
    /// List registered nodes and when each was last seen.
    Nodes(DirArgs),
    /// Print the hub's audit trail (registrations, studies, deliveries, results, refusals).
    Audit(AuditArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// Hub folder to create.
    #[arg(long)]
    dir: PathBuf,
    /// Name of this hub.
    #[arg(long, default_value = "national")]
    name: String,
    /// Address `serve` listens on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Keep state in PostgreSQL (`postgres://user@host/db`) instead of SQLite in the folder.
    #[arg(long)]
    db: Option<String>,
    /// PostgreSQL schema for the hub's tables (several hubs can share one database).
    #[arg(long, default_value = "medfed_hub")]
    db_schema: String,
    /// Extra DNS names or addresses for the self-signed certificate (localhost and loopback are always in).
    #[arg(long = "host")]
    hosts: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Listen address (overrides hub.toml). Port 0 picks a free port; the bound address is written to
    /// DIR/hub.addr.
    #[arg(long)]
    listen: Option<String>,
    /// Database URL (overrides hub.toml): postgres://… or sqlite:PATH.
    #[arg(long)]
    db: Option<String>,
}

#[derive(clap::Args)]
struct AddResearcherArgs {
    /// Hub folder.
    #[arg(long)]
    dir: PathBuf,
    /// Researcher name (lower-case letters, digits, _ or -).
    #[arg(long)]
    name: String,
}

#[derive(clap::Args)]
struct AddNodeArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Node name (lower-case letters, digits, _).
    #[arg(long)]
    name: String,
    /// The node's Ed25519 public key, hex.
    #[arg(long)]
    key: String,
    /// Replace the key of a node that is already registered.
    #[arg(long)]
    replace: bool,
    /// The data the node answers from: `cdm` (a hospital's store) or `vehicle_events` (a vehicle
    /// service's events log). Each analysis goes only to the nodes that serve its kind.
    #[arg(long, default_value = "cdm")]
    serves: String,
    #[arg(long)]
    db: Option<String>,
}

#[derive(clap::Args)]
struct DirArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    db: Option<String>,
}

#[derive(clap::Args)]
struct AuditArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    db: Option<String>,
    /// Most recent entries to show.
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Init(a) => {
            let d = HubDir::init(
                &a.dir,
                &a.name,
                &a.listen,
                a.db.as_deref(),
                &a.db_schema,
                &a.hosts,
            )?;
            let hub = d.open(None)?;
            println!("hub {:?} created in {}", a.name, a.dir.display());
            println!("  signing key (public): {}", hub.public_key().to_hex());
            println!(
                "  TLS certificate:      {}",
                a.dir.join("tls/cert.pem").display()
            );
            println!("  researcher token:     {}", d.token().display());
            println!("  state:                {}", hub.backend());
            println!("next: medfed hub serve --dir {}", a.dir.display());
            Ok(())
        }
        Command::Serve(a) => serve(a),
        Command::AddNode(a) => {
            let hub = HubDir(a.dir.clone()).open(a.db.as_deref())?;
            hub.add_node_serving(&a.name, &a.key, a.replace, &a.serves)?;
            println!("node {:?} registered, serving {}", a.name, a.serves);
            Ok(())
        }
        Command::AddResearcher(a) => {
            let p = HubDir(a.dir).add_researcher(&a.name)?;
            println!("researcher {:?}: token in {}", a.name, p.display());
            Ok(())
        }
        Command::Nodes(a) => {
            let hub = HubDir(a.dir).open(a.db.as_deref())?;
            for n in hub.nodes()? {
                println!(
                    "{:<20} {}  last seen {}",
                    n.name,
                    n.public_key,
                    if n.last_seen == 0 {
                        "never".to_string()
                    } else {
                        n.last_seen.to_string()
                    }
                );
            }
            Ok(())
        }
        Command::Audit(a) => {
            let hub = HubDir(a.dir).open(a.db.as_deref())?;
            for r in hub.audit_trail(a.limit)? {
                println!(
                    "{:>6} {} {:<16} {:<20} {}",
                    r.seq, r.at, r.actor, r.action, r.detail
                );
            }
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let d = HubDir(a.dir.clone());
    let cfg = d.load_config()?;
    let hub = d.open(a.db.as_deref())?;
    let tls = d.tls()?;
    let researchers = d.researchers()?;
    let listen = a.listen.unwrap_or(cfg.listen);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The PostgreSQL client blocks on its own runtime when it is dropped: keep the last reference out
    // here, to be dropped after the async runtime is gone.
    let keep = hub.clone();
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        // Written after the socket is bound, so whoever waits for the file can connect at once.
        let tmp = a.dir.join("hub.addr.tmp");
        std::fs::write(&tmp, addr.to_string())?;
        std::fs::rename(&tmp, a.dir.join("hub.addr"))?;
        println!(
            "hub {:?} serving https://{addr} (state: {})",
            hub.name(),
            hub.backend()
        );
        let app = medfed_hub::server::router(hub, researchers);
        medfed_hub::server::serve(listener, app, tls, super::shutdown_signal()).await;
        anyhow::Ok(())
    });
    drop(rt);
    drop(keep);
    served?;
    println!("hub stopped");
    Ok(())
}
