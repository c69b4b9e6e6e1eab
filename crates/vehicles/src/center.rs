//! `medfed emergency-center`: a receiving 119 endpoint for demos and tests.
//!
//! It takes calls over HTTPS (`POST /v1/calls`, bearer token), each an eCall-style minimum set of
//! data (EN 15722's fields: message identifier, control flags, VIN, time, position in
//! milliarcseconds, direction in 2° steps, recent positions, passengers) plus the vitals summary and
//! the ECG strip that triggered it. A call is recorded once per event id: a retry of a call already
//! recorded gets `200` with the same call number and `duplicate: true`, a new one `201`. Calls are
//! appended to `calls.jsonl` (fsynced before the acknowledgement) and read back on start, so a
//! restarted centre still knows every event it took. `GET /v1/calls` lists them; `GET /` is a page
//! with each call's data and strip.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// eCall minimum set of data (EN 15722), the fields a 119 operator needs from the car.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Msd {
    pub message_identifier: u32,
    pub automatic_activation: bool,
    pub test_call: bool,
    pub position_can_be_trusted: bool,
    /// EN 15722 vehicle type; passenger cars are `M1`.
    pub vehicle_type: String,
    pub vin: String,
    /// UTC seconds since the Unix epoch.
    pub timestamp: i64,
    pub latitude_mas: i64,
    pub longitude_mas: i64,
    /// Direction in 2° steps (0–179), 255 when unknown.
    pub vehicle_direction: u8,
    /// The two earlier positions, as deltas in milliarcseconds.
    pub recent_locations: Vec<(i64, i64)>,
    pub number_of_passengers: Option<u8>,
}

/// What the vehicle service sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub event_id: String,
    pub msd: Msd,
    /// The kind that opened the event, and every kind raised during it.
    pub kind: String,
    pub kinds: Vec<String>,
    /// Car times, ms since the epoch.
    pub onset_ms: i64,
    pub decided_ms: i64,
    pub vitals: VitalsSummary,
    pub strip: Strip,
    /// Consented profile categories (never a record).
    pub profile: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct VitalsSummary {
    pub hr_last: Option<f64>,
    pub hr_baseline: Option<f64>,
    pub spo2_last: Option<f64>,
    /// The last 60 s of 1 Hz heart rate and SpO2 (`null` where absent).
    pub hr_60s: Vec<Option<f64>>,
    pub spo2_60s: Vec<Option<f64>>,
    pub speed_kmh: f64,
    pub seconds_without_input: f64,
}

/// The ECG around the decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Strip {
    pub fs: f64,
    pub start_ms: i64,
    /// Microvolts; `null` where the lead was off.
    pub uv: Vec<Option<i32>>,
}

/// What the centre answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub call_number: u64,
    pub duplicate: bool,
}

/// A recorded call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub call_number: u64,
    /// Wall clock when received, ms since the epoch.
    pub received_ms: i64,
    pub call: Call,
}

/// The centre's files: `cert.pem`, `key.pem`, `token`, `calls.jsonl`.
pub struct CenterDir(pub PathBuf);

impl CenterDir {
    pub fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }
    pub fn token(&self) -> PathBuf {
        self.0.join("token")
    }
    pub fn calls(&self) -> PathBuf {
        self.0.join("calls.jsonl")
    }

    /// Create the directory with a self-signed certificate and a token, unless it has them.
    pub fn ensure(&self) -> Result<(), String> {
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        std::fs::create_dir_all(&self.0).map_err(|e| io(&self.0, e))?;
        if !self.cert().exists() {
            let (cert, key) = medfed_tls::self_signed(&[])?;
            std::fs::write(self.key(), key).map_err(|e| io(&self.key(), e))?;
            std::fs::write(self.cert(), cert).map_err(|e| io(&self.cert(), e))?;
        }
        if !self.token().exists() {
            std::fs::write(self.token(), medfed_tls::random_secret())
                .map_err(|e| io(&self.token(), e))?;
        }
        Ok(())
    }

    pub fn token_value(&self) -> Result<String, String> {
        std::fs::read_to_string(self.token())
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}: {e}", self.token().display()))
    }

    /// Every call recorded so far. A torn last line (a crash mid-write) is ignored, because its
    /// call was never acknowledged and will come again.
    pub fn read_calls(&self) -> Result<Vec<Record>, String> {
        let text = match std::fs::read_to_string(self.calls()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.calls().display())),
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str::<Record>(l) {
                Ok(r) => out.push(r),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(format!("{} line {}: {e}", self.calls().display(), i + 1));
                }
            }
        }
        Ok(out)
    }
}

/// The centre's state.
pub struct Center {
    dir: CenterDir,
    token: String,
    inner: Mutex<Inner>,
    /// Called with each new call (the command prints it).
    on_call: Box<dyn Fn(&Record) + Send + Sync>,
}

struct Inner {
    records: Vec<Record>,
    by_event: HashMap<String, usize>,
}

impl Center {
    pub fn open(
        dir: CenterDir,
        on_call: Box<dyn Fn(&Record) + Send + Sync>,
    ) -> Result<Arc<Center>, String> {
        dir.ensure()?;
        let token = dir.token_value()?;
        let records = dir.read_calls()?;
        let by_event = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.call.event_id.clone(), i))
            .collect();
        Ok(Arc::new(Center {
            dir,
            token,
            inner: Mutex::new(Inner { records, by_event }),
            on_call,
        }))
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a call once per event; the acknowledgement.
    pub fn take(&self, call: Call) -> Result<Ack, String> {
        let mut inner = self.lock();
        if let Some(&i) = inner.by_event.get(&call.event_id) {
            return Ok(Ack {
                call_number: inner.records[i].call_number,
                duplicate: true,
            });
        }
        let record = Record {
            call_number: inner.records.len() as u64 + 1,
            received_ms: now_ms(),
            call,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let path = self.dir.calls();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        (self.on_call)(&record);
        let ack = Ack {
            call_number: record.call_number,
            duplicate: false,
        };
        let i = inner.records.len();
        inner.by_event.insert(record.call.event_id.clone(), i);
        inner.records.push(record);
        Ok(ack)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One line for a terminal.
pub fn describe(r: &Record) -> String {
    let c = &r.call;
    format!(
        "119 call #{} {} {} at {:.5},{:.5} — {} (also {}); HR {} SpO2 {}; onset→decision {:.0} s",
        r.call_number,
        c.msd.vin,
        c.event_id,
        c.msd.latitude_mas as f64 / 3.6e6,
        c.msd.longitude_mas as f64 / 3.6e6,
        c.kind,
        c.kinds.join(", "),
        c.vitals.hr_last.map_or("-".into(), |h| format!("{h:.0}")),
        c.vitals.spo2_last.map_or("-".into(), |s| format!("{s:.0}")),
        (c.decided_ms - c.onset_ms) as f64 / 1000.0
    )
}

fn authorized(center: &Center, headers: &HeaderMap) -> bool {
    medfed_tls::same_secret(medfed_tls::bearer(headers), &center.token)
}

async fn post_call(
    State(center): State<Arc<Center>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    if !authorized(&center, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "bad token"})),
        )
            .into_response();
    }
    let call: Call = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": format!("call: {e}")})),
            )
                .into_response()
        }
    };
    if call.event_id.is_empty() || !crate::msg::valid_vin(&call.msd.vin) {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "call: event_id empty or msd.vin not a VIN"})),
        )
            .into_response();
    }
    let c = center.clone();
    match tokio::task::spawn_blocking(move || c.take(call)).await {
        Ok(Ok(ack)) => {
            let status = if ack.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(ack)).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn list(State(center): State<Arc<Center>>, headers: HeaderMap) -> impl IntoResponse {
    if !authorized(&center, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(center.records()).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG of an ECG strip (gaps where the lead was off).
pub fn strip_svg(strip: &Strip, width: f64, height: f64) -> String {
    let n = strip.uv.len().max(1) as f64;
    let vals: Vec<i32> = strip.uv.iter().flatten().copied().collect();
    let (lo, hi) = vals
        .iter()
        .fold((i32::MAX, i32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = if hi > lo { (hi - lo) as f64 } else { 1.0 };
    let mut path = String::new();
    let mut pen = false;
    for (i, v) in strip.uv.iter().enumerate() {
        match v {
            Some(v) => {
                let x = i as f64 / n * width;
                let y = height - 4.0 - (*v - lo) as f64 / span * (height - 8.0);
                path.push_str(&format!("{}{x:.1},{y:.1} ", if pen { "L" } else { "M" }));
                pen = true;
            }
            None => pen = false,
        }
    }
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>\
         <rect width='100%' height='100%' fill='#fff8f8' stroke='#e0b0b0'/>\
         <path d='{path}' fill='none' stroke='#b00020' stroke-width='1'/></svg>"
    )
}

async fn page(State(center): State<Arc<Center>>) -> Html<String> {
    let records = center.records();
    let mut html = String::from(
        "<!doctype html><meta charset='utf-8'><title>119 emergency centre</title>\
         <style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:top}</style>\
         <h1>119 emergency centre — incoming calls</h1><table><tr><th>#</th><th>received</th><th>vehicle</th><th>event</th><th>position</th><th>vitals</th><th>strip</th></tr>",
    );
    for r in records.iter().rev() {
        let c = &r.call;
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}<br>{} passenger(s)</td><td><b>{}</b><br>{}</td><td>{:.5}, {:.5}<br>heading {}°</td><td>HR {} (baseline {})<br>SpO2 {}<br>{:.0} km/h, no input {:.0} s</td><td>{}</td></tr>",
            r.call_number,
            r.received_ms,
            esc(&c.msd.vin),
            c.msd.number_of_passengers.map_or("?".into(), |p| p.to_string()),
            esc(&c.kind),
            esc(&c.kinds.join(", ")),
            c.msd.latitude_mas as f64 / 3.6e6,
            c.msd.longitude_mas as f64 / 3.6e6,
            c.msd.vehicle_direction as u32 * 2,
            c.vitals.hr_last.map_or("-".into(), |h| format!("{h:.0}")),
            c.vitals.hr_baseline.map_or("-".into(), |h| format!("{h:.0}")),
            c.vitals.spo2_last.map_or("-".into(), |s| format!("{s:.0}")),
            c.vitals.speed_kmh,
            c.vitals.seconds_without_input,
            strip_svg(&c.strip, 500.0, 80.0),
        ));
    }
    html.push_str("</table>");
    Html(html)
}

pub fn router(center: Arc<Center>) -> Router {
    Router::new()
        .route("/v1/calls", post(post_call).get(list))
        .route("/", get(page))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(center)
}

/// A centre serving on loopback (or any address) in this process.
pub struct Running {
    pub center: Arc<Center>,
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Open the centre in `dir` and serve it over HTTPS on `addr` (`127.0.0.1:0` for a free port).
pub async fn spawn(
    dir: &Path,
    addr: &str,
    on_call: Box<dyn Fn(&Record) + Send + Sync>,
) -> Result<Running, String> {
    let center = Center::open(CenterDir(dir.to_path_buf()), on_call)?;
    let d = CenterDir(dir.to_path_buf());
    let tls = medfed_tls::server_config(&d.cert(), &d.key())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let url = format!(
        "https://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(medfed_tls::serve(
        listener,
        router(center.clone()),
        tls,
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running {
        center,
        url,
        stop,
        task,
    })
}
