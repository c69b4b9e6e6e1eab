//! The protocol between hub, nodes and researchers: what travels, and how it is signed.
//!
//! - [`study`]: the public study format (`medfed-study/1`) and its validation, run by the hub at submit
//!   time and again by every node on every task.
//! - [`keys`] and [`Signed`]: Ed25519 keys and signed envelopes. An envelope carries the exact JSON text
//!   that was signed, so verification never depends on re-serialising.
//! - [`Task`] (hub → node) and [`TaskResult`] (node → hub).
//! - [`request`]: the signature a node puts on every HTTP request, so the hub can refuse unregistered
//!   nodes before reading a body.
//!
//! Architecture invariant: no I/O here, no HTTP, no storage. Both services and `study run` share it.

pub mod beacon;
pub mod catalog;
pub mod gwas;
pub mod keys;
pub mod profiles;
pub mod regression;
pub mod request;
pub mod study;
pub mod surveil;
pub mod vehicles;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use keys::{KeyError, PublicKey, SecretKey};
pub use medfed_privacy::Released;
pub use study::{AnalysisSpec, Study, StudyError};

/// Version of the wire protocol, also the prefix of every API path.
pub const API_VERSION: &str = "v1";

/// A payload and the signature over its exact bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The JSON text that was signed.
    pub payload: String,
    /// Hex Ed25519 signature over the UTF-8 bytes of `payload`.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad signature")]
    BadSignature,
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl Signed {
    pub fn seal<T: Serialize>(value: &T, key: &SecretKey) -> Signed {
        let payload = serde_json::to_string(value).expect("protocol types always serialise");
        let signature = key.sign(payload.as_bytes());
        Signed { payload, signature }
    }

    /// Verify the signature with `key`, then parse the payload.
    pub fn open<T: DeserializeOwned>(&self, key: &PublicKey) -> Result<T, ProtocolError> {
        if !key.verify(self.payload.as_bytes(), &self.signature) {
            return Err(ProtocolError::BadSignature);
        }
        serde_json::from_str(&self.payload).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Parse without verifying: only for showing what a refused envelope claimed to be.
    pub fn peek<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&self.payload).ok()
    }
}

/// A unit of work for one node: one analysis of one study, in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub task_id: String,
    pub study_id: String,
    /// The node this task is for; a node refuses tasks addressed to anyone else.
    pub node: String,
    pub round: u32,
    pub analysis: AnalysisSpec,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; a node refuses the task after this.
    pub expires_at: i64,
    /// 128 random bits; a node refuses a nonce it has already seen.
    pub nonce: String,
    /// For analyses fitted in rounds (`regression`): what this round asks of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<regression::ModelStep>,
    /// Who asked, as the hub authenticated them (a researcher's name): nodes keep per-requester
    /// budgets by it (beacon probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
}

/// What a node sends back for a task: a released statistic or a refusal. Signed by the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub task_id: String,
    pub study_id: String,
    pub node: String,
    pub analysis_id: String,
    /// Unix seconds.
    pub at: i64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The statistic passed the node's disclosure check (possibly with parts suppressed).
    Released { statistic: Released },
    /// The node would not run the task; `reason` says why (policy, expiry, invalid analysis, error).
    Refused { reason: String },
    /// A secure-aggregation phase message (keys, sealed shares, masked sums, revealed shares).
    Secagg { message: regression::SecaggMessage },
}

/// 128 random bits as hex, for nonces and ids.
pub fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    hex::encode(b)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_detects_tampering_and_wrong_key() {
        let k = SecretKey::generate();
        let other = SecretKey::generate();
        let s = Signed::seal(&serde_json::json!({"a": 1}), &k);
        assert!(s.open::<serde_json::Value>(&k.public()).is_ok());
        assert!(matches!(
            s.open::<serde_json::Value>(&other.public()),
            Err(ProtocolError::BadSignature)
        ));
        let mut t = s.clone();
        t.payload = t.payload.replace('1', "2");
        assert!(t.open::<serde_json::Value>(&k.public()).is_err());
        let mut t = s;
        t.signature = "zz".into();
        assert!(t.open::<serde_json::Value>(&k.public()).is_err());
    }
}
