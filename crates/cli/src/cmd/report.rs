//! The R&D catalog section of the demo report: plots and tables drawn from the pooled results only
//! (what the hub received), never from the sites' rows.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

fn result<'a>(results: &'a Value, ty: &str) -> Vec<&'a Value> {
    results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == ty)
        .collect()
}

fn table<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    r["value"]["tables"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
}

/// Leaf cells of a pooled table as (key, first value, withheld somewhere).
fn cells(t: &Value) -> Vec<(Vec<String>, Vec<f64>, bool)> {
    t["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let key: Vec<String> = c["key"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k.as_str().unwrap_or("").to_string())
                .collect();
            let v: Vec<f64> = c["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_f64().unwrap_or(0.0))
                .collect();
            let withheld = c["withheld_at"].as_array().is_some_and(|a| !a.is_empty());
            (key, v, withheld)
        })
        .collect()
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Horizontal bars with labels and values.
pub fn hbars(items: &[(String, f64, bool)], color: &str, unit: &str) -> String {
    let (w, row, left) = (760.0, 20.0, 300.0);
    let max = items.iter().map(|x| x.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img">"#,
        items.len() as f64 * row + 10.0
    );
    for (i, (name, v, partial)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let bw = v / max * (w - left - 90.0);
        let _ = write!(
            s,
            r#"<text x="0" y="{:.1}" font-size="11">{}</text><rect x="{left}" y="{y}" width="{bw:.1}" height="{}" fill="{color}" {}/><text x="{:.1}" y="{:.1}" font-size="11">{}{unit}{}</text>"#,
            y + 13.0,
            esc(name),
            row - 5.0,
            if *partial {
                r#"fill-opacity="0.5""#
            } else {
                ""
            },
            left + bw + 4.0,
            y + 13.0,
            fmt_num(*v),
            if *partial { " (lower bound)" } else { "" }
        );
    }
    s.push_str("</svg>");
    s
}

/// HTML-escape text for the report.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Population pyramid as inline SVG: men to the left, women to the right.
pub fn pyramid_svg(p: &[[i64; 18]; 2]) -> String {
    let max = p.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let (w, row, mid) = (640.0, 18.0, 320.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img" aria-label="population pyramid">"#,
        18.0 * row + 30.0
    );
    for (b, (&men, &women)) in p[0].iter().zip(&p[1]).enumerate() {
        let y = (17 - b) as f64 * row + 20.0;
        let lm = men as f64 / max * (mid - 50.0);
        let lf = women as f64 / max * (mid - 50.0);
        let label = if b == 17 {
            "85+".to_string()
        } else {
            format!("{}-{}", b * 5, b * 5 + 4)
        };
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{y}" width="{lm:.1}" height="{}" fill="#4a78b5"><title>men {label}: {}</title></rect>"##,
            mid - 25.0 - lm,
            row - 2.0,
            p[0][b]
        );
        let _ = write!(
            s,
            r##"<rect x="{}" y="{y}" width="{lf:.1}" height="{}" fill="#c0504d"><title>women {label}: {}</title></rect>"##,
            mid + 25.0,
            row - 2.0,
            p[1][b]
        );
        let _ = write!(
            s,
            r#"<text x="{mid}" y="{:.1}" font-size="10" text-anchor="middle">{label}</text>"#,
            y + row - 6.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="10" y="12" font-size="12">men</text><text x="{}" y="12" font-size="12" text-anchor="end">women</text></svg>"#,
        w - 10.0
    );
    s
}

/// Age/sex pyramid in 5-year bands from Achilles 102 (persons by age at first observation and gender).
fn pyramid(t: &Value) -> String {
    // Persons by sex (men, women) and 5-year band, 85+ in the last; other genders and negative
    // bands are not drawn.
    let mut p = [[0i64; 18]; 2];
    let mut withheld = 0;
    for (k, v, w) in cells(t) {
        if k.iter().any(|x| x == "*") {
            continue;
        }
        let (Ok(age), Ok(g)) = (k[0].parse::<i64>(), k[1].parse::<i64>()) else {
            continue;
        };
        let side = match g {
            8507 => 0,
            8532 => 1,
            _ => continue,
        };
        withheld += w as usize;
        let band = (age / 5).min(17);
        if band >= 0 {
            p[side][band as usize] += v[0] as i64;
        }
    }
    let mut s = pyramid_svg(&p);
    if withheld > 0 {
        let _ = write!(s, "<p><small>{withheld} single-year cells were withheld at one or more hospitals (small cells and complements); their bands are lower bounds.</small></p>");
    }
    s
}

/// Kaplan–Meier step curve with its 95% band.
fn km_svg(curve: &[Value]) -> String {
    let (w, h, l, b) = (700.0, 300.0, 50.0, 30.0);
    let pts: Vec<(f64, f64, f64, f64)> = curve
        .iter()
        .map(|p| {
            (
                p["day"].as_f64().unwrap_or(0.0),
                p["survival"].as_f64().unwrap_or(1.0),
                p["ci95"][0].as_f64().unwrap_or(1.0),
                p["ci95"][1].as_f64().unwrap_or(1.0),
            )
        })
        .collect();
    let tmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let smin = pts.iter().map(|p| p.2).fold(1.0, f64::min).clamp(0.0, 0.9);
    let x = |t: f64| l + t / tmax * (w - l - 10.0);
    let y = |s: f64| 10.0 + (1.0 - s) / (1.0 - smin) * (h - b - 10.0);
    let mut line = String::new();
    let mut band_hi = String::new();
    let mut band_lo = Vec::new();
    let mut prev: Option<(f64, f64, f64, f64)> = None;
    for p in &pts {
        if let Some(q) = prev {
            let _ = write!(line, " L{:.1},{:.1}", x(p.0), y(q.1));
            let _ = write!(band_hi, " L{:.1},{:.1}", x(p.0), y(q.3));
            band_lo.push(format!("L{:.1},{:.1}", x(p.0), y(q.2)));
        }
        let _ = write!(
            line,
            "{}{:.1},{:.1}",
            if prev.is_none() { "M" } else { " L" },
            x(p.0),
            y(p.1)
        );
        let _ = write!(
            band_hi,
            "{}{:.1},{:.1}",
            if prev.is_none() { "M" } else { " L" },
            x(p.0),
            y(p.3)
        );
        band_lo.push(format!("L{:.1},{:.1}", x(p.0), y(p.2)));
        prev = Some(*p);
    }
    band_lo.reverse();
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="Kaplan-Meier curve">"#
    );
    let _ = write!(
        s,
        r##"<path d="{band_hi} {} Z" fill="#4a78b5" fill-opacity="0.2"/><path d="{line}" fill="none" stroke="#4a78b5" stroke-width="2"/>"##,
        band_lo.join(" ")
    );
    for i in 0..=4 {
        let sv = smin + (1.0 - smin) * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{sv:.3}</text>"##,
            w - 10.0,
            y(sv),
            y(sv),
            l - 4.0,
            y(sv) + 3.0
        );
        let t = tmax * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{t:.0} d</text>"#,
            x(t),
            h - 10.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The catalog section: characterization, pyramid, top conditions, descriptive statistics,
/// incidence, survival and the comparative study against the planted truth.
pub fn catalog_section(
    results: &Value,
    names: &HashMap<i64, String>,
    truth: &Value,
    latency_s: f64,
) -> String {
    let name = |id: &str| -> String {
        id.parse::<i64>()
            .ok()
            .and_then(|i| names.get(&i).cloned())
            .map(|n| format!("{n} ({id})"))
            .unwrap_or_else(|| id.to_string())
    };
    let mut h = String::new();
    let _ = write!(h, "<h2>R&amp;D catalog: characterization, incidence, survival, comparative safety</h2><p>A second study, <code>examples/studies/rd-catalog.json</code>, ran through the same network in <b>{latency_s:.1} s</b>. Every number below was pooled at the hub from tables the hospitals released after their disclosure check (minimum cell count 10 with complementary suppression, minimum cohort 20, differencing on cohorts). Bars drawn lighter include cells withheld at some hospital and are lower bounds. The long form is in the hub's <code>national_cells</code> table and <code>results/catalog/results.parquet</code>.</p>");
    if let Some(ach) = result(results, "characterization").first() {
        if let Some(t) = table(ach, "102") {
            h.push_str("<h3>Age and sex at first observation (Achilles 102, pooled)</h3>");
            h.push_str(&pyramid(t));
        }
        if let Some(t) = table(ach, "400") {
            let mut top: Vec<(String, f64, bool)> = cells(t)
                .into_iter()
                .map(|(k, v, w)| (name(&k[0]), v[0], w))
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.truncate(15);
            h.push_str("<h3>Top conditions: persons with at least one record (Achilles 400)</h3>");
            h.push_str(&hbars(&top, "#9bbb59", ""));
        }
        h.push_str("<h3>Characterization run time per analysis (slowest hospital)</h3><table><tr><th>Achilles analysis</th><th>cells</th><th>ms</th></tr>");
        for t in ach["value"]["tables"].as_array().into_iter().flatten() {
            let ms = t["elapsed_ms"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_u64()).max().unwrap_or(0))
                .unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td>{ms}</td></tr>",
                esc(t["name"].as_str().unwrap_or("")),
                esc(t["title"].as_str().unwrap_or("")),
                t["cells"].as_array().map_or(0, |c| c.len())
            );
        }
        h.push_str("</table>");
    }
    let desc = result(results, "descriptive");
    if !desc.is_empty() {
        h.push_str("<h3>Descriptive statistics (exact mean and SD; quantiles from pooled histograms, within one bin)</h3><table><tr><th>variable</th><th>n</th><th>persons</th><th>mean</th><th>SD</th><th>p05</th><th>median</th><th>p95</th><th>bin</th></tr>");
        for r in desc {
            let s = &r["value"]["summary"];
            let f = |k: &str| s[k].as_f64().map(fmt_num).unwrap_or("—".into());
            let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(r["id"].as_str().unwrap_or("")), f("n"), f("persons"), f("mean"), f("sd"), f("p05"), f("median"), f("p95"), f("quantile_error_bound"));
        }
        h.push_str("</table>");
    }
    let ir = result(results, "incidence_rate");
    if !ir.is_empty() {
        h.push_str(
            "<h3>GI bleeding during NSAID courses, per 1,000 person-years, by age group</h3>",
        );
        for r in ir {
            let rows: Vec<(String, f64, bool)> = r["value"]["summary"]["strata"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["sex"] == "*" && x["age_group"] != "*")
                .map(|x| {
                    (
                        format!(
                            "{} ({} events / {:.0} PY)",
                            x["age_group"].as_str().unwrap_or(""),
                            fmt_num(x["outcomes"].as_f64().unwrap_or(0.0)),
                            x["person_years"].as_f64().unwrap_or(0.0)
                        ),
                        x["rate_per_1000py"].as_f64().unwrap_or(0.0),
                        !x["complete"].as_bool().unwrap_or(true),
                    )
                })
                .collect();
            let _ = write!(h, "<h4>{}</h4>", esc(r["id"].as_str().unwrap_or("")));
            h.push_str(&hbars(&rows, "#f79646", ""));
        }
    }
    for r in result(results, "kaplan_meier") {
        let s = &r["value"]["summary"];
        let _ = write!(
            h,
            "<h3>Kaplan–Meier: {} (pooled risk sets, 95% Greenwood band)</h3>",
            esc(r["id"].as_str().unwrap_or(""))
        );
        if let Some(c) = s["curve"].as_array() {
            h.push_str(&km_svg(c));
        }
    }
    for r in result(results, "comparative_cohort") {
        let s = &r["value"]["summary"];
        let hr = truth["drug_outcome_effect"]["hazard_ratio"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let rr = |k: &str| {
            format!(
                "{} [{}, {}]",
                s[k]["rate_ratio"]
                    .as_f64()
                    .map(fmt_num)
                    .unwrap_or("—".into()),
                s[k]["ci95"][0].as_f64().map(fmt_num).unwrap_or("—".into()),
                s[k]["ci95"][1].as_f64().map(fmt_num).unwrap_or("—".into())
            )
        };
        let _ = write!(h, "<h3>Comparative cohort study: diclofenac versus celecoxib, GI bleeding</h3><table><tr><th>estimate</th><th>rate ratio [95% CI]</th></tr><tr><td>crude</td><td>{}</td></tr><tr><td>age group × sex, Mantel–Haenszel (pooled strata; lower bound where cells were withheld)</td><td>{}</td></tr><tr><td>site × age group × sex, Mantel–Haenszel (sites' released sums)</td><td>{}</td></tr><tr><td>planted in the synthetic population</td><td>{hr}</td></tr></table><p>Older patients get celecoxib more often and bleed more, so the crude ratio is biased towards 1; stratifying by age recovers the planted effect. Target {} events in {:.0} person-years, comparator {} in {:.0}.</p>",
            rr("crude"), rr("stratified_mh"), rr("site_stratified_mh"),
            fmt_num(s["target"]["outcomes"].as_f64().unwrap_or(0.0)), s["target"]["person_years"].as_f64().unwrap_or(0.0),
            fmt_num(s["comparator"]["outcomes"].as_f64().unwrap_or(0.0)), s["comparator"]["person_years"].as_f64().unwrap_or(0.0));
    }
    let notes: Vec<String> = results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["notes"].as_array().is_some_and(|n| !n.is_empty()))
        .map(|r| {
            format!(
                "<li><b>{}</b>: {}</li>",
                esc(r["id"].as_str().unwrap_or("")),
                esc(&super::study::notes_text(r))
            )
        })
        .collect();
    if !notes.is_empty() {
        let _ = write!(
            h,
            "<h3>What the hospitals withheld</h3><ul>{}</ul>",
            notes.join("")
        );
    }
    h
}

/// Calibration plot: observed against expected events per decile of predicted risk, as rates.
fn calibration_svg(deciles: &[Value]) -> String {
    let (w, h, m) = (320.0, 320.0, 40.0);
    let pts: Vec<(f64, f64)> = deciles
        .iter()
        .filter_map(|g| {
            let n = g["persons"].as_f64()?;
            let (e, o) = (g["expected"].as_f64()?, g["observed"].as_f64()?);
            (n > 0.0).then_some((e / n, o / n))
        })
        .collect();
    let top = pts.iter().map(|p| p.0.max(p.1)).fold(0.01, f64::max) * 1.1;
    let x = |v: f64| m + v / top * (w - m - 10.0);
    let y = |v: f64| h - m - v / top * (h - m - 10.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="calibration by decile"><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
        x(0.0),
        y(0.0),
        x(top),
        y(top)
    );
    for (e, o) in &pts {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#c0504d"/>"##,
            x(*e),
            y(*o)
        );
    }
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{:.0}%</text><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{:.0}%</text>"#,
            x(v),
            h - m + 14.0,
            v * 100.0,
            m - 4.0,
            y(v) + 3.0,
            v * 100.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">predicted risk</text><text x="12" y="{:.1}" font-size="11" transform="rotate(-90 12 {:.1})" text-anchor="middle">observed rate</text></svg>"#,
        (w + m) / 2.0,
        h - 6.0,
        h / 2.0,
        h / 2.0
    );
    s
}

/// The risk-model section: each regression's coefficients (with the synthetic population's true value
/// where it has one), how it was fitted, and its discrimination and calibration across hospitals.
pub fn models_section(results: &Value, truth: &Value, latency_s: f64) -> String {
    let mut h = String::new();
    let _ = write!(h, "<h2>Predicting major diseases: federated risk models</h2><p>A third study, <code>examples/studies/risk-models.json</code>, fitted in <b>{latency_s:.1} s</b>. The hub drove each model in Newton rounds: every round it sent the current coefficients to every hospital as a signed task, each hospital returned only its score vector and information matrix (after its model disclosure check: parameters against rows, events and non-events against the minimum cell count), and the hub added them and stepped. The result equals a fit on the pooled rows, which never left the hospitals. Binomial models were then evaluated by histograms of predicted risk by outcome, pooled at the hub. The fitted models are in the hub's registry (<code>medfed model list</code>, <code>medfed model export</code>).</p>");
    for r in result(results, "regression") {
        let id = r["id"].as_str().unwrap_or("");
        let s = &r["value"]["summary"];
        if !s.is_object() {
            let _ = write!(
                h,
                "<h3>{}</h3><p>No model: {}</p>",
                esc(id),
                esc(&super::study::notes_text(r))
            );
            continue;
        }
        let truth_model = match id {
            "t2d_5y" => Some("t2d_inc"),
            "mace_5y" => Some("mace_inc"),
            _ => None,
        };
        let _ = write!(
            h,
            "<h3>{} <small>({}, {} persons, {} events, {} rounds)</small></h3><table><tr><th>term</th><th>estimate</th><th>95% CI</th><th>p</th>{}</tr>",
            esc(id),
            esc(s["family"].as_str().unwrap_or("")),
            s["n"].as_f64().unwrap_or(0.0),
            s["events"].as_f64().unwrap_or(0.0),
            s["iterations"],
            if truth_model.is_some() { "<th>synthetic truth</th>" } else { "" }
        );
        for c in s["columns"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap_or("");
            let v = &s["coefficients"][c];
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let t = truth_model.map(|m| {
                if c == "(intercept)" {
                    "—".to_string()
                } else {
                    let name = if c == "smoking[current]" {
                        "current_smoker"
                    } else {
                        c
                    };
                    format!(
                        "{:.4}",
                        truth["risk_models"][m]["coef"][name]
                            .as_f64()
                            .unwrap_or(0.0)
                    )
                }
            });
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4} – {:.4}</td><td>{:.2e}</td>{}</tr>",
                esc(c),
                f("estimate"),
                f("ci_low"),
                f("ci_high"),
                f("p_value"),
                t.map(|t| format!("<td>{t}</td>")).unwrap_or_default()
            );
        }
        h.push_str("</table>");
        let ev = &s["evaluation"];
        if let Some(auc) = ev["auc"].as_f64() {
            let per: Vec<String> = ev["per_site"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{} {:.3}", esc(k), v["auc"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            let _ = write!(
                h,
                "<p>Discrimination: AUC <b>{auc:.3}</b> (± {:.3} for pairs sharing a histogram bin); by hospital: {}. Calibration by decile of predicted risk (dashed: perfect):</p>",
                ev["auc_bound"].as_f64().unwrap_or(0.0),
                per.join(", ")
            );
            h.push_str(&calibration_svg(
                ev["calibration"].as_array().map_or(&[], |v| v),
            ));
        }
    }
    h
}
