//! The node's append-only, hash-chained audit log (`audit.log`, one JSON object per line).
//!
//! Every release and every refusal is appended (and fsynced) *before* it is sent. Each line carries the
//! hash of the previous line, so editing, removing or reordering any line breaks the chain, which
//! [`AuditLog::verify`] reports with the line number. Tasks the node rejected without answering (bad
//! signature, wrong node, replay) are logged too, with `sent: false`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A statistic released to the hub.
    Release,
    /// A refusal sent to the hub (policy, expiry, invalid analysis, failure).
    Refusal,
    /// A task the node would not answer at all; nothing was sent.
    Rejected,
    /// Consented profiles (categories and age bands) handed to a service.
    Profiles,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    pub event: Event,
    pub task_id: String,
    pub study_id: String,
    pub analysis_id: String,
    /// Whether this entry describes something that left the hospital.
    pub sent: bool,
    /// The exact signed payload that was (or will be) sent; empty when nothing is sent.
    pub payload: String,
    pub signature: String,
    pub detail: String,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    fn compute_hash(&self) -> String {
        let mut e = self.clone();
        e.hash = String::new();
        let text = serde_json::to_string(&e).expect("audit entries serialise");
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit log {path} line {line}: {message}")]
    Broken {
        path: String,
        line: usize,
        message: String,
    },
}

pub struct AuditLog {
    path: PathBuf,
    file: File,
    last_hash: String,
    next_seq: u64,
    /// The file's length after the entries this handle knows of; more means another process (the
    /// steward's `medfed node profiles` beside a running node) appended meanwhile.
    len: u64,
}

/// What a new entry says; the log fills in sequence, time and hashes.
pub struct NewEntry<'a> {
    pub event: Event,
    pub task_id: &'a str,
    pub study_id: &'a str,
    pub analysis_id: &'a str,
    pub sent: bool,
    pub payload: &'a str,
    pub signature: &'a str,
    pub detail: &'a str,
}

impl AuditLog {
    /// Open (or create) the log and verify the whole chain; a broken chain refuses to open, so a node
    /// never appends to a log that has been tampered with.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        Self::open_with_entries(path).map(|(log, _)| log)
    }

    /// [`AuditLog::open`], also returning the verified entries (the node rebuilds its state from
    /// them), so that the log is read once.
    pub fn open_with_entries(path: &Path) -> Result<(AuditLog, Vec<Entry>), AuditError> {
        let entries = if path.exists() {
            Self::verify(path)?
        } else {
            Vec::new()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let (last_hash, next_seq) = entries
            .last()
            .map(|e| (e.hash.clone(), e.seq + 1))
            .unwrap_or_else(|| (GENESIS.to_string(), 1));
        let len = file
            .metadata()
            .map_err(|source| AuditError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        let log = AuditLog {
            path: path.to_path_buf(),
            file,
            last_hash,
            next_seq,
            len,
        };
        Ok((log, entries))
    }

    /// Append one entry. Processes sharing the log take turns under an exclusive lock on the file,
    /// and each first chains onto whatever the others appended since it last wrote.
    pub fn append(&mut self, n: NewEntry<'_>) -> Result<Entry, AuditError> {
        let path = self.path.display().to_string();
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        self.file.lock().map_err(io)?;
        let r = self.append_locked(n);
        let unlocked = self.file.unlock().map_err(io);
        let e = r?;
        unlocked?;
        Ok(e)
    }

    fn append_locked(&mut self, n: NewEntry<'_>) -> Result<Entry, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let len = self.file.metadata().map_err(io)?.len();
        if len != self.len {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = File::open(&self.path).map_err(io)?;
            f.seek(SeekFrom::Start(self.len)).map_err(io)?;
            let mut tail = String::new();
            f.read_to_string(&mut tail).map_err(io)?;
            let last = tail
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .ok_or_else(|| AuditError::Broken {
                    path: self.path.display().to_string(),
                    line: 0,
                    message: "changed under this node without a new entry".into(),
                })?;
            let e: Entry = serde_json::from_str(last).map_err(|e| AuditError::Broken {
                path: self.path.display().to_string(),
                line: 0,
                message: format!("the last entry another process appended: {e}"),
            })?;
            self.last_hash = e.hash;
            self.next_seq = e.seq + 1;
        }
        let mut e = Entry {
            seq: self.next_seq,
            at: medfed_protocol::now(),
            event: n.event,
            task_id: n.task_id.to_string(),
            study_id: n.study_id.to_string(),
            analysis_id: n.analysis_id.to_string(),
            sent: n.sent,
            payload: n.payload.to_string(),
            signature: n.signature.to_string(),
            detail: n.detail.to_string(),
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        let mut line = serde_json::to_string(&e).expect("audit entries serialise");
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.last_hash = e.hash.clone();
        self.next_seq += 1;
        self.len = len + line.len() as u64;
        Ok(e)
    }

    /// Read and verify every line: JSON shape, sequence numbers, the link to the previous hash and the
    /// entry's own hash.
    pub fn verify(path: &Path) -> Result<Vec<Entry>, AuditError> {
        let p = path.display().to_string();
        let f = File::open(path).map_err(|source| AuditError::Io {
            path: p.clone(),
            source,
        })?;
        let mut out: Vec<Entry> = Vec::new();
        let mut prev = GENESIS.to_string();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let n = i + 1;
            let broken = |message: String| AuditError::Broken {
                path: p.clone(),
                line: n,
                message,
            };
            let line = line.map_err(|source| AuditError::Io {
                path: p.clone(),
                source,
            })?;
            let e: Entry = serde_json::from_str(&line)
                .map_err(|err| broken(format!("not an audit entry: {err}")))?;
            if e.seq != n as u64 {
                return Err(broken(format!("sequence {} where {n} was expected", e.seq)));
            }
            if e.prev != prev {
                return Err(broken("does not link to the previous entry".into()));
            }
            if e.compute_hash() != e.hash {
                return Err(broken("content does not match its hash (edited)".into()));
            }
            prev = e.hash.clone();
            out.push(e);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(task: &'a str, payload: &'a str) -> NewEntry<'a> {
        NewEntry {
            event: Event::Release,
            task_id: task,
            study_id: "s",
            analysis_id: "a",
            sent: true,
            payload,
            signature: "sig",
            detail: "",
        }
    }

    #[test]
    fn two_writers_on_one_log_keep_one_chain() {
        // A running node and the steward's `medfed node profiles` each hold the log open.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut node = AuditLog::open(&path).unwrap();
        node.append(entry("t1", "{}")).unwrap();
        let mut steward = AuditLog::open(&path).unwrap();
        steward.append(entry("p1", "{}")).unwrap();
        node.append(entry("t2", "{}")).unwrap();
        node.append(entry("t3", "{}")).unwrap();
        steward.append(entry("p2", "{}")).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut log = AuditLog::open(&path).unwrap();
                    for k in 0..25 {
                        log.append(entry(&format!("x{i}-{k}"), "{}")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = AuditLog::verify(&path).unwrap();
        assert_eq!(all.len(), 105);
        let ids: Vec<&str> = all.iter().take(5).map(|e| e.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "p1", "t2", "t3", "p2"]);
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        {
            let mut log = AuditLog::open(&path).unwrap();
            log.append(entry("t1", r#"{"value":120}"#)).unwrap();
            log.append(entry("t2", r#"{"value":30}"#)).unwrap();
        }
        {
            // Reopening continues the chain.
            let mut log = AuditLog::open(&path).unwrap();
            log.append(entry("t3", r#"{"value":7}"#)).unwrap();
        }
        let all = AuditLog::verify(&path).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].seq, 3);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Edit the released value on line 2, keeping valid JSON.
        let mut e: Entry = serde_json::from_str(lines[1]).unwrap();
        e.payload = r#"{"value":31}"#.into();
        let edited = serde_json::to_string(&e).unwrap();
        std::fs::write(&path, format!("{}\n{edited}\n{}\n", lines[0], lines[2])).unwrap();
        let e = AuditLog::verify(&path).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(AuditLog::open(&path).is_err());
        // Remove a line.
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(AuditLog::verify(&path)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        // Drop the tail: still a valid chain, but shorter (the hub's records show the gap).
        std::fs::write(&path, format!("{}\n", lines[0])).unwrap();
        assert_eq!(AuditLog::verify(&path).unwrap().len(), 1);
    }
}
