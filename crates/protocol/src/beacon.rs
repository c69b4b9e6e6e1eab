//! The `beacon` analysis: GA4GH Beacon v2-style look-ups of variants in the sites' genotypes.
//!
//! A request names up to [`MAX_VARIANTS`] variants, each by its position and alleles
//! (`chrom`, 1-based `pos`, `ref`, `alt`) or by its identifier in the sites' panels (`id`), and the
//! granularity wanted. Each site answers at the lesser of that and its own policy, under its
//! small-cell rule and the requester's rare-variant budget (`medfed_privacy::beacon`). The hub puts
//! the requester's name in every task it signs, so a node can keep the budget per person.

use serde::{Deserialize, Serialize};

pub use medfed_privacy::beacon::Granularity;

use crate::study::{check_id, check_text, StudyError};

/// Most variants one look-up may name.
pub const MAX_VARIANTS: usize = 100;
/// Longest allele accepted (bases).
pub const MAX_ALLELE: usize = 1000;

fn err(path: impl Into<String>, message: impl Into<String>) -> StudyError {
    StudyError {
        path: path.into(),
        message: message.into(),
    }
}

/// One variant to look up: by position and alleles, or by identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Chromosome as PLINK or VCF writes it (`1`, `chr1`, `X`, `MT`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chrom: Option<String>,
    /// 1-based position (Beacon v2's `start` is 0-based: `pos = start + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<u64>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

impl VariantQuery {
    /// How the variant is shown and charged: `chrom:pos:ref:alt` (chromosome normalised), or the id.
    pub fn key(&self) -> String {
        match (&self.chrom, self.pos, &self.reference, &self.alt) {
            (Some(c), Some(p), Some(r), Some(a)) => {
                format!(
                    "{}:{p}:{}:{}",
                    normal_chrom(c),
                    r.to_ascii_uppercase(),
                    a.to_ascii_uppercase()
                )
            }
            _ => self.id.clone().unwrap_or_default(),
        }
    }

    fn check(&self, path: &str) -> Result<(), StudyError> {
        let by_position = self.chrom.is_some() || self.pos.is_some();
        match (&self.id, by_position) {
            (Some(_), true) => {
                return Err(err(
                    path,
                    "name a variant by id or by chrom/pos/ref/alt, not both",
                ))
            }
            (Some(id), false) => {
                let ok = !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
                if !ok {
                    return Err(err(
                        format!("{path}.id"),
                        "must be 1-64 letters, digits, _ . : or -",
                    ));
                }
                if self.reference.is_some() || self.alt.is_some() {
                    return Err(err(path, "ref and alt go with chrom and pos, not with id"));
                }
            }
            (None, false) => {
                return Err(err(
                    path,
                    "name a variant by id or by chrom, pos, ref and alt",
                ))
            }
            (None, true) => {
                let chrom = self
                    .chrom
                    .as_deref()
                    .ok_or_else(|| err(format!("{path}.chrom"), "missing"))?;
                let c = normal_chrom(chrom);
                if c.is_empty()
                    || c.len() > 16
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(err(format!("{path}.chrom"), "not a chromosome name"));
                }
                match self.pos {
                    Some(p) if (1..(1 << 40)).contains(&p) => {}
                    Some(_) => return Err(err(format!("{path}.pos"), "must be 1 or more")),
                    None => return Err(err(format!("{path}.pos"), "missing")),
                }
                for (name, a) in [("ref", &self.reference), ("alt", &self.alt)] {
                    let a = a
                        .as_deref()
                        .ok_or_else(|| err(format!("{path}.{name}"), "missing"))?;
                    let ok = !a.is_empty()
                        && a.len() <= MAX_ALLELE
                        && a.bytes().all(|b| b"ACGTNacgtn".contains(&b));
                    if !ok {
                        return Err(err(
                            format!("{path}.{name}"),
                            format!("must be 1-{MAX_ALLELE} bases (A, C, G, T, N)"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// PLINK's chromosome codes: `chr` dropped, X → 23, Y → 24, XY → 25, M/MT → 26.
pub fn normal_chrom(c: &str) -> String {
    let c = c
        .strip_prefix("chr")
        .or_else(|| c.strip_prefix("CHR"))
        .or_else(|| c.strip_prefix("Chr"))
        .unwrap_or(c);
    match c.to_ascii_uppercase().as_str() {
        "X" => "23".into(),
        "Y" => "24".into(),
        "XY" => "25".into(),
        "M" | "MT" => "26".into(),
        _ => c.trim_start_matches('0').to_string(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    pub id: String,
    pub variants: Vec<VariantQuery>,
    /// What the requester wants to know; each site answers at most at its own policy's level.
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Beacon {
    pub(crate) fn check(&self, path: &str) -> Result<(), StudyError> {
        if self.variants.is_empty() || self.variants.len() > MAX_VARIANTS {
            return Err(err(
                format!("{path}.variants"),
                format!("name 1 to {MAX_VARIANTS} variants"),
            ));
        }
        for (i, v) in self.variants.iter().enumerate() {
            v.check(&format!("{path}.variants[{i}]"))?;
        }
        if let Some(l) = &self.label {
            check_text(l, &format!("{path}.label"))?;
        }
        check_id(&self.id, &format!("{path}.id"))
    }
}

#[cfg(test)]
mod tests {
    use crate::study::parse_analysis;
    use crate::AnalysisSpec;

    #[test]
    fn parses_and_refuses_with_the_path() {
        let ok = serde_json::json!({"type": "beacon", "id": "b", "granularity": "count",
            "variants": [{"chrom": "chrX", "pos": 5, "ref": "a", "alt": "G"}, {"id": "rs_causal1"}]});
        let AnalysisSpec::Beacon(b) = parse_analysis(&ok, "analyses[0]").unwrap() else {
            panic!("not a beacon")
        };
        assert_eq!(b.variants[0].key(), "23:5:A:G");
        assert_eq!(b.variants[1].key(), "rs_causal1");
        for (bad, path) in [
            (
                serde_json::json!([{"chrom": "1", "pos": 5, "ref": "A"}]),
                "analyses[0].variants[0].alt",
            ),
            (
                serde_json::json!([{"chrom": "1", "pos": 0, "ref": "A", "alt": "C"}]),
                "analyses[0].variants[0].pos",
            ),
            (
                serde_json::json!([{"chrom": "1", "pos": 3, "ref": "A", "alt": "C;drop"}]),
                "analyses[0].variants[0].alt",
            ),
            (
                serde_json::json!([{"id": "rs1", "chrom": "1"}]),
                "analyses[0].variants[0]",
            ),
            (
                serde_json::json!([{"id": "rs 1"}]),
                "analyses[0].variants[0].id",
            ),
            (serde_json::json!([]), "analyses[0].variants"),
        ] {
            let v = serde_json::json!({"type": "beacon", "id": "b", "variants": bad});
            let e = parse_analysis(&v, "analyses[0]").unwrap_err();
            assert_eq!(e.path, path, "{e}");
        }
    }
}
