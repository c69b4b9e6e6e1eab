//! The node folder: configuration, keys, policy, state and the audit log.
//!
//! ```text
//! D/node.toml      name, hub URL and public key, site store path, poll settings
//! D/node.key       the node's Ed25519 signing key (mode 0600)
//! D/hub-ca.pem     the certificate the node trusts for the hub's TLS (a self-signed hub's own)
//! D/policy.toml    disclosure policy: minimum cell count, allowed / approved / denied analyses
//! D/audit.log      hash-chained log of everything that left the hospital
//! D/state/         nonces seen, tasks in progress, results posted
//! D/approvals/     approvals written by `medfed node approve`
//! ```

use std::path::{Path, PathBuf};

use medfed_privacy::Policy;
use medfed_protocol::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::NodeError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name as registered at the hub.
    pub name: String,
    /// Base URL of the hub, e.g. `https://hub.example.kr:8443`.
    pub hub_url: String,
    /// The hub's Ed25519 public key (hex); tasks not signed by it are refused.
    pub hub_public_key: String,
    /// The site store (a folder, or `postgres://…`) this node answers from. A vehicle service's node
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<PathBuf>,
    /// A vehicle service's events log (its state folder or `events.jsonl`), from which this node
    /// answers `vehicle_events`. A hospital's node has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_events: Option<PathBuf>,
    /// Longest long-poll wait, seconds.
    #[serde(default = "default_wait")]
    pub poll_wait_s: u64,
}

impl NodeConfig {
    /// A node answers from at least one source.
    pub fn check(&self) -> Result<(), NodeError> {
        if self.site.is_none() && self.vehicle_events.is_none() {
            return Err(NodeError::Config(
                "a node needs a site store (site) or a vehicle events log (vehicle_events) to answer from".into(),
            ));
        }
        Ok(())
    }
}

fn default_wait() -> u64 {
    20
}

/// Paths inside a node folder.
#[derive(Clone, Debug)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("node.toml")
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("node.key")
    }
    pub fn hub_ca(&self) -> PathBuf {
        self.0.join("hub-ca.pem")
    }
    pub fn policy(&self) -> PathBuf {
        self.0.join("policy.toml")
    }
    pub fn audit(&self) -> PathBuf {
        self.0.join("audit.log")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn approvals(&self) -> PathBuf {
        self.0.join("approvals")
    }

    /// Create a node folder: key, configuration, default policy. Refuses to overwrite an existing node.
    pub fn init(
        dir: &Path,
        config: &NodeConfig,
        hub_ca_pem: Option<&[u8]>,
        policy: Option<&str>,
    ) -> Result<(NodeDir, PublicKey), NodeError> {
        let d = NodeDir(dir.to_path_buf());
        if d.config().exists() {
            return Err(NodeError::Config(format!(
                "{} already holds a node; use another folder",
                dir.display()
            )));
        }
        PublicKey::from_hex(&config.hub_public_key)
            .map_err(|e| NodeError::Config(format!("hub public key: {e}")))?;
        config.check()?;
        std::fs::create_dir_all(d.state()).map_err(|e| io(&d.state(), e))?;
        std::fs::create_dir_all(d.approvals()).map_err(|e| io(&d.approvals(), e))?;
        let key = SecretKey::generate();
        key.save(&d.key())
            .map_err(|e| NodeError::Config(e.to_string()))?;
        if let Some(pem) = hub_ca_pem {
            write_atomic(&d.hub_ca(), pem)?;
        }
        let policy_text = policy
            .map(str::to_string)
            .unwrap_or_else(Policy::default_file);
        Policy::parse(&policy_text).map_err(|e| NodeError::Config(format!("policy: {e}")))?;
        write_atomic(&d.policy(), policy_text.as_bytes())?;
        let text = toml::to_string(config).map_err(|e| NodeError::Config(e.to_string()))?;
        write_atomic(&d.config(), text.as_bytes())?;
        Ok((d, key.public()))
    }

    pub fn load_config(&self) -> Result<NodeConfig, NodeError> {
        let p = self.config();
        let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
        let c: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", p.display())))?;
        c.check()?;
        Ok(c)
    }

    pub fn load_key(&self) -> Result<SecretKey, NodeError> {
        SecretKey::load(&self.key()).map_err(|e| NodeError::Config(e.to_string()))
    }

    /// Tasks accepted and not yet answered (in progress or waiting for approval), as saved.
    pub fn tasks_in_progress(&self) -> Result<Vec<medfed_protocol::Signed>, NodeError> {
        let d = self.state().join("tasks");
        if !d.exists() {
            return Ok(Vec::new());
        }
        crate::state::read_tasks(&d)
    }

    pub fn load_policy(&self) -> Result<Policy, NodeError> {
        Policy::load(&self.policy()).map_err(|e| NodeError::Config(e.to_string()))
    }
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> NodeError {
    NodeError::Io(format!("{}: {e}", path.display()))
}

/// Write through a temporary file and rename, so readers see the old or the new file, never half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}
