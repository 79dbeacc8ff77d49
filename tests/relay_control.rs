//! Open-relay tests over loopback: an untrusted client (127.0.0.2, outside the trusted
//! 127.0.0.1/32) tries the relay testers' tricks; trusted and authenticated clients may
//! relay; AUTH only inside TLS; x-TLSLevel from outsiders never reaches the spool.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::json;

const OUTSIDER: &str = "127.0.0.2";

async fn relay_server() -> TestServer {
    let server = TestServer::start().await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{"domain": "ours.example", "transport": "[127.0.0.1]:2526"}],
            "smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}],
        }))
        .await;
    server
}

#[tokio::test]
async fn outsider_cannot_relay_with_any_trick() {
    let server = relay_server().await;
    let mut c = server.connect_from(OUTSIDER).await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("MAIL FROM:<spammer@elsewhere.example>").await.code,
        250
    );
    for rcpt in [
        "<victim@other.example>",
        "<victim%other.example@ours.example>",
        "<victim!other.example@ours.example>",
        "<other.example!victim@ours.example>",
        "<\"victim@other.example\"@ours.example>",
        "<\"victim%other.example\"@ours.example>",
        "<victim@other.example@ours.example>",
        "<@ours.example:victim@other.example>",
        "<@ours.example,@hop.example:victim@other.example>",
        "<victim@[127.0.0.1]>",
        "<victim@[IPv6:::1]>",
        "<victim@>",
        "<victim>",
        "<victim@other.example.>",
        "<victim@sub.ours.example>",
        "<victim@ours.example.other.example>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert_eq!(r.code, 554, "{rcpt}: {r:?}");
        assert!(r.lines[0].starts_with("5.7.1 <"), "{rcpt}: {r:?}");
        assert!(
            r.lines[0].ends_with(">: Relay access denied"),
            "{rcpt}: {r:?}"
        );
    }
    // Our own domain, case and trailing dot aside, is fine; the source route is ignored.
    for rcpt in [
        "<user@ours.example>",
        "<USER@OURS.EXAMPLE.>",
        "<@hop.example:user@ours.example>",
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:{rcpt}")).await.code, 250, "{rcpt}");
    }
}

#[tokio::test]
async fn trusted_client_relays() {
    let server = relay_server().await;
    let mut c = server.connect_from("127.0.0.1").await;
    c.ehlo().await;
    let r = c
        .send(
            "app@inside.example",
            &["partner@other.example"],
            &message("trusted", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
}

#[tokio::test]
async fn auth_only_inside_tls_and_then_relays() {
    let server = relay_server().await;
    let mut c = server.connect_from(OUTSIDER).await;
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered in plaintext: {ehlo:?}"
    );
    let plain = STANDARD.encode("\0alice\0correct horse battery");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {plain}")).await.first(),
        "503 5.5.1 Error: authentication not enabled"
    );

    c.starttls().await;
    let ehlo = c.ehlo().await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    let wrong = STANDARD.encode("\0alice\0wrong password");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}")).await.first(),
        "535 5.7.8 Error: authentication failed"
    );
    assert_eq!(c.cmd("MAIL FROM:<alice@inside.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<partner@other.example>").await.code, 554);
    assert_eq!(c.cmd("RSET").await.code, 250);

    // AUTH LOGIN, step by step.
    assert_eq!(c.cmd("AUTH LOGIN").await.first(), "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd(&STANDARD.encode("alice")).await.first(),
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(
        c.cmd(&STANDARD.encode("correct horse battery"))
            .await
            .first(),
        "235 2.7.0 Authentication successful"
    );
    let id = queue_id(
        &c.send(
            "alice@inside.example",
            &["partner@other.example"],
            &message("authed", "x-TLSLevel: Require\r\n"),
        )
        .await,
    );

    let (spool, _dir) = server.stop().await;
    let stored = String::from_utf8(spool.read_message(id.parse().unwrap()).unwrap()).unwrap();
    assert!(stored.contains("with ESMTPSA id"), "{stored}");
    assert!(
        stored.contains("x-TLSLevel: Require\r\n"),
        "an authenticated client's header must stay: {stored}"
    );
}

#[tokio::test]
async fn x_tlslevel_from_outsider_is_removed_from_trusted_kept() {
    let server = relay_server().await;
    let original = message("level", "X-TLSLevel: Require\r\nx-tlslevel:Try\r\n");

    let mut outsider = server.connect_from(OUTSIDER).await;
    outsider.ehlo().await;
    let outsider_id = queue_id(
        &outsider
            .send("a@elsewhere.example", &["user@ours.example"], &original)
            .await,
    );

    let mut trusted = server.connect_from("127.0.0.1").await;
    trusted.ehlo().await;
    let trusted_id = queue_id(
        &trusted
            .send("app@inside.example", &["partner@other.example"], &original)
            .await,
    );

    let (spool, _dir) = server.stop().await;
    let stored = |id: &str| spool.read_message(id.parse().unwrap()).unwrap();
    let from_outsider = stored(&outsider_id);
    let text = String::from_utf8_lossy(&from_outsider).to_ascii_lowercase();
    assert!(!text.contains("x-tlslevel"), "{text}");
    let expected_rest = String::from_utf8(original.clone())
        .unwrap()
        .replace("X-TLSLevel: Require\r\nx-tlslevel:Try\r\n", "");
    assert!(
        String::from_utf8(from_outsider)
            .unwrap()
            .ends_with(&expected_rest)
    );

    let from_trusted = stored(&trusted_id);
    assert!(from_trusted.ends_with(&original), "trusted message changed");
    let entry = spool.get(trusted_id.parse().unwrap()).unwrap();
    assert!(entry.envelope.authorised);
    assert!(
        !spool
            .get(outsider_id.parse().unwrap())
            .unwrap()
            .envelope
            .authorised
    );
}

/// A relay domain with a recipient table: an unknown recipient is refused at RCPT (Postfix's
/// relay_recipient_maps wording), from anyone, so no bounce can ever go to a forged sender;
/// known ones and patterns are delivered.
#[tokio::test]
async fn unknown_recipients_of_a_verified_relay_domain_are_refused_at_rcpt() {
    let mut sink = common::sink::Sink::start(common::sink::SinkOptions::default()).await;
    let port = sink.addr.port();
    let server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"forged.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    let (status, body) = server
        .put_settings(json!({
            "relay_domains": [{"domain": "ours.example", "recipients": ["alice@ours.example", "not an address"]}],
        }))
        .await;
    assert_eq!(status, hyper::StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "relay_domains[0].recipients[1]", "{body}");
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{
                "domain": "ours.example",
                "transport": format!("[127.0.0.1]:{port}"),
                "recipients": ["Alice@ours.example", "sales-*@ours.example"],
            }],
        }))
        .await;
    let mut c = server.connect_from(OUTSIDER).await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<victim@forged.example>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<nobody@ours.example>").await.first(),
        "550 5.1.1 <nobody@ours.example>: Recipient address rejected: User unknown in relay recipient table"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@OURS.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<sales-emea@ours.example>").await.code, 250);
    queue_id(&c.data(&message("known only", "")).await);
    let got = sink
        .next(20)
        .await
        .expect("delivered to the known recipients");
    assert_eq!(
        got.recipients,
        vec!["alice@OURS.example", "sales-emea@ours.example"]
    );
    // A trusted client gets the same answer: refused now rather than bounced later.
    let mut c = server.connect().await;
    c.ehlo().await;
    c.cmd("MAIL FROM:<app@inside.example>").await;
    assert_eq!(c.cmd("RCPT TO:<nobody@ours.example>").await.code, 550);
    c.cmd("QUIT").await;
    // Nothing else reached the sink: no bounce to the forged sender.
    let (spool, _dir) = server.stop().await;
    assert!(spool.is_empty());
    assert!(
        sink.try_next().is_none(),
        "a bounce or a stray message was sent"
    );
}

/// Call-ahead verification: the relay domain's next hop is asked at RCPT; what it refuses
/// is refused at once in Postfix's reject_unverified_recipient words, what it takes is
/// accepted and delivered, answers are cached, and a next hop that cannot be asked gives a
/// temporary 450, never an acceptance.
#[tokio::test]
async fn call_ahead_verification_refuses_unknown_recipients_at_rcpt() {
    let mut sink = common::sink::Sink::start(common::sink::SinkOptions {
        reject: vec!["nobody@ours.example".into()],
        ..Default::default()
    })
    .await;
    let port = sink.addr.port();
    let server = TestServer::start().await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [
                {"domain": "ours.example", "transport": format!("[127.0.0.1]:{port}"), "verify_recipients": true},
                {"domain": "down.example", "transport": "[127.0.0.1]:9", "verify_recipients": true},
            ],
        }))
        .await;
    let mut c = server.connect_from(OUTSIDER).await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<victim@forged.example>").await.code, 250);
    let refused = c.cmd("RCPT TO:<nobody@ours.example>").await.first();
    assert!(
        refused
            == "550 5.1.1 <nobody@ours.example>: Recipient address rejected: undeliverable address: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@ours.example>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
        "{refused}"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@ours.example>").await.code, 250);
    let probes = sink.sessions.load(std::sync::atomic::Ordering::SeqCst);
    // Asked again: answered from the cache, no new session at the next hop.
    assert_eq!(c.cmd("RCPT TO:<nobody@ours.example>").await.code, 550);
    assert_eq!(c.cmd("RCPT TO:<alice@ours.example>").await.code, 250);
    assert_eq!(
        sink.sessions.load(std::sync::atomic::Ordering::SeqCst),
        probes
    );
    let unverified = c.cmd("RCPT TO:<someone@down.example>").await.first();
    assert!(
        unverified.starts_with("450 4.1.1 <someone@down.example>: Recipient address rejected: unverified address: connect to"),
        "{unverified}"
    );
    queue_id(&c.data(&message("verified", "")).await);
    let got = sink
        .next(20)
        .await
        .expect("delivered to the verified recipients");
    assert_eq!(
        got.recipients,
        vec!["alice@ours.example", "alice@ours.example"]
    );
    let (spool, _dir) = server.stop().await;
    assert!(spool.is_empty());
    assert!(sink.try_next().is_none(), "no bounce, nothing else");
}

/// A recipient table imported from a file (one address per line, as exported from a
/// directory): applied whole, and a bad line is named by its number.
#[tokio::test]
async fn recipient_table_imported_from_a_file() {
    let server = relay_server().await;
    let file = server.data_dir().join("valid.txt");
    let import = |file: &std::path::Path| {
        let file = file.to_str().unwrap().to_string();
        let server = &server;
        async move {
            server
                .cli(&["settings", "recipients", "ours.example", &file])
                .await
        }
    };
    std::fs::write(
        &file,
        "# exported 2026-12-01\nalice@ours.example\n\nnot an address\n",
    )
    .unwrap();
    let (ok, _, err) = import(&file).await;
    assert!(!ok);
    assert!(err.contains(&format!("{}:4: ", file.display())), "{err}");
    assert!(err.contains("relay_domains[0].recipients[1]"), "{err}");
    std::fs::write(
        &file,
        "# exported 2026-12-01\nalice@ours.example\nsales-*@ours.example\n",
    )
    .unwrap();
    let (ok, _, err) = import(&file).await;
    assert!(ok, "{err}");
    let doc = server.get_settings().await;
    assert_eq!(
        doc["relay_domains"][0]["recipients"],
        json!(["alice@ours.example", "sales-*@ours.example"])
    );
    let mut c = server.connect_from(OUTSIDER).await;
    c.ehlo().await;
    c.cmd("MAIL FROM:<a@forged.example>").await;
    assert_eq!(c.cmd("RCPT TO:<bob@ours.example>").await.code, 550);
    assert_eq!(c.cmd("RCPT TO:<alice@ours.example>").await.code, 250);
}

/// Issue 27, break 7: a next hop that reads headers past a malformed line (no colon, an
/// 8-bit or empty name) must find no outsider's x-TLSLevel either. Every variant reaches the
/// sink with no x-TLSLevel line, nor its folded value, before the first empty line; the
/// malformed line and the body are relayed as sent.
#[tokio::test]
async fn x_tlslevel_after_a_malformed_line_is_removed_too() {
    let mut sink = common::sink::Sink::start(common::sink::SinkOptions::default()).await;
    let server = TestServer::start().await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{"domain": "ours.example", "transport": format!("[127.0.0.1]:{}", sink.addr.port())}],
        }))
        .await;
    let variants: [(&str, &[u8]); 6] = [
        (
            "no colon",
            b"a line without a colon\r\nx-TLSLevel: Require\r\n",
        ),
        (
            "8-bit name",
            "Sübject: s\r\nx-TLSLevel: Require\r\n".as_bytes(),
        ),
        ("empty name", b": x\r\nx-TLSLevel: Require\r\n"),
        (
            "space before colon",
            b"no colon\r\nX-TLSLevel : Require\r\n",
        ),
        ("folded", b"no colon\r\nx-tlslevel:\r\n\tRequire\r\n"),
        (
            "first line",
            b"x-TLSLevel\t:Require\r\nno colon\r\nX-TLSLEVEL: Require\r\n",
        ),
    ];
    let mut relayed = Vec::new();
    for (name, lines) in variants {
        let mut message =
            format!("From: <a@elsewhere.example>\r\nSubject: {name}\r\n").into_bytes();
        message.extend_from_slice(lines);
        message.extend_from_slice(b"\r\nBody: x-TLSLevel: Require stays in the body\r\n");
        let mut c = server.connect_from(OUTSIDER).await;
        c.ehlo().await;
        queue_id(
            &c.send("a@elsewhere.example", &["user@ours.example"], &message)
                .await,
        );
        let got = sink.next(20).await.expect("relayed to the sink");
        let text = String::from_utf8_lossy(&got.data).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an empty line");
        let lower = head.to_ascii_lowercase();
        if lower.contains("x-tlslevel") || lower.contains("require") {
            relayed.push(name);
        }
        let junk = String::from_utf8_lossy(lines)
            .lines()
            .find(|l| !l.to_ascii_lowercase().contains("tlslevel") && !l.contains("Require"))
            .map(str::to_string);
        if let Some(junk) = junk {
            assert!(head.contains(&junk), "{name}: malformed line lost: {text}");
        }
        assert_eq!(
            body, "Body: x-TLSLevel: Require stays in the body\r\n",
            "{name}"
        );
    }
    assert!(
        relayed.is_empty(),
        "x-TLSLevel relayed in {} of {} variants: {relayed:?}",
        relayed.len(),
        variants.len()
    );
}
