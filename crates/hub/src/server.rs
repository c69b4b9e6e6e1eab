//! The hub's HTTPS API, `/v1/…` (documented in `docs/openapi.yaml`).
//!
//! Nodes authenticate every request with their Ed25519 signature headers
//! ([`medfed_protocol::request`]); researchers with a bearer token (`researcher.token` for the
//! default researcher, `researchers/NAME.token` for the others), and every study they submit carries
//! their name to the nodes.
//! The server speaks TLS only (rustls with the ring provider); there is no plain-HTTP listener.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medfed_protocol::{request, Signed};

use crate::{Hub, HubError};

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    /// (name, token) of every researcher.
    researchers: Arc<Vec<(String, String)>>,
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = match &self {
            HubError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HubError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::Conflict(_) => StatusCode::CONFLICT,
            HubError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Largest request body: a study file (1 MiB) with room for JSON escaping.
/// Large enough for a surveillance chunk's masked vector (250 districts × 5 groups × 5 syndromes ×
/// 14 days, one word each, base64: about 1.2 MB) with room for bigger geographies.
const MAX_BODY: usize = 16 << 20;

/// The API for `hub`, with the researchers' (name, token) pairs (`HubDir::researchers`).
pub fn router(hub: Arc<Hub>, researchers: Vec<(String, String)>) -> Router {
    let state = AppState {
        hub,
        researchers: Arc::new(researchers),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/hub", get(info))
        .route("/v1/tasks", get(tasks))
        .route("/v1/results", post(results_post))
        .route("/v1/studies", post(submit).get(studies))
        .route("/v1/studies/{id}", get(status))
        .route("/v1/studies/{id}/results", get(study_results))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/models/{id}/score", post(score))
        .route("/api/g_variants", post(g_variants_post).get(g_variants_get))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HubError::Internal(e.to_string()))?
}

async fn info(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": s.hub.name(),
        "public_key": s.hub.public_key().to_hex(),
        "api": medfed_protocol::API_VERSION,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, HubError> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HubError::Unauthorized(format!("missing header {name}")))
}

/// Authenticate a node request; returns the node's name.
async fn node_auth(
    s: &AppState,
    method: &Method,
    uri: &Uri,
    h: &HeaderMap,
    body: &Bytes,
) -> Result<String, HubError> {
    let node = header(h, request::HEADER_NODE)?.to_string();
    let time = header(h, request::HEADER_TIME)?.to_string();
    let sig = header(h, request::HEADER_SIGNATURE)?.to_string();
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (hub, m, b, n) = (
        s.hub.clone(),
        method.as_str().to_string(),
        body.clone(),
        node.clone(),
    );
    blocking(move || hub.authenticate(&n, &time, &sig, &m, &pq, &b)).await?;
    Ok(node)
}

/// The researcher a request's bearer token belongs to.
fn researcher(s: &AppState, h: &HeaderMap) -> Result<String, HubError> {
    let given = medfed_tls::bearer(h);
    // Constant-time comparison against every token.
    let mut found = None;
    for (name, token) in s.researchers.iter() {
        if medfed_tls::same_secret(given, token) {
            found = Some(name.clone());
        }
    }
    found.ok_or_else(|| HubError::Unauthorized("researcher token missing or wrong".into()))
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: u64,
    /// The node has just started: release its leases first.
    #[serde(default)]
    restart: bool,
}

async fn tasks(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    h: HeaderMap,
    Query(q): Query<WaitQuery>,
) -> Result<Json<Vec<Signed>>, HubError> {
    let node = node_auth(&s, &method, &uri, &h, &Bytes::new()).await?;
    let wait = Duration::from_secs(q.wait.min(60));
    if q.restart {
        let (hub, n) = (s.hub.clone(), node.clone());
        blocking(move || hub.release_leases(&n)).await?;
    }
    Ok(Json(s.hub.poll(&node, wait).await?))
}

async fn results_post(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HubError> {
    let node = node_auth(&s, &method, &uri, &h, &body).await?;
    let signed: Signed = serde_json::from_slice(&body)
        .map_err(|e| HubError::BadRequest(format!("not a signed result: {e}")))?;
    let hub = s.hub.clone();
    let applied = blocking(move || hub.post_result(&node, &signed)).await?;
    Ok(Json(serde_json::json!({
        "applied": applied.applied,
        "study_complete": applied.study_complete,
    })))
}

async fn submit(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<crate::Submitted>), HubError> {
    let who = researcher(&s, &h)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| HubError::BadRequest("study refused: $: not UTF-8".into()))?;
    let hub = s.hub.clone();
    let ack = blocking(move || hub.submit_as(&who, &text)).await?;
    Ok((StatusCode::CREATED, Json(ack)))
}

async fn studies(
    State(s): State<AppState>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>, HubError> {
    researcher(&s, &h)?;
    let hub = s.hub.clone();
    let list = blocking(move || hub.studies()).await?;
    Ok(Json(serde_json::json!({ "studies": list })))
}

async fn status(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::StudyStatus>, HubError> {
    researcher(&s, &h)?;
    let hub = s.hub.clone();
    Ok(Json(blocking(move || hub.status(&id)).await?))
}

async fn study_results(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, HubError> {
    researcher(&s, &h)?;
    let hub = s.hub.clone();
    Ok(Json(blocking(move || hub.results(&id)).await?))
}

async fn models(
    State(s): State<AppState>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>, HubError> {
    researcher(&s, &h)?;
    let hub = s.hub.clone();
    let list = blocking(move || hub.models()).await?;
    Ok(Json(serde_json::json!({ "models": list })))
}

async fn model(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<medfed_analysis::regression::RegisteredModel>, HubError> {
    researcher(&s, &h)?;
    let hub = s.hub.clone();
    Ok(Json(blocking(move || hub.model(&id)).await?))
}

async fn score(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HubError> {
    researcher(&s, &h)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| HubError::BadRequest(format!("not JSON: {e}")))?;
    let hub = s.hub.clone();
    Ok(Json(blocking(move || hub.score(&id, &body)).await?))
}

/// Beacon v2 `POST /api/g_variants` (request body with `query.requestParameters`).
async fn g_variants_post(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HubError> {
    let who = researcher(&s, &h)?;
    let req: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| HubError::BadRequest(format!("beacon request refused: not JSON: {e}")))?;
    g_variants(&s, &who, &req).await
}

/// Beacon v2 `GET /api/g_variants?referenceName=…&start=…&referenceBases=…&alternateBases=…`.
async fn g_variants_get(
    State(s): State<AppState>,
    h: HeaderMap,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, HubError> {
    let who = researcher(&s, &h)?;
    let req = serde_json::to_value(&q).map_err(|e| HubError::Internal(e.to_string()))?;
    g_variants(&s, &who, &req).await
}

async fn g_variants(
    s: &AppState,
    who: &str,
    req: &serde_json::Value,
) -> Result<Json<serde_json::Value>, HubError> {
    let study = crate::beacon::study_for(req)?;
    let (id, results) = s.hub.beacon(who, study, crate::beacon::WAIT).await?;
    Ok(Json(crate::beacon::response(s.hub.name(), &id, &results)))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A read-only page of the national statistics (pooled, disclosure-checked results only).
async fn dashboard(State(s): State<AppState>) -> Result<Html<String>, HubError> {
    let hub = s.hub.clone();
    let body = blocking(move || {
        let mut html = format!(
            "<!doctype html><meta charset=utf-8><title>medfed hub {n}</title>\
             <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}}</style>\
             <h1>medfed national statistics — hub {n}</h1><p>Nodes: {nodes}</p>",
            n = esc(hub.name()),
            nodes = hub.nodes()?.iter().map(|n| esc(&n.name)).collect::<Vec<_>>().join(", ")
        );
        for st in hub.studies()? {
            html.push_str(&format!("<h2>{} <small>({}, {})</small></h2><table><tr><th>analysis</th><th>value</th><th>sites</th><th>notes</th></tr>",
                esc(&st.name), esc(&st.id), esc(&st.status)));
            if let Some(results) = hub.results(&st.id)?.get("results").and_then(|r| r.as_array()) {
                for r in results {
                    let sites = r["sites"].as_array().map(|a| a.iter().map(|x| format!("{}: {}", x["site"].as_str().unwrap_or(""), x["status"].as_str().unwrap_or(""))).collect::<Vec<_>>().join(", ")).unwrap_or_default();
                    html.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(r["id"].as_str().unwrap_or("")), esc(&r["value"].to_string()), esc(&sites),
                        esc(&r["notes"].as_array().map(|n| n.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")).unwrap_or_default())));
                }
            }
            html.push_str("</table>");
        }
        Ok(html)
    })
    .await?;
    Ok(Html(body))
}

/// Serve the API over TLS on `listener` until `shutdown` resolves.
pub use medfed_tls::serve;
