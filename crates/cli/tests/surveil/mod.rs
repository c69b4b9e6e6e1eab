//! Syndromic surveillance end to end in one process (`medfed surveil --site …`): three synthetic
//! hospitals, five years of daily counts added under secure aggregation, every detector run at the
//! hub and scored against the outbreaks the generator planted.

use super::{medfed, three_hospitals};

#[test]
fn detectors_find_the_planted_outbreaks_and_grouping_cuts_false_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = three_hospitals(tmp.path(), 100_000, 100, &[]);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut study: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples.join("studies/surveillance.json")).unwrap(),
    )
    .unwrap();
    // Fewer, larger aggregations: the same counts.
    study["analyses"][0]["chunk_days"] = 92.into();
    let file = tmp.path().join("surveillance.json");
    std::fs::write(&file, study.to_string()).unwrap();
    let out = tmp.path().join("out");
    let truth = tmp.path().join("ground_truth.json");
    let mut args = vec!["surveil", "--study", file.to_str().unwrap()];
    for s in &sites {
        args.extend(["--site", s.to_str().unwrap()]);
    }
    args.extend([
        "--truth",
        truth.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (ok, stdout, stderr) = medfed(&args);
    assert!(ok, "{stdout}\n{stderr}");
    println!("{stdout}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap())
            .unwrap();
    let scores = eval["syndromic"].as_array().unwrap();
    let get = |name: &str| scores.iter().find(|s| s["detector"] == name).unwrap();
    let grouped = get("grouped_alerts");
    let c2 = get("ears_c2");
    let n = grouped["outbreaks"].as_u64().unwrap();
    assert!(n >= 15, "{n} planted outbreaks in the evaluated window");
    assert!(
        grouped["sensitivity"].as_f64().unwrap() >= 0.9,
        "grouped alerts found {} of {n}",
        grouped["found"]
    );
    assert!(
        grouped["false_alarms"].as_u64().unwrap() < c2["false_alarms"].as_u64().unwrap(),
        "grouped {grouped} vs EARS C2 {c2}"
    );
    // The published result: alerts in results.json and alerts.csv, counts under the minimum.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let v = &results["results"][0]["value"];
    assert!(v["alerts_raised"].as_u64().unwrap() >= grouped["found"].as_u64().unwrap());
    for a in v["alerts"].as_array().unwrap() {
        if let Some(x) = a["observed"].as_f64() {
            assert!(x == 0.0 || x >= 10.0, "{a}");
        }
    }
    for w in v["weekly"].as_array().unwrap() {
        for c in w["counts"].as_array().unwrap() {
            if let Some(x) = c.as_f64() {
                assert!(x == 0.0 || x >= 10.0, "{w}");
            }
        }
    }
    let csv = std::fs::read_to_string(out.join("alerts.csv")).unwrap();
    assert!(csv.lines().count() > 1 && csv.starts_with("analysis,alert,raised"));
}
