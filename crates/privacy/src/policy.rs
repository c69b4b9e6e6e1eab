//! The hospital's disclosure policy file (`policy.toml` in the node folder).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the node does with a task of a given analysis type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Run it and release the result without asking anyone.
    Allow,
    /// Hold it until the data steward runs `medfed node approve`.
    Approve,
    /// Refuse it.
    Deny,
}

/// The site's disclosure policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Smallest non-zero count that may leave the site (OHDSI's usual `minCellCount` is 5; we default
    /// to 10, the stricter figure many national statistics offices use).
    #[serde(default = "default_min_cell")]
    pub min_cell_count: u64,
    /// Withhold a person count whose persons differ from an earlier released count's by 1 to
    /// `min_cell_count - 1` persons (the differencing attack).
    #[serde(default = "yes")]
    pub differencing: bool,
    /// Smallest cohort a table may describe (cohort characterization, incidence, survival,
    /// comparative studies). Twice the minimum cell count by default: a cohort of 12 would otherwise
    /// be described by cells of 10 and 2, one of them suppressed but easily bounded.
    #[serde(default = "default_min_cohort")]
    pub min_cohort_size: u64,
    /// Largest ratio of a model's parameters to the rows it is fitted on at this site (DataSHIELD's
    /// `nfilter.glm`, 0.33): a model with about as many parameters as rows reproduces the rows.
    #[serde(default = "default_parameter_ratio")]
    pub max_parameter_ratio: f64,
    /// Smallest non-zero minor-allele count of a variant whose per-variant sums (genotype tables,
    /// regression sums) this site releases on its own, outside secure aggregation: a rare variant's
    /// counts at one hospital point at its few carriers (membership inference, Homer et al. 2008).
    #[serde(default = "default_min_mac")]
    pub min_minor_allele_count: u64,
    /// Decision per analysis type; types not listed get `default`.
    #[serde(default)]
    pub analyses: BTreeMap<String, Decision>,
    /// Decision for analysis types not listed in `analyses`.
    #[serde(default = "default_decision")]
    pub default: Decision,
    /// Beacon look-ups: the most this site answers and the per-requester rare-variant budget.
    #[serde(default)]
    pub beacon: crate::beacon::BeaconPolicy,
    /// Optional differential privacy for released counts, with budgets (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<crate::dp::DpPolicy>,
}

/// The analysis types of the catalog, all allowed by the default policy: each goes through
/// [`release`](crate::release) before it leaves.
pub const CATALOG_TYPES: &[&str] = &[
    "person_count",
    "cohort_count",
    "characterization",
    "cohort_characterization",
    "cross_tab",
    "descriptive",
    "incidence_rate",
    "kaplan_meier",
    "comparative_cohort",
    "regression",
    "surveillance",
    "gwas",
    "beacon",
    "vehicle_events",
];

fn default_min_cell() -> u64 {
    10
}
fn default_min_mac() -> u64 {
    5
}
fn default_min_cohort() -> u64 {
    20
}
fn default_parameter_ratio() -> f64 {
    0.33
}
fn yes() -> bool {
    true
}
fn default_decision() -> Decision {
    Decision::Deny
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_cell_count: default_min_cell(),
            differencing: true,
            min_cohort_size: default_min_cohort(),
            max_parameter_ratio: default_parameter_ratio(),
            min_minor_allele_count: default_min_mac(),
            analyses: CATALOG_TYPES
                .iter()
                .map(|t| (t.to_string(), Decision::Allow))
                .collect(),
            default: Decision::Deny,
            beacon: Default::default(),
            dp: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text).map_err(|message| PolicyError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        if p.min_cell_count == 0 {
            return Err("min_cell_count must be at least 1".into());
        }
        if !(p.max_parameter_ratio > 0.0 && p.max_parameter_ratio < 1.0) {
            return Err("max_parameter_ratio must be between 0 and 1 (exclusive)".into());
        }
        if let Some(d) = &p.dp {
            d.check()?;
        }
        p.beacon.check()?;
        Ok(p)
    }

    pub fn decision(&self, analysis_type: &str) -> Decision {
        self.analyses
            .get(analysis_type)
            .copied()
            .unwrap_or(self.default)
    }

    /// The file written by `medfed node init`, with comments.
    pub fn default_file() -> String {
        "# Disclosure policy of this hospital node. Read on every task; edits apply at once.\n\
         # Smallest non-zero count that may leave the hospital; smaller counts are suppressed.\n\
         min_cell_count = 10\n\
         # Withhold counts whose persons differ from an earlier released count's by fewer than\n\
         # min_cell_count persons (differencing attack). The node keeps those person sets locally.\n\
         differencing = true\n\
         # Smallest cohort that a table (characterization, incidence, survival) may describe.\n\
         min_cohort_size = 20\n\
         # Largest ratio of a model's parameters to the rows it is fitted on here (DataSHIELD 0.33).\n\
         max_parameter_ratio = 0.33\n\
         # Smallest minor-allele count of a variant that genetic summaries may describe.\n\
         min_minor_allele_count = 5\n\
         # What to do with analysis types not listed below: allow | approve | deny\n\
         default = \"deny\"\n\n\
         [analyses]\n\
         # allow: run and release; approve: wait for `medfed node approve`; deny: refuse\n\
         person_count = \"allow\"\n\
         cohort_count = \"allow\"\n\
         characterization = \"allow\"\n\
         cohort_characterization = \"allow\"\n\
         cross_tab = \"allow\"\n\
         descriptive = \"allow\"\n\
         incidence_rate = \"allow\"\n\
         kaplan_meier = \"allow\"\n\
         comparative_cohort = \"allow\"\n\
         # Federated regression: the site releases model sums (score, information) each round.\n\
         regression = \"allow\"\n\n\
         # Syndromic surveillance: daily counts by district x vulnerable group x syndrome, sent only\n\
         # masked for secure aggregation (the hub sees network totals, never this site's).\n\
         surveillance = \"allow\"\n\
         # Genome-wide association: per-variant genotype tables and regression sums; a variant whose\n\
         # minor-allele count here is under min_minor_allele_count is withheld (membership inference).\n\
         gwas = \"allow\"\n\
         # Beacon look-ups: whether anyone here carries a variant, at the level set in [beacon].\n\
         beacon = \"allow\"\n\
         # In-car emergencies by district x age group x kind, counted from a vehicle service's events\n\
         # log (only a node configured with one answers it).\n\
         vehicle_events = \"allow\"\n\n\
         [beacon]\n\
         # The most this site answers: boolean (carries or not) | count (carriers) | frequency\n\
         # (allele count and number, genotype counts). Small counts only ever say the allele exists.\n\
         granularity = \"count\"\n\
         # A variant under this alternate-allele frequency here (or absent) is rare; each requester\n\
         # may look up probe_budget distinct rare variants at this site, ever (membership inference).\n\
         rare_frequency = 0.05\n\
         probe_budget = 50\n\n\
         # Optional differential privacy for released counts (see docs/PRIVACY.md). Uncomment to\n\
         # add noise to every count and keep a per-study and lifetime epsilon ledger.\n\
         # [dp]\n\
         # mechanism = \"laplace\"   # or \"gaussian\" (then also delta = 1e-6, epsilon < 1)\n\
         # epsilon = 0.5             # spent by each released count\n\
         # study_budget = 2.0        # per study at this site\n\
         # site_budget = 20.0        # all studies together, for the life of this node\n"
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_default() {
        assert_eq!(
            Policy::parse(&Policy::default_file()).unwrap(),
            Policy::default()
        );
        assert!(Policy::parse("min_cell_count = 0").is_err());
        assert!(Policy::parse("min_cel_count = 3").is_err());
        assert!(Policy::parse("max_parameter_ratio = 1.0").is_err());
        assert!(Policy::parse("max_parameter_ratio = 0").is_err());
        let p = Policy::parse("[analyses]\nperson_count = \"approve\"").unwrap();
        assert_eq!(p.decision("person_count"), Decision::Approve);
        assert_eq!(p.decision("gwas"), Decision::Deny);
    }
}
