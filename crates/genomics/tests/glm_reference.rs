//! Per-variant regression from sums added across sites, against PLINK 1.9 `--linear`/`--logistic`
//! and plink2 `--glm` on the pooled samples.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use medfed_genomics::glm::{self, Design, Sums, Wald};
use medfed_genomics::plink::fmt_g;
use medfed_genomics::Bed;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(dir)
}

fn table(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// `iid → value` from a whitespace table with a FID IID header or none.
fn column(path: &Path, col: usize, header: bool) -> HashMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(usize::from(header))
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            Some((t[1].to_string(), t.get(col)?.parse().ok()?))
        })
        .collect()
}

/// Designs of the sites given by `site_of(sample) -> Option<site>`.
fn designs(
    bed: &Bed,
    sites: usize,
    site_of: impl Fn(usize) -> Option<usize>,
    y: impl Fn(usize) -> Option<f64>,
    cov: &[&HashMap<String, f64>],
) -> Vec<Design> {
    let mut out: Vec<Design> = (0..sites)
        .map(|_| Design {
            q: cov.len(),
            ..Design::default()
        })
        .collect();
    for (i, s) in bed.samples.iter().enumerate() {
        let (Some(site), Some(yv)) = (site_of(i), y(i)) else {
            continue;
        };
        let c: Option<Vec<f64>> = cov.iter().map(|m| m.get(&s.iid).copied()).collect();
        let Some(c) = c else { continue };
        let d = &mut out[site];
        d.samples.push(i);
        d.y.push(yv);
        d.covariates.extend(c);
    }
    out
}

fn case_control(bed: &Bed, i: usize) -> Option<f64> {
    match bed.samples[i].pheno.as_str() {
        "2" => Some(1.0),
        "1" => Some(0.0),
        _ => None,
    }
}

fn federated_logistic(bed: &Bed, sites: &[Design], v: usize) -> Option<Wald> {
    let k = sites[0].k();
    glm::logistic_fit(k, |beta| {
        let mut s = Sums::zero(k);
        for d in sites {
            s.add(&glm::logistic_sums(d, bed.packed(v), beta));
        }
        s
    })
}

/// statsmodels' pooled fit of every variant (`tests/reference/glm.py`): `[beta, se, stat, p, n]`.
fn statsmodels(prefix: &Path, covar: Option<(&Path, &str)>) -> HashMap<String, Option<Vec<f64>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/glm.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).arg(prefix);
    if let Some((f, names)) = covar {
        cmd.arg(f).arg(names);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "statsmodels reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Largest relative difference of `ours` from `reference` over beta, se, stat and p.
fn rel_diff(ours: &Wald, reference: &[f64]) -> f64 {
    [ours.beta[1], ours.se[1], ours.stat[1], ours.p[1]]
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-300))
        .fold(0.0, f64::max)
}

#[test]
fn logistic_over_three_sites_equals_the_pooled_fit() {
    let dir = data("gwas_plink_sim");
    let bed = Bed::open(&dir.join("sim")).unwrap();
    let mut site = HashMap::new();
    for s in 0..3 {
        for l in std::fs::read_to_string(dir.join(format!("site{}.keep", s + 1)))
            .unwrap()
            .lines()
        {
            site.insert(l.split_whitespace().nth(1).unwrap().to_string(), s);
        }
    }
    let site_of = |i: usize| site.get(&bed.samples[i].iid).copied();
    let age = column(&dir.join("covar.txt"), 2, true);
    let sex = column(&dir.join("covar.txt"), 3, true);
    let covar_file = dir.join("covar.txt");
    for (covars, p2, p19, sm) in [
        (
            vec![],
            "ref_plink2.PHENO1.glm.logistic.hybrid",
            "ref_pooled.assoc.logistic",
            statsmodels(&dir.join("sim"), None),
        ),
        (
            vec![&age, &sex],
            "ref_plink2_covar.PHENO1.glm.logistic.hybrid",
            "ref_pooled_covar.assoc.logistic",
            statsmodels(&dir.join("sim"), Some((&covar_file, "AGE,SEX_M"))),
        ),
    ] {
        let sites = designs(&bed, 3, site_of, |i| case_control(&bed, i), &covars);
        let two = table(&dir.join(p2));
        let one = table(&dir.join(p19));
        let (mut worst_sm, mut worst_p2) = (0.0f64, 0.0f64);
        let mut fits = Vec::new();
        for (v, row) in two.iter().enumerate() {
            let id = &bed.variants[v].id;
            assert_eq!(&row[2], id);
            let w = federated_logistic(&bed, &sites, v).expect("converges");
            // The pooled maximum-likelihood fit, in double precision.
            let r = sm[id].as_ref().expect("statsmodels fit");
            assert_eq!(w.n, r[4] as u64);
            worst_sm = worst_sm.max(rel_diff(&w, r));
            // plink2 (the .bim A1, i.e. ALT): OR, SE, Z, P as printed.
            assert_eq!(row[8], w.n.to_string());
            let theirs: Vec<f64> = row[9..13].iter().map(|t| t.parse().unwrap()).collect();
            // Distance in z units: the statistic, and the log odds ratio in standard errors.
            let dz = (w.stat[1] - theirs[2])
                .abs()
                .max((w.beta[1] - theirs[0].ln()).abs() / w.se[1]);
            worst_p2 = worst_p2.max(dz);
            fits.push(w);
        }
        assert!(worst_sm <= 1e-6, "{p2}: {worst_sm:e} from statsmodels");
        // plink2 runs its logistic Newton steps in single precision: its printed values are close
        // to the double-precision fit (within 1e-3 standard errors), not equal to 1e-6.
        eprintln!("{p2}: largest difference from plink2 {worst_p2:e} standard errors");
        assert!(worst_p2 <= 1e-3, "{p2}: {worst_p2:e} from plink2");
        // PLINK 1.9 reports the minor allele at four digits.
        let mut bad = Vec::new();
        let mut worst_p19 = 0.0f64;
        for (v, row) in one.iter().enumerate() {
            let bim = &bed.variants[v];
            let w = if row[3] == bim.a1 {
                fits[v].clone()
            } else {
                assert_eq!(row[3], bim.a2);
                fits[v].flipped()
            };
            let ours: Vec<String> = if covars.is_empty() {
                // --logistic beta --ci 0.95: BETA SE L95 U95 STAT P
                let (lo, hi) = w.ci(1, 0.95);
                [w.beta[1], w.se[1], lo, hi, w.stat[1], w.p[1]]
                    .iter()
                    .map(|x| fmt_g(*x, 4))
                    .collect()
            } else {
                [w.beta[1].exp(), w.stat[1], w.p[1]]
                    .iter()
                    .map(|x| fmt_g(*x, 4))
                    .collect()
            };
            if ours[..] != row[6..] {
                // PLINK 1.9 also fits in single precision: the statistic within 1e-3, and
                // mostly the same four digits.
                let n = row.len();
                let stat: f64 = row[n - 2].parse().unwrap();
                worst_p19 = worst_p19.max((w.stat[1] - stat).abs());
                bad.push(format!("{}: ours {ours:?} plink {:?}", row[1], &row[6..]));
            }
        }
        eprintln!(
            "{p19}: {} of {} lines differ from PLINK 1.9 in the fourth digit; statistics by at most {worst_p19:e}\n{}",
            bad.len(),
            one.len(),
            bad[..bad.len().min(5)].join("\n")
        );
        assert!(worst_p19 <= 1e-3, "{p19}: {worst_p19:e}");
    }
}

#[test]
fn linear_over_two_sites_equals_plink19() {
    let dir = data("bed_reader_toydata");
    let bed = Bed::open(&dir.join("toydata.5chrom")).unwrap();
    let y: Vec<f64> = bed
        .samples
        .iter()
        .map(|s| s.pheno.parse().unwrap())
        .collect();
    let sites = designs(&bed, 2, |i| Some(i % 2), |i| Some(y[i]), &[]);
    let q = table(&dir.join("ref_toydata_qt.qassoc"));
    let mut bad = Vec::new();
    for (v, row) in q.iter().enumerate() {
        let k = 2;
        let mut s = Sums::zero(k);
        for d in &sites {
            s.add(&glm::linear_sums(d, bed.packed(v)));
        }
        let ours: Vec<String> = match glm::linear_fit(&s, k) {
            // .qassoc reports the .bim A1 (PLINK 1.9 keeps the loaded order for QT --assoc
            // only when it is the minor allele; the toy data's A1 is minor throughout).
            Some(w) => [
                s.n.to_string(),
                fmt_g(w.beta[1], 4),
                fmt_g(w.se[1], 4),
                fmt_g(w.extra, 4),
                fmt_g(w.stat[1], 4),
                fmt_g(w.p[1], 4),
            ]
            .to_vec(),
            None => vec!["NA".into(); 6],
        };
        if ours[..] != row[3..] {
            bad.push(format!("{}: ours {ours:?} plink {:?}", row[1], &row[3..]));
        }
    }
    assert!(
        bad.is_empty(),
        "{} differ\n{}",
        bad.len(),
        bad[..bad.len().min(5)].join("\n")
    );
}
