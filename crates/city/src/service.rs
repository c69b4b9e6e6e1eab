//! `medfed city serve`: the city service.
//!
//! [`City`] joins the store, the rules engine and the outlooks. Its HTTPS API:
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/profiles` | a hospital's node | a signed profile batch (`medfed node profiles --service city`) |
//! | `POST /v1/subscribers` | the citizen app gateway (app token) | `{subject, district}`: a citizen's consent |
//! | `DELETE /v1/subscribers/{subject}` | app gateway | withdrawal: deletes everything about the subject |
//! | `POST /v1/air` | the feed (feed token) | an AirKorea-shaped response: observations by district |
//! | `POST /v1/weather-daily` | feed | `[{district, date, tmax_c, tavg_c, humidity_pct}]` |
//! | `GET /v1/status` | app or feed token | counts |
//!
//! Each new hour of observations is processed once: hazards by district, the engine's decisions,
//! and the messages, all committed to the outbox in one transaction. [`deliver`] sends the
//! outbox to the notification webhook, retrying with backoff until the gateway accepts.
//! A message carries the hazard, level, value and district, never the person's categories.

use crate::feed::{self, AirObs, Hour, Ingest, WeatherDay};
use crate::forecast::TmaxModel;
use crate::hazards::{self, Outlook};
use crate::rules::{Engine, Hazard, Hazards, Level, Message, RuleSet};
use crate::series;
use crate::store::{Counts, Store, StoredProfile};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use medfed_protocol::profiles::ProfileBatch;
use medfed_protocol::{PublicKey, Signed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hours of history loaded to compute an hour's hazards (24-hour means and outlook features).
const HISTORY_HOURS: i64 = 48;

pub struct City {
    pub store: Store,
    pub engine: Engine,
    pub outlook: Outlook,
    pub tmax: TmaxModel,
    /// Trusted node keys, by node name.
    pub node_keys: Vec<(String, PublicKey)>,
}

/// What applying a profile batch did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BatchOutcome {
    pub node: String,
    pub stored: usize,
    /// Profiles of subjects who withdrew after the batch was issued: not stored.
    pub stale: usize,
    pub withdrawn: usize,
}

/// What processing an hour did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HourOutcome {
    pub hour: String,
    /// An hour at or before the last processed one, arriving late: stored for the averages, but
    /// no warning is decided for the past.
    pub late: bool,
    pub districts: usize,
    pub messages: usize,
    pub held: usize,
    pub expired: usize,
}

/// The body posted to the notification webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub subject: String,
    pub district: String,
    pub hazard: Hazard,
    pub level: Level,
    pub hour: String,
    pub value: f64,
    /// True when the level is expected from the outlook rather than measured now.
    pub forecast: bool,
    pub text: String,
}

/// The advice text: by hazard and level only, in Korean and English.
pub fn advice(hazard: Hazard, level: Level, value: f64, forecast: bool, district: &str) -> String {
    let when = if forecast {
        "expected within 24 hours"
    } else {
        "now"
    };
    let (ko, en, v) = match hazard {
        Hazard::Pm25 => (
            "초미세먼지",
            "Fine dust (PM2.5)",
            format!("{value:.0} µg/m³ (24-h)"),
        ),
        Hazard::Pm10 => (
            "미세먼지",
            "Dust (PM10)",
            format!("{value:.0} µg/m³ (24-h)"),
        ),
        Hazard::O3 => ("오존", "Ozone", format!("{value:.3} ppm")),
        Hazard::Heat => ("폭염", "Heat", String::new()),
    };
    let (kl, el, act) = match (hazard, level) {
        (Hazard::Heat, Level::Warning) => ("경보", "warning", "Stay indoors in the cool between 12:00 and 17:00, drink water often, and check on those living alone."),
        (Hazard::Heat, _) => ("주의보", "advisory", "Avoid outdoor work in the afternoon and drink water often."),
        (_, Level::Warning) => ("매우나쁨", "very unhealthy", "Stay indoors; if you must go out, wear a KF94 mask. Keep your medicines at hand."),
        _ => ("나쁨", "unhealthy", "Cut down time outdoors and strenuous exercise; wear a KF80 mask or better outside."),
    };
    format!("[{district}] {ko} {kl} — {en} {el} {when} {v}. {act}").replace("  ", " ")
}

impl City {
    /// Opens the store in `dir` and rebuilds the engine from it.
    pub fn open(
        dir: &Path,
        rules: RuleSet,
        outlook: Outlook,
        tmax: TmaxModel,
        node_keys: Vec<(String, PublicKey)>,
    ) -> Result<City, String> {
        std::fs::create_dir_all(dir).map_err(|x| format!("{}: {x}", dir.display()))?;
        let store = Store::open(&dir.join("city.db"))?;
        let mut engine = Engine::new(rules);
        for (s, d, cats) in store.eligible()? {
            let c: Vec<&str> = cats.iter().map(String::as_str).collect();
            engine.upsert(&s, &d, &c)?;
        }
        for (d, r, e) in store.episodes()? {
            engine.restore_episode(&d, &r, e);
        }
        for (s, r, id, l) in store.told()? {
            engine.mark_told(&s, &r, id, l);
        }
        Ok(City {
            store,
            engine,
            outlook,
            tmax,
            node_keys,
        })
    }

    fn refresh(&mut self, subject: &str) -> Result<(), String> {
        match self.store.subject(subject)? {
            (Some(d), Some(p)) => {
                let c: Vec<&str> = p.categories.iter().map(String::as_str).collect();
                self.engine.upsert(subject, &d, &c)
            }
            _ => {
                self.engine.remove(subject);
                Ok(())
            }
        }
    }

    /// A citizen registers (consents) with their home district (`now`: Unix seconds).
    pub fn register(&mut self, subject: &str, district: &str, now: i64) -> Result<(), String> {
        if !medfed_protocol::profiles::valid_subject(subject) {
            return Err(format!("subject: {subject:?} is not a subject id"));
        }
        if district.trim().is_empty() || district.len() > 64 {
            return Err("district: empty or too long".into());
        }
        self.store.register(subject, district.trim(), now)?;
        self.refresh(subject)
    }

    /// Withdraws a subject: the store deletes everything, the engine forgets them (`now`: Unix
    /// seconds; `source`: "citizen", or the node's name).
    pub fn withdraw(&mut self, subject: &str, now: i64, source: &str) -> Result<bool, String> {
        let held = self.store.withdraw(subject, now, source)?;
        self.engine.remove(subject);
        Ok(held)
    }

    /// Applies a node's signed batch: checked against the trusted keys and the city's categories.
    pub fn apply_batch(&mut self, signed: &Signed) -> Result<BatchOutcome, String> {
        if self.node_keys.is_empty() {
            return Err("no node key is trusted (--node-key)".into());
        }
        let mut last = String::new();
        let (node, batch) = self
            .node_keys
            .iter()
            .find_map(|(n, k)| match ProfileBatch::open(signed, k) {
                Ok(b) => Some((n.clone(), b)),
                Err(x) => {
                    last = x;
                    None
                }
            })
            .ok_or(last)?;
        if batch.service != "city" {
            return Err(format!(
                "service: a batch for {:?}, not for the city",
                batch.service
            ));
        }
        if batch.node != node {
            return Err(format!(
                "node: the batch says {:?} but is signed by {node:?}'s key",
                batch.node
            ));
        }
        let mut out = BatchOutcome {
            node: node.clone(),
            ..Default::default()
        };
        for w in &batch.withdrawn {
            if self.withdraw(w, batch.issued_at, &node)? {
                out.withdrawn += 1;
            }
        }
        for p in &batch.profiles {
            let sp = StoredProfile {
                subject: p.subject.clone(),
                node: node.clone(),
                categories: p.categories.clone(),
                age_group: p.age_group.clone(),
            };
            if self.store.put_profile(&sp, batch.issued_at)? {
                out.stored += 1;
                self.refresh(&p.subject)?;
            } else {
                out.stale += 1;
            }
        }
        Ok(out)
    }

    /// Stores observations and weather; processing is [`City::process`].
    pub fn ingest_air(&mut self, obs: &[AirObs]) -> Result<(), String> {
        self.store.put_air(obs)
    }

    pub fn ingest_weather(&mut self, days: &[WeatherDay]) -> Result<(), String> {
        self.store.put_weather_days(days)
    }

    fn hazards_at(&self, district: &str, hour: Hour) -> Result<Option<Hazards>, String> {
        let obs = self
            .store
            .air_since(district, Hour(hour.0 - HISTORY_HOURS))?;
        let obs: Vec<AirObs> = obs.into_iter().filter(|o| o.hour <= hour).collect();
        if !obs.iter().any(|o| o.hour == hour) {
            return Ok(None);
        }
        let mut flags = Vec::new();
        let s = series::air_series(district, obs, &mut flags).remove(0);
        let day = hour.day();
        let days = self.store.weather_days_between(
            district,
            day - chrono::Duration::days(2),
            day + chrono::Duration::days(1),
        )?;
        let heat = hazards::heat_levels(&hazards::daily_heat_inputs(&days), &self.tmax);
        let t = s.at(hour).ok_or("hour outside its series")?;
        Ok(hazards::hourly_at(&s, &self.outlook, &heat, std::iter::once(t)).pop())
    }

    /// Processes every hour that has observations and has not been processed, in order.
    pub fn process(&mut self) -> Result<Vec<HourOutcome>, String> {
        let mut out = Vec::new();
        let districts = self.store.districts()?;
        let mut last = self.store.last_processed()?;
        for hour in self.store.unprocessed_hours()? {
            if last.is_some_and(|l| hour <= l) {
                self.store.commit_hour(hour, &[], &self.engine.episodes())?;
                out.push(HourOutcome {
                    hour: hour.to_string(),
                    late: true,
                    ..Default::default()
                });
                continue;
            }
            last = Some(hour);
            let mut hz = HashMap::new();
            for d in &districts {
                if let Some(h) = self.hazards_at(d, hour)? {
                    hz.insert(d.clone(), h);
                }
            }
            let (msgs, stats) = self.engine.update(hour, &hz);
            let bodies: Vec<(Message, String)> = msgs
                .into_iter()
                .map(|m| {
                    let n = Notification {
                        subject: m.subject.clone(),
                        district: m.district.clone(),
                        hazard: m.hazard,
                        level: m.level,
                        hour: m.hour.to_string(),
                        value: m.value,
                        forecast: m.forecast,
                        text: advice(m.hazard, m.level, m.value, m.forecast, &m.district),
                    };
                    let body = serde_json::to_string(&n).unwrap_or_default();
                    (m, body)
                })
                .collect();
            let added = self
                .store
                .commit_hour(hour, &bodies, &self.engine.episodes())?;
            out.push(HourOutcome {
                hour: hour.to_string(),
                late: false,
                districts: hz.len(),
                messages: added,
                held: stats.held,
                expired: stats.expired,
            });
        }
        Ok(out)
    }

    pub fn counts(&self) -> Result<Counts, String> {
        self.store.counts()
    }
}

/// Tokens for the API's two callers.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub app: String,
    pub feed: String,
}

#[derive(Clone)]
struct AppState {
    city: Arc<Mutex<City>>,
    tokens: Tokens,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn reply(code: StatusCode, v: serde_json::Value) -> Reply {
    (code, Json(v))
}

fn bad(message: impl Into<String>) -> Reply {
    reply(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": message.into() }),
    )
}

fn authorised(headers: &HeaderMap, want: &str) -> Result<(), Reply> {
    if medfed_tls::same_secret(medfed_tls::bearer(headers), want) {
        Ok(())
    } else {
        Err(reply(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "bad or missing token" }),
        ))
    }
}

fn lock(s: &AppState) -> std::sync::MutexGuard<'_, City> {
    s.city.lock().unwrap_or_else(|p| p.into_inner())
}

async fn post_profiles(State(s): State<AppState>, body: axum::body::Bytes) -> Reply {
    let signed: Signed = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(x) => return bad(format!("body: not a signed batch: {x}")),
    };
    match lock(&s).apply_batch(&signed) {
        Ok(o) => reply(StatusCode::OK, serde_json::to_value(o).unwrap_or_default()),
        Err(x) => reply(StatusCode::FORBIDDEN, serde_json::json!({ "error": x })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    subject: String,
    district: String,
}

async fn post_subscriber(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    if let Err(r) = authorised(&headers, &s.tokens.app) {
        return r;
    }
    let r: Registration = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(x) => return bad(format!("body: {x}")),
    };
    match lock(&s).register(&r.subject, &r.district, medfed_protocol::now()) {
        Ok(()) => reply(
            StatusCode::OK,
            serde_json::json!({ "registered": r.subject }),
        ),
        Err(x) => bad(x),
    }
}

async fn delete_subscriber(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(subject): UrlPath<String>,
) -> Reply {
    if let Err(r) = authorised(&headers, &s.tokens.app) {
        return r;
    }
    match lock(&s).withdraw(&subject, medfed_protocol::now(), "citizen") {
        Ok(held) => reply(
            StatusCode::OK,
            serde_json::json!({ "withdrawn": subject, "held": held }),
        ),
        Err(x) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": x }),
        ),
    }
}

async fn post_air(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Reply {
    if let Err(r) = authorised(&headers, &s.tokens.feed) {
        return r;
    }
    let got = match feed::read_airkorea_json("request body", &body, None) {
        Ok(g) => g,
        Err(x) => return bad(x.to_string()),
    };
    ingest_and_process(&s, got)
}

fn ingest_and_process(s: &AppState, got: Ingest<AirObs>) -> Reply {
    let mut city = lock(s);
    if let Err(x) = city.ingest_air(&got.records) {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": x }),
        );
    }
    match city.process() {
        Ok(hours) => reply(
            StatusCode::OK,
            serde_json::json!({
                "observations": got.records.len(),
                "flags": got.flags,
                "quarantined": got.quarantined,
                "hours": hours,
            }),
        ),
        Err(x) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": x }),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DayIn {
    district: String,
    date: String,
    tmax_c: Option<f64>,
    tavg_c: Option<f64>,
    humidity_pct: Option<f64>,
}

async fn post_weather(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    if let Err(r) = authorised(&headers, &s.tokens.feed) {
        return r;
    }
    let days: Vec<DayIn> = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(x) => return bad(format!("body: {x}")),
    };
    let mut out = Vec::new();
    for (i, d) in days.into_iter().enumerate() {
        let Ok(date) = chrono::NaiveDate::parse_from_str(&d.date, "%Y-%m-%d") else {
            return bad(format!("[{i}].date: {:?} is not YYYY-MM-DD", d.date));
        };
        for (name, v, lo, hi) in [
            ("tmax_c", d.tmax_c, -50.0, 50.0),
            ("tavg_c", d.tavg_c, -50.0, 50.0),
            ("humidity_pct", d.humidity_pct, 0.0, 100.0),
        ] {
            if v.is_some_and(|x| !(lo..=hi).contains(&x)) {
                return bad(format!("[{i}].{name}: outside {lo}–{hi}"));
            }
        }
        out.push(WeatherDay {
            station: d.district,
            date,
            tmax_c: d.tmax_c,
            tmin_c: None,
            tavg_c: d.tavg_c,
            rh_pct: d.humidity_pct,
            precip_mm: None,
        });
    }
    match lock(&s).ingest_weather(&out) {
        Ok(()) => reply(StatusCode::OK, serde_json::json!({ "days": out.len() })),
        Err(x) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": x }),
        ),
    }
}

async fn status(State(s): State<AppState>, headers: HeaderMap) -> Reply {
    if authorised(&headers, &s.tokens.app).is_err() {
        if let Err(r) = authorised(&headers, &s.tokens.feed) {
            return r;
        }
    }
    let city = lock(&s);
    match city.counts() {
        Ok(c) => reply(
            StatusCode::OK,
            serde_json::json!({ "counts": c, "persons_in_engine": city.engine.persons(), "open_episodes": city.engine.episodes().len() }),
        ),
        Err(x) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": x }),
        ),
    }
}

pub fn router(city: Arc<Mutex<City>>, tokens: Tokens) -> Router {
    Router::new()
        .route("/v1/profiles", post(post_profiles))
        .route("/v1/subscribers", post(post_subscriber))
        .route("/v1/subscribers/{subject}", delete(delete_subscriber))
        .route("/v1/air", post(post_air))
        .route("/v1/weather-daily", post(post_weather))
        .route("/v1/status", get(status))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(AppState { city, tokens })
}

/// Where notifications go.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: String,
    pub token: String,
}

/// Attempts before a message is marked failed (about a day of backoff).
pub const MAX_ATTEMPTS: i64 = 30;

/// One pass over the due outbox: each message posted with its outbox id as `Idempotency-Key`.
/// 2xx: sent. 5xx or no answer: retried later with exponential backoff (1 s doubling to 1 h).
/// Other 4xx: rejected, with the status kept. Returns (sent, retrying, rejected or failed).
pub async fn deliver_once(
    city: &Arc<Mutex<City>>,
    client: &reqwest::Client,
    hook: &Webhook,
) -> Result<(usize, usize, usize), String> {
    let due = {
        city.lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .due(now_ms(), 500)?
    };
    let (mut sent, mut retry, mut dead) = (0, 0, 0);
    for m in due {
        let r = client
            .post(&hook.url)
            .bearer_auth(&hook.token)
            .header("Idempotency-Key", m.id.to_string())
            .header("Content-Type", "application/json")
            .body(m.body.clone())
            .send()
            .await;
        let city = city.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(resp) if resp.status().is_success() => {
                city.store.mark(m.id, "sent", 0, "")?;
                sent += 1;
            }
            Ok(resp)
                if resp.status().is_client_error()
                    && resp.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                city.store
                    .mark(m.id, "rejected", 0, &format!("HTTP {}", resp.status()))?;
                dead += 1;
            }
            other => {
                let why = match other {
                    Ok(resp) => format!("HTTP {}", resp.status()),
                    Err(x) => x.to_string(),
                };
                if m.attempts + 1 >= MAX_ATTEMPTS {
                    city.store.mark(m.id, "failed", 0, &why)?;
                    dead += 1;
                } else {
                    let backoff = (1000i64 << m.attempts.min(12)).min(3_600_000);
                    city.store.mark(m.id, "pending", now_ms() + backoff, &why)?;
                    retry += 1;
                }
            }
        }
    }
    Ok((sent, retry, dead))
}

/// Delivers forever, pausing `idle` when nothing is due.
pub async fn deliver(
    city: Arc<Mutex<City>>,
    client: reqwest::Client,
    hook: Webhook,
    idle: Duration,
) {
    loop {
        match deliver_once(&city, &client, &hook).await {
            Ok((0, _, _)) | Err(_) => tokio::time::sleep(idle).await,
            Ok(_) => {}
        }
    }
}

/// The outlooks for a service with no history of its own: fitted on the embedded Seoul series.
pub fn seoul_models() -> Result<(Outlook, TmaxModel), String> {
    let got = crate::seoul::air().map_err(|x| x.to_string())?;
    let mut flags = Vec::new();
    let s = series::air_series("seoul", got.records, &mut flags).remove(0);
    let outlook = Outlook::fit(&s, 0..s.len()).ok_or("outlook fit")?;
    let days = crate::seoul::weather().map_err(|x| x.to_string())?;
    let tmax: BTreeMap<chrono::NaiveDate, f64> = days
        .records
        .iter()
        .filter_map(|d| Some((d.date, d.tmax_c?)))
        .collect();
    let tm = TmaxModel::fit_where(&tmax, |_| true).ok_or("tmax fit")?;
    Ok((outlook, tm))
}

/// The service's folder: `city.db`, the TLS certificate and key, and the two API tokens.
pub struct CityDir(pub std::path::PathBuf);

impl CityDir {
    pub fn cert(&self) -> std::path::PathBuf {
        self.0.join("cert.pem")
    }
    pub fn key(&self) -> std::path::PathBuf {
        self.0.join("key.pem")
    }
    pub fn app_token(&self) -> std::path::PathBuf {
        self.0.join("app.token")
    }
    pub fn feed_token(&self) -> std::path::PathBuf {
        self.0.join("feed.token")
    }

    /// Creates the folder with a self-signed certificate and tokens, unless it has them.
    pub fn ensure(&self) -> Result<Tokens, String> {
        let io = |p: &Path, x: std::io::Error| format!("{}: {x}", p.display());
        std::fs::create_dir_all(&self.0).map_err(|x| io(&self.0, x))?;
        if !self.cert().exists() {
            let (cert, key) = medfed_tls::self_signed(&[])?;
            std::fs::write(self.key(), key).map_err(|x| io(&self.key(), x))?;
            std::fs::write(self.cert(), cert).map_err(|x| io(&self.cert(), x))?;
        }
        for p in [self.app_token(), self.feed_token()] {
            if !p.exists() {
                std::fs::write(&p, medfed_tls::random_secret()).map_err(|x| io(&p, x))?;
            }
        }
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .map_err(|x| io(&p, x))
        };
        Ok(Tokens {
            app: read(self.app_token())?,
            feed: read(self.feed_token())?,
        })
    }
}

/// A city service serving over HTTPS in this process.
pub struct Running {
    pub city: Arc<Mutex<City>>,
    pub url: String,
    pub tokens: Tokens,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves `city` (opened on `dir`) over HTTPS on `addr` (`127.0.0.1:0` for a free port).
pub async fn spawn(dir: &Path, city: City, addr: &str) -> Result<Running, String> {
    let d = CityDir(dir.to_path_buf());
    let tokens = d.ensure()?;
    let tls = medfed_tls::server_config(&d.cert(), &d.key())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|x| format!("cannot listen on {addr}: {x}"))?;
    let url = format!(
        "https://{}",
        listener.local_addr().map_err(|x| x.to_string())?
    );
    let city = Arc::new(Mutex::new(city));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(medfed_tls::serve(
        listener,
        router(city.clone(), tokens.clone()),
        tls,
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running {
        city,
        url,
        tokens,
        stop,
        task,
    })
}
