//! The federated GLM against statsmodels on the pooled rows, against the generating model, under
//! secure aggregation, and against the disclosure checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use medfed_model::{fit, site_sums, Family, Fit, ModelError, Rows, SiteSums};
use medfed_privacy::{Policy, Suppression};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal, Poisson};

/// Covariates: intercept, age (decades above 50), female, BMI (per 5 above 25), smoker.
const TRUE_BETA: [f64; 5] = [-1.2, 0.45, -0.3, 0.25, 0.6];
const P: usize = 5;

struct Site {
    x: Vec<f64>,
    y: Vec<f64>,
    offset: Vec<f64>,
}

fn simulate(family: Family, sizes: &[usize], seed: u64) -> Vec<Site> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 2.0).unwrap();
    sizes
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            let (mut x, mut y, mut offset) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                // Sites differ in case mix, as hospitals do.
                let age = rng.random_range(-3.0..3.0) + 0.3 * s as f64;
                let row = [
                    1.0,
                    age,
                    f64::from(rng.random_bool(0.5)),
                    Normal::new(0.1 * s as f64, 1.0).unwrap().sample(&mut rng),
                    f64::from(rng.random_bool(0.2 + 0.05 * s as f64)),
                ];
                let eta: f64 = row.iter().zip(TRUE_BETA).map(|(a, b)| a * b).sum();
                let (yy, off) = match family {
                    Family::Gaussian => (10.0 * eta + noise.sample(&mut rng), 0.0),
                    Family::Binomial => {
                        (f64::from(rng.random_bool(1.0 / (1.0 + (-eta).exp()))), 0.0)
                    }
                    Family::Cox => unreachable!("GLM families only"),
                    Family::Poisson => {
                        let years: f64 = rng.random_range(0.5..5.0);
                        let mu = (eta + years.ln()).exp();
                        (Poisson::new(mu).unwrap().sample(&mut rng), years.ln())
                    }
                };
                x.extend(row);
                y.push(yy);
                offset.push(off);
            }
            Site { x, y, offset }
        })
        .collect()
}

fn rows(s: &Site) -> Rows<'_> {
    Rows {
        p: P,
        x: &s.x,
        y: &s.y,
        offset: Some(&s.offset),
    }
}

fn federated(family: Family, sites: &[Site], policy: &Policy) -> Result<Fit, ModelError> {
    fit(family, P, 0.0, true, 50, |beta| {
        let parts = sites
            .iter()
            .map(|s| site_sums(family, &rows(s), beta, policy))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SiteSums::total(parts).expect("sites"))
    })
}

fn statsmodels(family: &str, sites: &[Site], dir: &Path) -> serde_json::Value {
    let csv = dir.join(format!("{family}.csv"));
    let mut text = String::from("site,y,offset");
    for j in 0..P {
        text.push_str(&format!(",x{j}"));
    }
    text.push('\n');
    for (k, s) in sites.iter().enumerate() {
        for i in 0..s.y.len() {
            text.push_str(&format!("{k},{:?},{:?}", s.y[i], s.offset[i]));
            for j in 0..P {
                text.push_str(&format!(",{:?}", s.x[i * P + j]));
            }
            text.push('\n');
        }
    }
    std::fs::write(&csv, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/glm.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&csv)
        .arg(family)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn federated_glm_equals_the_pooled_statsmodels_fit_and_recovers_the_truth() {
    let tmp = std::env::temp_dir().join(format!("medfed-glm-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let policy = Policy::default();
    for (family, name) in [
        (Family::Gaussian, "gaussian"),
        (Family::Binomial, "binomial"),
        (Family::Poisson, "poisson"),
    ] {
        let sites = simulate(family, &[1500, 2500, 2000], 11);
        let f = federated(family, &sites, &policy).unwrap();
        let r = statsmodels(name, &sites, &tmp);
        let v = |k: &str| -> Vec<f64> {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for j in 0..P {
            close(
                f.coefficients[j],
                v("params")[j],
                1e-6,
                &format!("{name} beta{j}"),
            );
            close(f.std_errors[j], v("bse")[j], 1e-6, &format!("{name} se{j}"));
            close(
                f.ci_low[j],
                v("ci_low")[j],
                1e-6,
                &format!("{name} ci_low{j}"),
            );
            close(
                f.ci_high[j],
                v("ci_high")[j],
                1e-6,
                &format!("{name} ci_high{j}"),
            );
            // p-values underflow towards 0 at different points; compare where they are visible.
            if v("pvalues")[j] > 1e-200 {
                close(
                    f.p_values[j],
                    v("pvalues")[j],
                    1e-5,
                    &format!("{name} p{j}"),
                );
            }
        }
        close(
            f.deviance,
            r["deviance"].as_f64().unwrap(),
            1e-9,
            &format!("{name} deviance"),
        );
        close(
            f.scale,
            r["scale"].as_f64().unwrap(),
            1e-6,
            &format!("{name} scale"),
        );
        close(
            f.log_likelihood,
            r["llf"].as_f64().unwrap(),
            1e-9,
            &format!("{name} llf"),
        );
        close(
            f.aic,
            r["aic"].as_f64().unwrap(),
            1e-9,
            &format!("{name} aic"),
        );
        // The generating coefficients (×10 for the Gaussian outcome) lie within 3 standard errors.
        let truth = |j: usize| {
            TRUE_BETA[j]
                * if family == Family::Gaussian {
                    10.0
                } else {
                    1.0
                }
        };
        for j in 0..P {
            assert!(
                (f.coefficients[j] - truth(j)).abs() < 3.0 * f.std_errors[j],
                "{name} beta{j}: {} vs truth {} (se {})",
                f.coefficients[j],
                truth(j),
                f.std_errors[j]
            );
        }
        assert!(
            f.iterations >= 1 && f.iterations < 15,
            "{name}: {} iterations",
            f.iterations
        );
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The same fit with each iteration's sums added under secure aggregation: the hub never sees one
/// site's score or information, and the coefficients agree with the plain federated fit to the
/// fixed-point resolution.
#[test]
fn federated_logistic_regression_runs_under_secure_aggregation() {
    use medfed_secagg::{unmask_sum, Client, FixedPoint};
    let sites = simulate(Family::Binomial, &[1500, 2500, 2000, 1800], 12);
    let policy = Policy::default();
    let plain = federated(Family::Binomial, &sites, &policy).unwrap();
    let fp = FixedPoint { frac_bits: 24 };
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut round_no = 0u8;
    let secure = fit(Family::Binomial, P, 0.0, true, 50, |beta| {
        round_no += 1;
        let session = [round_no; 32];
        let n = sites.len() as u32;
        let (mut clients, adverts): (Vec<Client>, Vec<_>) =
            (1..=n).map(|id| Client::new(id, session, &mut rng)).unzip();
        let mut sealed = Vec::new();
        for c in clients.iter_mut() {
            sealed.extend(c.share_keys(&adverts, 3, &mut rng).unwrap());
        }
        let sharers: Vec<u32> = (1..=n).collect();
        let mut masked = BTreeMap::new();
        for (k, c) in clients.iter_mut().enumerate() {
            c.receive_shares(&sealed).unwrap();
            let sums = site_sums(Family::Binomial, &rows(&sites[k]), beta, &policy)?;
            let enc: Vec<u64> = sums
                .to_vec()
                .iter()
                .map(|v| fp.encode(*v).unwrap())
                .collect();
            masked.insert(k as u32 + 1, c.masked_input(&enc, &sharers).unwrap());
        }
        let mut reveals = Vec::new();
        for c in &clients {
            reveals.extend(c.unmask(&sharers, &[]).unwrap());
        }
        let total = unmask_sum(session, &adverts, 3, &sharers, &masked, &reveals).unwrap();
        let dec: Vec<f64> = total.into_iter().map(|v| fp.decode(v)).collect();
        Ok(SiteSums::from_vec(P, &dec).unwrap())
    })
    .unwrap();
    for j in 0..P {
        close(
            secure.coefficients[j],
            plain.coefficients[j],
            1e-8,
            &format!("beta{j}"),
        );
        close(
            secure.std_errors[j],
            plain.std_errors[j],
            1e-8,
            &format!("se{j}"),
        );
    }
}

#[test]
fn over_parameterised_models_and_sites_with_few_events_are_refused() {
    let policy = Policy::default();
    // A site with 30 rows cannot take a 12-parameter model (0.33 × 30 = 9).
    let x = vec![1.0; 30 * 12];
    let y: Vec<f64> = (0..30).map(|i| f64::from(i % 2 == 0)).collect();
    let r = Rows {
        p: 12,
        x: &x,
        y: &y,
        offset: None,
    };
    assert_eq!(
        site_sums(Family::Binomial, &r, &[0.0; 12], &policy),
        Err(ModelError::Refused(Suppression::ModelParameters {
            parameters: 12,
            max_parameters: 9
        }))
    );
    // As many parameters as rows: refused the same way.
    let x = vec![1.0; 40 * 40];
    let y = vec![1.0; 40];
    let r = Rows {
        p: 40,
        x: &x,
        y: &y,
        offset: None,
    };
    assert!(matches!(
        site_sums(Family::Gaussian, &r, &[0.0; 40], &policy),
        Err(ModelError::Refused(Suppression::ModelParameters { .. }))
    ));
    // A site with 3 events among 200 rows releases nothing about them.
    let x: Vec<f64> = (0..200).flat_map(|i| [1.0, i as f64 / 100.0]).collect();
    let y: Vec<f64> = (0..200).map(|i| f64::from(i < 3)).collect();
    let r = Rows {
        p: 2,
        x: &x,
        y: &y,
        offset: None,
    };
    assert_eq!(
        site_sums(Family::Binomial, &r, &[0.0; 2], &policy),
        Err(ModelError::Refused(Suppression::MinCellCount {
            threshold: 10
        }))
    );
    // Bad rows are named.
    let y2 = vec![2.0; 200];
    let r = Rows {
        p: 2,
        x: &x,
        y: &y2,
        offset: None,
    };
    let e = site_sums(Family::Binomial, &r, &[0.0; 2], &policy)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 0: response 2 is not valid for Binomial"),
        "{e}"
    );
}
