//! In-car emergency counts reach the national statistics database as a hospital's tables do: two
//! vehicle services' nodes answer `vehicle_events` from their events logs, over HTTPS, through the
//! release step, while the hospital's node answers only its CDM analyses. The pooled table is checked
//! against DuckDB over both logs, and each site's withheld cells against the policy.

use std::collections::BTreeMap;
use std::path::Path;

use super::{population, s, Net};

const DISTRICTS: [&str; 4] = ["Jongno-gu", "Mapo-gu", "Nowon-gu", "Gangnam-gu"];
const AGES: [&str; 3] = ["40-49", "60-69", "80+"];
const KINDS: [&str; 4] = ["asystole", "vf", "bradycardia", "af"];
/// 2026-03-01 00:00 KST in Unix milliseconds.
const MARCH_1_KST: i64 = 1_772_290_800_000;
const DAY: i64 = 86_400_000;

/// An events log as the vehicle service writes it: per event its prompt, then a cancel, a call and
/// acknowledgement, or advice; some lines twice (a sender retried); some events before the window.
/// Skewed so that some cells are large and some small.
fn write_log(dir: &Path, seed: u64, events: usize) {
    let mut x = seed;
    let mut next = |n: usize| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % n as u64) as usize
    };
    let mut out = String::new();
    for i in 0..events {
        let skew = |n: usize, r: usize| if r < 6 { 0 } else { r % n };
        let district = DISTRICTS[skew(DISTRICTS.len(), next(10))];
        let age = AGES[skew(AGES.len(), next(9))];
        let kind = KINDS[next(KINDS.len())];
        // Days −5..25 around 1 March; the study asks for 1..20 March.
        let onset = MARCH_1_KST + (next(30) as i64 - 5) * DAY + next(DAY as usize) as i64;
        let id = format!("{seed:x}-{i}");
        let line = |outcome: &str, at: i64| {
            serde_json::json!({
                "event_id": id, "vin": format!("KMHSM{seed:03}{i:09}"), "kind": kind,
                "kinds": [kind], "onset_ms": onset, "at_ms": at, "outcome": outcome,
                "district": district,
                "age_group": if age == "80+" && i % 7 == 0 { None } else { Some(age) },
            })
            .to_string()
        };
        out.push_str(&line("prompted", onset + 5_000));
        out.push('\n');
        let last = if kind == "af" {
            vec!["advised"]
        } else if next(8) == 0 {
            vec!["cancelled"]
        } else {
            vec!["called", "acknowledged"]
        };
        for o in last {
            let l = line(o, onset + 20_000);
            out.push_str(&l);
            out.push('\n');
            if next(5) == 0 {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("events.jsonl"), out).unwrap();
}

/// Per log, DuckDB's count of distinct decided events in the window by every combination of
/// district, age group and kind (`*` for a margin): `{cell key: count}`.
fn duckdb_cells(logs: &[&Path]) -> Vec<BTreeMap<Vec<String>, u64>> {
    let script = r#"
import duckdb, json, sys
out = []
for log in json.loads(sys.argv[1]):
    c = duckdb.connect()
    rows = c.execute(f"""
      WITH e AS (
        SELECT event_id, district, COALESCE(age_group, 'unknown') AS age, kind,
               (onset_ms + 9 * 3600000) // 86400000 AS kst_day
        FROM read_json('{log}/events.jsonl', format = 'newline_delimited',
             columns = {{event_id: 'VARCHAR', district: 'VARCHAR', age_group: 'VARCHAR',
                         kind: 'VARCHAR', onset_ms: 'BIGINT', outcome: 'VARCHAR'}})
        WHERE outcome IN ('called', 'advised'))
      SELECT CASE WHEN grouping(district) = 1 THEN '*' ELSE district END,
             CASE WHEN grouping(age) = 1 THEN '*' ELSE age END,
             CASE WHEN grouping(kind) = 1 THEN '*' ELSE kind END,
             COUNT(DISTINCT event_id)
      FROM e
      WHERE kst_day BETWEEN (DATE '2026-03-01' - DATE '1970-01-01')
                        AND (DATE '2026-03-20' - DATE '1970-01-01')
      GROUP BY CUBE (district, age, kind)""").fetchall()
    out.append([[a, b, k, n] for a, b, k, n in rows])
print(json.dumps(out))
"#;
    let list: Vec<String> = logs.iter().map(|p| s(p)).collect();
    let o = std::process::Command::new("python3")
        .args(["-c", script, &serde_json::to_string(&list).unwrap()])
        .output()
        .expect("python3 with duckdb (installed by scripts/test-all.sh)");
    assert!(
        o.status.success(),
        "duckdb reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Vec<Vec<(String, String, String, u64)>> = serde_json::from_slice(&o.stdout).unwrap();
    v.into_iter()
        .map(|rows| {
            rows.into_iter()
                .map(|(a, b, k, n)| (vec![a, b, k], n))
                .collect()
        })
        .collect()
}

/// The `car_events` analysis's pooled result.
fn car_events(results: &serde_json::Value) -> &serde_json::Value {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "car_events")
        .unwrap_or_else(|| panic!("no car_events in {results}"))
}

const STUDY: &str = r#"{"format": "medfed-study/1", "name": "in-car emergencies, March 2026",
  "analyses": [
    {"id": "persons", "type": "person_count", "domain": "condition", "concepts": [201826]},
    {"id": "car_events", "type": "vehicle_events", "from": "2026-03-01", "to": "2026-03-20"}]}"#;

#[test]
fn vehicle_events_reach_the_national_database_through_the_release_step() {
    let tmp = tempfile::tempdir().unwrap();
    let k = 5;
    let sites = population(tmp.path(), 600, 1);
    let mut net = Net::new(
        tmp.path(),
        &sites,
        true,
        Some(&format!(
            "min_cell_count = {k}\ndifferencing = false\n[analyses]\nperson_count = \"allow\"\nvehicle_events = \"allow\"\n"
        )),
    );
    let logs = [tmp.path().join("svc_a"), tmp.path().join("svc_b")];
    write_log(&logs[0], 11, 700);
    write_log(&logs[1], 12, 250);
    for (i, log) in logs.iter().enumerate() {
        net.add_vehicle_node(&format!("cars_{i}"), log, &tmp.path().join("policy.toml"));
    }
    net.start_nodes(&[]);
    let study = tmp.path().join("study.json");
    std::fs::write(&study, STUDY).unwrap();
    let id = net.submit(&study);
    let results = net.wait_complete(&id, 120);

    // Each analysis went only to the nodes that hold its data.
    let mut db = net.db();
    let rows = db
        .query(
            "SELECT analysis_id, node, outcome FROM results WHERE study_id = $1 ORDER BY analysis_id, node",
            &[id.as_str().into()],
        )
        .unwrap();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.into_text()).collect())
        .collect();
    let site = sites[0].file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(
        rows,
        [
            vec!["car_events", "cars_0", "released"],
            vec!["car_events", "cars_1", "released"],
            vec!["persons", site.as_str(), "released"],
        ]
    );

    // The pooled table against DuckDB on both logs, cell by cell, margins included.
    let truth = duckdb_cells(&[&logs[0], &logs[1]]);
    let r = car_events(&results);
    let table = &r["value"]["tables"][0];
    assert_eq!(
        table["dims"],
        serde_json::json!(["district", "age_group", "kind"])
    );
    let cells = table["cells"].as_array().unwrap();
    let mut keys = std::collections::BTreeSet::new();
    let (mut primary, mut whole) = (0, 0);
    for c in cells {
        let key: Vec<String> = serde_json::from_value(c["key"].clone()).unwrap();
        keys.insert(key.clone());
        let withheld: Vec<String> = c
            .get("withheld_at")
            .map(|w| serde_json::from_value(w.clone()).unwrap())
            .unwrap_or_default();
        let mut released = 0;
        for (i, t) in truth.iter().enumerate() {
            let n = t.get(&key).copied().unwrap_or(0);
            let name = format!("cars_{i}");
            if withheld.contains(&name) {
                assert!(n > 0, "{key:?} withheld at {name} but counts nothing");
                if n < k {
                    primary += 1;
                }
            } else {
                assert!(n == 0 || n >= k, "{key:?}: {n} < {k} released at {name}");
                released += n;
            }
        }
        let value = c["values"][0].as_f64().unwrap();
        assert_eq!(value, released as f64, "{key:?}: {c}");
        if withheld.is_empty() {
            whole += 1;
            let pooled: u64 = truth
                .iter()
                .map(|t| t.get(&key).copied().unwrap_or(0))
                .sum();
            assert_eq!(value, pooled as f64, "{key:?}");
        }
    }
    // Every non-empty cell of either log is in the table, and both rules were exercised.
    for t in &truth {
        for key in t.keys() {
            assert!(keys.contains(key), "{key:?} missing");
        }
    }
    assert!(
        primary > 0 && whole > 10,
        "{primary} small cells, {whole} whole"
    );
    let total = cells
        .iter()
        .find(|c| c["key"] == serde_json::json!(["*", "*", "*"]))
        .unwrap();
    let pooled_total: u64 = truth
        .iter()
        .map(|t| t[&vec!["*".into(), "*".into(), "*".into()]])
        .sum();
    assert_eq!(total["values"][0].as_f64(), Some(pooled_total as f64));

    // And the cells are in the national database, queryable by stratum.
    let n = db
        .query(
            "SELECT value FROM national_cells WHERE study_id = $1 AND analysis_id = 'car_events' \
             AND stratum = 'district=*;age_group=*;kind=*' AND statistic = 'events'",
            &[id.as_str().into()],
        )
        .unwrap();
    assert_eq!(
        n[0][0],
        medfed_hub::db::Val::F(Some(pooled_total as f64)),
        "{n:?}"
    );
    drop(db);

    // The vehicle node's audit log holds the release; a hospital analysis never reached it.
    let audit = net.audit(1);
    assert_eq!(audit.iter().filter(|e| e["event"] == "release").count(), 1);

    // A damaged log: the node refuses, naming the file and line, and the other service's counts
    // still arrive.
    let bad = logs[1].join("events.jsonl");
    let mut text = std::fs::read_to_string(&bad).unwrap();
    let lines = text.lines().count();
    text.push_str("{\"event_id\": \"x\", \"outcome\": 3}\n");
    std::fs::write(&bad, text).unwrap();
    let id2 = net.submit(&study);
    let results = net.wait_complete(&id2, 120);
    let r = car_events(&results);
    let b = r["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["site"] == "cars_1")
        .unwrap();
    assert_eq!(b["status"], "refused", "{r}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("events.jsonl line {}", lines + 1)),
        "{reason}"
    );
    assert!(!r["value"].is_null(), "cars_0 still answered: {r}");

    // A node needs a name and something to answer from.
    let (okay, _, err) = super::medfed(&[
        "node",
        "init",
        "--dir",
        &s(&tmp.path().join("nameless")),
        "--hub",
        &net.url(),
        "--vehicle-events",
        &s(&logs[0]),
        "--hub-ca",
        &s(&tmp.path().join("hub/tls/cert.pem")),
    ]);
    assert!(!okay && err.contains("--name"), "{err}");
}
