//! Inbound STARTTLS modes over loopback with real rustls handshakes, switched through the
//! control API and through `postern settings import`; the API's authentication and validation.

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;

fn mode_doc(mode: &str) -> serde_json::Value {
    json!({"inbound": {"tls_mode": mode}, "trusted_networks": ["127.0.0.0/8"]})
}

#[tokio::test]
async fn disabled_offers_no_starttls_and_refuses_it() {
    let server = TestServer::start().await;
    server.set(mode_doc("disabled")).await;
    let mut c = server.connect().await;
    assert_eq!(c.greeting.first(), "220 mx.test.example ESMTP postern");
    let ehlo = c.ehlo().await;
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert_eq!(
        c.cmd("STARTTLS").await.first(),
        "502 5.5.1 Error: command not implemented"
    );
    let r = c
        .send(
            "s@client.test.example",
            &["r@other.example"],
            &message("plain", ""),
        )
        .await;
    assert_eq!(r.code, 250);
}

#[tokio::test]
async fn may_accepts_plaintext_and_tls() {
    let server = TestServer::start().await;
    server.set(mode_doc("may")).await;
    let mut plain = server.connect().await;
    let ehlo = plain.ehlo().await;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let plain_id = queue_id(
        &plain
            .send(
                "s@client.test.example",
                &["r@other.example"],
                &message("plain", ""),
            )
            .await,
    );

    let mut tls = server.connect().await;
    tls.ehlo().await;
    tls.starttls().await;
    let ehlo = tls.ehlo().await;
    assert!(
        !ehlo.lines.iter().any(|l| l == "STARTTLS"),
        "STARTTLS offered again inside TLS"
    );
    let tls_id = queue_id(
        &tls.send(
            "s@client.test.example",
            &["r@other.example"],
            &message("tls", ""),
        )
        .await,
    );

    let (spool, _dir) = server.stop().await;
    let stored =
        |id: &str| String::from_utf8(spool.read_message(id.parse().unwrap()).unwrap()).unwrap();
    let plain_msg = stored(&plain_id);
    assert!(plain_msg.contains("with ESMTP id"), "{plain_msg}");
    assert!(!plain_msg.contains("(using TLS"), "{plain_msg}");
    let tls_msg = stored(&tls_id);
    assert!(
        tls_msg.contains("\t(using TLSv1.3 with cipher TLS_"),
        "{tls_msg}"
    );
    assert!(tls_msg.contains("with ESMTPS id"), "{tls_msg}");
}

#[tokio::test]
async fn encrypt_refuses_mail_before_starttls() {
    let server = TestServer::start().await;
    server.set(mode_doc("encrypt")).await;
    let mut c = server.connect().await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("MAIL FROM:<s@client.test.example>").await.first(),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    c.starttls().await;
    c.ehlo().await;
    let r = c
        .send(
            "s@client.test.example",
            &["r@other.example"],
            &message("enc", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// A TLS 1.2-only client gets an ECDHE AEAD suite; the Received header names it in
/// OpenSSL's words, as Postfix would.
#[tokio::test]
async fn tls12_client_gets_an_ecdhe_suite() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let config =
        postern::tls::pinned_client_config_for(server.system_cert(), &[&rustls::version::TLS12]);
    c.starttls_with(config).await;
    c.ehlo().await;
    let id = queue_id(
        &c.send(
            "s@client.test.example",
            &["r@other.example"],
            &message("tls12", ""),
        )
        .await,
    );
    let (spool, _dir) = server.stop().await;
    let stored = String::from_utf8(spool.read_message(id.parse().unwrap()).unwrap()).unwrap();
    assert!(
        stored.contains("(using TLSv1.2 with cipher ECDHE-"),
        "{stored}"
    );
    assert!(
        stored.contains("-GCM-SHA") || stored.contains("CHACHA20-POLY1305"),
        "{stored}"
    );
}

#[tokio::test]
async fn settings_import_switches_the_next_session_not_the_one_in_flight() {
    let server = TestServer::start().await;
    server.set(mode_doc("may")).await;

    // A session opened under `may`...
    let mut in_flight = server.connect().await;
    in_flight.ehlo().await;

    // ...then the admin switches to `encrypt` with the CLI against the running server.
    let file = server.dir.path().join("encrypt.toml");
    std::fs::write(
        &file,
        "trusted_networks = [\"127.0.0.0/8\"]\n[inbound]\ntls_mode = \"encrypt\"\n",
    )
    .unwrap();
    let (ok, _, err) = server
        .cli(&["settings", "import", file.to_str().unwrap()])
        .await;
    assert!(ok, "import failed: {err}");

    // The next session is under `encrypt`.
    let mut next = server.connect().await;
    next.ehlo().await;
    assert_eq!(
        next.cmd("MAIL FROM:<s@client.test.example>").await.code,
        530
    );

    // The one in flight finishes under the settings it started with.
    let r = in_flight
        .send(
            "s@client.test.example",
            &["r@other.example"],
            &message("in flight", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");

    // And `settings export` shows the new mode.
    let (ok, out, _) = server.cli(&["settings", "export"]).await;
    assert!(ok);
    let exported: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(exported["inbound"]["tls_mode"].as_str(), Some("encrypt"));
}

#[tokio::test]
async fn api_refuses_missing_or_wrong_token() {
    let server = TestServer::start().await;
    // A real HTTPS request without the Authorization header.
    let config = postern::tls::pinned_client_config(server.system_cert());
    let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for auth in [None, Some("Bearer not-the-token")] {
        let mut req = hyper::Request::builder()
            .uri("/api/v1/settings")
            .header("host", "x");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = sender
            .send_request(
                req.body(http_body_util::Empty::<hyper::body::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "auth {auth:?}");
        assert!(resp.headers().contains_key("www-authenticate"));
    }
}

#[tokio::test]
async fn api_bad_field_is_400_naming_it_and_changes_nothing() {
    let server = TestServer::start().await;
    server
        .set(json!({"relay_domains": [{"domain": "ours.example"}], "trusted_networks": ["127.0.0.1/32"]}))
        .await;
    let before = server.get_settings().await;
    let cases = [
        (
            json!({"inbound": {"tls_mode": "encrypt"}, "trusted_networks": ["10.0.0.0/8", "300.0.0.0/8"]}),
            "trusted_networks[1]",
        ),
        (
            json!({"inbound": {"tls_mode": "sometimes"}}),
            "inbound.tls_mode",
        ),
        (
            json!({"inbound": {"tls_mode": "encrypt"}, "relay_domains": [{"domain": "ok.example", "transport": "[x.example]:0"}]}),
            "relay_domains[0].transport",
        ),
        (
            json!({"smtp_auth_users": [{"username": "newuser"}]}),
            "smtp_auth_users[0].password",
        ),
    ];
    for (doc, field) in cases {
        let (status, body) = server.put_settings(doc).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], field, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with(field), "{body}");
        assert_eq!(
            server.get_settings().await,
            before,
            "a refused document changed something"
        );
    }
    // The API never shows password hashes.
    server
        .set(json!({"smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}]}))
        .await;
    let (status, body) = server
        .api_client()
        .request(Method::GET, "/api/v1/settings", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("alice") && !text.contains("argon2") && !text.contains("correct horse"),
        "{text}"
    );
}

/// Issue 27: STARTTLS inside a MAIL transaction gets Postfix's 503 and changes nothing; after
/// RSET it is accepted, and the handshake works.
#[tokio::test]
async fn starttls_in_a_mail_transaction_is_refused() {
    let server = TestServer::start().await;
    server.set(mode_doc("may")).await;
    let mut c = server.connect().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<s@client.test.example>").await.code, 250);
    assert_eq!(
        c.cmd("STARTTLS").await.first(),
        "503 5.5.1 Error: MAIL transaction in progress"
    );
    assert_eq!(c.cmd("RCPT TO:<r@other.example>").await.code, 250);
    assert_eq!(
        c.cmd("STARTTLS").await.first(),
        "503 5.5.1 Error: MAIL transaction in progress"
    );
    // Still the plaintext session, transaction intact.
    let r = c.data(&message("plain", "")).await;
    assert_eq!(r.code, 250, "{r:?}");
    c.starttls().await;
    c.ehlo().await;
    let r = c
        .send(
            "s@client.test.example",
            &["r@other.example"],
            &message("tls", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
}
