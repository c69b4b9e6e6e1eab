//! DataFusion over an imported Eunomia store answers the published reference counts.

use std::path::Path;

use arrow::array::{Array, Int64Array};
use medfed_cdm::{import_csv_dir, ImportOptions, NoProgress};
use medfed_engine::SiteEngine;

fn ints(engine: &SiteEngine, q: &str) -> Vec<Vec<i64>> {
    let batches = engine.sql_blocking(q).unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            rows.push(
                (0..b.num_columns())
                    .map(|c| {
                        b.column(c)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .expect("BIGINT column")
                            .value(r)
                    })
                    .collect(),
            );
        }
    }
    rows
}

#[test]
fn eunomia_reference_answers_through_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eunomia_gibleed");
    import_csv_dir(
        &data,
        &tmp.path().join("gib"),
        &ImportOptions {
            site: None,
            extra: None,
        },
        &NoProgress,
    )
    .unwrap();
    let e = SiteEngine::open(tmp.path().join("gib")).unwrap();
    assert_eq!(
        ints(
            &e,
            "SELECT gender_concept_id, COUNT(*) FROM person GROUP BY 1 ORDER BY 1"
        ),
        vec![vec![8507, 1321], vec![8532, 1373]]
    );
    assert_eq!(ints(&e, "SELECT COUNT(DISTINCT person_id) FROM condition_occurrence WHERE condition_concept_id = 192671"), vec![vec![479]]);
    assert_eq!(
        ints(&e, "SELECT drug_concept_id, COUNT(DISTINCT person_id) FROM drug_era WHERE drug_concept_id IN (1118084, 1124300) GROUP BY 1 ORDER BY 1"),
        vec![vec![1118084, 1844], vec![1124300, 850]]
    );
    // Descendants through concept_ancestor: every person had an NSAID.
    assert_eq!(
        ints(&e, "SELECT COUNT(DISTINCT d.person_id) FROM drug_exposure d JOIN concept_ancestor ca ON ca.descendant_concept_id = d.drug_concept_id WHERE ca.ancestor_concept_id = 21603933"),
        vec![vec![2694]]
    );
    assert_eq!(
        ints(
            &e,
            "SELECT MIN(year_of_birth), MAX(year_of_birth) FROM person"
        ),
        vec![vec![1908, 1986]]
    );
    let batches = e
        .sql_blocking("SELECT person_id FROM person WHERE person_id < 0")
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let _ = batches.first().map(|b| b.column(0).len());
}

#[test]
fn writes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("person.csv"), "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id\n1,8507,1950,0,0\n").unwrap();
    import_csv_dir(
        &src,
        &tmp.path().join("s"),
        &ImportOptions {
            site: None,
            extra: None,
        },
        &NoProgress,
    )
    .unwrap();
    let e = SiteEngine::open(tmp.path().join("s")).unwrap();
    let out = tmp.path().join("leak.csv");
    for q in [
        format!("COPY (SELECT * FROM person) TO '{}'", out.display()),
        "CREATE TABLE x AS SELECT * FROM person".to_string(),
        "INSERT INTO person VALUES (2, 8507, 1950, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)".to_string(),
    ] {
        let err = e.sql_blocking(&q).unwrap_err().to_string();
        assert!(err.contains("not supported") || err.contains("DDL") || err.contains("DML"), "{q}: {err}");
    }
    assert!(!out.exists());
}
