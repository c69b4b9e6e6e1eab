//! The R&D catalog end to end: `medfed study run` over three synthetic hospitals, checked against an
//! independent computation on the pooled Parquet (tests/reference/catalog.py: DuckDB, numpy,
//! statsmodels), against the synthetic population's planted drug–outcome effect, and against the
//! disclosure rules (attack tests on what the nodes actually released, read back from their audit logs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::medfed;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const EXACT: &str =
    "min_cell_count = 1\ndifferencing = false\nmin_cohort_size = 1\ndefault = \"allow\"\n";

/// A synthetic population of three hospitals in `dir`.
fn population(dir: &Path, persons: u32) -> Vec<PathBuf> {
    super::three_hospitals(dir, persons, 50, &[])
}

fn run_study(study: &Path, sites: &[PathBuf], policy: Option<&Path>, out: &Path) -> Value {
    super::study_run_on(study, sites, policy, out)
}

/// The pooled cohort rows of each cohort of the study, from `medfed cohort generate` at every site.
fn pooled_cohorts(study: &Value, sites: &[PathBuf], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (id, def) in study["cohorts"].as_object().into_iter().flatten() {
        let file = root()
            .join("examples/studies")
            .join(def["file"].as_str().unwrap());
        let mut csv = String::from("subject_id,cohort_start_date,cohort_end_date\n");
        for s in sites {
            let (ok, o, e) = medfed(&[
                "cohort",
                "generate",
                "--site",
                s.to_str().unwrap(),
                file.to_str().unwrap(),
            ]);
            assert!(ok, "{e}");
            for l in o.lines().skip(1) {
                csv.push_str(l);
                csv.push('\n');
            }
        }
        std::fs::write(dir.join(format!("{id}.csv")), csv).unwrap();
    }
}

fn reference(study_file: &Path, sites: &[PathBuf], tmp: &Path) -> Value {
    let study: Value = serde_json::from_str(&std::fs::read_to_string(study_file).unwrap()).unwrap();
    let cohorts = tmp.join("cohorts");
    pooled_cohorts(&study, sites, &cohorts);
    let (ok, catalog, e) = medfed(&["catalog", "--json", "--dialect", "duckdb"]);
    assert!(ok, "{e}");
    let catalog_file = tmp.join("catalog.json");
    std::fs::write(&catalog_file, catalog).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("crates/cli/tests/reference/catalog.py"))
        .arg("--catalog")
        .arg(&catalog_file)
        .arg("--study")
        .arg(study_file)
        .arg("--cohorts")
        .arg(&cohorts)
        .arg("--sites");
    for s in sites {
        cmd.arg(s);
    }
    let o = cmd
        .output()
        .expect("python3 with duckdb and statsmodels (installed by scripts/test-all.sh)");
    assert!(
        o.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Pooled leaf cells of a result's table, by `key|key`.
fn leaves(result: &Value, table: &str) -> BTreeMap<String, Vec<f64>> {
    let t = result["value"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {}", result["id"]));
    t["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["key"].as_array().unwrap().iter().any(|k| k == "*"))
        .map(|c| {
            let key: Vec<&str> = c["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            let v: Vec<f64> = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (key.join("|"), v)
        })
        .collect()
}

/// Every table cell the reference has equals the pooled cell, and the pooled result has no non-zero
/// cell the reference lacks. Counts exactly; sums to 1e-9 relative (summation order differs).
fn check_tables(result: &Value, expected: &Value) {
    for (name, cells) in expected["tables"].as_object().unwrap() {
        let got = leaves(result, name);
        for (k, want) in cells.as_object().unwrap() {
            let want: Vec<f64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let have = got
                .get(k)
                .unwrap_or_else(|| panic!("{} table {name}: no cell {k}", result["id"]));
            for (h, w) in have.iter().zip(&want) {
                assert!(
                    close(*h, *w, 1e-9),
                    "{} table {name} cell {k}: {have:?} vs reference {want:?}",
                    result["id"]
                );
            }
        }
        for (k, v) in &got {
            assert!(
                cells.get(k).is_some() || v.iter().all(|x| *x == 0.0),
                "{} table {name}: cell {k} = {v:?} is not in the reference",
                result["id"]
            );
        }
    }
}

fn by_id<'a>(results: &'a Value, id: &str) -> &'a Value {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
}

/// With disclosure control off, every analysis of the catalog equals the independent computation on
/// the pooled data; the comparative study recovers the planted hazard ratio of 2.0.
#[test]
fn catalog_equals_the_pooled_computation_and_finds_the_planted_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(&tmp.path().join("pop"), 150_000);
    let study = root().join("examples/studies/rd-catalog.json");
    let policy = tmp.path().join("exact.toml");
    std::fs::write(&policy, EXACT).unwrap();
    let r = run_study(&study, &sites, Some(&policy), &tmp.path().join("out"));
    let reference = reference(&study, &sites, tmp.path());
    let mut checked = 0;
    for res in r["results"].as_array().unwrap() {
        let id = res["id"].as_str().unwrap();
        let exp = &reference[id];
        assert!(res["notes"].as_array().unwrap().is_empty(), "{res}");
        if exp.get("tables").is_some() {
            check_tables(res, exp);
            checked += 1;
        }
        let s = &res["value"]["summary"];
        match res["type"].as_str().unwrap() {
            "characterization" => {
                let n = res["value"]["tables"].as_array().unwrap().len();
                assert!(n >= 30, "{n} Achilles analyses");
                // Each analysis records its own run time at each site.
                for t in res["value"]["tables"].as_array().unwrap() {
                    assert_eq!(
                        t["elapsed_ms"].as_object().unwrap().len(),
                        3,
                        "{}",
                        t["name"]
                    );
                }
            }
            "descriptive" => {
                assert_eq!(s["n"].as_f64().unwrap(), exp["n"].as_f64().unwrap(), "{id}");
                assert_eq!(s["persons"].as_f64(), exp["persons"].as_f64(), "{id}");
                for m in ["mean", "sd"] {
                    assert!(
                        close(s[m].as_f64().unwrap(), exp[m].as_f64().unwrap(), 1e-9),
                        "{id} {m}: {s} vs {exp}"
                    );
                }
                let w = s["quantile_error_bound"].as_f64().unwrap();
                for (q, v) in exp["quantiles"].as_object().unwrap() {
                    let got = s[q].as_f64().unwrap();
                    assert!(
                        (got - v.as_f64().unwrap()).abs() <= w,
                        "{id} {q}: {got} vs exact {v} (bound {w})"
                    );
                }
                checked += 1;
            }
            "kaplan_meier" => {
                let curve = s["curve"].as_array().unwrap();
                let mut n = 0;
                for (day, surv) in exp["survival"].as_object().unwrap() {
                    let p = curve
                        .iter()
                        .find(|p| p["day"].as_i64().unwrap().to_string() == *day)
                        .unwrap();
                    assert!(
                        close(
                            p["survival"].as_f64().unwrap(),
                            surv.as_f64().unwrap(),
                            1e-12
                        ),
                        "day {day}: {p} vs statsmodels {surv}"
                    );
                    n += 1;
                }
                assert!(n > 5, "{n} event times");
            }
            "comparative_cohort" => {
                let crude = s["crude"]["rate_ratio"].as_f64().unwrap();
                let mh = s["stratified_mh"]["rate_ratio"].as_f64().unwrap();
                assert!(
                    close(crude, exp["crude"].as_f64().unwrap(), 1e-9),
                    "{s} vs {exp}"
                );
                assert!(close(mh, exp["mh"].as_f64().unwrap(), 1e-9), "{s} vs {exp}");
                // Mantel–Haenszel and stratified Poisson ML (statsmodels) estimate the same ratio.
                let poisson = exp["poisson_rr"].as_f64().unwrap();
                assert!(
                    (mh / poisson - 1.0).abs() < 0.05,
                    "MH {mh} vs Poisson {poisson}"
                );
                // The planted effect (ground_truth.json: hazard ratio 2.0, confounded by age).
                let truth: Value = serde_json::from_str(
                    &std::fs::read_to_string(tmp.path().join("pop/ground_truth.json")).unwrap(),
                )
                .unwrap();
                let hr = truth["drug_outcome_effect"]["hazard_ratio"]
                    .as_f64()
                    .unwrap();
                let ci = s["stratified_mh"]["ci95"].as_array().unwrap();
                let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
                assert!(
                    lo < hr && hr < hi,
                    "stratified RR {mh} [{lo}, {hi}] misses the planted {hr}"
                );
                assert!(
                    crude < mh,
                    "confounding by age biases the crude ratio ({crude}) towards 1"
                );
                // Stratifying by site as well (the sites' released Mantel–Haenszel sums) estimates
                // the same effect.
                let site = s["site_stratified_mh"]["rate_ratio"].as_f64().unwrap();
                assert!(
                    (site / mh - 1.0).abs() < 0.1,
                    "site-stratified {site} vs pooled strata {mh}"
                );
                let ci = s["site_stratified_mh"]["ci95"].as_array().unwrap();
                assert!(
                    ci[0].as_f64().unwrap() < hr && hr < ci[1].as_f64().unwrap(),
                    "{s}"
                );
            }
            _ => {}
        }
    }
    assert!(checked >= 9, "{checked} analyses checked");
    // The national-statistics long form holds every number, readable by DuckDB.
    let pq = tmp.path().join("out/results.parquet");
    let o = Command::new("python3")
        .args(["-c", "import duckdb,sys; print(duckdb.connect().execute(f\"SELECT value FROM read_parquet('{sys.argv[1]}') WHERE analysis_id = 'achilles' AND table_name = '2' AND stratum = 'gender_concept_id=*' AND statistic = 'persons'\").fetchone()[0])", pq.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "150000.0");
}

/// What the nodes released under the default policy (minimum cell count 10), read from their audit
/// logs: no count in 1..=9 left any site, no line of a table has exactly one withheld cell (so no
/// withheld cell equals a margin minus released cells), and every pooled cell that no site withheld
/// still equals the pooled truth.
#[test]
fn released_tables_hide_small_cells_and_their_complements() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = population(&tmp.path().join("pop"), 40_000);
    let study = tmp.path().join("s.json");
    std::fs::write(
        &study,
        r#"{"format":"medfed-study/1","name":"attack",
            "analyses":[{"id":"achilles","type":"characterization","analyses":[2,4,10,101,102,113,201,401,404,405,1815]},
                        {"id":"t2d_by_province","type":"cross_tab","rows":"province","cols":{"condition":[201826]}},
                        {"id":"age_sex","type":"cross_tab","rows":"age_group","cols":"sex"}]}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let r = run_study(&study, &sites, None, &out);
    let k = 10.0;
    let mut withheld_cells = 0;
    for s in &sites {
        let name = s.file_name().unwrap().to_str().unwrap();
        let log = std::fs::read_to_string(out.join("nodes").join(name).join("audit.log")).unwrap();
        for line in log.lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            let tables = &payload["outcome"]["statistic"]["kind"]["tables"];
            for t in tables.as_array().unwrap() {
                let counts: Vec<usize> = t["measures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m["kind"] == "count")
                    .map(|(i, _)| i)
                    .collect();
                let partition: Vec<bool> = t["partition"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_bool().unwrap())
                    .collect();
                let cells = t["cells"].as_array().unwrap();
                for c in cells {
                    match c["values"].as_array() {
                        Some(v) => {
                            for i in &counts {
                                let x = v[*i].as_f64().unwrap();
                                assert!(
                                    x == 0.0 || x >= k,
                                    "{name} table {} released a count of {x}: {c}",
                                    t["name"]
                                );
                            }
                        }
                        None => withheld_cells += 1,
                    }
                }
                for (d, _) in partition.iter().enumerate().filter(|p| *p.1) {
                    let mut lines: BTreeMap<Vec<String>, usize> = BTreeMap::new();
                    for c in cells {
                        let mut key: Vec<String> = c["key"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_str().unwrap().to_string())
                            .collect();
                        key[d] = String::new();
                        *lines.entry(key).or_default() += c["values"].is_null() as usize;
                    }
                    for (l, n) in lines {
                        assert_ne!(n, 1, "{name} table {}: line {l:?} has one withheld cell, recoverable from its margin", t["name"]);
                    }
                }
            }
        }
    }
    assert!(
        withheld_cells > 0,
        "the attack data must contain small cells"
    );
    // Cells that no site withheld are exact; withheld ones are lower bounds.
    let reference = reference(&study, &sites, tmp.path());
    for res in r["results"].as_array().unwrap() {
        let exp = &reference[res["id"].as_str().unwrap()];
        for t in res["value"]["tables"].as_array().unwrap() {
            let Some(want) = exp["tables"].get(t["name"].as_str().unwrap()) else {
                continue;
            };
            for c in t["cells"].as_array().unwrap() {
                let key: Vec<&str> = c["key"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect();
                if key.contains(&"*") {
                    continue;
                }
                let w = &want[key.join("|")];
                let got = c["values"][0].as_f64().unwrap();
                let truth = w[0].as_f64().unwrap_or(0.0);
                if c["withheld_at"].as_array().is_none_or(|a| a.is_empty()) {
                    assert!(
                        close(got, truth, 1e-9),
                        "{} {}: {got} vs {truth}",
                        res["id"],
                        key.join("|")
                    );
                } else {
                    assert!(
                        got <= truth,
                        "{} {}: lower bound {got} above {truth}",
                        res["id"],
                        key.join("|")
                    );
                }
            }
        }
        assert!(
            res["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains("withheld")),
            "{res}"
        );
    }
    let _ = by_id(&r, "achilles");
}

/// Attacks through cohorts: a characterization of a cohort too small to describe, and a tracker —
/// a cohort padded with a large known group (celecoxib users) plus the few persons the attacker is
/// after, whose description minus the padding's would describe those few. Both are withheld whole,
/// with the reason in the result.
#[test]
fn small_cohorts_and_trackers_are_refused_for_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let site = super::eunomia_site(tmp.path());
    // GI-bleed persons by age at their first bleed: all of them, and those never on celecoxib.
    let ages = |extra: &str| -> Vec<i64> {
        let q = format!(
            "SELECT EXTRACT(YEAR FROM MIN(c.condition_start_date)) - p.year_of_birth AS age FROM condition_occurrence c \
             JOIN person p ON p.person_id = c.person_id WHERE c.condition_concept_id = 192671 {extra} \
             GROUP BY c.person_id, p.year_of_birth ORDER BY age"
        );
        crate::site_sql(&site, &q)
            .iter()
            .map(|l| l.trim().parse::<f64>().unwrap() as i64)
            .collect()
    };
    let younger_than = |ages: &[i64], most: usize| {
        (1..130)
            .find(|t| (1..=most).contains(&ages.iter().filter(|a| **a < *t).count()))
            .expect("a small group of young bleeders")
    };
    let t = younger_than(
        &ages("AND c.person_id NOT IN (SELECT person_id FROM drug_exposure WHERE drug_concept_id IN \
               (SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id = 1118084))"),
        9,
    );
    let t_tiny = younger_than(&ages(""), 19);
    let celecoxib = r#"{"DrugExposure":{"CodesetId":1}}"#;
    let cohort = |extra: &str| -> String {
        format!(
            r#"{{"circe":{{"ConceptSets":[
                {{"id":0,"expression":{{"items":[{{"concept":{{"CONCEPT_ID":192671}},"includeDescendants":true}}]}}}},
                {{"id":1,"expression":{{"items":[{{"concept":{{"CONCEPT_ID":1118084}},"includeDescendants":true}}]}}}}],
              "PrimaryCriteria":{{"CriteriaList":[{celecoxib}{extra}],"ObservationWindow":{{"PriorDays":0,"PostDays":0}},
                                 "PrimaryCriteriaLimit":{{"Type":"First"}}}}}}}}"#
        )
    };
    let padded = cohort(&format!(
        r#",{{"ConditionOccurrence":{{"CodesetId":0,"Age":{{"Value":{t},"Op":"lt"}}}}}}"#
    ));
    let tiny = r#"{"circe":{"ConceptSets":[{"id":0,"expression":{"items":[{"concept":{"CONCEPT_ID":192671},"includeDescendants":true}]}}],
        "PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0,"Age":{"Value":T_TINY,"Op":"lt"}}}],
        "ObservationWindow":{"PriorDays":0,"PostDays":0},"PrimaryCriteriaLimit":{"Type":"First"}}}}"#
        .replace("T_TINY", &t_tiny.to_string());
    let study = tmp.path().join("s.json");
    std::fs::write(
        &study,
        format!(
            r#"{{"format":"medfed-study/1","name":"tracker",
                "cohorts":{{"padding":{},"padded":{padded},"tiny":{tiny}}},
                "analyses":[{{"id":"padding","type":"cohort_characterization","cohort":"padding"}},
                            {{"id":"padded","type":"cohort_characterization","cohort":"padded"}},
                            {{"id":"tiny","type":"descriptive","variable":"age","bin_width":5,"cohort":"tiny"}}]}}"#,
            cohort("")
        ),
    )
    .unwrap();
    let r = super::study_run(&study, &site, &tmp.path().join("out"));
    assert!(
        by_id(&r, "padding")["value"]["summary"]["persons"]
            .as_f64()
            .unwrap()
            > 100.0,
        "{r}"
    );
    let padded = by_id(&r, "padded");
    assert!(
        padded["value"].is_null(),
        "the tracker's cohort must be withheld: {padded}"
    );
    assert_eq!(
        padded["sites"][0]["rule"]["rule"], "differencing",
        "{padded}"
    );
    assert!(
        padded["notes"][0]
            .as_str()
            .unwrap()
            .contains("differencing"),
        "{padded}"
    );
    let tiny = by_id(&r, "tiny");
    if tiny["sites"][0]["status"] == "suppressed" {
        assert_eq!(
            tiny["sites"][0]["rule"]["rule"], "min_cohort_size",
            "{tiny}"
        );
        assert!(
            tiny["notes"][0].as_str().unwrap().contains("fewer than 20"),
            "{tiny}"
        );
    } else {
        panic!("a cohort of 1..=19 persons must be withheld: {tiny}");
    }
}
