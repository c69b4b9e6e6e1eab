//! The in-car emergency service end to end on real servers: simulated cars publishing to mosquitto
//! (the one on 127.0.0.1:1883, or one this test starts), the vehicle service, and the 119 centre
//! over HTTPS on loopback.

use std::path::Path;
use std::process::{Child, Command as Proc};
use std::time::{Duration, Instant};

use medfed_vehicles::center::{CenterDir, Record};
use medfed_vehicles::dispatch::Endpoint;
use medfed_vehicles::fleet::{self, FleetConfig};
use medfed_vehicles::msg;
use medfed_vehicles::service::{self, ServiceConfig};
use medfed_vitals::driver::EventKind;
use rumqttc::{AsyncClient, MqttOptions, QoS};

const FLEET_KEY: &[u8] = b"test fleet key";

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{n}", std::process::id())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The machine's mosquitto on 1883 (scripts/test-all.sh starts it where it is not running).
fn system_broker() -> u16 {
    assert!(
        port_open(1883),
        "no MQTT broker on 127.0.0.1:1883: run scripts/test-all.sh, which installs and starts mosquitto"
    );
    1883
}

/// A private mosquitto, stopped (SIGTERM, so that it saves its sessions) when dropped, also when
/// a test fails.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = Proc::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// A private mosquitto on `port` that keeps its sessions on disk across restarts.
fn mosquitto(dir: &Path, port: u16) -> Mosquitto {
    // Run as root, mosquitto drops to its own user: it must be able to write its sessions here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n",
            dir.display()
        ),
    )
    .unwrap();
    let exe = ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|p| Proc::new(p).arg("-h").output().is_ok())
        .expect("mosquitto is installed by scripts/test-all.sh");
    let child = Mosquitto(Proc::new(exe).arg("-c").arg(&conf).spawn().unwrap());
    for _ in 0..100 {
        if port_open(port) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not start on {port}");
}

fn stop(m: Mosquitto) {
    drop(m);
}

async fn start_center(dir: &Path, port: u16) -> medfed_vehicles::center::Running {
    medfed_vehicles::center::spawn(
        dir,
        &format!("127.0.0.1:{port}"),
        Box::new(|_r: &Record| {}),
    )
    .await
    .unwrap()
}

/// The VINs the centre took calls for, and the VINs with a planted emergency, both sorted.
fn called_and_planted(
    records: &[Record],
    report: &fleet::FleetReport,
) -> (Vec<String>, Vec<String>) {
    let mut called: Vec<String> = records.iter().map(|r| r.call.msd.vin.clone()).collect();
    called.sort();
    let mut planted: Vec<String> = report.planted.iter().map(|(v, _)| v.clone()).collect();
    planted.sort();
    (called, planted)
}

fn endpoint(dir: &Path, port: u16) -> Endpoint {
    let d = CenterDir(dir.to_path_buf());
    d.ensure().unwrap();
    let pem = std::fs::read(d.cert()).unwrap();
    Endpoint {
        url: format!("https://127.0.0.1:{port}"),
        token: d.token_value().unwrap(),
        client: medfed_tls::client(&pem, Duration::from_secs(5)).unwrap(),
    }
}

fn service_config(
    port: u16,
    prefix: &str,
    state: &Path,
    ep: Endpoint,
    cars: usize,
    seed: u64,
) -> ServiceConfig {
    ServiceConfig {
        broker_host: "127.0.0.1".into(),
        broker_port: port,
        client_id: format!("svc-{prefix}"),
        prefix: prefix.to_string(),
        fleet_key: FLEET_KEY.to_vec(),
        state_dir: state.to_path_buf(),
        endpoint: ep,
        profiles: fleet::profiles(seed, cars),
        escalation: Default::default(),
        retention_days: 30.0,
    }
}

fn fleet_config(
    port: u16,
    prefix: &str,
    cars: usize,
    seed: u64,
    plant: Vec<(EventKind, usize)>,
) -> FleetConfig {
    FleetConfig {
        broker_host: "127.0.0.1".into(),
        broker_port: port,
        prefix: prefix.to_string(),
        fleet_key: FLEET_KEY.to_vec(),
        cars,
        seconds: 480,
        speed: 25.0,
        plant,
        onset_s: (330.0, 350.0),
        seed,
        start_ms: 1_790_000_000_000,
        duplicates: false,
        connections: 2,
    }
}

async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_emergencies_reach_the_119_centre_once_and_hostile_messages_are_dropped() {
    let port = system_broker();
    let prefix = format!("{}/v1/cars", unique("e2e"));
    let tmp = tempfile::tempdir().unwrap();
    let center_dir = tmp.path().join("center");
    let ep = endpoint(&center_dir, 0);
    let center_port = medfed_vehicles::broker::free_port().unwrap();
    let center = start_center(&center_dir, center_port).await;
    let ep = Endpoint {
        url: format!("https://127.0.0.1:{center_port}"),
        ..ep
    };
    let seed = 8;
    let cars = 8;
    let svc = service::start(service_config(
        port,
        &prefix,
        &tmp.path().join("svc"),
        ep.clone(),
        cars,
        seed,
    ))
    .unwrap();
    assert!(
        wait_for(
            || svc
                .stats
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
            Duration::from_secs(10)
        )
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Hostile and broken messages first: each is counted by its reason, none stops the service.
    let mut o = MqttOptions::new(unique("mallory"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (mallory, mut el) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let vin = &fleet::vins(seed, cars)[0];
    let topic = format!("{prefix}/{vin}/vitals");
    let other_key = msg::vehicle_key(FLEET_KEY, "KMHXX00XXXX999999");
    let own_key = msg::vehicle_key(FLEET_KEY, vin);
    let hostile: Vec<(String, Vec<u8>)> = vec![
        (topic.clone(), b"{\"seq\":1}".to_vec()),
        (topic.clone(), msg::seal(&other_key, &topic, b"{}")),
        (topic.clone(), vec![0xff; 300]),
        (format!("{prefix}/not-a-vin/vitals"), b"x".to_vec()),
        (topic.clone(), vec![b'7'; 70_000]),
        (topic.clone(), msg::seal(&own_key, &topic, b"{\"seq\":9,\"t_ms\":5}")),
        (
            topic.clone(),
            msg::seal(&own_key, &topic, br#"{"seq":9,"t_ms":5,"hr":70,"spo2":97,"worn":true,"steering_dps":1,"pedal":3,"brake":false,"speed_kmh":50,"lat":37.5,"lon":127,"heading_deg":10,"passengers":1}"#),
        ),
    ];
    for (t, p) in &hostile {
        mallory
            .publish(t.clone(), QoS::AtLeastOnce, false, p.clone())
            .await
            .unwrap();
    }
    let s = svc.stats.clone();
    assert!(
        wait_for(|| s.rejected_total() >= 7, Duration::from_secs(10)).await,
        "{:?}",
        s.rejected
    );
    for (reason, n) in [
        ("unsigned", 2),
        ("bad_signature", 1),
        ("topic", 1),
        ("too_large", 1),
        ("json", 1),
        ("field", 1),
    ] {
        assert_eq!(s.rejected_by(reason), n, "{reason}: {:?}", s.rejected);
    }

    // The fleet: 8 cars for 8 simulated minutes, 4 with an emergency.
    let plant = vec![
        (EventKind::Asystole, 1),
        (EventKind::VentricularFibrillation, 1),
        (EventKind::Bradycardia, 1),
        (EventKind::Unresponsive, 1),
    ];
    let report = fleet::simulate(fleet_config(port, &prefix, cars, seed, plant), |_| {})
        .await
        .unwrap();
    assert_eq!(report.planted.len(), 4);
    let c = center.center.clone();
    assert!(
        wait_for(|| c.records().len() >= 4, Duration::from_secs(30)).await,
        "{:?}",
        c.records().len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = center.center.records();
    // Exactly one call for each planted emergency, none for the other cars.
    let (called, planted) = called_and_planted(&records, &report);
    assert_eq!(called, planted, "{records:#?}");
    for r in &records {
        let (_, p) = report
            .planted
            .iter()
            .find(|(v, _)| *v == r.call.msd.vin)
            .unwrap();
        let onset_ms = (p.onset_s * 1000.0) as i64;
        let delay = (r.call.decided_ms - onset_ms) as f64 / 1000.0;
        eprintln!(
            "{:?} called as {} ({:?}) {delay:.0} s after onset",
            p.kind, r.call.kind, r.call.kinds
        );
        assert!((15.0..150.0).contains(&delay), "{delay}");
        let m = &r.call.msd;
        assert!(m.automatic_activation && !m.test_call && m.vehicle_type == "M1");
        assert!((37.3..37.8).contains(&(m.latitude_mas as f64 / 3.6e6)));
        assert!(m.number_of_passengers.is_some_and(|p| (1..=4).contains(&p)));
        assert_eq!(m.recent_locations.len(), 2);
        assert_eq!(r.call.strip.uv.len(), 2500, "10 s of ECG at 250 Hz");
        assert!(!r.call.vitals.hr_60s.is_empty());
        // The car was told: prompt, call, hazard lights, safe stop.
        let actions: Vec<&str> = report.commands[&m.vin]
            .iter()
            .map(|c| c.action.as_str())
            .collect();
        for a in ["confirm", "call_placed", "hazard_lights_on", "safe_stop"] {
            assert!(actions.contains(&a), "{}: {actions:?}", m.vin);
        }
    }
    assert_eq!(report.rejected_commands, 0);
    let s = &svc.stats;
    assert_eq!(s.rejected_by("duplicate"), 0);
    assert_eq!(
        s.dispatch
            .acknowledged
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // The events log has the four calls and their acknowledgements, and no vitals.
    let events = service::read_events(&tmp.path().join("svc")).unwrap();
    assert_eq!(events.iter().filter(|e| e.outcome == "called").count(), 4);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome == "acknowledged")
            .count(),
        4
    );
    // The centre: a retry of a recorded call is the same call; a wrong token is refused.
    let call = records[0].call.clone();
    let resp = ep
        .client
        .post(format!("{}/v1/calls", ep.url))
        .bearer_auth(&ep.token)
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ack: medfed_vehicles::center::Ack = resp.json().await.unwrap();
    assert!(ack.duplicate && ack.call_number == records[0].call_number);
    let resp = ep
        .client
        .post(format!("{}/v1/calls", ep.url))
        .bearer_auth("nope")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(center.center.records().len(), 4);
    svc.stop().await;
    center.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_centre_down_a_minute_and_duplicates_lose_nothing_and_call_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mq_dir = tmp.path().join("mosquitto");
    std::fs::create_dir_all(&mq_dir).unwrap();
    let port = medfed_vehicles::broker::free_port().unwrap();
    let broker = mosquitto(&mq_dir, port);
    let prefix = format!("{}/v1/cars", unique("faults"));
    let center_dir = tmp.path().join("center");
    let center_port = medfed_vehicles::broker::free_port().unwrap();
    let ep = endpoint(&center_dir, center_port);
    let state = tmp.path().join("svc");
    let (seed, cars) = (21, 6);
    let started = Instant::now();
    // The 119 centre is down for the first minute.
    let svc = service::start(service_config(
        port,
        &prefix,
        &state,
        ep.clone(),
        cars,
        seed,
    ))
    .unwrap();
    let s = svc.stats.clone();
    assert!(
        wait_for(
            || s.connected.load(std::sync::atomic::Ordering::Relaxed) > 0,
            Duration::from_secs(10)
        )
        .await
    );
    let plant = vec![
        (EventKind::Asystole, 1),
        (EventKind::VentricularFibrillation, 1),
        (EventKind::Unresponsive, 1),
    ];
    let mut fc = fleet_config(port, &prefix, cars, seed, plant);
    fc.duplicates = true;
    fc.speed = 20.0;
    let fleet = tokio::spawn(fleet::simulate(fc, |_| {}));
    // Mid-event (onsets at 330–350 simulated s, 16.5–17.5 s of wall time): the broker restarts.
    tokio::time::sleep(Duration::from_millis(17_000)).await;
    stop(broker);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = mosquitto(&mq_dir, port);
    let report = fleet.await.unwrap().unwrap();
    // The calls were decided while the centre was down: they wait in the outbox. The service
    // itself restarts too, and the new one sends what the old one stored.
    let s = svc.stats.clone();
    assert!(
        wait_for(
            || s.calls.load(std::sync::atomic::Ordering::Relaxed) >= 3,
            Duration::from_secs(20)
        )
        .await,
        "calls {:?}",
        s.calls
    );
    assert!(
        s.dispatch
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let duplicates = s.rejected_by("duplicate");
    svc.stop().await;
    let pending = medfed_vehicles::dispatch::Outbox::open(&state.join("outbox"))
        .unwrap()
        .waiting()
        .unwrap();
    assert_eq!(pending.len(), 3, "stored, not sent");
    let wait = Duration::from_secs(60).saturating_sub(started.elapsed());
    eprintln!("centre down for another {wait:?}");
    tokio::time::sleep(wait).await;
    let center = start_center(&center_dir, center_port).await;
    let svc2 = service::start(service_config(
        port,
        &prefix,
        &state,
        ep.clone(),
        cars,
        seed,
    ))
    .unwrap();
    let c = center.center.clone();
    assert!(wait_for(|| c.records().len() >= 3, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = center.center.records();
    let (called, planted) = called_and_planted(&records, &report);
    assert_eq!(called, planted, "exactly one call per event, none lost");
    eprintln!(
        "{} messages published (each twice), {duplicates} dropped as duplicates; centre up after {:?}",
        report.published,
        started.elapsed()
    );
    assert!(
        duplicates as f64 >= 0.4 * report.published as f64,
        "{duplicates} of {}",
        report.published
    );
    svc2.stop().await;
    center.stop().await;
    stop(broker);
}
