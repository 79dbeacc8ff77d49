//! Relay domains whose next hop needs SASL: credentials go with AUTH PLAIN or LOGIN inside
//! TLS only, never in plaintext; the relay domain manages an `encrypt` row that the policy
//! table shows but cannot edit or delete; the password is write-only.

mod common;

use std::sync::atomic::Ordering;

use common::sink::{Sink, SinkAuth, SinkOptions};
use common::*;
use hyper::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "relay-s3cret-pw";

/// postern with smarthost.example as a relay domain whose transport is `sink`, with
/// credentials `gw` / PASSWORD; the sender's domain goes to the same sink for DSNs.
async fn setup(sink: &Sink) -> TestServer {
    let port = sink.addr.port();
    let server = TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 3600\n[outbound.routes]\n\"inside.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    server.set(settings(port, Some(PASSWORD))).await;
    server
}

fn settings(port: u16, password: Option<&str>) -> Value {
    let mut auth = json!({"username": "gw"});
    if let Some(p) = password {
        auth["password"] = json!(p);
    }
    json!({
        "trusted_networks": ["127.0.0.1/32"],
        "relay_domains": [{
            "domain": "smarthost.example",
            "transport": format!("[127.0.0.1]:{port}"),
            "auth": auth,
        }],
    })
}

async fn submit(server: &TestServer) {
    server
        .submit(
            "app@inside.example",
            &["user@smarthost.example"],
            &message("via the smarthost", ""),
        )
        .await;
}

fn sink_with(auth: SinkAuth, starttls: bool) -> SinkOptions {
    SinkOptions {
        starttls,
        auth: Some(auth),
        ..SinkOptions::default()
    }
}

#[tokio::test]
async fn authenticates_inside_tls_under_the_managed_row() {
    for mechanisms in ["PLAIN LOGIN", "LOGIN"] {
        let auth = SinkAuth {
            mechanisms: mechanisms.into(),
            ..SinkAuth::new("gw", PASSWORD)
        };
        let mut sink = Sink::start(sink_with(auth, true)).await;
        let mut server = setup(&sink).await;
        submit(&server).await;
        let got = sink.next(20).await.expect("not delivered");
        assert_eq!(got.auth_user.as_deref(), Some("gw"), "{mechanisms}");
        assert!(got.tls);
        let event = server.next_event_for("user@smarthost.example", 20).await;
        assert_eq!(
            (
                event.status.as_ref(),
                event.policy_level.as_str(),
                event.policy_source.as_str()
            ),
            ("sent", "encrypt", "managed:smarthost.example")
        );
        assert_eq!(sink.plaintext_auth_attempts.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn never_sends_credentials_in_plaintext() {
    // A server that offers AUTH without STARTTLS: the managed row requires TLS, so the
    // recipient is deferred and no AUTH command is ever sent.
    let auth = SinkAuth {
        in_plaintext: true,
        ..SinkAuth::new("gw", PASSWORD)
    };
    let mut sink = Sink::start(sink_with(auth, false)).await;
    let mut server = setup(&sink).await;
    submit(&server).await;
    let event = server.next_event_for("user@smarthost.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.4")
    );
    assert!(
        event
            .reply
            .contains("TLS is required, but was not offered by host 127.0.0.1["),
        "{}",
        event.reply
    );
    assert_eq!(event.policy_source, "managed:smarthost.example");
    assert_eq!(sink.auth_attempts.load(Ordering::SeqCst), 0);
    assert!(sink.try_next().is_none());
}

#[tokio::test]
async fn refused_login_is_deferred_with_the_servers_words() {
    let mut sink = Sink::start(sink_with(SinkAuth::new("gw", "another-password"), true)).await;
    let mut server = setup(&sink).await;
    submit(&server).await;
    let event = server.next_event_for("user@smarthost.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.0")
    );
    assert!(
        event.reply
            == "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 Error: authentication failed",
        "{}",
        event.reply
    );
    assert!(sink.try_next().is_none());
    // The password is nowhere in the delivery log.
    let log = std::fs::read_to_string(server.data_dir().join("log/delivery.jsonl")).unwrap();
    assert!(!log.contains(PASSWORD));
}

#[tokio::test]
async fn managed_row_is_shown_and_guarded_in_the_settings_api() {
    let sink = Sink::start(SinkOptions::default()).await;
    let server = setup(&sink).await;
    let port = sink.addr.port();
    let shown = server.get_settings().await;
    assert!(
        !shown.to_string().contains(PASSWORD),
        "password shown: {shown}"
    );
    assert_eq!(
        shown["policy"],
        json!([{"pattern": "smarthost.example", "level": "encrypt", "include_subdomains": false,
                "on_failure": "defer", "note": "Auto-added: relay domain requires authentication",
                "managed_by": "smarthost.example"}])
    );
    // The document as shown goes back unchanged (the password is kept).
    let (status, body) = server.put_settings(shown.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Edit: refused, naming the relay domain; nothing changes.
    let mut edited = shown.clone();
    edited["policy"][0]["level"] = json!("may");
    let (status, body) = server.put_settings(edited).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "policy[0]", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("managed by relay domain smarthost.example"),
        "{body}"
    );
    // Delete: refused likewise.
    let mut deleted = shown.clone();
    deleted["policy"] = json!([]);
    let (status, body) = server.put_settings(deleted).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "policy", "{body}");
    assert_eq!(server.get_settings().await, shown);

    // `policy explain` names the managed row.
    let (ok, out, err) = server
        .cli(&["policy", "explain", "user@smarthost.example"])
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("managed row smarthost.example: encrypt (relay domain smarthost.example requires authentication)"),
        "{out}"
    );

    // Credentials removed: the row goes with them.
    let mut doc = settings(port, None);
    doc["relay_domains"][0]
        .as_object_mut()
        .unwrap()
        .remove("auth");
    let (status, body) = server.put_settings(doc).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.get_settings().await["policy"], json!([]));
}
