//! The synthetic population: deterministic, realistic, and readable by PLINK.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use medfed_synth::{generate, NoProgress, SynthConfig};

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn gen_with_threads(threads: usize, dir: &Path, cfg: &SynthConfig) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| generate(cfg, dir, &NoProgress)).unwrap();
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        persons: 9_000,
        hospitals: 3,
        seed: 7,
        genotyped_share: 0.3,
        snps: 600,
    };
    gen_with_threads(1, &tmp.path().join("one"), &cfg);
    gen_with_threads(4, &tmp.path().join("four"), &cfg);
    let a = files(&tmp.path().join("one"));
    let b = files(&tmp.path().join("four"));
    assert!(
        a.len() > 3 * 39,
        "expected every CDM table per site, got {} files",
        a.len()
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs between 1 and 4 threads");
    }
    // A different seed gives a different population.
    let cfg2 = SynthConfig { seed: 8, ..cfg };
    gen_with_threads(2, &tmp.path().join("other"), &cfg2);
    let c = files(&tmp.path().join("other"));
    assert_ne!(
        a["hospital_a/cdm/person.parquet"],
        c["hospital_a/cdm/person.parquet"]
    );
}

#[test]
fn realism_against_the_korean_reference_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        persons: 40_000,
        hospitals: 6,
        seed: 42,
        genotyped_share: 0.25,
        snps: 2_000,
    };
    let truth = generate(&cfg, tmp.path(), &NoProgress).unwrap();
    // Age and sex shares: binomial sampling error at 40k is < 0.2 points; allow 0.6.
    for c in &truth.demography {
        assert!(
            (c.realised - c.target).abs() < 0.006,
            "{}: target {} realised {}",
            c.what,
            c.target,
            c.realised
        );
    }
    // Adult prevalences within 2.5 percentage points of the published figures.
    for c in &truth.prevalence {
        assert!(
            (c.realised - c.target).abs() < 0.025,
            "{}: target {} realised {}",
            c.what,
            c.target,
            c.realised
        );
    }
    // Six hospitals of different sizes, every person in exactly one.
    assert_eq!(truth.sites.len(), 6);
    assert_eq!(truth.sites.iter().map(|s| s.persons).sum::<u64>(), 40_000);
    let sizes: Vec<u64> = truth.sites.iter().map(|s| s.persons).collect();
    assert!(
        sizes.iter().max().unwrap() > &(sizes.iter().min().unwrap() * 3 / 2),
        "{sizes:?}"
    );
    // The five-year T2D onset model hits its calibration target (5% among those at risk).
    let t2d = &truth.five_year_onsets["t2d"];
    let rate = t2d["onsets"].as_f64().unwrap() / t2d["at_risk"].as_f64().unwrap();
    assert!((rate - 0.05).abs() < 0.006, "five-year T2D onset {rate}");
    // Planted outbreaks produced their cases, and both NSAID arms bled.
    assert!(truth.outbreaks.len() >= 8);
    assert!(
        truth
            .outbreaks
            .iter()
            .map(|o| o.realised_excess_cases)
            .sum::<u64>()
            > 30
    );
    assert!(truth.tally.gi_bleeds_celecoxib > 10 && truth.tally.gi_bleeds_diclofenac > 10);
    // Every site store verifies.
    for s in &truth.sites {
        medfed_cdm::SiteStore::open(tmp.path().join(&s.name))
            .unwrap()
            .verify()
            .unwrap();
    }
    plink_reads_the_genotypes(tmp.path(), &truth);
}

/// `plink1.9 --bfile … --freq` reads our .bed and its frequencies match the truth within sampling error.
fn plink_reads_the_genotypes(root: &Path, truth: &medfed_synth::GroundTruth) {
    let plink = ["plink1.9", "plink"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok());
    let Some(plink) = plink else {
        if std::env::var("CI").is_ok() {
            panic!("plink1.9 is required in CI (the test command installs it)");
        }
        eprintln!("plink1.9 not installed: skipping the PLINK cross-check");
        return;
    };
    let prefix = root.join("hospital_a/genotypes/site");
    let out = root.join("freq");
    let st = Command::new(plink)
        .args([
            "--bfile",
            prefix.to_str().unwrap(),
            "--freq",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "plink failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(out.with_extension("frq")).unwrap();
    let bed = medfed_genomics::Bed::open(&prefix).unwrap();
    let mut worst = 0.0f64;
    let panel = truth.genotypes["a1_freq_by_variant"]
        .as_array()
        .expect("panel frequencies in the truth");
    assert_eq!(panel.len(), bed.variants.len());
    let mut worst_panel = 0.0f64;
    for (i, line) in text.lines().skip(1).enumerate() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (id, a1, maf, nchrobs): (&str, &str, f64, f64) =
            (t[1], t[2], t[4].parse().unwrap(), t[5].parse().unwrap());
        let v = &bed.variants[i];
        assert_eq!(id, v.id);
        // Our own popcount kernel agrees with PLINK to print precision.
        let ours = bed.counts(i);
        let ours_a1 = if a1 == v.a1 {
            ours.a1_freq()
        } else {
            1.0 - ours.a1_freq()
        };
        assert!(
            (ours_a1 - maf).abs() < 1e-4,
            "{id}: ours {ours_a1} plink {maf}"
        );
        assert_eq!(2 * ours.called(), nchrobs as u64);
        // Every variant against its planted population frequency.
        let p = panel[i].as_f64().unwrap();
        let se = (p * (1.0 - p) / nchrobs).sqrt().max(1e-9);
        worst_panel = worst_panel.max((ours.a1_freq() - p).abs() / se);
        // Against the truth: binomial standard error, 5 sigma.
        if let Some(cv) = truth.causal_variants.iter().find(|c| c.id == id) {
            let p = if a1 == cv.a1 {
                cv.a1_freq
            } else {
                1.0 - cv.a1_freq
            };
            let se = (p * (1.0 - p) / nchrobs).sqrt();
            worst = worst.max((maf - p).abs() / se);
        }
    }
    assert!(
        worst < 5.0,
        "a causal variant's frequency is {worst:.1} standard errors from the truth"
    );
    assert!(
        worst_panel < 5.5,
        "a variant's frequency is {worst_panel:.1} standard errors from the planted panel frequency"
    );
}
