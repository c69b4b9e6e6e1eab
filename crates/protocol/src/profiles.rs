//! Consented health profiles: what a hospital's node tells a service (the in-car emergency service,
//! the smart-city warnings) about the persons who consented to it. Only categories and an age band
//! travel, keyed by the subject the person gave the service (a VIN, a citizen's app id), never a
//! person id, a date or a record. The node signs the batch with its key; a service accepts it only
//! under the node's public key, and only with the categories it may receive.

use serde::{Deserialize, Serialize};

use crate::{PublicKey, Signed};

pub const FORMAT: &str = "medfed-profiles/1";

/// The categories the smart-city service may receive.
pub const CITY_CATEGORIES: &[&str] = &[
    "respiratory",
    "cardiovascular",
    "diabetes",
    "elderly",
    "pregnancy",
    "young_child",
];

/// Each service and the categories it may receive.
pub const SERVICES: &[(&str, &[&str])] = &[
    (
        "vehicles",
        &["atrial_fibrillation", "pacemaker", "chronic_lung_disease"],
    ),
    ("city", CITY_CATEGORIES),
];

/// Age bands a profile may carry.
pub const AGE_GROUPS: [&str; 5] = ["0-19", "20-39", "40-64", "65-79", "80+"];

/// The age band of an age in years.
pub fn age_group(age: i64) -> &'static str {
    match age {
        ..=19 => "0-19",
        20..=39 => "20-39",
        40..=64 => "40-64",
        65..=79 => "65-79",
        _ => "80+",
    }
}

/// The categories `service` may receive, or `None` for an unknown service.
pub fn categories_of(service: &str) -> Option<&'static [&'static str]> {
    SERVICES.iter().find(|s| s.0 == service).map(|s| s.1)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the person gave the service to know them by (a VIN, an app id).
    pub subject: String,
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_group: Option<String>,
}

/// One node's profiles for one service: every person with a standing consent, and the subjects
/// whose consent was withdrawn (the service deletes them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBatch {
    pub format: String,
    pub node: String,
    pub service: String,
    /// Unix seconds.
    pub issued_at: i64,
    pub profiles: Vec<Profile>,
    pub withdrawn: Vec<String>,
}

/// A subject: 1..=64 characters of letters, digits, `-`, `_`, `.`.
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ProfileBatch {
    /// Refuse anything a service must not receive: an unknown format or service, a category the
    /// service may not have, a malformed subject or age band, a subject both given and withdrawn.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format: {:?} is not {FORMAT}", self.format));
        }
        let allowed = categories_of(&self.service)
            .ok_or_else(|| format!("service: unknown service {:?}", self.service))?;
        for (i, p) in self.profiles.iter().enumerate() {
            let at = |m: String| format!("profiles[{i}]: {m}");
            if !valid_subject(&p.subject) {
                return Err(at(format!("subject: {:?} is not a subject id", p.subject)));
            }
            if let Some(c) = p.categories.iter().find(|c| !allowed.contains(&c.as_str())) {
                return Err(at(format!(
                    "categories: {c:?} may not go to the {} service",
                    self.service
                )));
            }
            if let Some(a) = p.age_group.as_deref().filter(|a| !AGE_GROUPS.contains(a)) {
                return Err(at(format!("age_group: {a:?} is not one of {AGE_GROUPS:?}")));
            }
            if self.withdrawn.contains(&p.subject) {
                return Err(at("subject: both given and withdrawn".into()));
            }
        }
        if let Some(w) = self.withdrawn.iter().find(|w| !valid_subject(w)) {
            return Err(format!("withdrawn: {w:?} is not a subject id"));
        }
        Ok(())
    }

    /// Verify a signed batch under the node's key and check it.
    pub fn open(signed: &Signed, node_key: &PublicKey) -> Result<ProfileBatch, String> {
        let b: ProfileBatch = signed.open(node_key).map_err(|e| match e {
            crate::ProtocolError::BadSignature => {
                "signature: not signed by the node's key".to_string()
            }
            other => other.to_string(),
        })?;
        b.check()?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn batch() -> ProfileBatch {
        ProfileBatch {
            format: FORMAT.into(),
            node: "hospital_a".into(),
            service: "vehicles".into(),
            issued_at: 1,
            profiles: vec![Profile {
                subject: "KMHSM007000000001".into(),
                categories: vec!["atrial_fibrillation".into()],
                age_group: Some("65-79".into()),
            }],
            withdrawn: vec!["KMHSM007000000002".into()],
        }
    }

    #[test]
    fn only_a_signed_batch_of_allowed_categories_opens() {
        let key = SecretKey::generate();
        let b = batch();
        let signed = Signed::seal(&b, &key);
        assert_eq!(ProfileBatch::open(&signed, &key.public()).unwrap(), b);
        let other = SecretKey::generate();
        assert!(ProfileBatch::open(&signed, &other.public())
            .unwrap_err()
            .contains("signature"));
        let mut city = b.clone();
        city.service = "city".into();
        let e = ProfileBatch::open(&Signed::seal(&city, &key), &key.public()).unwrap_err();
        assert!(e.contains("profiles[0]: categories"), "{e}");
        let mut extra = serde_json::to_value(&b).unwrap();
        extra["profiles"][0]["person_id"] = 7.into();
        let e = ProfileBatch::open(&Signed::seal(&extra, &key), &key.public()).unwrap_err();
        assert!(e.contains("person_id"), "a record field is refused: {e}");
        let mut bad = b.clone();
        bad.profiles[0].subject = "a b".into();
        assert!(bad.check().unwrap_err().contains("subject"));
        assert_eq!(age_group(64), "40-64");
        assert_eq!(age_group(65), "65-79");
    }
}
