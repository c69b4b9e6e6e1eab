//! `medfed emergency-center`, `medfed vehicles serve` on the embedded broker (rumqttd) and
//! `medfed vehicles simulate`, as three processes, as an operator would run them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_medfed");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path, cwd: &Path) -> Running {
    let f = std::fs::File::create(log).unwrap();
    Running(
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, log: &Path) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "nothing on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_planted_arrest_is_called_through_the_embedded_broker_by_the_three_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (center_port, mqtt_port) = (free_port(), free_port());
    let center_addr = format!("127.0.0.1:{center_port}");
    let _center = spawn(
        &["emergency-center", "--listen", &center_addr],
        &d.join("center.log"),
        d,
    );
    wait_port(center_port, &d.join("center.log"));
    let (ok, _, err) = {
        let o = Command::new(BIN)
            .current_dir(d)
            .args([
                "vehicles",
                "simulate",
                "--cars",
                "2",
                "--minutes",
                "1",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--profiles-out",
                "profiles.json",
            ])
            .output()
            .unwrap();
        (
            o.status.success(),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // No broker there: a clear error, after writing the profiles asked for.
    assert!(
        !ok && err.contains("cannot reach the MQTT broker at 127.0.0.1:1"),
        "{err}"
    );
    assert!(d.join("profiles.json").exists());
    let port = mqtt_port.to_string();
    let url = format!("https://{center_addr}");
    let _svc = spawn(
        &[
            "vehicles",
            "serve",
            "--embedded-port",
            &port,
            "--center",
            &url,
            "--profiles",
            "profiles.json",
        ],
        &d.join("svc.log"),
        d,
    );
    wait_port(mqtt_port, &d.join("svc.log"));
    let broker = format!("mqtt://127.0.0.1:{mqtt_port}");
    let out = Command::new(BIN)
        .current_dir(d)
        .args([
            "vehicles",
            "simulate",
            "--broker",
            &broker,
            "--cars",
            "2",
            "--minutes",
            "8",
            "--speed",
            "40",
            "--plant",
            "asystole:1",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The centre got exactly one call, for the car with the arrest, and printed it.
    let calls = d.join("emergency-center/calls.jsonl");
    let t = Instant::now();
    while std::fs::read_to_string(&calls)
        .map(|c| c.lines().count())
        .unwrap_or(0)
        < 1
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no call; service log:\n{}",
            std::fs::read_to_string(d.join("svc.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let vin = rec["call"]["msd"]["vin"].as_str().unwrap().to_string();
    assert!(
        stdout.contains(&format!("{vin}: asystole planted")),
        "{stdout}"
    );
    assert!(stdout.contains("hazard_lights_on"), "{stdout}");
    let center_log = std::fs::read_to_string(d.join("center.log")).unwrap();
    assert!(
        center_log.contains(&format!("119 call #1 {vin}")),
        "{center_log}"
    );
    // The released counts: one event, under k, withheld.
    let o = Command::new(BIN)
        .current_dir(d)
        .args(["vehicles", "stats", "--json"])
        .output()
        .unwrap();
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cells = t["cells"].as_array().unwrap();
    assert!(
        !cells.is_empty() && cells.iter().all(|c| c.get("values").is_none()),
        "{t}"
    );
}
