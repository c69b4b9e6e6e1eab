//! A whole network on this machine, as real processes: one `medfed hub serve` and one `medfed node run`
//! per site, on loopback. Used by `medfed demo`; everything it starts is stopped when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct LocalNetwork {
    pub hub_dir: PathBuf,
    pub url: String,
    pub nodes: Vec<(String, PathBuf)>,
    hub: Option<Child>,
    children: Vec<Child>,
}

fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the medfed binary")?;
    let f =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("cannot start medfed {}", args.join(" ")))
}

fn wait_for_file(p: &Path, child: &mut Child, log: &Path) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            return Ok(s.trim().to_string());
        }
        if let Some(st) = child.try_wait()? {
            bail!("the hub exited ({st}); see {}", log.display());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the hub did not start within 30 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl LocalNetwork {
    /// Create a fresh hub in `dir/hub`, start it on `listen`, create, register and start one node per
    /// site store.
    pub fn start(dir: &Path, sites: &[PathBuf], listen: &str) -> anyhow::Result<LocalNetwork> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let hub_dir = dir.join("hub");
        let hd = medfed_hub::HubDir::init(&hub_dir, "national", listen, None, "medfed_hub", &[])?;
        // A second researcher, so that the demo can show a prober held to the beacon budget while
        // the default researcher's look-ups go on.
        hd.add_researcher("prober")?;
        let hub_s = hub_dir.to_string_lossy().to_string();
        let hub_log = logs.join("hub.log");
        let mut hub = spawn(
            &["hub", "serve", "--dir", &hub_s, "--listen", listen],
            &hub_log,
        )?;
        let addr = match wait_for_file(&hub_dir.join("hub.addr"), &mut hub, &hub_log) {
            Ok(a) => a,
            Err(e) => {
                let _ = hub.kill();
                return Err(e);
            }
        };
        let url = format!("https://{addr}");
        let mut net = LocalNetwork {
            hub_dir: hub_dir.clone(),
            url: url.clone(),
            nodes: Vec::new(),
            hub: Some(hub),
            children: Vec::new(),
        };
        let registry = medfed_hub::HubDir(hub_dir.clone()).open(None)?;
        for site in sites {
            let node_dir = dir.join("nodes").join(site.file_name().unwrap_or_default());
            std::fs::create_dir_all(node_dir.parent().unwrap_or(dir))?;
            // The node fetches the hub's key over TLS pinned to the hub's certificate, as in the field.
            let (name, pk) = super::node::init_node(
                &node_dir,
                &url,
                super::node::NodeSource::Site(site),
                None,
                &hub_dir.join("tls/cert.pem"),
                None,
                None,
            )?;
            registry.add_node(&name, &pk, false)?;
            net.nodes.push((name, node_dir));
        }
        drop(registry);
        for (name, node_dir) in &net.nodes {
            let d = node_dir.to_string_lossy().to_string();
            let child = spawn(
                &["node", "run", "--dir", &d],
                &logs.join(format!("{name}.log")),
            )?;
            net.children.push(child);
        }
        Ok(net)
    }

    /// Create, register (as serving `vehicle_events`) and start a vehicle service's node that
    /// answers from the events log in `log`, under `policy` (a policy file's text).
    pub fn add_vehicle_node(&mut self, name: &str, log: &Path, policy: &str) -> anyhow::Result<()> {
        let dir = self.hub_dir.parent().unwrap_or(&self.hub_dir).to_path_buf();
        let node_dir = dir.join("nodes").join(name);
        let (name, pk) = super::node::init_node(
            &node_dir,
            &self.url,
            super::node::NodeSource::VehicleEvents(log),
            Some(name),
            &self.hub_dir.join("tls/cert.pem"),
            None,
            Some(policy),
        )?;
        medfed_hub::HubDir(self.hub_dir.clone())
            .open(None)?
            .add_node_serving(&name, &pk, false, "vehicle_events")?;
        let d = node_dir.to_string_lossy().to_string();
        let child = spawn(
            &["node", "run", "--dir", &d],
            &dir.join("logs").join(format!("{name}.log")),
        )?;
        self.children.push(child);
        self.nodes.push((name, node_dir));
        Ok(())
    }

    /// Stop the nodes; keep the hub serving.
    pub fn stop_nodes(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Wait for the hub process to exit (for `--serve`).
    pub fn wait_hub(&mut self) -> anyhow::Result<()> {
        if let Some(h) = &mut self.hub {
            h.wait()?;
        }
        Ok(())
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        self.stop_nodes();
        if let Some(mut h) = self.hub.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}
