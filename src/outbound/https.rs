//! HTTPS for what domains publish: one request to one host, its certificate verified for
//! its name against the trust roots (WebPKI), redirects never followed, the body bounded.
//! MTA-STS fetches policy files with it (RFC 8461 section 3.3), TLS-RPT posts reports with
//! it (RFC 8460 section 5.4). The caller bounds the time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use super::dns::{DnsError, Resolver};

/// One request: `GET` without a body, `POST` with one.
pub struct Request<'a> {
    pub method: hyper::Method,
    /// `https://host/path`.
    pub host: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: Vec<u8>,
    /// Most bytes of the answer read; more is an error.
    pub limit: usize,
}

/// The answer's status and body, or why there is none.
pub async fn send(
    addr: SocketAddr,
    req: Request<'_>,
    roots: &Arc<rustls::RootCertStore>,
) -> Result<(hyper::StatusCode, Vec<u8>), String> {
    let host = req.host;
    let tls = verified_tls(addr, host, roots).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP with {host}: {e}"))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method)
        .uri(req.path)
        .header("host", host)
        .header("user-agent", concat!("postern/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = req.content_type {
        builder = builder.header("content-type", t);
    }
    let request = builder
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            req.body,
        )))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP with {host}: {e}"))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), req.limit)
        .collect()
        .await
        .map_err(|e| {
            format!(
                "answer from {host} not read (at most {} bytes): {e}",
                req.limit
            )
        })?;
    Ok((status, body.to_bytes().to_vec()))
}

/// TCP to `addr`, then TLS with the certificate verified for `host` (WebPKI): nothing is
/// sent to a server that cannot prove it is `host`.
async fn verified_tls(
    addr: SocketAddr,
    host: &str,
    roots: &Arc<rustls::RootCertStore>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        format!(
            "connect to {host}[{}]:{}: {}",
            addr.ip(),
            addr.port(),
            crate::fsutil::os_text(&e)
        )
    })?;
    let check = crate::tls::CertCheck::Names(vec![host.to_string()]);
    let (config, _) = crate::tls::policy_client_config(
        check,
        roots.clone(),
        None,
        crate::tls::KxGroups::PostQuantum,
    )
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS with {host}: {}",
                crate::tls::words::handshake_error(&e)
            )
        })
}

/// Where `host` is: mapped in the config (`outbound.policy_hosts`, for labs and tests),
/// else its first address, on port 443.
pub async fn address(
    mapped: &BTreeMap<String, String>,
    resolver: &dyn Resolver,
    host: &str,
) -> Result<SocketAddr, String> {
    if let Some(m) = mapped.get(host) {
        return m
            .parse()
            .map_err(|_| format!("outbound.policy_hosts: {m:?} is not ip:port"));
    }
    match resolver.ips(host).await {
        Ok(ips) => ips
            .first()
            .map(|ip| SocketAddr::new(*ip, 443))
            .ok_or_else(|| format!("{host} has no address")),
        Err(DnsError::NotFound) => Err(format!("{host} does not exist")),
        Err(DnsError::Temporary(why)) => Err(format!("{host}: lookup failed: {why}")),
    }
}
