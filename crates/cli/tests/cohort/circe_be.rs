//! circe-be's own cohort-generation fixtures (`CohortGeneration_5_0_0_Test`): each test's DbUnit
//! input (`datasets/vocabulary.json` + `<test>_PREP.json`) becomes a real site store, each cohort
//! expression (with the Java test's in-code edits, listed in the fixture INDEX) runs through
//! `medfed cohort generate`, and the rows must equal the Java project's `<test>_VERIFY.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use medfed_cdm::value::{parse_value, ColumnBuilder};
use medfed_cdm::{CdmSpec, SiteMeta, StoreWriter};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/circe_cohorts/examples/circe_be_cohortgeneration")
}

fn load(rel: &str) -> Value {
    let p = fixtures().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A site store holding the rows of DbUnit JSON files (`{"cdm.person": [{column: value}, …]}`).
/// Columns CDM 5.4 does not have (the fixtures are CDM 5.0) are left out, as the oracle's loader
/// does; every value must parse as its 5.4 type.
fn dbunit_site(files: &[&str], out: &Path) -> PathBuf {
    let mut rows: BTreeMap<String, Vec<serde_json::Map<String, Value>>> = BTreeMap::new();
    for f in files {
        for (t, list) in load(f).as_object().unwrap() {
            let table = t.rsplit('.').next().unwrap().to_ascii_lowercase();
            for r in list.as_array().unwrap() {
                rows.entry(table.clone())
                    .or_default()
                    .push(r.as_object().unwrap().clone());
            }
        }
    }
    let spec = CdmSpec::v54();
    for t in rows.keys() {
        assert!(
            spec.table(t).is_some(),
            "{files:?}: table {t} is not in CDM 5.4"
        );
    }
    let mut w = StoreWriter::create(out).unwrap();
    for table in spec.load_order() {
        let list = rows.get(&table.name).map(Vec::as_slice).unwrap_or(&[]);
        let mut cols: Vec<ColumnBuilder> = table
            .fields
            .iter()
            .map(|f| ColumnBuilder::new(f.ty, list.len()))
            .collect();
        for (i, r) in list.iter().enumerate() {
            for (f, b) in table.fields.iter().zip(cols.iter_mut()) {
                let raw = match r.get(&f.name) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                };
                let v = parse_value(&raw, f.ty)
                    .unwrap_or_else(|e| panic!("{files:?}: {}[{i}].{}: {e}", table.name, f.name));
                b.append(&v);
            }
        }
        let arrays = cols.iter_mut().map(ColumnBuilder::finish).collect();
        // CDM 5.0 left some columns optional that 5.4 requires (drug_exposure_end_date): the
        // fixture's store keeps them nullable rather than inventing values.
        let schema = Schema::new(
            table
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(Arc::new(schema), arrays).unwrap();
        let rel = format!("cdm/{}.parquet", table.name);
        let file = std::fs::File::create(w.staging_dir().join(&rel)).unwrap();
        let mut pw = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        pw.write(&batch).unwrap();
        pw.close().unwrap();
        w.record_rows(&rel, batch.num_rows() as u64);
    }
    w.commit(SiteMeta {
        site: "circe-be".into(),
        cdm_version: String::new(),
        created: "2026-01-01T00:00:00Z".into(),
        source: format!("circe-be fixtures {files:?}"),
        source_cdm_version: Some("5.0".into()),
        files: BTreeMap::new(),
    })
    .unwrap();
    out.to_path_buf()
}

type Variants = Vec<(i64, Value)>;

/// The expressions of `CohortGeneration_5_0_0_Test`, with its in-code edits.
fn cases() -> Vec<(&'static str, &'static str, Variants)> {
    let limits = {
        let mut e = load("limits/limitExpression.json");
        let mut v = vec![(1, e.clone())];
        e["ExpressionLimit"]["Type"] = json!("First");
        v.push((2, e.clone()));
        e["QualifiedLimit"]["Type"] = json!("First");
        v.push((3, e.clone()));
        e["PrimaryCriteria"]["PrimaryCriteriaLimit"]["Type"] = json!("First");
        v.push((4, e.clone()));
        e["PrimaryCriteria"]["PrimaryCriteriaLimit"]["Type"] = json!("Last");
        v.push((5, e));
        v
    };
    let counts = {
        let mut e = load("correlatedCriteria/countsExpression.json");
        let mut v = vec![(1, e.clone())];
        e["AdditionalCriteria"]["CriteriaList"][0]["Occurrence"] = json!({"Type": 2, "Count": 1});
        v.push((2, e.clone()));
        e["AdditionalCriteria"]["CriteriaList"][0]["Occurrence"] = json!({"Type": 1, "Count": 0});
        v.push((3, e));
        v.push((4, load("correlatedCriteria/visitExpression.json")));
        v
    };
    let groups = {
        let mut e = load("correlatedCriteria/groupExpression.json");
        let mut v = vec![(1, e.clone())];
        e["AdditionalCriteria"]["Type"] = json!("AT_LEAST");
        e["AdditionalCriteria"]["Count"] = json!(2);
        v.push((2, e.clone()));
        e["AdditionalCriteria"]["Type"] = json!("AT_MOST");
        v.push((3, e.clone()));
        e["AdditionalCriteria"]["Type"] = json!("ALL");
        e["AdditionalCriteria"]["Groups"][0]["Type"] = json!("AT_MOST");
        e["AdditionalCriteria"]["Groups"][0]["Count"] = json!(0);
        v.push((4, e.clone()));
        e["AdditionalCriteria"]["Groups"] = json!([]);
        v.push((5, e));
        v
    };
    let continuous = {
        let mut e = load("exits/continuousExposureExpression.json");
        let mut v = vec![(1, e.clone())];
        e["PrimaryCriteria"]["PrimaryCriteriaLimit"]["Type"] = json!("First");
        v.push((2, e));
        v
    };
    let first = {
        let e = load("firstOccurrence/firstOccurrenceTestExpression.json");
        [
            "ConditionEra",
            "ConditionOccurrence",
            "DeviceExposure",
            "DrugEra",
            "DrugExposure",
            "Measurement",
            "Observation",
            "ProcedureOccurrence",
            "Specimen",
            "VisitOccurrence",
            "PayerPlanPeriod",
        ]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = e.clone();
            e["PrimaryCriteria"]["CriteriaList"] = json!([{ *d: {"First": true} }]);
            (i as i64 + 1, e)
        })
        .collect()
    };
    let status = {
        let base = json!({"ConceptSets": [], "PrimaryCriteria": {"CriteriaList": [{"ConditionOccurrence": {}}],
            "ObservationWindow": {"PriorDays": 0, "PostDays": 0}}});
        let mut e2 = base.clone();
        e2["PrimaryCriteria"]["CriteriaList"][0]["ConditionOccurrence"]["ConditionStatus"] =
            json!([]);
        let mut e3 = base.clone();
        e3["PrimaryCriteria"]["CriteriaList"][0]["ConditionOccurrence"]["ConditionStatus"] =
            json!([{"CONCEPT_ID": 1}]);
        vec![(1, base), (2, e2), (3, e3)]
    };
    let single = |p: &str| vec![(1, load(p))];
    vec![
        (
            "firstOccurrence",
            "firstOccurrence/firstOccurrenceTest",
            first,
        ),
        (
            "correlatedCriteriaCounts",
            "correlatedCriteria/countsTest",
            counts,
        ),
        ("groups", "correlatedCriteria/groupTest", groups),
        ("limits", "limits/limitTest", limits),
        (
            "simpleInclusionRule",
            "inclusionRules/simpleInclusionRule",
            single("inclusionRules/simpleInclusionRule.json"),
        ),
        ("continuousExposure", "exits/continuousExposure", continuous),
        (
            "continuousExposureCensor",
            "exits/continuousExposureCensor",
            single("exits/continuousExposureCensorExpression.json"),
        ),
        (
            "fixedOffset",
            "exits/fixedOffset",
            single("exits/fixedOffsetExpression.json"),
        ),
        (
            "fixedOffsetCensor",
            "exits/fixedOffsetCensor",
            single("exits/fixedOffsetCensorExpression.json"),
        ),
        (
            "censorEvent",
            "exits/censorEvent",
            single("exits/censorEventExpression.json"),
        ),
        (
            "censorWindow",
            "censorWindow/censorWindow",
            single("censorWindow/censorWindowExpression.json"),
        ),
        (
            "mixedConceptsets",
            "mixedConceptsets/mixedConceptsets",
            single("mixedConceptsets/mixedConceptsetsExpression.json"),
        ),
        (
            "eraDupes",
            "eraDupes/eraDupes",
            single("eraDupes/eraDupesExpression.json"),
        ),
        (
            "conditionStatus",
            "conditionOccurrence/conditionStatusTest",
            status,
        ),
    ]
}

#[test]
fn circe_be_generation_fixtures_give_the_java_projects_expected_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, stem, variants) in cases() {
        let site = dbunit_site(
            &["datasets/vocabulary.json", &format!("{stem}_PREP.json")],
            &tmp.path().join(name),
        );
        let verify = load(&format!("{stem}_VERIFY.json"));
        let (_, rows) = verify
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.ends_with(".cohort"))
            .expect("VERIFY has a cohort table");
        let mut expected: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{},{},{},{}",
                    r["cohort_definition_id"],
                    r["subject_id"],
                    r["cohort_start_date"].as_str().unwrap(),
                    r["cohort_end_date"].as_str().unwrap()
                )
            })
            .collect();
        expected.sort();
        let mut got = Vec::new();
        for (id, expr) in variants {
            let f = tmp.path().join(format!("{name}-{id}.json"));
            std::fs::write(&f, expr.to_string()).unwrap();
            let out = tmp.path().join(format!("{name}-{id}.csv"));
            let (ok, _, err) = super::generate(&site, &f, &["--out", out.to_str().unwrap()]);
            if !ok {
                failures.push(format!("{name} cohort {id}: {err}"));
                continue;
            }
            for l in std::fs::read_to_string(&out).unwrap().lines().skip(1) {
                got.push(format!("{id},{l}"));
            }
        }
        got.sort();
        if got != expected {
            failures.push(format!("{name}: expected {expected:?}\n   got {got:?}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 14);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
