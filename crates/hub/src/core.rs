//! The hub's behaviour, independent of HTTP: submit a study, hand out tasks, apply results.
//! The HTTP server ([`crate::server`]) and the in-process transport of `medfed study run` both call this.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use medfed_protocol::{request, AnalysisSpec, PublicKey, SecretKey, Signed, TaskResult};

use medfed_analysis::regression::{self, FitState, RegisteredModel};
use medfed_protocol::regression::ModelStep;

use crate::store::{Applied, AuditRow, NodeRow, Store, StoreError, StudyRow, TaskRow};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => HubError::NotFound(m),
            StoreError::Conflict(m) => HubError::Conflict(m),
            StoreError::Invalid(m) => HubError::BadRequest(m),
            StoreError::Db(d) => HubError::Internal(d.to_string()),
        }
    }
}

/// Acknowledgement of a submitted study.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Submitted {
    pub study_id: String,
    pub tasks: usize,
    pub nodes: Vec<String>,
}

/// Status of one study: its row and every task with its outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StudyStatus {
    #[serde(flatten)]
    pub study: StudyRow,
    pub tasks: Vec<TaskRow>,
}

pub struct Hub {
    name: String,
    key: SecretKey,
    store: Mutex<Store>,
    wake: tokio::sync::Notify,
    /// How long a delivered task stays leased to its node before it is delivered again.
    lease_s: i64,
    /// Studies whose surveillance detectors are running now (outside the store's lock).
    detecting: Mutex<std::collections::HashSet<String>>,
}

impl Hub {
    /// A hub named `name`, signing with `key`; a delivered task stays leased for `lease_s` seconds.
    pub fn new(name: &str, key: SecretKey, store: Store, lease_s: i64) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            name: name.to_string(),
            key,
            store: Mutex::new(store),
            wake: tokio::sync::Notify::new(),
            lease_s: lease_s.max(1),
            detecting: Mutex::new(Default::default()),
        });
        // A hub that stopped while detectors ran finds those studies `detecting`: run them again.
        hub.start_detections();
        hub
    }

    /// Run the surveillance detectors of every `detecting` study on a thread of its own: the store's
    /// lock is held only to read the counts and to write the results, never while the detectors run
    /// (minutes at pilot scale), so nodes and researchers are answered meanwhile.
    fn start_detections(self: &Arc<Self>) {
        let ids = match self.store().studies_detecting() {
            Ok(ids) => ids,
            Err(e) => {
                eprintln!("medfed hub: cannot list studies awaiting detection: {e}");
                return;
            }
        };
        for id in ids {
            let fresh = self
                .detecting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone());
            if !fresh {
                continue;
            }
            let hub = Arc::clone(self);
            let name = format!("detect-{id}");
            let study = id.clone();
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let id = study;
                if let Err(e) = hub.detect_study(&id) {
                    // The study stays `detecting`; the next start of the hub tries again.
                    eprintln!("medfed hub: surveillance detection for study {id} failed: {e}");
                    let _ = hub
                        .store()
                        .audit("hub", "detection_failed", &format!("{id}: {e}"));
                }
                hub.detecting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                hub.wake.notify_waiters();
            });
            if let Err(e) = spawned {
                eprintln!("medfed hub: cannot start detection for study {id}: {e}");
                self.detecting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
        }
    }

    fn detect_study(&self, id: &str) -> Result<(), HubError> {
        let inputs = self.store().detection_inputs(id)?;
        let detected: crate::store::Detected = inputs
            .into_iter()
            .map(|(s, cube)| {
                let det = cube.map(|c| {
                    let d = medfed_analysis::surveil::detect(&s, &c, &|_| {});
                    (c, d)
                });
                (s.id, det)
            })
            .collect();
        self.store().finish_detection(id, &detected)?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    pub fn backend(&self) -> &'static str {
        self.store().backend()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the database half-written (transactions), so
        // the store stays usable.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a hospital's node (it serves analyses of its CDM store).
    pub fn add_node(&self, name: &str, key_hex: &str, replace: bool) -> Result<(), HubError> {
        self.add_node_serving(name, key_hex, replace, "cdm")
    }

    /// Register a node that serves `serves` (one of `medfed_protocol::study::SOURCES`).
    pub fn add_node_serving(
        &self,
        name: &str,
        key_hex: &str,
        replace: bool,
        serves: &str,
    ) -> Result<(), HubError> {
        use medfed_protocol::study::SOURCES;
        medfed_protocol::study::check_id(name, "node name")
            .map_err(|e| HubError::BadRequest(e.to_string()))?;
        PublicKey::from_hex(key_hex).map_err(|e| HubError::BadRequest(e.to_string()))?;
        if !SOURCES.contains(&serves) {
            return Err(HubError::BadRequest(format!(
                "a node serves one of {}, not {serves:?}",
                SOURCES.join(", ")
            )));
        }
        Ok(self
            .store()
            .add_node(name, key_hex.trim(), replace, serves)?)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRow>, HubError> {
        Ok(self.store().nodes()?)
    }

    /// Check a node's request signature. Unregistered nodes and bad signatures are refused and written
    /// to the audit trail.
    #[allow(clippy::too_many_arguments)]
    pub fn authenticate(
        &self,
        node: &str,
        time: &str,
        signature: &str,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), HubError> {
        let now = medfed_protocol::now();
        let mut store = self.store();
        let shown: String = node.chars().take(64).collect();
        let Some(key) = store.node_key(node)? else {
            store.audit(
                &shown,
                "refused_unregistered",
                &format!("{method} {path_and_query}"),
            )?;
            return Err(HubError::Unauthorized(format!(
                "node {shown:?} is not registered at this hub"
            )));
        };
        let key = PublicKey::from_hex(&key).map_err(|e| HubError::Internal(e.to_string()))?;
        if let Err(e) = request::verify(
            &key,
            node,
            time,
            signature,
            method,
            path_and_query,
            body,
            now,
        ) {
            store.audit(
                &shown,
                "refused_signature",
                &format!("{method} {path_and_query}: {e}"),
            )?;
            return Err(HubError::Unauthorized(format!("request not accepted: {e}")));
        }
        store.touch_node(node, now)?;
        Ok(())
    }

    /// [`Hub::submit_as`] the default researcher (`researcher.token`).
    pub fn submit(&self, text: &str) -> Result<Submitted, HubError> {
        self.submit_as(crate::setup::DEFAULT_RESEARCHER, text)
    }

    /// Validate a study and create one signed task per analysis per registered node. Every task
    /// carries `requester`, as the hub authenticated them, for the nodes' per-requester budgets.
    pub fn submit_as(&self, requester: &str, text: &str) -> Result<Submitted, HubError> {
        let study = medfed_protocol::study::parse_study(text)
            .map_err(|e| HubError::BadRequest(format!("study refused: {e}")))?;
        let registered = self.nodes()?;
        if registered.is_empty() {
            return Err(HubError::Conflict(
                "no nodes are registered; add one with `medfed hub add-node`".into(),
            ));
        }
        // Each analysis goes to the nodes that hold its kind of data.
        let serving = |source: &str| -> Result<Vec<String>, HubError> {
            let n: Vec<String> = registered
                .iter()
                .filter(|n| n.serves == source)
                .map(|n| n.name.clone())
                .collect();
            if n.is_empty() {
                return Err(HubError::Conflict(format!(
                    "no registered node serves {source}; add one with `medfed hub add-node --serves {source}`"
                )));
            }
            Ok(n)
        };
        let mut asked = std::collections::BTreeSet::new();
        let study_id = format!("s{}", &medfed_protocol::random_id()[..12]);
        let mut tasks = Vec::new();
        // Task ids start with the analysis's position, so that nodes receive (and answer) a study's
        // analyses in the order the study lists them: the differencing check depends on order.
        let mut fits = Vec::new();
        for (k, a) in study.analyses.iter().enumerate() {
            let nodes = serving(a.source())?;
            asked.extend(nodes.iter().cloned());
            let steps: Vec<(String, Option<ModelStep>)> = match a {
                AnalysisSpec::Regression(r) => {
                    let mut state = FitState {
                        round: 1,
                        secure: study.privacy.secure_aggregation,
                        ..FitState::default()
                    };
                    let steps = regression::first_round(r, &mut state, &nodes);
                    fits.push((
                        a.id().to_string(),
                        serde_json::to_value(&state).expect("states serialise"),
                    ));
                    steps.into_iter().map(|(n, s)| (n, Some(s))).collect()
                }
                AnalysisSpec::Surveillance(s) => {
                    if nodes.len() < 2 {
                        return Err(HubError::Conflict(
                            "a surveillance analysis needs at least two nodes: the hub may only see counts added over sites".into(),
                        ));
                    }
                    let mut state = medfed_analysis::surveil::SurveilState::default();
                    let steps = medfed_analysis::surveil::first_round(s, &mut state, &nodes);
                    fits.push((
                        a.id().to_string(),
                        serde_json::to_value(&state).expect("states serialise"),
                    ));
                    steps.into_iter().map(|(n, s)| (n, Some(s))).collect()
                }
                AnalysisSpec::Gwas(_) => {
                    let mut state = medfed_analysis::gwas::GwasState::default();
                    let steps = medfed_analysis::gwas::first_round(&mut state, &nodes);
                    fits.push((
                        a.id().to_string(),
                        serde_json::to_value(&state).expect("states serialise"),
                    ));
                    steps.into_iter().map(|(n, s)| (n, Some(s))).collect()
                }
                _ => nodes.iter().map(|n| (n.clone(), None)).collect(),
            };
            let ttl = crate::store::round_ttl(&study, &steps);
            tasks.extend(crate::store::new_tasks(
                &self.key, &study_id, k, a, 1, steps, ttl, requester,
            ));
        }
        self.store()
            .insert_study(&study_id, requester, &study, &tasks, &fits)?;
        self.wake.notify_waiters();
        Ok(Submitted {
            study_id,
            tasks: tasks.len(),
            nodes: asked.into_iter().collect(),
        })
    }

    /// Tasks for `node`, waiting up to `wait` for one to appear.
    pub async fn poll(
        self: &Arc<Self>,
        node: &str,
        wait: Duration,
    ) -> Result<Vec<Signed>, HubError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let hub = self.clone();
            let n = node.to_string();
            let leased = tokio::task::spawn_blocking(move || {
                let now = medfed_protocol::now();
                let mut store = hub.store();
                // Secure-aggregation phases wait for every site only until their time is up.
                let finished = store.expire_overdue(now, &hub.key)?;
                let leased = store.lease_tasks(&n, now, hub.lease_s);
                drop(store);
                // An expiry can end a surveillance study as well as a result can.
                if finished {
                    hub.start_detections();
                }
                leased
            })
            .await
            .map_err(|e| HubError::Internal(e.to_string()))??;
            if !leased.is_empty() {
                return Ok(leased
                    .into_iter()
                    .map(|(_, payload, signature)| Signed { payload, signature })
                    .collect());
            }
            // Wake on new tasks (a study, or a round put out by a result), or re-check once a second
            // for expired leases.
            let step = (deadline - tokio::time::Instant::now()).min(Duration::from_secs(1));
            if step.is_zero() {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(step, notified).await;
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Forget the leases of `node`'s open tasks (the node restarted and will ask again).
    pub fn release_leases(&self, node: &str) -> Result<(), HubError> {
        Ok(self.store().release_leases(node)?)
    }

    /// Verify a node's signed result and apply it exactly once.
    pub fn post_result(self: &Arc<Self>, node: &str, signed: &Signed) -> Result<Applied, HubError> {
        let mut store = self.store();
        let key = store
            .node_key(node)?
            .ok_or_else(|| HubError::Unauthorized(format!("node {node:?} is not registered")))?;
        let key = PublicKey::from_hex(&key).map_err(|e| HubError::Internal(e.to_string()))?;
        let result: TaskResult = match signed.open(&key) {
            Ok(r) => r,
            Err(e) => {
                store.audit(node, "refused_result", &e.to_string())?;
                return Err(HubError::Unauthorized(format!("result refused: {e}")));
            }
        };
        if result.node != node {
            store.audit(node, "refused_result", "result names another node")?;
            return Err(HubError::Unauthorized("result names another node".into()));
        }
        let applied = store.apply_result(&result, &signed.payload, &signed.signature, &self.key)?;
        drop(store);
        failpoint_hub("hub:after_apply");
        // The result may have finished a study that needs its surveillance detectors run.
        if applied.study_complete {
            self.start_detections();
        }
        // A result can complete a round and put out the next round's tasks (regression, secure
        // aggregation phases): wake the nodes' long polls instead of letting them find the tasks on
        // their next once-a-second check.
        self.wake.notify_waiters();
        Ok(applied)
    }

    pub fn studies(&self) -> Result<Vec<StudyRow>, HubError> {
        Ok(self.store().studies()?)
    }

    pub fn status(&self, id: &str) -> Result<StudyStatus, HubError> {
        let (study, tasks) = self.store().study(id)?;
        Ok(StudyStatus { study, tasks })
    }

    /// `results.json` of a study (pooled results once complete; empty list before).
    pub fn results(&self, id: &str) -> Result<serde_json::Value, HubError> {
        let mut s = self.store();
        let (study, _) = s.study(id)?;
        let results = s.results(id)?;
        Ok(serde_json::json!({
            "study": { "id": study.id, "name": study.name, "status": study.status },
            "results": results,
        }))
    }

    /// A surveillance stream's network totals (in-process use only; never served).
    pub fn surveillance_cube(
        &self,
        s: &medfed_protocol::surveil::Surveillance,
    ) -> Result<Option<medfed_analysis::surveil::Cube>, HubError> {
        Ok(self.store().surveillance_cube(s)?)
    }

    /// The alerts table of the national statistics DB.
    pub fn alerts(&self) -> Result<Vec<serde_json::Value>, HubError> {
        Ok(self.store().alerts()?)
    }

    pub fn models(&self) -> Result<Vec<crate::store::ModelRow>, HubError> {
        Ok(self.store().models()?)
    }

    /// A registered model as exported: `medfed-model/1` JSON with its covariate spec.
    pub fn model(&self, id: &str) -> Result<RegisteredModel, HubError> {
        let text = self.store().model(id)?;
        RegisteredModel::parse(&text)
            .map_err(|e| HubError::Internal(format!("stored model {id}: {e}")))
    }

    /// Apply a registered model to persons described by their covariate values (`{"persons":
    /// [{"age": 61, "male": 1, …}, …]}`), returning one prediction each. Nothing is stored.
    pub fn score(&self, id: &str, body: &serde_json::Value) -> Result<serde_json::Value, HubError> {
        const MAX_PERSONS: usize = 10_000;
        let model = self.model(id)?;
        let persons = body
            .get("persons")
            .and_then(|p| p.as_array())
            .ok_or_else(|| {
                HubError::BadRequest("$.persons: a list of covariate objects is needed".into())
            })?;
        if persons.len() > MAX_PERSONS {
            return Err(HubError::BadRequest(format!(
                "$.persons: at most {MAX_PERSONS} at a time"
            )));
        }
        let mut out = Vec::with_capacity(persons.len());
        for (i, p) in persons.iter().enumerate() {
            let obj = p.as_object().ok_or_else(|| {
                HubError::BadRequest(format!("$.persons[{i}]: an object is needed"))
            })?;
            let row = model
                .row(obj)
                .map_err(|e| HubError::BadRequest(format!("$.persons[{i}].{e}")))?;
            out.push(serde_json::json!({
                "linear_predictor": model.linear_predictor(&row),
                "prediction": model.predict(&row),
            }));
        }
        Ok(serde_json::json!({
            "model": model.id,
            "family": model.spec.family,
            "predicts": predicts(&model),
            "results": out,
        }))
    }

    pub fn audit_trail(&self, limit: i64) -> Result<Vec<AuditRow>, HubError> {
        Ok(self.store().audit_trail(limit)?)
    }
}

/// What a model's prediction means, in words.
pub fn predicts(m: &RegisteredModel) -> &'static str {
    use medfed_protocol::regression::Family;
    match m.spec.family {
        Family::Binomial => "risk of the outcome during the time at risk",
        Family::Poisson => "outcomes per person-year",
        Family::Gaussian => "expected value of the outcome",
        Family::Cox => "hazard ratio against a person with every covariate 0",
    }
}

fn failpoint_hub(name: &str) {
    if std::env::var("MEDFED_FAILPOINT").is_ok_and(|v| v.split(',').any(|p| p == name)) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
