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

/// One small epidemic curve: weekly national counts (bars; withheld 1..9 drawn as a hatched stub),
/// the Farrington Flexible threshold (line), its alarms (red dots) and raised alerts (shaded weeks).
fn epicurve_svg(s: &Value, week_ends: &[String], alert_weeks: &[bool], title: &str) -> String {
    let counts: Vec<Option<f64>> = s["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::as_f64)
        .collect();
    let upper: Vec<Option<f64>> = s["farrington_upper"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::as_f64)
        .collect();
    let alarm: Vec<bool> = s["farrington_alarm"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_bool().unwrap_or(false))
        .collect();
    let n = counts.len().max(1);
    let (w, h, l, b) = (300.0, 110.0, 30.0, 16.0);
    let top = counts
        .iter()
        .chain(upper.iter())
        .flatten()
        .fold(10.0f64, |m, v| m.max(*v));
    let x = |i: usize| l + (w - l - 4.0) * i as f64 / n as f64;
    let y = |v: f64| h - b - (h - b - 14.0) * v / top;
    let bw = ((w - l - 4.0) / n as f64).max(0.6);
    let mut o = format!(
        r##"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" font-size="9"><defs><pattern id="hatch" width="3" height="3" patternUnits="userSpaceOnUse"><path d="M0,3 l3,-3" stroke="#999" stroke-width="0.6"/></pattern></defs><text x="{l}" y="10" font-weight="bold">{}</text>"##,
        esc(title)
    );
    for (i, a) in alert_weeks.iter().enumerate() {
        if *a {
            let _ = write!(
                o,
                r##"<rect x="{:.1}" y="12" width="{bw:.1}" height="{:.1}" fill="#ffe0b2"/>"##,
                x(i),
                h - b - 12.0
            );
        }
    }
    for (i, c) in counts.iter().enumerate() {
        match c {
            Some(v) if *v > 0.0 => {
                let _ = write!(
                    o,
                    r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#4f81bd"/>"##,
                    x(i),
                    y(*v),
                    h - b - y(*v)
                );
            }
            Some(_) => {}
            None => {
                let _ = write!(
                    o,
                    r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="url(#hatch)"/>"##,
                    x(i),
                    y(9.0),
                    h - b - y(9.0)
                );
            }
        }
    }
    let mut path = String::new();
    for (i, u) in upper.iter().enumerate() {
        if let Some(u) = u {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if path.is_empty() || upper[i.saturating_sub(1)].is_none() {
                    "M"
                } else {
                    "L"
                },
                x(i) + bw / 2.0,
                y(*u)
            );
        }
    }
    let _ = write!(
        o,
        r##"<path d="{path}" fill="none" stroke="#c0504d" stroke-width="0.8"/>"##
    );
    for (i, a) in alarm.iter().enumerate() {
        if *a {
            let _ = write!(
                o,
                r##"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="#c00"/>"##,
                x(i) + bw / 2.0,
                y(counts[i].unwrap_or(9.0)) - 3.0
            );
        }
    }
    let _ = write!(
        o,
        r##"<line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333" stroke-width="0.5"/><text x="2" y="{:.1}">{}</text><text x="2" y="{:.1}">0</text>"##,
        h - b,
        w - 4.0,
        h - b,
        y(top) + 3.0,
        fmt_num(top),
        h - b
    );
    // Year ticks.
    let mut last_year = "";
    for (i, d) in week_ends.iter().enumerate() {
        let yr = d.get(0..4).unwrap_or("");
        if yr != last_year {
            if !last_year.is_empty() {
                let _ = write!(
                    o,
                    r##"<text x="{:.1}" y="{:.1}" fill="#555">{yr}</text>"##,
                    x(i),
                    h - 4.0
                );
            }
            last_year = yr;
        }
    }
    o.push_str("</svg>");
    o
}

/// District map: every district's centroid, coloured by its highest raised alert in the window.
fn district_map_svg(levels: &HashMap<String, (u8, String)>) -> String {
    let Some(geo) = medfed_protocol::surveil::geography("kr_sigungu") else {
        return String::new();
    };
    let (w, h) = (360.0, 420.0);
    let (lat0, lat1, lon0, lon1) = (33.0, 38.7, 124.5, 130.0);
    let x = |lon: f64| 10.0 + (w - 20.0) * (lon - lon0) / (lon1 - lon0);
    let y = |lat: f64| 10.0 + (h - 40.0) * (lat1 - lat) / (lat1 - lat0);
    let mut o = format!(
        r##"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" font-size="10">"##
    );
    let mut labelled = Vec::new();
    for d in &geo {
        let (fill, r) = match levels.get(&d.code).map(|(l, _)| *l) {
            Some(3) => ("#c00000", 6.0),
            Some(2) => ("#ff8c00", 5.0),
            Some(1) => ("#f2c200", 4.0),
            _ => ("#d0d0d0", 2.2),
        };
        let _ = write!(
            o,
            r##"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{fill}" stroke="#fff" stroke-width="0.4"><title>{} {}</title></circle>"##,
            x(d.lon),
            y(d.lat),
            esc(&d.province),
            esc(&d.name)
        );
        if let Some((l, what)) = levels.get(&d.code) {
            if *l >= 2 && labelled.len() < 12 {
                labelled.push((x(d.lon), y(d.lat), format!("{} ({what})", d.name)));
            }
        }
    }
    for (px, py, t) in labelled {
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
            px + 7.0,
            py + 3.0,
            esc(&t)
        );
    }
    let _ = write!(
        o,
        r##"<circle cx="20" cy="{a}" r="6" fill="#c00000"/><text x="30" y="{b}">high</text><circle cx="80" cy="{a}" r="5" fill="#ff8c00"/><text x="90" y="{b}">medium</text><circle cx="150" cy="{a}" r="4" fill="#f2c200"/><text x="160" y="{b}">low</text><circle cx="200" cy="{a}" r="2.2" fill="#d0d0d0"/><text x="210" y="{b}">no alert</text></svg>"##,
        a = h - 15.0,
        b = h - 11.0
    );
    o
}

/// The surveillance section: what the hub published (alerts, weekly national totals under the
/// minimum count) and, when the planted truth is known, how every detector did.
pub fn surveillance_section(results: &Value, scores: Option<&Value>, latency_s: f64) -> String {
    let mut h = String::new();
    for r in result(results, "surveillance") {
        let v = &r["value"];
        let _ = write!(
            h,
            "<h2>Syndromic surveillance of vulnerable groups</h2><p>Every hospital counted, for each day from {} to {}, the persons with a record of each syndrome by district and by vulnerable group; the counts were added over hospitals under secure aggregation, so the hub held network totals per district × group × syndrome × day and never one hospital's. Detectors ran at the hub from {}: EARS C1/C2/C3 and CUSUM on daily series, Farrington Flexible on weekly series, and a space–time scan over district centroids; their alarms were grouped into alerts. Published counts 1–9 are withheld (hatched). {} sites; {:.1} s from submission to alerts.</p>",
            esc(v["first_day"].as_str().unwrap_or("")),
            esc(v["last_day"].as_str().unwrap_or("")),
            esc(v["evaluated_from"].as_str().unwrap_or("")),
            super::study::sites_with(r, "released"),
            latency_s
        );
        let alerts: Vec<&Value> = v["alerts"].as_array().into_iter().flatten().collect();
        let raised: Vec<&&Value> = alerts.iter().filter(|a| a["raised"] == true).collect();
        let _ = write!(
            h,
            "<p><b>{}</b> alerts raised from <b>{}</b> detector alarms ({} grouped signals in all; the rest had one detector family and no significant scan cluster, and stay for review).</p>",
            raised.len(),
            v["alarms_by_detector"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>()),
            alerts.len()
        );
        if let Some(sc) = scores.and_then(|s| s[r["id"].as_str().unwrap_or("")].as_array()) {
            h.push_str("<h3>Detectors against the planted outbreaks</h3><table><tr><th>detector</th><th>outbreaks found</th><th>sensitivity</th><th>false alarms</th><th>per district-year</th><th>median days to detection</th></tr>");
            for s in sc {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}/{}</td><td>{:.0}%</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                    esc(s["detector"].as_str().unwrap_or("")),
                    s["found"],
                    s["outbreaks"],
                    100.0 * s["sensitivity"].as_f64().unwrap_or(0.0),
                    s["false_alarms"],
                    s["false_per_district_year"].as_f64().unwrap_or(0.0),
                    s["median_days_to_detection"].as_f64().map(|d| format!("{d:.1}")).unwrap_or_else(|| "–".into())
                );
            }
            h.push_str("</table><p>An outbreak is found by an alarm for its group and syndrome that covers its district, from its first day to a week after its last; raw detectors count false alarms as alarm days, grouped alerts as raised alerts matching no outbreak.</p>");
        }
        // Epidemic curves.
        let week_ends: Vec<String> = v["week_ends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        h.push_str("<h3>Epidemic curves (weekly national totals, Farrington Flexible threshold in red, its alarms as dots, weeks of raised alerts shaded)</h3><div style=\"display:flex;flex-wrap:wrap;gap:6px\">");
        for s in v["weekly"].as_array().into_iter().flatten() {
            let (syn, grp) = (
                s["syndrome"].as_str().unwrap_or(""),
                s["group"].as_str().unwrap_or(""),
            );
            let shade: Vec<bool> = week_ends
                .iter()
                .map(|we| {
                    raised.iter().any(|a| {
                        a["syndrome"] == syn
                            && a["group"] == grp
                            && a["first_day"].as_str().unwrap_or("") <= we.as_str()
                            && a["last_day"].as_str().unwrap_or("") >= we.as_str()
                    })
                })
                .collect();
            h.push_str(&epicurve_svg(
                s,
                &week_ends,
                &shade,
                &format!("{syn} · {grp}"),
            ));
        }
        h.push_str("</div>");
        // Map of alerts in the last 90 days of data (or all, when none are that recent).
        let last = v["last_day"].as_str().unwrap_or("");
        let since = medfed_protocol::surveil::parse_day(last)
            .map(|d| medfed_protocol::surveil::day_string(d - 90))
            .unwrap_or_default();
        let recent: Vec<&&&Value> = raised
            .iter()
            .filter(|a| a["last_day"].as_str().unwrap_or("") >= since.as_str())
            .collect();
        let (window, shown): (&str, Vec<&Value>) = if recent.is_empty() {
            ("all raised alerts", raised.iter().map(|a| **a).collect())
        } else {
            (
                "raised alerts of the last 90 days",
                recent.iter().map(|a| ***a).collect(),
            )
        };
        let mut levels: HashMap<String, (u8, String)> = HashMap::new();
        for a in &shown {
            let l = match a["level"].as_str() {
                Some("high") => 3,
                Some("medium") => 2,
                _ => 1,
            };
            let what = format!(
                "{} {}",
                a["group"].as_str().unwrap_or(""),
                a["syndrome"].as_str().unwrap_or("")
            );
            for d in a["districts"].as_array().into_iter().flatten() {
                let e = levels
                    .entry(d.as_str().unwrap_or("").to_string())
                    .or_insert((0, what.clone()));
                if l > e.0 {
                    *e = (l, what.clone());
                }
            }
        }
        let _ = write!(h, "<h3>Districts with alerts ({window})</h3>");
        h.push_str(&district_map_svg(&levels));
        // Alerts by vulnerable group.
        h.push_str("<h3>Alerts by vulnerable group</h3><table><tr><th>group</th><th>high</th><th>medium</th><th>low</th><th>signals not raised</th></tr>");
        let mut groups: Vec<&str> = v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        groups.dedup();
        for g in groups {
            let n = |lvl: &str| {
                raised
                    .iter()
                    .filter(|a| a["group"] == g && a["level"] == lvl)
                    .count()
            };
            let quiet = alerts
                .iter()
                .filter(|a| a["group"] == g && a["raised"] == false)
                .count();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(g),
                n("high"),
                n("medium"),
                n("low"),
                quiet
            );
        }
        h.push_str("</table><h3>Most severe alerts</h3><table><tr><th>group</th><th>syndrome</th><th>districts</th><th>from</th><th>to</th><th>raised</th><th>severity</th><th>detectors</th><th>cases</th></tr>");
        let mut top: Vec<&&Value> = raised.clone();
        top.sort_by(|a, b| {
            b["severity"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&a["severity"].as_f64().unwrap_or(0.0))
        });
        for a in top.iter().take(20) {
            let list = |k: &str| {
                a[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} ({})</td><td>{}</td><td>{}</td></tr>",
                esc(a["group"].as_str().unwrap_or("")),
                esc(a["syndrome"].as_str().unwrap_or("")),
                esc(&list("district_names")),
                esc(a["first_day"].as_str().unwrap_or("")),
                esc(a["last_day"].as_str().unwrap_or("")),
                esc(a["raised_day"].as_str().unwrap_or("")),
                a["severity"].as_f64().unwrap_or(0.0),
                esc(a["level"].as_str().unwrap_or("")),
                esc(&list("detectors")),
                a["observed"].as_f64().map(fmt_num).unwrap_or_else(|| "1–9".into())
            );
        }
        h.push_str("</table>");
    }
    h
}
