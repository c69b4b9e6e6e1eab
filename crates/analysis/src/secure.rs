//! The hub's side of one secure aggregation (Bonawitz et al. 2017) over the network, shared by the
//! analyses whose site statistics are added under it: a regression round's sums and a surveillance
//! chunk's counts. Four phases of signed tasks (keys → sealed shares → masked vectors → reveals);
//! sites that do not answer a phase in time have dropped out and the sum is unmasked without them.

use medfed_protocol::regression::{ModelStep, SecaggMessage};
use std::collections::BTreeMap;

/// The hub's state of one aggregation (JSON in the hub's store between phases).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecaggState {
    pub session: String,
    /// What the key phase asked the sites to compute: a regression's coefficients…
    pub coefficients: Vec<f64>,
    /// …or a surveillance chunk's days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<(String, String)>,
    /// Participant id of each site.
    pub ids: BTreeMap<String, u32>,
    pub threshold: u32,
    pub adverts: Vec<medfed_secagg::Advert>,
    pub sharers: Vec<u32>,
    pub masked: BTreeMap<u32, Vec<u64>>,
}

/// How values are put in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Real sums, two words per value (`FixedPoint::encode_wide`).
    Wide { frac_bits: u32 },
    /// Integer counts, one word per value.
    Integer,
}

/// What the hub does after a phase.
pub enum Phase {
    /// Send these steps (the next phase).
    Next(Vec<(String, ModelStep)>),
    /// The aggregation is complete: the decoded network sum and the sites in it.
    Sum {
        total: Vec<f64>,
        survivors: Vec<String>,
    },
    Failed(String),
}

/// Start an aggregation among `nodes`: their key-phase steps.
pub fn start(
    nodes: &[String],
    coefficients: Vec<f64>,
    days: Option<(String, String)>,
) -> (SecaggState, Vec<(String, ModelStep)>) {
    let session = {
        let b: [u8; 32] = rand::random();
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let ids: BTreeMap<String, u32> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32 + 1))
        .collect();
    // 2t > n: any t sites can unmask, and no minority of the sites with the hub can.
    let threshold = nodes.len() as u32 / 2 + 1;
    let steps = nodes
        .iter()
        .map(|n| {
            (
                n.clone(),
                ModelStep::SecaggKeys {
                    coefficients: coefficients.clone(),
                    session: session.clone(),
                    id: ids[n],
                    threshold,
                    days: days.clone(),
                },
            )
        })
        .collect();
    let sa = SecaggState {
        session,
        coefficients,
        days,
        ids,
        threshold,
        ..SecaggState::default()
    };
    (sa, steps)
}

/// Why a site's answer is not a secure-aggregation message.
fn message<'a>(input: &'a crate::SiteInput<'_>) -> Result<&'a SecaggMessage, String> {
    match input {
        crate::SiteInput::Secagg(m) => Ok(m),
        crate::SiteInput::Refused(reason) => Err(format!("refused: {reason}")),
        crate::SiteInput::Released(r) => Err(match r.suppression() {
            Some(rule) => format!("withheld its statistic: {}", crate::pooled::describe(rule)),
            None => "answered a secure-aggregation phase with a plain statistic".into(),
        }),
    }
}

/// Collect one phase's answers: sites that did not answer in time or sent something else go to
/// `excluded`; returns the next phase's steps, or the unmasked sum after the last phase.
pub fn phase(
    sa: &mut SecaggState,
    step: &ModelStep,
    inputs: &[(String, crate::SiteInput<'_>)],
    excluded: &mut Vec<(String, String)>,
    enc: Encoding,
    min_sites: usize,
) -> Phase {
    let (frac_bits, integer) = match enc {
        Encoding::Wide { frac_bits } => (frac_bits, false),
        Encoding::Integer => (0, true),
    };
    let t = sa.threshold as usize;
    let node_of = |id: u32| {
        sa.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
    };
    // Sites the phase went to that did not answer in time have dropped out.
    let expected: Vec<u32> = match step {
        ModelStep::SecaggKeys { .. } => sa.ids.values().copied().collect(),
        ModelStep::SecaggShares { .. } => sa.adverts.iter().map(|a| a.id).collect(),
        ModelStep::SecaggMasked { .. } => sa.sharers.clone(),
        _ => sa.masked.keys().copied().collect(),
    };
    for id in expected {
        if let Some(n) = node_of(id).filter(|n| !inputs.iter().any(|(s, _)| s == n)) {
            excluded.push((n, "did not answer in time (dropped out)".to_string()));
        }
    }
    let next: Vec<(String, ModelStep)> = match step {
        ModelStep::SecaggKeys { .. } => {
            for (site, input) in inputs {
                match message(input) {
                    Ok(SecaggMessage::Keys { advert }) if sa.ids.get(site) == Some(&advert.id) => {
                        sa.adverts.push(advert.clone())
                    }
                    Ok(_) => excluded.push((site.clone(), "sent the wrong phase's message".into())),
                    Err(why) => excluded.push((site.clone(), why)),
                }
            }
            let to: Vec<u32> = sa.adverts.iter().map(|a| a.id).collect();
            to.iter()
                .filter_map(|id| node_of(*id))
                .map(|n| {
                    (
                        n,
                        ModelStep::SecaggShares {
                            session: sa.session.clone(),
                            adverts: sa.adverts.clone(),
                        },
                    )
                })
                .collect()
        }
        ModelStep::SecaggShares { .. } => {
            let mut sealed = Vec::new();
            for (site, input) in inputs {
                match message(input) {
                    Ok(SecaggMessage::Shares { sealed: s }) => {
                        if let Some(&id) = sa.ids.get(site) {
                            sa.sharers.push(id);
                            sealed.extend(s.iter().filter(|x| x.from == id).cloned());
                        }
                    }
                    Ok(_) => excluded.push((site.clone(), "sent the wrong phase's message".into())),
                    Err(why) => excluded.push((site.clone(), why)),
                }
            }
            sa.sharers.sort_unstable();
            sa.sharers
                .iter()
                .filter_map(|id| node_of(*id).map(|n| (n, *id)))
                .map(|(n, id)| {
                    (
                        n,
                        ModelStep::SecaggMasked {
                            session: sa.session.clone(),
                            shares: sealed.iter().filter(|x| x.to == id).cloned().collect(),
                            sharers: sa.sharers.clone(),
                            frac_bits,
                            integer,
                        },
                    )
                })
                .collect()
        }
        ModelStep::SecaggMasked { .. } => {
            for (site, input) in inputs {
                match message(input) {
                    Ok(SecaggMessage::Masked { masked }) => {
                        if let Some(&id) = sa.ids.get(site) {
                            sa.masked.insert(id, masked.values().to_vec());
                        }
                    }
                    Ok(_) => excluded.push((site.clone(), "sent the wrong phase's message".into())),
                    Err(why) => excluded.push((site.clone(), why)),
                }
            }
            let survivors: Vec<u32> = sa.masked.keys().copied().collect();
            if survivors.len() < min_sites {
                // The unmasked sum would be fewer sites' vectors than the analysis allows (one
                // site's sum is that site's statistic): stop before asking for any reveal.
                return Phase::Failed(format!(
                    "{} masked vectors arrived; the sum needs at least {min_sites}",
                    survivors.len()
                ));
            }
            let dropped: Vec<u32> = sa
                .sharers
                .iter()
                .copied()
                .filter(|id| !sa.masked.contains_key(id))
                .collect();
            survivors
                .iter()
                .filter_map(|id| node_of(*id))
                .map(|n| {
                    (
                        n,
                        ModelStep::SecaggUnmask {
                            session: sa.session.clone(),
                            survivors: survivors.clone(),
                            dropped: dropped.clone(),
                        },
                    )
                })
                .collect()
        }
        _ => {
            let mut reveals = Vec::new();
            for (site, input) in inputs {
                match message(input) {
                    Ok(SecaggMessage::Unmask { reveals: rv }) => reveals.extend(rv.iter().cloned()),
                    Ok(_) => excluded.push((site.clone(), "sent the wrong phase's message".into())),
                    Err(why) => excluded.push((site.clone(), why)),
                }
            }
            let survivors: Vec<String> = sa.masked.keys().filter_map(|id| node_of(*id)).collect();
            let Some(session) = hex32(&sa.session) else {
                return Phase::Failed("malformed session".into());
            };
            let total = medfed_secagg::unmask_sum(
                session,
                &sa.adverts,
                t,
                &sa.sharers,
                &sa.masked,
                &reveals,
            );
            let fp = medfed_secagg::FixedPoint { frac_bits };
            return match total {
                Ok(v) => Phase::Sum {
                    total: if integer {
                        v.iter().map(|w| fp.decode(*w)).collect()
                    } else {
                        fp.decode_wide(&v)
                    },
                    survivors,
                },
                Err(e) => Phase::Failed(e.to_string()),
            };
        }
    };
    if next.len() < t {
        return Phase::Failed(format!(
            "secure aggregation needs {t} sites to go on; {} remain",
            next.len()
        ));
    }
    Phase::Next(next)
}

pub(crate) fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
