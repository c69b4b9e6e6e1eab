//! Federated GWAS end to end: `medfed study run` of `examples/studies/gwas.json` over three synthetic
//! hospitals, whose PLINK report files must equal PLINK 1.9's own on the merged genotypes of the
//! three sites with the same phenotype and covariates (each site's `medfed model features` file).
//! PLINK is installed by `scripts/test-all.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::medfed;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn plink(dir: &Path, args: &[&str]) {
    let o = Command::new("plink1.9")
        .current_dir(dir)
        .args(args)
        .args(["--allow-no-sex", "--silent"])
        .output()
        .expect("plink1.9 (installed by scripts/test-all.sh)");
    assert!(
        o.status.success(),
        "plink1.9 {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tokens(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Equal token for token, or, where `tolerance` > 0, numbers within that relative difference or
/// within `tolerance / 100` absolute (a fit's last printed digit; an estimate near zero).
fn same_file(ours: &Path, theirs: &Path, tolerance: f64) {
    let (a, b) = (tokens(ours), tokens(theirs));
    assert_eq!(
        a.len(),
        b.len(),
        "{} vs {}",
        ours.display(),
        theirs.display()
    );
    let mut off = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x.len(),
            y.len(),
            "{} line {i}: {x:?} vs {y:?}",
            ours.display()
        );
        for (s, t) in x.iter().zip(y) {
            if s == t {
                continue;
            }
            let close = match (s.parse::<f64>(), t.parse::<f64>()) {
                (Ok(u), Ok(v)) => {
                    (u - v).abs() <= tolerance * v.abs() || (u - v).abs() <= tolerance / 100.0
                }
                _ => false,
            };
            assert!(
                close,
                "{} line {i}: {s} vs PLINK's {t}\n{x:?}\n{y:?}",
                ours.display()
            );
            off += 1;
        }
    }
    eprintln!(
        "{}: {} lines, {off} numbers differ in the last printed digit",
        ours.display(),
        a.len()
    );
}

/// The planted causal variants of the analysis's trait are found about as often as the allelic
/// test's power at the Bonferroni level predicts, and nothing else is (the population is fixed by
/// its seed, so this is deterministic).
fn found_at_the_predicted_power(id: &str, v: &serde_json::Value, truth: &Path) {
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    let trait_ = id.trim_start_matches("gwas_");
    let known: Vec<(String, f64, f64)> = truth["causal_variants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["trait_"] == trait_)
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["a1_freq"].as_f64().unwrap(),
                c["odds_ratio_per_a1"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(!known.is_empty(), "{id}: no causal variants for {trait_}");
    let r: medfed_analysis::gwas::GwasResult = serde_json::from_value(v.clone()).unwrap();
    let (effects, others) = medfed_analysis::gwas::known_effects(&r, &known);
    let expected: f64 = effects.iter().map(|e| e.power).sum();
    let sd: f64 = effects
        .iter()
        .map(|e| e.power * (1.0 - e.power))
        .sum::<f64>()
        .sqrt();
    let found = effects.iter().filter(|e| e.found).count() as f64;
    eprintln!("{id}: {effects:#?}\n{found} found, {expected:.2} expected (sd {sd:.2}), {others} other variants under Bonferroni");
    assert!(
        (found - expected).abs() <= 2.0 * sd + 1.0,
        "{id}: {found} causal variants found, power predicts {expected:.2} ± {sd:.2}"
    );
    // Every estimated odds ratio is on the planted side of 1 where the variant was found.
    for e in effects.iter().filter(|e| e.found) {
        assert!(e.estimated_or.unwrap() > 1.0, "{e:?}");
    }
    assert!(
        others <= 1,
        "{id}: {others} non-causal variants under Bonferroni"
    );
}

#[test]
fn federated_gwas_equals_plink_on_the_merged_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = super::three_hospitals(
        &tmp.path().join("pop"),
        30_000,
        2_000,
        &["--genotyped-share", "1.0"],
    );
    let study = root().join("examples/studies/gwas.json");
    let out = tmp.path().join("out");
    let results = super::study_run_on(&study, &sites, None, &out);
    let refdir = tmp.path().join("plink");
    std::fs::create_dir_all(&refdir).unwrap();
    // The merged genotypes of the three sites.
    let list: String = sites
        .iter()
        .map(|s| format!("{}\n", s.join("genotypes/site").display()))
        .collect();
    std::fs::write(refdir.join("sites.txt"), list).unwrap();
    plink(
        &refdir,
        &["--merge-list", "sites.txt", "--make-bed", "--out", "merged"],
    );
    for id in ["gwas_t2d", "gwas_mace"] {
        let r = results["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no result {id}: {results}"));
        let v = &r["value"];
        assert!(v["error"].is_null(), "{id}: {v}");
        assert_eq!(v["variants"], 2000);
        found_at_the_predicted_power(id, v, &tmp.path().join("pop/ground_truth.json"));
        // Phenotype and covariates, as each site defines them.
        let mut pheno = String::new();
        for (k, s) in sites.iter().enumerate() {
            let f = refdir.join(format!("{id}_{k}.txt"));
            let (ok, o, e) = medfed(&[
                "model",
                "features",
                study.to_str().unwrap(),
                "--analysis",
                id,
                "--site",
                s.to_str().unwrap(),
                "--out",
                f.to_str().unwrap(),
            ]);
            assert!(ok, "{o}{e}");
            let text = std::fs::read_to_string(&f).unwrap();
            let mut lines = text.lines();
            let header = lines.next().unwrap();
            if k == 0 {
                pheno.push_str(header);
                pheno.push('\n');
            }
            for l in lines {
                pheno.push_str(l);
                pheno.push('\n');
            }
        }
        std::fs::write(refdir.join(format!("{id}.txt")), pheno).unwrap();
        let p = format!("{id}.txt");
        let base = [
            "--bfile",
            "merged",
            "--keep",
            p.as_str(),
            "--pheno",
            p.as_str(),
            "--pheno-name",
            "PHENO",
        ];
        let run = |extra: &[&str], name: &str| {
            let mut a: Vec<&str> = base.to_vec();
            a.extend(extra);
            let o = format!("{id}_{name}");
            a.extend(["--out", o.as_str()]);
            plink(&refdir, &a);
        };
        run(&["--assoc", "--adjust"], "assoc");
        run(&["--assoc", "fisher"], "fisher");
        run(&["--model"], "model");
        run(&["--hardy"], "hardy");
        run(&["--freq", "case-control"], "frqcc");
        run(&["--freq"], "frq");
        run(&["--missing"], "missing");
        run(
            &[
                "--logistic",
                "hide-covar",
                "beta",
                "--ci",
                "0.95",
                "--covar",
                p.as_str(),
                "--covar-name",
                "AGE,MALE",
            ],
            "logistic",
        );
        let ours = |ext: &str| out.join(format!("{id}.{ext}"));
        let theirs = |name: &str, ext: &str| refdir.join(format!("{id}_{name}.{ext}"));
        // Counts, frequencies, chi-square statistics and HWE p-values: exact to print precision.
        same_file(&ours("assoc"), &theirs("assoc", "assoc"), 0.0);
        same_file(
            &ours("assoc.adjusted"),
            &theirs("assoc", "assoc.adjusted"),
            0.0,
        );
        same_file(
            &ours("assoc.fisher"),
            &theirs("fisher", "assoc.fisher"),
            0.0,
        );
        same_file(&ours("model"), &theirs("model", "model"), 0.0);
        same_file(&ours("hwe"), &theirs("hardy", "hwe"), 0.0);
        same_file(&ours("frq.cc"), &theirs("frqcc", "frq.cc"), 0.0);
        same_file(&ours("frq"), &theirs("frq", "frq"), 0.0);
        same_file(&ours("lmiss"), &theirs("missing", "lmiss"), 0.0);
        // Logistic: the exact federated fit; PLINK 1.9 iterates in single precision, so its printed
        // fourth digit may differ (the fit itself is checked against statsmodels to 1e-6 in
        // crates/genomics/tests/glm_reference.rs).
        same_file(
            &ours("assoc.logistic"),
            &theirs("logistic", "assoc.logistic"),
            2e-3,
        );
        // PLINK 2 fits in double precision without its Firth fallback: the same maximum-likelihood
        // fit. Its Newton iterations stop a little earlier than ours (which equal statsmodels to
        // 1e-6, crates/genomics/tests/glm_reference.rs), so its printed p can differ in the fifth
        // digit.
        let o2 = format!("{id}_p2");
        let st = Command::new("plink2")
            .current_dir(&refdir)
            .args(base)
            .args([
                "--covar",
                p.as_str(),
                "--covar-name",
                "AGE,MALE",
                "--glm",
                "hide-covar",
                "no-firth",
                "--silent",
                "--out",
                o2.as_str(),
            ])
            .output()
            .expect("plink2 (installed by scripts/test-all.sh)");
        assert!(
            st.status.success(),
            "plink2: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let text =
            std::fs::read_to_string(refdir.join(format!("{o2}.PHENO.glm.logistic"))).unwrap();
        let mut lines = text.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches('#')
            .split('\t')
            .collect();
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        let (c_id, c_a1, c_or, c_se, c_p) =
            (col("ID"), col("A1"), col("OR"), col("LOG(OR)_SE"), col("P"));
        let ours: std::collections::HashMap<&str, &serde_json::Value> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["snp"].as_str().unwrap(), x))
            .collect();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
        let (mut compared, mut worst) = (0, [0.0f64; 3]);
        for l in lines {
            let f: Vec<&str> = l.split('\t').collect();
            if f[c_p] == "NA" {
                continue;
            }
            let x = ours[f[c_id]];
            let beta = x["beta"]
                .as_f64()
                .unwrap_or_else(|| panic!("{id} {}: no fit: {x}", f[c_id]));
            let beta = if x["a1"] == f[c_a1] { beta } else { -beta };
            let (or2, se2, p2): (f64, f64, f64) = (
                f[c_or].parse().unwrap(),
                f[c_se].parse().unwrap(),
                f[c_p].parse().unwrap(),
            );
            let (se, p) = (x["se"].as_f64().unwrap(), x["glm_p"].as_f64().unwrap());
            let d = [rel(beta.exp(), or2), rel(se, se2), rel(p, p2)];
            assert!(
                d[0] < 5e-5 && d[1] < 5e-4 && d[2] < 5e-4,
                "{id} {}: ours OR {} SE {se} P {p}; plink2 {or2} {se2} {p2}",
                f[c_id],
                beta.exp()
            );
            for k in 0..3 {
                worst[k] = worst[k].max(d[k]);
            }
            compared += 1;
        }
        eprintln!(
            "{id}: {compared} variants against plink2 --glm no-firth; largest relative differences: OR {:.1e}, SE {:.1e}, P {:.1e}",
            worst[0], worst[1], worst[2]
        );
        assert!(
            compared >= 1900,
            "{id}: only {compared} variants compared with plink2"
        );
    }
}
