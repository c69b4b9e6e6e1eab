//! The hub folder and `medfed hub init`.
//!
//! ```text
//! D/hub.toml          name, listen address, database, TLS files, task lease
//! D/hub.key           the hub's Ed25519 signing key for tasks (mode 0600)
//! D/tls/cert.pem      TLS certificate (self-signed by `init`; replace with a real one and keep the name,
//! D/tls/key.pem         or point hub.toml at other files)
//! D/researcher.token  bearer token of the default researcher, `researcher` (mode 0600)
//! D/researchers/N.token  bearer token of researcher N (`medfed hub add-researcher`, mode 0600)
//! D/hub.sqlite        state and national statistics (when no PostgreSQL URL is configured)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medfed_protocol::SecretKey;
use serde::{Deserialize, Serialize};

use crate::db::{Db, Postgres, Sqlite};
use crate::store::Store;
use crate::{Hub, HubError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub name: String,
    /// Address to listen on.
    pub listen: String,
    /// `postgres://…` to keep state in PostgreSQL; absent for SQLite in the hub folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// PostgreSQL schema for the hub's tables.
    #[serde(default = "default_schema")]
    pub db_schema: String,
    /// TLS certificate chain and key (PEM), relative to the hub folder.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Seconds a delivered task stays with its node before it is delivered again.
    #[serde(default = "default_lease")]
    pub lease_s: i64,
}

fn default_schema() -> String {
    "medfed_hub".into()
}
fn default_lease() -> i64 {
    60
}

/// The researcher whose token is `researcher.token`.
pub const DEFAULT_RESEARCHER: &str = "researcher";

#[derive(Clone, Debug)]
pub struct HubDir(pub PathBuf);

fn io(path: &Path, e: std::io::Error) -> HubError {
    HubError::Internal(format!("{}: {e}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

impl HubDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("hub.toml")
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("hub.key")
    }
    pub fn token(&self) -> PathBuf {
        self.0.join("researcher.token")
    }
    pub fn sqlite(&self) -> PathBuf {
        self.0.join("hub.sqlite")
    }
    pub fn cert(&self, cfg: &HubConfig) -> PathBuf {
        self.0.join(&cfg.tls_cert)
    }

    /// Make a new hub folder: signing key, self-signed certificate for `hosts` (plus localhost and the
    /// loopback addresses), researcher token and configuration.
    pub fn init(
        dir: &Path,
        name: &str,
        listen: &str,
        db: Option<&str>,
        db_schema: &str,
        hosts: &[String],
    ) -> Result<HubDir, HubError> {
        let d = HubDir(dir.to_path_buf());
        if d.config().exists() {
            return Err(HubError::Conflict(format!(
                "{} already holds a hub",
                dir.display()
            )));
        }
        // A database that cannot be reached fails init before any file is written.
        if let Some(url) = db {
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Postgres::connect(url, db_schema)
                    .map_err(|e| HubError::BadRequest(e.to_string()))?;
            } else if !url.starts_with("sqlite:") {
                return Err(HubError::BadRequest(format!(
                    "database URL {url:?}: use postgres://… or sqlite:PATH"
                )));
            }
        }
        std::fs::create_dir_all(dir.join("tls")).map_err(|e| io(dir, e))?;
        let key = SecretKey::generate();
        key.save(&d.key())
            .map_err(|e| HubError::Internal(e.to_string()))?;
        let (cert, key) = medfed_tls::self_signed(hosts).map_err(HubError::Internal)?;
        std::fs::write(dir.join("tls/cert.pem"), cert).map_err(|e| io(dir, e))?;
        write_private(&dir.join("tls/key.pem"), key.as_bytes())?;
        write_private(&d.token(), medfed_protocol::random_id().as_bytes())?;
        let cfg = HubConfig {
            name: name.to_string(),
            listen: listen.to_string(),
            db: db.map(str::to_string),
            db_schema: db_schema.to_string(),
            tls_cert: "tls/cert.pem".into(),
            tls_key: "tls/key.pem".into(),
            lease_s: default_lease(),
        };
        let text = toml::to_string(&cfg).map_err(|e| HubError::Internal(e.to_string()))?;
        std::fs::write(d.config(), text).map_err(|e| io(dir, e))?;
        // Create the schema now, so that a bad database URL fails at init, not at first use.
        d.open(None)?;
        Ok(d)
    }

    pub fn load_config(&self) -> Result<HubConfig, HubError> {
        let p = self.config();
        let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
        toml::from_str(&text).map_err(|e| HubError::BadRequest(format!("{}: {e}", p.display())))
    }

    pub fn token_value(&self) -> Result<String, HubError> {
        let p = self.token();
        Ok(std::fs::read_to_string(&p)
            .map_err(|e| io(&p, e))?
            .trim()
            .to_string())
    }

    /// Every researcher's (name, token): the default one and `researchers/*.token`.
    pub fn researchers(&self) -> Result<Vec<(String, String)>, HubError> {
        let mut out = vec![(DEFAULT_RESEARCHER.to_string(), self.token_value()?)];
        let dir = self.0.join("researchers");
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "token"))
                .collect();
            files.sort();
            for p in files {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let token = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
                out.push((name, token.trim().to_string()));
            }
        }
        Ok(out)
    }

    /// Give researcher `name` a token of their own, written to `researchers/NAME.token` (0600).
    /// Their studies carry their name to the nodes, which keep per-requester budgets by it.
    pub fn add_researcher(&self, name: &str) -> Result<PathBuf, HubError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(HubError::BadRequest(format!(
                "researcher name {name:?}: use a lower-case letter, then letters, digits, _ or - (at most 64)"
            )));
        }
        if name == DEFAULT_RESEARCHER || self.researchers()?.iter().any(|(n, _)| n == name) {
            return Err(HubError::Conflict(format!(
                "researcher {name} already has a token"
            )));
        }
        let dir = self.0.join("researchers");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let p = dir.join(format!("{name}.token"));
        write_private(&p, medfed_protocol::random_id().as_bytes())?;
        Ok(p)
    }

    /// Open the hub's state; `db` overrides the configured database.
    pub fn open(&self, db: Option<&str>) -> Result<Arc<Hub>, HubError> {
        let cfg = self.load_config()?;
        let key = SecretKey::load(&self.key()).map_err(|e| HubError::Internal(e.to_string()))?;
        let url = db.map(str::to_string).or(cfg.db.clone());
        let backend: Box<dyn Db> = match url.as_deref() {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => Box::new(
                Postgres::connect(u, &cfg.db_schema)
                    .map_err(|e| HubError::Internal(e.to_string()))?,
            ),
            Some(u) if u.starts_with("sqlite:") => Box::new(
                Sqlite::open(u.trim_start_matches("sqlite:"))
                    .map_err(|e| HubError::Internal(e.to_string()))?,
            ),
            Some(u) => {
                return Err(HubError::BadRequest(format!(
                    "database URL {u:?}: use postgres://… or sqlite:PATH"
                )))
            }
            None => Box::new(
                Sqlite::open(&self.sqlite().to_string_lossy())
                    .map_err(|e| HubError::Internal(e.to_string()))?,
            ),
        };
        let store = Store::new(backend)?;
        Ok(Hub::new(&cfg.name, key, store, cfg.lease_s))
    }

    /// rustls server configuration from the configured certificate and key.
    pub fn tls(&self) -> Result<Arc<rustls::ServerConfig>, HubError> {
        let cfg = self.load_config()?;
        medfed_tls::server_config(&self.0.join(&cfg.tls_cert), &self.0.join(&cfg.tls_key))
            .map_err(HubError::BadRequest)
    }
}
