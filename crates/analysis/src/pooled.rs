//! Combine steps of the table analyses: cell-wise sums of the sites' released tables, then the
//! statistics researchers read (means and SDs, quantiles, rates, survival, rate ratios), computed
//! from the pooled sums only.

use std::collections::BTreeMap;

use medfed_privacy::{ReleasedTable, Suppression, ALL};
use medfed_protocol::study::AnalysisSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A pooled table: the sum over sites of every released cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PooledTable {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub dims: Vec<String>,
    pub measures: Vec<String>,
    /// Local run time per site, in milliseconds.
    pub elapsed_ms: BTreeMap<String, u64>,
    /// Sites that withheld the whole table, with the rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub withheld_by: BTreeMap<String, Suppression>,
    pub cells: Vec<PooledCell>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PooledCell {
    pub key: Vec<String>,
    /// Sums over the sites that released the cell.
    pub values: Vec<f64>,
    /// Sites whose value entered the sum.
    pub sites: usize,
    /// Sites that withheld this cell: the pooled values are lower bounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld_at: Vec<String>,
}

impl PooledTable {
    pub fn cell(&self, key: &[&str]) -> Option<&PooledCell> {
        self.cells
            .iter()
            .find(|c| c.key.iter().map(String::as_str).eq(key.iter().copied()))
    }
    pub fn measure(&self, name: &str) -> Option<usize> {
        self.measures.iter().position(|m| m == name)
    }
    /// Value of measure `m` in the cell `key`, 0 when no site has the cell.
    pub fn get(&self, key: &[&str], m: &str) -> f64 {
        match (self.cell(key), self.measure(m)) {
            (Some(c), Some(i)) => c.values[i],
            _ => 0.0,
        }
    }
    /// Cells without margins.
    pub fn leaves(&self) -> impl Iterator<Item = &PooledCell> {
        self.cells
            .iter()
            .filter(|c| !c.key.iter().any(|k| k == ALL))
    }
}

/// Sum the sites' released tables, table by table and cell by cell.
pub fn pool_tables(sites: &[(String, &[ReleasedTable])]) -> Vec<PooledTable> {
    let mut out: Vec<PooledTable> = Vec::new();
    let mut cells: Vec<BTreeMap<Vec<String>, PooledCell>> = Vec::new();
    for (site, tables) in sites {
        for t in tables.iter() {
            let i = match out.iter().position(|p| p.name == t.name) {
                Some(i) => i,
                None => {
                    out.push(PooledTable {
                        name: t.name.clone(),
                        title: None,
                        dims: t.dims.clone(),
                        measures: t.measures.iter().map(|m| m.name.clone()).collect(),
                        elapsed_ms: BTreeMap::new(),
                        withheld_by: BTreeMap::new(),
                        cells: Vec::new(),
                    });
                    cells.push(BTreeMap::new());
                    out.len() - 1
                }
            };
            let p = &mut out[i];
            p.elapsed_ms.insert(site.clone(), t.elapsed_ms);
            if let Some(rule) = &t.suppressed {
                p.withheld_by.insert(site.clone(), rule.clone());
                continue;
            }
            let width = p.measures.len();
            for c in &t.cells {
                let cell = cells[i].entry(c.key.clone()).or_insert_with(|| PooledCell {
                    key: c.key.clone(),
                    values: vec![0.0; width],
                    sites: 0,
                    withheld_at: Vec::new(),
                });
                match &c.values {
                    Some(v) if v.len() == width => {
                        for (a, b) in cell.values.iter_mut().zip(v) {
                            *a += b;
                        }
                        cell.sites += 1;
                    }
                    _ => cell.withheld_at.push(site.clone()),
                }
            }
        }
    }
    for (p, c) in out.iter_mut().zip(cells) {
        p.cells = c.into_values().collect();
    }
    out
}

/// Notes on what was withheld, for the result's `notes`.
pub fn table_notes(tables: &[PooledTable]) -> Vec<String> {
    let mut notes = Vec::new();
    for t in tables {
        for (site, rule) in &t.withheld_by {
            notes.push(format!(
                "table {} withheld whole at {site}: {}",
                t.name,
                describe(rule)
            ));
        }
        let n = t.cells.iter().filter(|c| !c.withheld_at.is_empty()).count();
        if n > 0 {
            notes.push(format!(
                "table {}: {n} of {} cells withheld at one or more sites (small cells and their complements); those pooled values are lower bounds",
                t.name,
                t.cells.len()
            ));
        }
    }
    notes
}

pub fn describe(rule: &Suppression) -> String {
    match rule {
        Suppression::MinCellCount { threshold } => {
            format!("a count between 1 and {}", threshold - 1)
        }
        Suppression::Differencing { threshold } => format!(
            "its persons differ from an earlier release's by fewer than {threshold} (differencing)"
        ),
        Suppression::MinCohortSize { threshold } => {
            format!("the cohort has fewer than {threshold} persons")
        }
        Suppression::Complementary { .. } => {
            "withheld so that a small cell cannot be recovered from a total".into()
        }
        Suppression::ModelParameters {
            parameters,
            max_parameters,
        } => format!(
            "the model has {parameters} parameters; the site's rows allow at most {max_parameters}"
        ),
        Suppression::ProbeBudget { budget } => format!(
            "the requester has looked up {budget} rare variants here, the site's budget (membership inference)"
        ),
        Suppression::NoProbeLedger => {
            "a beacon answer reached a release path without the requester's probe ledger".into()
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Mean and sample SD from n, Σx, Σx².
pub fn mean_sd(n: f64, sum: f64, sum_sq: f64) -> (Option<f64>, Option<f64>) {
    if n <= 0.0 {
        return (None, None);
    }
    let mean = sum / n;
    let sd = (n > 1.0).then(|| ((sum_sq - sum * sum / n) / (n - 1.0)).max(0.0).sqrt());
    (Some(mean), sd)
}

/// Quantile `q` from a histogram of (bin index, count) with bin width `w`, interpolating linearly
/// within the bin: off by less than one bin width from the exact quantile of the values.
pub fn histogram_quantile(bins: &[(i64, f64)], w: f64, q: f64) -> Option<f64> {
    let total: f64 = bins.iter().map(|b| b.1).sum();
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut cum = 0.0;
    for (b, n) in bins {
        if *n > 0.0 && cum + n >= target {
            let frac = ((target - cum) / n).clamp(0.0, 1.0);
            return Some((*b as f64 + frac) * w);
        }
        cum += n;
    }
    bins.last().map(|(b, _)| (*b as f64 + 1.0) * w)
}

fn descriptive_summary(tables: &[PooledTable], w: f64) -> Value {
    let Some(s) = tables.iter().find(|t| t.name == "summary") else {
        return Value::Null;
    };
    let (n, persons, sum, sum_sq) = (
        s.get(&[], "n"),
        s.get(&[], "persons"),
        s.get(&[], "sum"),
        s.get(&[], "sum_sq"),
    );
    let (mean, sd) = mean_sd(n, sum, sum_sq);
    let mut bins: Vec<(i64, f64)> = tables
        .iter()
        .find(|t| t.name == "histogram")
        .map(|h| {
            h.leaves()
                .filter_map(|c| Some((c.key[0].parse::<i64>().ok()?, c.values[0])))
                .collect()
        })
        .unwrap_or_default();
    bins.sort_by_key(|b| b.0);
    let q = |p: f64| histogram_quantile(&bins, w, p);
    let nonzero: Vec<&(i64, f64)> = bins.iter().filter(|b| b.1 > 0.0).collect();
    json!({
        "n": n, "persons": persons, "mean": mean, "sd": sd,
        "p05": q(0.05), "p25": q(0.25), "median": q(0.5), "p75": q(0.75), "p95": q(0.95),
        "min_bin": nonzero.first().map(|b| [b.0 as f64 * w, (b.0 + 1) as f64 * w]),
        "max_bin": nonzero.last().map(|b| [b.0 as f64 * w, (b.0 + 1) as f64 * w]),
        "quantile_error_bound": w,
        "note": "mean and SD are exact; quantiles are interpolated in a histogram of the released bins and are within one bin width of the exact pooled quantile; the extremes are given as bins, since a single person's value is never released",
    })
}

/// Rate per 1,000 person-years with a 95% interval (log-normal on the count; Byar's approximation
/// would differ by little for the counts a released cell can have).
pub fn rate_per_1000(outcomes: f64, person_days: f64) -> (Option<f64>, Option<[f64; 2]>) {
    if person_days <= 0.0 {
        return (None, None);
    }
    let py = person_days / 365.25;
    let r = outcomes / py * 1000.0;
    if outcomes <= 0.0 {
        return (Some(0.0), Some([0.0, 3.689 / py * 1000.0]));
    }
    let se = 1.0 / outcomes.sqrt();
    (
        Some(r),
        Some([r * (-1.96 * se).exp(), r * (1.96 * se).exp()]),
    )
}

fn incidence_rows(t: &PooledTable, prefix: &[&str]) -> Vec<Value> {
    let np = prefix.len();
    let mut rows = Vec::new();
    for c in &t.cells {
        if !c.key.iter().zip(prefix).all(|(k, p)| k == p) {
            continue;
        }
        let (e, o, pd) = (c.values[0], c.values[1], c.values[2]);
        let (rate, ci) = rate_per_1000(o, pd);
        rows.push(json!({
            "age_group": c.key[np], "sex": c.key[np + 1],
            "entries": e, "outcomes": o, "person_years": round(pd / 365.25, 3),
            "rate_per_1000py": rate, "ci95": ci,
            "complete": c.withheld_at.is_empty(),
        }));
    }
    rows
}

fn age_key(s: &str) -> (i64, String) {
    let lo = s
        .split('-')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(i64::MAX);
    (lo, s.to_string())
}

fn kaplan_meier_curve(t: &PooledTable) -> Value {
    // Leaves: (day, status) → count.
    let mut by_day: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    let mut withheld = 0usize;
    for c in t.leaves() {
        let Ok(day) = c.key[0].parse::<i64>() else {
            continue;
        };
        let e = by_day.entry(day).or_default();
        if c.key[1] == "event" {
            e.0 += c.values[0];
        } else {
            e.1 += c.values[0];
        }
        withheld += c.withheld_at.len();
    }
    let mut at_risk: f64 = by_day.values().map(|(d, c)| d + c).sum();
    let (mut s, mut greenwood) = (1.0f64, 0.0f64);
    // The curve starts at 1 on day 0, unless there are events on day 0 itself.
    let mut points = Vec::new();
    if by_day.keys().next().is_some_and(|d| *d > 0) {
        points.push(json!({"day": 0, "at_risk": at_risk, "events": 0, "censored": 0, "survival": 1.0, "ci95": [1.0, 1.0]}));
    }
    for (day, (d, c)) in by_day {
        if at_risk <= 0.0 {
            break;
        }
        if d > 0.0 {
            s *= 1.0 - d / at_risk;
            if at_risk > d {
                greenwood += d / (at_risk * (at_risk - d));
            }
        }
        let se = greenwood.sqrt();
        points.push(json!({
            "day": day, "at_risk": at_risk, "events": d, "censored": c,
            "survival": s,
            "ci95": [(s * (-1.96 * se).exp()).clamp(0.0, 1.0), (s * (1.96 * se).exp()).clamp(0.0, 1.0)],
        }));
        at_risk -= d + c;
    }
    json!({
        "curve": points,
        "withheld_cells": withheld,
        "note": "product-limit estimate from the pooled events and censorings per time point (censorings at a time are at risk at that time); 95% interval with Greenwood's variance on the log scale",
    })
}

/// A rate ratio with its 95% interval from the standard error of its logarithm.
fn ratio_json(rr: f64, se: f64) -> Value {
    json!({"rate_ratio": rr, "ci95": [rr * (-1.96 * se).exp(), rr * (1.96 * se).exp()]})
}

/// Outcomes and person-years of one arm, with its rate.
fn arm_json(outcomes: f64, person_years: f64) -> Value {
    json!({"outcomes": outcomes, "person_years": person_years,
           "rate_per_1000py": rate_per_1000(outcomes, person_years * 365.25).0})
}

/// Totals and Mantel–Haenszel sums of target versus comparator over strata. Computed at each site
/// over its own strata (released as the `mh_terms` table) and at the hub over the pooled strata.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MhSums {
    pub outcomes_target: f64,
    pub person_years_target: f64,
    pub outcomes_comparator: f64,
    pub person_years_comparator: f64,
    /// Σ a·t0/T
    pub numerator: f64,
    /// Σ b·t1/T
    pub denominator: f64,
    /// Σ (a+b)·t1·t0/T², Greenland & Robins (1985)
    pub variance: f64,
    pub strata: usize,
}

impl MhSums {
    /// From comparative cells `(arm, stratum…) → [entries, outcomes, person-days]`; cells of other
    /// arms are ignored.
    pub fn of<'a>(cells: impl IntoIterator<Item = (&'a [String], &'a [f64])>) -> MhSums {
        let mut strata: BTreeMap<&[String], [f64; 4]> = BTreeMap::new();
        for (key, v) in cells {
            let arm = match key[0].as_str() {
                "target" => 0,
                "comparator" => 1,
                _ => continue,
            };
            let s = strata.entry(&key[1..]).or_default();
            s[arm * 2] += v[1];
            s[arm * 2 + 1] += v[2] / 365.25;
        }
        let mut m = MhSums {
            strata: strata.len(),
            ..MhSums::default()
        };
        for [a, pt1, b, pt0] in strata.values() {
            m.outcomes_target += a;
            m.person_years_target += pt1;
            m.outcomes_comparator += b;
            m.person_years_comparator += pt0;
            let tt = pt1 + pt0;
            if tt > 0.0 {
                m.numerator += a * pt0 / tt;
                m.denominator += b * pt1 / tt;
                m.variance += (a + b) * pt1 * pt0 / (tt * tt);
            }
        }
        m
    }

    /// The sums as released by a site, in the order of the `mh_terms` measures.
    pub fn terms(&self) -> [f64; 7] {
        [
            self.outcomes_target,
            self.outcomes_comparator,
            self.person_years_target,
            self.person_years_comparator,
            self.numerator,
            self.denominator,
            self.variance,
        ]
    }

    /// The pooled `mh_terms` table: the sum of the sites' terms.
    pub fn from_terms(t: &PooledTable) -> MhSums {
        let g = |m: &str| t.get(&[], m);
        MhSums {
            outcomes_target: g("outcomes_target"),
            person_years_target: g("person_years_target"),
            outcomes_comparator: g("outcomes_comparator"),
            person_years_comparator: g("person_years_comparator"),
            numerator: g("mh_numerator"),
            denominator: g("mh_denominator"),
            variance: g("mh_variance"),
            strata: 0,
        }
    }

    /// Crude rate ratio, `null` unless both arms have outcomes and person-time.
    pub fn crude(&self) -> Value {
        let (o1, t1, o0, t0) = (
            self.outcomes_target,
            self.person_years_target,
            self.outcomes_comparator,
            self.person_years_comparator,
        );
        if o1 > 0.0 && o0 > 0.0 && t1 > 0.0 && t0 > 0.0 {
            ratio_json((o1 / t1) / (o0 / t0), (1.0 / o1 + 1.0 / o0).sqrt())
        } else {
            Value::Null
        }
    }

    /// Mantel–Haenszel rate ratio with the Greenland–Robins variance of its logarithm.
    pub fn mantel_haenszel(&self) -> Value {
        let (num, den) = (self.numerator, self.denominator);
        if num > 0.0 && den > 0.0 {
            ratio_json(num / den, (self.variance / (num * den)).sqrt())
        } else {
            Value::Null
        }
    }
}

/// Crude and Mantel–Haenszel (age group × sex) rate ratios of target versus comparator.
pub fn rate_ratios(t: &PooledTable) -> Value {
    let m = MhSums::of(t.leaves().map(|c| (c.key.as_slice(), c.values.as_slice())));
    json!({
        "target": arm_json(m.outcomes_target, m.person_years_target),
        "comparator": arm_json(m.outcomes_comparator, m.person_years_comparator),
        "crude": m.crude(),
        "stratified_mh": m.mantel_haenszel(),
        "strata": m.strata,
        "note": "rate ratio of target versus comparator; stratified by age group and sex with the Mantel–Haenszel estimator and the Greenland–Robins variance",
    })
}

/// Mantel–Haenszel rate ratio with strata site × age group × sex, from the sites' summed terms.
/// Robust to small-cell suppression: each site releases sums over all its strata.
pub fn site_stratified(t: &PooledTable) -> Value {
    let m = MhSums::from_terms(t);
    let sites = t.cell(&[]).map(|c| c.sites).unwrap_or(0);
    match m.mantel_haenszel() {
        Value::Object(mut o) => {
            o.insert("outcomes_target".into(), json!(m.outcomes_target));
            o.insert("outcomes_comparator".into(), json!(m.outcomes_comparator));
            o.insert("sites".into(), json!(sites));
            o.insert("note".into(), json!("strata are site × age group × sex; each site releases its Mantel–Haenszel sums, which stay releasable when stratum cells are too small"));
            Value::Object(o)
        }
        other => other,
    }
}

/// The analysis-specific summary computed from the pooled tables.
pub fn summarize(spec: &AnalysisSpec, tables: &mut [PooledTable]) -> Value {
    use AnalysisSpec as A;
    match spec {
        A::Characterization(_) => {
            for t in tables.iter_mut() {
                if let Some(a) = t.name.parse().ok().and_then(crate::achilles::analysis) {
                    t.title = Some(a.name.to_string());
                }
            }
            let ms: BTreeMap<&str, u64> = tables
                .iter()
                .map(|t| {
                    (
                        t.name.as_str(),
                        t.elapsed_ms.values().copied().max().unwrap_or(0),
                    )
                })
                .collect();
            json!({"analyses": tables.len(), "slowest_site_ms": ms})
        }
        A::Descriptive(d) => descriptive_summary(tables, d.bin_width),
        A::IncidenceRate(_) => match tables.first() {
            Some(t) => {
                let mut rows = incidence_rows(t, &[]);
                rows.sort_by_key(|r| {
                    (
                        age_key(r["age_group"].as_str().unwrap_or("")),
                        r["sex"].as_str().unwrap_or("").to_string(),
                    )
                });
                json!({"strata": rows})
            }
            None => Value::Null,
        },
        A::KaplanMeier(_) => tables
            .first()
            .map(kaplan_meier_curve)
            .unwrap_or(Value::Null),
        A::ComparativeCohort(_) => {
            let mut v = tables
                .iter()
                .find(|t| t.name == "comparative")
                .map(rate_ratios)
                .unwrap_or(Value::Null);
            if let (Some(t), Value::Object(m)) =
                (tables.iter().find(|t| t.name == "mh_terms"), &mut v)
            {
                m.insert("site_stratified_mh".into(), site_stratified(t));
                // The crude ratio from the sites' totals, which survive when stratum cells do not.
                let sums = MhSums::from_terms(t);
                let crude = sums.crude();
                if !crude.is_null() {
                    m.insert("crude".into(), crude);
                    m.insert(
                        "target".into(),
                        arm_json(sums.outcomes_target, sums.person_years_target),
                    );
                    m.insert(
                        "comparator".into(),
                        arm_json(sums.outcomes_comparator, sums.person_years_comparator),
                    );
                }
            }
            v
        }
        A::CohortCharacterization(_) => {
            let get = |name: &str| tables.iter().find(|t| t.name == name);
            let dist = |t: Option<&PooledTable>| match t {
                Some(t) => {
                    let (m, sd) = mean_sd(t.get(&[], "n"), t.get(&[], "sum"), t.get(&[], "sum_sq"));
                    json!({"n": t.get(&[], "n"), "mean": m, "sd": sd})
                }
                None => Value::Null,
            };
            let persons = get("demographics").map(|t| t.get(&["*", "*"], "persons"));
            json!({
                "persons": persons,
                "age_at_index": dist(get("age_at_index")),
                "prior_observation_days": dist(get("prior_observation_days")),
            })
        }
        A::CrossTab(_)
        | A::PersonCount(_)
        | A::CohortCount(_)
        | A::Regression(_)
        | A::Surveillance(_)
        | A::Gwas(_)
        | A::Beacon(_)
        | A::VehicleEvents(_) => Value::Null,
    }
}

/// A GWAS in long form: its summary (`table = summary`) and every variant's statistics (`table =
/// variants`, stratum `chrom=…;pos=…;snp=…;a1=…;a2=…`, A1 the minor allele).
fn flatten_gwas(
    r: &crate::PooledResult,
    row: impl Fn(&str, String, String, Option<f64>, usize, String) -> StatRow,
) -> Vec<StatRow> {
    let mut out = Vec::new();
    let Ok(g) = serde_json::from_value::<crate::gwas::GwasResult>(r.value.clone()) else {
        return out;
    };
    let n = g.sites.len();
    for (name, x) in [
        ("variants", Some(g.variants as f64)),
        ("tested", Some(g.tested as f64)),
        ("cases", Some(g.cases as f64)),
        ("controls", Some(g.controls as f64)),
        ("samples", Some(g.samples as f64)),
        ("lambda_gc", g.lambda_gc),
        ("bonferroni_threshold", g.bonferroni),
        ("significant_bonferroni", Some(g.significant as f64)),
        ("significant_fdr_bh", Some(g.fdr_significant as f64)),
        ("withheld_variants", Some(g.withheld_variants as f64)),
    ] {
        out.push(row(
            "summary",
            format!("test={}", g.test),
            name.into(),
            x,
            n,
            String::new(),
        ));
    }
    for v in &g.results {
        let stratum = format!(
            "chrom={};pos={};snp={};a1={};a2={}",
            v.chrom, v.pos, v.snp, v.a1, v.a2
        );
        let t = v.case_control();
        let called = t.all().called() as f64;
        let withheld = if v.withheld > 0 {
            format!("{} sites", v.withheld)
        } else {
            String::new()
        };
        for (name, x) in [
            ("obs", Some(called)),
            ("maf", v.maf),
            ("hwe_p", v.hwe_p),
            ("chisq", v.chisq),
            ("p", v.p),
            ("or", v.or),
            ("fisher_p", v.fisher_p),
            ("trend_p", v.trend_p),
            ("beta", v.beta),
            ("se", v.se),
            ("glm_p", v.glm_p),
        ] {
            if x.is_some() || name == "maf" {
                out.push(row(
                    "variants",
                    stratum.clone(),
                    name.into(),
                    x,
                    n - (v.withheld as usize).min(n),
                    withheld.clone(),
                ));
            }
        }
    }
    out
}

/// One number of the national statistics: the long form of a pooled result, as the hub's
/// `national_cells` table and the `results.parquet`/CSV exports hold it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatRow {
    pub analysis_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Table within the analysis (`result` for the derived statistics, empty for a count).
    pub table: String,
    /// `dim=value;dim=value` (`*` a margin), empty for an unstratified number.
    pub stratum: String,
    pub statistic: String,
    pub value: Option<f64>,
    pub sites_released: usize,
    /// Sites that withheld this number (comma-separated).
    pub withheld_at: String,
}

/// Every number of a pooled result, one row each.
pub fn flatten(r: &crate::PooledResult) -> Vec<StatRow> {
    let row = |table: &str,
               stratum: String,
               statistic: String,
               value: Option<f64>,
               sites: usize,
               withheld: String| StatRow {
        analysis_id: r.id.clone(),
        kind: r.kind.clone(),
        table: table.to_string(),
        stratum,
        statistic,
        value,
        sites_released: sites,
        withheld_at: withheld,
    };
    let mut out = Vec::new();
    if r.kind == "surveillance" {
        // Weekly national cases by syndrome × group (withheld 1..9 as NULL, marked "hub"), and each
        // alert's severity and published case count.
        let v = &r.value;
        let weeks: Vec<&str> = v["week_ends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for s in v["weekly"].as_array().into_iter().flatten() {
            for (w, c) in s["counts"].as_array().into_iter().flatten().enumerate() {
                out.push(row(
                    "weekly",
                    format!(
                        "syndrome={};group={};week_ending={}",
                        s["syndrome"].as_str().unwrap_or(""),
                        s["group"].as_str().unwrap_or(""),
                        weeks.get(w).copied().unwrap_or("")
                    ),
                    "cases".into(),
                    c.as_f64(),
                    r.sites.len(),
                    if c.is_null() {
                        "hub".into()
                    } else {
                        String::new()
                    },
                ));
            }
        }
        for a in v["alerts"].as_array().into_iter().flatten() {
            let stratum = format!(
                "alert={};group={};syndrome={};first_day={}",
                a["id"],
                a["group"].as_str().unwrap_or(""),
                a["syndrome"].as_str().unwrap_or(""),
                a["first_day"].as_str().unwrap_or("")
            );
            out.push(row(
                "alerts",
                stratum.clone(),
                "severity".into(),
                a["severity"].as_f64(),
                r.sites.len(),
                String::new(),
            ));
            out.push(row(
                "alerts",
                stratum,
                "cases".into(),
                a["observed"].as_f64(),
                r.sites.len(),
                if a["observed"].is_null() {
                    "hub".into()
                } else {
                    String::new()
                },
            ));
        }
        return out;
    }
    if r.kind == "gwas" {
        return flatten_gwas(r, row);
    }
    if r.kind == "beacon" {
        // One row per variant and statistic (stratum `variant=…`); NULL where no site could say.
        let Ok(b) = serde_json::from_value::<crate::beacon::BeaconResult>(r.value.clone()) else {
            return out;
        };
        for v in &b.variants {
            let withheld: Vec<&str> = v.withheld.iter().map(|(s, _)| s.as_str()).collect();
            for (name, x) in [
                ("exists", v.exists.map(|e| f64::from(u8::from(e)))),
                ("sites_typed", Some(v.sites_typed as f64)),
                ("sites_exist", Some(v.sites_exist as f64)),
                ("carriers", v.carriers.map(|c| c as f64)),
                ("carriers_min", v.carriers_min.map(|c| c as f64)),
                ("carriers_max", v.carriers_max.map(|c| c as f64)),
                ("allele_count", v.allele_count.map(|c| c as f64)),
                ("allele_number", v.allele_number.map(|c| c as f64)),
                ("allele_frequency", v.allele_frequency),
            ] {
                out.push(row(
                    "variants",
                    format!("variant={}", v.variant),
                    name.into(),
                    x,
                    v.sites.len() - v.withheld.len(),
                    withheld.join(","),
                ));
            }
        }
        return out;
    }
    let tables: Option<Vec<PooledTable>> = r
        .value
        .get("tables")
        .and_then(|t| serde_json::from_value(t.clone()).ok());
    let Some(tables) = tables else {
        // A count.
        let released = r
            .sites
            .iter()
            .filter(|s| matches!(s.outcome, crate::SiteOutcome::Released { .. }))
            .count();
        let withheld: Vec<&str> = r
            .sites
            .iter()
            .filter(|s| matches!(s.outcome, crate::SiteOutcome::Suppressed { .. }))
            .map(|s| s.site.as_str())
            .collect();
        out.push(row(
            "",
            String::new(),
            "count".into(),
            r.value.as_f64(),
            released,
            withheld.join(","),
        ));
        return out;
    };
    fn walk(v: &Value, path: String, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((path, x));
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut nums = Vec::new();
    walk(&r.value["summary"], String::new(), &mut nums);
    for (path, x) in nums {
        out.push(row(
            "result",
            String::new(),
            path,
            Some(x),
            0,
            String::new(),
        ));
    }
    for t in &tables {
        for c in &t.cells {
            let stratum = t
                .dims
                .iter()
                .zip(&c.key)
                .map(|(d, k)| format!("{d}={k}"))
                .collect::<Vec<_>>()
                .join(";");
            for (m, v) in t.measures.iter().zip(&c.values) {
                out.push(row(
                    &t.name,
                    stratum.clone(),
                    m.clone(),
                    (c.sites > 0).then_some(*v),
                    c.sites,
                    c.withheld_at.join(","),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_bin() {
        let values: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37) % 97.0).collect();
        let w = 2.5;
        let mut bins: BTreeMap<i64, f64> = BTreeMap::new();
        for v in &values {
            *bins.entry((v / w).floor() as i64).or_default() += 1.0;
        }
        let bins: Vec<(i64, f64)> = bins.into_iter().collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.05, 0.25, 0.5, 0.75, 0.95] {
            let exact = sorted[((q * 1000.0) as usize).min(999)];
            let est = histogram_quantile(&bins, w, q).unwrap();
            assert!((est - exact).abs() <= w, "q{q}: {est} vs {exact}");
        }
    }

    #[test]
    fn mantel_haenszel_removes_confounding_by_stratum() {
        // Two strata with a true ratio of 2 and different baseline rates and exposure mixes.
        let mut t = PooledTable {
            name: "comparative".into(),
            title: None,
            dims: vec!["arm".into(), "age_group".into(), "sex".into()],
            measures: vec!["entries".into(), "outcomes".into(), "person_days".into()],
            elapsed_ms: BTreeMap::new(),
            withheld_by: BTreeMap::new(),
            cells: Vec::new(),
        };
        let py = 365.25;
        for (arm, age, o, years) in [
            ("target", "50-59", 20.0, 1000.0),
            ("comparator", "50-59", 10.0, 1000.0),
            ("target", "70-79", 40.0, 200.0),
            ("comparator", "70-79", 200.0, 2000.0),
        ] {
            t.cells.push(PooledCell {
                key: vec![arm.into(), age.into(), "female".into()],
                values: vec![1.0, o, years * py],
                sites: 1,
                withheld_at: vec![],
            });
        }
        let r = rate_ratios(&t);
        let mh = r["stratified_mh"]["rate_ratio"].as_f64().unwrap();
        assert!((mh - 2.0).abs() < 1e-9, "{r}");
        let crude = r["crude"]["rate_ratio"].as_f64().unwrap();
        assert!(crude < 1.0, "confounded crude ratio {crude}");
    }

    #[test]
    fn kaplan_meier_matches_a_hand_computation() {
        let mut t = PooledTable {
            name: "survival".into(),
            title: None,
            dims: vec!["day".into(), "status".into()],
            measures: vec!["entries".into()],
            elapsed_ms: BTreeMap::new(),
            withheld_by: BTreeMap::new(),
            cells: Vec::new(),
        };
        // 10 at risk: 2 events at day 5, 1 censored at 5, 3 events at 10, 4 censored at 20.
        for (d, s, n) in [
            ("5", "event", 2.0),
            ("5", "censored", 1.0),
            ("10", "event", 3.0),
            ("20", "censored", 4.0),
        ] {
            t.cells.push(PooledCell {
                key: vec![d.into(), s.into()],
                values: vec![n],
                sites: 1,
                withheld_at: vec![],
            });
        }
        let v = kaplan_meier_curve(&t);
        let c = v["curve"].as_array().unwrap();
        assert_eq!(c[0]["survival"].as_f64().unwrap(), 1.0);
        assert_eq!(c[1]["survival"].as_f64().unwrap(), 0.8);
        let s10 = 0.8 * (1.0 - 3.0 / 7.0);
        assert!((c[2]["survival"].as_f64().unwrap() - s10).abs() < 1e-12);
        assert_eq!(c[3]["at_risk"].as_f64().unwrap(), 4.0);
    }
}
