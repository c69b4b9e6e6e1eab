//! `medfed bench-surveil`: the hub's full detector run at pilot scale, for `bench/surveil.py`.
//!
//! Draws daily network totals for `districts` districts × `groups` groups × `syndromes` syndromes ×
//! `years` years (Poisson, a cell baseline from a log-normal, an annual cycle, planted outbreaks;
//! deterministic seed), then runs everything `medfed surveil` runs at the hub: EARS C1–C3 and the
//! CUSUM on every daily series, Farrington Flexible on every weekly series, the space–time scan on
//! every group × syndrome each day, and the grouping. Reports wall time per step and peak memory.
//! With `--farrington-csv`, writes `--farrington-series` of the weekly series for R's
//! `farringtonFlexible` to run in the same benchmark, and the bounds this build computed for them.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use medfed_analysis::surveil::{detect, Cube};
use medfed_protocol::surveil::Surveillance;
use medfed_surveil as sv;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 5)]
    groups: usize,
    #[arg(long, default_value_t = 5)]
    syndromes: usize,
    #[arg(long, default_value_t = 5)]
    years: usize,
    /// Median daily cases of a district × group × syndrome cell.
    #[arg(long, default_value_t = 0.3)]
    rate: f64,
    /// Write this many weekly series (and this build's Farrington bounds for them) for R.
    #[arg(long)]
    farrington_csv: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    farrington_series: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn spec(groups: usize, syndromes: usize, years: usize) -> anyhow::Result<Surveillance> {
    let all = [
        "elderly",
        "child_u5",
        "medical_aid",
        "disability",
        "elderly_alone",
        "outdoor_worker",
        "all",
    ];
    let syn: Vec<serde_json::Value> = (0..syndromes)
        .map(|k| serde_json::json!({"id": format!("s{k}"), "concepts": [1 + k as i64]}))
        .collect();
    let v = serde_json::json!({
        "id": "bench",
        "syndromes": syn,
        "groups": &all[..groups.min(all.len())],
        "from": "2020-01-01",
        "to": medfed_protocol::surveil::day_string(
            medfed_protocol::surveil::parse_day("2020-01-01").unwrap_or(0) + (years as f64 * 365.25) as i64 - 1),
        "chunk_days": 1,
    });
    serde_json::from_value(v).context("benchmark spec")
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let s = spec(a.groups, a.syndromes, a.years)?;
    let first = s.first_day();
    let days = (s.last_day() - first + 1) as usize;
    let mut cube = Cube::new(&s, first, days);
    let nd = cube.districts.len();
    let mut rng = ChaCha8Rng::seed_from_u64(20261129);
    let t0 = Instant::now();
    let ln = LogNormal::new(a.rate.ln(), 1.0).context("rate")?;
    let mut cells = 0usize;
    let mut planted = 0usize;
    for k in 0..a.syndromes {
        let peak: f64 = rng.random_range(0.0..365.0);
        for g in 0..a.groups {
            for d in 0..nd {
                let base: f64 = ln.sample(&mut rng);
                let i = ((k * a.groups + g) * nd + d) * days;
                // One outbreak per cell in ten: 4× the baseline for two weeks.
                let outbreak =
                    (rng.random::<f64>() < 0.1).then(|| rng.random_range(400..days - 14));
                planted += usize::from(outbreak.is_some());
                for t in 0..days {
                    let season =
                        1.0 + 0.6 * (2.0 * std::f64::consts::PI * (t as f64 - peak) / 365.25).cos();
                    let boost = match outbreak {
                        Some(o) if t >= o && t < o + 14 => 4.0,
                        _ => 1.0,
                    };
                    let mu = base * season * boost;
                    cube.counts[i + t] =
                        Poisson::new(mu).map(|p| p.sample(&mut rng)).unwrap_or(0.0);
                }
                cells += 1;
            }
        }
    }
    let draw_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let det = detect(&s, &cube, &|_| {});
    let detect_s = t1.elapsed().as_secs_f64();
    // The Farrington step alone on the same weekly series, for the comparison with R.
    let weeks = days / 7;
    let off = days - weeks * 7;
    let far = sv::FarringtonControl {
        b: s.detectors.farrington_years,
        alpha: s.detectors.farrington_alpha,
        past_weeks_not_included: Some(3),
        ..sv::FarringtonControl::noufaily()
    };
    let first_week = far.b * 52 + far.w + 1;
    let weekly = |k: usize, g: usize, d: usize| -> Vec<f64> {
        let x = cube.series(k, g, d);
        (0..weeks)
            .map(|w| x[off + w * 7..off + w * 7 + 7].iter().sum())
            .collect()
    };
    let t2 = Instant::now();
    let mut far_points = 0usize;
    for k in 0..a.syndromes {
        for g in 0..a.groups {
            for d in 0..nd {
                let w = weekly(k, g, d);
                let ser = sv::Series {
                    observed: &w,
                    freq: 52,
                    dates: None,
                };
                far_points += sv::farrington_flexible(&ser, first_week..weeks, &far)
                    .map(|p| p.len())
                    .unwrap_or(0);
            }
        }
    }
    let farrington_s = t2.elapsed().as_secs_f64();
    if let Some(path) = &a.farrington_csv {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        writeln!(f, "series,t,observed,upperbound,alarm")?;
        let t3 = Instant::now();
        for n in 0..a.farrington_series.min(cells) {
            let (k, rest) = (n % a.syndromes, n / a.syndromes);
            let (g, d) = (rest % a.groups, (rest / a.groups) % nd);
            let w = weekly(k, g, d);
            let ser = sv::Series {
                observed: &w,
                freq: 52,
                dates: None,
            };
            let pts = sv::farrington_flexible(&ser, first_week..weeks, &far)?;
            let mut by_t = vec![None; weeks];
            for p in &pts {
                by_t[p.t] = Some(p);
            }
            for (t, obs) in w.iter().enumerate() {
                let (ub, alarm) = match by_t[t] {
                    Some(p) => (
                        p.upperbound
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "NA".into()),
                        if p.upperbound.is_some() {
                            i32::from(p.alarm).to_string()
                        } else {
                            "NA".into()
                        },
                    ),
                    None => ("".into(), "".into()),
                };
                writeln!(f, "{n},{},{obs},{ub},{alarm}", t + 1)?;
            }
        }
        let subset_s = t3.elapsed().as_secs_f64();
        eprintln!("farrington subset: {subset_s:.3} s");
    }
    let raised = det.alerts.iter().filter(|x| x.raised).count();
    let out = serde_json::json!({
        "districts": nd,
        "groups": a.groups,
        "syndromes": a.syndromes,
        "days": days,
        "series": cells,
        "values": cube.counts.len(),
        "planted_outbreaks": planted,
        "draw_s": draw_s,
        "detect_s": detect_s,
        "farrington_s": farrington_s,
        "farrington_points": far_points,
        "farrington_first_week": first_week + 1,
        "alarms": det.alarms,
        "alerts_raised": raised,
        "peak_rss_mib": super::bench_model::peak_rss_mib(),
        "threads": 1,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
