//! How a node reaches the hub. Outbound only: the node asks for tasks and posts results.
//!
//! [`HttpTransport`] talks HTTPS to a hub (rustls, trusting the hub's configured certificate) and signs
//! every request with the node's key. `medfed study run` plugs in an in-process transport instead, so
//! the same node code runs without a network.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use medfed_protocol::{request, SecretKey, Signed};
use serde::{Deserialize, Serialize};

/// The hub's answer to a posted result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostAck {
    /// True when this post changed the hub's state; false when the hub already had this result.
    pub applied: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Worth retrying: connection failures, timeouts, 5xx.
    #[error("hub unreachable: {0}")]
    Unavailable(String),
    /// Not worth retrying: the hub refused the request (4xx).
    #[error("hub refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
}

pub trait Transport {
    /// Wait up to `wait_s` seconds for tasks addressed to this node.
    fn poll(&self, wait_s: u64) -> impl Future<Output = Result<Vec<Signed>, TransportError>>;
    /// Post one signed result.
    fn post(&self, result: &Signed) -> impl Future<Output = Result<PostAck, TransportError>>;
}

pub struct HttpTransport {
    client: reqwest::Client,
    base: String,
    node: String,
    key: SecretKey,
    /// The first poll after start asks the hub to drop this node's leases: tasks it was handed before a
    /// crash, and never saved, come back at once instead of after the lease.
    restarted: std::sync::atomic::AtomicBool,
}

pub use medfed_tls::{client, tls_config};

impl HttpTransport {
    pub fn new(
        base: &str,
        ca_pem_path: &Path,
        node: &str,
        key: SecretKey,
        poll_wait_s: u64,
    ) -> Result<HttpTransport, String> {
        let pem =
            std::fs::read(ca_pem_path).map_err(|e| format!("{}: {e}", ca_pem_path.display()))?;
        Ok(HttpTransport {
            client: client(&pem, Duration::from_secs(poll_wait_s + 30))?,
            base: base.trim_end_matches('/').to_string(),
            node: node.to_string(),
            key,
            restarted: std::sync::atomic::AtomicBool::new(true),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, TransportError> {
        let (n, t, s) = request::sign(
            &self.key,
            &self.node,
            method.as_str(),
            path,
            medfed_protocol::now(),
            &body,
        );
        let resp = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .header(request::HEADER_NODE, n)
            .header(request::HEADER_TIME, t)
            .header(request::HEADER_SIGNATURE, s)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| TransportError::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else {
            let message = resp.text().await.unwrap_or_default();
            if status.is_server_error() || status.as_u16() == 429 {
                Err(TransportError::Unavailable(format!("{status}: {message}")))
            } else {
                Err(TransportError::Refused {
                    status: status.as_u16(),
                    message,
                })
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl Transport for HttpTransport {
    async fn poll(&self, wait_s: u64) -> Result<Vec<Signed>, TransportError> {
        use std::sync::atomic::Ordering;
        let restart = self.restarted.load(Ordering::Relaxed);
        let path = if restart {
            format!("/v1/tasks?wait={wait_s}&restart=true")
        } else {
            format!("/v1/tasks?wait={wait_s}")
        };
        let resp = self.send(reqwest::Method::GET, &path, Vec::new()).await?;
        self.restarted.store(false, Ordering::Relaxed);
        resp.json()
            .await
            .map_err(|e| TransportError::Unavailable(format!("bad task list: {e}")))
    }

    async fn post(&self, result: &Signed) -> Result<PostAck, TransportError> {
        let body = serde_json::to_vec(result).expect("envelopes serialise");
        let resp = self
            .send(reqwest::Method::POST, "/v1/results", body)
            .await?;
        resp.json()
            .await
            .map_err(|e| TransportError::Unavailable(format!("bad acknowledgement: {e}")))
    }
}
