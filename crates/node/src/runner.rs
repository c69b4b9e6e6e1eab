//! The node's task loop: verify → policy → run → release → audit → sign → post.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use medfed_analysis::regression::Design;
use medfed_protocol::regression::{ModelStep, SecaggMessage};
use medfed_protocol::study::AnalysisSpec;

use medfed_engine::SiteEngine;
use medfed_privacy::{release_private, Decision};
use medfed_protocol::{Outcome, PublicKey, SecretKey, Signed, Task, TaskResult};
use sha2::{Digest, Sha256};

use crate::audit::{AuditError, AuditLog, Event, NewEntry};
use crate::config::{NodeConfig, NodeDir};
use crate::failpoint;
use crate::state::{DpLedger, ProbeLedger, SetHistory, State};
use crate::transport::{Transport, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node configuration: {0}")]
    Config(String),
    #[error("node state: {0}")]
    Io(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("site store: {0}")]
    Site(String),
}

/// What one [`Node::step`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    pub received: usize,
    pub released: usize,
    pub refused: usize,
    pub rejected: usize,
    pub awaiting_approval: usize,
    pub posted: usize,
}

pub struct Node<T: Transport> {
    dir: NodeDir,
    cfg: NodeConfig,
    key: SecretKey,
    hub_key: PublicKey,
    /// The site store's engine; `None` at a vehicle service's node.
    engine: Option<SiteEngine>,
    state: State,
    history: SetHistory,
    ledger: DpLedger,
    /// Rare variants each requester has looked up here (beacon budget). Never sent.
    probes: ProbeLedger,
    audit: AuditLog,
    transport: T,
    /// Tasks answered (released or refused), from the audit log.
    done: HashSet<String>,
    /// SHA-256 of task payloads already rejected and logged, so a redelivered bad task is logged once.
    rejected: HashSet<String>,
    /// Answers appended to the audit log but not yet acknowledged by the hub.
    unposted: Vec<(String, Signed)>,
    /// The design matrix of the regression being fitted (`study/analysis` and rows), kept between its
    /// rounds so that each round costs one pass over the rows, not a new extraction. Never sent.
    designs: Vec<(String, Arc<Design>)>,
    /// A GWAS's samples (genotypes memory-mapped, phenotype classes, regression rows), kept between
    /// its rounds likewise. Never sent.
    gwas: Vec<(String, Arc<medfed_analysis::gwas::SiteSamples>)>,
    /// The secure aggregations in progress, by session (a study's regressions run side by side).
    secagg: Vec<SecaggSession>,
    quiet: bool,
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl<T: Transport> Node<T> {
    /// Open a node folder: configuration, key, site store, state and the audit log (verified).
    pub fn open(dir: NodeDir, transport: T) -> Result<Node<T>, NodeError> {
        let cfg = dir.load_config()?;
        let key = dir.load_key()?;
        let hub_key = PublicKey::from_hex(&cfg.hub_public_key)
            .map_err(|e| NodeError::Config(format!("hub_public_key: {e}")))?;
        dir.load_policy()?;
        let engine = match &cfg.site {
            Some(site) => Some(SiteEngine::open(site).map_err(|e| NodeError::Site(e.to_string()))?),
            None => None,
        };
        let state = State::open(&dir.state())?;
        let history = SetHistory::open(&dir.state())?;
        let ledger = DpLedger::open(&dir.state())?;
        let probes = ProbeLedger::open(&dir.state())?;
        let (audit, entries) = AuditLog::open_with_entries(&dir.audit())?;
        let mut done = HashSet::new();
        let mut rejected = HashSet::new();
        let mut unposted = Vec::new();
        for e in entries {
            match e.event {
                Event::Release | Event::Refusal => {
                    done.insert(e.task_id.clone());
                    if e.sent && !state.posted.contains(&e.task_id) {
                        unposted.push((
                            e.task_id.clone(),
                            Signed {
                                payload: e.payload,
                                signature: e.signature,
                            },
                        ));
                    }
                }
                Event::Rejected => {
                    rejected.insert(sha(&e.payload));
                }
                Event::Profiles => {}
            }
        }
        Ok(Node {
            dir,
            cfg,
            key,
            hub_key,
            engine,
            state,
            history,
            ledger,
            probes,
            audit,
            transport,
            done,
            rejected,
            unposted,
            designs: Vec::new(),
            gwas: Vec::new(),
            secagg: Vec::new(),
            quiet: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    fn say(&self, msg: &str) {
        if !self.quiet {
            println!("[{}] {msg}", self.cfg.name);
        }
    }

    /// One pass: post what is unposted, finish tasks in progress, then wait up to `wait_s` for new tasks
    /// and handle them.
    pub async fn step(&mut self, wait_s: u64) -> Result<StepReport, NodeError> {
        let mut r = StepReport::default();
        self.flush(&mut r).await?;
        for signed in self.state.pending_tasks()? {
            self.handle(signed, &mut r).await?;
        }
        self.flush(&mut r).await?;
        let wait = if r.awaiting_approval > 0 {
            wait_s.min(2)
        } else {
            wait_s
        };
        let tasks = self.transport.poll(wait).await?;
        r.received = tasks.len();
        for signed in tasks {
            self.handle(signed, &mut r).await?;
        }
        self.flush(&mut r).await?;
        Ok(r)
    }

    /// Run until `shutdown` resolves, retrying the hub with exponential backoff and full jitter.
    pub async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let wait = self.cfg.poll_wait_s;
            let res = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.step(wait) => r,
            };
            match res {
                Ok(_) => failures = 0,
                Err(NodeError::Transport(e)) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    self.say(&format!("{e}; retrying in {:.1} s", delay.as_secs_f64()));
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn flush(&mut self, r: &mut StepReport) -> Result<(), NodeError> {
        while let Some((task_id, signed)) = self.unposted.first().cloned() {
            match self.transport.post(&signed).await {
                Ok(ack) => {
                    if !ack.applied {
                        self.say(&format!("hub already had the result of task {task_id}"));
                    }
                    self.state.mark_posted(&task_id)?;
                    r.posted += 1;
                }
                Err(TransportError::Refused { status, message }) => {
                    // The hub will never take it; keep the audit entry, stop retrying.
                    self.say(&format!(
                        "hub refused the result of task {task_id} ({status}: {message}); not retrying"
                    ));
                    self.state.mark_posted(&task_id)?;
                }
                Err(e) => return Err(e.into()),
            }
            self.unposted.remove(0);
        }
        Ok(())
    }

    fn reject(&mut self, signed: &Signed, why: &str, r: &mut StepReport) -> Result<(), NodeError> {
        let h = sha(&signed.payload);
        if self.rejected.contains(&h) {
            return Ok(());
        }
        let peek: serde_json::Value = signed.peek().unwrap_or(serde_json::Value::Null);
        let field = |k: &str| {
            peek.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (task_id, study_id) = (field("task_id"), field("study_id"));
        let analysis_id = peek
            .get("analysis")
            .and_then(|a| a.get("id"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        self.audit.append(NewEntry {
            event: Event::Rejected,
            task_id: &task_id,
            study_id: &study_id,
            analysis_id: &analysis_id,
            sent: false,
            payload: &signed.payload,
            signature: &signed.signature,
            detail: why,
        })?;
        self.rejected.insert(h);
        r.rejected += 1;
        self.say(&format!("rejected task {task_id:?}: {why}"));
        Ok(())
    }

    async fn handle(&mut self, signed: Signed, r: &mut StepReport) -> Result<(), NodeError> {
        // 1. The hub's signature over the exact bytes.
        if !self
            .hub_key
            .verify(signed.payload.as_bytes(), &signed.signature)
        {
            return self.reject(&signed, "signature does not verify with the hub's key", r);
        }
        // 2. A well-formed task, with an analysis this node understands and accepts as valid.
        let task: Task = match serde_json::from_str(&signed.payload) {
            Ok(t) => t,
            Err(e) => {
                let peek: serde_json::Value = signed.peek().unwrap_or_default();
                let s = |k: &str| peek.get(k).and_then(|v| v.as_str()).map(str::to_string);
                return match (s("task_id"), s("study_id"), s("node")) {
                    (Some(task_id), Some(study_id), Some(node)) if node == self.cfg.name => {
                        let analysis_id = peek["analysis"]["id"].as_str().unwrap_or("").to_string();
                        self.answer_refusal(
                            &task_id,
                            &study_id,
                            &analysis_id,
                            &format!("invalid task: {e}"),
                            r,
                        )
                    }
                    _ => self.reject(&signed, &format!("malformed task: {e}"), r),
                };
            }
        };
        // 3. Addressed to this node.
        if task.node != self.cfg.name {
            return self.reject(
                &signed,
                &format!("addressed to node {:?}, not to this node", task.node),
                r,
            );
        }
        // 4. Never seen before (or ours, in progress), never answered and acknowledged.
        let resuming = match self.state.nonces.get(&task.nonce) {
            Some(t) if *t == task.task_id && !self.done.contains(&task.task_id) => true,
            Some(t)
                if *t == task.task_id
                    && self.unposted.iter().any(|(id, _)| *id == task.task_id) =>
            {
                // Redelivered while our answer is still on its way: the answer will be posted.
                return Ok(());
            }
            Some(_) => return self.reject(&signed, "replayed task: nonce already used", r),
            None if self.done.contains(&task.task_id) => {
                return self.reject(&signed, "replayed task: task already answered", r)
            }
            None => false,
        };
        if !resuming {
            self.state.remember_nonce(&task.nonce, &task.task_id)?;
        }
        self.state.save_task(&task.task_id, &signed)?;
        if !resuming {
            failpoint("node:after_accept");
        }
        // 5. Not expired.
        let now = medfed_protocol::now();
        if now > task.expires_at {
            let why = format!("task expired {} s ago", now - task.expires_at);
            return self.answer(&task, Outcome::Refused { reason: why }, r);
        }
        // 6. The site's policy, read afresh for every task.
        let policy = self.dir.load_policy()?;
        let ty = task.analysis.type_name();
        match policy.decision(ty) {
            Decision::Deny => {
                let reason = format!("analysis type {ty} is not allowed by this site's policy");
                return self.answer(&task, Outcome::Refused { reason }, r);
            }
            Decision::Approve => {
                let a = self.dir.approvals();
                if a.join(format!("{}.deny", task.task_id)).exists() {
                    let reason = "declined by the site's data steward".to_string();
                    return self.answer(&task, Outcome::Refused { reason }, r);
                }
                if !a.join(&task.task_id).exists() {
                    if !resuming {
                        self.say(&format!(
                            "task {} ({} {}) waits for approval: medfed node approve --dir {} --task {}",
                            task.task_id,
                            ty,
                            task.analysis.id(),
                            self.dir.0.display(),
                            task.task_id
                        ));
                    }
                    r.awaiting_approval += 1;
                    return Ok(());
                }
            }
            Decision::Allow => {}
        }
        // 7. Run the local step and release through the disclosure check.
        if let Some(step) = task.step.as_ref().filter(|s| s.session().is_some()) {
            let outcome = self.secagg_step(&task, step, &policy).await;
            return self.answer(&task, outcome, r);
        }
        if let AnalysisSpec::Beacon(b) = &task.analysis {
            let outcome = self.beacon_step(&task, b, &policy);
            return self.answer(&task, outcome, r);
        }
        let local = match &task.analysis {
            AnalysisSpec::Regression(_) => self.model_step(&task, &policy).await,
            AnalysisSpec::Gwas(g) => self.gwas_step(&task, g).await,
            AnalysisSpec::VehicleEvents(v) => match &self.cfg.vehicle_events {
                Some(log) => medfed_analysis::local::vehicle_events(log, v),
                None => Err(medfed_analysis::AnalysisError::Data {
                    id: v.id.clone(),
                    message: "this node holds no vehicle events log".into(),
                }),
            },
            other => match self.engine(other.id()) {
                Ok(engine) => medfed_analysis::run_local(engine, other).await,
                Err(e) => Err(e),
            },
        };
        let outcome = match local {
            Ok(stat) => {
                let set = stat.person_set().map(<[i64]>::to_vec);
                match release_private(
                    stat,
                    &policy,
                    &self.history,
                    &self.ledger,
                    &task.study_id,
                    &mut rand::rng(),
                ) {
                    Ok(p) => {
                        let statistic = p.released;
                        if p.epsilon_spent > 0.0 {
                            self.ledger
                                .spend(&task.study_id, &task.task_id, p.epsilon_spent)?;
                        }
                        if let (Some(set), true, None) =
                            (set, statistic.has_value(), statistic.noise())
                        {
                            self.history.record(&task.task_id, &set)?;
                        }
                        Outcome::Released { statistic }
                    }
                    Err(reason) => Outcome::Refused { reason },
                }
            }
            Err(e) => Outcome::Refused {
                reason: format!("analysis failed at the site: {e}"),
            },
        };
        self.answer(&task, outcome, r)
    }

    /// One phase of a secure aggregation of a regression round's sums. The sums are computed and
    /// released (through the policy, as in a plain round) in the key phase and kept here; what leaves
    /// is keys, sealed shares, the released vector masked, and revealed shares.
    async fn secagg_step(
        &mut self,
        task: &Task,
        step: &ModelStep,
        policy: &medfed_privacy::Policy,
    ) -> Outcome {
        let refused = |reason: String| Outcome::Refused { reason };
        let fail = |e: medfed_secagg::SecAggError| Outcome::Refused {
            reason: e.to_string(),
        };
        let session = step.session().unwrap_or_default().to_string();
        if let ModelStep::SecaggKeys {
            id,
            threshold,
            days,
            ..
        } = step
        {
            let stat = match (&task.analysis, days) {
                (AnalysisSpec::Surveillance(s), Some((a, b))) => {
                    match self.surveillance_counts(s, a, b).await {
                        Ok(c) => Ok(c),
                        Err(e) => return refused(format!("analysis failed at the site: {e}")),
                    }
                }
                (AnalysisSpec::Surveillance(_), None) => {
                    return refused("a surveillance task without its days".into())
                }
                _ => self.model_step(task, policy).await,
            };
            let stat = match stat {
                Ok(s) => s,
                Err(e) => return refused(format!("analysis failed at the site: {e}")),
            };
            let released = match release_private(
                stat,
                policy,
                &self.history,
                &self.ledger,
                &task.study_id,
                &mut rand::rng(),
            ) {
                Ok(p) => p.released,
                Err(reason) => return refused(reason),
            };
            if released.maskable().is_none() {
                // Withheld by the policy: the site says so and takes no part in the aggregation.
                return Outcome::Released {
                    statistic: released,
                };
            }
            let Some(seed) = hex32(&session) else {
                return refused("malformed secure-aggregation session".into());
            };
            let (client, advert) = medfed_secagg::Client::new(*id, seed, &mut rand::rng());
            self.secagg.retain(|s| s.session != session);
            if self.secagg.len() >= MAX_SESSIONS {
                self.secagg.remove(0);
            }
            self.secagg.push(SecaggSession {
                session,
                client,
                released,
                threshold: *threshold as usize,
            });
            return Outcome::Secagg {
                message: SecaggMessage::Keys { advert },
            };
        }
        let Some(st) = self.secagg.iter_mut().find(|s| s.session == session) else {
            return refused(
                "no secure-aggregation state for this session (the node restarted mid-round)"
                    .into(),
            );
        };
        match step {
            ModelStep::SecaggShares { adverts, .. } => {
                match st
                    .client
                    .share_keys(adverts, st.threshold, &mut rand::rng())
                {
                    Ok(sealed) => Outcome::Secagg {
                        message: SecaggMessage::Shares { sealed },
                    },
                    Err(e) => fail(e),
                }
            }
            ModelStep::SecaggMasked {
                shares,
                sharers,
                frac_bits,
                integer,
                ..
            } => {
                failpoint("node:secagg_masked");
                if let Err(e) = st.client.receive_shares(shares) {
                    return fail(e);
                }
                let fp = medfed_secagg::FixedPoint {
                    frac_bits: *frac_bits,
                };
                let client = &st.client;
                let masked = st.released.mask(|v| {
                    let enc = if *integer {
                        v.iter()
                            .map(|x| fp.encode(*x))
                            .collect::<Result<Vec<u64>, _>>()?
                    } else {
                        fp.encode_wide(v)?
                    };
                    client.masked_input(&enc, sharers)
                });
                match masked {
                    Some(Ok(masked)) => Outcome::Secagg {
                        message: SecaggMessage::Masked { masked },
                    },
                    Some(Err(e)) => fail(e),
                    None => refused("nothing released to mask".into()),
                }
            }
            ModelStep::SecaggUnmask {
                survivors, dropped, ..
            } => {
                let out = match st.client.unmask(survivors, dropped) {
                    Ok(reveals) => Outcome::Secagg {
                        message: SecaggMessage::Unmask { reveals },
                    },
                    Err(e) => fail(e),
                };
                self.secagg.retain(|s| s.session != session);
                out
            }
            _ => refused("not a secure-aggregation phase".into()),
        }
    }

    /// A round of a regression: the site's design matrix (extracted once per analysis), then the
    /// step the task asks for.
    /// The site store's engine, or why this node cannot run a CDM analysis.
    fn engine(&self, id: &str) -> Result<&SiteEngine, medfed_analysis::AnalysisError> {
        self.engine
            .as_ref()
            .ok_or_else(|| medfed_analysis::AnalysisError::Data {
                id: id.to_string(),
                message: "this node holds no CDM site store (it answers vehicle_events only)"
                    .into(),
            })
    }

    /// A surveillance chunk's counts, as aggregate-only: they leave this node only masked.
    async fn surveillance_counts(
        &mut self,
        s: &medfed_protocol::surveil::Surveillance,
        first: &str,
        last: &str,
    ) -> Result<medfed_privacy::SiteStatistic, String> {
        use medfed_protocol::surveil::parse_day;
        let (Some(a), Some(b)) = (parse_day(first), parse_day(last)) else {
            return Err(format!("bad days {first:?}..{last:?}"));
        };
        if a < s.first_day() || b > s.last_day() {
            return Err(format!(
                "days {first}..{last} are outside the analysis's range"
            ));
        }
        let engine = self.engine(&s.id).map_err(|e| e.to_string())?;
        let c = medfed_analysis::surveil::site_counts(engine, s, a, b)
            .await
            .map_err(|e| e.to_string())?;
        if c.unplaced > 0 {
            self.say(&format!(
                "{}: {} of {} syndromic person-days {first}..{last} have no district in {} and are not counted",
                s.id, c.unplaced, c.cases, s.geography
            ));
        }
        Ok(medfed_privacy::SiteStatistic::aggregate_only(c.values))
    }

    async fn model_step(
        &mut self,
        task: &Task,
        policy: &medfed_privacy::Policy,
    ) -> Result<medfed_privacy::SiteStatistic, medfed_analysis::AnalysisError> {
        let step = task
            .step
            .as_ref()
            .ok_or_else(|| medfed_analysis::AnalysisError::Shape {
                id: task.analysis.id().to_string(),
                message: "a regression task must carry the round's step".into(),
            })?;
        let key = format!("{}/{}", task.study_id, task.analysis.id());
        let design = match self.designs.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                // Most recently used last.
                let d = self.designs.remove(i);
                self.designs.push(d.clone());
                d.1
            }
            None => {
                let d = Arc::new(
                    medfed_analysis::regression::extract(
                        self.engine(task.analysis.id())?,
                        &task.analysis,
                    )
                    .await?,
                );
                if self.designs.len() >= MAX_DESIGNS {
                    self.designs.remove(0);
                }
                self.designs.push((key, d.clone()));
                d
            }
        };
        medfed_analysis::regression::local_step(&design, &task.analysis, step, policy)
    }

    async fn gwas_step(
        &mut self,
        task: &Task,
        g: &medfed_protocol::gwas::Gwas,
    ) -> Result<medfed_privacy::SiteStatistic, medfed_analysis::AnalysisError> {
        let step = task
            .step
            .as_ref()
            .ok_or_else(|| medfed_analysis::AnalysisError::Shape {
                id: g.id.clone(),
                message: "a GWAS task must carry the round's step".into(),
            })?;
        let key = format!("{}/{}", task.study_id, g.id);
        let samples = match self.gwas.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let d = self.gwas.remove(i);
                self.gwas.push(d.clone());
                d.1
            }
            None => {
                let d = Arc::new(medfed_analysis::gwas::samples(self.engine(&g.id)?, g).await?);
                if self.gwas.len() >= MAX_DESIGNS {
                    self.gwas.remove(0);
                }
                self.gwas.push((key, d.clone()));
                d
            }
        };
        medfed_analysis::gwas::local_step(&samples, g, step)
    }

    /// A beacon look-up: count the variants, release under the site's beacon rules and the
    /// requester's probe budget, and record what it charged before the answer can leave.
    fn beacon_step(
        &mut self,
        task: &Task,
        b: &medfed_protocol::beacon::Beacon,
        policy: &medfed_privacy::Policy,
    ) -> Outcome {
        let Some(requester) = task.requester.as_deref() else {
            return Outcome::Refused {
                reason: "a beacon look-up must name its requester: rare-variant probes are budgeted per requester".into(),
            };
        };
        let stat = match self
            .engine(&b.id)
            .and_then(|e| medfed_analysis::beacon::local_step(e, b, requester))
        {
            Ok(s) => s,
            Err(e) => {
                return Outcome::Refused {
                    reason: format!("analysis failed at the site: {e}"),
                }
            }
        };
        let out = medfed_privacy::beacon::release(stat, policy, &self.probes);
        if let Err(e) = self.probes.charge(requester, &out.charged) {
            return Outcome::Refused {
                reason: format!("cannot record the probe budget: {e}"),
            };
        }
        Outcome::Released {
            statistic: out.released,
        }
    }

    fn answer_refusal(
        &mut self,
        task_id: &str,
        study_id: &str,
        analysis_id: &str,
        reason: &str,
        r: &mut StepReport,
    ) -> Result<(), NodeError> {
        if self.done.contains(task_id) {
            return Ok(());
        }
        let result = TaskResult {
            task_id: task_id.to_string(),
            study_id: study_id.to_string(),
            node: self.cfg.name.clone(),
            analysis_id: analysis_id.to_string(),
            at: medfed_protocol::now(),
            outcome: Outcome::Refused {
                reason: reason.to_string(),
            },
        };
        self.record(result, r)
    }

    fn answer(
        &mut self,
        task: &Task,
        outcome: Outcome,
        r: &mut StepReport,
    ) -> Result<(), NodeError> {
        let result = TaskResult {
            task_id: task.task_id.clone(),
            study_id: task.study_id.clone(),
            node: self.cfg.name.clone(),
            analysis_id: task.analysis.id().to_string(),
            at: medfed_protocol::now(),
            outcome,
        };
        self.record(result, r)
    }

    /// Sign, append to the audit log (the commit point), then queue for posting.
    fn record(&mut self, result: TaskResult, r: &mut StepReport) -> Result<(), NodeError> {
        let signed = Signed::seal(&result, &self.key);
        let (event, detail) = match &result.outcome {
            Outcome::Released { statistic } => {
                r.released += 1;
                (Event::Release, statistic.describe())
            }
            Outcome::Refused { reason } => {
                r.refused += 1;
                (Event::Refusal, reason.clone())
            }
            Outcome::Secagg { message } => {
                r.released += 1;
                (Event::Release, secagg_detail(message))
            }
        };
        self.audit.append(NewEntry {
            event,
            task_id: &result.task_id,
            study_id: &result.study_id,
            analysis_id: &result.analysis_id,
            sent: true,
            payload: &signed.payload,
            signature: &signed.signature,
            detail: &detail,
        })?;
        failpoint("node:after_audit");
        self.done.insert(result.task_id.clone());
        self.state.drop_task(&result.task_id)?;
        self.say(&format!(
            "{} {}: {detail}",
            result.task_id, result.analysis_id
        ));
        self.unposted.push((result.task_id, signed));
        Ok(())
    }
}

/// The audit line of a secure-aggregation message: what left, without the bytes.
fn secagg_detail(m: &SecaggMessage) -> String {
    match m {
        SecaggMessage::Keys { advert } => {
            format!(
                "secure aggregation: public keys as participant {}",
                advert.id
            )
        }
        SecaggMessage::Shares { sealed } => format!(
            "secure aggregation: {} key shares, each sealed for its recipient",
            sealed.len()
        ),
        SecaggMessage::Masked { masked } => format!(
            "secure aggregation: the released statistic (model sums or counts), sent only masked ({} ring words)",
            masked.values().len()
        ),
        SecaggMessage::Unmask { reveals } => {
            format!("secure aggregation: {} shares revealed", reveals.len())
        }
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = hex::decode(s).ok()?;
    b.try_into().ok()
}

/// Design matrices kept between rounds (a study's regressions are fitted side by side).
const MAX_DESIGNS: usize = 4;
/// Secure aggregations a node takes part in at once.
const MAX_SESSIONS: usize = 16;

/// A secure aggregation this node takes part in: its keys and its released sums, in memory only.
struct SecaggSession {
    session: String,
    client: medfed_secagg::Client,
    released: medfed_privacy::Released,
    threshold: usize,
}

/// Exponential backoff with full jitter: uniform in [0.1 s, min(30 s, 0.5 s · 2^n)].
pub fn backoff(failures: u32) -> Duration {
    let cap = (0.5 * 2f64.powi(failures.min(10) as i32)).min(30.0);
    let x: f64 = rand::random::<f64>() * cap;
    Duration::from_secs_f64(x.max(0.1))
}
