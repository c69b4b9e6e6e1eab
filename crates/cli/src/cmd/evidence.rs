//! `medfed city evidence`: exposure–response of respiratory and cardiovascular visits to district
//! PM2.5 and heat, from daily counts added over hospitals under secure aggregation.
//!
//! The counts are a surveillance stream (`examples/studies/environment.json`) whose network totals
//! stay at the hub; this runs at the hub, as the operator, like the surveillance detectors: either
//! in this process over site stores (`--site`, each acting as one node) or over a hub database
//! (`--hub-db`). Only the fitted relative risks, intervals and curves are written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use medfed_analysis::surveil::Cube;
use medfed_city::evidence::{self, Curve, Environment, Evidence, LagPoint};
use medfed_protocol::surveil::Surveillance;
use medfed_protocol::AnalysisSpec;
use serde::Serialize;

pub const STUDY: &str = include_str!("../../../../examples/studies/environment.json");

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  medfed synth --persons 100000 --hospitals 3 --out pop\n  \
  medfed city evidence --site pop/hospital_a --site pop/hospital_b --site pop/hospital_c\n  \
  medfed city evidence --hub-db hub/hub.sqlite --environment pop/environment.csv")]
pub struct Args {
    /// Site stores to count over in this process, each acting as one node (at least two).
    #[arg(long = "site")]
    sites: Vec<PathBuf>,
    /// Instead of --site: a hub database that already holds the environment stream's totals
    /// (the operator's view on the hub's machine; no API serves them).
    #[arg(long)]
    hub_db: Option<PathBuf>,
    /// District series `district,date,pm25,tmax` [default: environment.csv beside the first site].
    #[arg(long)]
    environment: Option<PathBuf>,
    /// A synthetic population's ground_truth.json: compare with the planted relative risks
    /// [default: ground_truth.json beside the first site, when there].
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Study with the counting stream [default: examples/studies/environment.json, built in].
    #[arg(long)]
    study: Option<PathBuf>,
    /// Output folder: evidence.json, evidence.html (curves), quarantine.csv.
    #[arg(long, default_value = "evidence-out")]
    out: PathBuf,
}

/// A planted effect of the synthetic population.
#[derive(Clone, Debug, Serialize)]
pub struct Planted {
    pub syndrome: String,
    pub exposure: String,
    pub relative_risk: f64,
    pub per: f64,
    pub threshold: Option<f64>,
    pub reference: Option<f64>,
    pub lags: (usize, usize),
}

impl Planted {
    /// The planted relative risk at exposure `x` against `reference` (the curves' truth line).
    pub fn rr(&self, x: f64, reference: f64) -> f64 {
        let b = self.relative_risk.ln() / self.per;
        match self.threshold {
            Some(t) => (b * ((x - t).max(0.0) - (reference - t).max(0.0))).exp(),
            None => (b * (x - reference)).exp(),
        }
    }
}

/// What the run found, with the truth beside it when there is one.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub evidence: Evidence,
    pub planted: Vec<Planted>,
    /// Per estimate: the planted relative risk in the same units, and whether the interval holds it.
    pub checks: Vec<Check>,
    pub quarantined: usize,
    pub missing_environment_values: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub outcome: String,
    pub exposure: String,
    pub planted: f64,
    pub estimated: f64,
    pub lo: f64,
    pub hi: f64,
    pub inside: bool,
}

pub fn planted(truth: &Path) -> anyhow::Result<Vec<Planted>> {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(truth)
            .with_context(|| format!("cannot read {}", truth.display()))?,
    )
    .with_context(|| format!("{} is not JSON", truth.display()))?;
    let list = t["environment"]["effects"].as_array().with_context(|| {
        format!(
            "{}: no environment.effects (an older population?)",
            truth.display()
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let s = |k: &str| {
                e[k].as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}: environment.effects[{i}].{k}", truth.display()))
            };
            let f = |k: &str| {
                e[k].as_f64()
                    .with_context(|| format!("{}: environment.effects[{i}].{k}", truth.display()))
            };
            let lags = e["lags"].as_array().map(|l| {
                (
                    l.first().and_then(|x| x.as_u64()).unwrap_or(0) as usize,
                    l.get(1).and_then(|x| x.as_u64()).unwrap_or(0) as usize,
                )
            });
            Ok(Planted {
                syndrome: s("syndrome")?,
                exposure: s("exposure")?,
                relative_risk: f("relative_risk")?,
                per: f("per")?,
                threshold: e["threshold"].as_f64(),
                reference: e["reference"].as_f64(),
                lags: lags.unwrap_or((0, 0)),
            })
        })
        .collect()
}

fn stream(study_text: &str) -> anyhow::Result<Surveillance> {
    let study = medfed_protocol::study::parse_study(study_text)
        .map_err(|e| anyhow::anyhow!("study refused: {e}"))?;
    study
        .analyses
        .into_iter()
        .find_map(|a| match a {
            AnalysisSpec::Surveillance(s) => Some(s),
            _ => None,
        })
        .context("the study has no surveillance analysis")
}

/// The stream's totals as a hub database holds them (the operator's view on the hub's machine).
pub fn hub_cube(db: &Path, s: &Surveillance) -> anyhow::Result<Cube> {
    let mut store = medfed_hub::store::Store::new(Box::new(medfed_hub::db::Sqlite::open(
        &db.to_string_lossy(),
    )?))?;
    store
        .surveillance_cube(s)?
        .with_context(|| format!("{} holds no totals of stream {:?}", db.display(), s.id))
}

/// The built-in environment stream.
pub fn default_stream() -> anyhow::Result<Surveillance> {
    stream(STUDY)
}

/// Respiratory and cardiovascular counts of the stream's "all" group on the environment's calendar.
/// Days the hub holds no totals for are left out, never read as zero.
pub fn outcomes(
    cube: &Cube,
    env: &Environment,
) -> anyhow::Result<(evidence::Outcome, evidence::Outcome)> {
    let g = cube
        .groups
        .iter()
        .position(|g| g.name() == "all")
        .context("the stream has no \"all\" group")?;
    let missing: std::collections::HashSet<i64> = cube.missing_days.iter().copied().collect();
    let district: std::collections::HashMap<&str, usize> = cube
        .districts
        .iter()
        .enumerate()
        .map(|(i, d)| (d.code.as_str(), i))
        .collect();
    let one = |name: &str| -> anyhow::Result<evidence::Outcome> {
        let k = cube
            .syndromes
            .iter()
            .position(|s| s == name)
            .with_context(|| format!("the stream has no {name:?} syndrome"))?;
        Ok(evidence::align(env, name, |code, day| {
            let d = *district.get(code)?;
            let t = day - cube.first_day;
            if t < 0 || t as usize >= cube.days || missing.contains(&day) {
                return None;
            }
            Some(cube.series(k, g, d)[t as usize])
        }))
    };
    Ok((one("respiratory")?, one("cardiovascular")?))
}

/// Fit everything and set it beside the truth.
pub fn report(
    cube: &Cube,
    env_path: &Path,
    truth: Option<&Path>,
    out: &Path,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (env, quarantine) = evidence::read_environment(env_path)?;
    if !quarantine.is_empty() {
        medfed_city::feed::write_quarantine(&out.join("quarantine.csv"), &quarantine)?;
        println!(
            "{} rows of {} quarantined: {}",
            quarantine.len(),
            env_path.display(),
            out.join("quarantine.csv").display()
        );
    }
    let (resp, cardio) = outcomes(cube, &env)?;
    let bar = super::progress::spinner("fitting");
    let ev = evidence::analyse(&env, &resp, &cardio, &|what| {
        bar.set_message(what.to_string())
    })?;
    bar.finish_and_clear();
    let planted = match truth {
        Some(t) => planted(t)?,
        None => Vec::new(),
    };
    let mut checks = Vec::new();
    for p in &planted {
        for e in ev.estimates.iter().filter(|e| e.outcome == p.syndrome) {
            // The planted effect in the estimate's units; the other exposure has none.
            let value = if e.exposure == p.exposure {
                p.relative_risk
            } else {
                1.0
            };
            checks.push(Check {
                outcome: e.outcome.clone(),
                exposure: e.exposure.clone(),
                planted: value,
                estimated: e.rr,
                lo: e.lo,
                hi: e.hi,
                inside: e.lo <= value && value <= e.hi,
            });
        }
    }
    Ok(Report {
        evidence: ev,
        planted,
        checks,
        quarantined: quarantine.len(),
        missing_environment_values: env.missing,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn print(r: &Report) {
    let ev = &r.evidence;
    println!(
        "evidence: {} districts, {} to {}; {}",
        ev.districts, ev.first_day, ev.last_day, ev.method
    );
    println!(
        "  {:<15} {:<6} {:<14} {:<26} {:>7} {:>17} {:>9} {:>5}",
        "outcome", "expo", "lags", "per", "RR", "95% CI", "cases", "phi"
    );
    for e in &ev.estimates {
        println!(
            "  {:<15} {:<6} {:<14} {:<26} {:>7.4} {:>8.4}–{:<8.4} {:>9.0} {:>5.2}",
            e.outcome, e.exposure, e.lags, e.per, e.rr, e.lo, e.hi, e.cases, e.phi
        );
    }
    let t = &ev.threshold;
    println!(
        "  heat threshold ({}): {:.1} °C, 95% profile interval {:.1}–{:.1}",
        t.outcome, t.best, t.lo, t.hi
    );
    for c in &r.checks {
        println!(
            "  planted {} ~ {}: RR {:.4}; estimated {:.4} ({:.4}–{:.4}) {}",
            c.outcome,
            c.exposure,
            c.planted,
            c.estimated,
            c.lo,
            c.hi,
            if c.inside { "inside" } else { "OUTSIDE" }
        );
    }
    for p in r.planted.iter().filter_map(|p| p.threshold) {
        println!(
            "  planted heat threshold {p:.1} °C: {}",
            if t.lo <= p && p <= t.hi {
                "inside the profile interval"
            } else {
                "OUTSIDE the profile interval"
            }
        );
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = match &a.study {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => STUDY.to_string(),
    };
    let s = stream(&text)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let beside = |name: &str| {
        a.sites
            .first()
            .and_then(|s| s.parent())
            .map(|p| p.join(name))
    };
    let env_path = a
        .environment
        .clone()
        .or_else(|| beside("environment.csv"))
        .context("give --environment (district,date,pm25,tmax), or --site stores of a synthetic population that has one")?;
    let truth = a
        .truth
        .clone()
        .or_else(|| beside("ground_truth.json").filter(|p| p.exists()));
    let cube = match (&a.hub_db, a.sites.len()) {
        (Some(_), n) if n > 0 => bail!("give --site or --hub-db, not both"),
        (Some(db), _) => hub_cube(db, &s)?,
        (None, 0) => bail!(
            "give --site (at least two site stores, e.g. from `medfed synth`) or --hub-db; see --help"
        ),
        (None, 1) => bail!("the counts need at least two sites: the hub may only see counts added over sites"),
        (None, _) => {
            let t = Instant::now();
            let pb = super::progress::spinner("counting under secure aggregation");
            let (_, hub) =
                super::study::run_in_process_keep(&text, &a.sites, None, &a.out, Some(&pb))?;
            pb.finish_and_clear();
            println!(
                "{} sites counted in {:.1} s",
                a.sites.len(),
                t.elapsed().as_secs_f64()
            );
            hub.surveillance_cube(&s)?
                .context("the hub holds no totals for the stream")?
        }
    };
    let r = report(&cube, &env_path, truth.as_deref(), &a.out)?;
    print(&r);
    let json = a.out.join("evidence.json");
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
    let html = a.out.join("evidence.html");
    std::fs::write(
        &html,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>medfed: environment evidence</title></head><body style=\"font-family:sans-serif;max-width:1000px;margin:auto\">{}</body></html>",
            section(&r)
        ),
    )?;
    println!("evidence: {} and {}", json.display(), html.display());
    Ok(())
}

/// An exposure–response curve with its 95 % band, the planted curve dashed when known.
pub fn curve_svg(c: &Curve, truth: Option<&Planted>) -> String {
    let (w, h, l, b) = (460.0, 260.0, 50.0, 36.0);
    let xs: Vec<f64> = c.points.iter().map(|p| p.x).collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1]);
    let truth_y: Vec<f64> = match truth {
        Some(p) => xs.iter().map(|&x| p.rr(x, c.reference)).collect(),
        None => Vec::new(),
    };
    let lo = c
        .points
        .iter()
        .map(|p| p.lo)
        .chain(truth_y.iter().copied())
        .fold(1.0f64, f64::min)
        .ln();
    let hi = c
        .points
        .iter()
        .map(|p| p.hi)
        .chain(truth_y.iter().copied())
        .fold(1.0f64, f64::max)
        .ln();
    let (lo, hi) = (lo - 0.02, hi + 0.02);
    let px = |x: f64| l + (x - x0) / (x1 - x0).max(1e-9) * (w - l - 10.0);
    let py = |r: f64| 10.0 + (hi - r.ln()) / (hi - lo) * (h - b - 10.0);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">"#);
    let band: Vec<String> = c
        .points
        .iter()
        .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.hi)))
        .chain(
            c.points
                .iter()
                .rev()
                .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.lo))),
        )
        .collect();
    let _ = write!(
        s,
        r##"<polygon points="{}" fill="#9ecae1" opacity="0.6"/>"##,
        band.join(" ")
    );
    let line: Vec<String> = c
        .points
        .iter()
        .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.rr)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#08519c" stroke-width="2"/>"##,
        line.join(" ")
    );
    if !truth_y.is_empty() {
        let t: Vec<String> = xs
            .iter()
            .zip(&truth_y)
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#cb181d" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
            t.join(" ")
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="2 2"/>"##,
        w - 10.0,
        py(1.0),
        py(1.0)
    );
    // Axes and ticks.
    let _ = write!(
        s,
        r##"<line x1="{l}" x2="{l}" y1="10" y2="{:.1}" stroke="#333"/><line x1="{l}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        h - b,
        w - 10.0,
        h - b,
        h - b
    );
    for i in 0..=4 {
        let x = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{x:.0}</text>"#,
            px(x),
            h - b + 13.0
        );
        let r = (lo + (hi - lo) * f64::from(i) / 4.0).exp();
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{r:.2}</text>"#,
            l - 4.0,
            py(r) + 3.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} {}, {} (relative to {} {})</text>"#,
        (l + w) / 2.0,
        h - 6.0,
        c.exposure,
        c.lags,
        c.unit,
        c.reference,
        c.unit
    );
    s.push_str("</svg>");
    s
}

/// Lag-specific relative risks per 10 µg/m³ with intervals.
fn lags_svg(points: &[LagPoint]) -> String {
    let (w, h, l, b) = (360.0, 200.0, 50.0, 30.0);
    let lo = points.iter().map(|p| p.lo.ln()).fold(0.0f64, f64::min) - 0.005;
    let hi = points.iter().map(|p| p.hi.ln()).fold(0.0f64, f64::max) + 0.005;
    let py = |r: f64| 10.0 + (hi - r.ln()) / (hi - lo) * (h - b - 10.0);
    let step = (w - l - 10.0) / points.len() as f64;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">"#);
    let _ = write!(
        s,
        r##"<line x1="{l}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="2 2"/>"##,
        w - 10.0,
        py(1.0),
        py(1.0)
    );
    for (i, p) in points.iter().enumerate() {
        let x = l + step * (i as f64 + 0.5);
        let color = if p.lag.is_some() {
            "#08519c"
        } else {
            "#54278f"
        };
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{color}"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            py(p.lo),
            py(p.hi),
            py(p.rr),
            h - b + 13.0,
            p.lag
                .map(|l| format!("lag {l}"))
                .unwrap_or_else(|| "sum".into())
        );
    }
    for r in [lo.exp(), 1.0, hi.exp()] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{r:.3}</text>"#,
            l - 4.0,
            py(r) + 3.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The evidence part of the report (also `evidence.html`).
pub fn section(r: &Report) -> String {
    let esc = super::report::esc;
    let ev = &r.evidence;
    let mut h = String::from(
        "<h3>Evidence for the thresholds: visits against district PM2.5 and heat</h3>",
    );
    let _ = write!(
        h,
        "<p>Daily persons with a respiratory or cardiovascular visit in each of {} districts, {} to {}, added over the hospitals under secure aggregation (the hub keeps the totals), against each district's daily PM2.5 and maximum temperature. Method: {}.</p>",
        ev.districts,
        ev.first_day,
        ev.last_day,
        esc(ev.method)
    );
    h.push_str("<table><tr><th>outcome</th><th>exposure</th><th>lags</th><th>per</th><th>relative risk</th><th>95% CI</th><th>planted</th><th>cases</th><th>dispersion</th></tr>");
    for e in &ev.estimates {
        let planted = r
            .checks
            .iter()
            .find(|c| c.outcome == e.outcome && c.exposure == e.exposure)
            .map(|c| {
                format!(
                    "{:.3} {}",
                    c.planted,
                    if c.inside {
                        "✓ inside"
                    } else {
                        "✗ outside"
                    }
                )
            })
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{:.3}</b></td><td>{:.3}–{:.3}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td></tr>",
            esc(&e.outcome), esc(&e.exposure), esc(&e.lags), esc(&e.per), e.rr, e.lo, e.hi, planted, e.cases, e.phi
        );
    }
    h.push_str("</table>");
    let t = &ev.threshold;
    let planted_thr = r.planted.iter().find_map(|p| p.threshold);
    let _ = write!(
        h,
        "<p>Heat threshold for {} visits, by profile likelihood over {:.1}–{:.1} °C: <b>{:.1} °C</b> (95% interval {:.1}–{:.1}){}.</p>",
        esc(&t.outcome),
        t.grid.first().map_or(0.0, |g| g.0),
        t.grid.last().map_or(0.0, |g| g.0),
        t.best,
        t.lo,
        t.hi,
        planted_thr
            .map(|p| format!("; planted {p:.1} °C"))
            .unwrap_or_default()
    );
    h.push_str("<div style=\"display:flex;flex-wrap:wrap;gap:12px\">");
    for c in &ev.curves {
        let truth = r
            .planted
            .iter()
            .find(|p| p.syndrome == c.outcome && p.exposure == c.exposure);
        let _ = write!(
            h,
            "<figure style=\"margin:0\">{}<figcaption>{} visits: exposure–response (blue, 95% band; knots at {}){}</figcaption></figure>",
            curve_svg(c, truth),
            esc(&c.outcome),
            c.knots.iter().map(|k| format!("{k}")).collect::<Vec<_>>().join(", "),
            if truth.is_some() { "; planted, red dashed" } else { "" }
        );
    }
    let _ = write!(
        h,
        "<figure style=\"margin:0\">{}<figcaption>respiratory visits: PM2.5 lags 0–5 fitted together, RR per 10 µg/m³ (sum = cumulative {:.3})</figcaption></figure>",
        lags_svg(&ev.pm_lags),
        ev.pm_lags.last().map_or(f64::NAN, |p| p.rr)
    );
    h.push_str("</div>");
    h
}
