//! Import of real OMOP CDM exports and of deliberately broken ones.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use medfed_cdm::{import_csv_dir, CdmError, ImportOptions, ImportReport, NoProgress, SiteStore};

fn shared(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(p)
}

fn import(dir: &Path, out: &Path) -> Result<ImportReport, CdmError> {
    import_csv_dir(
        dir,
        out,
        &ImportOptions {
            site: None,
            extra: None,
        },
        &NoProgress,
    )
}

#[test]
fn eunomia_gibleed_gives_the_reference_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gib");
    let r = import(&shared("eunomia_gibleed"), &out).unwrap();
    let text = fs::read_to_string(shared("eunomia_gibleed/REFERENCE_COUNTS.txt")).unwrap();
    let store = SiteStore::open(&out).unwrap();
    store.verify().unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| l.starts_with("rows.")) {
        let (k, v) = line.trim_start_matches("rows.").split_once(" = ").unwrap();
        let want: u64 = v.trim().parse().unwrap();
        let t = r.table(k).unwrap();
        assert_eq!(t.read, want, "{k} rows read");
        if k == "observation_period" {
            // The known exception: 2,649 periods belong to person ids absent from person.
            assert_eq!(t.quarantined, 2649);
            assert!(
                t.reasons
                    .iter()
                    .all(|(why, _)| why.contains("is not in person")),
                "{:?}",
                t.reasons
            );
            assert_eq!(store.rows(k), Some(want - 2649));
        } else {
            assert_eq!(t.quarantined, 0, "{k}: {:?}", t.reasons);
            assert_eq!(store.rows(k), Some(want), "{k} rows stored");
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
    assert_eq!(r.source_cdm_version, "5.3");
    // The quarantine file names file, line, field and reason.
    let q = fs::read_to_string(out.join("quarantine/observation_period.csv")).unwrap();
    assert!(q.starts_with("file,line,field,reason,record\n"));
    assert_eq!(q.lines().count(), 2650);
    // GiBleed reuses event ids across different records: kept and reported, not dropped.
    assert_eq!(r.table("drug_exposure").unwrap().shared_primary_keys, 4384);
}

#[test]
fn eunomia_synthea_cdm54_imports_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s54");
    let r = import(&shared("eunomia_synthea27nj_cdm54"), &out).unwrap();
    assert_eq!(r.source_cdm_version, "5.4");
    assert_eq!(
        r.total_quarantined(),
        0,
        "{:#?}",
        r.tables
            .iter()
            .filter(|t| t.quarantined > 0)
            .collect::<Vec<_>>()
    );
    let store = SiteStore::open(&out).unwrap();
    assert_eq!(store.rows("person"), Some(28));
    assert_eq!(store.rows("measurement"), Some(10040));
    assert_eq!(store.rows("death"), Some(3));
    // Era tables exported with timestamps in DATE columns load as dates.
    assert_eq!(store.rows("condition_era"), Some(469));
    store.verify().unwrap();
}

const PERSON: &str =
    "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id\n\
1,8507,1950,0,0\n2,8532,1960,0,0\n3,8532,1970,0,0\n";

fn write(dir: &Path, name: &str, text: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), text).unwrap();
}

fn gz(dir: &Path, name: &str, text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    let bytes = e.finish().unwrap();
    fs::write(dir.join(name), &bytes).unwrap();
    bytes
}

#[test]
fn tab_delimited_upper_case_gzip_and_compact_dates() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    gz(
        &src,
        "PERSON.csv.gz",
        &PERSON.replace(',', "\t").to_uppercase(),
    );
    write(
        &src,
        "OBSERVATION_PERIOD.tsv",
        "OBSERVATION_PERIOD_ID\tPERSON_ID\tOBSERVATION_PERIOD_START_DATE\tOBSERVATION_PERIOD_END_DATE\tPERIOD_TYPE_CONCEPT_ID\n\
         1\t1\t20100101\t20201231\t44814724\n2\t2\t2011-02-03\t2012-01-01\t44814724\n",
    );
    let r = import(&src, &tmp.path().join("site")).unwrap();
    assert_eq!(r.table("person").unwrap().loaded, 3);
    assert_eq!(r.table("observation_period").unwrap().loaded, 2);
}

#[test]
fn bad_rows_are_quarantined_with_file_line_field_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(
        &src,
        "person.csv",
        &format!("{PERSON}1,8532,1951,0,0\n4,8507,19x0,0,0\n"),
    );
    write(
        &src,
        "observation_period.csv",
        "observation_period_id,person_id,observation_period_start_date,observation_period_end_date,period_type_concept_id\n\
         1,1,2010-01-01,2015-12-31,0\n\
         2,1,2015-06-01,2018-01-01,0\n\
         3,9,2010-01-01,2011-01-01,0\n\
         4,2,2010-02-30,2011-01-01,0\n\
         5,3,2012-01-01,2011-01-01,0\n\
         6,2,2010-01-01,2011-01-01,0\n",
    );
    write(
        &src,
        "death.csv",
        "person_id,death_date\n1,2018-01-01\n1,2018-02-01\n2,2019-01-01\n",
    );
    write(
        &src,
        "condition_occurrence.csv",
        "condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_type_concept_id\n\
         1,1,201826,2012-01-01,32817\n1,1,201826,2012-01-01,32817\n2,2,201826,2012-01-01\n",
    );
    let out = tmp.path().join("site");
    let r = import(&src, &out).unwrap();
    let q = |t: &str| fs::read_to_string(out.join("quarantine").join(format!("{t}.csv"))).unwrap();
    let person = r.table("person").unwrap();
    assert_eq!((person.read, person.loaded, person.quarantined), (5, 3, 2));
    let pq = q("person");
    assert!(
        pq.contains("person.csv,5,person_id,duplicate primary key 1"),
        "{pq}"
    );
    assert!(
        pq.contains("person.csv,6,year_of_birth,'19x0' is not an integer"),
        "{pq}"
    );
    let op = r.table("observation_period").unwrap();
    assert_eq!((op.loaded, op.quarantined), (2, 4));
    let oq = q("observation_period");
    assert!(oq.contains(",3,observation_period_start_date,observation period overlaps an earlier one of person 1"), "{oq}");
    assert!(
        oq.contains(",4,person_id,person_id 9 is not in person"),
        "{oq}"
    );
    assert!(
        oq.contains(",5,observation_period_start_date,'2010-02-30' is not a valid calendar date"),
        "{oq}"
    );
    assert!(
        oq.contains(",6,observation_period_end_date,observation period ends before it starts"),
        "{oq}"
    );
    let d = r.table("death").unwrap();
    assert_eq!((d.loaded, d.quarantined), (2, 1));
    assert!(q("death").contains("second death record for person 1"));
    let co = r.table("condition_occurrence").unwrap();
    assert_eq!((co.loaded, co.quarantined), (1, 2));
    let cq = q("condition_occurrence");
    assert!(
        cq.contains("exact duplicate of an earlier row with key 1"),
        "{cq}"
    );
    assert!(cq.contains("expected 5 fields, found 4"), "{cq}");
    // Nothing lost: every row read is loaded or quarantined.
    for t in &r.tables {
        assert_eq!(t.read, t.loaded + t.quarantined, "{}", t.table);
    }
    SiteStore::open(&out).unwrap().verify().unwrap();
}

#[test]
fn missing_required_column_quarantines_that_table() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "person.csv", PERSON);
    write(&src, "visit_occurrence.csv", "visit_occurrence_id,person_id,visit_start_date,visit_end_date,visit_type_concept_id\n1,1,2010-01-01,2010-01-01,32817\n");
    let out = tmp.path().join("site");
    let r = import(&src, &out).unwrap();
    let v = r.table("visit_occurrence").unwrap();
    assert_eq!((v.loaded, v.quarantined), (0, 1));
    assert!(
        v.reasons[0]
            .0
            .contains("visit_concept_id: required column(s) missing from header"),
        "{:?}",
        v.reasons
    );
}

/// A store that exists before a failed import must come out of it byte for byte unchanged.
fn assert_failed_import_keeps_store(src: &Path, expect_in_error: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write(&good, "person.csv", PERSON);
    let out = tmp.path().join("site");
    import(&good, &out).unwrap();
    let before = fs::read_to_string(out.join("site.toml")).unwrap();
    let err = import(src, &out).unwrap_err().to_string();
    assert!(err.contains(expect_in_error), "error was: {err}");
    assert!(
        err.contains("no store was made") || err.contains("no person row"),
        "error was: {err}"
    );
    assert_eq!(fs::read_to_string(out.join("site.toml")).unwrap(), before);
    SiteStore::open(&out).unwrap().verify().unwrap();
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging directories left behind");
}

#[test]
fn truncated_gzip_fails_cleanly_and_keeps_the_old_store() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write(&src, "person.csv", PERSON);
    let mut big = String::from("condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_type_concept_id\n");
    for i in 0..20000 {
        big.push_str(&format!("{i},1,201826,2012-01-01,32817\n"));
    }
    let bytes = gz(&src, "condition_occurrence.csv.gz", &big);
    fs::write(
        src.join("condition_occurrence.csv.gz"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert_failed_import_keeps_store(&src, "condition_occurrence.csv.gz: read failed");
}

#[test]
fn wrong_delimiter_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "person.csv", &PERSON.replace(',', ";"));
    assert_failed_import_keeps_store(&src, "seems to use another delimiter");
}

#[test]
fn refuses_to_overwrite_a_folder_that_is_not_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "person.csv", PERSON);
    let out = tmp.path().join("precious");
    write(&out, "thesis.txt", "do not delete");
    let err = import(&src, &out).unwrap_err().to_string();
    assert!(err.contains("is not a site store"), "{err}");
    assert!(out.join("thesis.txt").exists());
}

#[test]
fn tampered_store_fails_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "person.csv", PERSON);
    let out = tmp.path().join("site");
    import(&src, &out).unwrap();
    let p = out.join("cdm/person.parquet");
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&p, bytes).unwrap();
    let err = SiteStore::open(&out)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cdm/person.parquet: checksum differs"),
        "{err}"
    );
}

/// The store writer refuses a null in a column the CDM requires instead of letting Parquet store a
/// default in its place (a REQUIRED Parquet column cannot hold a null), and nothing is published.
#[test]
fn store_writer_refuses_nulls_in_required_columns() {
    use arrow::array::{ArrayRef, Date32Array, Int64Array};
    use arrow::record_batch::RecordBatch;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("site");
    let spec = medfed_cdm::CdmSpec::v54();
    let t = spec.table("observation_period").unwrap();
    let w = medfed_cdm::StoreWriter::create(&out).unwrap();
    let mut tw = w.table_writer(t).unwrap();
    let cols: Vec<ArrayRef> = t
        .fields
        .iter()
        .map(|f| -> ArrayRef {
            match f.name.as_str() {
                "observation_period_end_date" => std::sync::Arc::new(Date32Array::from(vec![None])),
                n if n.ends_with("_date") => std::sync::Arc::new(Date32Array::from(vec![Some(0)])),
                _ => std::sync::Arc::new(Int64Array::from(vec![Some(1)])),
            }
        })
        .collect();
    let batch = RecordBatch::try_new_with_options(
        std::sync::Arc::new(arrow::datatypes::Schema::new(
            t.schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )),
        cols,
        &Default::default(),
    )
    .unwrap();
    let err = tw.write(&batch).unwrap_err().to_string();
    assert!(
        err.contains("observation_period.parquet")
            && err.contains("observation_period_end_date is required but 1 of 1 values are null"),
        "{err}"
    );
    drop(tw);
    drop(w);
    assert!(!out.exists(), "an uncommitted store must not appear");
}
