//! Consented profiles: a hospital's node derives categories for the persons who consented to a
//! service, from its CDM, and hands out a signed batch holding only categories and age bands under the
//! subjects they gave. Checked against DuckDB on the same Parquet; a withdrawal makes the next batch
//! tell the service to delete the profile; the vehicle service refuses a batch it cannot verify.

use std::collections::BTreeMap;

use super::{medfed, ok, population, s, Net};

/// A person's year of birth, and whether they have lung disease, cardiovascular disease, diabetes
/// and AF (any record of the concept set, with descendants).
type Truth = (i64, bool, bool, bool, bool);

/// Per person, from DuckDB on the site's Parquet.
fn duckdb_persons(site: &std::path::Path) -> BTreeMap<i64, Truth> {
    let script = r#"
import duckdb, json, sys
s = sys.argv[1]
t = lambda n: f"read_parquet('{s}/cdm/{n}.parquet')"
c = duckdb.connect()
def has(ids):
    return f"""person_id IN (SELECT person_id FROM {t('condition_occurrence')} WHERE condition_concept_id IN ({ids})
               OR condition_concept_id IN (SELECT descendant_concept_id FROM {t('concept_ancestor')} WHERE ancestor_concept_id IN ({ids})))"""
rows = c.execute(f"""SELECT person_id, year_of_birth, {has('255573, 317009')}, {has('4185932, 381591, 316139, 313217')},
                     {has('201820')}, {has('313217')} FROM {t('person')} ORDER BY person_id""").fetchall()
print(json.dumps(rows))
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, &s(site)])
        .output()
        .expect("python3 with duckdb");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<(i64, i64, bool, bool, bool, bool)> = serde_json::from_slice(&o.stdout).unwrap();
    rows.into_iter()
        .map(|(p, y, a, b, c, d)| (p, (y, a, b, c, d)))
        .collect()
}

/// `medfed node consent grant`: (succeeded, stdout, stderr).
fn grant(node: &str, person: i64, service: &str, subject: &str) -> (bool, String, String) {
    medfed(&[
        "node",
        "consent",
        "--dir",
        node,
        "grant",
        "--person",
        &person.to_string(),
        "--service",
        service,
        "--subject",
        subject,
    ])
}

fn band(age: i64) -> &'static str {
    match age {
        ..=19 => "0-19",
        20..=39 => "20-39",
        40..=64 => "40-64",
        65..=79 => "65-79",
        _ => "80+",
    }
}

#[test]
fn consented_profiles_carry_only_categories_match_duckdb_and_honour_withdrawal() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(tmp.path(), 800, 1);
    let net = Net::new(tmp.path(), &sites, false, None);
    let node = s(&net.nodes[0].1);
    let truth = duckdb_persons(&sites[0]);
    // Consenting persons: some with lung disease, some with cardiovascular disease or diabetes,
    // the oldest and the youngest, and others.
    let mut chosen: Vec<i64> = Vec::new();
    let mut pick = |f: &dyn Fn(&Truth) -> bool, n: usize| {
        for (p, t) in &truth {
            if chosen.len() >= 60 || !f(t) || chosen.contains(p) {
                continue;
            }
            chosen.push(*p);
            if chosen.iter().filter(|q| f(&truth[q])).count() >= n {
                break;
            }
        }
    };
    pick(&|t| t.1, 4);
    pick(&|t| t.2, 4);
    pick(&|t| t.3, 4);
    pick(&|t| t.0 <= 1955, 3);
    pick(&|t| t.0 >= 2022, 2);
    pick(&|t| !t.1 && !t.2 && !t.3, 4);
    assert!(chosen.len() >= 12, "{chosen:?}");
    let mut consents = BTreeMap::new();
    for (i, p) in chosen.iter().enumerate() {
        let vin = format!("KMHSM900{i:09}");
        for (service, subject) in [("vehicles", vin.clone()), ("city", format!("app-{i}"))] {
            let (okay, out, err) = grant(&node, *p, service, &subject);
            assert!(okay, "{err}");
            let id = out
                .split_whitespace()
                .nth(1)
                .unwrap()
                .trim_end_matches(':')
                .to_string();
            consents.insert((service, *p), (id, subject));
        }
    }
    // One person withdraws from the in-car service.
    let gone = chosen[0];
    let (gone_id, gone_vin) = consents[&("vehicles", gone)].clone();
    ok(&[
        "node",
        "consent",
        "--dir",
        &node,
        "withdraw",
        "--consent",
        &gone_id,
    ]);
    let (okay, _, err) = grant(&node, 1, "vehicles", &consents[&("vehicles", chosen[1])].1);
    assert!(!okay && err.contains("already has consent"), "{err}");
    let (okay, _, err) = grant(&node, 1, "insurer", "x");
    assert!(!okay && err.contains("unknown service"), "{err}");

    let year = 1970 + medfed_protocol::now() / 31_556_952;
    let mut node_key = None;
    for service in ["vehicles", "city"] {
        let out_file = tmp.path().join(format!("{service}.json"));
        let out = ok(&[
            "node",
            "profiles",
            "--dir",
            &node,
            "--service",
            service,
            "--out",
            &s(&out_file),
        ]);
        node_key = out
            .lines()
            .find_map(|l| l.split("public key: ").nth(1))
            .map(|k| k.trim().to_string());
        let signed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
        let payload = signed["payload"].as_str().unwrap();
        // Nothing but subjects, categories and age bands: no person id, no date, no concept.
        assert!(
            !payload.contains("person") && !payload.contains("concept"),
            "{payload}"
        );
        let batch: serde_json::Value = serde_json::from_str(payload).unwrap();
        let profiles = batch["profiles"].as_array().unwrap();
        let expected_n = if service == "vehicles" {
            chosen.len() - 1
        } else {
            chosen.len()
        };
        assert_eq!(profiles.len(), expected_n, "{service}");
        let with = profiles
            .iter()
            .filter(|p| !p["categories"].as_array().unwrap().is_empty())
            .count();
        assert!(with >= 3, "{service}: only {with} profiles with a category");
        for p in profiles {
            let subject = p["subject"].as_str().unwrap();
            let person = *consents
                .iter()
                .find(|(k, v)| k.0 == service && v.1 == subject)
                .unwrap()
                .0;
            let person = person.1;
            let (yob, lung, cvd, dm, af) = truth[&person];
            let age = year - yob;
            let mut want: Vec<&str> = if service == "vehicles" {
                [("atrial_fibrillation", af), ("chronic_lung_disease", lung)]
                    .into_iter()
                    .filter(|x| x.1)
                    .map(|x| x.0)
                    .collect()
            } else {
                [
                    ("respiratory", lung),
                    ("cardiovascular", cvd),
                    ("diabetes", dm),
                    ("elderly", age >= 65),
                    ("young_child", age <= 5),
                ]
                .into_iter()
                .filter(|x| x.1)
                .map(|x| x.0)
                .collect()
            };
            want.sort();
            let got: Vec<&str> = p["categories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(got, want, "{service} person {person}: {p}");
            assert_eq!(p["age_group"], band(age), "{p}");
        }
        let withdrawn: Vec<&str> = batch["withdrawn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        if service == "vehicles" {
            assert_eq!(withdrawn, [gone_vin.as_str()]);
        } else {
            assert!(withdrawn.is_empty());
        }
    }
    // Each batch is in the audit log, as sent.
    let audit = net.audit(0);
    assert_eq!(audit.iter().filter(|e| e["event"] == "profiles").count(), 2);

    // The vehicle service takes a batch only under the node's key.
    let batch = s(&tmp.path().join("vehicles.json"));
    let other = medfed_protocol::SecretKey::generate().public().to_hex();
    for (keys, want) in [
        (vec![], "needs the node's public key"),
        (vec!["--profiles-key", other.as_str()], "signature"),
    ] {
        let mut args = vec!["vehicles", "serve", "--state", "svc", "--profiles", &batch];
        args.extend(keys);
        let (okay, _, err) = medfed(&args);
        assert!(!okay && err.contains(want), "{want}: {err}");
    }
    // Under the node's key it is read (the service then waits for its broker; it is not started).
    let read = medfed_vehicles::service::read_profiles(
        std::path::Path::new(&batch),
        &[medfed_protocol::PublicKey::from_hex(node_key.as_deref().unwrap()).unwrap()],
    )
    .unwrap();
    assert_eq!(read.len(), chosen.len() - 1);
    assert!(!read.contains_key(&gone_vin));

    // The node pushes its city batch to a running city service (`medfed city serve`), which takes
    // it under the node's key.
    let city_batch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("city.json")).unwrap())
            .unwrap();
    let node_name =
        serde_json::from_str::<serde_json::Value>(city_batch["payload"].as_str().unwrap()).unwrap()
            ["node"]
            .as_str()
            .unwrap()
            .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let city_dir = tmp.path().join("city-service");
    let mut city = std::process::Command::new(env!("CARGO_BIN_EXE_medfed"))
        .args([
            "city",
            "serve",
            "--dir",
            &s(&city_dir),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--node-key",
            &format!("{node_name}={}", node_key.as_deref().unwrap()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "city service did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let pushed = medfed(&[
        "node",
        "profiles",
        "--dir",
        &node,
        "--service",
        "city",
        "--out",
        &s(&tmp.path().join("city-2.json")),
        "--push",
        &format!("https://127.0.0.1:{port}/v1/profiles"),
        "--push-ca",
        &s(&city_dir.join("cert.pem")),
    ]);
    let _ = city.kill();
    let _ = city.wait();
    assert!(pushed.0, "{}", pushed.2);
    assert!(
        pushed.1.contains(&format!("\"stored\":{}", chosen.len())),
        "{}",
        pushed.1
    );
}
