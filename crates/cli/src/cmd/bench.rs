//! `medfed bench-hub`: hub throughput for result posts under load from many simulated nodes.
//!
//! Starts a real hub (HTTPS on loopback, SQLite or PostgreSQL), registers N simulated nodes with their
//! own Ed25519 keys, submits a study of K analyses, then lets every simulated node fetch its K tasks and
//! post K signed results concurrently, as real nodes would. Reports posts per second and latency
//! percentiles. The simulated nodes release a fixed count through the real release step; what is
//! measured is the hub: TLS, request signatures, result verification and exactly-once application.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use medfed_privacy::{release, Policy, SiteStatistic};
use medfed_protocol::{request, Outcome, SecretKey, Signed, Task, TaskResult};

#[derive(clap::Args)]
pub struct Args {
    /// Scratch folder for the hub.
    #[arg(long, default_value = "bench-hub")]
    dir: PathBuf,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Analyses in the study (tasks per node).
    #[arg(long, default_value_t = 20)]
    analyses: usize,
    /// Concurrent connections posting results.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// postgres://… to put the hub's state in PostgreSQL (in a scratch schema) instead of SQLite.
    #[arg(long)]
    db: Option<String>,
}

async fn signed_request(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    key: &SecretKey,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<reqwest::Response> {
    let (n, t, s) = request::sign(
        key,
        name,
        method.as_str(),
        path,
        medfed_protocol::now(),
        &body,
    );
    let r = client
        .request(method, format!("{base}{path}"))
        .header(request::HEADER_NODE, n)
        .header(request::HEADER_TIME, t)
        .header(request::HEADER_SIGNATURE, s)
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "hub answered {}", r.status());
    Ok(r)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir)?;
    }
    let schema = format!("medfed_bench_{}", &medfed_protocol::random_id()[..8]);
    let d = medfed_hub::HubDir::init(
        &a.dir,
        "bench",
        "127.0.0.1:0",
        a.db.as_deref(),
        &schema,
        &[],
    )?;
    let hub = d.open(None)?;
    let mut keys = Vec::new();
    for i in 0..a.nodes {
        let k = SecretKey::generate();
        let name = format!("node{i:04}");
        hub.add_node(&name, &k.public().to_hex(), false)?;
        keys.push((name, k));
    }
    let analyses: Vec<String> = (0..a.analyses)
        .map(|i| {
            format!(
                r#"{{"id":"a{i}","type":"person_count","domain":"condition","concepts":[{}]}}"#,
                201826 + i
            )
        })
        .collect();
    let study = format!(
        r#"{{"format":"medfed-study/1","name":"bench","analyses":[{}]}}"#,
        analyses.join(",")
    );
    let tls = d.tls()?;
    let pem = std::fs::read(a.dir.join("tls/cert.pem"))?;
    let token = d.token_value()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let backend = hub.backend();
    let total = a.nodes * a.analyses;
    // Store calls are blocking (the PostgreSQL client runs its own runtime): keep them off the async
    // runtime here, as the server does with spawn_blocking.
    let ack = hub.submit(&study)?;
    let hub2 = hub.clone();
    let (elapsed, mut lat) = rt
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("https://{}", listener.local_addr()?);
            let app = medfed_hub::server::router(
                hub.clone(),
                vec![(medfed_hub::setup::DEFAULT_RESEARCHER.into(), token)],
            );
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(medfed_hub::server::serve(listener, app, tls, async {
                let _ = stop_rx.await;
            }));
            let client = medfed_node::transport::client(&pem, Duration::from_secs(60))
                .map_err(anyhow::Error::msg)?;
            // Every node fetches its tasks and prepares its signed results (not timed: that is node work).
            let mut work = Vec::new();
            for (name, key) in &keys {
                let r = signed_request(
                    &client,
                    &base,
                    name,
                    key,
                    reqwest::Method::GET,
                    "/v1/tasks?wait=0",
                    Vec::new(),
                )
                .await?;
                let tasks: Vec<Signed> = r.json().await?;
                for t in tasks {
                    let task: Task = serde_json::from_str(&t.payload)?;
                    let res = TaskResult {
                        task_id: task.task_id,
                        study_id: task.study_id,
                        node: name.clone(),
                        analysis_id: task.analysis.id().to_string(),
                        at: medfed_protocol::now(),
                        outcome: Outcome::Released {
                            statistic: release(SiteStatistic::count(1234), &Policy::default()),
                        },
                    };
                    let body = serde_json::to_vec(&Signed::seal(&res, key))?;
                    work.push((name.clone(), key.clone_key(), body));
                }
            }
            anyhow::ensure!(
                work.len() == total,
                "expected {total} tasks, fetched {}",
                work.len()
            );
            let work = Arc::new(tokio::sync::Mutex::new(work));
            let t0 = Instant::now();
            let mut handles = Vec::new();
            for _ in 0..a.concurrency {
                let (work, client, base) = (work.clone(), client.clone(), base.clone());
                handles.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let Some((name, key, body)) = work.lock().await.pop() else {
                            break;
                        };
                        let t = Instant::now();
                        signed_request(
                            &client,
                            &base,
                            &name,
                            &key,
                            reqwest::Method::POST,
                            "/v1/results",
                            body,
                        )
                        .await?;
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    anyhow::Ok(lat)
                }));
            }
            let mut lat = Vec::new();
            for h in handles {
                lat.extend(h.await??);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let _ = stop_tx.send(());
            let _ = server.await;
            anyhow::Ok((elapsed, lat))
        })
        .context("hub benchmark")?;
    let st = hub2.status(&ack.study_id)?;
    anyhow::ensure!(
        st.study.status == "complete",
        "study not complete after all posts"
    );
    drop(rt);
    drop(hub2);
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "hub on {backend}: {total} result posts from {} nodes, {} concurrent: {:.2} s, {:.0} posts/s; latency p50 {:.1} ms, p99 {:.1} ms",
        a.nodes, a.concurrency, elapsed, total as f64 / elapsed, pct(0.5), pct(0.99)
    );
    if let Some(url) = &a.db {
        let mut db = medfed_hub::db::Postgres::connect(url, &schema)?;
        medfed_hub::db::Db::batch(&mut db, &format!("DROP SCHEMA {schema} CASCADE"))?;
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(())
}
