//! Circe conformance: the Eunomia cohort definitions against the rows of the Circe SQL oracle
//! (`shared/data/circe_cohorts/eunomia`, produced by OHDSI's generator on DuckDB and PostgreSQL).
//! Every definition either gives identical rows or is refused with the JSON path of what is not
//! supported yet; the list of refusals is pinned, so support can only grow.

use std::io::Read;
use std::path::Path;
use std::process::Command;

#[test]
fn eunomia_cohorts_match_the_circe_oracle_row_for_row_or_are_refused_with_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let site = crate::eunomia_site(tmp.path());
    // Definitions refused (name, JSON path). Empty now: every Eunomia definition is supported.
    let refused_expected: [(&str, &str); 0] = [];
    let dir = root.join("circe_cohorts/eunomia");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), 13);
    let mut identical = 0;
    for n in &names {
        let out = tmp.path().join(format!("{n}.csv"));
        let o = Command::new(env!("CARGO_BIN_EXE_medfed"))
            .args([
                "cohort",
                "generate",
                "--site",
                site.to_str().unwrap(),
                dir.join(format!("{n}.json")).to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if let Some((_, path)) = refused_expected.iter().find(|(r, _)| r == n) {
            assert!(
                !o.status.success(),
                "{n} is now supported: move it out of the refused list"
            );
            assert!(
                err.contains(&format!("{path}: not supported")),
                "{n}: {err}"
            );
            continue;
        }
        assert!(o.status.success(), "{n}: {err}");
        let mut expected = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join(format!("{n}.expected.csv.gz"))).unwrap(),
        )
        .read_to_string(&mut expected)
        .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(
            got == expected,
            "{n}: rows differ from the Circe oracle ({} vs {} lines)",
            got.lines().count(),
            expected.lines().count()
        );
        identical += 1;
    }
    assert_eq!(identical, 13);
}

#[test]
fn unsupported_and_malformed_cohorts_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"DeviceExposure":{"CodesetId":0}}]},"ConceptSets":[]}"#, "$.PrimaryCriteria.CriteriaList[0].DeviceExposure: not supported"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0,"OccurrenceStartDate":{"Value":"2010-01-01","Op":"gt"}}}]},"ConceptSets":[{"id":0,"expression":{"items":[]}}]}"#, "$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.OccurrenceStartDate: not supported"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":3}}]},"ConceptSets":[]}"#, "CodesetId 3 names no concept set"),
        (r#"{"PrimaryCriteria":{"CriteriaList":[]},"Foo":1}"#, "$.Foo: not supported"),
        ("not json", "not JSON"),
        (
            r#"{"ConceptSets":[{"id":0,"expression":{"items":[]}}],"PrimaryCriteria":{"CriteriaList":[{"ConditionOccurrence":{"CodesetId":0}}]},
                "InclusionRules":[{"name":"r","expression":{"Type":"ALL","CriteriaList":[{"Criteria":{"DrugExposure":{"CodesetId":7}},"Occurrence":{"Type":2,"Count":1}}]}}]}"#,
            "$.InclusionRules[0].expression.CriteriaList[0].Criteria: CodesetId 7 names no concept set",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("c{i}.json"));
        std::fs::write(&f, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_medfed"))
            .args([
                "cohort",
                "generate",
                "--site",
                tmp.path().to_str().unwrap(),
                f.to_str().unwrap(),
                "--sql",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "case {i}: {err}");
    }
}
