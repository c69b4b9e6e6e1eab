//! HTTPS for every medfed server and client: the hub and its nodes, the 119 emergency centre and
//! the vehicle service that calls it.
//!
//! * [`self_signed`] makes a certificate for loopback names (and any others) when a server is set
//!   up without one.
//! * [`server_config`] reads a certificate and key in PEM; [`serve`] runs an axum router over TLS
//!   until a shutdown future resolves.
//! * [`client`] is an HTTPS client that trusts exactly the certificates in one PEM file — the
//!   server's own when it is self-signed — and nothing else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

/// A self-signed certificate for `localhost`, `127.0.0.1`, `::1` and `extra` names:
/// (certificate PEM, private key PEM).
pub fn self_signed(extra: &[String]) -> Result<(String, String), String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra.iter().cloned());
    let cert =
        rcgen::generate_simple_self_signed(names).map_err(|e| format!("certificate: {e}"))?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

/// A rustls server configuration from a PEM certificate chain and key; errors name the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes the handshake does not hold a task for ever.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// The bearer token of a request (`Authorization: Bearer …`), or "" when there is none.
pub fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// A new secret (a bearer token, a key): 32 random bytes as 64 hex digits.
pub fn random_secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a given secret equals the expected one, in time that does not depend on where they
/// differ. An empty expected secret matches nothing.
pub fn same_secret(given: &str, want: &str) -> bool {
    !want.is_empty()
        && given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A rustls client configuration that trusts exactly the certificates in `ca_pem` (the server's
/// own for a self-signed server, or the CA that issued its certificate).
pub fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("no certificate found in the PEM file".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An HTTPS client for a server whose certificate is in `ca_pem`.
pub fn client(ca_pem: &[u8], timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem)?)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}
