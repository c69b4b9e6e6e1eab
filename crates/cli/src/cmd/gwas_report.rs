//! The GWAS section of the demo report: a Manhattan plot, a QQ plot with the genomic-control λ,
//! the top hits, and the planted causal variants against the power the truth predicts. Drawn from
//! the pooled result only.

use std::fmt::Write as _;

use medfed_analysis::gwas::{known_effects, GwasResult};
use serde_json::Value;

use super::report::esc;

const CHROM_COLOURS: [&str; 2] = ["#1f4e79", "#7f9fbf"];

/// −log10 p, capped so that a p of 0 (underflow) still plots.
fn neglog(p: f64) -> f64 {
    -(p.max(1e-300)).log10()
}

/// Manhattan plot: −log10 p of every variant along the genome (chromosomes side by side, each as
/// wide as its number of variants), the Bonferroni line, and the planted causal variants circled.
pub fn manhattan_svg(r: &GwasResult, causal: &[String]) -> String {
    let (w, h, left, bottom) = (900.0, 300.0, 44.0, 34.0);
    let pts: Vec<(usize, &str, f64, bool)> = r
        .results
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            r.p_of(v)
                .map(|p| (i, v.chrom.as_str(), neglog(p), causal.contains(&v.snp)))
        })
        .collect();
    let n = r.results.len().max(1) as f64;
    let bonf = r.bonferroni.map(neglog).unwrap_or(0.0);
    let top = pts
        .iter()
        .map(|p| p.2)
        .fold(bonf + 1.0, f64::max)
        .ceil()
        .max(4.0);
    let x = |i: usize| left + (i as f64 + 0.5) / n * (w - left - 10.0);
    let y = |l: f64| h - bottom - l / top * (h - bottom - 10.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="Manhattan plot">"##
    );
    // Chromosome labels at the middle of each run of variants, colours alternating.
    let mut runs: Vec<(&str, usize, usize)> = Vec::new();
    for (i, v) in r.results.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if run.0 == v.chrom => run.2 = i,
            _ => runs.push((v.chrom.as_str(), i, i)),
        }
    }
    for (c, a, b) in &runs {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle">{}</text>"#,
            (x(*a) + x(*b)) / 2.0,
            h - bottom + 12.0,
            esc(c)
        );
    }
    let colour_of = |chrom: &str| {
        let k = runs.iter().position(|r| r.0 == chrom).unwrap_or(0);
        CHROM_COLOURS[k % 2]
    };
    for (i, c, l, _) in &pts {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}"/>"#,
            x(*i),
            y(*l),
            colour_of(c)
        );
    }
    for (i, _, l, is_causal) in &pts {
        if *is_causal {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="none" stroke="#c0504d" stroke-width="1.5"><title>{} (planted)</title></circle>"##,
                x(*i),
                y(*l),
                esc(&r.results[*i].snp)
            );
        }
    }
    if bonf > 0.0 {
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#c0504d" stroke-dasharray="5 3"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#c0504d">Bonferroni</text>"##,
            y(bonf),
            w - 10.0,
            y(bonf),
            w - 12.0,
            y(bonf) - 3.0
        );
    }
    let step = (top / 4.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= top {
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{t:.0}</text>"#,
            left - 4.0,
            y(t) + 3.0
        );
        t += step;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">chromosome</text><text x="12" y="{:.1}" font-size="11" transform="rotate(-90 12 {:.1})" text-anchor="middle">−log10 p</text></svg>"#,
        (w + left) / 2.0,
        h - 4.0,
        (h - bottom) / 2.0,
        (h - bottom) / 2.0
    );
    s
}

/// QQ plot of the main test's p-values against the uniform, with λ.
pub fn qq_svg(r: &GwasResult) -> String {
    let (w, h, m) = (320.0, 320.0, 40.0);
    let mut obs: Vec<f64> = r
        .results
        .iter()
        .filter_map(|v| r.p_of(v))
        .map(neglog)
        .collect();
    obs.sort_by(|a, b| b.total_cmp(a));
    let k = obs.len().max(1) as f64;
    let exp: Vec<f64> = (0..obs.len())
        .map(|i| neglog((i as f64 + 0.5) / k))
        .collect();
    let top = obs.iter().chain(&exp).fold(1.0f64, |a, b| a.max(*b)).ceil();
    let x = |v: f64| m + v / top * (w - m - 10.0);
    let y = |v: f64| h - m - v / top * (h - m - 10.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="QQ plot"><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
        x(0.0),
        y(0.0),
        x(top),
        y(top)
    );
    for (e, o) in exp.iter().zip(&obs) {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="#1f4e79"/>"##,
            x(*e),
            y(*o)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="24" font-size="12">λ = {:.3}</text><text x="{:.1}" y="{}" font-size="11" text-anchor="middle">expected −log10 p</text><text x="12" y="{:.1}" font-size="11" transform="rotate(-90 12 {:.1})" text-anchor="middle">observed −log10 p</text></svg>"#,
        m + 8.0,
        r.lambda_gc.unwrap_or(f64::NAN),
        (w + m) / 2.0,
        h - 6.0,
        h / 2.0,
        h / 2.0
    );
    s
}

/// The planted causal variants of a trait from the ground truth: (id, risk-allele frequency, OR).
pub fn planted(truth: &Value, trait_: &str) -> Vec<(String, f64, f64)> {
    truth["causal_variants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["trait_"] == trait_)
        .filter_map(|c| {
            Some((
                c["id"].as_str()?.to_string(),
                c["a1_freq"].as_f64()?,
                c["odds_ratio_per_a1"].as_f64()?,
            ))
        })
        .collect()
}

/// The GWAS section of the demo report.
pub fn gwas_section(results: &Value, truth: &Value, latency_s: f64) -> String {
    let mut h = String::new();
    let _ = write!(h, "<h2>New-drug R&amp;D: federated genome-wide association</h2><p>The GWAS study, <code>examples/studies/gwas.json</code>, ran in <b>{latency_s:.1} s</b>. Every hospital holds its biobank's genotypes as PLINK files keyed by <code>person_id</code>; the phenotype (a cohort entered in five years) and the covariates come from its CDM. The hub asked for each hospital's variant panel, then genotype tables by chunk of variants (cases and controls × genotype), then per-variant logistic regression sums in Newton rounds. A hospital withholds any variant whose minor-allele count there is under its minimum. The pooled tables give PLINK's <code>--assoc</code>, <code>--model</code>, <code>--hardy</code>, <code>--freq</code> and <code>--adjust</code> exactly, and the regression is the pooled fit (PLINK report files are in <code>results/gwas/</code>).</p>");
    for r in results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "gwas")
    {
        let id = r["id"].as_str().unwrap_or("");
        let Ok(g) = serde_json::from_value::<GwasResult>(r["value"].clone()) else {
            let _ = write!(
                h,
                "<h3>{}</h3><p>No result: {}</p>",
                esc(id),
                esc(&super::study::notes_text(r))
            );
            continue;
        };
        if let Some(e) = &g.error {
            let _ = write!(h, "<h3>{}</h3><p>Stopped: {}</p>", esc(id), esc(e));
            continue;
        }
        let trait_ = id.trim_start_matches("gwas_");
        let known = planted(truth, trait_);
        let causal: Vec<String> = known.iter().map(|k| k.0.clone()).collect();
        let _ = write!(
            h,
            "<h3>{} <small>({} test with age and sex; {} cases, {} controls; {} variants, {} withheld somewhere)</small></h3>",
            esc(id),
            esc(&g.test),
            g.cases,
            g.controls,
            g.tested,
            g.withheld_variants
        );
        h.push_str(&manhattan_svg(&g, &causal));
        h.push_str("<div style=\"display:flex;gap:2em;align-items:flex-start\">");
        h.push_str(&qq_svg(&g));
        h.push_str("<div><table><tr><th>variant</th><th>chr:pos</th><th>A1</th><th>MAF</th><th>OR</th><th>p</th><th>allelic p</th><th>HWE p</th></tr>");
        for i in g.top.iter().take(10) {
            let v = &g.results[*i];
            let mark = if causal.contains(&v.snp) { " ★" } else { "" };
            let _ = write!(
                h,
                "<tr><td>{}{mark}</td><td>{}:{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2e}</td><td>{:.2e}</td><td>{:.2}</td></tr>",
                esc(&v.snp),
                esc(&v.chrom),
                v.pos,
                esc(&v.a1),
                v.maf.unwrap_or(f64::NAN),
                v.beta.map(f64::exp).or(v.or).unwrap_or(f64::NAN),
                g.p_of(v).unwrap_or(f64::NAN),
                v.p.unwrap_or(f64::NAN),
                v.hwe_p.unwrap_or(f64::NAN)
            );
        }
        let _ = write!(
            h,
            "</table><p>Top hits (★ planted). λ = {:.3}; {} variants under the Bonferroni level {:.1e}, {} at a false discovery rate of 5%.</p></div></div>",
            g.lambda_gc.unwrap_or(f64::NAN),
            g.significant,
            g.bonferroni.unwrap_or(f64::NAN),
            g.fdr_significant
        );
        if !known.is_empty() {
            let (effects, others) = known_effects(&g, &known);
            let expected: f64 = effects.iter().map(|e| e.power).sum();
            let found = effects.iter().filter(|e| e.found).count();
            let _ = write!(h, "<p>Planted causal variants for this trait: <b>{found} found</b> where the allelic test's power with these cases and controls predicts <b>{expected:.1}</b> of {}; {others} other variants passed the Bonferroni level. The planted odds ratios are conditional on the full risk model (BMI, glucose, …); the GWAS adjusts for age and sex only, so its estimates are a little lower.</p><table><tr><th>variant</th><th>risk allele freq.</th><th>planted OR</th><th>estimated OR</th><th>p</th><th>power</th><th>found</th></tr>", known.len());
            for e in &effects {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td><td>{:.2e}</td><td>{:.0}%</td><td>{}</td></tr>",
                    esc(&e.snp),
                    e.freq,
                    e.odds_ratio,
                    e.estimated_or.unwrap_or(f64::NAN),
                    e.p.unwrap_or(f64::NAN),
                    100.0 * e.power,
                    if e.found { "yes" } else { "no" }
                );
            }
            h.push_str("</table>");
        }
    }
    h
}
