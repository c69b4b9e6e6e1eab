//! Federated regression end to end: `medfed study run` of the risk-model study over three synthetic
//! hospitals, checked against statsmodels on the pooled rows (tests/reference/model.py, GLM and
//! site-stratified PHReg), against the synthetic population's true coefficients, and against the
//! model disclosure rules.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::medfed;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn study_file() -> PathBuf {
    root().join("examples/studies/risk-models.json")
}

/// Three hospitals, 60,000 persons, everyone genotyped (so the causal variants can be covariates).
fn population(dir: &Path) -> Vec<PathBuf> {
    super::three_hospitals(dir, 60_000, 20, &["--genotyped-share", "1.0"])
}

fn run(study: &Path, sites: &[PathBuf], policy: Option<&Path>, out: &Path) -> Value {
    super::study_run_on(study, sites, policy, out)
}

fn result<'a>(results: &'a Value, id: &str) -> &'a Value {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result {id}"))
}

/// statsmodels on the pooled design matrices the sites write for themselves (`study`'s `analysis`).
fn statsmodels(study: &Path, analysis: &str, family: &str, sites: &[PathBuf], tmp: &Path) -> Value {
    let mut files = Vec::new();
    for (k, s) in sites.iter().enumerate() {
        let f = tmp.join(format!("{analysis}_{k}.csv"));
        let (ok, o, e) = medfed(&[
            "model",
            "features",
            study.to_str().unwrap(),
            "--analysis",
            analysis,
            "--site",
            s.to_str().unwrap(),
            "--out",
            f.to_str().unwrap(),
        ]);
        assert!(ok, "{o}{e}");
        files.push(f);
    }
    let o = Command::new("python3")
        .arg(root().join("crates/cli/tests/reference/model.py"))
        .arg(family)
        .args(&files)
        .output()
        .expect("python3 with statsmodels (installed by scripts/test-all.sh)");
    assert!(
        o.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn federated_models_equal_statsmodels_on_pooled_rows_and_recover_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(&tmp.path().join("pop"));
    let results = run(&study_file(), &sites, None, &tmp.path().join("out"));
    for (analysis, family) in [
        ("t2d_5y", "binomial"),
        ("mace_5y", "binomial"),
        ("mace_cox", "cox"),
    ] {
        let r = result(&results, analysis);
        let s = &r["value"]["summary"];
        assert!(s.is_object(), "{analysis}: no model: {r}");
        let reference = statsmodels(&study_file(), analysis, family, &sites, tmp.path());
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            reference["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(s["n"].as_f64().unwrap(), reference["n"].as_f64().unwrap());
        // Coefficients and standard errors: the pooled fit's, to 1e-6 relative.
        for (j, c) in columns.iter().enumerate() {
            let (b, se) = (
                s["coefficients"][c]["estimate"].as_f64().unwrap(),
                s["coefficients"][c]["std_error"].as_f64().unwrap(),
            );
            let (rb, rse) = (
                reference["params"][j].as_f64().unwrap(),
                reference["bse"][j].as_f64().unwrap(),
            );
            assert!(
                rel(b, rb) < 1e-6 || (b - rb).abs() < 1e-9,
                "{analysis} {c}: {b} vs statsmodels {rb}"
            );
            assert!(rel(se, rse) < 1e-6, "{analysis} {c}: se {se} vs {rse}");
        }
        let llf = s["log_likelihood"].as_f64().unwrap();
        assert!(
            rel(llf, reference["llf"].as_f64().unwrap()) < 1e-8,
            "{analysis} llf"
        );
        if family == "binomial" {
            // Evaluated across sites without pooling rows: AUC from pooled histograms (within its
            // stated bound of the exact one), calibration by decile, and per site.
            let ev = &s["evaluation"];
            let auc = ev["auc"].as_f64().unwrap();
            assert!((0.6..0.9).contains(&auc), "{analysis} AUC {auc}");
            assert!(ev["auc_bound"].as_f64().unwrap() < 0.05);
            assert_eq!(ev["per_site"].as_object().unwrap().len(), 3);
            let deciles = ev["calibration"].as_array().unwrap();
            assert!(deciles.len() >= 8);
            // A model fitted by maximum likelihood is calibrated on its own rows: each decile's
            // observed events are within chance of its expected ones.
            for g in deciles {
                let (o, e) = (
                    g["observed"].as_f64().unwrap(),
                    g["expected"].as_f64().unwrap(),
                );
                assert!(
                    (o - e).abs() < 4.0 * e.sqrt() + 5.0,
                    "{analysis} decile {g}"
                );
            }
        }
    }
    // The synthetic population's true coefficients: the same two models with the causal variants the
    // population plants (tests/model/truth.json), so that the model is the generating one. Each
    // coefficient, the intercept included, within 3.1 standard errors (95 % simultaneously over 26,
    // Bonferroni).
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("pop/ground_truth.json")).unwrap(),
    )
    .unwrap();
    let study = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/model/truth.json");
    let with_snps = run(&study, &sites, None, &tmp.path().join("truth"));
    for (analysis, truth_model) in [("t2d_5y", "t2d_inc"), ("mace_5y", "mace_inc")] {
        let s = &result(&with_snps, analysis)["value"]["summary"];
        let m = &truth["risk_models"][truth_model];
        for c in s["columns"].as_array().unwrap() {
            let c = c.as_str().unwrap();
            let t = match c {
                "(intercept)" => m["intercept"].as_f64().unwrap(),
                "smoking[current]" => m["coef"]["current_smoker"].as_f64().unwrap(),
                other => m["coef"][other].as_f64().unwrap_or(0.0),
            };
            let (b, se) = (
                s["coefficients"][c]["estimate"].as_f64().unwrap(),
                s["coefficients"][c]["std_error"].as_f64().unwrap(),
            );
            assert!(
                (b - t).abs() < 3.1 * se,
                "{analysis} {c}: {b} ± {se} does not cover the truth {t}"
            );
        }
    }
}

/// The Poisson family with its log person-years offset (outcome counts, drug and condition
/// covariates) and the Gaussian family on a measurement outcome with an L2 penalty, against the
/// pooled rows.
#[test]
fn rates_and_penalised_values_equal_the_pooled_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(&tmp.path().join("pop"));
    let study = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/model/rates-and-values.json");
    let results = run(&study, &sites, None, &tmp.path().join("out"));
    for (analysis, family) in [("mace_rate", "poisson"), ("sbp_2020", "gaussian:5")] {
        let s = &result(&results, analysis)["value"]["summary"];
        assert!(s.is_object(), "{analysis}: {results}");
        let reference = statsmodels(&study, analysis, family, &sites, tmp.path());
        assert_eq!(s["n"].as_f64().unwrap(), reference["n"].as_f64().unwrap());
        for (j, c) in s["columns"].as_array().unwrap().iter().enumerate() {
            let c = c.as_str().unwrap();
            let b = s["coefficients"][c]["estimate"].as_f64().unwrap();
            let rb = reference["params"][j].as_f64().unwrap();
            assert!(rel(b, rb) < 1e-6, "{analysis} {c}: {b} vs {rb}");
            if let Some(rse) = reference["bse"][j].as_f64() {
                let se = s["coefficients"][c]["std_error"].as_f64().unwrap();
                assert!(rel(se, rse) < 1e-6, "{analysis} {c}: se {se} vs {rse}");
            }
        }
    }
    // Hypertension raises the rate of cardiovascular events (synthetic truth: log odds ratio 0.3).
    let h = result(&results, "mace_rate")["value"]["summary"]["coefficients"]["hypertension"]
        ["estimate"]
        .as_f64()
        .unwrap();
    assert!(h > 0.0, "{h}");
}

#[test]
fn overparameterised_models_and_sites_with_few_events_release_no_sums() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(&tmp.path().join("pop"));
    // One regression with its cohorts inlined.
    let mut study: Value =
        serde_json::from_str(&std::fs::read_to_string(study_file()).unwrap()).unwrap();
    for (_, c) in study["cohorts"].as_object_mut().unwrap() {
        let file = root()
            .join("examples/studies")
            .join(c["file"].as_str().unwrap());
        *c = serde_json::json!({"circe": serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).unwrap()});
    }
    study["analyses"] = serde_json::json!([study["analyses"][0].clone()]);
    let file = tmp.path().join("t2d.json");
    std::fs::write(&file, study.to_string()).unwrap();
    for (name, policy, rule) in [
        // 9 parameters need 30,000 rows at each site under this ratio; no site has them.
        (
            "ratio",
            "max_parameter_ratio = 0.0003\ndefault = \"allow\"\n",
            "model_parameters",
        ),
        // Each site has a few hundred events: fewer than this minimum.
        (
            "events",
            "min_cell_count = 5000\ndefault = \"allow\"\n",
            "min_cell_count",
        ),
    ] {
        let p = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&p, policy).unwrap();
        let out = tmp.path().join(name);
        let results = run(&file, &sites, Some(&p), &out);
        let r = result(&results, "t2d_5y");
        assert!(r["value"].is_null(), "{name}: a model came out: {r}");
        let notes = r["notes"].to_string();
        assert!(notes.contains("withheld its sums"), "{name}: {notes}");
        // What left each node, read back from its audit log: the rule, and no numbers.
        for s in ["hospital_a", "hospital_b", "hospital_c"] {
            let log = std::fs::read_to_string(out.join("nodes").join(s).join("audit.log"))
                .unwrap_or_else(|_| panic!("{s} audit log"));
            let released: Vec<Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["event"] == "release")
                .collect();
            assert!(!released.is_empty(), "{s}: nothing answered");
            for e in released {
                let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
                let stat = &payload["outcome"]["statistic"];
                assert_eq!(stat["suppressed"]["rule"], rule, "{name} {s}: {stat}");
                assert_eq!(stat["kind"]["values"], serde_json::json!([]), "{s}: {stat}");
            }
        }
    }
}
