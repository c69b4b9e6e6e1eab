//! The real `medfed` binary, end to end.

mod catalog;
mod cohort;
mod evidence;
mod gwas;
mod model;
mod network;
mod surveil;
mod vehicles;

use std::path::Path;
use std::process::Command;

fn medfed(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medfed"))
        .args(args)
        .output()
        .expect("run medfed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "demo",
        "import",
        "sql",
        "synth",
        "hub",
        "node",
        "study",
        "hub init",
        "hub serve",
        "hub add-node",
        "node init",
        "node run",
        "node approve",
        "node audit",
        "study submit",
        "study run",
        "study results",
        "study status",
        "cohort generate",
        "model",
        "model list",
        "model export",
        "model score",
        "model features",
        "surveil",
        "vehicles",
        "vehicles serve",
        "vehicles simulate",
        "vehicles evaluate",
        "vehicles stats",
        "emergency-center",
        "city",
        "city indices",
        "city forecast",
        "city quality",
        "city serve",
        "city evidence",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let (ok, out, _) = medfed(&args);
        assert!(ok && out.contains("Usage: medfed"), "{cmd} --help: {out}");
    }
}

#[test]
fn demo_builds_a_population_and_a_report_then_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = out.to_str().unwrap();
    let (ok, stdout, stderr) =
        medfed(&["demo", "--persons", "4000", "--hospitals", "3", "--out", o]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("building a synthetic population"));
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("<svg")
            && report.contains("hospital_c")
            && report.contains("Planted outbreaks")
    );
    // Pooled person count in the report equals the sum of the site stores.
    let total: u64 = ["hospital_a", "hospital_b", "hospital_c"]
        .iter()
        .map(|s| medfed_rows(&out.join("population").join(s)))
        .sum();
    assert_eq!(total, 4000);
    assert!(report.contains("3 hospitals, 4000 persons"));
    // The network ran: results.json from the hub, with every analysis of the standard study, each
    // site's status, and the report's cross-check against the stores.
    assert!(report.contains("Network study: pooled results"));
    // The risk models were fitted in rounds through the same network and reported.
    assert!(
        report.contains("Predicting major diseases"),
        "no model section"
    );
    let models: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/models/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(models["results"].as_array().unwrap().len(), 3);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results/results.json")).unwrap())
            .unwrap();
    let rs = results["results"].as_array().unwrap();
    assert_eq!(rs.len(), 11);
    for r in rs {
        assert_eq!(r["sites"].as_array().unwrap().len(), 3, "{r}");
        if r["notes"].as_array().unwrap().is_empty() {
            let v = r["value"].as_u64().unwrap();
            assert!(report.contains(&format!("{v} ✓")), "{r}");
        }
    }
    // Every node's audit log verifies and holds one answer per analysis; nothing is left running.
    for s in ["hospital_a", "hospital_b", "hospital_c"] {
        let (ok, a, _) = medfed(&[
            "node",
            "audit",
            "--dir",
            out.join("network/nodes").join(s).to_str().unwrap(),
        ]);
        // 16 analyses of the first two studies, and at least one round of each of the 3 models.
        let sent: u64 = a
            .split(" sent to the hub")
            .next()
            .and_then(|x| x.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(ok && sent >= 22 + 3, "{a}");
    }
    // Five years of syndromic surveillance ran through the same network under secure aggregation,
    // with its section in the report: epidemic curves, the district map, alerts by group.
    for section in [
        "Syndromic surveillance of vulnerable groups",
        "Epidemic curves",
        "Districts with alerts",
        "Alerts by vulnerable group",
        "Detectors against the planted outbreaks",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    let surveil: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/surveillance/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(surveil["results"][0]["type"], "surveillance");
    assert_eq!(surveil["results"][0]["sites"].as_array().unwrap().len(), 3);
    // The GWAS ran through the same network: its section, and PLINK files (or, at this size, the
    // reason a site withheld its tables).
    assert!(
        report.contains("federated genome-wide association"),
        "no GWAS section"
    );
    let gwas: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/gwas/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(gwas["results"].as_array().unwrap().len(), 2);
    for r in gwas["results"].as_array().unwrap() {
        assert_eq!(r["type"], "gwas");
        assert_eq!(r["sites"].as_array().unwrap().len(), 3, "{r}");
    }
    // Beacon look-ups: the clinician's answers, and the prober stopped at hospital_a's budget of
    // 50 distinct rare variants (all 60 asked are rare there).
    // The in-car step: calls at the 119 centre, the evaluation, the released counts.
    for section in [
        "In-car emergencies: detection and 119 calls",
        "Calls received by the 119 centre",
        "simulated driving hours",
        "Event counts in the national statistics",
        "Consented profiles.",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    // The city step: indices on the Seoul years, the outlook, alert quality, and the live service.
    for section in [
        "Healthcare smart city: air quality, heat and personal warnings",
        "CAI over time",
        "The 24-hour outlook",
        "Alert quality on the Seoul years",
        "The city service, live",
        "Evidence for the thresholds: visits against district PM2.5 and heat",
        "exposure–response (blue, 95% band",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    // The evidence was fitted on the environment stream's totals at the hub.
    let ev: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("city/evidence/evidence.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ev["evidence"]["estimates"].as_array().unwrap().len(),
        4,
        "{ev}"
    );
    assert_eq!(ev["checks"].as_array().unwrap().len(), 4, "{ev}");
    assert!(
        report.contains("sent them 0 messages afterwards"),
        "the withdrawn citizen got nothing"
    );
    let hourly = std::fs::read_to_string(out.join("city/seoul-hourly.csv")).unwrap();
    assert_eq!(hourly.lines().count(), 1 + 43_824);
    let city_db = out.join("city/service/city.db");
    assert!(city_db.exists());
    let calls: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/vehicles/calls.json")).unwrap(),
    )
    .unwrap();
    assert!(calls.as_array().unwrap().len() >= 4, "{calls}");
    // The counts reached the hub from the vehicle service's own node (and from no hospital's), and
    // the national total is the number of decided events in its log, or withheld under k = 5.
    let national: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/vehicle_events/results.json")).unwrap(),
    )
    .unwrap();
    let r = &national["results"][0];
    assert_eq!(r["type"], "vehicle_events", "{national}");
    assert_eq!(r["sites"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["sites"][0]["site"], "vehicle_service", "{r}");
    let log = medfed_protocol::vehicles::read_events(&out.join("vehicles/service")).unwrap();
    let decided: std::collections::BTreeSet<&str> = log
        .iter()
        .filter(|e| e.outcome == "called" || e.outcome == "advised")
        .map(|e| e.event_id.as_str())
        .collect();
    let total = r["value"]["tables"][0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == serde_json::json!(["*", "*", "*"]))
        .unwrap_or_else(|| panic!("no total: {r}"));
    if decided.len() >= 5 {
        assert_eq!(
            total["values"][0].as_f64(),
            Some(decided.len() as f64),
            "{total}"
        );
    } else {
        assert!(total.get("withheld_at").is_some(), "{total}");
    }
    for section in [
        "Variant look-ups (GA4GH Beacon v2)",
        "A prober held to the budget",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    let lookups: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/beacon/lookups.json")).unwrap(),
    )
    .unwrap();
    let asked = lookups["clinician"]["info"]["network"]["variants"]
        .as_array()
        .unwrap();
    assert_eq!(asked.len(), 3, "{lookups}");
    assert_eq!(asked[0]["exists"], true, "rs_causal1: {}", asked[0]);
    assert_eq!(
        (asked[2]["exists"].clone(), asked[2]["sites_typed"].clone()),
        (false.into(), 0.into())
    );
    let probes = lookups["prober"]["info"]["network"]["variants"]
        .as_array()
        .unwrap();
    assert_eq!(probes.len(), 60);
    let at_a = |rule: Option<&str>| {
        probes
            .iter()
            .filter(|v| {
                let a = &v["sites"][0][1];
                match rule {
                    Some(r) => a["withheld"]["rule"] == r,
                    None => !a["exists"].is_null(),
                }
            })
            .count()
    };
    assert_eq!((at_a(None), at_a(Some("probe_budget"))), (50, 10));
    // The R&D catalog ran through the same network and its plots are in the report.
    let catalog: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/catalog/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(catalog["results"].as_array().unwrap().len(), 11);
    for section in [
        "Age and sex at first observation",
        "Top conditions",
        "Kaplan–Meier",
        "GI bleeding during NSAID courses",
        "Comparative cohort study",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    assert!(out.join("results/catalog/results.parquet").exists());
    let hub_addr = std::fs::read_to_string(out.join("network/hub/hub.addr")).unwrap();
    assert!(
        std::net::TcpStream::connect(hub_addr.trim()).is_err(),
        "the demo stopped its hub"
    );
    let (ok, stdout, _) = medfed(&["demo", "--persons", "4000", "--hospitals", "3", "--out", o]);
    assert!(ok && stdout.contains("reusing the population"));
}

/// `medfed sql --format csv` on a site: the data lines.
fn site_sql(site: &Path, q: &str) -> Vec<String> {
    let (ok, out, err) = medfed(&[
        "sql",
        "--site",
        site.to_str().unwrap(),
        "--format",
        "csv",
        q,
    ]);
    assert!(ok, "{err}");
    out.lines().skip(1).map(str::to_string).collect()
}

fn medfed_rows(site: &Path) -> u64 {
    site_sql(site, "SELECT COUNT(*) AS n FROM person")[0]
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn import_reports_counts_and_sql_answers_in_three_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eunomia_gibleed");
    let site = tmp.path().join("gib");
    let (ok, stdout, stderr) = medfed(&[
        "import",
        "--cdm",
        data.to_str().unwrap(),
        "--out",
        site.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("observation_period") && stdout.contains("2649"),
        "{stdout}"
    );
    assert!(stdout.contains("rows quarantined"));
    let s = site.to_str().unwrap();
    let q = "SELECT COUNT(DISTINCT person_id) AS n FROM condition_occurrence WHERE condition_concept_id = 192671";
    let (_, table, _) = medfed(&["sql", "--site", s, q]);
    assert!(table.contains("| 479 |"), "{table}");
    let (_, csv, _) = medfed(&["sql", "--site", s, "--format", "csv", q]);
    assert_eq!(csv.trim(), "n\n479");
    let (_, json, _) = medfed(&["sql", "--site", s, "--format", "json", q]);
    assert_eq!(json.trim(), r#"[{"n":479}]"#);
    // A bad query is an error with a message, not a panic.
    let (ok, _, err) = medfed(&["sql", "--site", s, "SELECT nope FROM person"]);
    assert!(
        !ok && err.contains("error:") && err.contains("nope"),
        "{err}"
    );
    let (ok, _, err) = medfed(&["sql", "--site", tmp.path().to_str().unwrap(), "SELECT 1"]);
    assert!(!ok && err.contains("is not a site store"), "{err}");
}

#[test]
fn import_takes_genotypes_from_a_vcf_with_an_id_map() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let cdm = data.join("eunomia_gibleed");
    let vcf = data.join("kg1000_chr1_region/example.vcf.gz");
    // Without a map, the 1000 Genomes sample ids are not person_ids: refused, no store made.
    let bad = tmp.path().join("bad");
    let (ok, _, err) = medfed(&[
        "import",
        "--cdm",
        cdm.to_str().unwrap(),
        "--vcf",
        vcf.to_str().unwrap(),
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("HG00096") && err.contains("--vcf-ids"),
        "{err}"
    );
    assert!(!bad.exists());
    // The first 300 samples mapped to Eunomia persons 1..=300.
    let samples: Vec<String> = std::fs::read_to_string(data.join("kg1000_chr1_region/kg_chr1.fam"))
        .unwrap()
        .lines()
        .take(300)
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let map: String = samples
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s}\t{}\n", i + 1))
        .collect();
    let ids = tmp.path().join("ids.tsv");
    std::fs::write(&ids, map).unwrap();
    let site = tmp.path().join("site");
    let (ok, out, err) = medfed(&[
        "import",
        "--cdm",
        cdm.to_str().unwrap(),
        "--vcf",
        vcf.to_str().unwrap(),
        "--vcf-ids",
        ids.to_str().unwrap(),
        "--out",
        site.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("2504 samples (300 kept, 2204 not in --vcf-ids)")
            && out.contains("4296 variants"),
        "{out}"
    );
    let bed = medfed_genomics::Bed::open(&site.join("genotypes/site")).unwrap();
    assert_eq!((bed.samples.len(), bed.variants.len()), (300, 4296));
    assert_eq!(bed.samples[0].iid, "1");
    // The store's manifest covers the genotype files.
    let toml = std::fs::read_to_string(site.join("site.toml")).unwrap();
    assert!(toml.contains("genotypes/site.bed"), "{toml}");
}

/// OHDSI's Eunomia GiBleed CDM imported into `root/eunomia`.
pub fn eunomia_site(root: &Path) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eunomia_gibleed");
    let site = root.join("eunomia");
    let (ok, out, err) = medfed(&[
        "import",
        "--cdm",
        data.to_str().unwrap(),
        "--out",
        site.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    site
}

/// `medfed study run STUDY --site SITE --out OUT`, which must succeed; returns results.json.
fn study_run(study: &Path, site: &Path, out: &Path) -> serde_json::Value {
    study_run_with(study, &[site.to_str().unwrap()], None, out)
}

/// `medfed study run` over sites as given (folders or postgres:// URLs) with an optional policy
/// file; must succeed; returns results.json.
/// A synthetic population of three hospitals in `dir` (`extra`: more `medfed synth` flags).
fn three_hospitals(dir: &Path, persons: u32, snps: u32, extra: &[&str]) -> Vec<std::path::PathBuf> {
    let (persons, snps) = (persons.to_string(), snps.to_string());
    let mut args = vec![
        "synth",
        "--persons",
        &persons,
        "--hospitals",
        "3",
        "--snps",
        &snps,
    ];
    args.extend(extra);
    args.extend(["--out", dir.to_str().unwrap()]);
    let (ok, o, e) = medfed(&args);
    assert!(ok, "{o}{e}");
    ["hospital_a", "hospital_b", "hospital_c"]
        .iter()
        .map(|h| dir.join(h))
        .collect()
}

/// `study_run_with` over site folders.
fn study_run_on(
    study: &Path,
    sites: &[std::path::PathBuf],
    policy: Option<&Path>,
    out: &Path,
) -> serde_json::Value {
    let sites: Vec<&str> = sites.iter().map(|s| s.to_str().unwrap()).collect();
    study_run_with(study, &sites, policy, out)
}

fn study_run_with(
    study: &Path,
    sites: &[&str],
    policy: Option<&Path>,
    out: &Path,
) -> serde_json::Value {
    let mut args = vec!["study", "run", study.to_str().unwrap()];
    for s in sites {
        args.extend(["--site", s]);
    }
    if let Some(p) = policy {
        args.extend(["--policy", p.to_str().unwrap()]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    let (ok, o, e) = medfed(&args);
    assert!(ok, "{o}{e}");
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn study_run_on_eunomia_gives_the_reference_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let site = eunomia_site(tmp.path());
    let study =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/studies/eunomia-gi-bleed.json");
    let out_dir = tmp.path().join("out");
    let r = study_run(&study, &site, &out_dir);
    // The same results as a Parquet table, read back by an independent reader (DuckDB).
    let pq = out_dir.join("results.parquet");
    let o = std::process::Command::new("python3")
        .args(["-c", "import duckdb,sys; print(duckdb.connect().execute(f\"SELECT string_agg(analysis_id || '=' || CAST(value AS BIGINT), ',' ORDER BY analysis_id) FROM read_parquet('{sys.argv[1]}') WHERE statistic = 'count'\").fetchone()[0])", pq.to_str().unwrap()])
        .output()
        .expect("python3 with duckdb (installed by scripts/test-all.sh)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "n_celecoxib=1844,n_diclofenac=850,n_gib=479,n_gib_cohort=479"
    );
    // REFERENCE_COUNTS.txt: GI bleed 479, celecoxib 1844, diclofenac 850.
    let values: Vec<u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_u64().unwrap())
        .collect();
    assert_eq!(values, vec![479, 1844, 850, 479], "{r}");
    assert_eq!(r["results"][0]["sites"][0]["status"], "released");
    // The in-process node kept an audit log like any other node.
    let (ok, out, _) = medfed(&[
        "node",
        "audit",
        "--dir",
        out_dir.join("nodes").join("eunomia").to_str().unwrap(),
    ]);
    assert!(ok && out.contains("4 sent to the hub"), "{out}");
}

#[test]
fn a_cohort_the_node_cannot_run_is_refused_with_the_json_path() {
    let tmp = tempfile::tempdir().unwrap();
    let site = eunomia_site(tmp.path());
    let study = tmp.path().join("s.json");
    std::fs::write(
        &study,
        r#"{"format":"medfed-study/1","name":"adjusted",
            "cohorts":{"dev":{"circe":{"ConceptSets":[],"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"ProviderSpecialty":[{"CONCEPT_ID":38004446}]}}]}}}},
            "analyses":[{"id":"n_dev","type":"cohort_count","cohort":"dev"}]}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let r = study_run(&study, &site, &out);
    let s = &r["results"][0]["sites"][0];
    assert_eq!(s["status"], "refused");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.ProviderSpecialty"),
        "{s}"
    );
    // A study naming a cohort it does not define is refused before anything runs.
    std::fs::write(&study, r#"{"format":"medfed-study/1","name":"x","analyses":[{"id":"a","type":"cohort_count","cohort":"nope"}]}"#).unwrap();
    let (ok, _, e) = medfed(&[
        "study",
        "run",
        study.to_str().unwrap(),
        "--site",
        site.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && e.contains("$.analyses[0].cohort"), "{e}");
}

/// Attack: two person counts whose person sets differ by a handful of people (a broad query and the
/// same query without its youngest patients). The second is withheld by the node, which keeps the
/// person sets of what it released; an identical repeat is still answered.
#[test]
fn differencing_attack_is_blocked_at_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let site = eunomia_site(tmp.path());
    // Ages at the first GI bleed, youngest first: find an age t with 1..=9 persons younger than t.
    let ages: Vec<i64> = site_sql(
        &site,
        "SELECT EXTRACT(YEAR FROM MIN(c.condition_start_date)) - p.year_of_birth AS age FROM condition_occurrence c \
         JOIN person p ON p.person_id = c.person_id WHERE c.condition_concept_id IN \
         (SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id = 192671) \
         GROUP BY c.person_id, p.year_of_birth ORDER BY age",
    )
    .iter()
        .map(|l| l.trim().parse::<f64>().unwrap() as i64)
        .collect();
    assert_eq!(ages.len(), 479);
    let t = (ages[0] + 1..130)
        .find(|t| (1..=9).contains(&ages.iter().filter(|a| **a < *t).count()))
        .unwrap();
    let younger = ages.iter().filter(|a| **a < t).count();
    let study = tmp.path().join("s.json");
    std::fs::write(&study, format!(
        r#"{{"format":"medfed-study/1","name":"differencing",
            "analyses":[{{"id":"all","type":"person_count","domain":"condition","concepts":[192671]}},
                        {{"id":"again","type":"person_count","domain":"condition","concepts":[192671]}},
                        {{"id":"older","type":"person_count","domain":"condition","concepts":[192671],"age":{{"min":{t}}}}}]}}"#
    )).unwrap();
    let out_dir = tmp.path().join("out");
    let r = study_run(&study, &site, &out_dir);
    assert_eq!(r["results"][0]["value"], 479);
    assert_eq!(
        r["results"][1]["value"], 479,
        "an identical repeat reveals nothing and is answered"
    );
    let older = &r["results"][2];
    assert!(
        older["value"].is_null(),
        "479 - {younger} must not be released: {older}"
    );
    assert_eq!(older["sites"][0]["status"], "suppressed");
    assert_eq!(older["sites"][0]["rule"]["rule"], "differencing");
    assert!(
        older["notes"][0].as_str().unwrap().contains("differencing"),
        "{older}"
    );

    // Second attack: recover a suppressed small cell from a total and its complement. The young
    // group is withheld by the small-cell rule; "older" is released; the total, which would give
    // the young count by subtraction, is then withheld by the differencing check.
    std::fs::write(&study, format!(
        r#"{{"format":"medfed-study/1","name":"margins",
            "analyses":[{{"id":"young","type":"person_count","domain":"condition","concepts":[192671],"age":{{"max":{}}}}},
                        {{"id":"older","type":"person_count","domain":"condition","concepts":[192671],"age":{{"min":{t}}}}},
                        {{"id":"total","type":"person_count","domain":"condition","concepts":[192671]}}]}}"#, t - 1
    )).unwrap();
    let r = study_run(&study, &site, &out_dir);
    assert_eq!(
        r["results"][0]["sites"][0]["rule"]["rule"], "min_cell_count",
        "{r}"
    );
    assert_eq!(r["results"][1]["value"], 479 - younger as u64);
    assert!(
        r["results"][2]["value"].is_null(),
        "the total would reveal the young count: {r}"
    );
    assert_eq!(r["results"][2]["sites"][0]["rule"]["rule"], "differencing");
}

/// Attack: average away differential-privacy noise by asking the same count again and again. Each
/// answer is freshly noised and spends ε from the study's budget in the node's persisted ledger;
/// once it is spent the node refuses; the site's lifetime budget caps all studies together.
/// Statistics without a bounded per-person influence are refused under DP with the reason.
#[test]
fn repeated_queries_cannot_average_away_dp_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let site = eunomia_site(tmp.path());
    let policy = tmp.path().join("dp.toml");
    std::fs::write(
        &policy,
        "min_cell_count = 5\ndefault = \"allow\"\n[dp]\nmechanism = \"laplace\"\nepsilon = 0.5\nstudy_budget = 2.0\nsite_budget = 3.0\n",
    )
    .unwrap();
    let repeats: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"id":"gib_{i}","type":"person_count","domain":"condition","concepts":[192671]}}"#))
        .collect();
    let study = tmp.path().join("s.json");
    std::fs::write(
        &study,
        format!(
            r#"{{"format":"medfed-study/1","name":"averaging","analyses":[{}]}}"#,
            repeats.join(",")
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = |study: &Path| study_run_with(study, &[site.to_str().unwrap()], Some(&policy), &out);
    let r = run(&study);
    let rs = r["results"].as_array().unwrap();
    let answers: Vec<u64> = rs.iter().filter_map(|x| x["value"].as_u64()).collect();
    assert_eq!(answers.len(), 4, "2.0 / 0.5 = 4 answers: {r}");
    for x in &rs[4..] {
        assert_eq!(x["sites"][0]["status"], "refused", "{x}");
        assert!(
            x["sites"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("privacy budget exhausted"),
            "{x}"
        );
    }
    for x in &rs[..4] {
        assert!(
            x["notes"][0]
                .as_str()
                .unwrap()
                .contains("differentially private"),
            "{x}"
        );
    }
    // Fresh noise each time (Laplace b = 2: four equal answers would have probability < 1e-3).
    assert!(answers.iter().any(|a| *a != answers[0]), "{answers:?}");
    // The average of what could be had is still noisy: its standard error is b·√2/√4 ≈ 1.4 persons.
    let mean = answers.iter().sum::<u64>() as f64 / 4.0;
    assert!((mean - 479.0).abs() < 15.0, "{mean}");
    // The ledger is a file in the node's state (read back when the node starts): one line per spend.
    let ledger = std::fs::read_to_string(out.join("nodes/eunomia/state/dp_ledger")).unwrap();
    assert_eq!(ledger.lines().count(), 4);
    // The site's lifetime budget binds across studies: with 1.5 left, only three answers.
    std::fs::write(&policy, "min_cell_count = 5\ndefault = \"allow\"\n[dp]\nepsilon = 0.5\nstudy_budget = 2.0\nsite_budget = 1.5\n").unwrap();
    let r = run(&study);
    let answered = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["value"].is_u64())
        .count();
    assert_eq!(answered, 3, "{r}");
    assert!(r.to_string().contains("this site has spent"), "{r}");
    // Statistics with unbounded per-person influence are refused under DP, with the reason.
    let other = tmp.path().join("o.json");
    std::fs::write(&other, r#"{"format":"medfed-study/1","name":"dp tables","analyses":[{"id":"ach","type":"characterization","analyses":[400]}]}"#).unwrap();
    std::fs::write(&policy, "min_cell_count = 5\ndefault = \"allow\"\n[dp]\nepsilon = 0.5\nstudy_budget = 2.0\nsite_budget = 100.0\n").unwrap();
    let r = run(&other);
    assert!(
        r["results"][0]["sites"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unbounded"),
        "{r}"
    );
}

/// The second site backend: Eunomia loaded into PostgreSQL (127.0.0.1:5432) with the CDM DDL by
/// `medfed import --out postgres://…?schema=…`, and the whole catalog run on it and on the site store.
/// Every pooled number must be the same on both.
#[test]
fn postgres_site_gives_the_same_answers_as_the_site_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = eunomia_site(tmp.path());
    let schema = format!("cdm_{}", std::process::id());
    let url = format!("postgres://postgres@127.0.0.1:5432/test?schema={schema}");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eunomia_gibleed");
    let quarantine = tmp.path().join("quarantine");
    let (ok, o, e) = medfed(&[
        "import",
        "--cdm",
        data.to_str().unwrap(),
        "--out",
        &url,
        "--quarantine",
        quarantine.to_str().unwrap(),
    ]);
    assert!(ok, "{o}{e}");
    assert!(
        o.contains(&format!("into PostgreSQL schema {schema}")),
        "{o}"
    );
    // Eunomia's orphan observation periods are quarantined where asked, not in the working folder.
    assert!(quarantine.join("observation_period.csv").exists(), "{o}");
    let study =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/studies/eunomia-catalog.json");
    let policy = tmp.path().join("exact.toml");
    std::fs::write(
        &policy,
        "min_cell_count = 1\ndifferencing = false\nmin_cohort_size = 1\ndefault = \"allow\"\n",
    )
    .unwrap();
    let run = |site: &str, out: &Path| study_run_with(&study, &[site], Some(&policy), out);
    let a = run(store.to_str().unwrap(), &tmp.path().join("a"));
    let b = run(&url, &tmp.path().join("b"));
    let (ra, rb) = (
        a["results"].as_array().unwrap(),
        b["results"].as_array().unwrap(),
    );
    assert_eq!(ra.len(), 11);
    assert_eq!(ra[0]["value"], 479, "{}", ra[0]);
    fn same(x: &serde_json::Value, y: &serde_json::Value, path: &str) {
        match (x, y) {
            (serde_json::Value::Number(p), serde_json::Value::Number(q)) => {
                let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
                assert!(
                    (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                    "{path}: {p} vs {q}"
                );
            }
            (serde_json::Value::Array(p), serde_json::Value::Array(q)) => {
                assert_eq!(p.len(), q.len(), "{path}");
                for (i, (u, v)) in p.iter().zip(q).enumerate() {
                    same(u, v, &format!("{path}[{i}]"));
                }
            }
            (serde_json::Value::Object(p), serde_json::Value::Object(q)) => {
                for (k, u) in p {
                    // Run times and site names differ between the two runs.
                    if k == "elapsed_ms" || k == "slowest_site_ms" || k == "site" {
                        continue;
                    }
                    same(u, &q[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(x, y, "{path}"),
        }
    }
    for (x, y) in ra.iter().zip(rb) {
        assert!(x["notes"].as_array().unwrap().is_empty(), "{x}");
        same(&x["value"], &y["value"], x["id"].as_str().unwrap());
    }
    // Every Circe conformance definition gives the oracle's rows on PostgreSQL too.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/circe_cohorts");
    let extra = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cohort/extra");
    let site = Path::new(&url);
    assert_eq!(
        cohort::matches_oracle(site, &shared.join("eunomia"), tmp.path()),
        13
    );
    assert_eq!(cohort::matches_oracle(site, &extra, tmp.path()), 11);
    // Clean up the schema.
    let mut c =
        postgres::Client::connect("postgres://postgres@127.0.0.1:5432/test", postgres::NoTls)
            .unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}
