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

/// The real binary with 512 open files: 1,000 idle connections to the control API take 64
/// of them (the rest wait in the kernel's queue), and SMTP goes on accepting.
#[tokio::test]
async fn idle_api_connections_never_stop_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let proc = common::process::spawn_postern(
        dir.path(),
        Some("ulimit -n 512"),
        "[outbound]\nmax_concurrency = 50\n",
    );
    let api = proc.api();
    // 64 are served (and cut after 10 s), the rest complete in the listen queue.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(api).await.unwrap());
    }
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    assert_eq!(c.greeting.code, 220, "{:?}", c.greeting);
    c.cmd("HELO busy.test").await;
    queue_id(
        &c.send("s@busy.test", &["r@other.example"], &message("busy", ""))
            .await,
    );
    drop(idle);
    assert!(proc.stop().await);
}

/// Limits that do not fit in the open-file limit stop start-up, naming the keys.
#[test]
fn limits_beyond_the_open_file_limit_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256; exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_postern"))
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("open file limit 256 is below what the limits need (528: smtp.max_connections + admin.max_connections"),
        "{err}"
    );
}
