//! The node's durable state, in `D/state/`:
//!
//! - `nonces`: one line `nonce task_id` per task ever accepted (fsynced before the task runs);
//! - `tasks/<task_id>.json`: the signed task while it is in progress or awaiting approval;
//! - `posted`: one line per task whose result the hub acknowledged.
//!
//! Together with the audit log this is enough to resume after a kill at any point: a task file with no
//! audit entry is run again; an audit entry with no `posted` line is posted again.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use medfed_protocol::Signed;

use crate::config::{io, write_atomic};
use crate::NodeError;

pub(crate) struct State {
    dir: PathBuf,
    /// nonce → task id
    pub nonces: HashMap<String, String>,
    pub posted: HashSet<String>,
}

fn read_lines(path: &Path) -> Result<Vec<String>, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path, e)),
    }
}

fn append_line(path: &Path, line: &str) -> Result<(), NodeError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| io(path, e))?;
    f.sync_data().map_err(|e| io(path, e))
}

impl State {
    pub fn open(dir: &Path) -> Result<State, NodeError> {
        std::fs::create_dir_all(dir.join("tasks")).map_err(|e| io(dir, e))?;
        let mut nonces = HashMap::new();
        for l in read_lines(&dir.join("nonces"))? {
            // A line torn by a crash has no space; ignore it (its task was never accepted).
            if let Some((n, t)) = l.split_once(' ') {
                nonces.insert(n.to_string(), t.to_string());
            }
        }
        let posted = read_lines(&dir.join("posted"))?.into_iter().collect();
        Ok(State {
            dir: dir.to_path_buf(),
            nonces,
            posted,
        })
    }

    pub fn remember_nonce(&mut self, nonce: &str, task_id: &str) -> Result<(), NodeError> {
        append_line(&self.dir.join("nonces"), &format!("{nonce} {task_id}"))?;
        self.nonces.insert(nonce.to_string(), task_id.to_string());
        Ok(())
    }

    pub fn mark_posted(&mut self, task_id: &str) -> Result<(), NodeError> {
        append_line(&self.dir.join("posted"), task_id)?;
        self.posted.insert(task_id.to_string());
        Ok(())
    }

    fn task_path(&self, task_id: &str) -> PathBuf {
        self.dir.join("tasks").join(format!("{task_id}.json"))
    }

    pub fn save_task(&self, task_id: &str, signed: &Signed) -> Result<(), NodeError> {
        let text = serde_json::to_vec(signed).expect("envelopes serialise");
        write_atomic(&self.task_path(task_id), &text)
    }

    pub fn drop_task(&self, task_id: &str) -> Result<(), NodeError> {
        match std::fs::remove_file(self.task_path(task_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.task_path(task_id), e)),
        }
    }

    /// Tasks accepted but not finished, oldest file name first.
    pub fn pending_tasks(&self) -> Result<Vec<Signed>, NodeError> {
        read_tasks(&self.dir.join("tasks"))
    }
}

/// The signed tasks saved in `d` (`<task_id>.json`), in file-name order; a file that is not a saved
/// task is an error, never skipped.
pub(crate) fn read_tasks(d: &Path) -> Result<Vec<Signed>, NodeError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(d)
        .map_err(|e| io(d, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let text = std::fs::read(&p).map_err(|e| io(&p, e))?;
        match serde_json::from_slice(&text) {
            Ok(s) => out.push(s),
            Err(e) => {
                return Err(NodeError::Io(format!(
                    "{}: not a saved task ({e}); move it away to continue",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

/// The person sets behind counts this node released (`state/sets/`), for the differencing check.
/// Row-level, and therefore local: nothing here is ever sent.
pub(crate) struct SetHistory {
    dir: PathBuf,
    /// (size, task id)
    index: Vec<(u64, String)>,
}

impl SetHistory {
    pub fn open(state: &Path) -> Result<SetHistory, NodeError> {
        let dir = state.join("sets");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut index = Vec::new();
        for l in read_lines(&dir.join("index"))? {
            if let Some((n, t)) = l.split_once(' ') {
                if let Ok(n) = n.parse() {
                    index.push((n, t.to_string()));
                }
            }
        }
        Ok(SetHistory { dir, index })
    }

    /// Keep a released set (written before the release is audited; recording twice is harmless).
    pub fn record(&mut self, task_id: &str, ids: &[i64]) -> Result<(), NodeError> {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        write_atomic(&self.dir.join(format!("{task_id}.ids")), &bytes)?;
        append_line(&self.dir.join("index"), &format!("{} {task_id}", ids.len()))?;
        self.index.push((ids.len() as u64, task_id.to_string()));
        Ok(())
    }
}

impl medfed_privacy::History for SetHistory {
    fn similar(&self, size: u64, within: u64) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        for (n, task) in &self.index {
            if n.abs_diff(size) < within {
                // An unreadable set file is treated as absent only after it was checked to exist;
                // a missing file means the release was never completed.
                if let Ok(b) = std::fs::read(self.dir.join(format!("{task}.ids"))) {
                    out.push(
                        b.chunks_exact(8)
                            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                            .collect(),
                    );
                }
            }
        }
        out
    }
}

/// The differential-privacy ledger, `state/dp_ledger`: one line `study_id task_id epsilon` per
/// release that spent budget, fsynced before the release is audited (and so before it can be sent).
/// A line torn by a crash belongs to a release that was never audited; its task runs again and
/// spends again, which errs on the safe side.
pub(crate) struct DpLedger {
    path: PathBuf,
    by_study: HashMap<String, f64>,
    total: f64,
}

impl DpLedger {
    pub fn open(state: &Path) -> Result<DpLedger, NodeError> {
        let path = state.join("dp_ledger");
        let mut l = DpLedger {
            path,
            by_study: HashMap::new(),
            total: 0.0,
        };
        for line in read_lines(&l.path)? {
            let f: Vec<&str> = line.split(' ').collect();
            if let [study, _task, eps] = f[..] {
                if let Ok(e) = eps.parse::<f64>() {
                    *l.by_study.entry(study.to_string()).or_default() += e;
                    l.total += e;
                }
            }
        }
        Ok(l)
    }

    pub fn spend(&mut self, study: &str, task: &str, epsilon: f64) -> Result<(), NodeError> {
        append_line(&self.path, &format!("{study} {task} {epsilon}"))?;
        *self.by_study.entry(study.to_string()).or_default() += epsilon;
        self.total += epsilon;
        Ok(())
    }
}

impl medfed_privacy::dp::Ledger for DpLedger {
    fn spent_by_study(&self, study: &str) -> f64 {
        self.by_study.get(study).copied().unwrap_or(0.0)
    }
    fn spent_total(&self) -> f64 {
        self.total
    }
}

/// The beacon probe ledger, `state/beacon_probes`: one line `requester variant` per distinct rare
/// variant a requester has been charged for, fsynced before the answer is audited (and so before it
/// can be sent). A line torn by a crash is ignored; its task runs again and charges again.
pub(crate) struct ProbeLedger {
    path: PathBuf,
    by_requester: HashMap<String, std::collections::BTreeSet<String>>,
}

impl ProbeLedger {
    pub fn open(state: &Path) -> Result<ProbeLedger, NodeError> {
        let path = state.join("beacon_probes");
        let mut l = ProbeLedger {
            path,
            by_requester: HashMap::new(),
        };
        for line in read_lines(&l.path)? {
            if let Some((who, variant)) = line.split_once(' ') {
                if !variant.is_empty() && !variant.contains(' ') {
                    l.by_requester
                        .entry(who.to_string())
                        .or_default()
                        .insert(variant.to_string());
                }
            }
        }
        Ok(l)
    }

    pub fn charge(&mut self, requester: &str, variants: &[String]) -> Result<(), NodeError> {
        for v in variants {
            append_line(&self.path, &format!("{requester} {v}"))?;
            self.by_requester
                .entry(requester.to_string())
                .or_default()
                .insert(v.clone());
        }
        Ok(())
    }
}

impl medfed_privacy::beacon::ProbeLedger for ProbeLedger {
    fn probed(&self, requester: &str) -> std::collections::BTreeSet<String> {
        self.by_requester
            .get(requester)
            .cloned()
            .unwrap_or_default()
    }
}
