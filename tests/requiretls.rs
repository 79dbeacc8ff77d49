//! REQUIRETLS (RFC 8689) end to end: offered only inside TLS, taken with `MAIL FROM ...
//! REQUIRETLS`, relayed only under a verified policy to a next hop that offers it too, and
//! returned with 5.7.30 otherwise. The next hop is a sink on loopback whose certificate
//! comes from a test CA (`[tls] extra_roots`), found through the tests' DNS server.

mod common;

use common::dns::{Zone, serve};
use common::sink::{Sink, SinkOptions, TestCa};
use common::*;

const RCPT: &str = "user@partner.example";

struct Lab {
    _ca_file: tempfile::NamedTempFile,
    server: TestServer,
    sink: Sink,
}

/// partner.example's MX is the sink (STARTTLS, certificate for mx.partner.example, REQUIRETLS
/// if `offers`); the table says `level` for partner.example.
async fn lab(offers: bool, level: &str) -> Lab {
    let ca = TestCa::new();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.pem).unwrap();
    let sink = Sink::start(SinkOptions {
        starttls: true,
        requiretls: offers,
        cert: Some(ca.leaf(&["mx.partner.example"])),
        ..SinkOptions::default()
    })
    .await;
    let dns = serve(
        Zone::default()
            .mx("partner.example", 10, "mx.partner.example")
            .a("mx.partner.example", "127.0.0.1".parse().unwrap()),
    )
    .await;
    let server = TestServer::start_with(&format!(
        "[outbound]\nport = {}\nnameservers = [\"{dns}\"]\n[tls]\nextra_roots = [\"{}\"]\n",
        sink.addr.port(),
        ca_file.path().display()
    ))
    .await;
    let mut doc = server.get_settings().await;
    doc["policy"] = serde_json::json!([{"pattern": "partner.example", "level": level}]);
    server.set(doc).await;
    Lab {
        _ca_file: ca_file,
        server,
        sink,
    }
}

/// Submit over STARTTLS with `MAIL FROM:<..> REQUIRETLS`.
async fn submit_requiretls(server: &TestServer) {
    let mut c = server.connect().await;
    c.ehlo().await;
    c.starttls().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.lines.iter().any(|l| l == "REQUIRETLS"), "{ehlo:?}");
    let r = c.cmd("MAIL FROM:<app@inside.example> REQUIRETLS").await;
    assert_eq!(r.first(), "250 2.1.0 Ok");
    let r = c.cmd(&format!("RCPT TO:<{RCPT}>")).await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.data(&message("requiretls", "")).await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// Bounced with 5.7.30, the reason starting with `why`.
fn returned(event: &postern::events::Delivery, why: &str) {
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.7.30"),
        "{}",
        event.reply
    );
    assert!(event.reply.starts_with(why), "{}", event.reply);
}

#[tokio::test]
async fn offered_and_taken_only_inside_tls() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.lines.iter().any(|l| l.contains("REQUIRETLS")),
        "{ehlo:?}"
    );
    let r = c.cmd("MAIL FROM:<app@inside.example> REQUIRETLS").await;
    assert_eq!(
        r.first(),
        "530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first"
    );
    c.starttls().await;
    let ehlo = c.ehlo().await;
    assert_eq!(
        ehlo.lines.last().map(String::as_str),
        Some("REQUIRETLS"),
        "{ehlo:?}"
    );
    let r = c.cmd("MAIL FROM:<app@inside.example> REQUIRETLS").await;
    assert_eq!(r.first(), "250 2.1.0 Ok");
}

#[tokio::test]
async fn relayed_with_requiretls_to_a_next_hop_that_offers_it_under_a_verified_policy() {
    let mut lab = lab(true, "verify").await;
    submit_requiretls(&lab.server).await;
    let event = lab.server.next_event_for(RCPT, 30).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(event.verified_name.as_deref(), Some("mx.partner.example"));
    let got = lab.sink.next(5).await.expect("the sink got the message");
    assert!(got.tls);
    assert!(
        got.mail_params
            .split_whitespace()
            .any(|p| p == "REQUIRETLS"),
        "{:?}",
        got.mail_params
    );
}

#[tokio::test]
async fn a_next_hop_without_requiretls_gets_nothing_and_the_message_bounces() {
    let mut lab = lab(false, "verify").await;
    submit_requiretls(&lab.server).await;
    let event = lab.server.next_event_for(RCPT, 30).await;
    returned(
        &event,
        "REQUIRETLS support required, but not offered by host mx.partner.example",
    );
    assert!(lab.sink.try_next().is_none());
}

#[tokio::test]
async fn without_a_verified_policy_the_message_bounces() {
    let mut lab = lab(true, "encrypt").await;
    submit_requiretls(&lab.server).await;
    let event = lab.server.next_event_for(RCPT, 30).await;
    returned(
        &event,
        "REQUIRETLS support required: no verified TLS policy for partner.example (level encrypt from row:partner.example",
    );
    assert_eq!(event.relay, "none");
    assert!(lab.sink.try_next().is_none());
}

/// Without REQUIRETLS nothing changes: the same message goes out, without the parameter.
#[tokio::test]
async fn an_ordinary_message_is_sent_without_the_parameter() {
    let mut lab = lab(true, "encrypt").await;
    lab.server
        .submit("app@inside.example", &[RCPT], &message("plain", ""))
        .await;
    let event = lab.server.next_event_for(RCPT, 30).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    let got = lab.sink.next(5).await.unwrap();
    assert!(
        !got.mail_params.contains("REQUIRETLS"),
        "{:?}",
        got.mail_params
    );
}

/// `TLS-Required: No` counts only from clients that may set policy (RFC 8689 section 5
/// leaves it to the MTA; postern trusts it as it trusts `x-TLSLevel`).
#[tokio::test]
async fn tls_required_no_counts_only_from_authorised_clients() {
    let server = TestServer::start().await;
    let mut doc = server.get_settings().await;
    doc["relay_domains"] = serde_json::json!([
        {"domain": "inside.example", "transport": "[127.0.0.1]:1"}
    ]);
    doc["trusted_networks"] = serde_json::json!(["127.0.0.1/32"]);
    server.set(doc).await;
    let body = message("no tls", "TLS-Required: No\r\n");
    let trusted = server
        .submit("app@inside.example", &["a@inside.example"], &body)
        .await;
    let outsider = server
        .submit_from(
            "127.0.0.9",
            "x@outside.example",
            &["b@inside.example"],
            &body,
        )
        .await;
    let (spool, _dir) = server.stop().await;
    let flag = |id: &str| {
        spooled(&spool)
            .into_iter()
            .find(|(e, _)| e.id.to_string() == id)
            .map(|(e, _)| e.envelope.tls_required_no)
            .expect("still queued (its next hop refuses connections)")
    };
    assert!(flag(&trusted));
    assert!(!flag(&outsider));
}
