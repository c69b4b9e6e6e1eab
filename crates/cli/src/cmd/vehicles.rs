//! `medfed vehicles` and `medfed emergency-center`: the in-car emergency extension.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use medfed_vehicles::center::{self, Center, CenterDir};
use medfed_vehicles::dispatch::Endpoint;
use medfed_vehicles::fleet::{self, FleetConfig};
use medfed_vehicles::service::{self, ServiceConfig};
use medfed_vitals::driver::EventKind;
use medfed_vitals::escalate::EscalationRules;

#[derive(clap::Args)]
pub struct CenterArgs {
    /// Directory for the centre's certificate, key, token and recorded calls (made if missing).
    #[arg(long, default_value = "emergency-center")]
    dir: PathBuf,
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8119")]
    listen: String,
}

/// `medfed emergency-center`: take calls until Ctrl-C, printing each.
pub fn center(a: CenterArgs) -> anyhow::Result<()> {
    let dir = CenterDir(a.dir.clone());
    let c = Center::open(
        CenterDir(a.dir.clone()),
        Box::new(|r| println!("{}", center::describe(r))),
    )
    .map_err(anyhow::Error::msg)?;
    let tls = medfed_tls::server_config(&dir.cert(), &dir.key()).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "119 emergency centre on https://{addr} ({} calls on record)\n  certificate {}\n  token       {}\n  calls page  https://{addr}/",
            c.records().len(),
            dir.cert().display(),
            dir.token().display()
        );
        medfed_tls::serve(listener, center::router(c), tls, super::shutdown_signal()).await;
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Run the vehicle service: MQTT in, a monitor per driver, prompts back, calls to 119.
    Serve(ServeArgs),
    /// Drive simulated cars through a broker: vitals, ECG, planted emergencies, drivers who
    /// dismiss false prompts.
    Simulate(SimulateArgs),
    /// Measure detection in-process: sensitivity, false calls per 1,000 driving hours, and time
    /// from onset to the call, on simulated cars with every artefact.
    Evaluate(EvaluateArgs),
    /// Counts of events by district, age group and kind from a service's events log, under the
    /// small-cell rule, ready for the national statistics.
    Stats(StatsArgs),
}

#[derive(clap::Args, Clone)]
struct BrokerArgs {
    /// MQTT broker, `mqtt://HOST:PORT`, or `embedded` to start rumqttd in this process on a free
    /// port (or `--embedded-port`).
    #[arg(long, default_value = "embedded")]
    broker: String,
    #[arg(long, default_value_t = 0)]
    embedded_port: u16,
    /// Topic prefix.
    #[arg(long, default_value = medfed_vehicles::msg::DEFAULT_PREFIX)]
    prefix: String,
    /// File with the fleet key that seals every message (made with a random key if missing).
    #[arg(long, default_value = "vehicles/fleet.key")]
    fleet_key_file: PathBuf,
}

fn broker(b: &BrokerArgs) -> anyhow::Result<(String, u16)> {
    if b.broker == "embedded" {
        let port = medfed_vehicles::broker::start(b.embedded_port).map_err(anyhow::Error::msg)?;
        eprintln!("embedded MQTT broker (rumqttd) on 127.0.0.1:{port}");
        return Ok(("127.0.0.1".into(), port));
    }
    let rest = b.broker.strip_prefix("mqtt://").with_context(|| {
        format!(
            "--broker {:?}: write mqtt://HOST:PORT or embedded",
            b.broker
        )
    })?;
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("--broker {:?}: no port", b.broker))?;
    Ok((
        host.to_string(),
        port.parse()
            .with_context(|| format!("--broker {:?}: bad port", b.broker))?,
    ))
}

pub fn fleet_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        std::fs::write(path, key)?;
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = text.trim();
    if key.len() < 32 {
        bail!(
            "{}: a fleet key needs at least 32 characters",
            path.display()
        );
    }
    Ok(key.as_bytes().to_vec())
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The 119 centre's base URL.
    #[arg(long, default_value = "https://127.0.0.1:8119")]
    center: String,
    /// The centre's directory (for its certificate and token), as `medfed emergency-center` made it.
    #[arg(long, default_value = "emergency-center")]
    center_dir: PathBuf,
    /// State: events log and the outbox of calls.
    #[arg(long, default_value = "vehicles")]
    state: PathBuf,
    /// Drivers' consented profiles, VIN → categories and age group (JSON).
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Seconds the driver has to cancel before 119 is called.
    #[arg(long, default_value_t = 15.0)]
    confirm_s: f64,
    /// Days a sent call (with its vitals and strip) is kept.
    #[arg(long, default_value_t = 30.0)]
    retention_days: f64,
}

pub fn endpoint(url: &str, center_dir: &Path) -> anyhow::Result<Endpoint> {
    let d = CenterDir(center_dir.to_path_buf());
    let pem = std::fs::read(d.cert()).with_context(|| {
        format!(
            "cannot read the centre's certificate {}",
            d.cert().display()
        )
    })?;
    Ok(Endpoint {
        url: url.to_string(),
        token: d.token_value().map_err(anyhow::Error::msg)?,
        client: medfed_tls::client(&pem, Duration::from_secs(10)).map_err(anyhow::Error::msg)?,
    })
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let key = fleet_key(&a.broker.fleet_key_file)?;
    let profiles = match &a.profiles {
        Some(p) => service::read_profiles(p).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (host, port) = broker(&a.broker)?;
        let cfg = ServiceConfig {
            broker_host: host.clone(),
            broker_port: port,
            client_id: "medfed-vehicle-service".into(),
            prefix: a.broker.prefix.clone(),
            fleet_key: key,
            state_dir: a.state.clone(),
            endpoint: endpoint(&a.center, &a.center_dir)?,
            profiles,
            escalation: EscalationRules { confirm_s: a.confirm_s, ..Default::default() },
            retention_days: a.retention_days,
        };
        let svc = service::start(cfg).map_err(anyhow::Error::msg)?;
        eprintln!("vehicle service on mqtt://{host}:{port} ({}), calling {}", a.broker.prefix, a.center);
        let stats = svc.stats.clone();
        let report = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                use std::sync::atomic::Ordering::Relaxed;
                eprintln!(
                    "{} messages, {} rejected, {} prompts, {} cancelled, {} calls ({} acknowledged)",
                    stats.messages.load(Relaxed),
                    stats.rejected_total(),
                    stats.prompts.load(Relaxed),
                    stats.cancels.load(Relaxed),
                    stats.calls.load(Relaxed),
                    stats.dispatch.acknowledged.load(Relaxed)
                );
            }
        });
        super::shutdown_signal().await;
        report.abort();
        svc.stop().await;
        Ok(())
    })
}

/// `asystole:2,ventricular_fibrillation:1` → kinds and counts.
pub fn parse_plant(s: &str) -> anyhow::Result<Vec<(EventKind, usize)>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            let (k, n) = x.split_once(':').unwrap_or((x, "1"));
            let kind = EventKind::parse(k.trim()).with_context(|| {
                format!(
                    "--plant {k:?}: one of {}",
                    EventKind::ALL.map(|k| k.name()).join(", ")
                )
            })?;
            Ok((
                kind,
                n.trim()
                    .parse()
                    .with_context(|| format!("--plant {x:?}: count"))?,
            ))
        })
        .collect()
}

#[derive(clap::Args)]
struct SimulateArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[arg(long, default_value_t = 20)]
    cars: usize,
    /// Simulated minutes each car drives.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Emergencies to plant, KIND:COUNT,… (kinds: asystole, ventricular_fibrillation,
    /// ventricular_tachycardia, bradycardia, tachycardia, desaturation, unresponsive,
    /// atrial_fibrillation).
    #[arg(
        long,
        default_value = "asystole:1,ventricular_fibrillation:1,bradycardia:1"
    )]
    plant: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Publish every message twice (a flaky link).
    #[arg(long)]
    duplicates: bool,
    /// MQTT connections the cars share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Write the drivers' consented profiles here (for `vehicles serve --profiles`).
    #[arg(long)]
    profiles_out: Option<PathBuf>,
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let key = fleet_key(&a.broker.fleet_key_file)?;
    if let Some(p) = &a.profiles_out {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&fleet::profiles(a.seed, a.cars))?,
        )?;
    }
    let seconds = (a.minutes * 60.0) as u64;
    let onset = (seconds as f64 * 0.4, seconds as f64 * 0.6);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (host, port) = broker(&a.broker)?;
        let bar = super::progress::count_bar(seconds, "simulated seconds");
        let b = bar.clone();
        let report = fleet::simulate(
            FleetConfig {
                broker_host: host,
                broker_port: port,
                prefix: a.broker.prefix.clone(),
                fleet_key: key,
                cars: a.cars,
                seconds,
                speed: a.speed,
                plant: parse_plant(&a.plant)?,
                onset_s: onset,
                seed: a.seed,
                start_ms: center::now_ms(),
                duplicates: a.duplicates,
                connections: a.connections,
            },
            move |s| b.set_position(s),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        println!(
            "{} messages published by {} cars; {} prompts dismissed by drivers",
            report.published, a.cars, report.cancels
        );
        for (vin, p) in &report.planted {
            let got: Vec<&str> = report
                .commands
                .get(vin)
                .map(|c| c.iter().map(|c| c.action.as_str()).collect())
                .unwrap_or_default();
            println!(
                "  {vin}: {} planted; car was told: {}",
                p.kind.name(),
                if got.is_empty() {
                    "nothing".into()
                } else {
                    got.join(", ")
                }
            );
        }
        Ok(())
    })
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// Cars with nothing planted, and the hours each drives.
    #[arg(long, default_value_t = 200)]
    cars: usize,
    #[arg(long, default_value_t = 5.0)]
    hours: f64,
    /// Cars per kind of emergency.
    #[arg(long, default_value_t = 30)]
    per_kind: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 15.0)]
    confirm_s: f64,
}

/// The evaluation as a text table.
pub fn render_evaluation(e: &medfed_vitals::sim::Evaluation, confirm_s: f64) -> String {
    let mut out = format!(
        "{:.0} driving hours: {} false prompts, {} false calls ({:.2} per 1,000 h); AF advice for {} planted AF, {} false\n",
        e.driving_hours, e.false_prompts, e.false_calls, e.false_calls_per_1000_h(), e.af_advised, e.false_af_advice
    );
    out.push_str("kind                        called   median s  p90 s  within window+30 s\n");
    for (kind, n, called, t) in &e.planted {
        let q = |p: f64| {
            t.get(((t.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let fast = t.iter().filter(|&&x| x <= confirm_s + 30.0).count();
        out.push_str(&format!(
            "{:<27} {:>3}/{:<3} {:>9.0} {:>6.0}  {}/{}\n",
            kind.name(),
            called,
            n,
            q(0.5),
            q(0.9),
            fast,
            n
        ));
    }
    out
}

fn evaluate(a: EvaluateArgs) -> anyhow::Result<()> {
    let rules = EscalationRules {
        confirm_s: a.confirm_s,
        ..Default::default()
    };
    let e = medfed_vitals::sim::evaluate(a.cars, a.hours, a.per_kind, a.seed, 2, rules);
    print!("{}", render_evaluation(&e, a.confirm_s));
    Ok(())
}

#[derive(clap::Args)]
struct StatsArgs {
    /// The service's state directory.
    #[arg(long, default_value = "vehicles")]
    state: PathBuf,
    /// Smallest count released; smaller cells are suppressed.
    #[arg(long, default_value_t = 5)]
    k: u64,
    #[arg(long)]
    json: bool,
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let events = service::read_events(&a.state).map_err(anyhow::Error::msg)?;
    let t = medfed_vehicles::stats::tabulate(&events, a.k);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", medfed_vehicles::stats::render(&t));
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Sub::Serve(s) => serve(s),
        Sub::Simulate(s) => simulate(s),
        Sub::Evaluate(e) => evaluate(e),
        Sub::Stats(s) => stats(s),
    }
}
