//! The `gwas` analysis: a genome-wide association study over the sites' PLINK genotypes, with the
//! phenotype and covariates taken from the CDM (`medfed-study/1`).
//!
//! The population is a study cohort (first entry = index date); the phenotype is an outcome cohort
//! during the time at risk (case/control: count tests and logistic regression) or a measurement
//! (quantitative: linear regression); covariates are the regression analysis's features. A site's
//! samples are its `.fam` rows whose id is a `person_id` in the population.
//!
//! What leaves a site is per-variant sums only: genotype tables by phenotype class and regression
//! sums (`medfed_genomics::assoc`, `medfed_genomics::glm`).
//!
//! The hub drives the rounds (`medfed_analysis::gwas`): the panel, genotype tables by chunk of
//! variants, then regression sums by chunk.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::TimeAtRisk;
use crate::regression::{Family, Feature, FeatureKind, ModelOutcome, Regression};
use crate::study::{check_id, check_text, StudyError};

fn err(path: impl Into<String>, message: impl Into<String>) -> StudyError {
    StudyError {
        path: path.into(),
        message: message.into(),
    }
}

/// Most variants one round carries; larger panels go in chunks.
pub const MAX_CHUNK_VARIANTS: usize = 200_000;

/// The tests a GWAS runs (all of them by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GwasTest {
    /// Allele frequencies (`--freq`, `--freq case-control`) and missingness (`--missing`).
    Freq,
    /// Hardy–Weinberg exact test in all samples, cases and controls (`--hardy`).
    Hardy,
    /// Allelic chi-square with the odds ratio (`--assoc`) and Fisher's exact test.
    Assoc,
    /// Genotypic, trend, dominant and recessive tests (`--model`).
    Model,
    /// Per-variant regression with the covariates: logistic for a cohort phenotype, linear for a
    /// measurement (`--logistic`/`--linear`, plink2 `--glm`), fitted exactly across sites.
    Regression,
}

fn all_tests() -> Vec<GwasTest> {
    use GwasTest as T;
    vec![T::Freq, T::Hardy, T::Assoc, T::Model, T::Regression]
}
fn default_min_mac() -> u64 {
    5
}
fn default_chunk() -> usize {
    50_000
}
fn default_iterations() -> u32 {
    25
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gwas {
    pub id: String,
    /// The study cohort whose persons are the samples.
    pub population: String,
    /// A cohort (case = enters it during the time at risk) or a measurement (quantitative).
    pub phenotype: ModelOutcome,
    #[serde(default)]
    pub tar: TimeAtRisk,
    /// Covariates of the regression test (the `regression` analysis's features; no genotypes).
    #[serde(default)]
    pub covariates: Vec<Feature>,
    #[serde(default = "all_tests")]
    pub tests: Vec<GwasTest>,
    /// Without secure aggregation, a site withholds a variant's table and sums when its own minor
    /// allele count is below this (membership inference on rare variants). Under secure aggregation
    /// the rule applies to the network's total instead.
    #[serde(default = "default_min_mac")]
    pub min_mac: u64,
    /// Variants a round carries.
    #[serde(default = "default_chunk")]
    pub chunk_variants: usize,
    #[serde(default = "default_iterations")]
    pub max_iterations: u32,
    /// The Circe expressions of the cohorts it uses, put in by the hub (as for `regression`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub definitions: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Gwas {
    pub fn quantitative(&self) -> bool {
        matches!(self.phenotype, ModelOutcome::Measurement(_))
    }

    pub fn runs(&self, t: GwasTest) -> bool {
        self.tests.contains(&t)
    }

    /// The regression whose design (population, phenotype, covariates) the node builds for the
    /// samples; a GWAS's covariates may be empty.
    pub fn as_regression(&self) -> Regression {
        Regression {
            id: self.id.clone(),
            family: if self.quantitative() {
                Family::Gaussian
            } else {
                Family::Binomial
            },
            population: self.population.clone(),
            outcome: self.phenotype.clone(),
            tar: self.tar,
            covariates: self.covariates.clone(),
            intercept: true,
            l2: 0.0,
            max_iterations: self.max_iterations,
            definitions: self.definitions.clone(),
            label: self.label.clone(),
        }
    }

    /// Parameters of each variant's regression: the intercept, the A1 dosage and the covariates'
    /// design columns.
    pub fn parameters(&self) -> usize {
        self.as_regression().columns().len() + 1
    }

    /// The study cohorts the analysis reads.
    pub fn cohort_refs(&self) -> Vec<&str> {
        let mut v = vec![self.population.as_str()];
        if let ModelOutcome::Cohort(c) = &self.phenotype {
            v.push(c.as_str());
        }
        v
    }

    /// Check what the types do not (ids, sizes, the covariates and phenotype as a regression's).
    pub fn check(&self, path: &str) -> Result<(), StudyError> {
        if let Some(l) = &self.label {
            check_text(l, &format!("{path}.label"))?;
        }
        check_id(&self.population, &format!("{path}.population"))?;
        if self.tests.is_empty() {
            return Err(err(format!("{path}.tests"), "needs at least one test"));
        }
        if !(1..=MAX_CHUNK_VARIANTS).contains(&self.chunk_variants) {
            return Err(err(
                format!("{path}.chunk_variants"),
                format!("must be 1..={MAX_CHUNK_VARIANTS}"),
            ));
        }
        if self.min_mac > 1_000 {
            return Err(err(format!("{path}.min_mac"), "must be 0..=1000"));
        }
        for (i, f) in self.covariates.iter().enumerate() {
            if matches!(f.kind, FeatureKind::Genotype { .. }) {
                return Err(err(
                    format!("{path}.covariates[{i}]"),
                    "a GWAS tests every variant; a genotype is not a covariate here",
                ));
            }
        }
        // The covariates, phenotype and fit settings as the regression analysis checks them.
        let mut r = self.as_regression();
        if r.covariates.is_empty() {
            // The regression check wants a covariate; a GWAS without one is fine.
            r.covariates.push(Feature {
                name: "age".into(),
                kind: FeatureKind::Age,
            });
        }
        crate::regression::check(&r, path)
    }
}
