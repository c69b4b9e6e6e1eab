//! `medfed vehicles simulate`: a fleet of simulated cars ([`medfed_vitals::sim::CarSim`])
//! publishing over a real MQTT broker, and drivers answering the service's prompts.
//!
//! Each car publishes its vitals and one ECG chunk per simulated second, sealed with its own key,
//! at `speed` times real time. Cars share `connections` MQTT connections (each a client of its
//! own, QoS 1, persistent session); while the broker is unreachable a connection keeps what its
//! cars publish and sends it when the broker is back, in order (store and forward). A driver who is
//! still responsive dismisses a prompt for a false alarm 3–10 s after it appears; a driver having
//! an emergency does not. With `duplicates`, every message is published twice, as a flaky link
//! would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medfed_vitals::driver::EventKind;
use medfed_vitals::sim::{dismisses, CarSim, Planted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::msg::{self, CancelMsg, Command, EcgMsg, VitalsMsg};
use crate::service::DriverProfile;
use medfed_protocol::profiles::AGE_GROUPS;

pub struct FleetConfig {
    pub broker_host: String,
    pub broker_port: u16,
    pub prefix: String,
    pub fleet_key: Vec<u8>,
    pub cars: usize,
    /// Simulated seconds each car drives.
    pub seconds: u64,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Emergencies to plant: kind and how many cars get one.
    pub plant: Vec<(EventKind, usize)>,
    /// Onsets are drawn in this range of simulated seconds.
    pub onset_s: (f64, f64),
    pub seed: u64,
    /// Car time of the first second, ms since the epoch.
    pub start_ms: i64,
    pub duplicates: bool,
    pub connections: usize,
}

/// What the fleet did.
#[derive(Debug, Default)]
pub struct FleetReport {
    pub planted: Vec<(String, Planted)>,
    pub published: u64,
    pub cancels: u64,
    /// Commands each car received.
    pub commands: HashMap<String, Vec<Command>>,
    pub rejected_commands: u64,
}

/// The fleet's VINs: ISO 3779 shaped, deterministic for the seed.
pub fn vins(seed: u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("KMHSM{:03}{:09}", seed % 1000, i))
        .collect()
}

/// The consented profiles the drivers' nodes would have released: 8 % known AF, 2 % pacemaker, 6 %
/// chronic lung disease, and an age group.
pub fn profiles(seed: u64, n: usize) -> HashMap<String, DriverProfile> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9f0f11e5);
    vins(seed, n)
        .into_iter()
        .map(|v| {
            let mut categories = Vec::new();
            for (c, p) in [
                ("atrial_fibrillation", 0.08),
                ("pacemaker", 0.02),
                ("chronic_lung_disease", 0.06),
            ] {
                if rng.random_bool(p) {
                    categories.push(c.to_string());
                }
            }
            // Drivers' shares of the age bands, cumulative: 3 %, 35 %, 45 %, 15 %, 2 %.
            let r: f64 = rng.random();
            let band = [0.03, 0.38, 0.83, 0.98]
                .iter()
                .position(|c| r < *c)
                .unwrap_or(AGE_GROUPS.len() - 1);
            let age = AGE_GROUPS[band];
            (
                v,
                DriverProfile {
                    categories,
                    age_group: Some(age.to_string()),
                },
            )
        })
        .collect()
}

struct Ctl {
    /// The prompt the driver will dismiss: (event, car second to press cancel).
    cancel: Option<(String, f64)>,
    /// Prompts not yet seen by the driver.
    inbox: Vec<Command>,
    /// Every command received.
    history: Vec<Command>,
}

struct SimCar {
    vin: String,
    key: [u8; 32],
    sim: CarSim,
    seq: u64,
    passengers: u8,
}

/// Drive the fleet; `progress` is told each simulated second completed.
pub async fn simulate(
    cfg: FleetConfig,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<FleetReport, String> {
    // A broker that is not there at the start is a mistake, not an outage to ride out.
    let addr = format!("{}:{}", cfg.broker_host, cfg.broker_port);
    let reachable = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await;
    if !matches!(reachable, Ok(Ok(_))) {
        return Err(format!("cannot reach the MQTT broker at {addr}"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let vin_list = vins(cfg.seed, cfg.cars);
    let mut plants: Vec<Option<Planted>> = vec![None; cfg.cars];
    let mut i = 0;
    for &(kind, n) in &cfg.plant {
        for _ in 0..n {
            if i < cfg.cars {
                let onset_s = rng.random_range(cfg.onset_s.0..cfg.onset_s.1).round();
                plants[i] = Some(Planted { kind, onset_s });
                i += 1;
            }
        }
    }
    let start_s = cfg.start_ms as f64 / 1000.0;
    let mut report = FleetReport::default();
    let ctl: Arc<Mutex<HashMap<String, Ctl>>> = Arc::new(Mutex::new(HashMap::new()));
    let connections = cfg.connections.clamp(1, cfg.cars.max(1));
    let mut groups: Vec<Vec<SimCar>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, vin) in vin_list.iter().enumerate() {
        let planted = plants[i].map(|p| Planted {
            kind: p.kind,
            onset_s: p.onset_s + start_s,
        });
        if let Some(p) = planted {
            report.planted.push((vin.clone(), p));
        }
        // Start somewhere in Seoul.
        let lat = 37.48 + 0.14 * rng.random::<f64>();
        let lon = 126.86 + 0.26 * rng.random::<f64>();
        groups[i % connections].push(SimCar {
            vin: vin.clone(),
            key: msg::vehicle_key(&cfg.fleet_key, vin),
            sim: CarSim::new(
                cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                start_s,
                lat,
                lon,
                planted,
            ),
            seq: 0,
            passengers: rng.random_range(1..=4),
        });
        ctl.lock().map_err(|e| e.to_string())?.insert(
            vin.clone(),
            Ctl {
                cancel: None,
                inbox: Vec::new(),
                history: Vec::new(),
            },
        );
    }
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cancels = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bad_cmds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = Arc::new(progress);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (mut loops, mut drivers) = (Vec::new(), Vec::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (g, cars) in groups.into_iter().enumerate() {
        let mut opts = MqttOptions::new(
            format!("medfed-fleet-{}-{g}", cfg.seed),
            cfg.broker_host.clone(),
            cfg.broker_port,
        );
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_clean_session(false);
        opts.set_max_packet_size(msg::MAX_PAYLOAD + 1024, msg::MAX_PAYLOAD + 1024);
        opts.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(opts, 200_000);
        // Event loop: commands in.
        let keys: HashMap<String, [u8; 32]> = cars.iter().map(|c| (c.vin.clone(), c.key)).collect();
        let prefix = cfg.prefix.clone();
        let ctl_in = ctl.clone();
        let sub = client.clone();
        let bad = bad_cmds.clone();
        let mut stop = stop_rx.clone();
        loops.push(tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    e = eventloop.poll() => e,
                    _ = stop.changed() => {
                        // Drain what is still queued before leaving.
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                        while tokio::time::Instant::now() < deadline {
                            match tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await {
                                Ok(Ok(_)) => {}
                                _ => break,
                            }
                        }
                        return;
                    }
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for vin in keys.keys() {
                            let _ = sub.subscribe(format!("{prefix}/{vin}/cmd"), QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some((vin, _)) = msg::split_topic(&prefix, &p.topic) else { continue };
                        let Some(key) = keys.get(vin) else { continue };
                        let cmd = msg::open(key, &p.topic, &p.payload)
                            .ok()
                            .and_then(|j| serde_json::from_slice::<Command>(j).ok());
                        match (cmd, ctl_in.lock()) {
                            (Some(c), Ok(mut m)) => {
                                if let Some(x) = m.get_mut(vin) {
                                    if c.action == "confirm" {
                                        x.inbox.push(c.clone());
                                    }
                                    x.history.push(c);
                                }
                            }
                            _ => {
                                bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }));
        // Driving loop.
        let prefix = cfg.prefix.clone();
        let ctl_drive = ctl.clone();
        let (seconds, speed, dup) = (cfg.seconds, cfg.speed, cfg.duplicates);
        let published = published.clone();
        let cancels = cancels.clone();
        let progress = progress.clone();
        let done = done.clone();
        let groups_n = connections as u64;
        let mut seed_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (g as u64) << 20);
        drivers.push(tokio::spawn(async move {
            let mut cars = cars;
            let period = Duration::from_secs_f64(1.0 / speed.max(0.001));
            let mut next = tokio::time::Instant::now();
            for _ in 0..seconds {
                for car in cars.iter_mut() {
                    let s = car.sim.step();
                    let t = s.reading.t;
                    car.seq += 1;
                    let sent_us = msg::now_us();
                    let v = VitalsMsg {
                        seq: car.seq,
                        t_ms: (t * 1000.0).round() as i64,
                        sent_us,
                        hr: s.reading.hr,
                        rr_ms: s.reading.rr_ms.clone(),
                        spo2: s.reading.spo2,
                        worn: s.reading.worn,
                        steering_dps: s.reading.steering_dps,
                        pedal: s.reading.pedal,
                        brake: s.reading.brake,
                        speed_kmh: s.reading.speed_kmh,
                        lat: s.lat,
                        lon: s.lon,
                        heading_deg: s.heading_deg,
                        passengers: car.passengers,
                    };
                    let e = EcgMsg {
                        seq: car.seq,
                        t0_ms: ((t - 1.0) * 1000.0).round() as i64,
                        sent_us,
                        fs: car.sim.fs,
                        lead_off: s.lead_off,
                        uv: s.ecg.iter().map(|x| (x * 1000.0).round() as i32).collect(),
                    };
                    let mut out = Vec::new();
                    for (kind, body) in [
                        ("ecg", serde_json::to_vec(&e)),
                        ("vitals", serde_json::to_vec(&v)),
                    ] {
                        let Ok(body) = body else { continue };
                        let topic = format!("{prefix}/{}/{kind}", car.vin);
                        out.push((topic.clone(), msg::seal(&car.key, &topic, &body)));
                    }
                    // The driver answers a prompt.
                    let mut cancel = None;
                    if let Ok(mut m) = ctl_drive.lock() {
                        if let Some(c) = m.get_mut(&car.vin) {
                            let emergency = car.sim.planted.is_some_and(|p| t >= p.onset_s);
                            for cmd in std::mem::take(&mut c.inbox) {
                                c.cancel =
                                    dismisses(&mut seed_rng, car.sim.responsive(), emergency, t)
                                        .map(|at| (cmd.event, at));
                            }
                            if c.cancel.as_ref().is_some_and(|(_, at)| t >= *at) {
                                cancel = c.cancel.take().map(|(ev, _)| ev);
                            }
                        }
                    }
                    if let Some(event) = cancel {
                        car.seq += 1;
                        let body = serde_json::to_vec(&CancelMsg {
                            seq: car.seq,
                            t_ms: (t * 1000.0).round() as i64,
                            event,
                        })
                        .unwrap_or_default();
                        let topic = format!("{prefix}/{}/cancel", car.vin);
                        out.push((topic.clone(), msg::seal(&car.key, &topic, &body)));
                        cancels.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    for (topic, payload) in out {
                        for _ in 0..if dup { 2 } else { 1 } {
                            if client
                                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                                .await
                                .is_ok()
                            {
                                published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                }
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d.is_multiple_of(groups_n) {
                    progress(d / groups_n);
                }
                next += period;
                tokio::time::sleep_until(next).await;
            }
        }));
    }
    // Wait for the driving loops, then let the event loops drain.
    for h in drivers {
        h.await.map_err(|e| e.to_string())?;
    }
    // Give the service time to answer the last messages, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    for h in loops {
        let _ = h.await;
    }
    report.published = published.load(std::sync::atomic::Ordering::Relaxed);
    report.cancels = cancels.load(std::sync::atomic::Ordering::Relaxed);
    report.rejected_commands = bad_cmds.load(std::sync::atomic::Ordering::Relaxed);
    let mut m = ctl.lock().map_err(|e| e.to_string())?;
    for (vin, c) in m.drain() {
        report.commands.insert(vin, c.history);
    }
    Ok(report)
}
