//! The hub's state and the national statistics database, on either backend.
//!
//! Exactly-once: a result is applied in one transaction that inserts it (keyed by task id), closes the
//! task, and, when it was the study's last open task, runs the combine steps and writes the pooled
//! results into `national_statistics` (one JSON document per analysis) and `national_cells` (one row
//! per number: analysis, table, stratum, statistic, value, contributing sites, where withheld). A
//! second post of the same result finds the row and changes nothing. A kill before the commit
//! leaves no trace; the node posts again.

use medfed_analysis::gwas::GwasState;
use medfed_analysis::regression::{self, FitState, Next};
use medfed_analysis::surveil::{self as surveillance, SurveilState};
use medfed_analysis::{combine, PooledResult, SiteInput};
use medfed_protocol::regression::ModelStep;
use medfed_protocol::{AnalysisSpec, Outcome, SecretKey, Signed, Study, Task, TaskResult};

use crate::db::{Db, DbError, Val};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, public_key TEXT NOT NULL,
    added_at BIGINT NOT NULL, last_seen BIGINT NOT NULL DEFAULT 0, serves TEXT NOT NULL DEFAULT 'cdm');
CREATE TABLE IF NOT EXISTS studies (id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL,
    submitted_at BIGINT NOT NULL, status TEXT NOT NULL, completed_at BIGINT NOT NULL DEFAULT 0,
    requester TEXT NOT NULL DEFAULT 'researcher');
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id),
    node TEXT NOT NULL, analysis_id TEXT NOT NULL, round BIGINT NOT NULL, payload TEXT NOT NULL,
    signature TEXT NOT NULL, status TEXT NOT NULL, leased_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_node ON tasks (node, status);
CREATE INDEX IF NOT EXISTS tasks_by_study ON tasks (study_id, status);
CREATE TABLE IF NOT EXISTS results (task_id TEXT PRIMARY KEY REFERENCES tasks(id),
    study_id TEXT NOT NULL, node TEXT NOT NULL, analysis_id TEXT NOT NULL, payload TEXT NOT NULL,
    signature TEXT NOT NULL, outcome TEXT NOT NULL, received_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS national_statistics (study_id TEXT NOT NULL, analysis_id TEXT NOT NULL,
    type TEXT NOT NULL, value TEXT, result TEXT NOT NULL, computed_at BIGINT NOT NULL,
    PRIMARY KEY (study_id, analysis_id));
CREATE TABLE IF NOT EXISTS national_cells (study_id TEXT NOT NULL, analysis_id TEXT NOT NULL,
    type TEXT NOT NULL, table_name TEXT NOT NULL, stratum TEXT NOT NULL, statistic TEXT NOT NULL,
    value DOUBLE PRECISION, sites_released BIGINT NOT NULL, withheld_at TEXT NOT NULL,
    PRIMARY KEY (study_id, analysis_id, table_name, stratum, statistic));
CREATE TABLE IF NOT EXISTS fits (study_id TEXT NOT NULL, analysis_id TEXT NOT NULL, state TEXT NOT NULL,
    updated_at BIGINT NOT NULL, PRIMARY KEY (study_id, analysis_id));
CREATE TABLE IF NOT EXISTS models (id TEXT PRIMARY KEY, study_id TEXT NOT NULL, analysis_id TEXT NOT NULL,
    name TEXT NOT NULL, family TEXT NOT NULL, created_at BIGINT NOT NULL, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS surveil_days (stream TEXT NOT NULL, day BIGINT NOT NULL, layout TEXT NOT NULL,
    counts TEXT NOT NULL, sites TEXT NOT NULL, study_id TEXT NOT NULL, stored_at BIGINT NOT NULL,
    PRIMARY KEY (stream, day));
CREATE TABLE IF NOT EXISTS alerts (study_id TEXT NOT NULL, analysis_id TEXT NOT NULL, alert_id BIGINT NOT NULL,
    stream TEXT NOT NULL, grp TEXT NOT NULL, syndrome TEXT NOT NULL, districts TEXT NOT NULL,
    first_day TEXT NOT NULL, last_day TEXT NOT NULL, raised_day TEXT NOT NULL, raised BIGINT NOT NULL,
    severity DOUBLE PRECISION NOT NULL, level TEXT NOT NULL, detectors TEXT NOT NULL, observed DOUBLE PRECISION,
    computed_at BIGINT NOT NULL, PRIMARY KEY (study_id, analysis_id, alert_id));
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

pub struct Store {
    db: Box<dyn Db>,
}

/// A task as the hub stores it: the signed payload plus bookkeeping.
pub struct NewTask {
    pub id: String,
    pub node: String,
    pub analysis_id: String,
    pub round: i64,
    pub payload: String,
    pub signature: String,
}

/// Signed tasks of one round of analysis number `k` of a study: one per node, each with its own step
/// (or none). Task ids start with the analysis's position and round, so that nodes receive (and answer)
/// a study's analyses in order. A task lives `ttl_s` seconds and carries `requester`.
#[allow(clippy::too_many_arguments)]
pub fn new_tasks(
    key: &SecretKey,
    study_id: &str,
    k: usize,
    analysis: &AnalysisSpec,
    round: u32,
    steps: Vec<(String, Option<ModelStep>)>,
    ttl_s: u64,
    requester: &str,
) -> Vec<NewTask> {
    let now = medfed_protocol::now();
    steps
        .into_iter()
        .map(|(node, step)| {
            let task = Task {
                task_id: format!("t{k:03}r{round:03}-{}", &medfed_protocol::random_id()[..16]),
                study_id: study_id.to_string(),
                node: node.clone(),
                round,
                analysis: analysis.clone(),
                issued_at: now,
                expires_at: now + ttl_s as i64,
                nonce: medfed_protocol::random_id(),
                step,
                requester: Some(requester.to_string()),
            };
            let signed = Signed::seal(&task, key);
            NewTask {
                id: task.task_id,
                node,
                analysis_id: analysis.id().to_string(),
                round: i64::from(round),
                payload: signed.payload,
                signature: signed.signature,
            }
        })
        .collect()
}

/// How long a round's tasks live: a secure-aggregation phase waits `phase_timeout_s` for the sites
/// (then the ones that did not answer have dropped out); anything else the study's task lifetime.
pub fn round_ttl(study: &Study, steps: &[(String, Option<ModelStep>)]) -> u64 {
    let phase = steps
        .iter()
        .any(|(_, s)| s.as_ref().is_some_and(|s| s.session().is_some()));
    if phase {
        study.privacy.phase_timeout_s
    } else {
        study.task_ttl_s
    }
}

/// A model in the hub's registry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelRow {
    pub id: String,
    pub study_id: String,
    pub analysis_id: String,
    pub name: String,
    pub family: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeRow {
    pub name: String,
    pub public_key: String,
    pub added_at: i64,
    pub last_seen: i64,
    /// The data it answers from: `cdm` (a hospital) or `vehicle_events` (a vehicle service).
    pub serves: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StudyRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub submitted_at: i64,
    pub completed_at: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskRow {
    pub id: String,
    pub node: String,
    pub analysis_id: String,
    pub status: String,
    /// `released`, `suppressed` or `refused` once answered.
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// What applying a result did.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub applied: bool,
    pub study_complete: bool,
}

impl Store {
    pub fn new(mut db: Box<dyn Db>) -> Result<Store, StoreError> {
        let serial = db.serial();
        db.batch(SCHEMA)?;
        db.batch(&format!(
            "CREATE TABLE IF NOT EXISTS audit (seq {serial}, at BIGINT NOT NULL, actor TEXT NOT NULL, \
             action TEXT NOT NULL, detail TEXT NOT NULL)"
        ))?;
        // Hubs made before studies recorded their requester: add the column (every earlier study
        // was submitted with the one researcher token).
        if db
            .query("SELECT requester FROM studies WHERE 1 = 0", &[])
            .is_err()
        {
            db.batch(
                "ALTER TABLE studies ADD COLUMN requester TEXT NOT NULL DEFAULT 'researcher'",
            )?;
        }
        // Hubs made before nodes said what data they serve: every earlier node held a CDM store.
        if db
            .query("SELECT serves FROM nodes WHERE 1 = 0", &[])
            .is_err()
        {
            db.batch("ALTER TABLE nodes ADD COLUMN serves TEXT NOT NULL DEFAULT 'cdm'")?;
        }
        Ok(Store { db })
    }

    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Run `f` in a transaction; roll back on error.
    fn tx<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.begin()?;
        match f(self.db.as_mut()) {
            Ok(v) => {
                self.db.commit()?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.db.rollback();
                Err(e)
            }
        }
    }

    pub fn audit(&mut self, actor: &str, action: &str, detail: &str) -> Result<(), StoreError> {
        audit(self.db.as_mut(), actor, action, detail)
    }

    pub fn audit_trail(&mut self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = self.db.query(
            "SELECT seq, at, actor, action, detail FROM audit ORDER BY seq DESC LIMIT $1",
            &[Val::I(limit)],
        )?;
        Ok(rows
            .into_iter()
            .rev()
            .map(|r| {
                let mut it = r.into_iter();
                AuditRow {
                    seq: it.next().and_then(|v| v.int()).unwrap_or(0),
                    at: it.next().and_then(|v| v.int()).unwrap_or(0),
                    actor: it.next().map(Val::into_text).unwrap_or_default(),
                    action: it.next().map(Val::into_text).unwrap_or_default(),
                    detail: it.next().map(Val::into_text).unwrap_or_default(),
                }
            })
            .collect())
    }

    pub fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let r = self
            .db
            .query("SELECT value FROM meta WHERE key = $1", &[key.into()])?;
        Ok(r.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(Val::into_text))
    }

    /// Register a node (or, with `replace`, change its key and what it serves). `serves` is one of
    /// `medfed_protocol::study::SOURCES`, checked by the caller.
    pub fn add_node(
        &mut self,
        name: &str,
        public_key: &str,
        replace: bool,
        serves: &str,
    ) -> Result<(), StoreError> {
        let now = medfed_protocol::now();
        self.tx(|db| {
            let existing = db.query(
                "SELECT public_key FROM nodes WHERE name = $1",
                &[name.into()],
            )?;
            if !existing.is_empty() {
                if !replace {
                    return Err(StoreError::Conflict(format!(
                        "node {name:?} is already registered; pass --replace to change its key"
                    )));
                }
                db.execute(
                    "UPDATE nodes SET public_key = $1, serves = $2 WHERE name = $3",
                    &[public_key.into(), serves.into(), name.into()],
                )?;
                audit(
                    db,
                    "operator",
                    "node_key_replaced",
                    &format!("{name} {public_key} serves {serves}"),
                )?;
            } else {
                db.execute(
                    "INSERT INTO nodes (name, public_key, added_at, serves) VALUES ($1, $2, $3, $4)",
                    &[name.into(), public_key.into(), now.into(), serves.into()],
                )?;
                audit(
                    db,
                    "operator",
                    "node_added",
                    &format!("{name} {public_key} serves {serves}"),
                )?;
            }
            Ok(())
        })
    }

    pub fn node_key(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let r = self.db.query(
            "SELECT public_key FROM nodes WHERE name = $1",
            &[name.into()],
        )?;
        Ok(r.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(Val::into_text))
    }

    pub fn touch_node(&mut self, name: &str, now: i64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE nodes SET last_seen = $1 WHERE name = $2",
            &[now.into(), name.into()],
        )?;
        Ok(())
    }

    pub fn nodes(&mut self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = self.db.query(
            "SELECT name, public_key, added_at, last_seen, serves FROM nodes ORDER BY name",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| NodeRow {
                name: r[0].clone().into_text(),
                public_key: r[1].clone().into_text(),
                added_at: r[2].int().unwrap_or(0),
                last_seen: r[3].int().unwrap_or(0),
                serves: r[4].clone().into_text(),
            })
            .collect())
    }

    pub fn insert_study(
        &mut self,
        id: &str,
        requester: &str,
        study: &Study,
        tasks: &[NewTask],
        fits: &[(String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let now = medfed_protocol::now();
        let spec = serde_json::to_string(study).expect("studies serialise");
        self.tx(|db| {
            db.execute(
                "INSERT INTO studies (id, name, spec, submitted_at, status, requester) VALUES ($1, $2, $3, $4, 'running', $5)",
                &[id.into(), study.name.as_str().into(), spec.into(), now.into(), requester.into()],
            )?;
            for (analysis, state) in fits {
                save_fit(db, id, analysis, state, now)?;
            }
            insert_tasks(db, id, tasks, now)?;
            audit(
                db,
                requester,
                "study_submitted",
                &format!("{id} {:?}: {} analyses, {} tasks", study.name, study.analyses.len(), tasks.len()),
            )?;
            Ok(())
        })
    }

    /// Open tasks for `node` that are not leased to it right now; leases them for `lease_s` seconds.
    pub fn lease_tasks(
        &mut self,
        node: &str,
        now: i64,
        lease_s: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        self.tx(|db| {
            let rows = db.query(
                "SELECT id, payload, signature FROM tasks WHERE node = $1 AND status = 'open' AND leased_until <= $2 \
                 ORDER BY created_at, id LIMIT 100",
                &[node.into(), now.into()],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let mut it = r.into_iter().map(Val::into_text);
                let (id, payload, sig) = (
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                );
                db.execute(
                    "UPDATE tasks SET leased_until = $1 WHERE id = $2",
                    &[(now + lease_s).into(), id.as_str().into()],
                )?;
                out.push((id, payload, sig));
            }
            if !out.is_empty() {
                let ids: Vec<&str> = out.iter().map(|t| t.0.as_str()).collect();
                audit(db, node, "tasks_delivered", &ids.join(" "))?;
            }
            Ok(out)
        })
    }

    pub fn release_leases(&mut self, node: &str) -> Result<(), StoreError> {
        let n = self.db.execute(
            "UPDATE tasks SET leased_until = 0 WHERE node = $1 AND status = 'open' AND leased_until > 0",
            &[node.into()],
        )?;
        if n > 0 {
            self.audit(
                node,
                "leases_released",
                &format!("{n} tasks (node restarted)"),
            )?;
        }
        Ok(())
    }

    /// Apply a verified result exactly once; complete the study when it was the last open task.
    pub fn apply_result(
        &mut self,
        result: &TaskResult,
        payload: &str,
        signature: &str,
        key: &SecretKey,
    ) -> Result<Applied, StoreError> {
        let now = medfed_protocol::now();
        let outcome = match &result.outcome {
            Outcome::Released { statistic } if statistic.is_suppressed() => "suppressed",
            Outcome::Released { .. } => "released",
            Outcome::Refused { .. } => "refused",
            Outcome::Secagg { .. } => "secagg",
        };
        self.tx(|db| {
            let t = db.query(
                "SELECT node, study_id, analysis_id, status FROM tasks WHERE id = $1",
                &[result.task_id.as_str().into()],
            )?;
            let Some(t) = t.into_iter().next() else {
                return Err(StoreError::NotFound(format!("no task {}", result.task_id)));
            };
            let (node, study, analysis) = (t[0].clone().into_text(), t[1].clone().into_text(), t[2].clone().into_text());
            if node != result.node || study != result.study_id || analysis != result.analysis_id {
                return Err(StoreError::Invalid(format!(
                    "result for task {} does not match the task (node, study or analysis differ)",
                    result.task_id
                )));
            }
            let existing = db.query(
                "SELECT 1 FROM results WHERE task_id = $1",
                &[result.task_id.as_str().into()],
            )?;
            if !existing.is_empty() {
                audit(db, &node, "result_duplicate", &result.task_id)?;
                return Ok(Applied { applied: false, study_complete: false });
            }
            if t[3].text() == Some("expired") {
                // A secure-aggregation phase went on without this site; its late answer changes nothing.
                audit(db, &node, "result_late", &result.task_id)?;
                return Err(StoreError::Conflict(format!(
                    "task {} expired before its answer came; the round went on without this node",
                    result.task_id
                )));
            }
            db.execute(
                "INSERT INTO results (task_id, study_id, node, analysis_id, payload, signature, outcome, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    result.task_id.as_str().into(),
                    study.as_str().into(),
                    node.as_str().into(),
                    analysis.as_str().into(),
                    payload.into(),
                    signature.into(),
                    outcome.into(),
                    now.into(),
                ],
            )?;
            db.execute(
                "UPDATE tasks SET status = 'done' WHERE id = $1",
                &[result.task_id.as_str().into()],
            )?;
            audit(db, &node, "result_applied", &format!("{} {} {outcome}", result.task_id, analysis))?;
            advance_fit(db, key, &study, &analysis, now)?;
            let complete = complete_if_done(db, &study, now)?;
            Ok(Applied { applied: true, study_complete: complete })
        })
    }

    /// The model registry, newest first.
    /// A surveillance stream's network totals (hub-internal: for `medfed surveil` run in process and
    /// for evaluations; no API serves them, since they hold unpublished small counts).
    pub fn surveillance_cube(
        &mut self,
        s: &medfed_protocol::surveil::Surveillance,
    ) -> Result<Option<surveillance::Cube>, StoreError> {
        load_cube(self.db.as_mut(), s)
    }

    /// Studies whose surveillance detectors are still to run (status `detecting`).
    pub fn studies_detecting(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self.db.query(
            "SELECT id FROM studies WHERE status = 'detecting' ORDER BY submitted_at, id",
            &[],
        )?;
        Ok(rows.into_iter().map(|r| r[0].clone().into_text()).collect())
    }

    /// The surveillance analyses of a `detecting` study with their streams' network totals (`None`:
    /// no chunk was added), for the detectors to run on without the store's lock.
    pub fn detection_inputs(
        &mut self,
        study_id: &str,
    ) -> Result<
        Vec<(
            medfed_protocol::surveil::Surveillance,
            Option<surveillance::Cube>,
        )>,
        StoreError,
    > {
        let spec = self
            .db
            .query("SELECT spec FROM studies WHERE id = $1", &[study_id.into()])?;
        let Some(row) = spec.into_iter().next() else {
            return Err(StoreError::NotFound(format!("no study {study_id}")));
        };
        let study = parse_stored(&row[0].clone().into_text())?;
        let mut out = Vec::new();
        for a in &study.analyses {
            if let AnalysisSpec::Surveillance(s) = a {
                out.push((s.clone(), load_cube(self.db.as_mut(), s)?));
            }
        }
        Ok(out)
    }

    /// Complete a `detecting` study with the detectors' results, in one transaction (a study that is
    /// no longer `detecting` is left alone: another run finished it).
    pub fn finish_detection(
        &mut self,
        study_id: &str,
        detected: &Detected,
    ) -> Result<bool, StoreError> {
        let now = medfed_protocol::now();
        self.tx(|db| {
            let st = db.query(
                "SELECT status FROM studies WHERE id = $1",
                &[study_id.into()],
            )?;
            let detecting = st
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.text())
                .is_some_and(|s| s == "detecting");
            if !detecting {
                return Ok(false);
            }
            complete_study(db, study_id, now, Some(detected))?;
            Ok(true)
        })
    }

    /// Alerts in the national statistics DB, newest study first.
    pub fn alerts(&mut self) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = self.db.query(
            "SELECT study_id, analysis_id, alert_id, stream, grp, syndrome, districts, first_day, last_day, raised_day, raised, severity, level, detectors, observed \
             FROM alerts ORDER BY computed_at DESC, study_id, alert_id",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let t = |i: usize| r[i].text().unwrap_or_default().to_string();
                let j =
                    |i: usize| serde_json::from_str::<serde_json::Value>(&t(i)).unwrap_or_default();
                serde_json::json!({
                    "study_id": t(0), "analysis_id": t(1), "alert_id": r[2].int(),
                    "stream": t(3), "group": t(4), "syndrome": t(5), "districts": j(6),
                    "first_day": t(7), "last_day": t(8), "raised_day": t(9),
                    "raised": r[10].int() == Some(1), "severity": r[11].float(), "level": t(12),
                    "detectors": j(13), "observed": r[14].float(),
                })
            })
            .collect())
    }

    pub fn models(&mut self) -> Result<Vec<ModelRow>, StoreError> {
        let rows = self.db.query(
            "SELECT id, study_id, analysis_id, name, family, created_at FROM models ORDER BY created_at DESC, id",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut text = || it.next().map(Val::into_text).unwrap_or_default();
                let (id, study_id, analysis_id, name, family) =
                    (text(), text(), text(), text(), text());
                ModelRow {
                    id,
                    study_id,
                    analysis_id,
                    name,
                    family,
                    created_at: it.next().and_then(|v| v.int()).unwrap_or(0),
                }
            })
            .collect())
    }

    /// One registered model, as exported (`medfed-model/1` JSON).
    pub fn model(&mut self, id: &str) -> Result<String, StoreError> {
        let r = self
            .db
            .query("SELECT model FROM models WHERE id = $1", &[id.into()])?;
        r.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(Val::into_text)
            .ok_or_else(|| StoreError::NotFound(format!("no model {id}")))
    }

    /// Close the secure-aggregation phase tasks whose time is up (their sites have dropped out) and go
    /// on with the answers that came: the next phase, the next round, or the end of the fit. Returns
    /// whether that left a study with no open task (completed, or `detecting`).
    pub fn expire_overdue(&mut self, now: i64, key: &SecretKey) -> Result<bool, StoreError> {
        let rows = self.db.query(
            "SELECT id, study_id, analysis_id, node, payload FROM tasks WHERE status = 'open' AND payload LIKE '%\"session\":%'",
            &[],
        )?;
        let overdue: Vec<(String, String, String, String)> = rows
            .into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter().map(Val::into_text);
                let (id, study, analysis, node, payload) =
                    (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
                let t: Task = serde_json::from_str(&payload).ok()?;
                (t.expires_at < now).then_some((id, study, analysis, node))
            })
            .collect();
        if overdue.is_empty() {
            return Ok(false);
        }
        self.tx(|db| {
            let mut fits = std::collections::BTreeSet::new();
            for (id, study, analysis, node) in &overdue {
                db.execute(
                    "UPDATE tasks SET status = 'expired' WHERE id = $1 AND status = 'open'",
                    &[id.as_str().into()],
                )?;
                audit(
                    db,
                    node,
                    "task_expired",
                    &format!("{id} {analysis}: no answer within the phase's time"),
                )?;
                fits.insert((study.clone(), analysis.clone()));
            }
            for (study, analysis) in &fits {
                advance_fit(db, key, study, analysis, now)?;
            }
            let studies: std::collections::BTreeSet<&String> =
                fits.iter().map(|(s, _)| s).collect();
            let mut finished = false;
            for study in studies {
                finished |= complete_if_done(db, study, now)?;
            }
            Ok(finished)
        })
    }

    pub fn studies(&mut self) -> Result<Vec<StudyRow>, StoreError> {
        let rows = self.db.query(
            "SELECT id, name, status, submitted_at, completed_at FROM studies ORDER BY submitted_at DESC, id",
            &[],
        )?;
        Ok(rows.into_iter().map(study_row).collect())
    }

    pub fn study(&mut self, id: &str) -> Result<(StudyRow, Vec<TaskRow>), StoreError> {
        let rows = self.db.query(
            "SELECT id, name, status, submitted_at, completed_at FROM studies WHERE id = $1",
            &[id.into()],
        )?;
        let s = rows
            .into_iter()
            .next()
            .map(study_row)
            .ok_or_else(|| StoreError::NotFound(format!("no study {id}")))?;
        let tasks = self.db.query(
            "SELECT t.id, t.node, t.analysis_id, t.status, r.outcome FROM tasks t \
             LEFT JOIN results r ON r.task_id = t.id WHERE t.study_id = $1 ORDER BY t.analysis_id, t.node",
            &[id.into()],
        )?;
        let tasks = tasks
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                TaskRow {
                    id: it.next().map(Val::into_text).unwrap_or_default(),
                    node: it.next().map(Val::into_text).unwrap_or_default(),
                    analysis_id: it.next().map(Val::into_text).unwrap_or_default(),
                    status: it.next().map(Val::into_text).unwrap_or_default(),
                    outcome: it.next().and_then(|v| v.text().map(str::to_string)),
                }
            })
            .collect();
        Ok((s, tasks))
    }

    /// Pooled results of a completed study, in the order of its analyses.
    pub fn results(&mut self, id: &str) -> Result<Vec<PooledResult>, StoreError> {
        let spec = self
            .db
            .query("SELECT spec FROM studies WHERE id = $1", &[id.into()])?;
        let Some(spec) = spec.into_iter().next() else {
            return Err(StoreError::NotFound(format!("no study {id}")));
        };
        let study = parse_stored(&spec[0].clone().into_text())?;
        let rows = self.db.query(
            "SELECT analysis_id, result FROM national_statistics WHERE study_id = $1",
            &[id.into()],
        )?;
        let mut by_id = std::collections::HashMap::new();
        for r in rows {
            let res: PooledResult = serde_json::from_str(&r[1].clone().into_text())
                .map_err(|e| StoreError::Invalid(format!("stored result: {e}")))?;
            by_id.insert(r[0].clone().into_text(), res);
        }
        Ok(study
            .analyses
            .iter()
            .filter_map(|a| by_id.remove(a.id()))
            .collect())
    }
}

fn study_row(r: Vec<Val>) -> StudyRow {
    let mut it = r.into_iter();
    StudyRow {
        id: it.next().map(Val::into_text).unwrap_or_default(),
        name: it.next().map(Val::into_text).unwrap_or_default(),
        status: it.next().map(Val::into_text).unwrap_or_default(),
        submitted_at: it.next().and_then(|v| v.int()).unwrap_or(0),
        completed_at: it.next().and_then(|v| v.int()).unwrap_or(0),
    }
}

fn parse_stored(spec: &str) -> Result<Study, StoreError> {
    medfed_protocol::study::parse_study(spec)
        .map_err(|e| StoreError::Invalid(format!("stored study no longer parses: {e}")))
}

fn audit(db: &mut dyn Db, actor: &str, action: &str, detail: &str) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO audit (at, actor, action, detail) VALUES ($1, $2, $3, $4)",
        &[
            medfed_protocol::now().into(),
            actor.into(),
            action.into(),
            detail.into(),
        ],
    )?;
    Ok(())
}

/// Write one pooled result into the national statistics: the document and its long form.
fn write_pooled(
    db: &mut dyn Db,
    study_id: &str,
    a: &AnalysisSpec,
    pooled: &PooledResult,
    now: i64,
) -> Result<(), StoreError> {
    let value = match &pooled.value {
        serde_json::Value::Null => Val::Null,
        v => Val::T(v.to_string()),
    };
    db.execute(
        "INSERT INTO national_statistics (study_id, analysis_id, type, value, result, computed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            study_id.into(),
            a.id().into(),
            a.type_name().into(),
            value,
            serde_json::to_string(pooled).expect("results serialise").into(),
            now.into(),
        ],
    )?;
    insert_cells(db, study_id, &medfed_analysis::flatten(pooled))
}

/// Write the long form of one pooled result, many rows per statement.
fn insert_cells(
    db: &mut dyn Db,
    study_id: &str,
    rows: &[medfed_analysis::StatRow],
) -> Result<(), StoreError> {
    const COLS: usize = 9;
    for chunk in rows.chunks(200) {
        let mut sql = String::from(
            "INSERT INTO national_cells (study_id, analysis_id, type, table_name, stratum, statistic, value, sites_released, withheld_at) VALUES ",
        );
        let mut params = Vec::with_capacity(chunk.len() * COLS);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * COLS;
            sql.push('(');
            sql.push_str(
                &(1..=COLS)
                    .map(|j| format!("${}", b + j))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            sql.push(')');
            params.extend([
                Val::from(study_id),
                r.analysis_id.as_str().into(),
                r.kind.as_str().into(),
                r.table.as_str().into(),
                r.stratum.as_str().into(),
                r.statistic.as_str().into(),
                Val::F(r.value),
                (r.sites_released as i64).into(),
                r.withheld_at.as_str().into(),
            ]);
        }
        db.execute(&sql, &params)?;
    }
    Ok(())
}

/// Complete the study when no task of it is open any more; whether it did.
fn complete_if_done(db: &mut dyn Db, study: &str, now: i64) -> Result<bool, StoreError> {
    let open = db.query(
        "SELECT COUNT(*) FROM tasks WHERE study_id = $1 AND status = 'open'",
        &[study.into()],
    )?;
    let done = open.first().and_then(|r| r[0].int()).unwrap_or(1) == 0;
    let status = db.query("SELECT status FROM studies WHERE id = $1", &[study.into()])?;
    let running = status
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.text())
        .is_some_and(|s| s == "running");
    if done && running {
        complete_study(db, study, now, None)?;
    }
    Ok(done)
}

/// A surveillance analysis's network totals and what the detectors made of them, computed outside
/// the store's lock ([`Store::detection_inputs`], then [`Store::finish_detection`]).
pub type Detected = Vec<(
    String,
    Option<(surveillance::Cube, surveillance::Detection)>,
)>;

fn insert_tasks(
    db: &mut dyn Db,
    study_id: &str,
    tasks: &[NewTask],
    now: i64,
) -> Result<(), StoreError> {
    for t in tasks {
        db.execute(
            "INSERT INTO tasks (id, study_id, node, analysis_id, round, payload, signature, status, leased_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', 0, $8)",
            &[
                t.id.as_str().into(),
                study_id.into(),
                t.node.as_str().into(),
                t.analysis_id.as_str().into(),
                t.round.into(),
                t.payload.as_str().into(),
                t.signature.as_str().into(),
                now.into(),
            ],
        )?;
    }
    Ok(())
}

fn save_fit<T: serde::Serialize>(
    db: &mut dyn Db,
    study: &str,
    analysis: &str,
    state: &T,
    now: i64,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(state).expect("round states serialise");
    let n = db.execute(
        "UPDATE fits SET state = $1, updated_at = $2 WHERE study_id = $3 AND analysis_id = $4",
        &[
            text.as_str().into(),
            now.into(),
            study.into(),
            analysis.into(),
        ],
    )?;
    if n == 0 {
        db.execute(
            "INSERT INTO fits (study_id, analysis_id, state, updated_at) VALUES ($1, $2, $3, $4)",
            &[study.into(), analysis.into(), text.into(), now.into()],
        )?;
    }
    Ok(())
}

fn load_fit<T: serde::de::DeserializeOwned>(
    db: &mut dyn Db,
    study: &str,
    analysis: &str,
) -> Result<T, StoreError> {
    let r = db.query(
        "SELECT state FROM fits WHERE study_id = $1 AND analysis_id = $2",
        &[study.into(), analysis.into()],
    )?;
    let text = r
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .map(Val::into_text)
        .ok_or_else(|| StoreError::NotFound(format!("no fit state for {study}/{analysis}")))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Invalid(format!("stored fit state: {e}")))
}

/// After a result of a regression: when its round is complete, take the hub's step and put out the
/// next round's tasks (or finish the fit), in the transaction that applied the result, so that a
/// crash never leaves a round answered but not advanced.
fn advance_fit(
    db: &mut dyn Db,
    key: &SecretKey,
    study_id: &str,
    analysis_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let spec = db.query(
        "SELECT spec, requester FROM studies WHERE id = $1",
        &[study_id.into()],
    )?;
    let study = parse_stored(&spec[0][0].clone().into_text())?;
    let requester = spec[0][1].clone().into_text();
    let requester = requester.as_str();
    let Some((k, a)) = study
        .analyses
        .iter()
        .enumerate()
        .find(|(_, a)| a.id() == analysis_id)
    else {
        return Ok(());
    };
    let round = match a {
        AnalysisSpec::Regression(_) => load_fit::<FitState>(db, study_id, analysis_id)?.round,
        AnalysisSpec::Surveillance(_) => load_fit::<SurveilState>(db, study_id, analysis_id)?.round,
        AnalysisSpec::Gwas(_) => load_fit::<GwasState>(db, study_id, analysis_id)?.round,
        _ => return Ok(()),
    };
    let round = i64::from(round);
    let open = db.query(
        "SELECT COUNT(*) FROM tasks WHERE study_id = $1 AND analysis_id = $2 AND round = $3 AND status = 'open'",
        &[study_id.into(), analysis_id.into(), round.into()],
    )?;
    if open.first().and_then(|r| r[0].int()).unwrap_or(1) > 0 {
        return Ok(());
    }
    let rows = db.query(
        "SELECT r.node, r.payload, t.payload FROM results r JOIN tasks t ON t.id = r.task_id \
         WHERE t.study_id = $1 AND t.analysis_id = $2 AND t.round = $3 ORDER BY r.node",
        &[study_id.into(), analysis_id.into(), round.into()],
    )?;
    let mut answers: Vec<(String, TaskResult)> = Vec::new();
    let mut step = None;
    for row in rows {
        let res: TaskResult = serde_json::from_str(&row[1].clone().into_text())
            .map_err(|e| StoreError::Invalid(format!("stored result: {e}")))?;
        let task: Task = serde_json::from_str(&row[2].clone().into_text())
            .map_err(|e| StoreError::Invalid(format!("stored task: {e}")))?;
        step = task.step;
        answers.push((row[0].clone().into_text(), res));
    }
    let Some(step) = step else {
        return Err(StoreError::Invalid(format!(
            "round {round} of {study_id}/{analysis_id} has no step"
        )));
    };
    let inputs: Vec<(String, SiteInput<'_>)> = answers
        .iter()
        .map(|(node, res)| (node.clone(), site_input(res)))
        .collect();
    let r = match a {
        AnalysisSpec::Regression(r) => r,
        AnalysisSpec::Surveillance(sv) => {
            return advance_surveillance(
                db, key, study_id, &study, k, sv, &step, &inputs, now, requester,
            )
        }
        AnalysisSpec::Gwas(g) => {
            return advance_gwas(
                db, key, study_id, &study, k, g, &step, &inputs, now, requester,
            )
        }
        _ => return Ok(()),
    };
    let mut state: FitState = load_fit(db, study_id, analysis_id)?;
    let next = regression::advance(r, &mut state, &step, &inputs);
    let detail = match &next {
        Next::Round(steps) => format!(
            "{study_id} {analysis_id}: round {} to {}",
            state.round,
            steps
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Next::Done => match (&state.fit, &state.error) {
            (_, Some(e)) => format!("{study_id} {analysis_id}: stopped: {e}"),
            (Some(f), None) => format!(
                "{study_id} {analysis_id}: fitted in {} rounds",
                f.iterations
            ),
            (None, None) => format!("{study_id} {analysis_id}: done"),
        },
    };
    if let Next::Round(steps) = next {
        let steps: Vec<(String, Option<ModelStep>)> =
            steps.into_iter().map(|(n, s)| (n, Some(s))).collect();
        let ttl = round_ttl(&study, &steps);
        let tasks = new_tasks(key, study_id, k, a, state.round, steps, ttl, requester);
        insert_tasks(db, study_id, &tasks, now)?;
    }
    save_fit(db, study_id, analysis_id, &state, now)?;
    audit(db, "hub", "model_round", &detail)
}

/// [`advance_fit`] for a GWAS: the next chunk's round, or the end of the analysis.
#[allow(clippy::too_many_arguments)]
fn advance_gwas(
    db: &mut dyn Db,
    key: &SecretKey,
    study_id: &str,
    study: &Study,
    k: usize,
    g: &medfed_protocol::gwas::Gwas,
    step: &ModelStep,
    inputs: &[(String, SiteInput<'_>)],
    now: i64,
    requester: &str,
) -> Result<(), StoreError> {
    let mut state: GwasState = load_fit(db, study_id, &g.id)?;
    let next = medfed_analysis::gwas::advance(g, &mut state, step, inputs);
    let a = &study.analyses[k];
    let detail = match &next {
        Next::Round(steps) => format!(
            "{study_id} {}: round {} ({}) to {} sites",
            g.id,
            state.round,
            step_name(&steps[0].1),
            steps.len()
        ),
        Next::Done => match &state.error {
            Some(e) => format!("{study_id} {}: stopped: {e}", g.id),
            None => format!("{study_id} {}: {} variants done", g.id, state.panel.len()),
        },
    };
    if let Next::Round(steps) = next {
        let steps: Vec<(String, Option<ModelStep>)> =
            steps.into_iter().map(|(n, s)| (n, Some(s))).collect();
        let ttl = round_ttl(study, &steps);
        let tasks = new_tasks(key, study_id, k, a, state.round, steps, ttl, requester);
        insert_tasks(db, study_id, &tasks, now)?;
    }
    save_fit(db, study_id, &g.id, &state, now)?;
    audit(db, "hub", "gwas_round", &detail)
}

fn step_name(s: &ModelStep) -> String {
    match s {
        ModelStep::GwasPanel => "panel".into(),
        ModelStep::GwasTables { first, count } => {
            format!("tables of variants {first}..{}", first + count)
        }
        ModelStep::GwasFit { first, count, .. } => {
            format!("regression sums of variants {first}..{}", first + count)
        }
        _ => "step".into(),
    }
}

fn site_input(res: &TaskResult) -> SiteInput<'_> {
    match &res.outcome {
        Outcome::Released { statistic } => SiteInput::Released(statistic),
        Outcome::Refused { reason } => SiteInput::Refused(reason),
        Outcome::Secagg { message } => SiteInput::Secagg(message),
    }
}

/// The registry entry of a fitted model: everything needed to apply it anywhere (the covariate spec,
/// the cohorts, the coefficients) and how well it did.
fn register_model(
    db: &mut dyn Db,
    study_id: &str,
    study: &Study,
    r: &medfed_protocol::regression::Regression,
    state: &FitState,
    now: i64,
) -> Result<(), StoreError> {
    let Some(model) = regression::registered(study_id, &study.name, r, state, now) else {
        return Ok(());
    };
    db.execute(
        "INSERT INTO models (id, study_id, analysis_id, name, family, created_at, model) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            model.id.as_str().into(),
            study_id.into(),
            r.id.as_str().into(),
            model.name.as_str().into(),
            serde_json::to_value(r.family).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default().into(),
            now.into(),
            serde_json::to_string(&model).expect("models serialise").into(),
        ],
    )?;
    audit(db, "hub", "model_registered", &model.id)
}

/// Combine every analysis of the study over the sites' results; write the national statistics.
///
/// A study with surveillance analyses is not completed here when `detected` is `None`: running the
/// detectors over years of counts takes minutes at pilot scale, and the store's lock must not be held
/// that long (every request waits on it). The study is marked `detecting` instead; the hub runs the
/// detectors without the lock and completes the study with them ([`Store::finish_detection`]). A hub
/// that stops in between finds the study `detecting` when it starts and runs them again.
fn complete_study(
    db: &mut dyn Db,
    study_id: &str,
    now: i64,
    detected: Option<&Detected>,
) -> Result<(), StoreError> {
    let spec = db.query("SELECT spec FROM studies WHERE id = $1", &[study_id.into()])?;
    let study = parse_stored(&spec[0][0].clone().into_text())?;
    let surveils = study
        .analyses
        .iter()
        .any(|a| matches!(a, AnalysisSpec::Surveillance(_)));
    if surveils && detected.is_none() {
        db.execute(
            "UPDATE studies SET status = 'detecting' WHERE id = $1",
            &[study_id.into()],
        )?;
        return audit(db, "hub", "study_detecting", study_id);
    }
    let rows = db.query(
        "SELECT node, analysis_id, payload FROM results WHERE study_id = $1 ORDER BY node",
        &[study_id.into()],
    )?;
    let mut parsed: Vec<(String, String, TaskResult)> = Vec::with_capacity(rows.len());
    // Analyses run in rounds are combined from their round state, not from the results rows (whose
    // masked vectors may be compacted).
    let in_rounds: Vec<&str> = study
        .analyses
        .iter()
        .filter(|a| {
            matches!(
                a,
                AnalysisSpec::Regression(_) | AnalysisSpec::Surveillance(_) | AnalysisSpec::Gwas(_)
            )
        })
        .map(|a| a.id())
        .collect();
    for r in rows {
        if in_rounds.contains(&r[1].clone().into_text().as_str()) {
            continue;
        }
        let payload = r[2].clone().into_text();
        let res: TaskResult = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Invalid(format!("stored result: {e}")))?;
        parsed.push((r[0].clone().into_text(), r[1].clone().into_text(), res));
    }
    for a in &study.analyses {
        if let AnalysisSpec::Surveillance(sv) = a {
            let found = detected
                .and_then(|d| d.iter().find(|(id, _)| *id == sv.id))
                .and_then(|(_, x)| x.as_ref());
            complete_surveillance(db, study_id, sv, found, now)?;
            continue;
        }
        if let AnalysisSpec::Gwas(g) = a {
            let state: GwasState = load_fit(db, study_id, a.id())?;
            let pooled = medfed_analysis::gwas::pooled_result(g, &state);
            write_pooled(db, study_id, a, &pooled, now)?;
            continue;
        }
        if let AnalysisSpec::Regression(r) = a {
            let state = load_fit(db, study_id, a.id())?;
            register_model(db, study_id, &study, r, &state, now)?;
            let pooled = regression::pooled(r, &state);
            write_pooled(db, study_id, a, &pooled, now)?;
            continue;
        }
        let inputs: Vec<(String, SiteInput<'_>)> = parsed
            .iter()
            .filter(|(_, aid, _)| aid == a.id())
            .map(|(node, _, res)| (node.clone(), site_input(res)))
            .collect();
        let pooled = combine(a, &inputs);
        write_pooled(db, study_id, a, &pooled, now)?;
    }
    db.execute(
        "UPDATE studies SET status = 'complete', completed_at = $1 WHERE id = $2",
        &[now.into(), study_id.into()],
    )?;
    audit(db, "hub", "study_complete", study_id)?;
    Ok(())
}

/// The minimum count the hub publishes a surveillance count at (the nodes' default
/// `min_cell_count`): network totals 1..9 appear in no published table, alert or API answer.
pub const PUBLISH_MIN_COUNT: u64 = 10;

/// Layout of a surveillance stream's stored day vectors; a run whose layout differs from what the
/// stream holds is refused rather than mixed.
fn layout(s: &medfed_protocol::surveil::Surveillance) -> String {
    serde_json::json!({
        "syndromes": s.syndromes.iter().map(|x| (&x.id, &x.concepts, x.descendants)).collect::<Vec<_>>(),
        "groups": s.groups,
        "geography": s.geography,
    })
    .to_string()
}

/// One phase of a surveillance analysis's secure aggregations; a finished chunk's network totals are
/// stored by day in the stream, in the same transaction.
#[allow(clippy::too_many_arguments)]
fn advance_surveillance(
    db: &mut dyn Db,
    key: &SecretKey,
    study_id: &str,
    study: &Study,
    k: usize,
    s: &medfed_protocol::surveil::Surveillance,
    step: &ModelStep,
    inputs: &[(String, SiteInput<'_>)],
    now: i64,
    requester: &str,
) -> Result<(), StoreError> {
    let mut state: SurveilState = load_fit(db, study_id, &s.id)?;
    let (next, totals) = surveillance::advance(s, &mut state, step, inputs);
    if let Some(t) = &totals {
        let lay = layout(s);
        let held = db.query(
            "SELECT layout FROM surveil_days WHERE stream = $1 LIMIT 1",
            &[s.stream().into()],
        )?;
        if let Some(other) = held.first().map(|r| r[0].clone().into_text()) {
            if other != lay {
                state.error = Some(format!(
                    "stream {} holds counts of other syndromes, groups or districts; use a new stream",
                    s.stream()
                ));
            }
        }
        if state.error.is_none() {
            let len = (t.last - t.first + 1) as usize;
            let per_day = t.values.len() / len.max(1);
            let sites = serde_json::to_string(&t.sites).expect("names serialise");
            for d in 0..len {
                // Sparse: [index, count] for the non-zero cells of the day.
                let cells: Vec<(usize, f64)> = (0..per_day)
                    .map(|i| (i, t.values[i * len + d]))
                    .filter(|(_, v)| *v != 0.0)
                    .collect();
                let day = t.first + d as i64;
                db.execute(
                    "DELETE FROM surveil_days WHERE stream = $1 AND day = $2",
                    &[s.stream().into(), day.into()],
                )?;
                db.execute(
                    "INSERT INTO surveil_days (stream, day, layout, counts, sites, study_id, stored_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        s.stream().into(),
                        day.into(),
                        lay.as_str().into(),
                        serde_json::to_string(&cells).expect("numbers serialise").into(),
                        sites.as_str().into(),
                        study_id.into(),
                        now.into(),
                    ],
                )?;
            }
        }
    }
    if totals.is_some() {
        compact_masked(db, study_id, &s.id)?;
    }
    let detail = match (&next, &state.error) {
        (_, Some(e)) => format!("{study_id} {}: stopped: {e}", s.id),
        (surveillance::Next::Round(_), None) => format!(
            "{study_id} {}: chunk {} of {}, round {}",
            s.id,
            state.chunk + 1,
            s.chunks().len(),
            state.round
        ),
        (surveillance::Next::Done, None) => {
            format!("{study_id} {}: {} chunks added", s.id, state.chunks_done)
        }
    };
    if let (surveillance::Next::Round(steps), None) = (next, &state.error) {
        let steps: Vec<(String, Option<ModelStep>)> =
            steps.into_iter().map(|(n, s)| (n, Some(s))).collect();
        let ttl = round_ttl(study, &steps);
        let a = &study.analyses[k];
        let tasks = new_tasks(key, study_id, k, a, state.round, steps, ttl, requester);
        insert_tasks(db, study_id, &tasks, now)?;
    }
    save_fit(db, study_id, &s.id, &state, now)?;
    audit(db, "hub", "surveillance_round", &detail)
}

/// Once a chunk is summed, its masked vectors (uniform noise to the hub, a megabyte or more per site)
/// are replaced in `results` by their SHA-256 and size; the signature stays with the row, the
/// network totals are in `surveil_days`.
fn compact_masked(db: &mut dyn Db, study_id: &str, analysis_id: &str) -> Result<(), StoreError> {
    use sha2::Digest;
    let rows = db.query(
        "SELECT task_id, payload FROM results WHERE study_id = $1 AND analysis_id = $2 AND LENGTH(payload) > 65536",
        &[study_id.into(), analysis_id.into()],
    )?;
    for r in rows {
        let (task, payload) = (r[0].clone().into_text(), r[1].clone().into_text());
        let digest = hex::encode(sha2::Sha256::digest(payload.as_bytes()));
        let note = serde_json::json!({"compacted": {"sha256": digest, "bytes": payload.len()}})
            .to_string();
        db.execute(
            "UPDATE results SET payload = $1 WHERE task_id = $2",
            &[note.into(), task.as_str().into()],
        )?;
    }
    Ok(())
}

/// The stream's network totals from its first stored day to the analysis's last day.
pub(crate) fn load_cube(
    db: &mut dyn Db,
    s: &medfed_protocol::surveil::Surveillance,
) -> Result<Option<surveillance::Cube>, StoreError> {
    let lay = layout(s);
    let rows = db.query(
        "SELECT day, counts FROM surveil_days WHERE stream = $1 AND layout = $2 AND day <= $3 ORDER BY day",
        &[s.stream().into(), lay.as_str().into(), s.last_day().into()],
    )?;
    let Some(first) = rows.first().and_then(|r| r[0].int()) else {
        return Ok(None);
    };
    let days = (s.last_day() - first + 1).max(1) as usize;
    let mut cube = surveillance::Cube::new(s, first, days);
    let per_day = s.vector_len(1);
    let mut seen = vec![false; days];
    for r in rows {
        let day = r[0].int().unwrap_or(first);
        let cells: Vec<(usize, f64)> = serde_json::from_str(&r[1].clone().into_text())
            .map_err(|e| StoreError::Invalid(format!("stored surveillance day: {e}")))?;
        let mut v = vec![0.0; per_day];
        for (i, x) in cells {
            if i < per_day {
                v[i] = x;
            }
        }
        cube.put_chunk(day, 1, &v);
        seen[(day - first) as usize] = true;
    }
    cube.missing_days = (0..days)
        .filter(|&d| !seen[d])
        .map(|d| first + d as i64)
        .collect();
    Ok(Some(cube))
}

/// Run the detectors over the stream and publish the result and its alerts.
fn complete_surveillance(
    db: &mut dyn Db,
    study_id: &str,
    s: &medfed_protocol::surveil::Surveillance,
    detected: Option<&(surveillance::Cube, surveillance::Detection)>,
    now: i64,
) -> Result<(), StoreError> {
    let state: SurveilState = load_fit(db, study_id, &s.id)?;
    let a = AnalysisSpec::Surveillance(s.clone());
    let Some((cube, det)) = detected else {
        let pooled = medfed_analysis::PooledResult {
            id: s.id.clone(),
            kind: "surveillance".into(),
            value: serde_json::Value::Null,
            sites: Vec::new(),
            notes: vec![format!(
                "no counts were added: {}",
                state.error.as_deref().unwrap_or("no chunk completed")
            )],
        };
        return write_pooled(db, study_id, &a, &pooled, now);
    };
    let pooled = surveillance::pooled(s, cube, det, &state, PUBLISH_MIN_COUNT);
    write_pooled(db, study_id, &a, &pooled, now)?;
    for al in pooled.value["alerts"].as_array().into_iter().flatten() {
        let text = |k: &str| al[k].as_str().unwrap_or_default().to_string();
        db.execute(
            "INSERT INTO alerts (study_id, analysis_id, alert_id, stream, grp, syndrome, districts, first_day, last_day, raised_day, raised, severity, level, detectors, observed, computed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                study_id.into(),
                s.id.as_str().into(),
                al["id"].as_i64().unwrap_or(0).into(),
                s.stream().into(),
                text("group").into(),
                text("syndrome").into(),
                al["districts"].to_string().into(),
                text("first_day").into(),
                text("last_day").into(),
                text("raised_day").into(),
                i64::from(al["raised"].as_bool().unwrap_or(false)).into(),
                Val::F(al["severity"].as_f64()),
                text("level").into(),
                al["detectors"].to_string().into(),
                Val::F(al["observed"].as_f64()),
                now.into(),
            ],
        )?;
    }
    audit(
        db,
        "hub",
        "surveillance_alerts",
        &format!(
            "{study_id} {}: {} alerts raised, {} signals",
            s.id, pooled.value["alerts_raised"], pooled.value["signals_not_raised"]
        ),
    )
}
