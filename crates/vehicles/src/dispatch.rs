//! Store-and-forward of 119 calls, exactly once per event.
//!
//! A call is written to `outbox/pending/{event}.json` (to a temporary file, fsynced, renamed) before
//! anything else happens, so a crash after the decision cannot lose it; an event already pending
//! or sent is not written again. The sender posts each pending call until the centre acknowledges
//! it (2xx), retrying with backoff (1 s doubling to 5 s) while the centre is down or the network is
//! gone, then moves it to `outbox/sent/` with the acknowledgement. The centre records a call once
//! per event id, so a retry after a lost acknowledgement — or after this process restarts and finds
//! the call still pending — is not a second call.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::center::{Ack, Call};

/// The outbox directory.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

fn io(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

/// Event ids become file names: keep them to safe characters.
fn file_name(event: &str) -> String {
    event
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Outbox {
    pub fn open(dir: &Path) -> Result<Outbox, String> {
        for sub in ["pending", "sent"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
        }
        Ok(Outbox {
            dir: dir.to_path_buf(),
        })
    }

    fn pending(&self, event: &str) -> PathBuf {
        self.dir
            .join("pending")
            .join(format!("{}.json", file_name(event)))
    }

    fn sent(&self, event: &str) -> PathBuf {
        self.dir
            .join("sent")
            .join(format!("{}.json", file_name(event)))
    }

    /// Store a call; `false` if the event was already stored (pending or sent).
    pub fn enqueue(&self, call: &Call) -> Result<bool, String> {
        let (p, s) = (self.pending(&call.event_id), self.sent(&call.event_id));
        if p.exists() || s.exists() {
            return Ok(false);
        }
        let tmp = p.with_extension("tmp");
        let bytes = serde_json::to_vec(call).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        use std::io::Write;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))?;
        if let Ok(d) = std::fs::File::open(self.dir.join("pending")) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// Calls waiting to be sent, oldest first.
    pub fn waiting(&self) -> Result<Vec<Call>, String> {
        let dir = self.dir.join("pending");
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        entries
            .iter()
            .map(|p| {
                let b = std::fs::read(p).map_err(|e| io(p, e))?;
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect()
    }

    /// Sent calls, each with its acknowledgement.
    pub fn sent_calls(&self) -> Result<Vec<(Call, Ack)>, String> {
        let dir = self.dir.join("sent");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let b = std::fs::read(&p).map_err(|e| io(&p, e))?;
            let v: (Call, Ack) =
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push(v);
        }
        Ok(out)
    }

    fn mark_sent(&self, call: &Call, ack: &Ack) -> Result<(), String> {
        let s = self.sent(&call.event_id);
        let tmp = s.with_extension("tmp");
        let bytes = serde_json::to_vec(&(call, ack)).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &s).map_err(|e| io(&s, e))?;
        let p = self.pending(&call.event_id);
        std::fs::remove_file(&p).map_err(|e| io(&p, e))
    }

    /// Delete sent calls (their vitals and strips) older than `days`: the retention window.
    pub fn prune(&self, days: f64) -> Result<usize, String> {
        let dir = self.dir.join("sent");
        let limit = std::time::SystemTime::now() - Duration::from_secs_f64(days * 86_400.0);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < limit);
            if old {
                std::fs::remove_file(e.path()).map_err(|er| io(&e.path(), er))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Where and how to call.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub token: String,
    pub client: reqwest::Client,
}

/// Counters of the sender.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    pub acknowledged: AtomicU64,
    pub duplicates: AtomicU64,
}

async fn post(ep: &Endpoint, call: &Call) -> Result<Ack, String> {
    let url = format!("{}/v1/calls", ep.url.trim_end_matches('/'));
    let resp = ep
        .client
        .post(&url)
        .bearer_auth(&ep.token)
        .json(call)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: {status} {body}"));
    }
    resp.json::<Ack>().await.map_err(|e| format!("{url}: {e}"))
}

/// Send pending calls until `stop` is set; `wake` is notified when a call is enqueued. Calls that
/// fail stay pending and are retried with backoff. Returns when stopped.
pub async fn run(
    outbox: Outbox,
    ep: Endpoint,
    stats: Arc<DispatchStats>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    on_ack: impl Fn(&Call, &Ack) + Send + Sync,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return;
        }
        let waiting = match outbox.waiting() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("outbox: {e}");
                Vec::new()
            }
        };
        let mut failed = false;
        for call in &waiting {
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            match post(&ep, call).await {
                Ok(ack) => {
                    if ack.duplicate {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = outbox.mark_sent(call, &ack) {
                        eprintln!("outbox: {e}");
                    }
                    stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    on_ack(call, &ack);
                    backoff = Duration::from_secs(1);
                }
                Err(_) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            w
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified(), if !failed => {}
            r = stop.changed() => if r.is_err() { return },
        }
    }
}
