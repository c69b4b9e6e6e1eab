//! `medfed city`: the smart-city extension — indices, outlook, alert quality, and the service.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use medfed_city::cai::{Grade, PmAverage, Table, GRADES};
use medfed_city::feed::{self, AirObs, CsvOptions, Ingest, Pollutant, WeatherDay};
use medfed_city::forecast::{self, TmaxModel};
use medfed_city::quality::{self, Quality, NO_CATEGORY};
use medfed_city::rules::{Engine, Hazard, Hazards, RuleSet, CATEGORIES};
use medfed_city::service::{self, City, Webhook};
use medfed_city::{indices, seoul, series};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// CAI (with sub-indices), AQHI and KMA heat levels, hour by hour and day by day, from feeds
    /// (the embedded Seoul series when none is given). Writes hourly.csv, heat.csv, flags.csv,
    /// quarantine.csv and summary.json.
    Indices(IndicesArgs),
    /// Fit the 24-hour outlook on earlier years and report its error on later ones, against
    /// persistence and climatology.
    Forecast(ForecastArgs),
    /// Replay the personal rules over years of data: messages per person per year by group, and
    /// the share of very unhealthy PM2.5 hours covered by a warning issued beforehand.
    Quality(QualityArgs),
    /// Serve the city service over HTTPS: node profile batches, citizen registrations and
    /// withdrawals, air and weather updates, and webhook delivery of warnings.
    Serve(ServeArgs),
    /// Relative risks of respiratory visits per 10 µg/m³ of PM2.5 and of cardiovascular visits per
    /// °C above a heat threshold, from daily district counts added over hospitals under secure
    /// aggregation (conditional quasi-Poisson with lags, season and day of week), with the
    /// exposure–response curves. Writes evidence.json and evidence.html.
    Evidence(super::evidence::Args),
    /// Benchmark: one hour's update for a city of N residents (all consenting), with every
    /// district in a PM2.5 warning.
    #[command(hide = true)]
    Bench(BenchArgs),
}

#[derive(clap::Args)]
pub struct FeedArgs {
    /// Hourly pollutant files: CSV (our, AirKorea's or Korean column names) or AirKorea JSON;
    /// `.gz` is unpacked. Repeatable. Default: the embedded Seoul series 2018–2022.
    #[arg(long)]
    air: Vec<PathBuf>,
    /// An AirKorea-shaped endpoint to fetch (all pages) instead of files.
    #[arg(long)]
    air_url: Option<String>,
    /// PEM bundle to trust for https:// feeds (e.g. /etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Daily weather: CSV (date, tmax_c, tavg_c, humidity_pct, …) or a KMA ASOS daily response
    /// (JSON). Default: embedded Seoul 2016–2025.
    #[arg(long)]
    weather_daily: Option<PathBuf>,
    /// Station name for files without a station column.
    #[arg(long)]
    station: Option<String>,
    /// Extra column name for a pollutant, e.g. `이산화탄소=no2`. Repeatable.
    #[arg(long, value_parser = parse_alias)]
    alias: Vec<(String, Pollutant)>,
}

/// An HTTP client for feeds and the webhook, trusting `--ca` for https:// URLs.
fn feed_client(ca: &Option<PathBuf>) -> anyhow::Result<reqwest::Client> {
    let pem = ca.as_ref().map(std::fs::read).transpose().context("--ca")?;
    medfed_city::poll::client(pem.as_deref(), Duration::from_secs(30)).map_err(anyhow::Error::msg)
}

fn parse_alias(s: &str) -> Result<(String, Pollutant), String> {
    let (name, p) = s.split_once('=').ok_or("expected NAME=POLLUTANT")?;
    let p = Pollutant::parse(p)
        .ok_or_else(|| format!("{p:?} is not one of pm25, pm10, o3, no2, co, so2"))?;
    Ok((name.to_string(), p))
}

impl FeedArgs {
    fn air(&self) -> anyhow::Result<Ingest<AirObs>> {
        if let Some(url) = &self.air_url {
            let client = feed_client(&self.ca)?;
            let rt = tokio::runtime::Runtime::new()?;
            return Ok(rt.block_on(medfed_city::poll::air(
                &client,
                url,
                self.station.as_deref(),
            ))?);
        }
        if self.air.is_empty() {
            return Ok(seoul::air()?);
        }
        let opts = CsvOptions {
            station: self.station.clone(),
            aliases: self.alias.clone(),
        };
        let mut all = Ingest::default();
        for p in &self.air {
            all.extend(feed::read_air_file(p, &opts)?);
        }
        Ok(all)
    }

    fn weather(&self) -> anyhow::Result<Ingest<WeatherDay>> {
        match &self.weather_daily {
            None => Ok(seoul::weather()?),
            Some(p) => {
                let opts = CsvOptions {
                    station: self.station.clone().or(Some(seoul::STATION.into())),
                    aliases: vec![],
                };
                Ok(feed::read_weather_daily_file(p, &opts)?)
            }
        }
    }

    fn series(
        &self,
    ) -> anyhow::Result<(
        Vec<series::AirSeries>,
        Vec<feed::Flag>,
        Vec<feed::Quarantined>,
    )> {
        let got = self.air()?;
        let mut flags = got.flags;
        let s = series::air_series("air", got.records, &mut flags);
        if s.is_empty() {
            bail!("no observations were read");
        }
        Ok((s, flags, got.quarantined))
    }
}

#[derive(clap::Args)]
pub struct IndicesArgs {
    #[command(flatten)]
    feed: FeedArgs,
    /// Output folder.
    #[arg(long, default_value = "city-indices")]
    out: PathBuf,
    /// PM averaging for the CAI: the trailing 24-hour mean, or AirKorea's predicted average.
    #[arg(long, default_value = "trailing", value_parser = ["trailing", "predicted"])]
    pm_average: String,
}

fn indices(a: IndicesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let (series, mut flags, mut quarantined) = a.feed.series()?;
    let pm = if a.pm_average == "predicted" {
        PmAverage::Predicted
    } else {
        PmAverage::Trailing24h
    };
    let table = Table::standard();
    let rows: Vec<indices::HourRow> = series
        .iter()
        .flat_map(|s| indices::air(&table, s, pm))
        .collect();
    let days = a.feed.weather()?;
    flags.extend(days.flags);
    quarantined.extend(days.quarantined);
    let heat = indices::heat_from_daily(&days.records);
    indices::write_hourly(&a.out.join("hourly.csv"), &rows)?;
    indices::write_heat(&a.out.join("heat.csv"), &heat)?;
    feed::write_flags(&a.out.join("flags.csv"), &flags)?;
    feed::write_quarantine(&a.out.join("quarantine.csv"), &quarantined)?;
    let summary = indices::summarise(&rows, &heat);
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{}", render_summary(&summary));
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &flags {
        *kinds
            .entry(format!("{:?}", f.kind).to_lowercase())
            .or_default() += 1;
    }
    println!("flags: {kinds:?}; quarantined rows: {}", quarantined.len());
    println!(
        "wrote {}/hourly.csv, heat.csv, flags.csv, quarantine.csv, summary.json",
        a.out.display()
    );
    Ok(())
}

fn render_summary(s: &[indices::YearSummary]) -> String {
    let mut out = String::from("station     year  hours  good  moder  unhea  v.unh  no-CAI  PM2.5 v.unh  AQHI≥7  heat adv  heat warn\n");
    for y in s {
        out += &format!(
            "{:<10} {:>5} {:>6} {:>5} {:>6} {:>6} {:>6} {:>7} {:>12} {:>7} {:>9} {:>10}\n",
            y.station,
            y.year,
            y.hours,
            y.cai_hours[0],
            y.cai_hours[1],
            y.cai_hours[2],
            y.cai_hours[3],
            y.no_cai_hours,
            y.pm25_very_unhealthy_hours,
            y.aqhi_high_hours,
            y.heat_advisory_days,
            y.heat_warning_days
        );
    }
    out
}

#[derive(clap::Args)]
pub struct ForecastArgs {
    #[command(flatten)]
    feed: FeedArgs,
    /// First year of the test period; earlier years train.
    #[arg(long, default_value_t = 2021)]
    test_from: i32,
}

/// The outlook's error: per pollutant, leads 1, 3, 6, 12, 24 (MAE against persistence and
/// climatology), and the daily maximum temperature one and two days ahead.
pub struct ForecastReport {
    pub rows: Vec<(Pollutant, Vec<Score>)>,
    pub tmax: Vec<Score>,
}

/// (lead, forecasts scored, MAE, persistence MAE, climatology MAE).
pub type Score = (usize, usize, f64, f64, f64);

pub fn forecast_report(
    s: &series::AirSeries,
    days: &[WeatherDay],
    test_from: i32,
) -> anyhow::Result<ForecastReport> {
    let split_hour = feed::Hour::from_day(
        chrono::NaiveDate::from_ymd_opt(test_from, 1, 1).context("year")?,
        1,
    );
    let split = s
        .at(split_hour)
        .context("the test year is not in the series")?;
    let mut rows = Vec::new();
    for p in [Pollutant::Pm25, Pollutant::Pm10, Pollutant::O3] {
        let scale = if p.unit() == "ppm" { 1000.0 } else { 1.0 };
        let x: Vec<Option<f64>> = s.column(p).iter().map(|v| v.map(|c| c * scale)).collect();
        let m = forecast::Model::fit(&x, s.start, 0..split).context("outlook fit")?;
        let e = forecast::evaluate(&m, &x, s.start, split..x.len());
        rows.push((
            p,
            [1, 3, 6, 12, 24]
                .iter()
                .map(|&k| {
                    (
                        k,
                        e.n[k - 1],
                        e.mae[k - 1],
                        e.mae_persistence[k - 1],
                        e.mae_climatology[k - 1],
                    )
                })
                .collect(),
        ));
    }
    let tmax: BTreeMap<chrono::NaiveDate, f64> = days
        .iter()
        .filter_map(|d| Some((d.date, d.tmax_c?)))
        .collect();
    let cut = chrono::NaiveDate::from_ymd_opt(test_from, 1, 1).context("year")?;
    let tm = TmaxModel::fit_where(&tmax, |d| d < cut).context("tmax fit")?;
    let mut t = Vec::new();
    for k in 1..=2usize {
        let (mut n, mut mae, mut pers, mut clim) = (0usize, 0.0, 0.0, 0.0);
        for (day, v) in tmax.range(cut..) {
            let ahead = *day + chrono::Duration::days(k as i64);
            let Some(y) = tmax.get(&ahead) else { continue };
            n += 1;
            mae += (tm.predict(*day, *v, k) - y).abs();
            pers += (v - y).abs();
            clim += (tm.climatology(ahead) - y).abs();
        }
        let d = n.max(1) as f64;
        t.push((k, n, mae / d, pers / d, clim / d));
    }
    Ok(ForecastReport { rows, tmax: t })
}

fn forecast_cmd(a: ForecastArgs) -> anyhow::Result<()> {
    let (series, _, _) = a.feed.series()?;
    let days = a.feed.weather()?.records;
    let r = forecast_report(&series[0], &days, a.test_from)?;
    println!(
        "outlook fitted before {}, scored from {} on ({}):",
        a.test_from, a.test_from, series[0].station
    );
    println!("pollutant  lead  forecasts   MAE  persistence  climatology");
    for (p, rows) in &r.rows {
        let unit = if p.unit() == "ppm" { "ppb" } else { "µg/m³" };
        for (k, n, m, pe, c) in rows {
            println!(
                "{:<9} {:>4}h {:>10} {:>6.2} {:>12.2} {:>12.2}  {unit}",
                p.label(),
                k,
                n,
                m,
                pe,
                c
            );
        }
    }
    for (k, n, m, pe, c) in &r.tmax {
        println!(
            "{:<9} {:>4}d {:>10} {:>6.2} {:>12.2} {:>12.2}  °C",
            "tmax", k, n, m, pe, c
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct QualityArgs {
    #[command(flatten)]
    feed: FeedArgs,
    /// Rules file (TOML, as `crates/city/src/default_rules.toml`). Default: the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Write the result as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn rules(path: &Option<PathBuf>) -> anyhow::Result<RuleSet> {
    match path {
        None => Ok(RuleSet::standard()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
            RuleSet::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        }
    }
}

pub fn render_quality(q: &Quality) -> String {
    let mut out = format!(
        "messages per person per year, {} {}–{}:\n",
        q.district,
        q.years[0],
        q.years[q.years.len() - 1]
    );
    out += "group            advisories  warnings\n";
    for g in CATEGORIES.iter().chain([&NO_CATEGORY]) {
        let (a, w) = q.per_year(g);
        out += &format!("{g:<16} {a:>10.1} {w:>9.1}\n");
    }
    let vu = q.very_unhealthy_hours.max(1) as f64;
    out += &format!(
        "very unhealthy PM2.5 hours (24-h mean ≥ 76 µg/m³): {}; covered by a warning issued beforehand: {} ({:.1} %); by any message beforehand: {} ({:.1} %)\n",
        q.very_unhealthy_hours,
        q.covered_by_warning,
        100.0 * q.covered_by_warning as f64 / vu,
        q.covered_by_any,
        100.0 * q.covered_by_any as f64 / vu
    );
    out += &format!(
        "episodes reaching a very unhealthy hour: {}, warned before the first such hour: {}; median lead {} h; warning episodes: {} ({} never reached a very unhealthy hour)\n",
        q.very_unhealthy_episodes,
        q.lead_hours.len(),
        q.median_lead_hours().map(|h| h.to_string()).unwrap_or("-".into()),
        q.warning_episodes,
        q.warning_episodes_without_very_unhealthy
    );
    out
}

fn quality_cmd(a: QualityArgs) -> anyhow::Result<()> {
    let (series, _, _) = a.feed.series()?;
    let days = a.feed.weather()?.records;
    let q = quality::replay(&series[0], &days, &rules(&a.rules)?).map_err(anyhow::Error::msg)?;
    print!("{}", render_quality(&q));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&q)?)?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The service's folder: city.db, certificate and key, app.token and feed.token (made if
    /// missing).
    #[arg(long, default_value = "city-service")]
    dir: PathBuf,
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// A hospital node trusted to send profile batches: NAME=PUBLIC_KEY_HEX. Repeatable.
    #[arg(long, value_parser = parse_node_key)]
    node_key: Vec<(String, medfed_protocol::PublicKey)>,
    /// Where warnings are POSTed (the notification gateway).
    #[arg(long)]
    webhook: Option<String>,
    /// File holding the webhook's bearer token.
    #[arg(long)]
    webhook_token_file: Option<PathBuf>,
    /// PEM to trust for an https:// webhook or feed.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// An AirKorea-shaped endpoint to poll.
    #[arg(long)]
    air_url: Option<String>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 600)]
    poll_seconds: u64,
    /// Rules file (TOML). Default: the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
}

fn parse_node_key(s: &str) -> Result<(String, medfed_protocol::PublicKey), String> {
    let (name, hex) = s.split_once('=').ok_or("expected NAME=PUBLIC_KEY_HEX")?;
    Ok((
        name.to_string(),
        medfed_protocol::PublicKey::from_hex(hex).map_err(|e| e.to_string())?,
    ))
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let (outlook, tmax) = service::seoul_models().map_err(anyhow::Error::msg)?;
    let city = City::open(&a.dir, rules(&a.rules)?, outlook, tmax, a.node_key.clone())
        .map_err(anyhow::Error::msg)?;
    let client = feed_client(&a.ca)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let running = service::spawn(&a.dir, city, &a.listen)
            .await
            .map_err(anyhow::Error::msg)?;
        println!(
            "city service on {} (folder {})",
            running.url,
            a.dir.display()
        );
        println!(
            "  app token in {}, feed token in {}",
            a.dir.join("app.token").display(),
            a.dir.join("feed.token").display()
        );
        if let Some(url) = &a.webhook {
            let token = match &a.webhook_token_file {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| p.display().to_string())?
                    .trim()
                    .to_string(),
                None => String::new(),
            };
            let hook = Webhook {
                url: url.clone(),
                token,
            };
            tokio::spawn(service::deliver(
                running.city.clone(),
                client.clone(),
                hook,
                Duration::from_secs(2),
            ));
            println!("  delivering warnings to {url}");
        } else {
            println!("  no --webhook: warnings wait in the outbox");
        }
        if let Some(url) = a.air_url.clone() {
            let c = running.city.clone();
            let client = client.clone();
            let every = Duration::from_secs(a.poll_seconds.max(10));
            tokio::spawn(async move {
                loop {
                    match medfed_city::poll::air(&client, &url, None).await {
                        Ok(got) => {
                            let mut city = c.lock().unwrap_or_else(|p| p.into_inner());
                            let r = city.ingest_air(&got.records).and_then(|_| city.process());
                            match r {
                                Ok(h) => eprintln!(
                                    "poll: {} observations, {} new hours, {} flags, {} quarantined",
                                    got.records.len(),
                                    h.len(),
                                    got.flags.len(),
                                    got.quarantined.len()
                                ),
                                Err(e) => eprintln!("poll: {e}"),
                            }
                        }
                        Err(e) => eprintln!("poll: {e}"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        super::shutdown_signal().await;
        running.stop().await;
        anyhow::Ok(())
    })
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Residents, all consenting.
    #[arg(long, default_value_t = 10_000_000)]
    persons: usize,
    /// Districts (Seoul has 25).
    #[arg(long, default_value_t = 25)]
    districts: usize,
    /// Also write the hour's messages to an outbox (SQLite) in this folder.
    #[arg(long)]
    outbox: Option<PathBuf>,
    /// Write the residents (subject, district, category bits) as Parquet here, for a peer to
    /// compute the same hour (bench/city.py runs DuckDB on it).
    #[arg(long)]
    parquet: Option<PathBuf>,
}

/// Category shares for the benchmark population, roughly Korea's: respiratory (asthma, COPD)
/// 8 %, cardiovascular 10 %, diabetes 9 %, 65 and over 18 %, pregnant 0.5 %, under 6 4 %.
const SHARES: [f64; 6] = [0.08, 0.10, 0.09, 0.18, 0.005, 0.04];

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let t0 = Instant::now();
    let mut engine = Engine::new(RuleSet::standard());
    let names: Vec<String> = (0..a.districts)
        .map(|d| format!("district-{d:02}"))
        .collect();
    let mut masks: Vec<i32> = Vec::with_capacity(if a.parquet.is_some() { a.persons } else { 0 });
    for i in 0..a.persons {
        let cats: Vec<&str> = CATEGORIES
            .iter()
            .zip(SHARES)
            .filter_map(|(c, s)| (rng.random::<f64>() < s).then_some(*c))
            .collect();
        engine
            .upsert(&format!("p{i:08}"), &names[i % a.districts], &cats)
            .map_err(anyhow::Error::msg)?;
        if a.parquet.is_some() {
            masks.push(
                cats.iter()
                    .filter_map(|c| medfed_city::rules::category_bit(c))
                    .fold(0, |m, b| m | b as i32),
            );
        }
    }
    let load_s = t0.elapsed().as_secs_f64();
    let rss_loaded = peak_rss_mb();
    let mut hz = Hazards::default();
    hz.now[Hazard::Pm25 as usize] = Some(80.0);
    hz.expected[Hazard::Pm25 as usize] = Some(90.0);
    let map: HashMap<String, Hazards> = names.iter().map(|n| (n.clone(), hz)).collect();
    let hour = feed::Hour::parse("2024-03-05 10:00").map_err(anyhow::Error::msg)?;
    let t1 = Instant::now();
    let (msgs, stats) = engine.update(hour, &map);
    let update_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let (again, _) = engine.update(feed::Hour(hour.0 + 1), &map);
    let repeat_s = t2.elapsed().as_secs_f64();
    println!(
        "residents {}: loaded in {load_s:.1} s, peak RSS {rss_loaded:.0} MB",
        a.persons
    );
    println!("hour update with every district in a PM2.5 warning: {} messages in {update_s:.2} s ({} episodes)", stats.messages, stats.episodes_started);
    println!(
        "next hour (nothing new to say): {} messages in {repeat_s:.2} s",
        again.len()
    );
    if let Some(dir) = &a.outbox {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("bench-outbox.db");
        let _ = std::fs::remove_file(&path);
        let mut store = medfed_city::store::Store::open(&path).map_err(anyhow::Error::msg)?;
        let t3 = Instant::now();
        let bodies: Vec<_> = msgs
            .into_iter()
            .map(|m| {
                let body = format!(
                    r#"{{"subject":"{}","hazard":"pm25","level":"{}"}}"#,
                    m.subject,
                    m.level.name()
                );
                (m, body)
            })
            .collect();
        let n = store
            .commit_hour(hour, &bodies, &engine.episodes())
            .map_err(anyhow::Error::msg)?;
        println!(
            "outbox: {n} rows committed in {:.1} s",
            t3.elapsed().as_secs_f64()
        );
    }
    if let Some(dir) = &a.parquet {
        write_residents(dir, &names, &masks)?;
    }
    println!("peak RSS {:.0} MB", peak_rss_mb());
    println!(
        "{}",
        serde_json::json!({ "persons": a.persons, "load_s": load_s, "update_s": update_s, "messages": stats.messages,
            "repeat_s": repeat_s, "rss_loaded_mb": rss_loaded, "rss_peak_mb": peak_rss_mb(),
            "pm25_rule_mask": RuleSet::standard().mask(0) })
    );
    Ok(())
}

fn write_residents(dir: &std::path::Path, names: &[String], masks: &[i32]) -> anyhow::Result<()> {
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("subject", DataType::Utf8, false),
        Field::new("district", DataType::Utf8, false),
        Field::new("mask", DataType::Int32, false),
    ]));
    let file = std::fs::File::create(dir.join("residents.parquet"))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    for start in (0..masks.len()).step_by(1 << 20) {
        let end = (start + (1 << 20)).min(masks.len());
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (start..end).map(|i| format!("p{i:08}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    (start..end).map(|i| names[i % names.len()].as_str()),
                )),
                Arc::new(Int32Array::from(masks[start..end].to_vec())),
            ],
        )?;
        w.write(&batch)?;
    }
    w.close()?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Sub::Indices(x) => indices(x),
        Sub::Forecast(x) => forecast_cmd(x),
        Sub::Quality(x) => quality_cmd(x),
        Sub::Serve(x) => serve(x),
        Sub::Evidence(x) => super::evidence::run(x),
        Sub::Bench(x) => bench(x),
    }
}

/// Reads the embedded Seoul series as one station's series (for the demo).
pub fn seoul_series() -> anyhow::Result<series::AirSeries> {
    let got = seoul::air()?;
    let mut flags = got.flags;
    Ok(series::air_series("seoul", got.records, &mut flags).remove(0))
}

pub fn seoul_weather() -> anyhow::Result<Vec<WeatherDay>> {
    Ok(seoul::weather()?.records)
}

/// What the demo's city step produced.
pub struct CityDemo {
    pub summary: Vec<indices::YearSummary>,
    /// Per day: (date, largest CAI of the day, its grade).
    pub daily_cai: Vec<(chrono::NaiveDate, u32, Grade)>,
    pub forecast: ForecastReport,
    pub quality: Quality,
    pub live: LiveRun,
}

/// The live part: the real service on loopback, fed two Seoul episodes.
pub struct LiveRun {
    pub node: String,
    pub consented: usize,
    pub registered: usize,
    pub eligible: i64,
    pub hours: usize,
    pub windows: Vec<(String, String)>,
    /// Messages delivered by (group, hazard, level), for the groups the person is in that the
    /// message's rule concerns; a person in two such groups counts in both.
    pub by_group: BTreeMap<(String, String, String), usize>,
    pub delivered: usize,
    pub gateway_failures: usize,
    pub withdrawn_subject: String,
    pub after_withdrawal_to_withdrawn: usize,
}

/// The demo's city step: indices, outlook and alert quality on the embedded Seoul years, then the
/// service itself on loopback with citizens who consented at the first hospital.
pub fn demo(
    out: &std::path::Path,
    net: &super::network::LocalNetwork,
    site: &std::path::Path,
) -> anyhow::Result<CityDemo> {
    let dir = out.join("city");
    std::fs::create_dir_all(&dir)?;
    let s = seoul_series()?;
    let days = seoul_weather()?;
    let rows = indices::air(&Table::standard(), &s, PmAverage::Trailing24h);
    let heat = indices::heat_from_daily(&days);
    let summary = indices::summarise(&rows, &heat);
    indices::write_hourly(&dir.join("seoul-hourly.csv"), &rows)?;
    indices::write_heat(&dir.join("seoul-heat.csv"), &heat)?;
    let mut daily: BTreeMap<chrono::NaiveDate, (u32, Grade)> = BTreeMap::new();
    for r in &rows {
        if let Some((_, x)) = r.cai.cai {
            let e = daily.entry(r.hour.day()).or_insert((0, Grade::Good));
            if x.index > e.0 {
                *e = (x.index, x.grade);
            }
        }
    }
    let daily_cai = daily.into_iter().map(|(d, (i, g))| (d, i, g)).collect();
    let forecast = forecast_report(&s, &days, 2021)?;
    let quality = quality::replay(&s, &days, &RuleSet::standard()).map_err(anyhow::Error::msg)?;
    println!(
        "city: Seoul 2018–2022 indices in {}; {} very unhealthy PM2.5 hours, {} covered by a warning issued beforehand",
        dir.display(),
        quality.very_unhealthy_hours,
        quality.covered_by_warning
    );
    let live = live_run(&dir, net, site, &s, &days)?;
    println!(
        "city service: {} citizens consented at {}, {} eligible; {} warnings delivered over {} hours of Seoul data",
        live.consented, live.node, live.eligible, live.delivered, live.hours
    );
    Ok(CityDemo {
        summary,
        daily_cai,
        forecast,
        quality,
        live,
    })
}

/// Citizens at the first hospital who consent to the city service.
const DEMO_CITIZENS: usize = 300;

fn live_run(
    dir: &std::path::Path,
    net: &super::network::LocalNetwork,
    site: &std::path::Path,
    s: &series::AirSeries,
    days: &[WeatherDay],
) -> anyhow::Result<LiveRun> {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::{Arc, Mutex};
    let (name, node_dir) = net.nodes.first().context("no hospital node")?;
    let ndir = medfed_node::NodeDir(node_dir.clone());
    let consents = medfed_node::consent::Consents::new(&ndir);
    let engine = medfed_engine::SiteEngine::open(site)?;
    let persons: Vec<i64> = super::demo::ints(
        &engine,
        &format!("SELECT person_id FROM person ORDER BY person_id LIMIT {DEMO_CITIZENS}"),
    )?
    .into_iter()
    .map(|r| r[0])
    .collect();
    let already: std::collections::HashSet<String> = consents
        .standing(Some("city"))?
        .0
        .into_iter()
        .map(|c| c.subject)
        .collect();
    for p in &persons {
        let app = format!("app-{p:08}");
        if !already.contains(&app) {
            consents.grant(*p, "city", &app)?;
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (signed, batch) = rt.block_on(medfed_node::consent::profile_batch(&ndir, "city"))?;
    medfed_node::consent::write_batch(&node_dir.join("profiles-city.json"), &signed)?;
    let groups: HashMap<String, Vec<String>> = batch
        .profiles
        .iter()
        .map(|p| (p.subject.clone(), p.categories.clone()))
        .collect();

    let sdir = dir.join("service");
    let _ = std::fs::remove_dir_all(&sdir);
    let (outlook, tmax) = service::seoul_models().map_err(anyhow::Error::msg)?;
    let city = City::open(
        &sdir,
        RuleSet::standard(),
        outlook,
        tmax,
        vec![(name.clone(), ndir.load_key()?.public())],
    )
    .map_err(anyhow::Error::msg)?;

    #[derive(Default)]
    struct Gateway {
        seen: usize,
        got: BTreeMap<String, service::Notification>,
    }
    async fn hook(
        axum::extract::State(g): axum::extract::State<Arc<Mutex<Gateway>>>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
        g.seen += 1;
        // The gateway is flaky: every fifth request fails, and the service retries.
        if g.seen % 5 == 0 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match serde_json::from_str(&body) {
            Ok(n) => {
                g.got.insert(key, n);
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        }
    }
    // The 2018 heat wave, then (after one citizen withdraws) the March 2019 fine-dust episode.
    let windows = vec![
        ("2018-07-24".to_string(), "2018-08-05".to_string()),
        ("2019-02-24".to_string(), "2019-03-09".to_string()),
    ];
    rt.block_on(async {
        let running = service::spawn(&sdir, city, "127.0.0.1:0").await.map_err(anyhow::Error::msg)?;
        let cert = std::fs::read(sdir.join("cert.pem"))?;
        let client = medfed_tls::client(&cert, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
        let gw = Arc::new(Mutex::new(Gateway::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook_url = format!("http://{}/push", listener.local_addr()?);
        let app = axum::Router::new().route("/push", axum::routing::post(hook)).with_state(gw.clone());
        let gw_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = running.url.clone();
        let (app_token, feed_token) = (running.tokens.app.clone(), running.tokens.feed.clone());
        let mut registered = 0;
        for p in &batch.profiles {
            let r = client
                .post(format!("{url}/v1/subscribers"))
                .bearer_auth(&app_token)
                .json(&serde_json::json!({ "subject": p.subject, "district": s.station }))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "registering {}: {}", p.subject, r.text().await?);
            registered += 1;
        }
        let r = client.post(format!("{url}/v1/profiles")).json(&signed).send().await?;
        anyhow::ensure!(r.status().is_success(), "profile batch: {}", r.text().await?);
        let weather: Vec<serde_json::Value> = days
            .iter()
            .map(|d| serde_json::json!({ "district": s.station, "date": d.date.to_string(), "tmax_c": d.tmax_c, "tavg_c": d.tavg_c, "humidity_pct": d.rh_pct }))
            .collect();
        let r = client.post(format!("{url}/v1/weather-daily")).bearer_auth(&feed_token).json(&weather).send().await?;
        anyhow::ensure!(r.status().is_success(), "weather: {}", r.text().await?);
        let plain = medfed_city::poll::client(None, Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
        let hook = Webhook { url: hook_url, token: String::new() };
        let withdrawn = batch
            .profiles
            .iter()
            .find(|p| p.categories.iter().any(|c| c == "elderly" || c == "respiratory"))
            .map(|p| p.subject.clone())
            .unwrap_or_default();
        let mut hours = 0;
        for (wi, (from, to)) in windows.iter().enumerate() {
            let from = chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d")?;
            let to = chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d")?;
            let mut day = from;
            while day <= to {
                let items: Vec<serde_json::Value> = (1..=24)
                    .filter_map(|h| s.at(feed::Hour::from_day(day, h)))
                    .map(|t| {
                        let v = s.values[t];
                        let f = |p: Pollutant| v[p.index()].map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                        serde_json::json!({ "dataTime": s.hour(t).to_string(), "stationName": s.station,
                            "pm25Value": f(Pollutant::Pm25), "pm10Value": f(Pollutant::Pm10), "o3Value": f(Pollutant::O3),
                            "no2Value": f(Pollutant::No2), "coValue": f(Pollutant::Co), "so2Value": f(Pollutant::So2) })
                    })
                    .collect();
                hours += items.len();
                let body = serde_json::json!({ "response": { "header": { "resultCode": "00", "resultMsg": "NORMAL_CODE" }, "body": { "items": items } } });
                let r = client.post(format!("{url}/v1/air")).bearer_auth(&feed_token).json(&body).send().await?;
                anyhow::ensure!(r.status().is_success(), "air {day}: {}", r.text().await?);
                service::deliver_once(&running.city, &plain, &hook).await.map_err(anyhow::Error::msg)?;
                day = day.succ_opt().context("date")?;
            }
            // Between the two episodes one citizen withdraws at the city.
            if wi == 0 && !withdrawn.is_empty() {
                let r = client.delete(format!("{url}/v1/subscribers/{withdrawn}")).bearer_auth(&app_token).send().await?;
                anyhow::ensure!(r.status().is_success(), "withdrawal: {}", r.text().await?);
            }
        }
        // Drain what the flaky gateway refused (each retry waits out its backoff).
        for _ in 0..60 {
            service::deliver_once(&running.city, &plain, &hook).await.map_err(anyhow::Error::msg)?;
            let pending = running.city.lock().unwrap_or_else(|p| p.into_inner()).counts().map_err(anyhow::Error::msg)?.pending;
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let before_withdrawal: usize = {
            let g = gw.lock().unwrap_or_else(|p| p.into_inner());
            g.got.values().filter(|n| n.subject == withdrawn && n.hour.as_str() >= "2019-02-24").count()
        };
        let counts = running.city.lock().unwrap_or_else(|p| p.into_inner()).counts().map_err(anyhow::Error::msg)?;
        running.stop().await;
        gw_task.abort();
        let g = gw.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_group: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        // Each message counts for the groups the person is in that its rule concerns.
        let rules = RuleSet::standard();
        for n in g.got.values() {
            let concerns: Vec<&String> = rules.rules.iter().filter(|r| r.hazard == n.hazard).flat_map(|r| &r.categories).collect();
            for c in groups.get(&n.subject).into_iter().flatten().filter(|c| concerns.contains(c)) {
                *by_group.entry((c.clone(), n.hazard.name().to_string(), n.level.name().to_string())).or_default() += 1;
            }
        }
        anyhow::ensure!(counts.pending == 0 && counts.failed == 0, "outbox not drained: {counts:?}");
        Ok(LiveRun {
            node: name.clone(),
            consented: batch.profiles.len(),
            registered,
            eligible: counts.eligible,
            hours,
            windows: windows.clone(),
            by_group,
            delivered: g.got.len(),
            gateway_failures: g.seen - g.got.len(),
            withdrawn_subject: withdrawn,
            after_withdrawal_to_withdrawn: before_withdrawal,
        })
    })
}

/// The daily largest CAI over the years as coloured bars (AirKorea's grade colours).
fn cai_svg(daily: &[(chrono::NaiveDate, u32, Grade)]) -> String {
    use std::fmt::Write;
    let (w, h, top) = (940.0, 200.0, 300.0);
    let n = daily.len().max(1) as f64;
    let bw = (w - 40.0) / n;
    let mut s = format!(
        r#"<svg viewBox="0 0 {w} {}" width="{w}" height="{}" xmlns="http://www.w3.org/2000/svg" font-size="11">"#,
        h + 40.0,
        h + 40.0
    );
    for (i, (_, v, g)) in daily.iter().enumerate() {
        let bh = (*v as f64).min(top) / top * h;
        let _ = write!(
            s,
            r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"#,
            40.0 + i as f64 * bw,
            h - bh + 10.0,
            bw.max(0.6),
            bh,
            g.color()
        );
    }
    for v in [50.0, 100.0, 250.0] {
        let y = h - v / top * h + 10.0;
        let _ = write!(
            s,
            r##"<line x1="40" x2="{w}" y1="{y:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="3,3"/><text x="2" y="{:.1}">{v}</text>"##,
            y + 4.0
        );
    }
    let mut last_year = 0;
    for (i, (d, _, _)) in daily.iter().enumerate() {
        use chrono::Datelike;
        if d.year() != last_year {
            last_year = d.year();
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                40.0 + i as f64 * bw,
                h + 30.0,
                d.year()
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The report's city section.
pub fn section(d: &CityDemo, evidence: Option<&super::evidence::Report>) -> String {
    use std::fmt::Write;
    let esc = super::report::esc;
    let mut h =
        String::from("<h2>Healthcare smart city: air quality, heat and personal warnings</h2>");
    h.push_str("<p>Seoul's city-wide hourly pollutants (2018–2022) and daily weather (2016–2025), embedded in the binary. Korea's Comprehensive Air-quality Index (CAI) is computed from the published breakpoint table (PM as 24-hour means, gases hourly), with Canada's AQHI and the KMA summer feels-like temperature and heat-wave rules beside it. Each hour and summer day is checked in the tests against an independent Python implementation of the same published definitions.</p>");
    h.push_str("<h3>CAI over time: the largest hourly CAI of each day</h3>");
    h.push_str(&cai_svg(&d.daily_cai));
    let _ = write!(h, "<p>");
    for g in GRADES {
        let _ = write!(
            h,
            r#"<span style="color:{}">■</span> {} ({}) &nbsp; "#,
            g.color(),
            g.name().replace('_', " "),
            g.korean()
        );
    }
    h.push_str("</p><table><tr><th>year</th><th>hours</th><th>good</th><th>moderate</th><th>unhealthy</th><th>very unhealthy</th><th>no CAI</th><th>PM2.5 very unhealthy h</th><th>AQHI ≥ 7 h</th><th>heat advisory days</th><th>heat warning days</th></tr>");
    for y in &d.summary {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            y.year, y.hours, y.cai_hours[0], y.cai_hours[1], y.cai_hours[2], y.cai_hours[3], y.no_cai_hours, y.pm25_very_unhealthy_hours, y.aqhi_high_hours, y.heat_advisory_days, y.heat_warning_days
        );
    }
    h.push_str("</table><p>Heat from daily summaries: the feels-like maximum at the day's maximum temperature, with the humidity at that hour estimated from the day's mean vapour pressure. 2016–2017 and 2023–2025 have heat rows and no air rows.</p>");
    h.push_str("<h3>The 24-hour outlook, fitted on 2018–2020 and scored on 2021–2022</h3><table><tr><th>pollutant</th><th>lead</th><th>forecasts</th><th>MAE</th><th>persistence MAE</th><th>climatology MAE</th></tr>");
    for (p, rows) in &d.forecast.rows {
        let unit = if p.unit() == "ppm" { "ppb" } else { "µg/m³" };
        for (k, n, m, pe, c) in rows {
            let _ = write!(h, "<tr><td>{}</td><td>{k} h</td><td>{n}</td><td>{m:.2} {unit}</td><td>{pe:.2}</td><td>{c:.2}</td></tr>", p.label());
        }
    }
    for (k, n, m, pe, c) in &d.forecast.tmax {
        let _ = write!(h, "<tr><td>daily max temperature</td><td>{k} d</td><td>{n}</td><td>{m:.2} °C</td><td>{pe:.2}</td><td>{c:.2}</td></tr>");
    }
    h.push_str("</table>");
    let q = &d.quality;
    let vu = q.very_unhealthy_hours.max(1) as f64;
    let _ = write!(h, "<h3>Alert quality on the Seoul years</h3><p>The default rules replayed hour by hour over {}–{}, each year with outlooks fitted on the other years. Very unhealthy PM2.5 hours (24-hour mean ≥ 76 µg/m³): <b>{}</b>; covered by a warning issued beforehand in the same episode: <b>{} ({:.1} %)</b>. Episode by episode: {} episodes reached a very unhealthy hour, and {} were warned before their first such hour, with a median lead of {} h; warning episodes: {} ({} never reached a very unhealthy hour).</p>",
        q.years[0], q.years[q.years.len() - 1], q.very_unhealthy_hours, q.covered_by_warning, 100.0 * q.covered_by_warning as f64 / vu, q.very_unhealthy_episodes, q.lead_hours.len(),
        q.median_lead_hours().map(|x| x.to_string()).unwrap_or("-".into()), q.warning_episodes, q.warning_episodes_without_very_unhealthy);
    h.push_str("<table><tr><th>group</th><th>advisories per person per year</th><th>warnings per person per year</th></tr>");
    for g in CATEGORIES.iter().chain([&NO_CATEGORY]) {
        let (a, w) = q.per_year(g);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{a:.1}</td><td>{w:.1}</td></tr>",
            esc(g)
        );
    }
    let l = &d.live;
    let _ = write!(h, "</table><h3>The city service, live</h3><p>{} citizens consented at <code>{}</code>; its node derived their categories from the CDM and sent them, signed, to <code>medfed city serve</code> running over HTTPS on this machine; {} citizens' apps registered their district ({} eligible: registered and profiled). The service was fed {} hours of Seoul observations ({}) as AirKorea-shaped updates, decided warnings by group, and delivered them to a webhook gateway that failed every fifth request ({} failures, each retried). <b>{}</b> warnings were delivered, one per person per episode and level. Citizen <code>{}</code> withdrew between the two windows: the service deleted their registration, profile and messages, and sent them {} messages afterwards.</p>",
        l.consented, esc(&l.node), l.registered, l.eligible, l.hours, l.windows.iter().map(|(a, b)| format!("{a} to {b}")).collect::<Vec<_>>().join(", "), l.gateway_failures, l.delivered, esc(&l.withdrawn_subject), l.after_withdrawal_to_withdrawn);
    h.push_str("<table><tr><th>group</th><th>hazard</th><th>level</th><th>warnings sent</th></tr>");
    for ((g, hz, lv), n) in &l.by_group {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{n}</td></tr>",
            esc(g),
            esc(hz),
            esc(lv)
        );
    }
    h.push_str("</table><p>Each message counts for the groups its rule concerns that the person is in; a person in two of them counts in both rows. The message itself names the hazard, level, value and district, never the person's categories.</p>");
    match evidence {
        Some(r) => h.push_str(&super::evidence::section(r)),
        None => h.push_str("<h3>Evidence for the thresholds</h3><p>Not fitted in this run (see the demo's output).</p>"),
    }
    h
}
