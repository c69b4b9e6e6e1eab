//! The vehicle service: MQTT in, one monitor per driver, prompts and commands back to the cars,
//! calls out to 119 through the outbox.
//!
//! One task reads the broker (a persistent session, QoS 1, so that messages published while the
//! service is away wait for it) and hands publishes to the worker, which owns every driver's state.
//! Each message is authenticated and parsed ([`crate::msg`]); a duplicate (a sequence number already
//! seen, as QoS 1 redelivers after a reconnect) or a bad message is counted by reason and dropped.
//! Detections go through the driver's [`Escalator`]: a prompt is published to the car; a cancel
//! from the car dismisses it; when the window passes the call is stored in the outbox *before* the
//! car is told to turn on its hazard lights and stop safely, and the sender delivers it.
//!
//! Every event's outcome is appended to `events.jsonl` (no vitals: kind, time, district, age group,
//! outcome), the source of the statistics released to the network. Vitals exist only in memory (the
//! last 60 s and 10 s of ECG per driver) and in the calls themselves, which are deleted from
//! `outbox/sent` after the retention window.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medfed_vitals::driver::{DriverMonitor, DriverRules, EventKind, Reading};
use medfed_vitals::escalate::{Action, EscalationRules, Escalator};
use medfed_vitals::trend::Profile;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use crate::center::{Call, Msd, Strip, VitalsSummary};
use crate::dispatch::{DispatchStats, Endpoint, Outbox};
use crate::msg::{self, Command, Incoming, Reject};

/// A driver's consented categories, as their hospital's node released them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverProfile {
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub age_group: Option<String>,
}

impl DriverProfile {
    pub fn profile(&self) -> Profile {
        let has = |c: &str| self.categories.iter().any(|x| x == c);
        Profile {
            atrial_fibrillation: has("atrial_fibrillation"),
            pacemaker: has("pacemaker"),
            chronic_lung_disease: has("chronic_lung_disease"),
        }
    }
}

/// Read drivers' consented profiles (VIN → categories and age band). Either a signed batch from a
/// hospital's node (`medfed node profiles --service vehicles`), accepted only when its signature
/// verifies under one of `node_keys`, whose withdrawn VINs are left out; or, for simulations, a plain
/// map as `vehicles simulate --profiles-out` writes it. Either way only the categories the vehicle
/// service may receive are accepted, and errors name the file, the VIN and the field.
pub fn read_profiles(
    path: &std::path::Path,
    node_keys: &[medfed_protocol::PublicKey],
) -> Result<HashMap<String, DriverProfile>, String> {
    use medfed_protocol::profiles::{categories_of, ProfileBatch, AGE_GROUPS};
    let at = |m: String| format!("{}: {m}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| at(e.to_string()))?;
    let map: HashMap<String, DriverProfile> = if v.get("payload").is_some() {
        let signed: medfed_protocol::Signed =
            serde_json::from_value(v).map_err(|e| at(e.to_string()))?;
        if node_keys.is_empty() {
            return Err(at(
                "a signed profile batch needs the node's public key (--profiles-key)".into(),
            ));
        }
        let mut last = String::new();
        let batch = node_keys
            .iter()
            .find_map(|k| match ProfileBatch::open(&signed, k) {
                Ok(b) => Some(b),
                Err(e) => {
                    last = e;
                    None
                }
            })
            .ok_or_else(|| at(last))?;
        if batch.service != "vehicles" {
            return Err(at(format!(
                "service: a batch for {:?}, not for vehicles",
                batch.service
            )));
        }
        batch
            .profiles
            .into_iter()
            .map(|p| {
                (
                    p.subject,
                    DriverProfile {
                        categories: p.categories,
                        age_group: p.age_group,
                    },
                )
            })
            .collect()
    } else {
        serde_json::from_value(v).map_err(|e| at(e.to_string()))?
    };
    let allowed = categories_of("vehicles").unwrap_or_default();
    for (vin, p) in &map {
        if !msg::valid_vin(vin) {
            return Err(at(format!("{vin:?} is not a VIN")));
        }
        if let Some(c) = p.categories.iter().find(|c| !allowed.contains(&c.as_str())) {
            return Err(at(format!("{vin}: categories: unknown category {c:?}")));
        }
        if let Some(a) = p
            .age_group
            .as_ref()
            .filter(|a| !AGE_GROUPS.contains(&a.as_str()))
        {
            return Err(at(format!(
                "{vin}: age_group: {a:?} is not one of {AGE_GROUPS:?}"
            )));
        }
    }
    Ok(map)
}

pub struct ServiceConfig {
    pub broker_host: String,
    pub broker_port: u16,
    pub client_id: String,
    pub prefix: String,
    pub fleet_key: Vec<u8>,
    pub state_dir: PathBuf,
    pub endpoint: Endpoint,
    pub profiles: HashMap<String, DriverProfile>,
    pub escalation: EscalationRules,
    pub retention_days: f64,
}

/// Counters, readable while the service runs.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub messages: AtomicU64,
    pub vitals: AtomicU64,
    pub ecg: AtomicU64,
    pub rejected: Mutex<HashMap<&'static str, u64>>,
    pub detections: Mutex<HashMap<&'static str, u64>>,
    pub prompts: AtomicU64,
    pub cancels: AtomicU64,
    pub calls: AtomicU64,
    pub advised: AtomicU64,
    pub dispatch: Arc<DispatchStats>,
    /// Sample-to-decision latencies in µs (publish by the car to the end of processing).
    pub latencies_us: Mutex<Vec<u32>>,
    pub connected: AtomicU64,
    /// Nanoseconds the worker spent handling messages (its CPU, as it is one task).
    pub busy_ns: AtomicU64,
}

impl ServiceStats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
    /// Sample-to-decision latency quantiles in ms (the value at index ⌊(n−1)·p⌋ of the sorted
    /// latencies), `None` before any message.
    pub fn latency_ms(&self, ps: &[f64]) -> Vec<Option<f64>> {
        let mut lat = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lat.sort_unstable();
        ps.iter()
            .map(|p| {
                lat.get(((lat.len() as f64 - 1.0) * p) as usize)
                    .map(|&v| v as f64 / 1000.0)
            })
            .collect()
    }

    pub fn rejected_by(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The events log's line format and reader are shared with the node that counts it.
pub use medfed_protocol::vehicles::{read_events, EventLine};

struct Car {
    monitor: DriverMonitor,
    escalator: Escalator,
    profile: DriverProfile,
    seq: [u64; 3],
    last_t: f64,
    last_wall: Instant,
    last: Option<msg::VitalsMsg>,
    positions: VecDeque<(f64, f64)>,
    hr: VecDeque<Option<f64>>,
    spo2: VecDeque<Option<f64>>,
    strip: VecDeque<Option<i32>>,
    strip_end_ms: i64,
    strip_fs: f64,
    /// The event waiting for the driver's answer.
    prompt: Option<String>,
}

fn event_id(vin: &str, onset_s: f64) -> String {
    format!("{vin}-{}", (onset_s * 1000.0).round() as i64)
}

/// `events.jsonl`, appended to (and fsynced) by the worker and by the sender.
struct EventsLog(Mutex<std::fs::File>);

impl EventsLog {
    fn open(state_dir: &std::path::Path) -> Result<Arc<EventsLog>, String> {
        let path = state_dir.join("events.jsonl");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Arc::new(EventsLog(Mutex::new(f))))
    }

    fn append(&self, line: &EventLine) {
        let Ok(mut b) = serde_json::to_vec(line) else {
            return;
        };
        b.push(b'\n');
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&b).and_then(|_| f.sync_data()) {
            eprintln!("events.jsonl: {e}");
        }
    }
}

struct Worker {
    cfg: Arc<ServiceConfig>,
    stats: Arc<ServiceStats>,
    client: AsyncClient,
    cars: HashMap<String, Car>,
    outbox: Outbox,
    wake: Arc<tokio::sync::Notify>,
    events: Arc<EventsLog>,
}

impl Worker {
    fn reject(&self, r: &Reject) {
        if let Ok(mut m) = self.stats.rejected.lock() {
            *m.entry(r.reason()).or_default() += 1;
        }
    }

    fn log(&self, line: &EventLine) {
        self.events.append(line);
    }

    async fn command(&self, vin: &str, c: Command) {
        let topic = format!("{}/{vin}/cmd", self.cfg.prefix);
        let key = msg::vehicle_key(&self.cfg.fleet_key, vin);
        let Ok(json) = serde_json::to_vec(&c) else {
            return;
        };
        let _ = self
            .client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                msg::seal(&key, &topic, &json),
            )
            .await;
    }

    fn car(&mut self, vin: &str) -> &mut Car {
        let cfg = self.cfg.clone();
        self.cars.entry(vin.to_string()).or_insert_with(|| {
            let profile = cfg.profiles.get(vin).cloned().unwrap_or_default();
            Car {
                monitor: DriverMonitor::new(profile.profile(), DriverRules::default()),
                escalator: Escalator::new(cfg.escalation),
                profile,
                seq: [0; 3],
                last_t: f64::MIN,
                last_wall: Instant::now(),
                last: None,
                positions: VecDeque::new(),
                hr: VecDeque::new(),
                spo2: VecDeque::new(),
                strip: VecDeque::new(),
                strip_end_ms: 0,
                strip_fs: 250.0,
                prompt: None,
            }
        })
    }

    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        let stats = self.stats.clone();
        stats.messages.fetch_add(1, Ordering::Relaxed);
        let (vin, m) = match msg::parse(&self.cfg.prefix, &self.cfg.fleet_key, topic, payload) {
            Ok(x) => x,
            Err(r) => return self.reject(&r),
        };
        let (slot, seq, sent_us) = match &m {
            Incoming::Vitals(v) => (0, v.seq, v.sent_us),
            Incoming::Ecg(e) => (1, e.seq, e.sent_us),
            Incoming::Cancel(c) => (2, c.seq, 0),
        };
        let car = self.car(&vin);
        if seq <= car.seq[slot] {
            return self.reject(&Reject::Duplicate);
        }
        car.seq[slot] = seq;
        car.last_wall = Instant::now();
        let mut detections = Vec::new();
        let mut cancel = None;
        match m {
            Incoming::Vitals(v) => {
                stats.vitals.fetch_add(1, Ordering::Relaxed);
                let t = v.t_ms as f64 / 1000.0;
                car.last_t = car.last_t.max(t);
                let r = Reading {
                    t,
                    hr: v.hr,
                    rr_ms: v.rr_ms.clone(),
                    spo2: v.spo2,
                    worn: v.worn,
                    steering_dps: v.steering_dps,
                    pedal: v.pedal,
                    brake: v.brake,
                    speed_kmh: v.speed_kmh,
                };
                detections = car.monitor.reading(&r);
                for (q, x) in [(&mut car.hr, v.hr), (&mut car.spo2, v.spo2)] {
                    q.push_back(x);
                    if q.len() > 60 {
                        q.pop_front();
                    }
                }
                car.positions.push_back((v.lat, v.lon));
                if car.positions.len() > 3 {
                    car.positions.pop_front();
                }
                car.last = Some(v);
            }
            Incoming::Ecg(e) => {
                stats.ecg.fetch_add(1, Ordering::Relaxed);
                let t0 = e.t0_ms as f64 / 1000.0;
                let mv: Vec<f64> = e.uv.iter().map(|&u| u as f64 / 1000.0).collect();
                detections = car.monitor.ecg(t0, e.fs, &mv, e.lead_off);
                car.strip_fs = e.fs;
                let keep = (10.0 * e.fs) as usize;
                car.strip
                    .extend(e.uv.iter().map(|&u| (!e.lead_off).then_some(u)));
                while car.strip.len() > keep {
                    car.strip.pop_front();
                }
                car.strip_end_ms = e.t0_ms + (e.uv.len() as f64 / e.fs * 1000.0) as i64;
                car.last_t = car.last_t.max(t0 + e.uv.len() as f64 / e.fs);
            }
            Incoming::Cancel(c) => {
                if car.prompt.as_ref() == Some(&c.event) {
                    cancel = Some(c.t_ms as f64 / 1000.0);
                }
            }
        }
        let t = car.last_t;
        let mut actions = Vec::new();
        for d in &detections {
            if let Ok(mut m) = stats.detections.lock() {
                *m.entry(d.kind.name()).or_default() += 1;
            }
            actions.extend(car.escalator.detection(d));
        }
        if let Some(ct) = cancel {
            actions.extend(car.escalator.cancel(ct));
        }
        actions.extend(car.escalator.tick(t));
        for a in actions {
            self.act(&vin, a).await;
        }
        if sent_us > 0 {
            let lat = (msg::now_us() - sent_us).clamp(0, u32::MAX as i64) as u32;
            if let Ok(mut l) = self.stats.latencies_us.lock() {
                l.push(lat);
            }
        }
    }

    async fn act(&mut self, vin: &str, a: Action) {
        let district = {
            let car = self.car(vin);
            car.last
                .as_ref()
                .map_or("unknown", |v| crate::regions::district(v.lat, v.lon))
                .to_string()
        };
        let age_group = self.car(vin).profile.age_group.clone();
        let line = |id: &str,
                    kind: EventKind,
                    kinds: Vec<String>,
                    onset_s: f64,
                    at_s: f64,
                    outcome: &str| EventLine {
            event_id: id.to_string(),
            vin: vin.to_string(),
            kind: kind.name().to_string(),
            kinds,
            onset_ms: (onset_s * 1000.0).round() as i64,
            at_ms: (at_s * 1000.0).round() as i64,
            outcome: outcome.to_string(),
            district: district.clone(),
            age_group: age_group.clone(),
        };
        match a {
            Action::Prompt {
                onset_s,
                kind,
                deadline_s,
            } => {
                let id = event_id(vin, onset_s);
                self.stats.prompts.fetch_add(1, Ordering::Relaxed);
                let t = self.car(vin).last_t;
                self.car(vin).prompt = Some(id.clone());
                self.log(&line(
                    &id,
                    kind,
                    vec![kind.name().into()],
                    onset_s,
                    t,
                    "prompted",
                ));
                self.command(
                    vin,
                    Command {
                        event: id,
                        action: "confirm".into(),
                        kind: kind.name().into(),
                        deadline_ms: Some((deadline_s * 1000.0) as i64),
                    },
                )
                .await;
            }
            Action::Cancelled { onset_s, kind } => {
                let id = event_id(vin, onset_s);
                self.stats.cancels.fetch_add(1, Ordering::Relaxed);
                let t = self.car(vin).last_t;
                self.car(vin).prompt = None;
                self.log(&line(
                    &id,
                    kind,
                    vec![kind.name().into()],
                    onset_s,
                    t,
                    "cancelled",
                ));
                self.command(
                    vin,
                    Command {
                        event: id,
                        action: "cancelled".into(),
                        kind: kind.name().into(),
                        deadline_ms: None,
                    },
                )
                .await;
            }
            Action::Advise { kind, raised_s } => {
                self.stats.advised.fetch_add(1, Ordering::Relaxed);
                let id = event_id(vin, raised_s);
                self.log(&line(
                    &id,
                    kind,
                    vec![kind.name().into()],
                    raised_s,
                    raised_s,
                    "advised",
                ));
                self.command(
                    vin,
                    Command {
                        event: id,
                        action: "advise".into(),
                        kind: kind.name().into(),
                        deadline_ms: None,
                    },
                )
                .await;
            }
            Action::Call {
                onset_s,
                kind,
                kinds,
                at_s,
            } => {
                let id = event_id(vin, onset_s);
                self.car(vin).prompt = None;
                let call = self.build_call(vin, &id, kind, &kinds, onset_s, at_s);
                // Stored first: a crash from here on cannot lose the call.
                match self.outbox.enqueue(&call) {
                    Ok(true) => {
                        self.stats.calls.fetch_add(1, Ordering::Relaxed);
                        self.wake.notify_one();
                        let names = kinds.iter().map(|k| k.name().to_string()).collect();
                        self.log(&line(&id, kind, names, onset_s, at_s, "called"));
                    }
                    Ok(false) => {}
                    Err(e) => eprintln!("outbox: {e}"),
                }
                for action in ["call_placed", "hazard_lights_on", "safe_stop"] {
                    self.command(
                        vin,
                        Command {
                            event: id.clone(),
                            action: action.into(),
                            kind: kind.name().into(),
                            deadline_ms: None,
                        },
                    )
                    .await;
                }
            }
        }
    }

    fn build_call(
        &mut self,
        vin: &str,
        id: &str,
        kind: EventKind,
        kinds: &[EventKind],
        onset_s: f64,
        at_s: f64,
    ) -> Call {
        let car = self.car(vin);
        let v = car.last.clone();
        let mas = |deg: f64| (deg * 3.6e6).round() as i64;
        let (lat, lon) = v.as_ref().map_or((0.0, 0.0), |v| (v.lat, v.lon));
        let recent = car
            .positions
            .iter()
            .rev()
            .skip(1)
            .map(|&(la, lo)| (mas(la) - mas(lat), mas(lo) - mas(lon)))
            .collect();
        let hr_last = car.hr.iter().rev().flatten().next().copied();
        let spo2_last = car.spo2.iter().rev().flatten().next().copied();
        Call {
            event_id: id.to_string(),
            msd: Msd {
                message_identifier: 1,
                automatic_activation: true,
                test_call: false,
                position_can_be_trusted: v.is_some(),
                vehicle_type: "M1".into(),
                vin: vin.to_string(),
                timestamp: (at_s) as i64,
                latitude_mas: mas(lat),
                longitude_mas: mas(lon),
                vehicle_direction: v
                    .as_ref()
                    .map_or(255, |v| ((v.heading_deg / 2.0) as u32 % 180) as u8),
                recent_locations: recent,
                number_of_passengers: v.as_ref().map(|v| v.passengers),
            },
            kind: kind.name().into(),
            kinds: kinds.iter().map(|k| k.name().into()).collect(),
            onset_ms: (onset_s * 1000.0).round() as i64,
            decided_ms: (at_s * 1000.0).round() as i64,
            vitals: VitalsSummary {
                hr_last,
                hr_baseline: car.monitor.baseline_hr(),
                spo2_last,
                hr_60s: car.hr.iter().copied().collect(),
                spo2_60s: car.spo2.iter().copied().collect(),
                speed_kmh: v.as_ref().map_or(0.0, |v| v.speed_kmh),
                seconds_without_input: car.monitor.seconds_without_input(car.last_t),
            },
            strip: Strip {
                fs: car.strip_fs,
                start_ms: car.strip_end_ms
                    - (car.strip.len() as f64 / car.strip_fs * 1000.0) as i64,
                uv: car.strip.iter().copied().collect(),
            },
            profile: car.profile.categories.clone(),
        }
    }

    /// Time passes for cars whose driver is being asked: their car clock runs on with the wall
    /// clock even when they fall silent, so that an offline car's prompt still expires.
    async fn tick(&mut self) {
        let due: Vec<(String, f64)> = self
            .cars
            .iter()
            .filter(|(_, c)| c.escalator.prompting())
            .map(|(v, c)| (v.clone(), c.last_t + c.last_wall.elapsed().as_secs_f64()))
            .collect();
        for (vin, t) in due {
            let a = self.car(&vin).escalator.tick(t);
            if let Some(a) = a {
                self.act(&vin, a).await;
            }
        }
    }
}

/// A running service.
pub struct Service {
    pub stats: Arc<ServiceStats>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Stop: the reader, the worker and the sender finish what they hold.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start the service.
pub fn start(cfg: ServiceConfig) -> Result<Service, String> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| format!("{}: {e}", cfg.state_dir.display()))?;
    let outbox = Outbox::open(&cfg.state_dir.join("outbox"))?;
    outbox.prune(cfg.retention_days)?;
    let events = EventsLog::open(&cfg.state_dir)?;
    let cfg = Arc::new(cfg);
    let mut opts = MqttOptions::new(
        cfg.client_id.clone(),
        cfg.broker_host.clone(),
        cfg.broker_port,
    );
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_clean_session(false);
    // Read oversized messages (up to 4 MB) so that they are counted and dropped by our rule, not
    // by a dropped connection that would bring them back again and again.
    opts.set_max_packet_size(4 << 20, msg::MAX_PAYLOAD + 1024);
    opts.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let stats = Arc::new(ServiceStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(20_000);
    let mut tasks = Vec::new();
    // Reader: the event loop, resubscribing on every connection.
    {
        let client = client.clone();
        let prefix = cfg.prefix.clone();
        let stats = stats.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    e = eventloop.poll() => e,
                    _ = stop.changed() => return,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                        for k in ["vitals", "ecg", "cancel"] {
                            let _ = client
                                .subscribe(format!("{prefix}/+/{k}"), QoS::AtLeastOnce)
                                .await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload.to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Broker gone: try again shortly (the session and its queue survive).
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => return,
                        }
                    }
                }
            }
        }));
    }
    // Sender.
    let wake = Arc::new(tokio::sync::Notify::new());
    {
        let outbox = outbox.clone();
        let ep = cfg.endpoint.clone();
        let dstats = stats.dispatch.clone();
        let wake = wake.clone();
        let stop = stop_rx.clone();
        let log = events.clone();
        tasks.push(tokio::spawn(async move {
            crate::dispatch::run(outbox, ep, dstats, wake, stop, move |call, ack| {
                let line = EventLine {
                    event_id: call.event_id.clone(),
                    vin: call.msd.vin.clone(),
                    kind: call.kind.clone(),
                    kinds: call.kinds.clone(),
                    onset_ms: call.onset_ms,
                    at_ms: crate::center::now_ms(),
                    outcome: if ack.duplicate {
                        "acknowledged_again"
                    } else {
                        "acknowledged"
                    }
                    .into(),
                    district: crate::regions::district(
                        call.msd.latitude_mas as f64 / 3.6e6,
                        call.msd.longitude_mas as f64 / 3.6e6,
                    )
                    .into(),
                    age_group: None,
                };
                log.append(&line);
            })
            .await;
        }));
    }
    // Worker.
    {
        let mut w = Worker {
            cfg: cfg.clone(),
            stats: stats.clone(),
            client: client.clone(),
            cars: HashMap::new(),
            outbox,
            wake,
            events,
        };
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some((topic, payload)) => {
                            let t = Instant::now();
                            w.handle(&topic, &payload).await;
                            w.stats.busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        }
                        None => return,
                    },
                    _ = tick.tick() => w.tick().await,
                    _ = stop.changed() => {
                        let _ = w.client.disconnect().await;
                        return;
                    }
                }
            }
        }));
    }
    Ok(Service {
        stats,
        stop: stop_tx,
        tasks,
    })
}
