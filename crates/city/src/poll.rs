//! Fetching feeds over HTTP: the AirKorea and KMA open APIs and anything that answers in their
//! shape. Pages are followed (`pageNo`, `numOfRows`, `totalCount`); a failed request is retried
//! with backoff when the failure may pass (no connection, 5xx) and reported with its URL when it
//! will not (4xx, an API error code, a body that is not the expected JSON).

use crate::feed::{self, AirObs, FeedError, Ingest, WeatherObs};
use serde_json::Value;
use std::time::Duration;

/// Attempts per page before giving up.
pub const ATTEMPTS: u32 = 4;

fn err(url: &str, message: impl Into<String>) -> FeedError {
    FeedError::File {
        file: url.to_string(),
        message: message.into(),
    }
}

/// A client for feeds: HTTPS trusting the certificates in `ca_pem` (a CA bundle such as
/// /etc/ssl/certs/ca-certificates.crt for the public APIs), or, without one, plain HTTP only
/// (an `https://` URL then fails with an unknown-issuer error naming it).
pub fn client(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    let tls = match ca_pem {
        Some(pem) => medfed_tls::tls_config(pem)?,
        None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FeedError> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                return r
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| err(url, e.to_string()))
            }
            Ok(r) if r.status().is_server_error() => last = format!("HTTP {}", r.status()),
            Ok(r) => return Err(err(url, format!("HTTP {}", r.status()))),
            Err(e) => last = e.to_string(),
        }
    }
    Err(err(url, format!("{last} (after {ATTEMPTS} attempts)")))
}

fn count(body: &Value, key: &str) -> Option<u64> {
    let v = body.get("response")?.get("body")?.get(key)?;
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn with_page(url: &str, page: u64) -> Result<String, FeedError> {
    let mut u = reqwest::Url::parse(url).map_err(|e| err(url, e.to_string()))?;
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "pageNo")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("pageNo", &page.to_string());
    Ok(u.to_string())
}

/// Every page of a response, each with the URL it came from.
pub async fn fetch_pages(
    client: &reqwest::Client,
    url: &str,
) -> Result<Vec<(String, Vec<u8>)>, FeedError> {
    let first = get(client, url).await?;
    let body: Value =
        serde_json::from_slice(&first).map_err(|e| err(url, format!("not JSON: {e}")))?;
    let mut pages = vec![(url.to_string(), first)];
    if let (Some(total), Some(rows), Some(page)) = (
        count(&body, "totalCount"),
        count(&body, "numOfRows"),
        count(&body, "pageNo"),
    ) {
        if rows > 0 {
            let last = total.div_ceil(rows).min(page + 1000);
            for p in page + 1..=last {
                let u = with_page(url, p)?;
                let bytes = get(client, &u).await?;
                pages.push((u, bytes));
            }
        }
    }
    Ok(pages)
}

/// Fetches pollutants from an AirKorea-shaped endpoint.
pub async fn air(
    client: &reqwest::Client,
    url: &str,
    station: Option<&str>,
) -> Result<Ingest<AirObs>, FeedError> {
    let mut out = Ingest::default();
    for (u, bytes) in fetch_pages(client, url).await? {
        out.extend(feed::read_airkorea_json(&u, &bytes, station)?);
    }
    Ok(out)
}

/// Fetches hourly weather from a KMA-shaped endpoint.
pub async fn weather(
    client: &reqwest::Client,
    url: &str,
    station: Option<&str>,
) -> Result<Ingest<WeatherObs>, FeedError> {
    let mut out = Ingest::default();
    for (u, bytes) in fetch_pages(client, url).await? {
        out.extend(feed::read_kma_json(&u, &bytes, station)?);
    }
    Ok(out)
}
