//! The control API's client: for CLI commands that touch a running postern (it reads the
//! bearer token from the data directory and trusts exactly the certificate the admin
//! listener serves from there: pinned, no CA involved for a loopback admin connection), and
//! from one node to another (`call`: the address and certificate the node registered, the
//! cluster credential).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use super::nodes::{Node, age};

/// How long one node waits for another's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Said once: the I/O error is part of the text, not a chained source that `{:#}` would
    /// print a second time.
    #[error(
        "{path}: {error} (run this in the directory `postern serve` runs in, or pass the same --config; `postern serve` creates server.data_dir at first start)"
    )]
    Setup { path: String, error: String },
    #[error(
        "cannot reach the control API at https://{addr}: {message} (is `postern serve` running?)"
    )]
    Connect { addr: SocketAddr, message: String },
    #[error("control API: {0}")]
    Http(String),
}

/// The certificate the admin listener of the postern on `data_dir` serves: `admin.crt` when
/// one is bound (written by the server at each rebinding), else the system one.
pub fn served_cert_path(data_dir: &Path) -> std::path::PathBuf {
    let bound = data_dir.join("tls/admin.crt");
    if bound.exists() {
        bound
    } else {
        data_dir.join("tls/system.crt")
    }
}

pub struct ApiClient {
    addr: SocketAddr,
    token: String,
    connector: TlsConnector,
}

impl ApiClient {
    /// Client for the API at `addr`, with the token and certificate found in `data_dir`.
    pub fn new(addr: SocketAddr, data_dir: &Path) -> Result<ApiClient, ClientError> {
        let setup = |path: &Path| {
            let path = path.display().to_string();
            move |e: std::io::Error| ClientError::Setup {
                path,
                error: crate::fsutil::os_text(&e),
            }
        };
        let token_path = data_dir.join("api-token");
        let token = std::fs::read_to_string(&token_path).map_err(setup(&token_path))?;
        let cert_path = served_cert_path(data_dir);
        let pem = std::fs::read(&cert_path).map_err(setup(&cert_path))?;
        let pinned = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
            .map_err(setup(&cert_path))?;
        Ok(ApiClient::pinned(addr, token.trim(), pinned.into_owned()))
    }

    /// Client for the API at `addr` that serves exactly `cert`, with `token`: another node's,
    /// as found in the node list.
    pub fn pinned(addr: SocketAddr, token: &str, cert: CertificateDer<'static>) -> ApiClient {
        ApiClient {
            addr,
            token: token.to_string(),
            connector: TlsConnector::from(crate::tls::pinned_client_config(cert)),
        }
    }

    /// One request; returns the status and the body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let connect_err = |message: String| ClientError::Connect {
            addr: self.addr,
            message,
        };
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }
}

/// A request to a node's control API: method, path (with its query) and JSON body.
pub type Call = (Method, String, Option<Vec<u8>>);

/// One request to another node's control API, with the cluster credential `token`; the
/// error says why it did not answer.
pub(super) async fn call(
    node: &Node,
    token: &str,
    (method, path, body): Call,
) -> Result<(StatusCode, Vec<u8>), String> {
    if node.unreadable {
        return Err("its entry in the node list is sealed with another settings key".into());
    }
    if node.stopped {
        return Err(format!(
            "stopped {} ago (a graceful stop); its queue waits on its own disk",
            age(node.heartbeat_age_secs)
        ));
    }
    let api = node.api.ok_or(
        "it registered no control API address (admin.listen is a wildcard address: set settings.api_address on it)",
    )?;
    let cert = CertificateDer::from_pem_slice(node.cert_pem.as_bytes())
        .map_err(|e| format!("its registered certificate cannot be read: {e}"))?;
    let client = ApiClient::pinned(api, token, cert);
    match tokio::time::timeout(PEER_TIMEOUT, client.request(method, &path, body)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from https://{api} within {}s",
            PEER_TIMEOUT.as_secs()
        )),
    }
}
