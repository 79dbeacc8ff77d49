//! Outbound TLS policy end to end: table rows and x-TLSLevel enforced against real sinks,
//! minimum strength with its GlobalCerts text, bounce versus defer, no plaintext fallback.

mod common;

use common::sink::{Sink, SinkOptions};
use common::*;
use serde_json::{Value, json};

/// postern routing other.example and inside.example (the sender's domain, for DSNs) to `sink`.
async fn setup(sink: &Sink, policy: Value) -> TestServer {
    let port = sink.addr.port();
    let server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n\"inside.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"], "policy": policy}))
        .await;
    server
}

async fn submit(server: &TestServer, from_ip: &str, extra_header: &str) {
    server
        .submit_from(
            from_ip,
            "app@inside.example",
            &["partner@other.example"],
            &message("policy", extra_header),
        )
        .await;
}

/// A policy bounce as the sender's mail client reads it: one clean text, with its code, in
/// the human part and as the Diagnostic-Code.
fn assert_policy_dsn(data: &[u8], rcpt: &str, text: &str) {
    let dsn = common::dsn::parse(data);
    assert_eq!(dsn.subject, "Undelivered Mail Returned to Sender");
    assert!(
        dsn.notification.contains(&format!("<{rcpt}>: {text}\r\n")),
        "{}",
        dsn.notification
    );
    assert!(
        dsn.delivery_status.contains(&format!(
            "Status: 5.7.0\r\nDiagnostic-Code: X-Postern; {text}\r\n"
        )),
        "{}",
        dsn.delivery_status
    );
}

#[tokio::test]
async fn plaintext_only_peer_with_required_row_bounces_0_less_than_112() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let mut server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt", "on_failure": "bounce"}]),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.7.0")
    );
    // The reference's words, then Postfix's with the host, in one sentence.
    assert_eq!(
        event.reply,
        "encryption too weak 0 less than 112 (TLS is required, but was not offered by host 127.0.0.1[127.0.0.1])"
    );
    assert_eq!(
        (event.policy_level.as_str(), event.policy_source.as_str()),
        ("encrypt", "row:other.example")
    );
    // The only thing the sink ever gets is the DSN (null sender), never the message.
    let got = sink.next(20).await.expect("no DSN");
    assert_eq!(got.sender, "");
    let text = "5.7.0 encryption too weak 0 less than 112 (TLS is required, but was not offered by host 127.0.0.1[127.0.0.1])";
    assert_policy_dsn(&got.data, "partner@other.example", text);
    assert!(sink.try_next().is_none());
}

#[tokio::test]
async fn aes128_peer_below_256_bounces_or_defers_per_row() {
    let weak = SinkOptions {
        starttls: true,
        aes128_only: true,
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(weak.clone()).await;
    let mut server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt", "min_bits": 256, "on_failure": "bounce"}]),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.7.0")
    );
    assert_eq!(
        event.reply,
        "encryption too weak 128 less than 256 (host 127.0.0.1[127.0.0.1])"
    );
    let got = sink.next(20).await.expect("no DSN");
    assert_eq!(
        got.sender, "",
        "the message itself went over a weak session"
    );
    let text = "5.7.0 encryption too weak 128 less than 256 (host 127.0.0.1[127.0.0.1])";
    assert_policy_dsn(&got.data, "partner@other.example", text);

    // The defer variant keeps it queued with 4.7.0.
    let sink = Sink::start(weak).await;
    let mut server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt", "min_bits": 256, "on_failure": "defer"}]),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.0")
    );
    let (spool, _) = server.stop().await;
    assert_eq!(spool.len(), 1);

    // 128 bits meet a row asking for 128.
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        aes128_only: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt", "min_bits": 128}]),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    assert_eq!(
        server
            .next_event_for("partner@other.example", 20)
            .await
            .status,
        "sent"
    );
    assert!(sink.next(20).await.unwrap().tls);
}

#[tokio::test]
async fn header_require_from_trusted_client_is_enforced_from_outsider_ignored() {
    let mut sink = Sink::start(SinkOptions::default()).await; // no STARTTLS
    let mut server = setup(&sink, json!([])).await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{"domain": "other.example"}],
        }))
        .await;
    // Trusted client: its x-TLSLevel: Require makes TLS mandatory; the plaintext peer defers it.
    submit(&server, "127.0.0.1", "x-TLSLevel: Require\r\n").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (
            event.status.as_ref(),
            event.policy_level.as_str(),
            event.policy_source.as_str()
        ),
        ("deferred", "encrypt", "header")
    );
    assert!(
        sink.try_next().is_none(),
        "delivered in plaintext despite Require"
    );
    // Outsider (sending to our relay domain): its header was removed; may applies, delivered.
    submit(&server, "127.0.0.2", "x-TLSLevel: Require\r\n").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.policy_source.as_str()),
        ("sent", "global")
    );
    let got = sink.next(20).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&got.data)
            .to_ascii_lowercase()
            .contains("x-tlslevel")
    );
}

#[tokio::test]
async fn policy_explain_names_each_source() {
    let sink = Sink::start(SinkOptions::default()).await;
    let server = setup(
        &sink,
        json!([{"pattern": ".partner.example", "level": "encrypt", "min_bits": 128, "on_failure": "bounce", "note": "contract 42"}]),
    )
    .await;
    let (ok, out, err) = server
        .cli(&["policy", "explain", "ceo@mail.partner.example", "--json"])
        .await;
    assert!(ok, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (d["level"].as_str(), d["source"].as_str()),
        (Some("encrypt"), Some("row:.partner.example"))
    );
    assert_eq!(
        (d["min_bits"].as_u64(), d["on_failure"].as_str()),
        (Some(128), Some("bounce"))
    );
    let lines: Vec<&str> = d["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"global outbound mode Opportunistic (may): may"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"policy row .partner.example: encrypt (contract 42) (decides)"),
        "{lines:?}"
    );

    let (ok, out, _) = server
        .cli(&[
            "policy",
            "explain",
            "a@other.example",
            "--header",
            "x-TLSLevel: Require",
        ])
        .await;
    assert!(ok);
    assert!(out.contains("level:     encrypt"), "{out}");
    assert!(
        out.contains("  - x-TLSLevel: Require: encrypt (decides)"),
        "{out}"
    );
    assert!(
        out.contains("  - effective: encrypt (from header)"),
        "{out}"
    );

    let (ok, _, err) = server.cli(&["policy", "explain", "not an address"]).await;
    assert!(!ok);
    assert!(err.contains("400 Bad Request: recipient:"), "{err}");
}

/// A sink serving `cert` as the MX of other.example (DNS on loopback), and postern trusting
/// `ca` besides the Mozilla roots.
async fn verified_setup(
    ca: &common::sink::TestCa,
    cert: std::sync::Arc<(Vec<u8>, Vec<u8>)>,
    row: Value,
) -> (TestServer, Sink, tempfile::TempDir) {
    use common::dns::{Zone, serve};
    let sink = Sink::start(SinkOptions {
        starttls: true,
        cert: Some(cert),
        ..SinkOptions::default()
    })
    .await;
    let dns = serve(
        Zone::default()
            .mx("other.example", 10, "mx.other.example")
            .a("mx.other.example", "127.0.0.1".parse().unwrap()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = TestServer::start_with(&format!(
        "[outbound]\nport = {}\nnameservers = [\"{dns}\"]\n[outbound.routes]\n\"inside.example\" = \"[127.0.0.1]\"\n[tls]\nextra_roots = [\"{}\"]\n",
        sink.addr.port(),
        ca_file.display()
    ))
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"], "policy": [row]}))
        .await;
    (server, sink, dir)
}

#[tokio::test]
async fn verify_accepts_the_mx_name_and_refuses_another() {
    let ca = common::sink::TestCa::new();
    let row = json!({"pattern": "other.example", "level": "verify"});
    let (mut server, mut sink, _ca_dir) =
        verified_setup(&ca, ca.leaf(&["mx.other.example"]), row.clone()).await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(event.status.as_ref(), "sent", "{}", event.reply);
    assert_eq!(event.verified_name.as_deref(), Some("mx.other.example"));
    assert!(sink.next(20).await.unwrap().tls);

    let (mut server, sink, _ca_dir) = verified_setup(&ca, ca.leaf(&["wrong.example"]), row).await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.5"),
        "{}",
        event.reply
    );
    // In words: the name wanted and the names the certificate has, no Debug dump.
    assert_eq!(
        event.reply,
        "Cannot start TLS with mx.other.example[127.0.0.1]: Server certificate not verified for mx.other.example: certificate not valid for name mx.other.example (it names wrong.example)"
    );
    let mut sink = sink;
    assert!(sink.try_next().is_none());
}

#[tokio::test]
async fn secure_wants_the_recipient_domain_not_the_mx_name() {
    let ca = common::sink::TestCa::new();
    let row = json!({"pattern": "other.example", "level": "secure"});
    let (mut server, mut sink, _ca_dir) =
        verified_setup(&ca, ca.leaf(&["mx.other.example"]), row.clone()).await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        event.status, "deferred",
        "a certificate for the MX name alone must not pass secure"
    );
    assert!(sink.try_next().is_none());

    let (mut server, mut sink, _ca_dir) =
        verified_setup(&ca, ca.leaf(&["mx.other.example", "other.example"]), row).await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(event.status.as_ref(), "sent", "{}", event.reply);
    assert_eq!(event.verified_name.as_deref(), Some("other.example"));
    assert!(sink.next(20).await.is_some());
}

#[tokio::test]
async fn fingerprint_accepts_only_the_pinned_key() {
    let ca = common::sink::TestCa::new();
    let cert = ca.leaf(&["anything.example"]);
    let pin = postern::tls::fingerprints(&rustls_pki_types::CertificateDer::from(cert.0.clone())).0;
    let (mut server, mut sink, _ca_dir) = verified_setup(
        &ca,
        cert.clone(),
        json!({"pattern": "other.example", "level": "fingerprint", "fingerprints": [pin]}),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(event.status.as_ref(), "sent", "{}", event.reply);
    assert!(sink.next(20).await.is_some());

    let other = "ab".repeat(32);
    let (mut server, mut sink, _ca_dir) = verified_setup(
        &ca,
        cert,
        json!({"pattern": "other.example", "level": "fingerprint", "fingerprints": [other], "on_failure": "bounce"}),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.7.5"),
        "{}",
        event.reply
    );
    assert!(event.reply.contains("matches no pin"), "{}", event.reply);
    // Only the DSN (null sender) reached the sink, which is also inside.example's host.
    let got = sink.next(20).await.expect("no DSN");
    assert_eq!(got.sender, "");
}

/// A man in the middle that removes STARTTLS from the next hop's EHLO reply (the classic
/// downgrade attack), relaying everything else both ways.
async fn stripping_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (cr, mut cw) = client.into_split();
                let (sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let mut cr = cr;
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut lines = BufReader::new(sr);
                let mut line = String::new();
                while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let out = if line.to_ascii_uppercase().contains("STARTTLS") {
                        line.replace("STARTTLS", "XSTRIPPED")
                    } else {
                        line.clone()
                    };
                    if cw.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn starttls_stripping_never_yields_plaintext_under_a_required_level() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let proxy = stripping_proxy(sink.addr).await;
    let server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n\"inside.example\" = \"[127.0.0.1]:{}\"\n",
        proxy.port(),
        proxy.port()
    ))
    .await;
    let mut server = server;
    for (policy, header, source) in [
        (
            json!([{"pattern": "other.example", "level": "encrypt"}]),
            "",
            "row:other.example",
        ),
        (
            json!([{"pattern": "other.example", "level": "verify"}]),
            "",
            "row:other.example",
        ),
        (
            json!([{"pattern": "other.example", "level": "secure"}]),
            "",
            "row:other.example",
        ),
        (json!([]), "x-TLSLevel: Require\r\n", "header"),
        (json!([]), "", "rule:partners"),
    ] {
        let rules = if source.starts_with("rule:") {
            json!([{"name": "partners", "recipient_matches": "p", "tls_level": "require"}])
        } else {
            json!([])
        };
        server
            .set(json!({
                "trusted_networks": ["127.0.0.1/32"],
                "policy": policy,
                "rule_data": [{"name": "p", "domains": ["other.example"]}],
                "rules": rules,
            }))
            .await;
        submit(&server, "127.0.0.1", header).await;
        let event = server.next_event_for("partner@other.example", 20).await;
        assert_eq!(
            (event.status.as_ref(), event.policy_source.as_str()),
            ("deferred", source),
            "{}",
            event.reply
        );
        assert!(
            event
                .reply
                .contains("TLS is required, but was not offered by host"),
            "{}",
            event.reply
        );
        assert!(
            sink.try_next().is_none(),
            "delivered in plaintext through the stripping proxy ({source})"
        );
    }
    // Under may the message goes through in plaintext, and the record says STARTTLS was not offered.
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.starttls_offered),
        ("sent", false)
    );
    assert!(event.tls.is_none());
    let got = sink.next(20).await.unwrap();
    assert!(!got.tls);
}

#[tokio::test]
async fn rule_enforces_one_recipient_of_a_message_not_the_other() {
    // A plaintext-only next hop for both domains: the enforced recipient must not go out.
    let mut sink = Sink::start(SinkOptions::default()).await;
    let port = sink.addr.port();
    let mut server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"enforced.example\" = \"[127.0.0.1]:{port}\"\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "rule_data": [{"name": "enforced-list", "domains": ["enforced.example"]}],
            "rules": [{"name": "partners require TLS", "direction": "outbound",
                       "recipient_matches": "enforced-list", "tls_level": "require"}],
        }))
        .await;
    let mut c = server.connect_from("127.0.0.1").await;
    c.ehlo().await;
    let r = c
        .send(
            "app@inside.example",
            &["a@enforced.example", "b@other.example"],
            &message("two policies", ""),
        )
        .await;
    let id = queue_id(&r);
    let mut events = [server.next_event(20).await, server.next_event(20).await];
    events.sort_by(|x, y| x.recipient.cmp(&y.recipient));
    assert_eq!(events[0].recipient, "a@enforced.example");
    assert_eq!(
        (
            events[0].status.as_ref(),
            events[0].policy_level.as_str(),
            events[0].policy_source.as_str()
        ),
        ("deferred", "encrypt", "rule:partners require TLS")
    );
    assert_eq!(events[0].rule.as_deref(), Some("partners require TLS"));
    assert!(
        events[0]
            .postfix_line()
            .ends_with("policy=encrypt source=rule:partners require TLS rule=partners require TLS"),
        "{}",
        events[0].postfix_line()
    );
    assert_eq!(events[1].rule, None);
    assert_eq!(
        (
            events[1].status.as_ref(),
            events[1].policy_level.as_str(),
            events[1].policy_source.as_str()
        ),
        ("sent", "may", "global")
    );
    let got = sink.next(20).await.unwrap();
    assert_eq!(
        got.recipients,
        vec!["b@other.example"],
        "only the opportunistic recipient goes out in plaintext"
    );
    assert!(sink.try_next().is_none());

    // `policy explain` evaluates the same rules.
    let (ok, out, err) = server
        .cli(&["policy", "explain", "a@enforced.example", "--json"])
        .await;
    assert!(ok, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["source"], "rule:partners require TLS");

    // The rule's result was kept with the recipient in the spool.
    let (spool, _) = server.stop().await;
    let entry = spool.get(id.parse().unwrap()).unwrap();
    let kept = entry.envelope.rule_levels[0].as_ref().unwrap();
    assert_eq!(
        (kept.level, kept.rule.as_str()),
        (postern::policy::Level::Encrypt, "partners require TLS")
    );
    assert!(entry.envelope.rule_levels[1].is_none());
    assert_eq!(entry.pending(), vec![0]);
}

#[tokio::test]
async fn policy_change_rolls_back_to_the_previous_version() {
    let sink = Sink::start(SinkOptions::default()).await;
    let server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt"}]),
    )
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"], "policy": [{"pattern": "other.example", "level": "may"}]}))
        .await;
    let (ok, _, err) = server.cli(&["settings", "rollback"]).await;
    assert!(ok, "{err}");
    let (_, out, _) = server
        .cli(&["policy", "explain", "a@other.example", "--json"])
        .await;
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (d["level"].as_str(), d["source"].as_str()),
        (Some("encrypt"), Some("row:other.example"))
    );
}

#[tokio::test]
async fn may_retries_in_plaintext_after_a_failed_handshake() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        broken_tls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = setup(&sink, json!([])).await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.policy_level.as_str()),
        ("sent", "may"),
        "{}",
        event.reply
    );
    assert!(event.tls.is_none() && event.starttls_offered);
    assert!(!sink.next(20).await.unwrap().tls);

    // Under a required level, the same peer never gets the message in plaintext.
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        broken_tls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = setup(
        &sink,
        json!([{"pattern": "other.example", "level": "encrypt"}]),
    )
    .await;
    submit(&server, "127.0.0.1", "").await;
    let event = server.next_event_for("partner@other.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.5"),
        "{}",
        event.reply
    );
    assert!(
        event.reply.starts_with("Cannot start TLS with"),
        "{}",
        event.reply
    );
    assert!(sink.try_next().is_none());
}

/// Folded, lower-, upper-case and tab-separated `x-TLSLevel` headers: from a trusted client
/// each makes TLS mandatory (the plaintext-only sink gets nothing), and `policy explain`
/// given the same header text says the same; from an outsider each is removed.
#[tokio::test]
async fn x_tlslevel_variants_enforced_and_explained_alike() {
    let mut sink = Sink::start(SinkOptions::default()).await; // no STARTTLS
    let mut server = setup(&sink, json!([])).await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{"domain": "other.example"}],
        }))
        .await;
    let variants = [
        "x-TLSLevel:\r\n Require\r\n",
        "X-TlsLevel:\r\n\tRequire\r\n",
        "x-tlslevel: require\r\n",
        "X-TLSLEVEL :Require\r\n",
        "x-TLSLevel:\tRequire\t\r\n",
    ];
    for (n, header) in variants.iter().enumerate() {
        let rcpt = format!("partner{n}@other.example");
        server
            .submit_from(
                "127.0.0.1",
                "app@inside.example",
                &[&rcpt],
                &message("variant", header),
            )
            .await;
        let event = server.next_event_for(&rcpt, 20).await;
        assert_eq!(
            (
                event.status.as_ref(),
                event.policy_level.as_str(),
                event.policy_source.as_str()
            ),
            ("deferred", "encrypt", "header"),
            "{header:?}"
        );
        assert!(
            sink.try_next().is_none(),
            "{header:?}: delivered in plaintext"
        );
        let (ok, out, err) = server
            .cli(&[
                "policy",
                "explain",
                &rcpt,
                "--header",
                header.trim_end(),
                "--json",
            ])
            .await;
        assert!(ok, "{err}");
        let d: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (d["level"].as_str(), d["source"].as_str()),
            (
                Some(event.policy_level.as_str()),
                Some(event.policy_source.as_str())
            ),
            "{header:?}: explain and delivery disagree"
        );
    }
    for (n, header) in variants.iter().enumerate() {
        let rcpt = format!("outside{n}@other.example");
        server
            .submit_from(
                "127.0.0.2",
                "app@inside.example",
                &[&rcpt],
                &message("variant", header),
            )
            .await;
        let event = server.next_event_for(&rcpt, 20).await;
        assert_eq!(
            (event.status.as_ref(), event.policy_source.as_str()),
            ("sent", "global"),
            "{header:?}"
        );
        let got = sink.next(20).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&got.data)
                .to_ascii_lowercase()
                .contains("x-tlslevel"),
            "{header:?}: an outsider's header reached the next hop"
        );
    }
}

/// A number out of range is named with its field and the range, whether the parser or the
/// validator is the one that sees it (never a parser's type message).
#[tokio::test]
async fn out_of_range_min_bits_names_the_field_and_the_range() {
    let server = TestServer::start().await;
    for bits in [100_000i64, 512, -1] {
        let (status, body) = server
            .put_settings(json!({"policy": [
                {"pattern": "a.example", "level": "encrypt"},
                {"pattern": "b.example", "level": "encrypt", "min_bits": bits},
            ]}))
            .await;
        assert_eq!(status, hyper::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], "policy[1].min_bits", "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.ends_with(&format!("{bits} is out of range (0–256)")),
            "{error}"
        );
    }
}
