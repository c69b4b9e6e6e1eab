//! Case/control genotype tables and the association tests PLINK 1.9 computes from them.
//!
//! Every count-based test (`--freq`, `--missing`, `--hardy`, `--assoc` with or without `fisher`,
//! `--model`) is a function of one variant's 3 × 3 table: genotype (two copies of A1, one, none) plus
//! missing, in cases, controls and samples without a phenotype. A site computes that table with
//! popcounts over the packed `.bed`; tables from several sites add up exactly, so a statistic
//! computed from the summed table equals PLINK's on the pooled samples.
//!
//! Orientation: tables are kept in the `.bim`'s allele order. PLINK 1.9 reports A1 as the minor allele
//! of the samples analysed; [`CaseControl::minor_first`] applies that rule to the pooled table, so a
//! site never has to know the pooled frequency.

use std::ops::{Add, AddAssign};

use crate::dist::chisq_upper;
use crate::GenoCounts;

/// PLINK's default `--cell`: genotypic tests need every genotype cell at least this large.
pub const MIN_CELL: u64 = 5;

impl Add for GenoCounts {
    type Output = GenoCounts;
    fn add(self, o: GenoCounts) -> GenoCounts {
        GenoCounts {
            hom_a1: self.hom_a1 + o.hom_a1,
            het: self.het + o.het,
            hom_a2: self.hom_a2 + o.hom_a2,
            missing: self.missing + o.missing,
        }
    }
}

impl GenoCounts {
    /// The same counts with A1 and A2 exchanged.
    pub fn flipped(self) -> GenoCounts {
        GenoCounts {
            hom_a1: self.hom_a2,
            hom_a2: self.hom_a1,
            ..self
        }
    }
    /// Copies of A1 and of A2 among called genotypes.
    pub fn alleles(&self) -> (u64, u64) {
        (2 * self.hom_a1 + self.het, 2 * self.hom_a2 + self.het)
    }
    /// `a/b/c` as PLINK writes genotype counts (A1A1/A1A2/A2A2).
    pub fn slash(&self) -> String {
        format!("{}/{}/{}", self.hom_a1, self.het, self.hom_a2)
    }
}

/// Phenotype of one sample in an analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Case,
    Control,
    /// In the analysis (counted in frequencies and `ALL`), phenotype missing.
    Unknown,
    /// Not in the analysis at all (PLINK's `--keep`/`--remove`).
    Excluded,
}

/// Sample masks aligned with the packed `.bed` words: bit `2i` of word `i / 32` is set when sample
/// `i` belongs to the class.
#[derive(Clone, Debug)]
pub struct Split {
    pub n: usize,
    case: Vec<u64>,
    control: Vec<u64>,
    other: Vec<u64>,
}

impl Split {
    pub fn new(status: &[Status]) -> Split {
        let words = status.len().div_ceil(32);
        let (mut case, mut control, mut other) =
            (vec![0u64; words], vec![0u64; words], vec![0u64; words]);
        for (i, s) in status.iter().enumerate() {
            let bit = 1u64 << (2 * (i % 32));
            match s {
                Status::Case => case[i / 32] |= bit,
                Status::Control => control[i / 32] |= bit,
                Status::Unknown => other[i / 32] |= bit,
                Status::Excluded => {}
            }
        }
        Split {
            n: status.len(),
            case,
            control,
            other,
        }
    }

    /// Samples of each class: cases, controls, unknown.
    pub fn sizes(&self) -> (u64, u64, u64) {
        let c = |m: &[u64]| m.iter().map(|w| w.count_ones() as u64).sum();
        (c(&self.case), c(&self.control), c(&self.other))
    }

    /// The genotype table of one packed variant: twelve popcounts per 32 samples.
    pub fn table(&self, packed: &[u8]) -> CaseControl {
        const LO: u64 = 0x5555_5555_5555_5555;
        let mut t = [[0u64; 4]; 3];
        for (wi, chunk) in packed.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            let w = u64::from_le_bytes(b);
            let lo = w & LO;
            let hi = (w >> 1) & LO;
            // PLINK codes: 00 two A1, 01 missing, 10 one A1, 11 no A1.
            let class = [!lo & !hi, !lo & hi, lo & hi, lo & !hi];
            for (row, mask) in [&self.case, &self.control, &self.other].iter().enumerate() {
                let m = mask.get(wi).copied().unwrap_or(0);
                if m == 0 {
                    continue;
                }
                for (k, c) in class.iter().enumerate() {
                    t[row][k] += (c & m).count_ones() as u64;
                }
            }
        }
        let g = |r: [u64; 4]| GenoCounts {
            hom_a1: r[0],
            het: r[1],
            hom_a2: r[2],
            missing: r[3],
        };
        CaseControl {
            case: g(t[0]),
            control: g(t[1]),
            other: g(t[2]),
        }
    }
}

/// One variant's genotype counts by phenotype class, in `.bim` allele order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseControl {
    pub case: GenoCounts,
    pub control: GenoCounts,
    pub other: GenoCounts,
}

impl Add for CaseControl {
    type Output = CaseControl;
    fn add(self, o: CaseControl) -> CaseControl {
        CaseControl {
            case: self.case + o.case,
            control: self.control + o.control,
            other: self.other + o.other,
        }
    }
}

impl AddAssign for CaseControl {
    fn add_assign(&mut self, o: CaseControl) {
        *self = *self + o;
    }
}

impl CaseControl {
    pub fn all(&self) -> GenoCounts {
        self.case + self.control + self.other
    }

    pub fn flipped(&self) -> CaseControl {
        CaseControl {
            case: self.case.flipped(),
            control: self.control.flipped(),
            other: self.other.flipped(),
        }
    }

    /// PLINK 1.9's allele order: A1 is the minor allele over all samples analysed (the `.bim`
    /// order is kept on a tie or when nothing is called). Returns the table and whether it flipped.
    pub fn minor_first(&self) -> (CaseControl, bool) {
        let (a1, a2) = self.all().alleles();
        if a1 > a2 {
            (self.flipped(), true)
        } else {
            (*self, false)
        }
    }
}

/// `--freq` / `--freq case-control` / `--missing` (per variant) in one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Freq {
    /// A1 frequency over all samples, in cases, in controls (`NaN` when nothing is called).
    pub maf: f64,
    pub maf_a: f64,
    pub maf_u: f64,
    pub nchrobs: u64,
    pub nchrobs_a: u64,
    pub nchrobs_u: u64,
    pub n_miss: u64,
    pub n_geno: u64,
}

fn ratio(a: u64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        a as f64 / n as f64
    }
}

pub fn freq(t: &CaseControl) -> Freq {
    let all = t.all();
    let f = |g: &GenoCounts| {
        let (a, b) = g.alleles();
        (ratio(a, a + b), a + b)
    };
    let (maf, nchrobs) = f(&all);
    let (maf_a, nchrobs_a) = f(&t.case);
    let (maf_u, nchrobs_u) = f(&t.control);
    Freq {
        maf,
        maf_a,
        maf_u,
        nchrobs,
        nchrobs_a,
        nchrobs_u,
        n_miss: all.missing,
        n_geno: all.called() + all.missing,
    }
}

/// Pearson chi-square of an r × c table given row-major; `None` when a margin is empty.
fn pearson(cells: &[f64], cols: usize) -> Option<f64> {
    let rows = cells.len() / cols;
    let rs: Vec<f64> = (0..rows)
        .map(|r| cells[r * cols..(r + 1) * cols].iter().sum())
        .collect();
    let cs: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| cells[r * cols + c]).sum())
        .collect();
    let n: f64 = rs.iter().sum();
    if rs.iter().chain(cs.iter()).any(|&m| m == 0.0) {
        return None;
    }
    let mut x = 0.0;
    for r in 0..rows {
        for c in 0..cols {
            let e = rs[r] * cs[c] / n;
            let d = cells[r * cols + c] - e;
            x += d * d / e;
        }
    }
    Some(x)
}

/// `--assoc`: the 1-df allelic test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allelic {
    pub f_a: f64,
    pub f_u: f64,
    pub chisq: Option<f64>,
    pub p: Option<f64>,
    /// Odds ratio of A1 in cases against controls (`None` when a denominator cell is empty).
    pub or: Option<f64>,
    /// Fisher's exact two-sided p-value (`--assoc fisher`).
    pub fisher_p: f64,
}

pub fn allelic(t: &CaseControl) -> Allelic {
    let (a, b) = t.case.alleles();
    let (c, d) = t.control.alleles();
    let chisq = pearson(&[a as f64, b as f64, c as f64, d as f64], 2);
    Allelic {
        f_a: ratio(a, a + b),
        f_u: ratio(c, c + d),
        chisq,
        p: chisq.map(|x| chisq_upper(x, 1)),
        or: (b * c != 0).then(|| (a as f64 * d as f64) / (b as f64 * c as f64)),
        fisher_p: fisher_2x2(a, b, c, d),
    }
}

fn lnf(k: u64) -> f64 {
    libm::lgamma(k as f64 + 1.0)
}

/// Two-sided exact p-value of a unimodal distribution on `lo..=hi` (support every `step`): the
/// probability of every value no more likely than `obs` (ties within 1e-7, as R and PLINK). `lnp` is
/// the unnormalised log-probability and `up(x)` the ratio `P(x + step) / P(x)`. The walk starts at
/// `mode` and stops each way once terms are negligible beside both the mode and the observed value,
/// so its cost grows with the spread of the distribution, not with the sample size.
fn exact_two_sided(
    (lo, hi, step): (u64, u64, u64),
    mode: u64,
    obs: u64,
    lnp: impl Fn(u64) -> f64,
    up: impl Fn(u64) -> f64,
) -> f64 {
    let l_obs = lnp(obs) - lnp(mode);
    let cut = l_obs + 1e-7;
    // Log domain (a logarithm a step) only when the observed value is too far out for the linear
    // walk's range; otherwise terms relative to the mode.
    let log_domain = l_obs < -600.0;
    let stop = l_obs.min(0.0) - 41.0;
    let (mut total, mut tail) = (0.0, 0.0);
    let mut add = |lt: f64, t: f64| {
        if log_domain {
            total += lt.exp();
            if lt <= cut {
                tail += (lt - l_obs).exp();
            }
        } else {
            total += t;
            if lt <= cut {
                tail += t;
            }
        }
    };
    // The mode itself.
    add(0.0, 1.0);
    let (mut x, mut lt, mut t) = (mode, 0.0f64, 1.0f64);
    while x + step <= hi {
        let r = up(x);
        if log_domain {
            lt += r.ln();
        } else {
            t *= r;
            lt = t.ln();
        }
        x += step;
        add(lt, t);
        if lt < stop {
            break;
        }
    }
    let (mut x, mut lt, mut t) = (mode, 0.0f64, 1.0f64);
    while x >= lo + step {
        let r = up(x - step);
        if log_domain {
            lt -= r.ln();
        } else {
            t /= r;
            lt = t.ln();
        }
        x -= step;
        add(lt, t);
        if lt < stop {
            break;
        }
    }
    let p = if log_domain {
        (tail.ln() + l_obs - total.ln()).exp()
    } else {
        tail / total
    };
    p.min(1.0)
}

/// Two-sided Fisher exact test of `[[a, b], [c, d]]`: the probability of every table with the
/// observed margins that is no more likely than the observed one.
pub fn fisher_2x2(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let (r1, c1, n) = (a + b, a + c, a + b + c + d);
    if n == 0 {
        return 1.0;
    }
    let lo = (r1 + c1).saturating_sub(n);
    let hi = r1.min(c1);
    // P(x) ∝ 1 / (x! (r1-x)! (c1-x)! (n-r1-c1+x)!)
    let lnp = |x: u64| -(lnf(x) + lnf(r1 - x) + lnf(c1 - x) + lnf(n + x - r1 - c1));
    let up = |x: u64| {
        ((r1 - x) as f64 * (c1 - x) as f64) / ((x + 1) as f64 * (n + x + 1 - r1 - c1) as f64)
    };
    let mode =
        ((((r1 + 1) as f64 * (c1 + 1) as f64) / (n + 2) as f64).floor() as u64).clamp(lo, hi);
    exact_two_sided((lo, hi, 1), mode, a, lnp, up)
}

/// One line of `--model`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelTest {
    pub test: &'static str,
    pub aff: String,
    pub unaff: String,
    pub chisq: Option<f64>,
    pub df: u32,
    pub p: Option<f64>,
}

/// `--model`: genotypic (2 df), Cochran–Armitage trend, allelic, dominant and recessive tests for A1.
/// The genotypic, dominant and recessive tests need every genotype cell at least `cell` (PLINK's
/// `--cell`, 5 by default) and are `None` otherwise.
pub fn model(t: &CaseControl, cell: u64) -> Vec<ModelTest> {
    let (x, y) = (t.case, t.control);
    let (a1x, a2x) = x.alleles();
    let (a1y, a2y) = y.alleles();
    let small = [x.hom_a1, x.het, x.hom_a2, y.hom_a1, y.het, y.hom_a2]
        .iter()
        .any(|&v| v < cell);
    let f = |v: u64| v as f64;
    let geno = pearson(
        &[
            f(x.hom_a1),
            f(x.het),
            f(x.hom_a2),
            f(y.hom_a1),
            f(y.het),
            f(y.hom_a2),
        ],
        3,
    );
    let dom = pearson(
        &[
            f(x.hom_a1 + x.het),
            f(x.hom_a2),
            f(y.hom_a1 + y.het),
            f(y.hom_a2),
        ],
        2,
    );
    let rec = pearson(
        &[
            f(x.hom_a1),
            f(x.het + x.hom_a2),
            f(y.hom_a1),
            f(y.het + y.hom_a2),
        ],
        2,
    );
    let line = |test, aff, unaff, chisq: Option<f64>, df, gate: bool| ModelTest {
        test,
        aff,
        unaff,
        chisq: chisq.filter(|_| gate),
        df,
        p: chisq.filter(|_| gate).map(|c| chisq_upper(c, df)),
    };
    vec![
        line("GENO", x.slash(), y.slash(), geno, 2, !small),
        line(
            "TREND",
            format!("{a1x}/{a2x}"),
            format!("{a1y}/{a2y}"),
            trend(&x, &y),
            1,
            true,
        ),
        line(
            "ALLELIC",
            format!("{a1x}/{a2x}"),
            format!("{a1y}/{a2y}"),
            pearson(&[f(a1x), f(a2x), f(a1y), f(a2y)], 2),
            1,
            true,
        ),
        line(
            "DOM",
            format!("{}/{}", x.hom_a1 + x.het, x.hom_a2),
            format!("{}/{}", y.hom_a1 + y.het, y.hom_a2),
            dom,
            1,
            !small,
        ),
        line(
            "REC",
            format!("{}/{}", x.hom_a1, x.het + x.hom_a2),
            format!("{}/{}", y.hom_a1, y.het + y.hom_a2),
            rec,
            1,
            !small,
        ),
    ]
}

/// Cochran–Armitage trend chi-square with scores 2, 1, 0 copies of A1.
pub fn trend(x: &GenoCounts, y: &GenoCounts) -> Option<f64> {
    let r = x.called() as f64;
    let s = y.called() as f64;
    let n = r + s;
    let nk = [
        (x.hom_a1 + y.hom_a1) as f64,
        (x.het + y.het) as f64,
        (x.hom_a2 + y.hom_a2) as f64,
    ];
    let score = [2.0, 1.0, 0.0];
    let str_: f64 = 2.0 * x.hom_a1 as f64 + x.het as f64;
    let stn: f64 = score.iter().zip(nk).map(|(t, n)| t * n).sum();
    let st2n: f64 = score.iter().zip(nk).map(|(t, n)| t * t * n).sum();
    let den = r * s * (n * st2n - stn * stn);
    if den <= 0.0 {
        return None;
    }
    let num = n * str_ - r * stn;
    Some(n * num * num / den)
}

/// `--hardy` on one genotype class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hardy {
    pub o_het: f64,
    pub e_het: f64,
    pub p: f64,
}

pub fn hardy(g: &GenoCounts) -> Hardy {
    let n = g.called();
    let (a, b) = g.alleles();
    let p = ratio(a, a + b);
    Hardy {
        o_het: ratio(g.het, n),
        e_het: 2.0 * p * (1.0 - p),
        p: hwe_exact(g.het, g.hom_a1, g.hom_a2),
    }
}

/// Hardy–Weinberg exact test (Wigginton, Cutler & Abecasis 2005): the probability, given the allele
/// counts, of a heterozygote count no more likely than the one observed.
pub fn hwe_exact(het: u64, hom1: u64, hom2: u64) -> f64 {
    let n = het + hom1 + hom2;
    if n == 0 {
        return 1.0;
    }
    let rare = 2 * hom1.min(hom2) + het;
    // Most likely heterozygote count, with the parity of `rare`.
    let mut mid = ((rare as f64) * (2 * n - rare) as f64 / (2 * n) as f64).floor() as u64;
    if (mid ^ rare) & 1 == 1 {
        mid += 1;
    }
    while mid > rare {
        mid -= 2;
    }
    let homs = |h: u64| {
        let hr = (rare - h) / 2;
        (hr, n - h - hr)
    };
    let lnp = |h: u64| {
        let (hr, hc) = homs(h);
        h as f64 * std::f64::consts::LN_2 - lnf(h) - lnf(hr) - lnf(hc)
    };
    let up = |h: u64| {
        let (hr, hc) = homs(h);
        4.0 * hr as f64 * hc as f64 / ((h + 2) as f64 * (h + 1) as f64)
    };
    exact_two_sided((rare % 2, rare, 2), mid, het, lnp, up)
}

/// Power of the allelic (1-df) test at level `alpha` for a variant whose risk allele has frequency
/// `freq` in controls and odds ratio `or` per allele, with `cases` and `controls` samples: the
/// non-central χ² approximation of a genetic power calculator (Purcell et al. 2003), with
/// non-centrality (p₁ − p₀)² / (p̄(1 − p̄)(1/2n₁ + 1/2n₀)).
pub fn allelic_power(freq: f64, or: f64, cases: u64, controls: u64, alpha: f64) -> f64 {
    let (n1, n0) = (cases as f64, controls as f64);
    if n1 == 0.0 || n0 == 0.0 || !(0.0..1.0).contains(&freq) || freq == 0.0 {
        return f64::NAN;
    }
    let p0 = freq;
    let p1 = or * p0 / (1.0 + (or - 1.0) * p0);
    let pbar = (n1 * p1 + n0 * p0) / (n1 + n0);
    let ncp = (p1 - p0).powi(2) / (pbar * (1.0 - pbar) * (0.5 / n1 + 0.5 / n0));
    let z = crate::dist::qnorm(1.0 - alpha / 2.0);
    let m = ncp.sqrt();
    crate::dist::pnorm_upper(z - m) + crate::dist::pnorm_upper(z + m)
}

/// `--adjust`: corrections of one test's p-values for the number of tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adjusted {
    /// Index into the input.
    pub index: usize,
    pub unadj: f64,
    /// Genomic control: the statistic divided by λ.
    pub gc: f64,
    pub bonf: f64,
    pub holm: f64,
    pub sidak_ss: f64,
    pub sidak_sd: f64,
    pub fdr_bh: f64,
    pub fdr_by: f64,
}

/// Genomic-control λ: the median 1-df chi-square over its expectation under the null (PLINK 1.9
/// divides by 0.456 and never deflates: λ < 1 counts as 1).
pub fn gc_lambda(chisq: &[f64]) -> f64 {
    let mut v: Vec<f64> = chisq.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len();
    let med = if m % 2 == 1 {
        v[m / 2]
    } else {
        (v[m / 2 - 1] + v[m / 2]) / 2.0
    };
    med / 0.456
}

/// Šidák's 1 − (1 − p)^c. Below 2⁻³⁹, 1 − p keeps too few digits, so the binomial expansion to
/// the p² term is used instead (PLINK 1.9 switches at the same point).
fn sidak(p: f64, c: f64) -> f64 {
    if p >= (2.0f64).powi(-39) {
        1.0 - (1.0 - p).powf(c)
    } else {
        p * (c - p * (c - 1.0))
    }
}

/// Adjusted p-values for every test with a statistic, ordered by the unadjusted p-value as PLINK
/// writes them. `chisq[i]` is the 1-df statistic of test `i` (`NaN` when the test was not done).
pub fn adjust(chisq: &[f64]) -> (f64, Vec<Adjusted>) {
    let lambda = gc_lambda(chisq);
    let gc_div = lambda.max(1.0);
    let mut rows: Vec<(usize, f64, f64)> = chisq
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .map(|(i, &x)| (i, chisq_upper(x, 1), x))
        .collect();
    rows.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then(b.2.total_cmp(&a.2))
            .then(a.0.cmp(&b.0))
    });
    let m = rows.len();
    let mf = m as f64;
    let by: f64 = (1..=m).map(|i| 1.0 / i as f64).sum();
    let mut out: Vec<Adjusted> = rows
        .iter()
        .map(|&(index, p, x)| Adjusted {
            index,
            unadj: p,
            gc: chisq_upper(x / gc_div, 1),
            bonf: (p * mf).min(1.0),
            holm: 0.0,
            sidak_ss: sidak(p, mf),
            sidak_sd: 0.0,
            fdr_bh: 0.0,
            fdr_by: 0.0,
        })
        .collect();
    // Step-down (Holm, Šidák): running maximum from the smallest p.
    let (mut holm, mut sd) = (0.0f64, 0.0f64);
    for (i, r) in out.iter_mut().enumerate() {
        let k = (m - i) as f64;
        holm = holm.max((r.unadj * k).min(1.0));
        sd = sd.max(sidak(r.unadj, k));
        r.holm = holm;
        r.sidak_sd = sd;
    }
    // Step-up (Benjamini–Hochberg, –Yekutieli): running minimum from the largest p.
    let (mut bh, mut byv) = (1.0f64, 1.0f64);
    for i in (0..m).rev() {
        let r = &mut out[i];
        let q = r.unadj * mf / (i + 1) as f64;
        bh = bh.min(q);
        byv = byv.min(q * by);
        r.fdr_bh = bh.min(1.0);
        r.fdr_by = byv.min(1.0);
    }
    (lambda, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(hom_a1: u64, het: u64, hom_a2: u64) -> GenoCounts {
        GenoCounts {
            hom_a1,
            het,
            hom_a2,
            missing: 0,
        }
    }

    #[test]
    fn split_tables_count_each_class() {
        let dos = [
            2u8, 1, 0, 9, 2, 2, 1, 0, 0, 1, 9, 2, 1, 1, 0, 2, 2, 0, 1, 0, 1, 2, 0, 0, 0, 1, 2, 2,
            1, 0, 9, 1, 2, 0, 1,
        ];
        let st: Vec<Status> = (0..dos.len())
            .map(|i| match i % 4 {
                0 => Status::Case,
                1 => Status::Control,
                2 => Status::Unknown,
                _ => Status::Excluded,
            })
            .collect();
        let mut packed = vec![0u8; dos.len().div_ceil(4)];
        crate::pack_dosages(&dos, &mut packed);
        let t = Split::new(&st).table(&packed);
        let want = |class: Status| {
            let mut c = GenoCounts::default();
            for (d, s) in dos.iter().zip(&st) {
                if *s == class {
                    match d {
                        2 => c.hom_a1 += 1,
                        1 => c.het += 1,
                        0 => c.hom_a2 += 1,
                        _ => c.missing += 1,
                    }
                }
            }
            c
        };
        assert_eq!(t.case, want(Status::Case));
        assert_eq!(t.control, want(Status::Control));
        assert_eq!(t.other, want(Status::Unknown));
    }

    #[test]
    fn trend_is_cochran_armitage() {
        // PLINK 1.9 on gwas_plink_sim null_0: 96/276/228 vs 70/272/258 → TREND 5.534.
        let x = trend(&g(96, 276, 228), &g(70, 272, 258)).unwrap();
        assert!((x - 5.534).abs() < 5e-4, "{x}");
    }

    #[test]
    fn fisher_matches_r() {
        // R: fisher.test(matrix(c(3, 1, 1, 3), 2))$p.value = 0.4857143.
        assert!((fisher_2x2(3, 1, 1, 3) - 0.485_714_3).abs() < 1e-7);
        // fisher.test(matrix(c(10, 2, 3, 15), 2))$p.value = 0.000536724119143437
        assert!((fisher_2x2(10, 3, 2, 15) - 0.000_536_724_119_143_437).abs() < 1e-15);
        // Large tables stay finite: the walk covers the spread, not the sample.
        let p = fisher_2x2(400_000, 600_000, 410_000, 590_000);
        assert!(p > 0.0 && p < 1e-10, "{p}");
    }

    #[test]
    fn hwe_matches_full_enumeration() {
        // Every heterozygote count enumerated in log space (Python, lgamma): 0.15068007651576093;
        // PLINK 1.9 --hardy on gwas_plink_sim null_0 prints 0.5759 (ALL) and 0.4399 (AFF).
        let p = hwe_exact(57, 14, 29);
        assert!((p - 0.150_680_076_515_760_93).abs() < 1e-13, "{p}");
        assert!((hwe_exact(548, 166, 486) - 0.575_916_857_542_002).abs() < 1e-12);
        assert!((hwe_exact(276, 96, 228) - 0.439_886_552_110_244_86).abs() < 1e-12);
        assert_eq!(hwe_exact(0, 100, 0), 1.0);
        // Large samples stay finite and fast.
        let p = hwe_exact(2_000_000, 4_000_000, 4_000_000);
        assert!(p < 1e-100, "{p}");
        let p = hwe_exact(4_800_000, 3_600_000, 1_600_000);
        assert!(p > 0.0 && p <= 1.0);
    }

    #[test]
    fn allelic_power_matches_the_genetic_power_calculator() {
        // No effect: power is the level.
        assert!((allelic_power(0.3, 1.0, 1000, 1000, 0.05) - 0.05).abs() < 1e-12);
        // Grows with the sample and the effect.
        let a = allelic_power(0.3, 1.3, 1000, 1000, 5e-8);
        let b = allelic_power(0.3, 1.3, 4000, 4000, 5e-8);
        assert!(a < b && b > 0.9, "{a} {b}");
        // By hand (Python's statistics.NormalDist): p1 = 0.272727, pbar = 0.236364,
        // ncp = 0.0052893 / (0.180496 × 0.002) = 14.652015, power = 0.9691072.
        let p = allelic_power(0.2, 1.5, 500, 500, 0.05);
        assert!((p - 0.969_107_19).abs() < 1e-7, "{p}");
    }
}
