//! Consent to share a health profile with a service, and the signed profile batches built from it.
//!
//! ```text
//! D/consents.jsonl     append-only: grants (person, service, subject) and withdrawals, fsynced
//! D/categories.toml    optional: the data steward's concept sets per category (overrides defaults)
//! ```
//!
//! A batch carries, for each standing consent to a service, only the categories that service may
//! receive and an age band, under the subject the person gave the service; and the subjects whose
//! consent was withdrawn, so the service deletes them. It is signed with the node's key and written
//! to the audit log before it is handed out, as everything else that leaves the hospital.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use medfed_analysis::profile::{self, Definition};
use medfed_protocol::profiles::{self as wire, Profile, ProfileBatch};
use medfed_protocol::Signed;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, Event, NewEntry};
use crate::config::{io, write_atomic, NodeDir};
use crate::NodeError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConsentLine {
    Grant {
        consent_id: String,
        person_id: i64,
        service: String,
        subject: String,
        /// Unix seconds.
        at: i64,
    },
    Withdraw {
        consent_id: String,
        at: i64,
    },
}

/// A consent that stands: not withdrawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub consent_id: String,
    pub person_id: i64,
    pub service: String,
    pub subject: String,
    pub at: i64,
}

pub struct Consents {
    path: PathBuf,
}

impl Consents {
    pub fn new(dir: &NodeDir) -> Consents {
        Consents {
            path: dir.0.join("consents.jsonl"),
        }
    }

    /// Every line, in order; a line that does not parse names the file and line.
    pub fn lines(&self) -> Result<Vec<ConsentLine>, NodeError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    NodeError::Config(format!("{} line {}: {e}", self.path.display(), i + 1))
                })
            })
            .collect()
    }

    /// Standing consents to `service` (all services when `None`), and the subjects of `service`
    /// whose consent was withdrawn and not given again.
    pub fn standing(
        &self,
        service: Option<&str>,
    ) -> Result<(Vec<Consent>, Vec<String>), NodeError> {
        let mut grants: BTreeMap<String, Consent> = BTreeMap::new();
        let mut withdrawn: BTreeMap<String, Consent> = BTreeMap::new();
        for l in self.lines()? {
            match l {
                ConsentLine::Grant {
                    consent_id,
                    person_id,
                    service,
                    subject,
                    at,
                } => {
                    grants.insert(
                        consent_id.clone(),
                        Consent {
                            consent_id,
                            person_id,
                            service,
                            subject,
                            at,
                        },
                    );
                }
                ConsentLine::Withdraw { consent_id, .. } => {
                    if let Some(c) = grants.remove(&consent_id) {
                        withdrawn.insert(consent_id, c);
                    }
                }
            }
        }
        let of = |c: &Consent| service.is_none_or(|s| c.service == s);
        let standing: Vec<Consent> = grants.into_values().filter(of).collect();
        let mut gone: Vec<String> = withdrawn
            .into_values()
            .filter(of)
            .filter(|w| !standing.iter().any(|s| s.subject == w.subject))
            .map(|w| w.subject)
            .collect();
        gone.sort();
        gone.dedup();
        Ok((standing, gone))
    }

    fn append(&self, line: &ConsentLine) -> Result<(), NodeError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        let mut text = serde_json::to_string(line).expect("consent lines serialise");
        text.push('\n');
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io(&self.path, e))
    }

    /// Record a person's consent to share their profile with `service` under `subject`.
    pub fn grant(&self, person_id: i64, service: &str, subject: &str) -> Result<String, NodeError> {
        if wire::categories_of(service).is_none() {
            return Err(NodeError::Config(format!(
                "unknown service {service:?}; known: {}",
                wire::SERVICES
                    .iter()
                    .map(|s| s.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !wire::valid_subject(subject) {
            return Err(NodeError::Config(format!(
                "{subject:?} is not a subject id (1..64 letters, digits, '-', '_', '.')"
            )));
        }
        let (standing, _) = self.standing(Some(service))?;
        if let Some(c) = standing.iter().find(|c| c.subject == subject) {
            return Err(NodeError::Config(format!(
                "subject {subject} already has consent {} to {service}; withdraw it first",
                c.consent_id
            )));
        }
        let consent_id = format!("c{}", &medfed_protocol::random_id()[..12]);
        self.append(&ConsentLine::Grant {
            consent_id: consent_id.clone(),
            person_id,
            service: service.into(),
            subject: subject.into(),
            at: medfed_protocol::now(),
        })?;
        Ok(consent_id)
    }

    /// Withdraw a standing consent.
    pub fn withdraw(&self, consent_id: &str) -> Result<Consent, NodeError> {
        let (standing, _) = self.standing(None)?;
        let c = standing
            .into_iter()
            .find(|c| c.consent_id == consent_id)
            .ok_or_else(|| NodeError::Config(format!("no standing consent {consent_id:?}")))?;
        self.append(&ConsentLine::Withdraw {
            consent_id: consent_id.into(),
            at: medfed_protocol::now(),
        })?;
        Ok(c)
    }
}

/// The category definitions: the defaults, with the steward's concept sets from `categories.toml`
/// (`[categories] pacemaker = [4051938]`) in place of theirs.
pub fn definitions(dir: &NodeDir) -> Result<Vec<Definition>, NodeError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        categories: BTreeMap<String, Vec<i64>>,
    }
    let mut defs = profile::default_definitions();
    let p = dir.0.join("categories.toml");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(defs),
        Err(e) => return Err(io(&p, e)),
    };
    let f: File =
        toml::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", p.display())))?;
    for (name, concepts) in f.categories {
        let d = defs
            .iter_mut()
            .find(|d| d.category == name && d.age.is_none())
            .ok_or_else(|| {
                NodeError::Config(format!(
                    "{}: {name:?} is not a category defined by conditions",
                    p.display()
                ))
            })?;
        d.conditions = concepts;
    }
    Ok(defs)
}

/// Build, sign and audit `service`'s profile batch from the node's store and standing consents.
pub async fn profile_batch(
    dir: &NodeDir,
    service: &str,
) -> Result<(Signed, ProfileBatch), NodeError> {
    let allowed = wire::categories_of(service)
        .ok_or_else(|| NodeError::Config(format!("unknown service {service:?}")))?;
    let cfg = dir.load_config()?;
    let site = cfg.site.as_ref().ok_or_else(|| {
        NodeError::Config("this node holds no CDM store to derive profiles from".into())
    })?;
    let engine =
        medfed_engine::SiteEngine::open(site).map_err(|e| NodeError::Site(e.to_string()))?;
    let (standing, withdrawn) = Consents::new(dir).standing(Some(service))?;
    let persons: Vec<i64> = standing.iter().map(|c| c.person_id).collect();
    let year = 1970 + medfed_protocol::now() / 31_556_952;
    let derived = profile::derive(&engine, &persons, &definitions(dir)?, year)
        .await
        .map_err(|e| NodeError::Site(e.to_string()))?;
    let profiles = standing
        .iter()
        .map(|c| {
            let d = derived.get(&c.person_id).cloned().unwrap_or_default();
            Profile {
                subject: c.subject.clone(),
                categories: d
                    .categories
                    .into_iter()
                    .filter(|x| allowed.contains(&x.as_str()))
                    .collect(),
                age_group: d.age.map(|a| wire::age_group(a).to_string()),
            }
        })
        .collect();
    let batch = ProfileBatch {
        format: wire::FORMAT.into(),
        node: cfg.name.clone(),
        service: service.into(),
        issued_at: medfed_protocol::now(),
        profiles,
        withdrawn,
    };
    batch.check().map_err(NodeError::Config)?;
    let signed = Signed::seal(&batch, &dir.load_key()?);
    let mut audit = AuditLog::open(&dir.audit()).map_err(|e| NodeError::Io(e.to_string()))?;
    let id = format!("profiles-{service}-{}", batch.issued_at);
    audit
        .append(NewEntry {
            event: Event::Profiles,
            task_id: &id,
            study_id: service,
            analysis_id: "profiles",
            sent: true,
            payload: &signed.payload,
            signature: &signed.signature,
            detail: &format!(
                "{} consented profiles (categories and age band only), {} withdrawn",
                batch.profiles.len(),
                batch.withdrawn.len()
            ),
        })
        .map_err(|e| NodeError::Io(e.to_string()))?;
    Ok((signed, batch))
}

/// Write a signed batch for the service: whole or not at all (fsynced, then renamed into place).
pub fn write_batch(path: &std::path::Path, signed: &Signed) -> Result<(), NodeError> {
    let text = serde_json::to_vec_pretty(signed).expect("signed envelopes serialise");
    write_atomic(path, &text)
}
