//! An HTTPS server on loopback for published policies (MTA-STS policy files, TLS-RPT
//! reports): a real rustls handshake with a certificate the test chose, one HTTP/1.1
//! request per connection. It answers every GET with the status and body the test set now,
//! and keeps every request (method, path, body) it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct HttpsServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpsServer {
    /// Serve with `cert` (certificate DER, PKCS#8 key DER) on 127.0.0.1, port 0.
    pub async fn start(cert: Arc<(Vec<u8>, Vec<u8>)>, status: u16, body: &str) -> HttpsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = HttpsServer {
            addr: listener.local_addr().unwrap(),
            answer: Arc::new(Mutex::new((status, body.to_string()))),
            requests: Arc::default(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&cert));
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        s.serve_one(tls).await;
                    }
                });
            }
        });
        server
    }

    /// What the next requests get.
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The POSTs received (TLS-RPT reports).
    pub fn posts(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    async fn serve_one(&self, mut io: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        self.requests.lock().unwrap().push(Request {
            method,
            path,
            headers,
            body,
        });
        let (status, text) = self.answer.lock().unwrap().clone();
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = io.write_all(reply.as_bytes()).await;
        let _ = io.shutdown().await;
    }
}

fn server_config(cert: &(Vec<u8>, Vec<u8>)) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain = vec![CertificateDer::from(cert.0.clone())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1.clone()));
    let config = rustls::ServerConfig::builder_with_provider(postern::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}
