//! The hub's GA4GH Beacon v2 endpoint, `/api/g_variants`: a sequence query (`referenceName`,
//! `start`, `referenceBases`, `alternateBases`, `requestedGranularity`) becomes a one-analysis study
//! of type `beacon` submitted as the authenticated researcher; the hub waits for the sites' answers
//! and returns them in Beacon v2's response shape, one result set per hospital and a summary for the
//! network. Each hospital answers at its own policy's granularity and charges rare-variant probes to
//! the researcher (`medfed_privacy::beacon`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{Hub, HubError};

/// How long `/api/g_variants` waits for every site before it answers with what it has (under the
/// researcher client's 60 s timeout).
pub const WAIT: Duration = Duration::from_secs(45);

fn bad(m: impl Into<String>) -> HubError {
    HubError::BadRequest(format!("beacon request refused: {}", m.into()))
}

/// One variant from Beacon v2 request parameters (`start` is 0-based, as in Beacon v2).
fn variant(p: &Value) -> Result<Value, HubError> {
    let text = |k: &str| -> Result<String, HubError> {
        match &p[k] {
            Value::String(s) => Ok(s.clone()),
            Value::Null => Err(bad(format!("requestParameters.{k} is missing"))),
            _ => Err(bad(format!("requestParameters.{k} must be a string"))),
        }
    };
    let start = match &p["start"] {
        Value::Array(a) if a.len() == 1 => a[0].as_u64(),
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("requestParameters.start must be one 0-based position"))?;
    Ok(json!({
        "chrom": text("referenceName")?,
        "pos": start + 1,
        "ref": text("referenceBases")?,
        "alt": text("alternateBases")?,
    }))
}

/// The study a Beacon v2 request asks for (POST body, or GET query parameters as an object).
pub fn study_for(request: &Value) -> Result<String, HubError> {
    let q = request.get("query").unwrap_or(request);
    let params = q.get("requestParameters").unwrap_or(q);
    let list: Vec<Value> = match params {
        Value::Array(a) => a.iter().map(variant).collect::<Result<_, _>>()?,
        Value::Object(_) => vec![variant(params)?],
        _ => return Err(bad("requestParameters must be an object or a list")),
    };
    let granularity = q
        .get("requestedGranularity")
        .or_else(|| request.pointer("/meta/requestedGranularity"))
        .and_then(Value::as_str)
        .unwrap_or("boolean");
    let granularity = match granularity {
        "boolean" | "count" => granularity,
        // Beacon v2's "aggregated" and "record" are the most a site gives: frequencies.
        "aggregated" | "record" | "frequency" => "frequency",
        other => {
            return Err(bad(format!(
                "requestedGranularity {other:?} is not boolean, count, aggregated or record"
            )))
        }
    };
    let study = json!({
        "format": "medfed-study/1",
        "name": "beacon look-up",
        "analyses": [{"type": "beacon", "id": "g_variants", "granularity": granularity, "variants": list}],
    });
    Ok(study.to_string())
}

impl Hub {
    /// Submit a beacon study as `requester`, wait up to `wait` for every site, and return the
    /// study's id and its results document (`status` tells whether all sites answered).
    pub async fn beacon(
        self: &Arc<Self>,
        requester: &str,
        study: String,
        wait: Duration,
    ) -> Result<(String, Value), HubError> {
        let (hub, who) = (self.clone(), requester.to_string());
        let ack = tokio::task::spawn_blocking(move || hub.submit_as(&who, &study))
            .await
            .map_err(|e| HubError::Internal(e.to_string()))??;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (hub, id) = (self.clone(), ack.study_id.clone());
            let results = tokio::task::spawn_blocking(move || hub.results(&id))
                .await
                .map_err(|e| HubError::Internal(e.to_string()))??;
            if results["study"]["status"] == "complete" || tokio::time::Instant::now() >= deadline {
                return Ok((ack.study_id, results));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Beacon v2 response for a beacon study's results document.
pub fn response(beacon_id: &str, study_id: &str, results: &Value) -> Value {
    let r = results["results"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["type"] == "beacon"));
    let complete = results["study"]["status"] == "complete";
    let Some(r) = r else {
        return json!({
            "meta": meta(beacon_id, "boolean"),
            "responseSummary": {"exists": Value::Null},
            "info": {"study_id": study_id, "status": results["study"]["status"], "complete": complete,
                     "note": "not every hospital has answered yet; the study's results will have them"},
        });
    };
    let v = &r["value"];
    let granularity = v["answered"].as_str().unwrap_or("boolean");
    let variants = v["variants"].as_array().cloned().unwrap_or_default();
    let exists = if variants.iter().any(|x| x["exists"] == true) {
        Value::Bool(true)
    } else if !variants.is_empty() && variants.iter().all(|x| x["exists"] == false) {
        Value::Bool(false)
    } else {
        Value::Null
    };
    let mut summary = json!({ "exists": exists });
    let carriers: Option<u64> = variants
        .iter()
        .map(|x| x["carriers"].as_u64())
        .sum::<Option<u64>>();
    if granularity != "boolean" {
        if let Some(n) = carriers {
            summary["numTotalResults"] = json!(n);
        }
    }
    // One result set per hospital (Beacon's "dataset"), in the order the hub lists them.
    let mut sets: Vec<Value> = Vec::new();
    for site in r["sites"].as_array().into_iter().flatten() {
        let name = site["site"].as_str().unwrap_or("");
        let answers: Vec<&Value> = variants
            .iter()
            .filter_map(|x| {
                x["sites"]
                    .as_array()?
                    .iter()
                    .find(|p| p[0] == name)
                    .map(|p| &p[1])
            })
            .collect();
        let mut set = json!({
            "id": name,
            "setType": "dataset",
            "exists": if answers.iter().any(|a| a["exists"] == true) { Value::Bool(true) }
                      else if !answers.is_empty() && answers.iter().all(|a| a["exists"] == false) { Value::Bool(false) }
                      else { Value::Null },
        });
        if answers.is_empty() {
            set["info"] = json!({"status": site["status"], "reason": site["reason"]});
        }
        let counts: Option<u64> = answers.iter().map(|a| a["carriers"].as_u64()).sum();
        if let Some(n) = counts.filter(|_| !answers.is_empty()) {
            set["resultsCount"] = json!(n);
        }
        let results: Vec<Value> = variants
            .iter()
            .zip(&answers)
            .map(|(x, a)| {
                let mut one = json!({
                    "variantInternalId": x["variant"],
                    "exists": a["exists"],
                });
                if let Some(c) = a["carriers"].as_u64() {
                    one["carriers"] = json!(c);
                }
                if let (Some(ac), Some(an)) =
                    (a["allele_count"].as_u64(), a["allele_number"].as_u64())
                {
                    one["frequencyInPopulations"] = json!([{
                        "source": name,
                        "sourceReference": "medfed node",
                        "frequencies": [{
                            "population": name,
                            "alleleCount": ac,
                            "alleleNumber": an,
                            "alleleFrequency": if an > 0 { ac as f64 / an as f64 } else { 0.0 },
                            "alleleCountHomozygous": a["hom_alt"],
                            "alleleCountHeterozygous": a["het"],
                        }],
                    }]);
                }
                if !a["withheld"].is_null() {
                    one["withheld"] = a["withheld"].clone();
                }
                one
            })
            .collect();
        if !results.is_empty() && granularity != "boolean" {
            set["results"] = Value::Array(results);
        } else if !results.is_empty() {
            set["info"] = json!({"answers": results});
        }
        sets.push(set);
    }
    json!({
        "meta": meta(beacon_id, granularity),
        "responseSummary": summary,
        "response": {"resultSets": sets},
        "info": {"study_id": study_id, "complete": complete, "network": v, "notes": r["notes"]},
    })
}

fn meta(beacon_id: &str, granularity: &str) -> Value {
    let granularity = if granularity == "frequency" {
        "aggregated"
    } else {
        granularity
    };
    json!({
        "beaconId": beacon_id,
        "apiVersion": "v2.0.0",
        "returnedGranularity": granularity,
        "returnedSchemas": [{"entityType": "genomicVariant", "schema": "beacon-g_variant-v2.0.0"}],
    })
}
