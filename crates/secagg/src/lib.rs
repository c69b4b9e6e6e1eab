//! Secure aggregation after Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
//! Machine Learning" (CCS 2017): every site sends its vector masked, and the hub learns only the sum
//! over the sites, never one site's vector, even when a site drops out mid-round.
//!
//! Values are fixed-point numbers in the ring Z/2^64 ([`FixedPoint`]); sums are exact there.
//! One round, for sites with distinct ids and a threshold `t` with `2t > n`:
//! 1. each site makes two X25519 key pairs (`c` to encrypt shares, `s` to agree masks) and a random
//!    self-mask seed `b`, and advertises the public keys ([`Client::new`] → [`Advert`]);
//! 2. with everyone's adverts, it splits `s`'s secret key and `b` into `t`-of-`n` Shamir shares and
//!    seals each peer's shares with a key agreed from the `c` keys ([`Client::share_keys`] →
//!    [`Sealed`]); the hub only routes them;
//! 3. it sends `y = x + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)` over the sites that shared
//!    keys ([`Client::masked_input`]); PRG is the ChaCha20 stream of a SHA-256-derived seed;
//! 4. told which sites sent inputs and which dropped, every survivor reveals its shares of the
//!    survivors' `b` and of the dropped sites' `s` keys — never both for one site
//!    ([`Client::unmask`]); the hub reconstructs them and removes the masks ([`unmask_sum`]).
//!
//! Model: honest-but-curious hub, authenticated channels (the network signs every message with the
//! site's identity key); the pairwise masks cancel in the sum, the self masks hide a vector that
//! arrives after its site was declared dropped.

mod shamir;

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use shamir::Share;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecAggError {
    #[error("secure aggregation: {0}")]
    Protocol(String),
    #[error(
        "secure aggregation: value {value} does not fit the fixed-point range (|x| < {limit})"
    )]
    Range { value: f64, limit: f64 },
}

fn err(m: impl Into<String>) -> SecAggError {
    SecAggError::Protocol(m.into())
}

/// Fixed-point encoding of reals in Z/2^64: `x ↦ round(x · 2^frac_bits)` as a two's-complement word.
/// A sum of encoded values decodes exactly to the sum of the rounded values while it stays within
/// ±2^63 / 2^frac_bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    pub frac_bits: u32,
}

impl FixedPoint {
    /// Largest magnitude one value may have: the sum of up to 2^10 of them still fits.
    pub fn limit(self) -> f64 {
        2f64.powi(52 - self.frac_bits as i32)
    }
    pub fn encode(self, x: f64) -> Result<u64, SecAggError> {
        let limit = self.limit();
        if !x.is_finite() || x.abs() >= limit {
            return Err(SecAggError::Range { value: x, limit });
        }
        Ok(((x * 2f64.powi(self.frac_bits as i32)).round() as i64) as u64)
    }
    pub fn decode(self, v: u64) -> f64 {
        (v as i64) as f64 / 2f64.powi(self.frac_bits as i32)
    }

    /// Largest magnitude of a value in the two-word encoding: its high words of up to 2^10 sites
    /// still add up within 63 bits.
    pub fn wide_limit(self) -> f64 {
        2f64.powi(84 - self.frac_bits as i32)
    }

    /// Two ring elements per value, for more precision than one 64-bit word allows: the value times
    /// 2^frac_bits as a 128-bit integer, split into a high word (the signed quotient by 2^32) and a
    /// low word (the remainder, below 2^32). Each word is summed on its own in Z/2^64 under the
    /// masks; [`FixedPoint::decode_wide`] recombines the sums, so carries from the low words are
    /// exact for up to 2^31 sites.
    pub fn encode_wide(self, xs: &[f64]) -> Result<Vec<u64>, SecAggError> {
        let limit = self.wide_limit();
        let scale = 2f64.powi(self.frac_bits as i32);
        let mut out = Vec::with_capacity(2 * xs.len());
        for &x in xs {
            if !x.is_finite() || x.abs() >= limit {
                return Err(SecAggError::Range { value: x, limit });
            }
            let v = (x * scale).round() as i128;
            let hi = v.div_euclid(1 << 32);
            let lo = v.rem_euclid(1 << 32);
            out.push(hi as i64 as u64);
            out.push(lo as u64);
        }
        Ok(out)
    }

    /// The values of a sum of [`FixedPoint::encode_wide`] vectors.
    pub fn decode_wide(self, v: &[u64]) -> Vec<f64> {
        let scale = 2f64.powi(self.frac_bits as i32);
        v.chunks_exact(2)
            .map(|w| {
                let total = (w[0] as i64 as i128) * (1i128 << 32) + w[1] as i128;
                total as f64 / scale
            })
            .collect()
    }
}

/// An X25519 key pair (RFC 7748).
#[derive(Clone)]
struct KeyPair {
    secret: [u8; 32],
    public: [u8; 32],
}

impl KeyPair {
    fn generate(rng: &mut impl CryptoRng) -> KeyPair {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        KeyPair::from_secret(secret)
    }
    fn from_secret(secret: [u8; 32]) -> KeyPair {
        KeyPair {
            secret,
            public: MontgomeryPoint::mul_base_clamped(secret).to_bytes(),
        }
    }
}

/// X25519 agreement; a low-order peer key (all-zero result) is refused.
fn agree(secret: &[u8; 32], public: &[u8; 32]) -> Result<[u8; 32], SecAggError> {
    let shared = MontgomeryPoint(*public).mul_clamped(*secret).to_bytes();
    if shared == [0u8; 32] {
        return Err(err("a peer's public key is of low order"));
    }
    Ok(shared)
}

fn kdf(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// `len` words of the ChaCha20 stream keyed by `seed`.
fn prg(seed: [u8; 32], len: usize) -> impl Iterator<Item = u64> {
    let mut r = ChaCha20Rng::from_seed(seed);
    (0..len).map(move |_| r.next_u64())
}

fn pair_seed(session: &[u8; 32], u: u32, v: u32, shared: &[u8; 32]) -> [u8; 32] {
    let (a, b) = (u.min(v), u.max(v));
    kdf(
        "medfed-secagg/pair",
        &[session, &a.to_le_bytes(), &b.to_le_bytes(), shared],
    )
}

fn self_seed(session: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    kdf("medfed-secagg/self", &[session, b])
}

/// A site's public keys for one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub id: u32,
    pub c_pk: [u8; 32],
    pub s_pk: [u8; 32],
}

/// A site's shares for one peer, encrypted for that peer; the hub routes it unread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub from: u32,
    pub to: u32,
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Secret {
    /// The self-mask seed of a site that sent its input.
    SelfMask,
    /// The mask key of a site that dropped out.
    MaskKey,
}

/// One share revealed in the unmasking step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    pub owner: u32,
    pub secret: Secret,
    pub share: Share,
}

#[derive(Serialize, Deserialize)]
struct SharePair {
    from: u32,
    to: u32,
    s_sk: Share,
    b: Share,
}

/// The checks every party makes on the round's membership.
fn check_members(adverts: &[Advert], threshold: usize) -> Result<Vec<u32>, SecAggError> {
    let ids: Vec<u32> = adverts.iter().map(|a| a.id).collect();
    let set: BTreeSet<u32> = ids.iter().copied().collect();
    if set.len() != ids.len() {
        return Err(err("two adverts carry the same site id"));
    }
    if ids.len() > 255 {
        return Err(err("at most 255 sites per round"));
    }
    if threshold < 1 || 2 * threshold <= ids.len() || threshold > ids.len() {
        return Err(err(format!(
            "threshold {threshold} for {} sites: need n/2 < t <= n",
            ids.len()
        )));
    }
    Ok(set.into_iter().collect())
}

/// A site's state for one round.
pub struct Client {
    id: u32,
    session: [u8; 32],
    c: KeyPair,
    s: KeyPair,
    b: [u8; 32],
    threshold: usize,
    adverts: Vec<Advert>,
    /// Shares received, by the site they belong to.
    held: BTreeMap<u32, (Share, Share)>,
}

impl Client {
    /// Start a round (`session` names it, e.g. a hash of study, analysis and round number).
    pub fn new(id: u32, session: [u8; 32], rng: &mut impl CryptoRng) -> (Client, Advert) {
        let (c, s) = (KeyPair::generate(rng), KeyPair::generate(rng));
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let advert = Advert {
            id,
            c_pk: c.public,
            s_pk: s.public,
        };
        (
            Client {
                id,
                session,
                c,
                s,
                b,
                threshold: 0,
                adverts: Vec::new(),
                held: BTreeMap::new(),
            },
            advert,
        )
    }

    fn seal_key(&self, peer: &Advert) -> Result<[u8; 32], SecAggError> {
        let shared = agree(&self.c.secret, &peer.c_pk)?;
        let (a, b) = (self.id.min(peer.id), self.id.max(peer.id));
        Ok(kdf(
            "medfed-secagg/seal",
            &[&self.session, &a.to_le_bytes(), &b.to_le_bytes(), &shared],
        ))
    }

    fn nonce(from: u32, to: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&from.to_le_bytes());
        n[4..8].copy_from_slice(&to.to_le_bytes());
        n
    }

    /// Shares of this site's mask key and self-mask seed, one sealed message per other site.
    pub fn share_keys(
        &mut self,
        adverts: &[Advert],
        threshold: usize,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Sealed>, SecAggError> {
        let ids = check_members(adverts, threshold)?;
        let me = adverts
            .iter()
            .find(|a| a.id == self.id)
            .ok_or_else(|| err("this site is not among the round's adverts"))?;
        if me.c_pk != self.c.public || me.s_pk != self.s.public {
            return Err(err("the hub relayed a different advert for this site"));
        }
        self.threshold = threshold;
        self.adverts = adverts.to_vec();
        self.adverts.sort_by_key(|a| a.id);
        let n = ids.len();
        let s_shares = shamir::split(&self.s.secret, threshold, n, rng);
        let b_shares = shamir::split(&self.b, threshold, n, rng);
        let mut out = Vec::new();
        for (i, peer) in self.adverts.iter().enumerate() {
            let pair = SharePair {
                from: self.id,
                to: peer.id,
                s_sk: s_shares[i].clone(),
                b: b_shares[i].clone(),
            };
            if peer.id == self.id {
                self.held.insert(self.id, (pair.s_sk, pair.b));
                continue;
            }
            let plain = serde_json::to_vec(&pair).map_err(|e| err(e.to_string()))?;
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.seal_key(peer)?));
            let ciphertext = cipher
                .encrypt(
                    Nonce::from_slice(&Self::nonce(self.id, peer.id)),
                    plain.as_slice(),
                )
                .map_err(|_| err("sealing a share failed"))?;
            out.push(Sealed {
                from: self.id,
                to: peer.id,
                ciphertext,
            });
        }
        Ok(out)
    }

    /// Open the shares other sites sealed for this one.
    pub fn receive_shares(&mut self, sealed: &[Sealed]) -> Result<(), SecAggError> {
        for m in sealed.iter().filter(|m| m.to == self.id) {
            let peer = self
                .adverts
                .iter()
                .find(|a| a.id == m.from)
                .ok_or_else(|| err(format!("shares from site {}, which has no advert", m.from)))?;
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.seal_key(peer)?));
            let plain = cipher
                .decrypt(
                    Nonce::from_slice(&Self::nonce(m.from, m.to)),
                    m.ciphertext.as_slice(),
                )
                .map_err(|_| err(format!("shares from site {} do not authenticate", m.from)))?;
            let pair: SharePair = serde_json::from_slice(&plain).map_err(|e| err(e.to_string()))?;
            if pair.from != m.from || pair.to != self.id {
                return Err(err(format!(
                    "shares from site {} are addressed wrongly",
                    m.from
                )));
            }
            self.held.insert(m.from, (pair.s_sk, pair.b));
        }
        Ok(())
    }

    /// This site's masked vector. `sharers` are the sites whose shares reached everyone (the hub's
    /// list after the sharing step); masks are agreed with each of them.
    pub fn masked_input(&self, x: &[u64], sharers: &[u32]) -> Result<Vec<u64>, SecAggError> {
        if !sharers.contains(&self.id) {
            return Err(err("this site is not among the sharers"));
        }
        if sharers.len() < self.threshold {
            return Err(err(format!(
                "{} sites shared keys, fewer than the threshold {}",
                sharers.len(),
                self.threshold
            )));
        }
        let mut y: Vec<u64> = x.to_vec();
        for (yi, m) in y
            .iter_mut()
            .zip(prg(self_seed(&self.session, &self.b), x.len()))
        {
            *yi = yi.wrapping_add(m);
        }
        for &v in sharers.iter().filter(|&&v| v != self.id) {
            let peer = self
                .adverts
                .iter()
                .find(|a| a.id == v)
                .ok_or_else(|| err(format!("sharer {v} has no advert")))?;
            let seed = pair_seed(
                &self.session,
                self.id,
                v,
                &agree(&self.s.secret, &peer.s_pk)?,
            );
            let add = self.id < v;
            for (yi, m) in y.iter_mut().zip(prg(seed, x.len())) {
                *yi = if add {
                    yi.wrapping_add(m)
                } else {
                    yi.wrapping_sub(m)
                };
            }
        }
        Ok(y)
    }

    /// Reveal, for each survivor, this site's share of its self-mask seed and, for each dropped
    /// site, this site's share of its mask key. Refused when the lists overlap (both secrets of
    /// one site would unmask its vector), when this site is listed as dropped, or when fewer than
    /// the threshold survived.
    pub fn unmask(&self, survivors: &[u32], dropped: &[u32]) -> Result<Vec<Reveal>, SecAggError> {
        let s: BTreeSet<u32> = survivors.iter().copied().collect();
        let d: BTreeSet<u32> = dropped.iter().copied().collect();
        if s.intersection(&d).next().is_some() {
            return Err(err("a site is listed both as survivor and as dropped"));
        }
        if d.contains(&self.id) || !s.contains(&self.id) {
            return Err(err("this site sent its input and is not dropped"));
        }
        if s.len() < self.threshold {
            return Err(err(format!(
                "{} survivors, fewer than the threshold {}",
                s.len(),
                self.threshold
            )));
        }
        let mut out = Vec::new();
        let wanted = s
            .iter()
            .map(|o| (*o, Secret::SelfMask))
            .chain(d.iter().map(|o| (*o, Secret::MaskKey)));
        for (owner, secret) in wanted {
            let (s_sk, b) = self
                .held
                .get(&owner)
                .ok_or_else(|| err(format!("no share held for site {owner}")))?;
            out.push(Reveal {
                owner,
                secret,
                share: match secret {
                    Secret::SelfMask => b.clone(),
                    Secret::MaskKey => s_sk.clone(),
                },
            });
        }
        Ok(out)
    }
}

/// The hub's last step: the exact sum of the survivors' vectors (in the ring), from their masked
/// vectors and the revealed shares. `adverts` and `sharers` are the round's lists; `masked` holds the
/// vectors that arrived (their senders are the survivors; the other sharers dropped).
pub fn unmask_sum(
    session: [u8; 32],
    adverts: &[Advert],
    threshold: usize,
    sharers: &[u32],
    masked: &BTreeMap<u32, Vec<u64>>,
    reveals: &[Reveal],
) -> Result<Vec<u64>, SecAggError> {
    check_members(adverts, threshold)?;
    let len = masked
        .values()
        .next()
        .map(Vec::len)
        .ok_or_else(|| err("no masked input arrived"))?;
    if masked.values().any(|v| v.len() != len) {
        return Err(err("masked inputs differ in length"));
    }
    if masked.len() < threshold {
        return Err(err(format!(
            "{} inputs arrived, fewer than the threshold {threshold}",
            masked.len()
        )));
    }
    let advert = |id: u32| {
        adverts
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| err(format!("site {id} has no advert")))
    };
    let secret = |owner: u32, kind: Secret| -> Result<[u8; 32], SecAggError> {
        let shares: Vec<Share> = reveals
            .iter()
            .filter(|r| r.owner == owner && r.secret == kind)
            .map(|r| r.share.clone())
            .collect();
        if shares.len() < threshold {
            return Err(err(format!(
                "{} shares of site {owner}'s {kind:?}, fewer than the threshold {threshold}",
                shares.len()
            )));
        }
        let v = shamir::combine(&shares[..threshold]).map_err(err)?;
        v.try_into()
            .map_err(|_| err("a reconstructed secret has the wrong length"))
    };
    let mut sum = vec![0u64; len];
    for y in masked.values() {
        for (s, v) in sum.iter_mut().zip(y) {
            *s = s.wrapping_add(*v);
        }
    }
    for &u in masked.keys() {
        if !sharers.contains(&u) {
            return Err(err(format!("site {u} sent an input without sharing keys")));
        }
        let b = secret(u, Secret::SelfMask)?;
        for (s, m) in sum.iter_mut().zip(prg(self_seed(&session, &b), len)) {
            *s = s.wrapping_sub(m);
        }
    }
    for &v in sharers.iter().filter(|v| !masked.contains_key(v)) {
        let s_sk = secret(v, Secret::MaskKey)?;
        let kp = KeyPair::from_secret(s_sk);
        if kp.public != advert(v)?.s_pk {
            return Err(err(format!(
                "site {v}'s mask key does not match its advert"
            )));
        }
        for &u in masked.keys() {
            let seed = pair_seed(&session, u, v, &agree(&kp.secret, &advert(u)?.s_pk)?);
            // Survivor u added PRG(s_uv) when u < v and subtracted it otherwise: undo that.
            let u_added = u < v;
            for (s, m) in sum.iter_mut().zip(prg(seed, len)) {
                *s = if u_added {
                    s.wrapping_sub(m)
                } else {
                    s.wrapping_add(m)
                };
            }
        }
    }
    Ok(sum)
}
