//! The `gwas` analysis: a site's per-variant sums and the hub's rounds.
//!
//! Rounds: the panel (every site's `.bim`, which must be the same), then the genotype tables of each
//! chunk of variants, then (when the study asks for regression) the regression sums of each chunk:
//! one round for a quantitative trait, Newton rounds for a case/control one until every variant of
//! the chunk has converged or given up. Every round's answer from a site is a `variant_sums`
//! release: a variant whose minor-allele count at that site is under the minimum is withheld there,
//! and the pooled table of that variant then lacks that site (said in the result).

use std::collections::{BTreeMap, HashMap};

use medfed_engine::SiteEngine;
use medfed_genomics::assoc::{CaseControl, Split, Status};
use medfed_genomics::glm::{self, Sums, Wald};
use medfed_genomics::{Bed, GenoCounts};
use medfed_privacy::SiteStatistic;
use medfed_protocol::gwas::{Gwas, GwasTest};
use medfed_protocol::regression::ModelStep;
use medfed_protocol::AnalysisSpec;
use rayon::prelude::*;

use crate::tables::shape;
use crate::AnalysisError;

/// Values a variant in a tables round: genotype counts (two, one, no copies of A1, missing) of
/// cases, controls and samples without a phenotype.
pub const TABLE_WIDTH: usize = 12;

/// A site's samples for a GWAS: its genotypes, the phenotype class of every `.fam` row, and the
/// regression rows. Person-level: never leaves the node.
pub struct SiteSamples {
    pub bed: Bed,
    pub split: Split,
    pub design: glm::Design,
    /// Cases and controls (empty for a quantitative trait).
    pub classes: Vec<u64>,
    /// Persons of the population with a phenotype but no genotype at this site.
    pub not_genotyped: usize,
    pub dropped: BTreeMap<String, usize>,
}

/// `chrom:pos:id:a1:a2` of every variant of the panel, in `.bim` order.
pub fn panel_of(bed: &Bed) -> Vec<String> {
    bed.variants
        .iter()
        .map(|v| format!("{}:{}:{}:{}:{}", v.chrom, v.pos, v.id, v.a1, v.a2))
        .collect()
}

/// Build the site's samples: the population's persons with a phenotype (and every covariate) whose
/// `person_id` is a `.fam` sample id.
pub async fn samples(engine: &SiteEngine, g: &Gwas) -> Result<SiteSamples, AnalysisError> {
    let spec = AnalysisSpec::Regression(g.as_regression());
    let d = crate::regression::extract(engine, &spec).await?;
    let bed = crate::regression::genotypes(engine, &g.id)?;
    let index: HashMap<i64, usize> = bed
        .samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.iid.parse::<i64>().ok().map(|p| (p, i)))
        .collect();
    let mut status = vec![Status::Excluded; bed.samples.len()];
    let p = d.p();
    let mut design = glm::Design {
        q: p - 1,
        ..glm::Design::default()
    };
    let (mut cases, mut controls, mut not_genotyped) = (0u64, 0u64, 0usize);
    for (row, person) in d.persons.iter().enumerate() {
        let Some(&i) = index.get(person) else {
            not_genotyped += 1;
            continue;
        };
        let y = d.y[row];
        status[i] = if g.quantitative() {
            Status::Unknown
        } else if y > 0.5 {
            cases += 1;
            Status::Case
        } else {
            controls += 1;
            Status::Control
        };
        design.samples.push(i);
        design.y.push(y);
        design
            .covariates
            .extend_from_slice(&d.x[row * p + 1..(row + 1) * p]);
    }
    Ok(SiteSamples {
        split: Split::new(&status),
        bed,
        design,
        classes: if g.quantitative() {
            Vec::new()
        } else {
            vec![cases, controls]
        },
        not_genotyped,
        dropped: d.dropped,
    })
}

fn flat(t: &CaseControl, out: &mut Vec<f64>) {
    for g in [t.case, t.control, t.other] {
        out.extend([g.hom_a1, g.het, g.hom_a2, g.missing].map(|x| x as f64));
    }
}

fn unflat(v: &[f64]) -> CaseControl {
    let g = |o: usize| GenoCounts {
        hom_a1: v[o].round() as u64,
        het: v[o + 1].round() as u64,
        hom_a2: v[o + 2].round() as u64,
        missing: v[o + 3].round() as u64,
    };
    CaseControl {
        case: g(0),
        control: g(4),
        other: g(8),
    }
}

/// Minor-allele count of a variant among the analysed samples.
fn mac(t: &CaseControl) -> u64 {
    let (a, b) = t.all().alleles();
    a.min(b)
}

fn chunk(
    s: &SiteSamples,
    first: u32,
    count: u32,
    id: &str,
) -> Result<std::ops::Range<usize>, AnalysisError> {
    let (a, n) = (first as usize, count as usize);
    if a + n > s.bed.variants.len() || n == 0 {
        return Err(shape(
            id,
            format!(
                "variants {a}..{} asked of a panel of {}",
                a + n,
                s.bed.variants.len()
            ),
        ));
    }
    Ok(a..a + n)
}

/// The site's local step of one GWAS round.
pub fn local_step(
    s: &SiteSamples,
    g: &Gwas,
    step: &ModelStep,
) -> Result<SiteStatistic, AnalysisError> {
    let rows = s.design.samples.len() as u64;
    match step {
        ModelStep::GwasPanel => Ok(SiteStatistic::panel(panel_of(&s.bed))),
        ModelStep::GwasTables { first, count } => {
            let r = chunk(s, *first, *count, &g.id)?;
            // Variants in parallel (order kept), each one popcount pass.
            let tables: Vec<CaseControl> = r
                .into_par_iter()
                .map(|v| s.split.table(s.bed.packed(v)))
                .collect();
            let mut values = Vec::with_capacity(tables.len() * TABLE_WIDTH);
            let macs: Vec<u64> = tables.iter().map(mac).collect();
            for t in &tables {
                flat(t, &mut values);
            }
            Ok(SiteStatistic::variant_sums(
                values,
                TABLE_WIDTH,
                macs,
                rows,
                s.classes.clone(),
                g.min_mac,
            ))
        }
        ModelStep::GwasFit {
            first,
            count,
            coefficients,
        } => {
            let r = chunk(s, *first, *count, &g.id)?;
            let k = s.design.k();
            let width = Sums::width(k);
            let logistic = !g.quantitative();
            if logistic && coefficients.len() != r.len() {
                return Err(shape(
                    &g.id,
                    format!(
                        "{} coefficient vectors for {} variants",
                        coefficients.len(),
                        r.len()
                    ),
                ));
            }
            if logistic {
                if let Some((i, beta)) = coefficients.iter().enumerate().find(|(_, b)| {
                    !b.is_empty() && (b.len() != k || b.iter().any(|x| !x.is_finite()))
                }) {
                    return Err(shape(
                        &g.id,
                        format!(
                            "variant {}: {} coefficients for {k} parameters",
                            r.start + i,
                            beta.len()
                        ),
                    ));
                }
            }
            // The variants to compute: all of the chunk for a linear fit; for a logistic one only
            // those still being fitted (non-empty coefficients), in order — converged variants
            // cost nothing in later rounds.
            let start = r.start;
            let vars: Vec<usize> = if logistic {
                r.filter(|v| !coefficients[v - start].is_empty()).collect()
            } else {
                r.collect()
            };
            // Variants in parallel (order kept): one pass over the samples each.
            let per: Vec<(u64, Sums)> = vars
                .into_par_iter()
                .map(|v| {
                    let packed = s.bed.packed(v);
                    let m = mac(&s.split.table(packed));
                    let sums = if logistic {
                        glm::logistic_sums(&s.design, packed, &coefficients[v - start])
                    } else {
                        glm::linear_sums(&s.design, packed)
                    };
                    (m, sums)
                })
                .collect();
            let mut values = Vec::with_capacity(per.len() * width);
            let macs: Vec<u64> = per.iter().map(|(m, _)| *m).collect();
            for (_, sums) in &per {
                sums.flatten(k, &mut values);
            }
            Ok(SiteStatistic::variant_sums(
                values,
                width,
                macs,
                rows,
                s.classes.clone(),
                g.min_mac,
            ))
        }
        _ => Err(shape(&g.id, "not a GWAS step")),
    }
}

// ---------------------------------------------------------------------------------------------
// The hub's side.

/// Where a GWAS stands between rounds (JSON in the hub's store).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GwasState {
    pub round: u32,
    /// Sites in the analysis (those that sent the panel).
    pub sites: Vec<String>,
    /// Sites left out at the panel round, and why (refused, or no genotypes).
    #[serde(default)]
    pub excluded: Vec<(String, String)>,
    /// The panel (`chrom:pos:id:a1:a2`).
    pub panel: Vec<String>,
    /// Summed genotype tables, `TABLE_WIDTH` a variant (filled chunk by chunk).
    pub tables: Vec<f64>,
    /// Sites that withheld each variant (tables round).
    pub withheld: Vec<u32>,
    /// Parameters of the regression (intercept, dosage, covariates).
    pub k: usize,
    /// Current coefficients of each variant of the chunk being fitted (logistic).
    pub beta: Vec<Vec<f64>>,
    pub iterations: Vec<u32>,
    /// Fits of every variant (`None`: not fitted, monomorphic, or did not converge).
    pub fits: Vec<Option<Wald>>,
    /// First variant of the chunk in progress.
    pub first: u32,
    pub error: Option<String>,
    /// Variants not fitted because their logistic maximum-likelihood estimate does not exist: no
    /// copy of one allele among the cases or among the controls (separation).
    #[serde(default)]
    pub separated: u32,
}

pub use crate::regression::Next;

fn chunk_len(g: &Gwas, state: &GwasState, first: u32) -> u32 {
    (state.panel.len() as u32 - first).min(g.chunk_variants as u32)
}

fn to_all(nodes: &[String], step: ModelStep) -> Vec<(String, ModelStep)> {
    nodes.iter().map(|n| (n.clone(), step.clone())).collect()
}

/// The first round: every node's panel.
pub fn first_round(state: &mut GwasState, nodes: &[String]) -> Vec<(String, ModelStep)> {
    state.round = 1;
    to_all(nodes, ModelStep::GwasPanel)
}

fn fail(state: &mut GwasState, why: String) -> Next {
    state.error = Some(why);
    Next::Done
}

/// Advance with one round's answers.
pub fn advance(
    g: &Gwas,
    state: &mut GwasState,
    step: &ModelStep,
    inputs: &[(String, crate::SiteInput<'_>)],
) -> Next {
    state.round += 1;
    match step {
        ModelStep::GwasPanel => {
            let mut panel: Option<(&str, &[String])> = None;
            for (site, input) in inputs {
                let r = match released(input) {
                    Ok(r) => r,
                    Err(e) => {
                        state.excluded.push((site.clone(), e));
                        continue;
                    }
                };
                let Some(p) = r.panel().filter(|p| !p.is_empty()) else {
                    state
                        .excluded
                        .push((site.clone(), format!("no genotypes: {}", r.describe())));
                    continue;
                };
                match panel {
                    None => panel = Some((site, p)),
                    Some((first_site, first)) if first != p => {
                        return fail(
                            state,
                            format!(
                                "{site}'s genotype panel ({} variants) differs from {first_site}'s ({} variants): a GWAS needs every site typed on the same panel",
                                p.len(),
                                first.len()
                            ),
                        )
                    }
                    Some(_) => {}
                }
                state.sites.push(site.clone());
            }
            let panel = panel.map(|(_, p)| p);
            let Some(p) = panel.filter(|p| !p.is_empty()) else {
                return fail(state, "no site has genotypes".into());
            };
            state.panel = p.to_vec();
            state.tables = vec![0.0; p.len() * TABLE_WIDTH];
            state.withheld = vec![0; p.len()];
            state.fits = vec![None; p.len()];
            state.first = 0;
            let count = chunk_len(g, state, 0);
            Next::Round(to_all(
                &state.sites,
                ModelStep::GwasTables { first: 0, count },
            ))
        }
        ModelStep::GwasTables { first, count } => {
            let (a, n) = (*first as usize, *count as usize);
            for (site, input) in inputs {
                // A site that refuses or withholds its first tables (too few samples or cases for
                // its policy) leaves the analysis; later, the tables would be incomplete.
                let r = match released(input) {
                    Ok(r) => r,
                    Err(e) if a == 0 => {
                        state.sites.retain(|s| s != site);
                        state.excluded.push((site.clone(), e));
                        continue;
                    }
                    Err(e) => return fail(state, format!("{site} {e}")),
                };
                let Some((values, width, withheld)) = r.variants() else {
                    let why = format!("withheld its tables: {}", r.describe());
                    if a == 0 {
                        state.sites.retain(|s| s != site);
                        state.excluded.push((site.clone(), why));
                        continue;
                    }
                    return fail(state, format!("{site} {why}"));
                };
                if width != TABLE_WIDTH || values.len() != n * TABLE_WIDTH {
                    return fail(state, format!("{site} sent tables of the wrong shape"));
                }
                for (x, v) in state.tables[a * TABLE_WIDTH..(a + n) * TABLE_WIDTH]
                    .iter_mut()
                    .zip(values)
                {
                    *x += v;
                }
                for w in withheld {
                    if let Some(c) = state.withheld.get_mut(a + *w as usize) {
                        *c += 1;
                    }
                }
            }
            if state.sites.is_empty() {
                return fail(
                    state,
                    "every site withheld its genotype tables (too few samples or cases)".into(),
                );
            }
            let next = first + count;
            if (next as usize) < state.panel.len() {
                let count = chunk_len(g, state, next);
                return Next::Round(to_all(
                    &state.sites,
                    ModelStep::GwasTables { first: next, count },
                ));
            }
            if !g.runs(GwasTest::Regression) {
                return Next::Done;
            }
            start_fit(g, state, 0)
        }
        ModelStep::GwasFit {
            first,
            count,
            coefficients,
        } => {
            let (a, n) = (*first as usize, *count as usize);
            let k = state.k;
            let width = Sums::width(k);
            // What the sites computed: every variant of the chunk (linear), or the ones still
            // being fitted (logistic), in order.
            let rows: Vec<usize> = if g.quantitative() {
                (0..n).collect()
            } else {
                (0..n)
                    .filter(|i| coefficients.get(*i).is_some_and(|b| !b.is_empty()))
                    .collect()
            };
            let mut total: Vec<Sums> = vec![Sums::zero(k); rows.len()];
            for (site, input) in inputs {
                let r = match released(input) {
                    Ok(r) => r,
                    Err(e) => return fail(state, format!("{site} {e}")),
                };
                let Some((values, w, _)) = r.variants() else {
                    return fail(state, format!("{site} withheld its sums: {}", r.describe()));
                };
                if w != width || values.len() != rows.len() * width {
                    return fail(
                        state,
                        format!("{site} sent regression sums of the wrong shape"),
                    );
                }
                for (i, t) in total.iter_mut().enumerate() {
                    t.add(&Sums::unflatten(k, &values[i * width..(i + 1) * width]));
                }
            }
            if g.quantitative() {
                for (t, i) in total.iter().zip(&rows) {
                    state.fits[a + i] = glm::linear_fit(t, k);
                }
                return next_chunk(g, state, a + n);
            }
            // One Newton step for every variant still being fitted.
            let mut more = false;
            for (t, &i) in total.iter().zip(&rows) {
                let beta = std::mem::take(&mut state.beta[i]);
                if beta.is_empty() {
                    continue;
                }
                state.iterations[i] += 1;
                match glm::newton_step(t, k, &beta) {
                    Some((next, change)) if next.iter().all(|b| b.is_finite()) => {
                        if change < glm::NEWTON_TOL {
                            // Converged: the Wald test needs the sums at the final coefficients,
                            // which differ from these by less than the tolerance; one more round
                            // would change nothing printed, so the information here is used.
                            state.fits[a + i] =
                                glm::logistic_wald(t, k, &next, state.iterations[i] as usize);
                        } else if state.iterations[i] < g.max_iterations {
                            state.beta[i] = next;
                            more = true;
                        }
                    }
                    _ => {}
                }
            }
            if more {
                return Next::Round(to_all(
                    &state.sites,
                    ModelStep::GwasFit {
                        first: *first,
                        count: *count,
                        coefficients: state.beta.clone(),
                    },
                ));
            }
            next_chunk(g, state, a + n)
        }
        _ => fail(state, "not a GWAS step".into()),
    }
}

/// A site's released answer, or why it has none.
fn released<'a>(input: &crate::SiteInput<'a>) -> Result<&'a medfed_privacy::Released, String> {
    match input {
        crate::SiteInput::Released(r) => Ok(r),
        crate::SiteInput::Refused(why) => Err(format!("refused: {why}")),
        crate::SiteInput::Secagg(_) => Err("sent a secure-aggregation message".to_string()),
    }
}

fn next_chunk(g: &Gwas, state: &mut GwasState, next: usize) -> Next {
    if next < state.panel.len() {
        start_fit(g, state, next as u32)
    } else {
        Next::Done
    }
}

/// Whether a case/control variant's logistic fit has no finite maximum: among the cases or among
/// the controls, no copy of one of the alleles (or nobody). Then moving the dosage coefficient
/// towards ±∞ raises the likelihood for ever — Newton rounds would run to the iteration limit —
/// so the hub does not fit it (PLINK 2 reports such variants as failing to converge, or fits them
/// by Firth regression).
fn separated(t: &CaseControl) -> bool {
    [t.case, t.control].iter().any(|c| {
        let (a1, a2) = (2 * c.hom_a1 + c.het, 2 * c.hom_a2 + c.het);
        a1 == 0 || a2 == 0
    })
}

/// Start fitting the chunk at `first`: coefficients for every variant that is polymorphic in the
/// pooled table (and, for a case/control trait, not separated).
fn start_fit(g: &Gwas, state: &mut GwasState, first: u32) -> Next {
    let count = chunk_len(g, state, first);
    state.first = first;
    state.k = g.parameters();
    let k = state.k;
    let (a, n) = (first as usize, count as usize);
    let case_control = !g.quantitative();
    let mut skipped = 0;
    state.beta = (a..a + n)
        .map(|v| {
            let t = unflat(&state.tables[v * TABLE_WIDTH..(v + 1) * TABLE_WIDTH]);
            if mac(&t) == 0 {
                Vec::new()
            } else if case_control && separated(&t) {
                skipped += 1;
                Vec::new()
            } else {
                // Start at the intercept-only fit (the log odds of being a case among the called
                // samples): Newton then needs a round or two fewer than from zero.
                let mut b = vec![0.0; k];
                let (cases, controls) = (t.case.called() as f64, t.control.called() as f64);
                if case_control && cases > 0.0 && controls > 0.0 {
                    b[0] = (cases / controls).ln();
                }
                b
            }
        })
        .collect();
    state.separated += skipped;
    state.iterations = vec![0; n];
    Next::Round(to_all(
        &state.sites,
        ModelStep::GwasFit {
            first,
            count,
            coefficients: if g.quantitative() {
                Vec::new()
            } else {
                state.beta.clone()
            },
        },
    ))
}

/// The pooled table of variant `v`.
pub fn table(state: &GwasState, v: usize) -> CaseControl {
    unflat(&state.tables[v * TABLE_WIDTH..(v + 1) * TABLE_WIDTH])
}

// ---------------------------------------------------------------------------------------------
// The pooled result.

/// One variant of a pooled GWAS, A1 the minor allele over the analysed samples (PLINK 1.9's
/// orientation).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VariantResult {
    pub chrom: String,
    pub pos: u64,
    pub snp: String,
    pub a1: String,
    pub a2: String,
    /// Pooled genotype counts: cases, controls, samples without a case/control phenotype, each as
    /// A1A1, A1A2, A2A2, missing.
    pub table: [u64; TABLE_WIDTH],
    /// Sites that withheld the variant (their samples are not in `table`).
    pub withheld: u32,
    /// Minor-allele frequency (`None`: no call).
    pub maf: Option<f64>,
    /// Hardy–Weinberg exact p in all samples (`--hardy`, ALL row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwe_p: Option<f64>,
    /// Allelic test (`--assoc`): chi-square, p, odds ratio, Fisher's exact p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chisq: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fisher_p: Option<f64>,
    /// Cochran–Armitage trend test (`--model`, TREND row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend_p: Option<f64>,
    /// Per-variant regression (`--logistic`/`--linear`, ADD row): the A1 dosage's coefficient (log
    /// odds ratio or slope), its standard error and Wald p, over `glm_n` samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glm_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glm_n: Option<u64>,
}

impl VariantResult {
    pub fn case_control(&self) -> CaseControl {
        unflat(&self.table.map(|x| x as f64))
    }

    /// The variant as a `.bim` line with A1 the reported allele.
    pub fn variant(&self) -> medfed_genomics::Variant {
        medfed_genomics::Variant {
            chrom: self.chrom.clone(),
            id: self.snp.clone(),
            cm: 0.0,
            pos: self.pos,
            a1: self.a1.clone(),
            a2: self.a2.clone(),
        }
    }
}

/// A pooled GWAS (the `value` of its result).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GwasResult {
    /// The test of the Manhattan plot and the top hits: `logistic`, `linear` or `allelic`.
    pub test: String,
    /// The tests the study asked for; a quantitative phenotype has no case/control tests.
    pub tests: Vec<GwasTest>,
    pub quantitative: bool,
    pub sites: Vec<String>,
    /// Largest number of cases, controls and samples in any variant's pooled table.
    pub cases: u64,
    pub controls: u64,
    pub samples: u64,
    pub variants: usize,
    /// Variants with a p-value of the main test.
    pub tested: usize,
    /// Genomic-control inflation of the main test (median χ² / 0.456).
    pub lambda_gc: Option<f64>,
    /// Bonferroni threshold (0.05 / tested) and the variants under it; variants with
    /// Benjamini–Hochberg q < 0.05.
    pub bonferroni: Option<f64>,
    pub significant: usize,
    pub fdr_significant: usize,
    /// Variants that at least one site withheld (minor-allele count under its minimum).
    pub withheld_variants: usize,
    /// Indices into `results` of the 20 smallest p-values of the main test.
    pub top: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub results: Vec<VariantResult>,
}

impl GwasResult {
    /// The main test's p-value of a variant.
    pub fn p_of(&self, v: &VariantResult) -> Option<f64> {
        match self.test.as_str() {
            "allelic" => v.p,
            _ => v.glm_p,
        }
    }
}

/// Parse a panel entry `chrom:pos:id:a1:a2` (the id may itself hold colons).
fn parse_panel(e: &str) -> Option<medfed_genomics::Variant> {
    let mut parts: Vec<&str> = e.split(':').collect();
    if parts.len() < 5 {
        return None;
    }
    let a2 = parts.pop()?;
    let a1 = parts.pop()?;
    Some(medfed_genomics::Variant {
        chrom: parts[0].to_string(),
        pos: parts[1].parse().ok()?,
        id: parts[2..].join(":"),
        cm: 0.0,
        a1: a1.to_string(),
        a2: a2.to_string(),
    })
}

/// The pooled result from the final state.
pub fn pooled(g: &Gwas, state: &GwasState) -> GwasResult {
    let regression = g.runs(GwasTest::Regression);
    let test = if regression {
        if g.quantitative() {
            "linear"
        } else {
            "logistic"
        }
    } else {
        "allelic"
    };
    let mut out = GwasResult {
        test: test.into(),
        tests: g.tests.clone(),
        quantitative: g.quantitative(),
        sites: state.sites.clone(),
        cases: 0,
        controls: 0,
        samples: 0,
        variants: state.panel.len(),
        tested: 0,
        lambda_gc: None,
        bonferroni: None,
        significant: 0,
        fdr_significant: 0,
        withheld_variants: state.withheld.iter().filter(|w| **w > 0).count(),
        top: Vec::new(),
        error: state.error.clone(),
        results: Vec::with_capacity(state.panel.len()),
    };
    let case_control = !g.quantitative();
    for (v, entry) in state.panel.iter().enumerate() {
        let Some(variant) = parse_panel(entry) else {
            out.error
                .get_or_insert_with(|| format!("malformed panel entry {entry:?}"));
            continue;
        };
        if (v + 1) * TABLE_WIDTH > state.tables.len() {
            break;
        }
        let raw = table(state, v);
        let row = medfed_genomics::plink::orient(&variant, &raw);
        let t = row.table;
        let sum = |c: GenoCounts| c.hom_a1 + c.het + c.hom_a2 + c.missing;
        out.cases = out.cases.max(sum(t.case));
        out.controls = out.controls.max(sum(t.control));
        out.samples = out.samples.max(sum(t.case) + sum(t.control) + sum(t.other));
        let f = medfed_genomics::assoc::freq(&t);
        let mut r = VariantResult {
            chrom: variant.chrom.clone(),
            pos: variant.pos,
            snp: variant.id.clone(),
            a1: row.a1.to_string(),
            a2: row.a2.to_string(),
            table: [0; TABLE_WIDTH],
            withheld: state.withheld.get(v).copied().unwrap_or(0),
            maf: Some(f.maf).filter(|m| m.is_finite()),
            hwe_p: None,
            chisq: None,
            p: None,
            or: None,
            fisher_p: None,
            trend_p: None,
            beta: None,
            se: None,
            glm_p: None,
            glm_n: None,
        };
        let mut flat_t = Vec::with_capacity(TABLE_WIDTH);
        flat(&t, &mut flat_t);
        for (d, x) in r.table.iter_mut().zip(flat_t) {
            *d = x as u64;
        }
        if g.runs(GwasTest::Hardy) && t.all().called() > 0 {
            r.hwe_p = Some(medfed_genomics::assoc::hardy(&t.all()).p);
        }
        if case_control && g.runs(GwasTest::Assoc) {
            let a = medfed_genomics::assoc::allelic(&t);
            r.chisq = a.chisq;
            r.p = a.p;
            r.or = a.or;
            r.fisher_p = Some(a.fisher_p);
        }
        if case_control && g.runs(GwasTest::Model) {
            r.trend_p = medfed_genomics::assoc::model(&t, 5)
                .into_iter()
                .find(|m| m.test == "TREND")
                .and_then(|m| m.p);
        }
        if let Some(Some(w)) = state.fits.get(v) {
            // Fitted with the `.bim` A1's dosage; reported for the minor allele.
            let w = if row.a1 != variant.a1 {
                w.flipped()
            } else {
                w.clone()
            };
            r.beta = Some(w.beta[1]);
            r.se = Some(w.se[1]);
            r.glm_p = w.p.get(1).copied().filter(|p| p.is_finite());
            r.glm_n = Some(w.n);
        }
        out.results.push(r);
    }
    // Multiple testing over the main test.
    let mut ps: Vec<(usize, f64)> = out
        .results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| out.p_of(r).map(|p| (i, p)))
        .collect();
    out.tested = ps.len();
    if !ps.is_empty() {
        let chisq: Vec<f64> = ps
            .iter()
            .map(|(i, p)| {
                let r = &out.results[*i];
                match (test, r.chisq, r.beta, r.se) {
                    ("allelic", Some(c), _, _) => c,
                    (_, _, Some(b), Some(se)) if se > 0.0 => (b / se).powi(2),
                    _ => medfed_genomics::dist::qnorm(1.0 - p / 2.0).powi(2),
                }
            })
            .collect();
        out.lambda_gc = Some(medfed_genomics::assoc::gc_lambda(&chisq));
        let m = ps.len() as f64;
        out.bonferroni = Some(0.05 / m);
        out.significant = ps.iter().filter(|(_, p)| *p < 0.05 / m).count();
        ps.sort_by(|a, b| a.1.total_cmp(&b.1));
        // Benjamini–Hochberg: the largest rank k with p(k) <= 0.05 k / m.
        out.fdr_significant = ps
            .iter()
            .enumerate()
            .filter(|(k, (_, p))| *p <= 0.05 * (*k as f64 + 1.0) / m)
            .map(|(k, _)| k + 1)
            .max()
            .unwrap_or(0);
        out.top = ps.iter().take(20).map(|(i, _)| *i).collect();
    }
    out
}

/// The pooled result as the national statistics hold it.
pub fn pooled_result(g: &Gwas, state: &GwasState) -> crate::PooledResult {
    let r = pooled(g, state);
    let (sites, mut notes) = crate::combine::round_sites(&state.sites, &state.excluded, "left out");
    if let Some(e) = &state.error {
        notes.push(format!("stopped: {e}"));
    }
    if r.withheld_variants > 0 {
        notes.push(format!(
            "{} of {} variants lack at least one site's samples: their minor-allele count there was under the site's minimum",
            r.withheld_variants, r.variants
        ));
    }
    if state.separated > 0 {
        notes.push(format!(
            "{} variants not fitted by logistic regression: no copy of one allele among the cases or the controls, so the estimate is infinite (separation)",
            state.separated
        ));
    }
    crate::PooledResult {
        id: g.id.clone(),
        kind: "gwas".into(),
        value: serde_json::to_value(&r).unwrap_or(serde_json::Value::Null),
        sites,
        notes,
    }
}

/// A variant with a known effect (a planted causal variant), and what the GWAS made of it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnownEffect {
    pub snp: String,
    /// Frequency and odds ratio per copy of the risk allele, as planted.
    pub freq: f64,
    pub odds_ratio: f64,
    /// Power of the allelic test at the result's Bonferroni level with its cases and controls.
    pub power: f64,
    /// The main test's p-value, its odds ratio (`exp β` or the allelic OR) for the same allele, and
    /// whether it passed the Bonferroni level.
    pub p: Option<f64>,
    pub estimated_or: Option<f64>,
    pub found: bool,
}

/// How a GWAS did on variants of known effect: predicted power against what was found, and the
/// variants found that are not among them (false positives, or linked to them).
pub fn known_effects(r: &GwasResult, known: &[(String, f64, f64)]) -> (Vec<KnownEffect>, usize) {
    let alpha = r.bonferroni.unwrap_or(0.05);
    let mut out = Vec::new();
    for (snp, freq, or) in known {
        let v = r.results.iter().find(|v| &v.snp == snp);
        let p = v.and_then(|v| r.p_of(v));
        // The result's A1 is the minor allele; a planted risk allele above 1/2 would be A2.
        let estimated_or = v.and_then(|v| {
            let or = match r.test.as_str() {
                "allelic" => v.or,
                _ => v.beta.map(f64::exp),
            }?;
            Some(if *freq > 0.5 { 1.0 / or } else { or })
        });
        out.push(KnownEffect {
            snp: snp.clone(),
            freq: *freq,
            odds_ratio: *or,
            power: medfed_genomics::assoc::allelic_power(*freq, *or, r.cases, r.controls, alpha),
            p,
            estimated_or,
            found: p.is_some_and(|p| p < alpha),
        });
    }
    let others = r
        .results
        .iter()
        .filter(|v| r.p_of(v).is_some_and(|p| p < alpha))
        .filter(|v| !known.iter().any(|k| k.0 == v.snp))
        .count();
    (out, others)
}

/// PLINK 1.9 report files of a pooled GWAS, by file extension: `.frq.cc`/`.frq`, `.lmiss`, `.hwe`,
/// `.assoc`, `.assoc.fisher`, `.model`, `.assoc.adjusted`, and `.assoc.logistic`/`.assoc.linear`
/// (the ADD rows, as with `--hide-covar`).
pub fn plink_files(r: &GwasResult) -> Vec<(String, String)> {
    use medfed_genomics::plink;
    let variants: Vec<medfed_genomics::Variant> = r.results.iter().map(|v| v.variant()).collect();
    let rows: Vec<plink::Row> = r
        .results
        .iter()
        .zip(&variants)
        .map(|(v, var)| plink::Row {
            variant: var,
            a1: &var.a1,
            a2: &var.a2,
            table: v.case_control(),
        })
        .collect();
    let cc = !r.quantitative;
    let runs = |t: GwasTest| r.tests.contains(&t);
    let mut out = Vec::new();
    if runs(GwasTest::Freq) {
        if cc {
            out.push(("frq.cc".into(), plink::frq_cc(&rows)));
        }
        out.push(("frq".into(), plink::frq(&rows)));
        out.push(("lmiss".into(), plink::lmiss(&rows)));
    }
    if runs(GwasTest::Hardy) {
        out.push(("hwe".into(), plink::hardy(&rows)));
    }
    if cc && runs(GwasTest::Assoc) {
        out.push(("assoc".into(), plink::assoc(&rows)));
        out.push(("assoc.fisher".into(), plink::fisher(&rows)));
        let chisq: Vec<f64> = r
            .results
            .iter()
            .map(|v| v.chisq.unwrap_or(f64::NAN))
            .collect();
        let (_, adj) = medfed_genomics::assoc::adjust(&chisq);
        out.push(("assoc.adjusted".into(), plink::adjusted(&rows, &adj)));
    }
    if cc && runs(GwasTest::Model) {
        out.push(("model".into(), plink::model(&rows)));
    }
    if runs(GwasTest::Regression) {
        let fits: Vec<Option<(u64, f64, f64, f64)>> = r
            .results
            .iter()
            .map(|v| match (v.glm_n, v.beta, v.se, v.glm_p) {
                (Some(n), Some(b), Some(se), Some(p)) => Some((n, b, se, p)),
                _ => None,
            })
            .collect();
        let (ext, text) = plink::glm_add(&rows, &fits, cc);
        out.push((ext.into(), text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfed_privacy::{release, Policy};
    use std::path::Path;

    fn spec(tests: &str, chunk: usize) -> Gwas {
        let v = serde_json::json!({
            "id": "gwas_sim", "population": "everyone", "phenotype": {"cohort": "cases"},
            "tests": serde_json::from_str::<serde_json::Value>(tests).unwrap(),
            "chunk_variants": chunk, "min_mac": 0
        });
        serde_json::from_value(v).unwrap()
    }

    /// The three gwas_plink_sim sites as a node would hold them (phenotype from the .fam).
    fn sites() -> Vec<(String, SiteSamples)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/gwas_plink_sim");
        (1..=3)
            .map(|s| {
                let bed = Bed::open(&dir.join("sim")).unwrap();
                let keep: std::collections::HashSet<String> =
                    std::fs::read_to_string(dir.join(format!("site{s}.keep")))
                        .unwrap()
                        .lines()
                        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
                        .collect();
                let mut status = vec![Status::Excluded; bed.samples.len()];
                let mut design = glm::Design::default();
                let (mut cases, mut controls) = (0, 0);
                for (i, smp) in bed.samples.iter().enumerate() {
                    if !keep.contains(&smp.iid) {
                        continue;
                    }
                    let case = smp.pheno == "2";
                    status[i] = if case { Status::Case } else { Status::Control };
                    if case {
                        cases += 1
                    } else {
                        controls += 1
                    }
                    design.samples.push(i);
                    design.y.push(if case { 1.0 } else { 0.0 });
                }
                (
                    format!("site{s}"),
                    SiteSamples {
                        split: Split::new(&status),
                        bed,
                        design,
                        classes: vec![cases, controls],
                        not_genotyped: 0,
                        dropped: BTreeMap::new(),
                    },
                )
            })
            .collect()
    }

    /// Drive the rounds as the hub and nodes do, releasing every answer through the policy.
    fn run(g: &Gwas, sites: &[(String, SiteSamples)], policy: &Policy) -> (GwasState, u32) {
        let names: Vec<String> = sites.iter().map(|s| s.0.clone()).collect();
        let mut state = GwasState::default();
        let mut steps = first_round(&mut state, &names);
        let mut rounds = 0;
        loop {
            rounds += 1;
            let step = steps[0].1.clone();
            let released: Vec<(String, medfed_privacy::Released)> = steps
                .iter()
                .map(|(n, st)| {
                    let s = &sites.iter().find(|x| &x.0 == n).unwrap().1;
                    // Off the wire, as the hub reads it.
                    let r = release(local_step(s, g, st).unwrap(), policy);
                    let r = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
                    (n.clone(), r)
                })
                .collect();
            let inputs: Vec<(String, crate::SiteInput<'_>)> = released
                .iter()
                .map(|(n, r)| (n.clone(), crate::SiteInput::Released(r)))
                .collect();
            match advance(g, &mut state, &step, &inputs) {
                Next::Round(s) => steps = s,
                Next::Done => return (state, rounds),
            }
        }
    }

    #[test]
    fn rounds_over_three_sites_equal_pooled_plink() {
        let sites = sites();
        let g = spec(r#"["assoc", "regression"]"#, 700);
        let (state, rounds) = run(&g, &sites, &Policy::default());
        assert!(state.error.is_none(), "{:?}", state.error);
        assert_eq!(state.panel.len(), 2000);
        // Tables: the pooled allelic test equals PLINK's --assoc on all 1,200 samples.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/gwas_plink_sim");
        let bed = Bed::open(&dir.join("sim")).unwrap();
        let rows: Vec<medfed_genomics::plink::Row> = (0..2000)
            .map(|v| medfed_genomics::plink::orient(&bed.variants[v], &table(&state, v)))
            .collect();
        let ours = medfed_genomics::plink::assoc(&rows);
        let theirs = std::fs::read_to_string(dir.join("ref_pooled.assoc")).unwrap();
        let tok = |s: &str| -> Vec<Vec<String>> {
            s.lines()
                .map(|l| l.split_whitespace().map(String::from).collect())
                .collect()
        };
        assert_eq!(tok(&ours), tok(&theirs));
        // Logistic: every variant fitted, and equal to the single-process pooled fit.
        for v in (0..2000).step_by(97) {
            let w = state.fits[v].as_ref().expect("fitted");
            let pooled = glm::logistic_fit(2, |b| {
                let mut s = Sums::zero(2);
                for (_, site) in &sites {
                    s.add(&glm::logistic_sums(&site.design, bed.packed(v), b));
                }
                s
            })
            .unwrap();
            for (a, b) in w
                .beta
                .iter()
                .chain(&w.se)
                .zip(pooled.beta.iter().chain(&pooled.se))
            {
                assert!(
                    (a - b).abs() <= 1e-8 * b.abs().max(1e-3),
                    "variant {v}: {a} vs {b}"
                );
            }
        }
        // Panel, three chunks of tables, and a few Newton rounds for each of three chunks.
        assert!(
            rounds > 1 + 3 + 3 * 3 && rounds < 1 + 3 + 3 * 12,
            "{rounds} rounds"
        );
    }

    #[test]
    fn separated_variants_are_not_fitted() {
        let g = |hom_a1, het, hom_a2| GenoCounts {
            hom_a1,
            het,
            hom_a2,
            missing: 0,
        };
        let none = g(0, 0, 0);
        let t = |case, control| CaseControl {
            case,
            control,
            other: none,
        };
        // No A1 among the cases; every control homozygous A1; no case at all.
        assert!(separated(&t(g(0, 0, 50), g(1, 5, 90))));
        assert!(separated(&t(g(1, 5, 90), g(40, 0, 0))));
        assert!(separated(&t(none, g(1, 5, 90))));
        // One heterozygous case is enough for a finite estimate.
        assert!(!separated(&t(g(0, 1, 50), g(1, 5, 90))));
    }

    #[test]
    fn a_site_withholds_its_rare_variants_and_the_hub_says_so() {
        let sites = sites();
        let g = Gwas {
            min_mac: 40,
            ..spec(r#"["assoc"]"#, 2000)
        };
        let (state, _) = run(&g, &sites, &Policy::default());
        // The smallest site (242 people) withholds every variant whose minor-allele count there is
        // under 40; its samples are then missing from that variant's pooled table.
        let withheld = state.withheld.iter().filter(|w| **w > 0).count();
        assert!(withheld > 50, "{withheld}");
        let v = state.withheld.iter().position(|w| *w > 0).unwrap();
        let n = table(&state, v).all().called();
        assert!(n < 1200, "variant {v}: {n} samples in the pooled table");
    }
}
