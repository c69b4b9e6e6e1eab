//! `medfed bench-model`: the federated fit's compute, at pilot scale, for `bench/model.py`.
//!
//! Draws `rows` persons with `covariates` covariates from a known logistic model (deterministic seed),
//! splits them over `sites` sites, and fits the federated logistic regression: every Newton round each
//! site computes its score and information sums at the hub's coefficients (one pass over its rows) and
//! the hub adds them and steps. Reports the whole fit, the time per round (the slowest site's local
//! step: sites run in parallel on their own machines, here one after another), and the cost of adding
//! one round's sums under secure aggregation (masking at each site, unmasking at the hub). With
//! `--npy`, writes the same rows (design matrix and outcome, float64) for statsmodels to fit in the same
//! run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use medfed_model::{Family, Rows, SiteSums};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Covariates besides the intercept.
    #[arg(long, default_value_t = 20)]
    covariates: usize,
    #[arg(long, default_value_t = 6)]
    sites: usize,
    /// Write X (with the intercept column) and y here as .npy files (`<prefix>_x.npy`, `<prefix>_y.npy`).
    #[arg(long)]
    npy: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The true coefficients: intercept −2, then alternating ±0.1·(1 + j mod 5).
pub fn truth(p: usize) -> Vec<f64> {
    (0..p)
        .map(|j| match j {
            0 => -2.0,
            j => {
                let s = if j % 2 == 0 { -1.0 } else { 1.0 };
                s * 0.1 * (1 + j % 5) as f64
            }
        })
        .collect()
}

fn npy_header(shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    let mut h = dict.into_bytes();
    let total = 10 + h.len() + 1;
    h.extend(std::iter::repeat_n(b' ', (64 - total % 64) % 64));
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h);
    out
}

fn write_npy(path: &std::path::Path, shape: &str, values: &[f64]) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&npy_header(shape))?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let p = a.covariates + 1;
    let beta_true = truth(p);
    let mut rng = ChaCha8Rng::seed_from_u64(20261129);
    let mut x = Vec::with_capacity(a.rows * p);
    let mut y = Vec::with_capacity(a.rows);
    for _ in 0..a.rows {
        let start = x.len();
        x.push(1.0);
        for j in 1..p {
            // Half binary, half continuous covariates, as in a clinical design matrix.
            x.push(if j % 2 == 0 {
                (rng.random::<f64>() < 0.3) as u8 as f64
            } else {
                rng.random::<f64>() * 2.0 - 1.0
            });
        }
        let eta: f64 = x[start..].iter().zip(&beta_true).map(|(a, b)| a * b).sum();
        y.push((rng.random::<f64>() < 1.0 / (1.0 + (-eta).exp())) as u8 as f64);
    }
    if let Some(prefix) = &a.npy {
        let s = prefix.to_string_lossy();
        write_npy(
            &PathBuf::from(format!("{s}_x.npy")),
            &format!("({}, {p})", a.rows),
            &x,
        )?;
        write_npy(
            &PathBuf::from(format!("{s}_y.npy")),
            &format!("({},)", a.rows),
            &y,
        )?;
    }
    let per = a.rows.div_ceil(a.sites);
    let bounds: Vec<(usize, usize)> = (0..a.sites)
        .map(|k| (k * per, ((k + 1) * per).min(a.rows)))
        .collect();
    let mut round_ms: Vec<f64> = Vec::new();
    let started = Instant::now();
    let fit = medfed_model::fit(Family::Binomial, p, 0.0, true, 50, |beta| {
        let mut slowest = 0f64;
        let mut parts = Vec::new();
        for &(lo, hi) in &bounds {
            let t = Instant::now();
            let rows = Rows {
                p,
                x: &x[lo * p..hi * p],
                y: &y[lo..hi],
                offset: None,
            };
            parts.push(medfed_model::glm_sums(Family::Binomial, &rows, beta)?);
            slowest = slowest.max(t.elapsed().as_secs_f64() * 1e3);
        }
        round_ms.push(slowest);
        SiteSums::total(parts).ok_or(medfed_model::ModelError::Rows("no sites".into()))
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let fit_s = started.elapsed().as_secs_f64();
    // Secure aggregation of one round's sums over the sites.
    // Two ring elements per released number (the two-word fixed-point encoding).
    let len = 2 * SiteSums::released_len(p);
    let secagg_ms = secagg_round_ms(a.sites, len)?;
    let max_err = fit
        .coefficients
        .iter()
        .zip(&beta_true)
        .zip(&fit.std_errors)
        .map(|((b, t), se)| ((b - t) / se).abs())
        .fold(0.0, f64::max);
    let out = serde_json::json!({
        "rows": a.rows, "covariates": a.covariates, "sites": a.sites,
        "fit_s": fit_s, "iterations": fit.iterations, "evaluations": round_ms.len(),
        "round_ms_slowest_site": round_ms.iter().sum::<f64>() / round_ms.len().max(1) as f64,
        "secagg_round_ms": secagg_ms, "ring_elements_per_site": len,
        "peak_rss_mib": peak_rss_mib(),
        "coefficients": fit.coefficients, "std_errors": fit.std_errors,
        "max_abs_z_from_truth": max_err,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Wall time of one secure aggregation of `len` values over `sites` sites (key agreement, share
/// exchange, masking at every site, unmasking at the hub), in milliseconds.
fn secagg_round_ms(sites: usize, len: usize) -> anyhow::Result<f64> {
    use medfed_secagg::{unmask_sum, Client, FixedPoint};
    use std::collections::BTreeMap;
    let fp = FixedPoint { frac_bits: 40 };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let n = sites as u32;
    let t = (n / 2 + 1).max(2);
    let started = Instant::now();
    let session = [1u8; 32];
    let (mut clients, adverts): (Vec<Client>, Vec<_>) =
        (1..=n).map(|id| Client::new(id, session, &mut rng)).unzip();
    let mut sealed = Vec::new();
    for c in clients.iter_mut() {
        sealed.extend(c.share_keys(&adverts, t as usize, &mut rng)?);
    }
    let sharers: Vec<u32> = (1..=n).collect();
    let mut masked = BTreeMap::new();
    let values: Vec<u64> = (0..len)
        .map(|i| fp.encode(i as f64 * 0.5).unwrap_or(0))
        .collect();
    for (k, c) in clients.iter_mut().enumerate() {
        c.receive_shares(&sealed)?;
        masked.insert(k as u32 + 1, c.masked_input(&values, &sharers)?);
    }
    let mut reveals = Vec::new();
    for c in &clients {
        reveals.extend(c.unmask(&sharers, &[])?);
    }
    unmask_sum(session, &adverts, t as usize, &sharers, &masked, &reveals)?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}
