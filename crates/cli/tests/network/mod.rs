//! The network end to end (a module of the `cli` test binary, so that only one test binary links
//! DataFusion): a real hub and real nodes as separate `medfed` processes on 127.0.0.1,
//! talking HTTPS; the hub's state on SQLite and on the PostgreSQL at 127.0.0.1:5432.
//!
//! Pooled answers are checked against DuckDB over all sites' Parquet files (an independent engine and
//! hand-written SQL), and per-site suppression against the node's policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medfed_hub::db::Db;

mod profiles;
mod vehicle_events;

const BIN: &str = env!("CARGO_BIN_EXE_medfed");

fn medfed(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run medfed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = medfed(args);
    assert!(ok, "medfed {}\n{out}\n{err}", args.join(" "));
    out
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small synthetic population: `hospitals` site stores.
fn population(root: &Path, persons: u64, hospitals: usize) -> Vec<PathBuf> {
    let pop = root.join("pop");
    ok(&[
        "synth",
        "--persons",
        &persons.to_string(),
        "--hospitals",
        &hospitals.to_string(),
        "--seed",
        "7",
        "--out",
        &s(&pop),
    ]);
    let mut sites: Vec<PathBuf> = std::fs::read_dir(&pop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("site.toml").exists())
        .collect();
    sites.sort();
    sites
}

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM, as an operator's stop would; returns the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit(30)
    }
    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let c = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "process did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Net {
    root: PathBuf,
    hub_dir: PathBuf,
    hub: Proc,
    addr: String,
    db: Option<(String, String)>,
    nodes: Vec<(String, PathBuf)>,
    runners: Vec<Proc>,
}

impl Net {
    /// Hub in `root/hub` (SQLite, or PostgreSQL in a fresh schema), one registered node per site.
    fn new(root: &Path, sites: &[PathBuf], postgres: bool, policy: Option<&str>) -> Net {
        let hub_dir = root.join("hub");
        let db = postgres.then(|| {
            let schema = format!("medfed_test_{}", &medfed_protocol::random_id()[..10]);
            (PG.to_string(), schema)
        });
        let mut args = vec![
            "hub".to_string(),
            "init".into(),
            "--dir".into(),
            s(&hub_dir),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some((url, schema)) = &db {
            args.extend([
                "--db".into(),
                url.clone(),
                "--db-schema".into(),
                schema.clone(),
            ]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&a);
        let mut net = Net {
            root: root.to_path_buf(),
            hub_dir: hub_dir.clone(),
            hub: Proc {
                child: None,
                log: root.join("hub.log"),
            },
            addr: String::new(),
            db,
            nodes: Vec::new(),
            runners: Vec::new(),
        };
        net.start_hub(&[]);
        let policy_file = policy.map(|p| {
            let f = root.join("policy.toml");
            std::fs::write(&f, p).unwrap();
            f
        });
        for site in sites {
            let name = site.file_name().unwrap().to_string_lossy().to_string();
            let mut source = vec!["--site".to_string(), s(site)];
            if let Some(p) = &policy_file {
                source.extend(["--policy".into(), s(p)]);
            }
            net.add_node(&name, &source, "cdm");
        }
        net
    }

    /// `medfed node init` a node named `name` with `source` (its data and policy flags), then
    /// register it at the hub as serving `serves`.
    fn add_node(&mut self, name: &str, source: &[String], serves: &str) {
        let dir = self.root.join("nodes").join(name);
        let mut args = vec![
            "node".to_string(),
            "init".into(),
            "--dir".into(),
            s(&dir),
            "--hub".into(),
            self.url(),
            "--hub-ca".into(),
            s(&self.hub_dir.join("tls/cert.pem")),
        ];
        args.extend(source.iter().cloned());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&a);
        if serves != "cdm" {
            assert!(out.contains(&format!("--serves {serves}")), "{out}");
        }
        let key = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("public key: "))
            .expect("init prints the key")
            .trim()
            .to_string();
        ok(&[
            "hub",
            "add-node",
            "--dir",
            &s(&self.hub_dir),
            "--name",
            name,
            "--key",
            &key,
            "--serves",
            serves,
        ]);
        self.nodes.push((name.to_string(), dir));
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A vehicle service's node answering from the events log in `log`, registered as serving
    /// `vehicle_events`.
    fn add_vehicle_node(&mut self, name: &str, log: &Path, policy: &Path) {
        let source = [
            "--vehicle-events".to_string(),
            s(log),
            "--name".into(),
            name.into(),
            "--policy".into(),
            s(policy),
        ];
        self.add_node(name, &source, "vehicle_events");
    }

    /// Start (or restart) the hub on the same address.
    fn start_hub(&mut self, env: &[(&str, &str)]) {
        let listen = if self.addr.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.addr.clone()
        };
        let _ = std::fs::remove_file(self.hub_dir.join("hub.addr"));
        self.hub = Proc::spawn(
            &[
                "hub",
                "serve",
                "--dir",
                &s(&self.hub_dir),
                "--listen",
                &listen,
            ],
            &self.root.join("hub.log"),
            env,
        );
        let p = self.hub_dir.join("hub.addr");
        wait_until("the hub to listen", 30, || p.exists());
        self.addr = std::fs::read_to_string(p).unwrap().trim().to_string();
    }

    fn start_nodes(&mut self, env: &[(&str, &str)]) {
        for i in 0..self.nodes.len() {
            self.start_node(i, env);
        }
    }

    fn start_node(&mut self, i: usize, env: &[(&str, &str)]) {
        let (name, dir) = &self.nodes[i];
        self.runners.push(Proc::spawn(
            &["node", "run", "--dir", &s(dir)],
            &self.root.join(format!("{name}.log")),
            env,
        ));
    }

    /// Write the standard test study to `root/study.json` and submit it; returns (file, study id).
    fn submit_standard(&self) -> (PathBuf, String) {
        let study = self.root.join("study.json");
        std::fs::write(&study, STUDY).unwrap();
        let id = self.submit(&study);
        (study, id)
    }

    fn submit(&self, study: &Path) -> String {
        let out = ok(&["study", "submit", "--hub-dir", &s(&self.hub_dir), &s(study)]);
        out.split_whitespace().nth(1).expect("study id").to_string()
    }

    fn status(&self, id: &str) -> serde_json::Value {
        let out = ok(&["study", "results", "--hub-dir", &s(&self.hub_dir), id]);
        serde_json::from_str(&out).unwrap()
    }

    fn wait_complete(&self, id: &str, secs: u64) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let last = self.status(id);
            if last["study"]["status"] == "complete" {
                return last;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                let logs: Vec<String> = self.runners.iter().map(|r| r.log()).collect();
                panic!(
                    "study {id} not complete: {last}\nhub:\n{}\nnodes:\n{}",
                    self.hub.log(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn db(&self) -> Box<dyn Db> {
        match &self.db {
            Some((url, schema)) => {
                Box::new(medfed_hub::db::Postgres::connect(url, schema).unwrap())
            }
            None => Box::new(
                medfed_hub::db::Sqlite::open(&s(&self.hub_dir.join("hub.sqlite"))).unwrap(),
            ),
        }
    }

    fn audit(&self, node: usize) -> Vec<serde_json::Value> {
        let out = ok(&["node", "audit", "--dir", &s(&self.nodes[node].1), "--json"]);
        out.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.runners.clear();
        self.hub.kill();
        if let Some((url, schema)) = &self.db {
            if let Ok(mut d) = medfed_hub::db::Postgres::connect(url, schema) {
                let _ = d.batch(&format!("DROP SCHEMA {schema} CASCADE"));
            }
        }
    }
}

/// For tests that compare every site's exact value: the differencing defence (tested on its own) may
/// legitimately withhold a count that nearly equals another in these small populations.
const EXACT_VALUES_POLICY: &str = "differencing = false\n[analyses]\nperson_count = \"allow\"\n";

const STUDY: &str = r#"{
  "format": "medfed-study/1",
  "name": "network test",
  "analyses": [
    { "id": "t2d_30plus", "type": "person_count", "domain": "condition", "concepts": [201826], "age": { "min": 30 } },
    { "id": "htn_women", "type": "person_count", "domain": "condition", "concepts": [316866], "sex": ["female"] },
    { "id": "metformin", "type": "person_count", "domain": "drug", "concepts": [1503297] },
    { "id": "asthma_under5", "type": "person_count", "domain": "condition", "concepts": [317009], "age": { "max": 4 } },
    { "id": "copd_exact_only", "type": "person_count", "domain": "condition", "concepts": [255573], "descendants": false }
  ]
}"#;

/// The same counts, per site, computed by DuckDB from the Parquet files with hand-written SQL.
fn duckdb_counts(sites: &[PathBuf]) -> Vec<Vec<u64>> {
    let script = r#"
import duckdb, json, sys
sites = json.loads(sys.argv[1])
out = []
for s in sites:
    c = duckdb.connect()
    t = lambda n: f"read_parquet('{s}/cdm/{n}.parquet')"
    def first(table, col, date, ids, desc=True):
        cs = f"SELECT descendant_concept_id FROM {t('concept_ancestor')} WHERE ancestor_concept_id IN ({ids})" if desc else "SELECT NULL"
        return f"""SELECT person_id, MIN({date}) AS d FROM {t(table)}
                   WHERE {col} IN ({ids}) OR {col} IN ({cs}) GROUP BY person_id"""
    def q(sql):
        return c.execute(sql).fetchone()[0]
    p = t('person')
    row = [
      q(f"SELECT COUNT(*) FROM ({first('condition_occurrence','condition_concept_id','condition_start_date','201826')}) f JOIN {p} p USING (person_id) WHERE year(f.d) - p.year_of_birth >= 30"),
      q(f"SELECT COUNT(*) FROM ({first('condition_occurrence','condition_concept_id','condition_start_date','316866')}) f JOIN {p} p USING (person_id) WHERE p.gender_concept_id = 8532"),
      q(f"SELECT COUNT(*) FROM ({first('drug_exposure','drug_concept_id','drug_exposure_start_date','1503297')}) f JOIN {p} p USING (person_id)"),
      q(f"SELECT COUNT(*) FROM ({first('condition_occurrence','condition_concept_id','condition_start_date','317009')}) f JOIN {p} p USING (person_id) WHERE year(f.d) - p.year_of_birth BETWEEN 0 AND 4"),
      q(f"SELECT COUNT(DISTINCT person_id) FROM {t('condition_occurrence')} WHERE condition_concept_id = 255573"),
    ]
    out.append(row)
print(json.dumps(out))
"#;
    let list: Vec<String> = sites.iter().map(|p| s(p)).collect();
    let out = Command::new("python3")
        .args(["-c", script, &serde_json::to_string(&list).unwrap()])
        .output()
        .expect("python3 with duckdb (installed by scripts/test-all.sh)");
    assert!(
        out.status.success(),
        "duckdb reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pooled value equals DuckDB on the pooled data when nothing is suppressed; per-site values follow
/// the minimum cell count exactly.
fn check_against_duckdb(results: &serde_json::Value, sites: &[PathBuf], k: u64) {
    let truth = duckdb_counts(sites);
    let rs = results["results"].as_array().unwrap();
    assert_eq!(rs.len(), 5);
    let mut some_suppressed = false;
    for (a, r) in rs.iter().enumerate() {
        let mut released_sum = 0;
        let mut any_suppressed = false;
        for (i, site) in sites.iter().enumerate() {
            let name = site.file_name().unwrap().to_string_lossy();
            let entry = r["sites"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["site"] == *name)
                .unwrap_or_else(|| panic!("{name} missing in {r}"));
            let n = truth[i][a];
            if n > 0 && n < k {
                assert_eq!(
                    entry["status"], "suppressed",
                    "{} at {name}: {n} < {k} must be suppressed: {entry}",
                    r["id"]
                );
                assert!(
                    entry.get("value").is_none(),
                    "a suppressed value must not travel: {entry}"
                );
                any_suppressed = true;
            } else {
                assert_eq!(entry["status"], "released", "{entry}");
                assert_eq!(entry["value"].as_u64(), Some(n), "{} at {name}", r["id"]);
                released_sum += n;
            }
        }
        let pooled: u64 = truth.iter().map(|row| row[a]).sum();
        if any_suppressed {
            some_suppressed = true;
            assert!(r["notes"][0].as_str().unwrap().contains("withheld"), "{r}");
        } else {
            assert_eq!(r["value"].as_u64(), Some(pooled), "{} pooled", r["id"]);
        }
        assert!(released_sum <= pooled);
    }
    let _ = some_suppressed;
}

fn network_study(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 3000, 3);
    let mut net = Net::new(
        tmp.path(),
        &sites,
        postgres,
        Some("min_cell_count = 5\ndifferencing = false\n[analyses]\nperson_count = \"allow\"\ncharacterization = \"allow\"\n"),
    );
    net.start_nodes(&[]);
    // A characterization first: its tables land in national_cells, one row per number, queryable
    // by stratum on either backend.
    let ch = tmp.path().join("ch.json");
    std::fs::write(&ch, r#"{"format":"medfed-study/1","name":"ch","analyses":[{"id":"achilles","type":"characterization","analyses":[2,10,1815]}]}"#).unwrap();
    let ch_id = net.submit(&ch);
    net.wait_complete(&ch_id, 120);
    let mut db = net.db();
    let persons = db
        .query(
            "SELECT value, sites_released FROM national_cells WHERE study_id = $1 AND table_name = '2' \
             AND stratum = 'gender_concept_id=*' AND statistic = 'persons'",
            &[ch_id.as_str().into()],
        )
        .unwrap();
    assert_eq!(
        persons[0][0],
        medfed_hub::db::Val::F(Some(3000.0)),
        "{persons:?}"
    );
    assert_eq!(persons[0][1].int(), Some(3));
    let cells = db
        .query(
            "SELECT COUNT(*) FROM national_cells WHERE study_id = $1 AND table_name = '1815'",
            &[ch_id.as_str().into()],
        )
        .unwrap()[0][0]
        .int()
        .unwrap();
    assert!(cells > 10, "{cells} measurement-distribution numbers");
    drop(db);
    let (study, id) = net.submit_standard();
    let results = net.wait_complete(&id, 120);
    check_against_duckdb(&results, &sites, 5);
    // Exactly one result per task (5 counts and the characterization at 3 nodes), and the national
    // statistics hold one row per analysis.
    let mut db = net.db();
    let n = db.query("SELECT COUNT(*) FROM results", &[]).unwrap()[0][0]
        .int()
        .unwrap();
    assert_eq!(n, 18);
    let n = db
        .query("SELECT COUNT(*) FROM national_statistics", &[])
        .unwrap()[0][0]
        .int()
        .unwrap();
    assert_eq!(n, 6);
    // Every node's audit log has one release per task and verifies.
    for i in 0..3 {
        let a = net.audit(i);
        // Five counts and the characterization.
        assert_eq!(a.iter().filter(|e| e["event"] == "release").count(), 6);
    }
    // The in-process federation gives the same answer.
    let out = tmp.path().join("inproc");
    let mut args = vec![
        "study".to_string(),
        "run".into(),
        s(&study),
        "--out".into(),
        s(&out),
        "--policy".into(),
        s(&tmp.path().join("policy.toml")),
    ];
    for site in &sites {
        args.extend(["--site".into(), s(site)]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a);
    let inproc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(inproc["results"], results["results"]);
    // An operator's stop is clean on both backends.
    let st = net.hub.terminate();
    assert!(
        st.success() && net.hub.log().contains("hub stopped"),
        "{st}: {}",
        net.hub.log()
    );
}

#[test]
fn network_study_on_sqlite_equals_duckdb_on_pooled_data() {
    network_study(false);
}

#[test]
fn network_study_on_postgres_equals_duckdb_on_pooled_data() {
    network_study(true);
}

#[test]
fn killed_nodes_resume_and_each_result_is_applied_once() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 2000, 2);
    let mut net = Net::new(tmp.path(), &sites, false, Some(EXACT_VALUES_POLICY));
    let (_, id) = net.submit_standard();
    // Node 0 dies right after accepting its first task; node 1 right after auditing its first result
    // (before posting it).
    let (n0, d0) = net.nodes[0].clone();
    let (n1, d1) = net.nodes[1].clone();
    let mut p0 = Proc::spawn(
        &["node", "run", "--dir", &s(&d0)],
        &tmp.path().join(format!("{n0}.log")),
        &[("MEDFED_FAILPOINT", "node:after_accept")],
    );
    let mut p1 = Proc::spawn(
        &["node", "run", "--dir", &s(&d1)],
        &tmp.path().join(format!("{n1}.log")),
        &[("MEDFED_FAILPOINT", "node:after_audit")],
    );
    assert!(!p0.wait_exit(60).success());
    assert!(!p1.wait_exit(60).success());
    assert!(p1.log().contains("failpoint node:after_audit"));
    let before = net.audit(1);
    assert_eq!(
        before.iter().filter(|e| e["event"] == "release").count(),
        1,
        "one result audited before the crash"
    );
    // Restart both without failpoints: they resume from their own state, within the hub's lease.
    net.start_nodes(&[]);
    let results = net.wait_complete(&id, 120);
    check_against_duckdb(&results, &sites, 10);
    let mut db = net.db();
    assert_eq!(
        db.query("SELECT COUNT(*) FROM results", &[]).unwrap()[0][0].int(),
        Some(10)
    );
    for i in 0..2 {
        let a = net.audit(i);
        let mut tasks: Vec<&str> = a
            .iter()
            .filter(|e| e["event"] == "release")
            .map(|e| e["task_id"].as_str().unwrap())
            .collect();
        let n = tasks.len();
        tasks.sort();
        tasks.dedup();
        assert_eq!(
            (n, tasks.len()),
            (5, 5),
            "each task released exactly once at node {i}"
        );
    }
    // The crashed-after-audit result is the one that was posted: the hub holds the audited payload.
    let first = &before[0];
    let rows = db
        .query(
            "SELECT payload FROM results WHERE task_id = $1",
            &[first["task_id"].as_str().unwrap().into()],
        )
        .unwrap();
    assert_eq!(rows[0][0].text(), first["payload"].as_str());
}

#[test]
fn hub_killed_mid_study_loses_nothing_and_counts_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 2000, 2);
    let mut net = Net::new(tmp.path(), &sites, false, Some(EXACT_VALUES_POLICY));
    let (_, id) = net.submit_standard();
    // The hub aborts right after committing the first result, before answering the node.
    net.hub.kill();
    net.start_hub(&[("MEDFED_FAILPOINT", "hub:after_apply")]);
    net.start_nodes(&[]);
    let st = net.hub.wait_exit(60);
    assert!(!st.success());
    assert!(net.hub.log().contains("failpoint hub:after_apply"));
    // Nodes keep retrying with backoff while the hub is down; then it comes back on the same address.
    std::thread::sleep(Duration::from_millis(800));
    net.start_hub(&[]);
    // And a real SIGKILL in the middle of the rest of the study.
    std::thread::sleep(Duration::from_millis(300));
    net.hub.kill();
    net.start_hub(&[]);
    let results = net.wait_complete(&id, 180);
    check_against_duckdb(&results, &sites, 10);
    let mut db = net.db();
    assert_eq!(
        db.query("SELECT COUNT(*) FROM results", &[]).unwrap()[0][0].int(),
        Some(10)
    );
    assert_eq!(
        db.query("SELECT COUNT(*) FROM national_statistics", &[])
            .unwrap()[0][0]
            .int(),
        Some(5)
    );
    let dup = db
        .query(
            "SELECT COUNT(*) FROM audit WHERE action = 'result_duplicate'",
            &[],
        )
        .unwrap()[0][0]
        .int()
        .unwrap();
    assert!(
        dup >= 1,
        "the result whose acknowledgement was lost was posted again and recognised"
    );
    let logs: String = net.runners.iter().map(|r| r.log()).collect();
    assert!(
        logs.contains("retrying in"),
        "nodes backed off while the hub was down:\n{logs}"
    );
}

#[test]
fn forged_expired_replayed_invalid_and_unregistered_are_refused_and_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 1500, 1);
    let mut net = Net::new(tmp.path(), &sites, false, None);
    let one = |id: &str, ttl: Option<u64>| {
        let ttl = ttl
            .map(|t| format!(r#","task_ttl_s":{t}"#))
            .unwrap_or_default();
        let f = tmp.path().join(format!("{id}.json"));
        std::fs::write(&f, format!(r#"{{"format":"medfed-study/1","name":"{id}"{ttl},"analyses":[{{"id":"{id}","type":"person_count","domain":"condition","concepts":[201826]}}]}}"#)).unwrap();
        f
    };
    // Expired: a one-second task that the node only sees later.
    let expired = net.submit(&one("expired", Some(1)));
    std::thread::sleep(Duration::from_millis(2100));
    // Forged: a task whose signature was altered in the hub's database.
    let forged = net.submit(&one("forged", None));
    let mut db = net.db();
    let row = db
        .query(
            "SELECT id, signature FROM tasks WHERE study_id = $1",
            &[forged.as_str().into()],
        )
        .unwrap();
    let sig = row[0][1].text().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    db.execute(
        "UPDATE tasks SET signature = $1 WHERE id = $2",
        &[flipped.into(), row[0][0].clone()],
    )
    .unwrap();
    // Invalid: a hub-signed task carrying an analysis the node does not accept.
    let key = medfed_protocol::SecretKey::load(&net.hub_dir.join("hub.key")).unwrap();
    let invalid = net.submit(&one("invalid", None));
    let t = db
        .query(
            "SELECT id, payload FROM tasks WHERE study_id = $1",
            &[invalid.as_str().into()],
        )
        .unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(t[0][1].text().unwrap()).unwrap();
    payload["analysis"] =
        serde_json::json!({"id": "invalid", "type": "raw_rows", "table": "person"});
    let signed = medfed_protocol::Signed::seal(&payload, &key);
    db.execute(
        "UPDATE tasks SET payload = $1, signature = $2 WHERE id = $3",
        &[
            signed.payload.into(),
            signed.signature.into(),
            t[0][0].clone(),
        ],
    )
    .unwrap();
    // A normal study, which is then replayed by resetting its task at the hub.
    let normal = net.submit(&one("normal", None));
    net.start_nodes(&[]);
    let r = net.wait_complete(&expired, 60);
    assert_eq!(r["results"][0]["sites"][0]["status"], "refused");
    assert!(
        r["results"][0]["sites"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{r}"
    );
    let r = net.wait_complete(&invalid, 60);
    assert!(
        r["results"][0]["sites"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid task"),
        "{r}"
    );
    net.wait_complete(&normal, 60);
    db.execute(
        "UPDATE tasks SET status = 'open', leased_until = 0 WHERE study_id = $1",
        &[normal.as_str().into()],
    )
    .unwrap();
    wait_until(
        "the node to log the forged and the replayed task",
        60,
        || {
            let a = net.audit(0);
            let rejected: Vec<&str> = a
                .iter()
                .filter(|e| e["event"] == "rejected")
                .map(|e| e["detail"].as_str().unwrap())
                .collect();
            rejected.iter().any(|d| d.contains("signature"))
                && rejected.iter().any(|d| d.contains("replayed"))
        },
    );
    let a = net.audit(0);
    // Nothing was sent for the rejected tasks; the forged study never completes.
    assert!(a
        .iter()
        .filter(|e| e["event"] == "rejected")
        .all(|e| e["sent"] == false));
    assert_eq!(net.status(&forged)["study"]["status"], "running");
    // Each rejection is logged once even though the hub keeps delivering.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        net.audit(0)
            .iter()
            .filter(|e| e["event"] == "rejected")
            .count(),
        2
    );

    // An unregistered node is refused by the hub, and the hub records it.
    let stranger = tmp.path().join("stranger");
    ok(&[
        "node",
        "init",
        "--dir",
        &s(&stranger),
        "--hub",
        &net.url(),
        "--site",
        &s(&sites[0]),
        "--name",
        "stranger",
        "--hub-ca",
        &s(&net.hub_dir.join("tls/cert.pem")),
    ]);
    let (okk, out, err) = medfed(&["node", "run", "--dir", &s(&stranger), "--once"]);
    assert!(!okk, "{out}");
    assert!(err.contains("not registered"), "{err}");
    let trail = ok(&["hub", "audit", "--dir", &s(&net.hub_dir)]);
    assert!(trail.contains("refused_unregistered"), "{trail}");

    // A node whose hub key is wrong (a hub impersonator) rejects everything it is sent.
    let (okk, _, err) = medfed(&[
        "node",
        "init",
        "--dir",
        &s(&tmp.path().join("x")),
        "--hub",
        &net.url(),
        "--site",
        &s(&sites[0]),
        "--hub-ca",
        &s(&tmp.path().join("missing.pem")),
    ]);
    assert!(!okk && err.contains("missing.pem"), "{err}");
}

#[test]
fn tampered_audit_log_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 1500, 1);
    let mut net = Net::new(tmp.path(), &sites, false, None);
    let (_, id) = net.submit_standard();
    net.start_nodes(&[]);
    net.wait_complete(&id, 60);
    net.runners.clear();
    let out = ok(&["node", "audit", "--dir", &s(&net.nodes[0].1)]);
    assert!(
        out.contains("audit chain verified: 5 entries, 5 sent"),
        "{out}"
    );
    let log = net.nodes[0].1.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Change one released count on line 3, keeping the JSON valid.
    let mut e: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    e["detail"] = serde_json::json!("released count 1");
    let mut new = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    new[2] = serde_json::to_string(&e).unwrap();
    std::fs::write(&log, new.join("\n") + "\n").unwrap();
    let (okk, _, err) = medfed(&["node", "audit", "--dir", &s(&net.nodes[0].1)]);
    assert!(!okk && err.contains("line 3"), "{err}");
    // The node refuses to run on a broken chain rather than append to it.
    let (okk, _, err) = medfed(&["node", "run", "--dir", &s(&net.nodes[0].1), "--once"]);
    assert!(!okk && err.contains("line 3"), "{err}");
}

#[test]
fn approval_policy_holds_tasks_until_the_steward_approves() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 1500, 1);
    let mut net = Net::new(
        tmp.path(),
        &sites,
        false,
        Some("[analyses]\nperson_count = \"approve\"\n"),
    );
    let (_, id) = net.submit_standard();
    net.start_nodes(&[]);
    let dir = s(&net.nodes[0].1);
    wait_until("tasks waiting for approval", 30, || {
        ok(&["node", "approve", "--dir", &dir])
            .lines()
            .filter(|l| l.starts_with('t'))
            .count()
            == 5
    });
    assert_eq!(net.status(&id)["study"]["status"], "running");
    let list = ok(&["node", "approve", "--dir", &dir]);
    let first = list
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(&["node", "approve", "--dir", &dir, "--task", &first, "--deny"]);
    ok(&["node", "approve", "--dir", &dir, "--all"]);
    let r = net.wait_complete(&id, 60);
    let refused = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["sites"][0]["status"] == "refused")
        .count();
    assert_eq!(refused, 1, "{r}");
}

#[test]
fn hostile_studies_are_refused_at_submit() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 1000, 1);
    let net = Net::new(tmp.path(), &sites, false, None);
    let cases = [
        (
            r#"{"format":"medfed-study/1","name":"x","analyses":[{"id":"a","type":"export_rows","table":"person"}]}"#,
            "unknown analysis type",
        ),
        (
            r#"{"format":"medfed-study/1","name":"x'; DROP TABLE person; --","analyses":[{"id":"a","type":"person_count","domain":"condition","concepts":[1]}]}"#,
            "looks like SQL",
        ),
        (
            r#"{"format":"medfed-study/1","name":"x","analyses":[{"id":"a","type":"person_count","domain":"condition","concepts":"201826"}]}"#,
            "$.analyses[0]",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("bad{i}.json"));
        std::fs::write(&f, text).unwrap();
        let (okk, _, err) = medfed(&["study", "submit", "--hub-dir", &s(&net.hub_dir), &s(&f)]);
        assert!(!okk && err.contains(want), "case {i}: {err}");
    }
    // The hub itself refuses them too (not only the client-side check): post one directly.
    let big = format!(
        r#"{{"format":"medfed-study/1","name":"x","analyses":[{}]}}"#,
        [r#"{"id":"a","type":"person_count","domain":"condition","concepts":[1]}"#; 2].join(",")
    );
    let hub = medfed_hub::HubDir(net.hub_dir.clone()).open(None).unwrap();
    let e = hub.submit(&big).unwrap_err().to_string();
    assert!(e.contains("duplicate analysis id"), "{e}");
    assert!(hub.studies().unwrap().is_empty());
}

/// Risk models over the real network: the hub (PostgreSQL) drives the Newton rounds of three
/// regressions over HTTPS, registers the models, exports them with their covariate spec and scores
/// persons; a node applies a model to its own population and releases only the risk distribution.
#[test]
fn risk_models_are_fitted_over_https_registered_exported_and_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 20_000, 3);
    let mut net = Net::new(tmp.path(), &sites, true, None);
    net.start_nodes(&[]);
    let study =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/studies/risk-models.json");
    let id = net.submit(&study);
    let results = net.wait_complete(&id, 600);
    // The same fit as the in-process federation, number for number.
    let out = tmp.path().join("inproc");
    let mut args = vec![
        "study".to_string(),
        "run".into(),
        s(&study),
        "--out".into(),
        s(&out),
    ];
    for site in &sites {
        args.extend(["--site".into(), s(site)]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a);
    let inproc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(inproc["results"], results["results"]);
    let t2d = &results["results"][0]["value"]["summary"];
    assert!(t2d["iterations"].as_u64().unwrap() >= 4, "{t2d}");
    // Each round went to every node as its own signed task, and every node answered each once.
    let mut db = net.db();
    let rounds = db
        .query(
            "SELECT COUNT(DISTINCT round), COUNT(*) FROM tasks WHERE study_id = $1 AND analysis_id = 't2d_5y'",
            &[id.as_str().into()],
        )
        .unwrap();
    let (r, n) = (rounds[0][0].int().unwrap(), rounds[0][1].int().unwrap());
    // Newton rounds, then the evaluation round.
    assert_eq!(r, t2d["iterations"].as_i64().unwrap() + 1);
    assert_eq!(n, 3 * r);
    let coef = db
        .query(
            "SELECT value FROM national_cells WHERE study_id = $1 AND analysis_id = 't2d_5y' AND statistic = 'coefficients.age.estimate'",
            &[id.as_str().into()],
        )
        .unwrap();
    assert_eq!(
        coef[0][0],
        medfed_hub::db::Val::F(t2d["coefficients"]["age"]["estimate"].as_f64())
    );
    drop(db);
    // The registry: listed, exported with the covariate spec, scored here and at the hub alike.
    let hub = s(&net.hub_dir);
    let list = ok(&["model", "list", "--hub-dir", &hub]);
    let model_id = format!("{id}.t2d_5y");
    assert!(
        list.contains(&model_id) && list.contains(&format!("{id}.mace_cox")),
        "{list}"
    );
    let file = tmp.path().join("t2d-model.json");
    ok(&[
        "model",
        "export",
        "--hub-dir",
        &hub,
        &model_id,
        "--out",
        &s(&file),
    ]);
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(model["format"], "medfed-model/1");
    assert_eq!(model["spec"]["covariates"][4]["units"]["8753"], 18.016);
    assert!(model["spec"]["definitions"]["t2d_free_2019"]["InclusionRules"].is_array());
    let persons = tmp.path().join("persons.json");
    std::fs::write(&persons, r#"{"persons": [
        {"age": 62, "male": 1, "bmi": 29.5, "sbp": 142, "glucose": 112, "ldl": 131, "smoking": "current"},
        {"age": 35, "male": 0, "bmi": 21.0, "sbp": 112, "glucose": 84, "ldl": 96, "smoking": "never"}]}"#).unwrap();
    let local: serde_json::Value =
        serde_json::from_str(&ok(&["model", "score", &s(&file), "--input", &s(&persons)])).unwrap();
    let remote: serde_json::Value = serde_json::from_str(&ok(&[
        "model",
        "score",
        "--hub-dir",
        &hub,
        &model_id,
        "--input",
        &s(&persons),
    ]))
    .unwrap();
    assert_eq!(local["results"], remote["results"]);
    let (hi, lo) = (
        local["results"][0]["prediction"].as_f64().unwrap(),
        local["results"][1]["prediction"].as_f64().unwrap(),
    );
    assert!(hi > 3.0 * lo && hi < 1.0 && lo > 0.0, "{hi} {lo}");
    // By hand: the risk is the logistic of the coefficients times the covariates.
    let c = &model["coefficients"];
    let cols = model["columns"].as_array().unwrap();
    let x = |name: &str| match name {
        "(intercept)" => 1.0,
        "age" => 62.0,
        "male" => 1.0,
        "bmi" => 29.5,
        "sbp" => 142.0,
        "glucose" => 112.0,
        "ldl" => 131.0,
        "smoking[current]" => 1.0,
        _ => 0.0,
    };
    let lp: f64 = cols
        .iter()
        .enumerate()
        .map(|(j, n)| c[j].as_f64().unwrap() * x(n.as_str().unwrap()))
        .sum();
    assert!((hi - 1.0 / (1.0 + (-lp).exp())).abs() < 1e-12);
    // A bad person is refused with the path of the bad value.
    std::fs::write(
        &persons,
        r#"{"persons": [{"age": 62, "male": 1, "bmi": "fat"}]}"#,
    )
    .unwrap();
    let (okk, o, e) = medfed(&[
        "model",
        "score",
        "--hub-dir",
        &hub,
        &model_id,
        "--input",
        &s(&persons),
    ]);
    assert!(!okk && e.contains("$.persons[0].bmi"), "{o}{e}");
    // Applied at a node: only the released distribution of risk comes out.
    let dist = ok(&["model", "score", &s(&file), "--site", &s(&sites[0])]);
    assert!(
        dist.contains("\"auc\"") && dist.contains("calibration"),
        "{dist}"
    );
}

/// A regression under secure aggregation over the network: one hospital dies in the middle of the
/// first aggregation (after sharing its keys, before sending its masked sums). The hub waits out the
/// phase, unmasks the survivors' sum with the shares of the dead node's mask key, and fits over the
/// survivors: the same coefficients as a plain fit over those two hospitals. The hub's stored copy of
/// a survivor's masked sums is indistinguishable from random bits.
#[test]
fn secure_aggregation_over_https_survives_a_dropout_and_hides_each_sites_sums() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 20_000, 3);
    let mut net = Net::new(tmp.path(), &sites, false, None);
    net.start_node(0, &[]);
    net.start_node(1, &[]);
    net.start_node(2, &[("MEDFED_FAILPOINT", "node:secagg_masked")]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut study: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples.join("studies/risk-models.json")).unwrap(),
    )
    .unwrap();
    for (_, c) in study["cohorts"].as_object_mut().unwrap() {
        let f = examples.join("cohorts").join(
            c["file"]
                .as_str()
                .unwrap()
                .trim_start_matches("../cohorts/"),
        );
        *c = serde_json::json!({"file": s(&f)});
    }
    study["analyses"] = serde_json::json!([study["analyses"][0].clone()]);
    study["privacy"] = serde_json::json!({"secure_aggregation": true, "phase_timeout_s": 5});
    let file = tmp.path().join("secure.json");
    std::fs::write(&file, study.to_string()).unwrap();
    let id = net.submit(&file);
    let results = net.wait_complete(&id, 600);
    let r = &results["results"][0];
    let sites_json = r["sites"].to_string();
    assert!(
        r["notes"]
            .to_string()
            .contains("hospital_c left out of the fit")
            && r["notes"].to_string().contains("dropped out"),
        "{r}"
    );
    assert!(
        sites_json.contains("hospital_a") && sites_json.contains("hospital_c"),
        "{sites_json}"
    );
    let secure = &r["value"]["summary"];
    // The plain federated fit over the two survivors, in one process.
    study["privacy"] = serde_json::json!({});
    let plain_file = tmp.path().join("plain.json");
    std::fs::write(&plain_file, study.to_string()).unwrap();
    let out = tmp.path().join("plain");
    ok(&[
        "study",
        "run",
        &s(&plain_file),
        "--site",
        &s(&sites[0]),
        "--site",
        &s(&sites[1]),
        "--out",
        &s(&out),
    ]);
    let plain: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let plain = &plain["results"][0]["value"]["summary"];
    assert_eq!(secure["n"], plain["n"]);
    for (c, v) in plain["coefficients"].as_object().unwrap() {
        for k in ["estimate", "std_error"] {
            let (a, b) = (
                secure["coefficients"][c][k].as_f64().unwrap(),
                v[k].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() <= 1e-9 * b.abs(),
                "{c} {k}: secure {a} vs plain {b}"
            );
        }
    }
    // The hub's view of hospital_a: its masked sums, as stored, are uniform bits; its plain sums
    // (small numbers in fixed point: mostly zero high bits) appear nowhere.
    let mut db = net.db();
    let rows = db
        .query(
            "SELECT payload FROM results WHERE study_id = $1 AND node = 'hospital_a' AND payload LIKE '%\"phase\":\"masked\"%'",
            &[id.as_str().into()],
        )
        .unwrap();
    assert!(!rows.is_empty(), "no masked sums stored");
    let mut ones = 0u64;
    let mut bits = 0u64;
    for row in rows {
        let res: serde_json::Value = serde_json::from_str(row[0].text().unwrap()).unwrap();
        for v in masked_words(&res["outcome"]["message"]["masked"]["values"]) {
            ones += u64::from(v.count_ones());
            bits += 64;
        }
    }
    let share = ones as f64 / bits as f64;
    let sd = (0.25 / bits as f64).sqrt();
    assert!(
        (share - 0.5).abs() < 5.0 * sd,
        "{share} ones over {bits} bits"
    );
    // Nothing but keys, sealed shares, masked sums, revealed shares and one risk histogram left
    // hospital_a: no plain vector of sums.
    let a = net.audit(0);
    assert!(a.iter().all(|e| !e["payload"]
        .as_str()
        .unwrap_or("")
        .contains("\"type\":\"vector\"")));
    assert!(a
        .iter()
        .any(|e| e["detail"].as_str().unwrap_or("").contains("masked")));
}

/// The words of a masked vector as it travels (base64 of little-endian words).
fn masked_words(v: &serde_json::Value) -> Vec<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("masked values are base64"))
        .unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn surveillance_over_https_adds_counts_so_the_hub_never_holds_a_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 20_000, 3);
    let mut net = Net::new(tmp.path(), &sites, true, None);
    net.start_nodes(&[]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut study: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples.join("studies/surveillance.json")).unwrap(),
    )
    .unwrap();
    // Eight weeks of winter in 14-day chunks: four aggregations of four phases.
    let a = &mut study["analyses"][0];
    a["from"] = "2023-01-02".into();
    a["to"] = "2023-02-26".into();
    a["groups"] = serde_json::json!([
        "elderly",
        "child_u5",
        "medical_aid",
        "disability",
        "elderly_alone",
        "all"
    ]);
    let file = tmp.path().join("surveillance.json");
    std::fs::write(&file, study.to_string()).unwrap();
    let id = net.submit(&file);
    let results = net.wait_complete(&id, 900);
    let r = &results["results"][0];
    assert_eq!(r["type"], "surveillance", "{r}");
    assert_eq!(r["sites"].as_array().unwrap().len(), 3, "{r}");

    // 1. What the hub holds equals the sum of every site's counts, computed independently.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/surveil.py");
    let mut args = vec![s(&script), s(&file)];
    args.extend(sites.iter().map(|p| s(p)));
    let out = Command::new("python3").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_site: BTreeMap<String, BTreeMap<String, f64>> =
        serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for counts in per_site.values() {
        for (k, v) in counts {
            *expected.entry(k.clone()).or_default() += v;
        }
    }
    let geo = medfed_protocol::surveil::geography("kr_sigungu").unwrap();
    let (ng, nd) = (6, geo.len());
    let mut db = net.db();
    let rows = db
        .query(
            "SELECT day, counts, sites FROM surveil_days WHERE stream = 'syndromic' ORDER BY day",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 56, "one row per day");
    let mut held: BTreeMap<String, f64> = BTreeMap::new();
    for row in &rows {
        let day = medfed_protocol::surveil::day_string(row[0].int().unwrap());
        let cells: Vec<(usize, f64)> = serde_json::from_str(row[1].text().unwrap()).unwrap();
        for (i, v) in cells {
            let (k, rest) = (i / (ng * nd), i % (ng * nd));
            let (g, d) = (rest / nd, rest % nd);
            held.insert(format!("{k},{g},{},{day}", geo[d].code), v);
        }
        assert!(row[2].text().unwrap().contains("hospital_c"));
    }
    assert!(
        expected.len() > 500,
        "too few cases to test: {}",
        expected.len()
    );
    assert_eq!(
        held, expected,
        "network totals differ from DuckDB's sum over the sites"
    );

    // 2. No site's count of a district × group cell is anywhere in the hub's database: its answers
    // are keys, sealed shares, reveals, or masked vectors, and the masked vectors are compacted to
    // their digest once summed; the round state keeps no vector.
    let res = db
        .query(
            "SELECT payload FROM results WHERE study_id = $1",
            &[id.as_str().into()],
        )
        .unwrap();
    let (mut compacted, mut messages) = (0, 0);
    for row in &res {
        let v: serde_json::Value = serde_json::from_str(row[0].text().unwrap()).unwrap();
        if v.get("compacted").is_some() {
            compacted += 1;
            continue;
        }
        let phase = v["outcome"]["message"]["phase"].as_str().unwrap_or("");
        let text = row[0].text().unwrap();
        assert!(
            v["outcome"]["status"] == "secagg" && ["keys", "shares", "unmask"].contains(&phase),
            "an answer other than a protocol message reached the hub: {}",
            &text[..300.min(text.len())]
        );
        assert!(phase != "masked", "a masked vector was kept after the sum");
        messages += 1;
    }
    assert_eq!(
        compacted,
        3 * 4,
        "one masked vector per site per chunk, compacted"
    );
    assert_eq!(messages, 3 * 4 * 3);
    let state = db
        .query(
            "SELECT state FROM fits WHERE study_id = $1",
            &[id.as_str().into()],
        )
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(state[0][0].text().unwrap()).unwrap();
    assert!(state["secagg"].is_null(), "{state}");
    // Each node's audit log: the counts left only masked.
    for i in 0..3 {
        let log = net.audit(i);
        assert!(
            log.iter().any(|e| e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("sent only masked")),
            "{log:?}"
        );
        assert!(log.iter().all(|e| !e["payload"]
            .as_str()
            .unwrap_or("")
            .contains("aggregate_only")));
    }

    // 3. Published numbers respect the minimum count: national cells and the result's counts are
    // 0, at least 10, or withheld.
    let cells = db
        .query(
            "SELECT value FROM national_cells WHERE study_id = $1 AND statistic = 'cases'",
            &[id.as_str().into()],
        )
        .unwrap();
    assert!(!cells.is_empty());
    let mut withheld = 0;
    for c in &cells {
        match c[0].float() {
            Some(v) => assert!(v == 0.0 || v >= 10.0, "published {v}"),
            None => withheld += 1,
        }
    }
    let weekly_elderly_ili: f64 = expected
        .iter()
        .filter(|(k, _)| k.starts_with("0,0,"))
        .map(|(_, v)| v)
        .sum();
    let published: f64 = r["value"]["weekly"][0]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .sum();
    assert!(published <= weekly_elderly_ili);
    println!(
        "{} published cells, {withheld} withheld under the minimum count",
        cells.len()
    );
    for a in r["value"]["alerts"].as_array().unwrap() {
        if let Some(v) = a["observed"].as_f64() {
            assert!(v == 0.0 || v >= 10.0, "{a}");
        }
    }

    // 4. The detectors ran outside the store's lock: the study went `detecting`, then `complete`.
    let actions: Vec<String> = db
        .query(
            "SELECT action FROM audit WHERE detail = $1",
            &[id.as_str().into()],
        )
        .unwrap()
        .into_iter()
        .map(|r| r[0].text().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"study_detecting".to_string())
            && actions.contains(&"study_complete".to_string()),
        "{actions:?}"
    );
    // A hub stopped while they ran finishes the study when it starts again: put the database back
    // as the crash would have left it (study `detecting`, nothing published) and restart the hub.
    let count = |db: &mut Box<dyn Db>, table: &str| {
        db.query(
            &format!("SELECT COUNT(*) FROM {table} WHERE study_id = $1"),
            &[id.as_str().into()],
        )
        .unwrap()[0][0]
            .int()
            .unwrap()
    };
    let alerts = count(&mut db, "alerts");
    let published = count(&mut db, "national_cells");
    assert!(published > 0);
    net.hub.kill();
    for table in ["alerts", "national_cells", "national_statistics"] {
        db.execute(
            &format!("DELETE FROM {table} WHERE study_id = $1"),
            &[id.as_str().into()],
        )
        .unwrap();
    }
    db.execute(
        "UPDATE studies SET status = 'detecting', completed_at = 0 WHERE id = $1",
        &[id.as_str().into()],
    )
    .unwrap();
    net.start_hub(&[]);
    let again = net.wait_complete(&id, 600);
    assert_eq!(count(&mut db, "alerts"), alerts);
    assert_eq!(count(&mut db, "national_cells"), published);
    assert_eq!(
        again["results"][0]["value"]["weekly"], r["value"]["weekly"],
        "the restarted hub publishes the same totals"
    );
}

/// Genotype classes (hom A1, het, hom A2) and alleles of every variant in a PLINK `--hardy` report.
fn hardy(path: &Path) -> BTreeMap<String, (u64, u64, u64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !f[2].starts_with("ALL") {
                return None;
            }
            let g: Vec<u64> = f[5].split('/').map(|x| x.parse().unwrap()).collect();
            Some((
                f[1].to_string(),
                (g[0], g[1], g[2], f[3].into(), f[4].into()),
            ))
        })
        .collect()
}

/// A site's answer for a variant whose classes (hom alt, het, hom ref) PLINK counted, checked
/// against the policy: min cell 10, frequency level allowed.
fn check_answer(what: &str, a: &serde_json::Value, (hom, het, refs): (u64, u64, u64)) {
    let k = 10;
    let small = |n: u64| n > 0 && n < k;
    let carriers = hom + het;
    assert_eq!(a["typed"], true, "{what}: {a}");
    assert_eq!(a["exists"], carriers > 0, "{what}: {a}");
    if small(carriers) {
        assert!(a["carriers"].is_null(), "{what}: small count released: {a}");
        assert_eq!(a["withheld"]["rule"], "min_cell_count", "{what}: {a}");
    } else {
        assert_eq!(a["carriers"], carriers, "{what}: {a}");
    }
    if small(carriers) || small(hom) || small(het) || small(refs) {
        assert!(
            a["allele_count"].is_null() && a["hom_alt"].is_null(),
            "{what}: {a}"
        );
    } else {
        assert_eq!(a["allele_count"], 2 * hom + het, "{what}: {a}");
        assert_eq!(a["allele_number"], 2 * (hom + het + refs), "{what}: {a}");
        assert_eq!(
            (a["hom_alt"].clone(), a["het"].clone()),
            (hom.into(), het.into()),
            "{what}"
        );
    }
}

#[test]
fn beacon_over_https_equals_plink_and_holds_a_prober_to_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 3_000, 3);
    let policy = "min_cell_count = 10\n[analyses]\nbeacon = \"allow\"\n\
                  [beacon]\ngranularity = \"frequency\"\nrare_frequency = 0.05\nprobe_budget = 5\n";
    let mut net = Net::new(tmp.path(), &sites, false, Some(policy));
    let hub = s(&net.hub_dir);
    let out = ok(&["hub", "add-researcher", "--dir", &hub, "--name", "mallory"]);
    assert!(out.contains("researchers/mallory.token"), "{out}");
    let mallory = net.hub_dir.join("researchers/mallory.token");
    // Tokens are read when the hub starts.
    assert!(net.hub.terminate().success());
    net.start_hub(&[]);
    net.start_nodes(&[]);

    // PLINK 1.9 on each site and on the merged sites.
    let refdir = tmp.path().join("plink");
    std::fs::create_dir_all(&refdir).unwrap();
    let mut per_site = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let bfile = s(&site.join("genotypes/site"));
        super::gwas::plink(
            &refdir,
            &["--bfile", &bfile, "--hardy", "--out", &format!("s{i}")],
        );
        per_site.push(hardy(&refdir.join(format!("s{i}.hwe"))));
    }
    let list: String = sites
        .iter()
        .map(|p| format!("{}\n", p.join("genotypes/site").display()))
        .collect();
    std::fs::write(refdir.join("sites.txt"), list).unwrap();
    super::gwas::plink(
        &refdir,
        &["--merge-list", "sites.txt", "--hardy", "--out", "pooled"],
    );
    let pooled = hardy(&refdir.join("pooled.hwe"));
    let bim = std::fs::read_to_string(sites[0].join("genotypes/site.bim")).unwrap();
    let panel: Vec<(String, String, String, String, String)> = bim
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].into(),
                f[0].into(),
                f[3].into(),
                f[4].into(),
                f[5].into(),
            )
        })
        .collect();
    // A site's classes for alt = A1 (the .bim's A1, which PLINK's report also counts first).
    let classes = |site: usize, snp: &str| {
        let (h1, het, h2, _, _) = &per_site[site][snp];
        (*h1, *het, *h2)
    };
    let freq = |c: (u64, u64, u64)| (2 * c.0 + c.1) as f64 / (2 * (c.0 + c.1 + c.2)).max(1) as f64;
    let rare_everywhere = |snp: &str| (0..sites.len()).all(|i| freq(classes(i, snp)) < 0.05);
    let common: Vec<&(String, String, String, String, String)> = panel
        .iter()
        .filter(|v| (0..sites.len()).all(|i| freq(classes(i, &v.0)) > 0.2))
        .take(3)
        .collect();
    let rare: Vec<&(String, String, String, String, String)> = panel
        .iter()
        .filter(|v| rare_everywhere(&v.0))
        .take(8)
        .collect();
    assert_eq!((common.len(), rare.len()), (3, 8));
    let arg =
        |v: &(String, String, String, String, String)| format!("{}:{}:{}:{}", v.1, v.2, v.4, v.3);
    let beacon = |token: Option<&Path>, vars: &[&(String, String, String, String, String)]| {
        let mut a: Vec<String> = vec!["beacon".into(), "--hub-dir".into(), hub.clone()];
        if let Some(t) = token {
            a.extend(["--token-file".into(), s(t)]);
        }
        for v in vars {
            a.extend(["--variant".into(), arg(v)]);
        }
        a.extend(["--granularity".into(), "frequency".into(), "--json".into()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let r: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        assert_eq!(r["info"]["complete"], true, "{r}");
        r
    };

    // Common variants: every site's answer is PLINK's count under the policy, and the network's
    // allele count and number are PLINK's on the merged sites.
    let r = beacon(None, &common);
    assert_eq!(r["meta"]["returnedGranularity"], "aggregated", "{r}");
    assert_eq!(r["response"]["resultSets"].as_array().unwrap().len(), 3);
    for (j, v) in common.iter().enumerate() {
        let net_v = &r["info"]["network"]["variants"][j];
        for (i, (name, _)) in net.nodes.iter().enumerate() {
            let a = &net_v["sites"][i];
            assert_eq!(a[0], name.as_str());
            check_answer(&format!("{} at {name}", v.0), &a[1], classes(i, &v.0));
        }
        let (h1, het, h2, a1, _) = &pooled[&v.0];
        assert_eq!(a1, &v.3);
        if net_v["withheld"].as_array().unwrap().is_empty() {
            assert_eq!(net_v["carriers"], h1 + het, "{net_v}");
            assert_eq!(net_v["allele_count"], 2 * h1 + het, "{net_v}");
            assert_eq!(net_v["allele_number"], 2 * (h1 + het + h2), "{net_v}");
        }
    }
    // Beacon v2's GET form, from another HTTPS client (Python's), answers the same.
    let token = std::fs::read_to_string(net.hub_dir.join("researcher.token")).unwrap();
    let v = common[0];
    let url = format!(
        "{}/api/g_variants?referenceName={}&start={}&referenceBases={}&alternateBases={}&requestedGranularity=count",
        net.url(),
        v.1,
        v.2.parse::<u64>().unwrap() - 1,
        v.4,
        v.3
    );
    let py = "import json,ssl,sys,urllib.request as u\n\
              c=ssl.create_default_context(cafile=sys.argv[2])\n\
              r=u.Request(sys.argv[1],headers={'Authorization':'Bearer '+sys.argv[3]})\n\
              print(u.urlopen(r,context=c).read().decode())";
    let o = Command::new("python3")
        .args([
            "-c",
            py,
            &url,
            &s(&net.hub_dir.join("tls/cert.pem")),
            token.trim(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["meta"]["returnedGranularity"], "count", "{got}");
    assert_eq!(
        got["info"]["network"]["variants"][0]["carriers"],
        r["info"]["network"]["variants"][0]["carriers"],
        "{got}"
    );
    // The text form names every site.
    let text = ok(&["beacon", "--hub-dir", &hub, "--variant", &arg(common[0])]);
    for (name, _) in &net.nodes {
        assert!(text.contains(name.as_str()), "{text}");
    }

    // Mallory probes rare variants one by one: five are answered at every site, then none.
    let probe = |v| beacon(Some(&mallory), &[v]);
    for (j, v) in rare.iter().enumerate() {
        let r = probe(*v);
        let answers = &r["info"]["network"]["variants"][0]["sites"];
        for (i, (name, _)) in net.nodes.iter().enumerate() {
            let a = &answers[i][1];
            if j < 5 {
                check_answer(&format!("{} at {name}", v.0), a, classes(i, &v.0));
            } else {
                assert_eq!(
                    a["withheld"]["rule"], "probe_budget",
                    "probe {j} at {name}: {a}"
                );
                assert!(a["exists"].is_null() && a["carriers"].is_null(), "{a}");
            }
        }
        if j >= 5 {
            assert!(r["responseSummary"]["exists"].is_null(), "{r}");
        }
    }
    // A variant already charged is answered again; common variants stay free.
    let r = beacon(Some(&mallory), &[rare[0], common[0]]);
    for i in 0..net.nodes.len() {
        check_answer(
            "repeat",
            &r["info"]["network"]["variants"][0]["sites"][i][1],
            classes(i, &rare[0].0),
        );
        check_answer(
            "common",
            &r["info"]["network"]["variants"][1]["sites"][i][1],
            classes(i, &common[0].0),
        );
    }
    // Another researcher has a budget of their own.
    let r = beacon(None, &[rare[7]]);
    for i in 0..net.nodes.len() {
        check_answer(
            "ann",
            &r["info"]["network"]["variants"][0]["sites"][i][1],
            classes(i, &rare[7].0),
        );
    }
    // The budget outlives a restart of the nodes.
    net.runners.clear();
    net.start_nodes(&[]);
    let r = probe(rare[6]);
    for i in 0..net.nodes.len() {
        assert_eq!(
            r["info"]["network"]["variants"][0]["sites"][i][1]["withheld"]["rule"], "probe_budget",
            "{r}"
        );
    }
    // The hub knows who asked; the nodes' ledgers hold what each was charged, locally.
    let mut db = net.db();
    let who = db
        .query(
            "SELECT DISTINCT requester FROM studies ORDER BY requester",
            &[],
        )
        .unwrap();
    let who: Vec<String> = who.into_iter().map(|r| r[0].clone().into_text()).collect();
    assert_eq!(who, ["mallory", "researcher"]);
    let ledger = std::fs::read_to_string(net.nodes[0].1.join("state/beacon_probes")).unwrap();
    assert_eq!(
        ledger.lines().filter(|l| l.starts_with("mallory ")).count(),
        5,
        "{ledger}"
    );
    // A wrong token gets nothing.
    let bad = tmp.path().join("bad.token");
    std::fs::write(&bad, "not-a-token").unwrap();
    let (okay, _, err) = medfed(&[
        "beacon",
        "--hub-dir",
        &hub,
        "--token-file",
        &s(&bad),
        "--variant",
        &arg(common[0]),
    ]);
    assert!(!okay && err.contains("401"), "{err}");
}

#[test]
fn a_hub_made_before_requesters_and_node_sources_gains_the_columns_and_keeps_its_studies() {
    let tmp = tempfile::tempdir().unwrap();
    let path = s(&tmp.path().join("old.sqlite"));
    let mut old = medfed_hub::db::Sqlite::open(&path).unwrap();
    old.batch(
        "CREATE TABLE studies (id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, \
         submitted_at BIGINT NOT NULL, status TEXT NOT NULL, completed_at BIGINT NOT NULL DEFAULT 0);\
         INSERT INTO studies VALUES ('s1', 'old study', '{}', 1, 'complete', 2);\
         CREATE TABLE nodes (name TEXT PRIMARY KEY, public_key TEXT NOT NULL, \
         added_at BIGINT NOT NULL, last_seen BIGINT NOT NULL DEFAULT 0);\
         INSERT INTO nodes VALUES ('hospital_a', 'ab', 1, 0);",
    )
    .unwrap();
    drop(old);
    for _ in 0..2 {
        // Opening adds the column once; opening again changes nothing.
        let store =
            medfed_hub::store::Store::new(Box::new(medfed_hub::db::Sqlite::open(&path).unwrap()))
                .unwrap();
        drop(store);
        let mut db = medfed_hub::db::Sqlite::open(&path).unwrap();
        let rows = db
            .query("SELECT id, name, requester FROM studies", &[])
            .unwrap();
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| r.into_iter().map(|v| v.into_text()).collect())
            .collect();
        assert_eq!(rows, [["s1", "old study", "researcher"]]);
        // Nodes registered before nodes said what they serve held CDM stores.
        let rows = db.query("SELECT name, serves FROM nodes", &[]).unwrap();
        assert_eq!(rows[0][1].clone().into_text(), "cdm");
    }
}
