//! `postern check-tls` against loopback servers with and without STARTTLS.

mod common;

use common::sink::{Sink, SinkOptions};

async fn run(target: &str) -> (i32, serde_json::Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check-tls", target, "--json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap(),
        json,
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn reports_tls_facts_and_exit_zero() {
    let sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let (code, r, raw) = run(&sink.addr.to_string()).await;
    assert_eq!(code, 0, "{raw}");
    assert_eq!(r["starttls_offered"], true);
    assert_eq!(r["tls"]["protocol"], "TLSv1.3");
    assert!(r["tls"]["bits"].as_u64().unwrap() >= 128);
    assert!(
        r["certificate"]["subject"]
            .as_str()
            .unwrap()
            .contains("rcgen"),
        "{raw}"
    );
    assert!(
        r["certificate"]["sans"][0]
            .as_str()
            .unwrap()
            .contains("sink.test.example"),
        "{raw}"
    );
    assert_eq!(r["chain_length"], 1);
    // A self-signed test certificate does not chain to the Mozilla roots: said, not hidden.
    assert_eq!(
        r["verification"],
        "no: certificate issuer unknown: the chain does not lead to a trusted root",
        "{raw}"
    );
    // Described as `postern cert list` describes ours: the same SAN form, the fingerprint.
    assert_eq!(r["certificate"]["sans"][0], "sink.test.example", "{raw}");
    assert_eq!(
        r["certificate"]["sha256"].as_str().unwrap().len(),
        64,
        "{raw}"
    );
    assert!(
        r["greeting"]
            .as_str()
            .unwrap()
            .starts_with("220 sink.test.example"),
        "{raw}"
    );
}

#[tokio::test]
async fn no_starttls_exit_one_and_text_says_so() {
    let sink = Sink::start(SinkOptions::default()).await;
    let (code, r, raw) = run(&sink.addr.to_string()).await;
    assert_eq!(code, 1, "{raw}");
    assert_eq!(r["starttls_offered"], false);
    assert!(r["tls"].is_null());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check-tls", &sink.addr.to_string()])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("STARTTLS:    NOT offered"));
}

#[tokio::test]
async fn unreachable_is_exit_two() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (code, _, raw) = run(&addr.to_string()).await;
    assert_eq!(code, 2, "{raw}");
    assert!(raw.contains("Connection refused"), "{raw}");
}
