//! The site-stratified Cox model against statsmodels PHReg (Breslow ties, strata = site) on the
//! pooled rows, and against the generating hazard ratios.

use std::path::Path;
use std::process::Command;

use medfed_model::{cox_site_sums, fit, CoxRows, Family, SiteSums};
use medfed_privacy::Policy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// log hazard ratios: treated, age per decade, female.
const TRUE_BETA: [f64; 3] = [std::f64::consts::LN_2, 0.3, -0.2];
const P: usize = 3;

struct Site {
    x: Vec<f64>,
    time: Vec<f64>,
    event: Vec<bool>,
}

/// Exponential event times with a baseline hazard that differs by site, administrative censoring at
/// 5 years and random loss to follow-up; times in whole days, so many are tied.
fn simulate(sizes: &[usize], seed: u64) -> Vec<Site> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    sizes
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            let base = 0.0003 * (1.0 + s as f64);
            let (mut x, mut time, mut event) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                let row = [
                    f64::from(rng.random_bool(0.4)),
                    rng.random_range(-2.0..2.0),
                    f64::from(rng.random_bool(0.5)),
                ];
                let eta: f64 = row.iter().zip(TRUE_BETA).map(|(a, b)| a * b).sum();
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                let t_event = (-u.ln() / (base * eta.exp())).ceil();
                let t_cens = rng.random_range(30.0..1825.0f64).ceil();
                x.extend(row);
                time.push(t_event.min(t_cens));
                event.push(t_event <= t_cens);
            }
            Site { x, time, event }
        })
        .collect()
}

#[test]
fn site_stratified_cox_equals_statsmodels_phreg_and_recovers_the_hazard_ratios() {
    let sites = simulate(&[1200, 2000, 1600], 21);
    let policy = Policy::default();
    let f = fit(Family::Cox, P, 0.0, false, 50, |beta| {
        let parts = sites
            .iter()
            .map(|s| {
                let r = CoxRows {
                    p: P,
                    x: &s.x,
                    time: &s.time,
                    event: &s.event,
                };
                cox_site_sums(&r, beta, &policy)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SiteSums::total(parts).expect("sites"))
    })
    .unwrap();
    let ties = sites
        .iter()
        .map(|s| {
            s.time.len() - {
                let mut t = s.time.clone();
                t.sort_by(f64::total_cmp);
                t.dedup();
                t.len()
            }
        })
        .sum::<usize>();
    assert!(ties > 500, "the data should have many tied times ({ties})");

    let dir = std::env::temp_dir().join(format!("medfed-cox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("cox.csv");
    let mut text = String::from("site,time,event,x0,x1,x2\n");
    for (k, s) in sites.iter().enumerate() {
        for i in 0..s.time.len() {
            text.push_str(&format!(
                "{k},{:?},{},{:?},{:?},{:?}\n",
                s.time[i],
                u8::from(s.event[i]),
                s.x[i * P],
                s.x[i * P + 1],
                s.x[i * P + 2]
            ));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cox.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let v = |k: &str, j: usize| r[k][j].as_f64().unwrap();
    for (j, truth) in TRUE_BETA.iter().enumerate() {
        let (a, b) = (f.coefficients[j], v("params", j));
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(b.abs()),
            "beta{j}: {a} vs {b}"
        );
        let (a, b) = (f.std_errors[j], v("bse", j));
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(b.abs()),
            "se{j}: {a} vs {b}"
        );
        assert!(
            (f.coefficients[j] - truth).abs() < 3.0 * f.std_errors[j],
            "beta{j}: {} vs truth {truth} (se {})",
            f.coefficients[j],
            f.std_errors[j]
        );
    }
    let llf = r["llf"].as_f64().unwrap();
    assert!(
        (f.log_likelihood - llf).abs() <= 1e-9 * llf.abs(),
        "{} vs {llf}",
        f.log_likelihood
    );
}
