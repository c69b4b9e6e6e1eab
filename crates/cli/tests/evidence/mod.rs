//! `medfed city evidence` end to end: a synthetic population whose district PM2.5 and heat drive
//! respiratory and cardiovascular visits, the daily counts added over three hospitals under secure
//! aggregation, and the fitted relative risks checked two ways: against the planted ones in the
//! ground truth, and against statsmodels' ConditionalPoisson on the pooled data counted
//! independently (`tests/reference/environment.py`).

use super::{medfed, three_hospitals};
use std::path::Path;
use std::process::Command;

#[test]
fn planted_environment_effects_are_recovered_from_federated_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = three_hospitals(tmp.path(), 100_000, 100, &[]);
    let out = tmp.path().join("evidence");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut args = vec!["city".to_string(), "evidence".to_string()];
    for site in &sites {
        args.extend(["--site".to_string(), s(site)]);
    }
    args.extend(["--out".to_string(), s(&out)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = medfed(&args);
    assert!(ok, "{stdout}\n{stderr}");
    println!("{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evidence.json")).unwrap()).unwrap();

    // 1. The planted relative risks (and the absent ones) lie inside the 95% intervals, and the
    //    intervals are narrow enough to mean something.
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{r}");
    for c in checks {
        assert_eq!(c["inside"], true, "{c}");
    }
    let est = |o: &str, e: &str| {
        r["evidence"]["estimates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["outcome"] == o && x["exposure"] == e)
            .unwrap()
            .clone()
    };
    let width = |x: &serde_json::Value| x["hi"].as_f64().unwrap() - x["lo"].as_f64().unwrap();
    let pm = est("respiratory", "pm25");
    assert!(width(&pm) < 0.03, "{pm}");
    assert!(
        pm["lo"].as_f64().unwrap() > 1.0,
        "PM2.5 effect not detected: {pm}"
    );
    let heat = est("cardiovascular", "tmax");
    assert!(width(&heat) < 0.06, "{heat}");
    assert!(
        heat["lo"].as_f64().unwrap() > 1.0,
        "heat effect not detected: {heat}"
    );
    let t = &r["evidence"]["threshold"];
    let (lo, hi) = (t["lo"].as_f64().unwrap(), t["hi"].as_f64().unwrap());
    assert!(lo <= 28.0 && 28.0 <= hi, "planted threshold 28 outside {t}");
    assert!(hi - lo <= 5.0, "{t}");
    // The lag structure: lags 0-2 carry the effect, lags 3-5 hold 1.
    let lags = r["evidence"]["pm_lags"].as_array().unwrap();
    for l in &lags[..3] {
        assert!(l["lo"].as_f64().unwrap() > 1.0, "{l}");
    }
    for l in &lags[3..6] {
        assert!(
            l["lo"].as_f64().unwrap() <= 1.0 && l["hi"].as_f64().unwrap() >= 1.0,
            "{l}"
        );
    }
    // The curves follow the truth: at the 90th-percentile end of the PM2.5 curve the planted RR
    // is inside the band.
    let curves = r["evidence"]["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 2);
    let c = &curves[0];
    let reference = c["reference"].as_f64().unwrap();
    for p in c["points"].as_array().unwrap() {
        let x = p["x"].as_f64().unwrap();
        let planted = (1.06f64.ln() / 10.0 * (x - reference)).exp();
        assert!(
            p["lo"].as_f64().unwrap() - 0.01 <= planted
                && planted <= p["hi"].as_f64().unwrap() + 0.01,
            "PM2.5 curve at {x}: planted {planted}, {p}"
        );
    }

    // 2. The same model on the pooled data, counted by DuckDB from the sites' Parquet and fitted by
    //    statsmodels, gives the same estimates and standard errors.
    let thr = t["best"].as_f64().unwrap().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/environment.py");
    let study =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/studies/environment.json");
    let mut py = vec![
        s(&script),
        s(&study),
        s(&tmp.path().join("environment.csv")),
        thr,
    ];
    py.extend(sites.iter().map(|p| s(p)));
    let o = Command::new("python3").args(&py).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (outcome, expo, k) in [
        ("respiratory", "pm25", 0),
        ("respiratory", "tmax", 1),
        ("cardiovascular", "pm25", 0),
        ("cardiovascular", "tmax", 1),
    ] {
        let ours = est(outcome, expo);
        let theirs = &reference[outcome];
        assert_eq!(ours["cases"], theirs["cases"], "{outcome}: counts differ");
        assert_eq!(ours["days"], theirs["rows"], "{outcome}");
        assert_eq!(ours["strata"], theirs["strata"], "{outcome}");
        let b = theirs["beta"][k].as_f64().unwrap();
        let se = theirs["se_model"][k].as_f64().unwrap() * theirs["phi"].as_f64().unwrap().sqrt();
        let (ob, ose) = (ours["beta"].as_f64().unwrap(), ours["se"].as_f64().unwrap());
        assert!(
            (ob - b).abs() < 1e-6 + 1e-5 * b.abs(),
            "{outcome} {expo}: beta {ob} vs statsmodels {b}"
        );
        assert!(
            (ose - se).abs() < 1e-4 * se,
            "{outcome} {expo}: se {ose} vs statsmodels {se}"
        );
    }

    // 3. The report shows the curves.
    let html = std::fs::read_to_string(out.join("evidence.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "two curves and the lag plot"
    );
}

#[test]
fn a_bad_environment_row_is_quarantined_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = three_hospitals(tmp.path(), 3_000, 50, &[]);
    let env = tmp.path().join("environment.csv");
    let text = std::fs::read_to_string(&env).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // File line 6: a date that does not exist; line 8: a PM2.5 that is not a number.
    lines[5] = format!(
        "{},2020-02-31,10.0,3.0",
        lines[5].split(',').next().unwrap()
    );
    lines[7] = {
        let f: Vec<&str> = lines[7].split(',').collect();
        format!("{},{},lots,{}", f[0], f[1], f[3])
    };
    std::fs::write(&env, lines.join("\n") + "\n").unwrap();
    let out = tmp.path().join("evidence");
    let (ok, stdout, stderr) = medfed(&[
        "city",
        "evidence",
        "--site",
        sites[0].to_str().unwrap(),
        "--site",
        sites[1].to_str().unwrap(),
        "--site",
        sites[2].to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 rows of"), "{stdout}");
    let q = std::fs::read_to_string(out.join("quarantine.csv")).unwrap();
    assert!(q.contains(",6,date,2020-02-31,"), "{q}");
    assert!(q.contains(",8,pm25,lots,"), "{q}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evidence.json")).unwrap()).unwrap();
    assert_eq!(r["quarantined"], 2);

    // One site is not a network.
    let (ok, _, stderr) = medfed(&["city", "evidence", "--site", sites[0].to_str().unwrap()]);
    assert!(!ok && stderr.contains("at least two sites"), "{stderr}");
}
