//! Ed25519 keys as hex text: the node's and the hub's identities.

use std::path::Path;

use ed25519_dalek::Signer;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not a 32-byte hex Ed25519 key")]
    Format { what: String },
}

/// A signing key. Stored as 64 hex characters in a file readable by its owner only.
pub struct SecretKey(ed25519_dalek::SigningKey);

/// A verifying key, shown and exchanged as 64 hex characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl SecretKey {
    pub fn generate() -> SecretKey {
        let seed: [u8; 32] = rand::random();
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A copy of the key (keys are deliberately not `Clone`, so that copies are visible in code).
    pub fn clone_key(&self) -> SecretKey {
        SecretKey(self.0.clone())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Hex signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.0.sign(msg).to_bytes())
    }

    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let bytes = decode32(text.trim()).ok_or_else(|| KeyError::Format {
            what: path.display().to_string(),
        })?;
        Ok(SecretKey(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// Write the key with mode 0600, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(err)?;
            f.write_all(hex::encode(self.0.to_bytes()).as_bytes())
                .map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }
}

impl PublicKey {
    pub fn from_hex(s: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::Format {
            what: format!("{s:?}"),
        };
        let bytes = decode32(s.trim()).ok_or_else(bad)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Strict verification of a hex signature; any malformed input is simply "not valid".
    pub fn verify(&self, msg: &[u8], signature_hex: &str) -> bool {
        let Ok(bytes) = hex::decode(signature_hex) else {
            return false;
        };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&arr);
        self.0.verify_strict(msg, &sig).is_ok()
    }
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}
