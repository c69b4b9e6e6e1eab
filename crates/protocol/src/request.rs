//! Signatures on node → hub HTTP requests.
//!
//! Every request a node makes carries three headers: the node's name, the time, and an Ed25519
//! signature over method, path with query, name, time and the SHA-256 of the body. The hub looks the
//! name up among registered nodes and refuses the request before touching its body when the key,
//! signature or time (more than [`MAX_SKEW_S`] away) does not match.

use sha2::{Digest, Sha256};

use crate::{PublicKey, SecretKey};

pub const HEADER_NODE: &str = "medfed-node";
pub const HEADER_TIME: &str = "medfed-time";
pub const HEADER_SIGNATURE: &str = "medfed-signature";

/// Largest accepted difference between the node's clock and the hub's, in seconds.
pub const MAX_SKEW_S: i64 = 300;

fn message(method: &str, path_and_query: &str, node: &str, time: i64, body: &[u8]) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(body));
    format!("{method}\n{path_and_query}\n{node}\n{time}\n{digest}").into_bytes()
}

/// Header values `(node, time, signature)` for a request.
pub fn sign(
    key: &SecretKey,
    node: &str,
    method: &str,
    path_and_query: &str,
    time: i64,
    body: &[u8],
) -> (String, String, String) {
    let sig = key.sign(&message(method, path_and_query, node, time, body));
    (node.to_string(), time.to_string(), sig)
}

/// Why a request signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing or malformed header {0}")]
    Header(&'static str),
    #[error("clock skew of {0} s exceeds {MAX_SKEW_S} s")]
    Skew(i64),
    #[error("signature does not verify")]
    Signature,
}

#[allow(clippy::too_many_arguments)]
pub fn verify(
    key: &PublicKey,
    node: &str,
    time: &str,
    signature: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: i64,
) -> Result<(), RequestAuthError> {
    let t: i64 = time
        .parse()
        .map_err(|_| RequestAuthError::Header(HEADER_TIME))?;
    if (now - t).abs() > MAX_SKEW_S {
        return Err(RequestAuthError::Skew(now - t));
    }
    if key.verify(&message(method, path_and_query, node, t, body), signature) {
        Ok(())
    } else {
        Err(RequestAuthError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_signature_binds_everything() {
        let k = SecretKey::generate();
        let (n, t, s) = sign(&k, "a", "POST", "/v1/results", 1000, b"body");
        let pk = k.public();
        assert_eq!(
            verify(&pk, &n, &t, &s, "POST", "/v1/results", b"body", 1000),
            Ok(())
        );
        assert_eq!(
            verify(&pk, &n, &t, &s, "POST", "/v1/results", b"bodx", 1000),
            Err(RequestAuthError::Signature)
        );
        assert_eq!(
            verify(&pk, "b", &t, &s, "POST", "/v1/results", b"body", 1000),
            Err(RequestAuthError::Signature)
        );
        assert_eq!(
            verify(&pk, &n, &t, &s, "GET", "/v1/results", b"body", 1000),
            Err(RequestAuthError::Signature)
        );
        assert!(matches!(
            verify(&pk, &n, &t, &s, "POST", "/v1/results", b"body", 2000),
            Err(RequestAuthError::Skew(_))
        ));
    }
}
