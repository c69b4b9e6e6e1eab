//! `medfed surveil`: syndromic surveillance of vulnerable groups, over the network or in this
//! process, once over a date range or on a schedule.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use medfed_analysis::surveil::{detect, evaluate_detail, KnownOutbreak, Score};
use medfed_protocol::surveil::{day_string, parse_day};
use medfed_protocol::AnalysisSpec;

use super::study::{Client, HubArgs};

/// The default study: four syndromes by district × five vulnerable groups, 2020–2024.
pub const DEFAULT_STUDY: &str = include_str!("../../../../examples/studies/surveillance.json");

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  medfed surveil --site sites/hospital_a --site sites/hospital_b --truth sites/ground_truth.json\n  \
  medfed surveil --hub-dir hub --from 2024-06-01 --to 2024-08-31\n  \
  medfed surveil --hub-dir hub --every-hours 24 --lookback-days 14")]
pub struct Args {
    /// Study with surveillance analyses [default: examples/studies/surveillance.json, built in].
    #[arg(long)]
    study: Option<PathBuf>,
    /// First day to count (YYYY-MM-DD; overrides the study's).
    #[arg(long)]
    from: Option<String>,
    /// Last day to count (YYYY-MM-DD; overrides the study's).
    #[arg(long)]
    to: Option<String>,
    /// Run in this process over these site stores, each acting as one node (at least two).
    /// Without --site the study goes to the hub.
    #[arg(long = "site")]
    sites: Vec<PathBuf>,
    #[command(flatten)]
    hub: HubArgs,
    /// Keep running: every N hours, count the last --lookback-days days up to today (or up to
    /// --to, advanced by the interval each run) and run the detectors over the stream's history.
    #[arg(long)]
    every_hours: Option<f64>,
    /// Days re-counted by each scheduled run (records arrive late).
    #[arg(long, default_value_t = 14)]
    lookback_days: u32,
    /// Stop after this many scheduled runs.
    #[arg(long)]
    runs: Option<u32>,
    /// A synthetic population's ground_truth.json: score every detector against its planted
    /// outbreaks (sensitivity, false alarms per district-year, days to detection). In-process only.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Disclosure policy of the in-process sites (default: minimum cell count 10).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Output folder: results.json, alerts.csv, evaluation.json.
    #[arg(long, default_value = "surveil-out")]
    out: PathBuf,
    /// Give up waiting for the hub after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// The study text with `from`/`to` set on every surveillance analysis.
pub fn with_days(text: &str, from: Option<&str>, to: Option<&str>) -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(text).context("study is not JSON")?;
    for a in v["analyses"].as_array_mut().into_iter().flatten() {
        if a["type"] == "surveillance" {
            if let Some(f) = from {
                a["from"] = f.into();
            }
            if let Some(t) = to {
                a["to"] = t.into();
            }
        }
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

fn check_day(s: &Option<String>, flag: &str) -> anyhow::Result<()> {
    if let Some(d) = s {
        if parse_day(d).is_none() {
            bail!("--{flag} {d:?} is not a date YYYY-MM-DD");
        }
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    check_day(&a.from, "from")?;
    check_day(&a.to, "to")?;
    let text = match &a.study {
        Some(p) => super::study::load_study(p)?,
        None => DEFAULT_STUDY.to_string(),
    };
    let study =
        medfed_protocol::study::parse_study(&with_days(&text, a.from.as_deref(), a.to.as_deref())?)
            .map_err(|e| anyhow::anyhow!("study refused: {e}"))?;
    if !study
        .analyses
        .iter()
        .any(|x| matches!(x, AnalysisSpec::Surveillance(_)))
    {
        bail!("the study has no surveillance analysis");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    if let Some(hours) = a.every_hours {
        if !a.sites.is_empty() {
            bail!("--every-hours runs against a hub (give --hub-dir or --hub, not --site)");
        }
        if hours.is_nan() || hours <= 0.0 {
            bail!("--every-hours must be positive");
        }
        return scheduled(&a, &text, hours);
    }
    let text = with_days(&text, a.from.as_deref(), a.to.as_deref())?;
    let results = if a.sites.is_empty() {
        if a.truth.is_some() {
            bail!("--truth needs the network totals, which the hub never serves; run in process with --site");
        }
        let client = Client::new(&a.hub)?;
        submit_and_wait(&client, &text, a.timeout)?
    } else {
        in_process(&a, &text)?
    };
    let p = super::study::write_results(&a.out, &results)?;
    let csv = write_alerts_csv(&a.out, &results)?;
    print_alerts(&results);
    println!("results: {}; alerts: {}", p.display(), csv.display());
    Ok(())
}

fn submit_and_wait(client: &Client, text: &str, timeout: u64) -> anyhow::Result<serde_json::Value> {
    let ack = client.submit(text.to_string())?;
    println!(
        "submitted {} to {} nodes ({} tasks to start)",
        ack.study_id,
        ack.nodes.len(),
        ack.tasks
    );
    let pb = super::progress::spinner("counting under secure aggregation");
    let r = client.wait(
        &ack.study_id,
        Duration::from_secs(timeout),
        |done, total| pb.set_message(format!("{done}/{total} tasks answered")),
    );
    pb.finish_and_clear();
    r
}

fn in_process(a: &Args, text: &str) -> anyhow::Result<serde_json::Value> {
    if a.sites.len() < 2 {
        bail!(
            "surveillance needs at least two sites: the hub may only see counts added over sites"
        );
    }
    let policy = match &a.policy {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let started = Instant::now();
    let pb = super::progress::spinner("counting under secure aggregation");
    let (results, hub) =
        super::study::run_in_process_keep(text, &a.sites, policy.as_deref(), &a.out, Some(&pb))?;
    pb.finish_and_clear();
    println!(
        "{} sites, {:.1} s; node audit logs in {}",
        a.sites.len(),
        started.elapsed().as_secs_f64(),
        a.out.join("nodes").display()
    );
    if let Some(truth) = &a.truth {
        let study = medfed_protocol::study::parse_study(text)
            .map_err(|e| anyhow::anyhow!("study refused: {e}"))?;
        let known = planted(truth)?;
        let mut all = serde_json::Map::new();
        for s in study.analyses.iter().filter_map(|x| match x {
            AnalysisSpec::Surveillance(s) => Some(s),
            _ => None,
        }) {
            let Some(cube) = hub.surveillance_cube(s)? else {
                continue;
            };
            let det = detect(s, &cube, &|_| {});
            let (scores, hits) = evaluate_detail(&det, &cube, &known, 7);
            print_scores(&s.id, &scores);
            for h in hits
                .iter()
                .filter(|h| !h.found_by.contains_key("grouped_alerts"))
            {
                println!(
                    "  not alerted: {} {} {} from {} ({} days); found by: {}",
                    h.outbreak.district,
                    h.outbreak.group,
                    h.outbreak.syndrome,
                    day_string(h.outbreak.start),
                    h.outbreak.days,
                    if h.found_by.is_empty() {
                        "none".to_string()
                    } else {
                        h.found_by.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                );
            }
            all.insert(s.id.clone(), serde_json::to_value(&scores)?);
            all.insert(format!("{}_outbreaks", s.id), serde_json::to_value(&hits)?);
        }
        let p = a.out.join("evaluation.json");
        std::fs::write(&p, serde_json::to_string_pretty(&all)?)?;
        println!("evaluation: {}", p.display());
    }
    Ok(results)
}

/// Planted outbreaks of a synthetic population's ground truth.
pub fn planted(path: &Path) -> anyhow::Result<Vec<KnownOutbreak>> {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let list = t["outbreaks"]
        .as_array()
        .with_context(|| format!("{}: no \"outbreaks\" list", path.display()))?;
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let f = |k: &str| {
                o[k].as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}: outbreaks[{i}].{k}", path.display()))
            };
            let start = parse_day(&f("start_date")?)
                .with_context(|| format!("{}: outbreaks[{i}].start_date", path.display()))?;
            Ok(KnownOutbreak {
                district: f("district_code")?,
                group: f("group_name")?,
                syndrome: f("syndrome_name")?,
                start,
                days: o["days"]
                    .as_i64()
                    .with_context(|| format!("{}: outbreaks[{i}].days", path.display()))?,
            })
        })
        .collect()
}

pub fn print_scores(id: &str, scores: &[Score]) {
    println!("{id}: detectors against the planted outbreaks");
    println!(
        "  {:<22} {:>9} {:>12} {:>13} {:>20} {:>14}",
        "detector", "found", "sensitivity", "false alarms", "per district-year", "median delay"
    );
    for s in scores {
        println!(
            "  {:<22} {:>4}/{:<4} {:>11.0}% {:>13} {:>20.3} {:>14}",
            s.detector,
            s.found,
            s.outbreaks,
            100.0 * s.sensitivity,
            s.false_alarms,
            s.false_per_district_year,
            s.median_days_to_detection
                .map(|d| format!("{d:.1} days"))
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn surveillance_results(results: &serde_json::Value) -> Vec<&serde_json::Value> {
    results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "surveillance")
        .collect()
}

/// Raised alerts by vulnerable group.
pub fn print_alerts(results: &serde_json::Value) {
    for r in surveillance_results(results) {
        let v = &r["value"];
        if v.is_null() {
            println!("{}: no result ({})", r["id"], super::study::notes_text(r));
            continue;
        }
        println!(
            "{}: {} .. {} (detectors from {}), {} alerts raised, {} signals kept for review",
            r["id"].as_str().unwrap_or_default(),
            v["first_day"].as_str().unwrap_or_default(),
            v["last_day"].as_str().unwrap_or_default(),
            v["evaluated_from"].as_str().unwrap_or_default(),
            v["alerts_raised"],
            v["signals_not_raised"]
        );
        let alerts: Vec<&serde_json::Value> = v["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["raised"] == true)
            .collect();
        let mut groups: Vec<&str> = alerts.iter().filter_map(|a| a["group"].as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        // The most severe few of each group (then the latest); the rest are in the report and the
        // national statistics DB's alerts table.
        const SHOWN: usize = 5;
        for g in groups {
            let mut of_group: Vec<&&serde_json::Value> =
                alerts.iter().filter(|a| a["group"] == g).collect();
            of_group.sort_by(|a, b| {
                let sev = |x: &serde_json::Value| x["severity"].as_f64().unwrap_or(0.0);
                sev(b)
                    .total_cmp(&sev(a))
                    .then_with(|| b["last_day"].as_str().cmp(&a["last_day"].as_str()))
            });
            println!("  {g}: {} alerts", of_group.len());
            for a in of_group.iter().take(SHOWN) {
                let mut names: Vec<String> = a["district_names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
                if names.len() > 4 {
                    let n = names.len();
                    names.truncate(3);
                    names.push(format!("… {n} districts"));
                }
                println!(
                    "    {:<17} {} .. {}  {:<6} {:>5.1}  {}  [{}]",
                    a["syndrome"].as_str().unwrap_or_default(),
                    a["first_day"].as_str().unwrap_or_default(),
                    a["last_day"].as_str().unwrap_or_default(),
                    a["level"].as_str().unwrap_or_default(),
                    a["severity"].as_f64().unwrap_or(0.0),
                    names.join(", "),
                    a["detectors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            if of_group.len() > SHOWN {
                println!("    … and {} more", of_group.len() - SHOWN);
            }
        }
    }
}

fn write_alerts_csv(out: &Path, results: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let p = out.join("alerts.csv");
    let mut w =
        csv::Writer::from_path(&p).with_context(|| format!("cannot write {}", p.display()))?;
    w.write_record([
        "analysis",
        "alert",
        "raised",
        "raised_day",
        "group",
        "syndrome",
        "districts",
        "first_day",
        "last_day",
        "severity",
        "level",
        "detectors",
        "observed",
    ])?;
    for r in surveillance_results(results) {
        for a in r["value"]["alerts"].as_array().into_iter().flatten() {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            let list = |k: &str| {
                a[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            w.write_record([
                r["id"].as_str().unwrap_or_default().to_string(),
                a["id"].to_string(),
                a["raised"].to_string(),
                s("raised_day"),
                s("group"),
                s("syndrome"),
                list("districts"),
                s("first_day"),
                s("last_day"),
                a["severity"].to_string(),
                s("level"),
                list("detectors"),
                // Published under the minimum count: empty when 1..9.
                a["observed"]
                    .as_f64()
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
            ])?;
        }
    }
    w.flush()?;
    Ok(p)
}

/// Scheduled runs against a hub: each counts the last `lookback_days` days and re-runs the
/// detectors over the stream's stored history.
fn scheduled(a: &Args, text: &str, hours: f64) -> anyhow::Result<()> {
    let client = Client::new(&a.hub)?;
    let step_days = (hours / 24.0).ceil().max(1.0) as i64;
    // Replays advance an explicit --to by the interval; otherwise "today" is the clock's.
    let mut to = match &a.to {
        Some(t) => parse_day(t).expect("checked"),
        None => chrono::Utc::now().timestamp().div_euclid(86_400),
    };
    let mut n = 0;
    loop {
        let from = to - i64::from(a.lookback_days) + 1;
        let from = match &a.from {
            Some(f) => from.max(parse_day(f).expect("checked")),
            None => from,
        };
        let t = with_days(text, Some(&day_string(from)), Some(&day_string(to)))?;
        println!(
            "run {}: counting {} .. {}",
            n + 1,
            day_string(from),
            day_string(to)
        );
        let results = submit_and_wait(&client, &t, a.timeout)?;
        super::study::write_results(&a.out, &results)?;
        write_alerts_csv(&a.out, &results)?;
        print_alerts(&results);
        n += 1;
        if a.runs.is_some_and(|r| n >= r) {
            return Ok(());
        }
        if a.to.is_some() {
            to += step_days;
        } else {
            std::thread::sleep(Duration::from_secs_f64(hours * 3600.0));
            to = chrono::Utc::now().timestamp().div_euclid(86_400);
        }
    }
}
