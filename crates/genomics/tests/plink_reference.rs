//! Count-based association statistics from per-site tables summed as the hub sums them, against
//! PLINK 1.9's own reports on the pooled samples (`../shared/data/gwas_plink_sim/`,
//! `kg1000_chr1_region/`): every token, at PLINK's print precision.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use medfed_genomics::assoc::{self, CaseControl, Split, Status};
use medfed_genomics::plink::{self, Row};
use medfed_genomics::Bed;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(dir)
}

fn keep(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

/// Case/control status from the `.fam` phenotype, restricted to `keep` when given.
fn status(bed: &Bed, keep: Option<&HashSet<String>>) -> Vec<Status> {
    bed.samples
        .iter()
        .map(|s| {
            if keep.is_some_and(|k| !k.contains(&s.iid)) {
                Status::Excluded
            } else {
                match s.pheno.as_str() {
                    "2" => Status::Case,
                    "1" => Status::Control,
                    _ => Status::Unknown,
                }
            }
        })
        .collect()
}

fn tables(bed: &Bed, st: &[Status]) -> Vec<CaseControl> {
    let split = Split::new(st);
    (0..bed.variants.len())
        .map(|v| split.table(bed.packed(v)))
        .collect()
}

/// Compare a report with PLINK's file token by token (column widths aside).
fn same(ours: &str, reference: &Path) {
    let theirs = std::fs::read_to_string(reference).unwrap();
    let a: Vec<Vec<&str>> = ours
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let b: Vec<Vec<&str>> = theirs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(a.len(), b.len(), "{}: line count", reference.display());
    let bad: Vec<String> = a
        .iter()
        .zip(&b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(5)
        .map(|(i, (x, y))| format!("line {}: ours {x:?}\n         plink {y:?}", i + 1))
        .collect();
    let n = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        bad.is_empty(),
        "{}: {n} lines differ\n{}",
        reference.display(),
        bad.join("\n")
    );
}

fn rows<'a>(bed: &'a Bed, t: &[CaseControl]) -> Vec<Row<'a>> {
    bed.variants
        .iter()
        .zip(t)
        .map(|(v, t)| plink::orient(v, t))
        .collect()
}

#[test]
fn three_sites_summed_equal_pooled_plink() {
    let dir = data("gwas_plink_sim");
    let bed = Bed::open(&dir.join("sim")).unwrap();
    let mut pooled = vec![CaseControl::default(); bed.variants.len()];
    let mut seen = 0;
    for site in 1..=3 {
        let k = keep(&dir.join(format!("site{site}.keep")));
        seen += k.len();
        let st = status(&bed, Some(&k));
        let t = tables(&bed, &st);
        // Each site alone is PLINK run with --keep on that site.
        let r = rows(&bed, &t);
        same(
            &plink::assoc(&r),
            &dir.join(format!("ref_site{site}.assoc")),
        );
        same(
            &plink::frq_cc(&r),
            &dir.join(format!("ref_site{site}.frq.cc")),
        );
        same(
            &plink::model(&r),
            &dir.join(format!("ref_site{site}.model")),
        );
        for (p, x) in pooled.iter_mut().zip(t) {
            *p += x;
        }
    }
    assert_eq!(seen, bed.samples.len(), "the sites partition the samples");
    // The summed tables are the pooled samples' tables.
    assert_eq!(pooled, tables(&bed, &status(&bed, None)));
    let r = rows(&bed, &pooled);
    same(&plink::assoc(&r), &dir.join("ref_pooled.assoc"));
    same(
        &plink::fisher(&r),
        &dir.join("ref_pooled_fisher.assoc.fisher"),
    );
    same(&plink::model(&r), &dir.join("ref_pooled.model"));
    same(&plink::hardy(&r), &dir.join("ref_pooled.hwe"));
    same(&plink::frq(&r), &dir.join("ref_pooled.frq"));
    same(&plink::frq_cc(&r), &dir.join("ref_pooled.frq.cc"));
    same(&plink::lmiss(&r), &dir.join("ref_pooled.lmiss"));
    let chisq: Vec<f64> = r
        .iter()
        .map(|x| assoc::allelic(&x.table).chisq.unwrap_or(f64::NAN))
        .collect();
    let (lambda, adj) = assoc::adjust(&chisq);
    // logs/ref_pooled_adj.log: "Genomic inflation est. lambda (based on median chisq) = 1.02939."
    assert_eq!(format!("{lambda:.5}"), "1.02939");
    same(
        &plink::adjusted(&r, &adj),
        &dir.join("ref_pooled_adj.assoc.adjusted"),
    );
}

#[test]
fn thousand_genomes_region_equals_plink() {
    // Real LD and frequency structure, monomorphic variants (NA cells) and 2,504 samples, 1,497 of
    // them without a phenotype.
    let dir = data("kg1000_chr1_region");
    let bed = Bed::open(&dir.join("kg_chr1")).unwrap();
    let all = tables(&bed, &status(&bed, None));
    let r = rows(&bed, &all);
    same(&plink::frq(&r), &dir.join("ref_all.frq"));
    same(&plink::hardy(&r), &dir.join("ref_all.hwe"));
    let k = keep(&dir.join("keep_eas_eur.txt"));
    let t = tables(&bed, &status(&bed, Some(&k)));
    let r = rows(&bed, &t);
    same(&plink::assoc(&r), &dir.join("ref_eas_vs_eur.assoc"));
    same(&plink::frq_cc(&r), &dir.join("ref_eas_vs_eur.frq.cc"));
}
