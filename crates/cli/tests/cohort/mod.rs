//! Circe conformance: the Eunomia cohort definitions against the rows of the Circe SQL oracle
//! (`shared/data/circe_cohorts/eunomia`, produced by OHDSI's generator on DuckDB and PostgreSQL).
//! Every definition gives identical rows; real ATLAS definitions either run or are refused with the
//! JSON path of what is not supported yet.

mod circe_be;

use std::io::Read;
use std::path::Path;

#[test]
fn eunomia_cohorts_match_the_circe_oracle_row_for_row() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let site = crate::eunomia_site(tmp.path());
    assert_eq!(
        matches_oracle(&site, &root.join("circe_cohorts/eunomia"), tmp.path()),
        13
    );
    // Definitions for what the Eunomia set does not cover (nested criteria, AT_LEAST/AT_MOST and
    // nested groups, end windows, distinct counts, attribute filters, mapped source concepts,
    // user-defined periods, censor window, days-supply override), with the same oracle's rows
    // (crates/cli/tests/reference/circe_extra.py).
    let extra = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cohort/extra");
    assert_eq!(matches_oracle(&site, &extra, tmp.path()), 11);
}

/// `medfed cohort generate --site SITE FILE ARGS…`: success, stdout, stderr.
pub fn generate(site: &Path, file: &Path, args: &[&str]) -> (bool, String, String) {
    let mut a = vec![
        "cohort",
        "generate",
        "--site",
        site.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    a.extend(args);
    super::medfed(&a)
}

/// Run every `<name>.json` of `dir` with `medfed cohort generate` on `site`; each must give exactly
/// the rows of `<name>.expected.csv.gz`. Returns how many did.
pub fn matches_oracle(site: &Path, dir: &Path, tmp: &Path) -> usize {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    let mut identical = 0;
    for n in &names {
        let out = tmp.join(format!("{n}.csv"));
        let (ok, _, err) = generate(
            site,
            &dir.join(format!("{n}.json")),
            &["--out", out.to_str().unwrap()],
        );
        assert!(ok, "{n}: {err}");
        let mut expected = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join(format!("{n}.expected.csv.gz"))).unwrap(),
        )
        .read_to_string(&mut expected)
        .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        if got != expected {
            let (g, e): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
                (got.lines().collect(), expected.lines().collect());
            panic!(
                "{n}: rows differ from the Circe oracle ({} vs {} lines); only ours: {:?}; only the oracle's: {:?}",
                got.lines().count(),
                expected.lines().count(),
                g.difference(&e).take(5).collect::<Vec<_>>(),
                e.difference(&g).take(5).collect::<Vec<_>>()
            );
        }
        identical += 1;
    }
    identical
}

#[test]
fn unsupported_and_malformed_cohorts_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"LocationRegion":{"CodesetId":0}}]},"ConceptSets":[]}"#, "$.PrimaryCriteria.CriteriaList[0].LocationRegion: not supported"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0,"ProviderSpecialty":[{"CONCEPT_ID":38004446}]}}]},"ConceptSets":[{"id":0,"expression":{"items":[]}}]}"#, "$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.ProviderSpecialty: not supported"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"OccurrenceStartDate":{"Value":"2010-02-30","Op":"gt"}}}]}}"#, "$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.OccurrenceStartDate.Value: \"2010-02-30\" is not a date"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{}}]},"AdditionalCriteria":{"Type":"AT_LEAST","CriteriaList":[]}}"#, "$.AdditionalCriteria.Count: AT_LEAST and AT_MOST need a Count"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"DrugEra":{"CorrelatedCriteria":{"Type":"ALL","CriteriaList":[{"Criteria":{"DrugExposure":{"CodesetId":9}}}]}}}]}}"#, "$.PrimaryCriteria.CriteriaList[0].DrugEra.CorrelatedCriteria.CriteriaList[0].Criteria: concept set 9 is not defined"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":3}}]},"ConceptSets":[]}"#, "concept set 3 is not defined in $.ConceptSets"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[]},"Foo":1}"#, "$.Foo: not supported"),
        ("not json", "not JSON"),
        (
            r#"{"ConceptSets":[{"id":0,"expression":{"items":[]}}],"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0}}]},
                "InclusionRules":[{"name":"r","expression":{"Type":"ALL","CriteriaList":[{"Criteria":{"DrugExposure":{"CodesetId":7}},"Occurrence":{"Type":2,"Count":1}}]}}]}"#,
            "$.InclusionRules[0].expression.CriteriaList[0].Criteria: concept set 7 is not defined",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("c{i}.json"));
        std::fs::write(&f, text).unwrap();
        let (ok, _, err) = generate(tmp.path(), &f, &["--sql"]);
        assert!(!ok && err.contains(want), "case {i}: {err}");
    }
}

/// Distinct persons of a Circe cohort generated on a site.
fn cohort_persons(site: &Path, dir: &Path, cohort: &str) -> String {
    let f = dir.join("c.json");
    std::fs::write(&f, cohort).unwrap();
    let (ok, out, err) = generate(site, &f, &[]);
    assert!(ok, "{err}");
    let mut persons: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    persons.sort();
    persons.dedup();
    persons.len().to_string()
}

/// Distinct persons with a record of `table` (date column `date`) inside an observation period.
fn persons_in_observation(site: &Path, table: &str, date: &str, filter: &str) -> String {
    super::site_sql(
        site,
        &format!(
            "SELECT COUNT(DISTINCT x.person_id) FROM {table} x JOIN observation_period op ON op.person_id = x.person_id \
             AND x.{date} BETWEEN op.observation_period_start_date AND op.observation_period_end_date WHERE {filter}"
        ),
    )[0]
        .clone()
}

/// Criterion types and attributes beyond the conformance set: ObservationPeriod, Death, record type
/// filters, and a Measurement's ValueAsNumber and Unit. Each cohort count equals the same question asked of the site
/// directly in SQL (events inside an observation period, as Circe requires).
#[test]
fn observation_period_death_and_measurement_values_match_direct_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let site = super::eunomia_site(tmp.path());
    let sql = |q: &str| super::site_sql(&site, q);
    let count = |c: &str| cohort_persons(&site, tmp.path(), c);
    let in_op = |t: &str, d: &str, f: &str| persons_in_observation(&site, t, d, f);
    // Every person with an observation period.
    let op = r#"{"ConceptSets":[],"PrimaryCriteria":{"CriteriaList":[{"ObservationPeriod":{"First":true}}],
        "ObservationWindow":{"PriorDays":0,"PostDays":0},"PrimaryCriteriaLimit":{"Type":"First"}}}"#;
    assert_eq!(
        count(op),
        sql("SELECT COUNT(DISTINCT person_id) FROM observation_period")[0]
    );
    // Deaths (any cause).
    let death = r#"{"ConceptSets":[],"PrimaryCriteria":{"CriteriaList":[{"Death":{}}],
        "ObservationWindow":{"PriorDays":0,"PostDays":0},"PrimaryCriteriaLimit":{"Type":"First"}}}"#;
    assert_eq!(count(death), in_op("death", "death_date", "TRUE"));
    // Record types: GI bleeds of the most common condition type, and of every other type.
    let t = sql("SELECT condition_type_concept_id, COUNT(*) AS n FROM condition_occurrence GROUP BY 1 ORDER BY n DESC LIMIT 1")[0]
        .split(',')
        .next()
        .unwrap()
        .to_string();
    for (exclude, filter) in [
        (false, format!("x.condition_type_concept_id = {t}")),
        (true, format!("x.condition_type_concept_id <> {t}")),
    ] {
        let c = format!(
            r#"{{"ConceptSets":[{{"id":0,"expression":{{"items":[{{"concept":{{"CONCEPT_ID":192671}},"includeDescendants":true}}]}}}}],
                "PrimaryCriteria":{{"CriteriaList":[{{"ConditionOccurrence":{{"CodesetId":0,"ConditionType":[{{"CONCEPT_ID":{t}}}],"ConditionTypeExclude":{exclude}}}}}],
                "ObservationWindow":{{"PriorDays":0,"PostDays":0}},"PrimaryCriteriaLimit":{{"Type":"All"}}}}}}"#
        );
        let want = in_op(
            "condition_occurrence",
            "condition_start_date",
            &format!("x.condition_concept_id IN (SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id = 192671) AND {filter}"),
        );
        assert_eq!(count(&c), want, "exclude {exclude}");
        if !exclude {
            assert_ne!(want, "0");
        }
    }
    // The most common numeric measurement, above its median value, in its most common unit, on a
    // synthetic site (Eunomia's measurements carry no values).
    let (ok, o, e) = super::medfed(&[
        "synth",
        "--persons",
        "5000",
        "--hospitals",
        "1",
        "--snps",
        "50",
        "--out",
        tmp.path().join("pop").to_str().unwrap(),
    ]);
    assert!(ok, "{o}{e}");
    let synth_site = tmp.path().join("pop/hospital_a");
    let s = synth_site.to_str().unwrap();
    let sql = |q: &str| super::site_sql(&synth_site, q);
    let count = |c: &str| cohort_persons(&synth_site, tmp.path(), c);
    let in_op = |t: &str, d: &str, f: &str| persons_in_observation(&synth_site, t, d, f);
    // Deaths on the synthetic site, where there are some.
    let deaths = in_op("death", "death_date", "TRUE");
    assert_ne!(deaths, "0");
    assert_eq!(count(death), deaths);
    let top = sql("SELECT measurement_concept_id, unit_concept_id, COUNT(*) AS n, MEDIAN(value_as_number) FROM measurement \
                   WHERE value_as_number IS NOT NULL GROUP BY 1, 2 ORDER BY n DESC LIMIT 1");
    let f: Vec<&str> = top[0].split(',').collect();
    let (concept, unit, median) = (f[0], f[1], f[3]);
    let m = format!(
        r#"{{"ConceptSets":[{{"id":0,"expression":{{"items":[{{"concept":{{"CONCEPT_ID":{concept}}},"includeDescendants":false}}]}}}}],
            "PrimaryCriteria":{{"CriteriaList":[{{"Measurement":{{"CodesetId":0,"ValueAsNumber":{{"Value":{median},"Op":"gt"}},"Unit":[{{"CONCEPT_ID":{unit}}}]}}}}],
            "ObservationWindow":{{"PriorDays":0,"PostDays":0}},"PrimaryCriteriaLimit":{{"Type":"All"}}}}}}"#
    );
    let want = in_op(
        "measurement",
        "measurement_date",
        &format!("x.measurement_concept_id = {concept} AND x.value_as_number > {median} AND x.unit_concept_id = {unit}"),
    );
    assert_ne!(want, "0");
    assert_eq!(count(&m), want);
    // ValueAsNumber on a condition is refused with its path.
    let bad = r#"{"ConceptSets":[{"id":0,"expression":{"items":[]}}],"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0,"ValueAsNumber":{"Value":1,"Op":"gt"}}}]}}"#;
    let f = tmp.path().join("bad.json");
    std::fs::write(&f, bad).unwrap();
    let (ok, _, err) = generate(Path::new(s), &f, &[]);
    assert!(
        !ok && err.contains("$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.ValueAsNumber"),
        "{err}"
    );
}

/// Real ATLAS / PhenotypeLibrary definitions and circe-be's examples: each one either runs on
/// Eunomia or is refused with the JSON path of what is not supported. Nothing else: no SQL error,
/// no crash, no silent partial cohort.
#[test]
fn real_atlas_definitions_run_or_are_refused_with_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let site = super::eunomia_site(tmp.path());
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/circe_cohorts/examples");
    let (mut ran, mut refused) = (Vec::new(), Vec::new());
    for dir in ["phenotype_library", "circe_be"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|x| x == "json"))
        {
            let (ok, out, err) = generate(&site, &f, &[]);
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if ok {
                assert!(
                    out.starts_with("subject_id,cohort_start_date,cohort_end_date"),
                    "{name}: {out}"
                );
                ran.push(name);
            } else {
                assert!(
                    err.contains(": $.") || err.contains("$."),
                    "{name}: refused without a JSON path: {err}"
                );
                assert!(
                    !err.contains("cohort query failed"),
                    "{name}: the SQL failed: {err}"
                );
                refused.push(name);
            }
        }
    }
    eprintln!("ran: {ran:?}\nrefused: {refused:?}");
    assert!(ran.len() + refused.len() >= 27);
    assert!(ran.len() >= 22, "{ran:?}");
}
