//! `medfed beacon`: ask the network whether anyone carries a variant (GA4GH Beacon v2
//! `/api/g_variants` on the hub).

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::study::{Client, HubArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    hub: HubArgs,
    /// Variant to look up, CHROM:POS:REF:ALT with a 1-based position (repeat for several, up to
    /// 100), e.g. `--variant 1:1234567:A:G` or `--variant chrX:100:C:T`.
    #[arg(long = "variant", required = true)]
    variants: Vec<String>,
    /// What to ask for: boolean (carried anywhere?), count (how many carriers) or frequency
    /// (allele count and number). Each hospital answers at most at its own policy's level.
    #[arg(long, default_value = "count")]
    granularity: String,
    /// Read the researcher token from this file (e.g. a hub's researchers/NAME.token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the Beacon v2 response as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `CHROM:POS:REF:ALT` → Beacon v2 request parameters (0-based start).
pub fn parameters(v: &str) -> anyhow::Result<Value> {
    let f: Vec<&str> = v.split(':').collect();
    let [chrom, pos, r, a] = f[..] else {
        bail!("--variant {v:?}: write CHROM:POS:REF:ALT, e.g. 1:1234567:A:G");
    };
    let pos: u64 = pos
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .with_context(|| format!("--variant {v:?}: position {pos:?} is not 1 or more"))?;
    Ok(
        json!({"referenceName": chrom, "start": [pos - 1], "referenceBases": r, "alternateBases": a}),
    )
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut hub = a.hub.clone();
    if let Some(f) = &a.token_file {
        let t =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        hub.token = Some(t.trim().to_string());
    }
    let params: Vec<Value> = a
        .variants
        .iter()
        .map(|v| parameters(v))
        .collect::<anyhow::Result<_>>()?;
    let body = json!({
        "meta": {"apiVersion": "v2.0.0"},
        "query": {"requestParameters": if params.len() == 1 { params[0].clone() } else { Value::Array(params) },
                  "requestedGranularity": a.granularity},
    });
    let client = Client::new(&hub)?;
    let r = client.post("/api/g_variants", body.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print!("{}", render(&r));
    Ok(())
}

/// The response as a few lines of text: the network's answer per variant, then each hospital's.
pub fn render(r: &Value) -> String {
    let mut out = String::new();
    let net = &r["info"]["network"];
    out.push_str(&format!(
        "beacon {}: answered at {} level{}\n",
        r["meta"]["beaconId"].as_str().unwrap_or(""),
        r["meta"]["returnedGranularity"].as_str().unwrap_or("?"),
        if r["info"]["complete"] == true {
            ""
        } else {
            " (not every hospital answered in time)"
        }
    ));
    for v in net["variants"].as_array().into_iter().flatten() {
        let exists = match v["exists"].as_bool() {
            Some(true) => "carried",
            Some(false) => "not carried",
            None => "unknown (withheld)",
        };
        let mut line = format!("  {:<24} {exists}", v["variant"].as_str().unwrap_or(""));
        match (
            v["carriers"].as_u64(),
            v["carriers_min"].as_u64(),
            v["carriers_max"].as_u64(),
        ) {
            (Some(c), _, _) => line.push_str(&format!(", {c} carriers")),
            (None, Some(lo), Some(hi)) => line.push_str(&format!(", {lo}-{hi} carriers")),
            _ => {}
        }
        if let Some(f) = v["allele_frequency"].as_f64() {
            line.push_str(&format!(
                ", allele frequency {f:.5} ({}/{})",
                v["allele_count"], v["allele_number"]
            ));
        }
        out.push_str(&line);
        out.push('\n');
        for s in v["sites"].as_array().into_iter().flatten() {
            let a = &s[1];
            let what = if !a["typed"].as_bool().unwrap_or(false) {
                "not typed".to_string()
            } else if let Some(w) = a["withheld"]["rule"].as_str() {
                match (w, a["exists"].as_bool()) {
                    ("probe_budget", _) => format!(
                        "withheld: rare-variant budget of {} spent",
                        a["withheld"]["budget"]
                    ),
                    (_, Some(true)) => "carried (count withheld: small)".into(),
                    _ => format!("withheld ({w})"),
                }
            } else {
                match (a["exists"].as_bool(), a["carriers"].as_u64()) {
                    (Some(e), Some(c)) => format!(
                        "{}, {c} carriers",
                        if e { "carried" } else { "not carried" }
                    ),
                    (Some(true), None) => "carried".into(),
                    (Some(false), None) => "not carried".into(),
                    _ => "no answer".into(),
                }
            };
            out.push_str(&format!(
                "      {:<20} {what}\n",
                s[0].as_str().unwrap_or("")
            ));
        }
    }
    for n in r["info"]["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("  note: {}\n", n.as_str().unwrap_or("")));
    }
    out
}

/// The demo's look-ups: a clinician's question and a prober held to the budget.
pub struct DemoLookups {
    pub clinician: Value,
    pub prober: Value,
    /// Rare variants the prober asked for in one request.
    pub probes: usize,
    pub seconds: f64,
}

/// Run the demo's beacon look-ups over the hub: the default researcher (a clinician) asks about
/// the planted causal variant `rs_causal1`, a common variant and a position no panel has; the
/// researcher `prober` asks for 60 rare variants at once, which each hospital answers only up to
/// its budget. Variants are picked from the first hospital's panel (the panel is public; the
/// frequencies the demo reads to pick rare ones stand for an attacker's own reference data).
pub fn demo_lookups(
    client: &Client,
    prober: &Client,
    site: &std::path::Path,
) -> anyhow::Result<DemoLookups> {
    let bed = medfed_genomics::Bed::open(&site.join("genotypes/site"))?;
    let spec = |v: &medfed_genomics::Variant| json!({"referenceName": v.chrom, "start": [v.pos - 1], "referenceBases": v.a2, "alternateBases": v.a1});
    let freq: Vec<f64> = (0..bed.variants.len())
        .map(|i| bed.counts(i).a1_freq())
        .collect();
    let causal = bed
        .variants
        .iter()
        .find(|v| v.id == "rs_causal1")
        .context("the panel has no rs_causal1")?;
    let common = (0..bed.variants.len())
        .max_by(|&a, &b| freq[a].total_cmp(&freq[b]))
        .context("empty panel")?;
    let first = &bed.variants[0];
    let nowhere = json!({"referenceName": first.chrom, "start": [first.pos], "referenceBases": "A", "alternateBases": "T"});
    let t = std::time::Instant::now();
    let ask = |c: &Client, params: Vec<Value>, g: &str| {
        c.post(
            "/api/g_variants",
            json!({"meta": {"apiVersion": "v2.0.0"},
                   "query": {"requestParameters": params, "requestedGranularity": g}})
            .to_string(),
        )
    };
    let clinician = ask(
        client,
        vec![spec(causal), spec(&bed.variants[common]), nowhere],
        "count",
    )?;
    let rare: Vec<Value> = (0..bed.variants.len())
        .filter(|&i| freq[i] < 0.03)
        .take(60)
        .map(|i| spec(&bed.variants[i]))
        .collect();
    let probes = rare.len();
    let prober = ask(prober, rare, "boolean")?;
    Ok(DemoLookups {
        clinician,
        prober,
        probes,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The report's beacon section: the clinician's answers by hospital, and the prober's look-ups
/// answered and withheld at each hospital.
pub fn section(d: &DemoLookups) -> String {
    use super::report::esc;
    use std::fmt::Write as _;
    let mut h = String::new();
    let _ = write!(h, "<h2>Variant look-ups (GA4GH Beacon v2)</h2><p>A clinician asks the hub's <code>/api/g_variants</code> whether anyone carries a variant (<code>medfed beacon --variant 1:1234:A:G</code>). The hub turns the question into signed tasks carrying the researcher's name; each hospital counts carriers in its genotypes and answers at the level its policy allows (here <i>count</i>): a count of 1–9 carriers only says the allele exists. Each hospital also charges every look-up of a <i>rare</i> variant (alternate allele frequency under 5&nbsp;% there, absent ones included) to the researcher, once per variant, and withholds further rare look-ups past its budget (50): answers about rare alleles are what membership-inference attacks on beacons use (Shringarpure and Bustamante 2015). Both look-ups took {:.1} s.</p>", d.seconds);
    h.push_str("<h3>The clinician's question</h3><table><tr><th>variant</th><th>network</th>");
    let sites: Vec<String> = d.clinician["response"]["resultSets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["id"].as_str().unwrap_or("").to_string())
        .collect();
    for s in &sites {
        let _ = write!(h, "<th>{}</th>", esc(s));
    }
    h.push_str("</tr>");
    for v in d.clinician["info"]["network"]["variants"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let net = match (v["exists"].as_bool(), v["carriers"].as_u64()) {
            (Some(true), Some(c)) => format!("carried by {c}"),
            (Some(true), None) => format!("carried by {}–{}", v["carriers_min"], v["carriers_max"]),
            (Some(false), _) if v["sites_typed"] == 0 => "on no hospital's panel".into(),
            (Some(false), _) => "not carried".into(),
            (None, _) => "withheld".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td>",
            esc(v["variant"].as_str().unwrap_or("")),
            esc(&net)
        );
        for s in v["sites"].as_array().into_iter().flatten() {
            let a = &s[1];
            let cell = match (
                a["typed"].as_bool(),
                a["exists"].as_bool(),
                a["carriers"].as_u64(),
            ) {
                (Some(false), _, _) => "not typed".to_string(),
                (_, Some(true), Some(c)) => c.to_string(),
                (_, Some(true), None) => "yes (1–9)".into(),
                (_, Some(false), _) => "0".into(),
                _ => "withheld".into(),
            };
            let _ = write!(h, "<td>{}</td>", esc(&cell));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    let _ = write!(h, "<h3>A prober held to the budget</h3><p>The researcher <code>prober</code> asks for {} rare variants in one request. Each hospital answers the first ones up to its budget and withholds the rest, whatever the answer would have been; common variants stay free.</p>", d.probes);
    let (w, row) = (560.0, 26.0);
    let _ = write!(
        h,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}">"#,
        sites.len() as f64 * row + 30.0
    );
    let variants = d.prober["info"]["network"]["variants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, site) in sites.iter().enumerate() {
        let (mut answered, mut withheld) = (0usize, 0usize);
        for v in &variants {
            let a = v["sites"]
                .as_array()
                .and_then(|s| s.iter().find(|p| p[0] == site.as_str()))
                .map(|p| &p[1]);
            match a {
                Some(a) if a["withheld"]["rule"] == "probe_budget" => withheld += 1,
                Some(a) if !a["exists"].is_null() => answered += 1,
                _ => {}
            }
        }
        let n = d.probes.max(1) as f64;
        let y = i as f64 * row + 4.0;
        let (wa, ww) = (
            answered as f64 / n * (w - 220.0),
            withheld as f64 / n * (w - 220.0),
        );
        let _ = write!(
            h,
            r##"<text x="0" y="{:.1}" font-size="12">{}</text><rect x="100" y="{y}" width="{wa:.1}" height="18" fill="#4f81bd"/><rect x="{:.1}" y="{y}" width="{ww:.1}" height="18" fill="#bbb"/><text x="{:.1}" y="{:.1}" font-size="11">{answered} answered, {withheld} withheld</text>"##,
            y + 13.0,
            esc(site),
            100.0 + wa,
            105.0 + wa + ww,
            y + 13.0
        );
    }
    let _ = write!(
        h,
        r##"<text x="100" y="{:.1}" font-size="11" fill="#4f81bd">answered</text><text x="170" y="{:.1}" font-size="11" fill="#888">withheld: budget spent</text></svg>"##,
        sites.len() as f64 * row + 20.0,
        sites.len() as f64 * row + 20.0
    );
    h
}
