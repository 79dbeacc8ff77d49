//! The control API under a client that connects and says nothing: connections are capped,
//! and idle ones (before the handshake, or between requests) are closed in time, so a real
//! admin request is served.

mod common;

use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;

/// Read until the server closes: returns once it has (an error counts: a TLS alert).
async fn closed_by_server(mut io: impl tokio::io::AsyncRead + Unpin) -> bool {
    let mut buf = [0u8; 256];
    let wait = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_ok()
}

#[tokio::test]
async fn control_api_caps_connections_and_closes_idle_ones() {
    let server =
        TestServer::start_with("[admin]\nmax_connections = 3\nheader_read_timeout_secs = 1\n")
            .await;
    // Every slot taken: two connections that never start TLS, one that never sends a request.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(server.api).await.unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(postern::tls::pinned_client_config(server.system_cert()))
            .connect(ServerName::try_from("mx.test.example").unwrap(), tcp)
            .await
            .unwrap();
    // An admin's request waits for a slot, and gets one once the idle ones are cut.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        server.api(Method::GET, "/api/v1/settings", None),
    )
    .await
    .expect("the control API stayed full of idle connections");
    assert_eq!(status, StatusCode::OK, "{body}");
    for c in silent {
        assert!(
            closed_by_server(c).await,
            "a connection without TLS stayed open"
        );
    }
    assert!(
        closed_by_server(tls).await,
        "a TLS connection without a request stayed open"
    );
}
