//! DANE (RFC 7672) end to end against a DNSSEC-signed zone on a loopback authoritative
//! server (hickory-server; the test signs a root zone and gives postern its key as the
//! trust anchor, `outbound.dnssec_trust_anchor`): a matching DANE-EE record authenticates a
//! self-signed certificate, a mismatching one defers, a bogus signature defers (never
//! plaintext), an unsigned zone is insecure (ordinary opportunistic TLS).

mod common;

use std::sync::Arc;

use common::dnssec::{Records, SignedDns, Zones, serve, spki_sha256};
use common::sink::{Sink, SinkOptions};
use common::*;
use postern::events::Delivery;
use postern::events::tls_rpt::{PolicyType, ResultType};

struct Lab {
    server: TestServer,
    sink: Sink,
    _dns: SignedDns,
    _ca_file: tempfile::NamedTempFile,
    /// The `[outbound]` section the server runs with.
    outbound: String,
}

fn mx(records: Records, domain: &str) -> Records {
    records
        .mx(domain, 10, &format!("mx.{domain}"))
        .a(&format!("mx.{domain}"), "127.0.0.1".parse().unwrap())
}

/// One sink (a self-signed certificate) is every domain's MX: dane.example publishes its
/// key as `3 1 1`, wrong.example another key's; bogus.example's signatures do not validate;
/// plain.example is not signed. DANE is on for every domain (`outbound.dane`).
async fn lab() -> Lab {
    let cert = rcgen::generate_simple_self_signed(vec!["mx.dane.example".to_string()]).unwrap();
    let (der, key) = (cert.cert.der().to_vec(), cert.signing_key.serialize_der());
    let other = rcgen::generate_simple_self_signed(vec!["x.example".to_string()]).unwrap();
    // dane.example also publishes an MTA-STS policy that names another MX: DANE wins.
    let ca = common::sink::TestCa::new();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.pem).unwrap();
    let sts = common::https::HttpsServer::start(
        ca.leaf(&["mta-sts.dane.example"]),
        200,
        "version: STSv1\nmode: enforce\nmx: mx.elsewhere.example\nmax_age: 86400\n",
    )
    .await;
    let signed = mx(mx(Records::default(), "dane.example"), "wrong.example")
        .txt("_mta-sts.dane.example", "v=STSv1; id=1;")
        .tlsa("_25._tcp.mx.dane.example", (3, 1, 1), spki_sha256(&der))
        .tlsa(
            "_25._tcp.mx.wrong.example",
            (3, 1, 1),
            spki_sha256(other.cert.der()),
        );
    let bogus = mx(Records::default(), "bogus.example").tlsa(
        "_25._tcp.mx.bogus.example",
        (3, 1, 1),
        spki_sha256(&der),
    );
    let dns = serve(Zones {
        signed,
        unsigned: vec![(
            "plain.example".into(),
            mx(Records::default(), "plain.example"),
        )],
        bogus: vec![("bogus.example".into(), bogus)],
    })
    .await;
    let sink = Sink::start(SinkOptions {
        starttls: true,
        cert: Some(Arc::new((der, key))),
        ..SinkOptions::default()
    })
    .await;
    let outbound = format!(
        "[outbound]\nport = {}\nnameservers = [\"{}\"]\ndnssec_trust_anchor = \"{}\"\n[outbound.policy_hosts]\n\"mta-sts.dane.example\" = \"{}\"\n[tls]\nextra_roots = [\"{}\"]\n",
        sink.addr.port(),
        dns.addr,
        dns.anchor_file.path().display(),
        sts.addr,
        ca_file.path().display()
    );
    let server = TestServer::start_with(&outbound).await;
    let mut doc = server.get_settings().await;
    doc["outbound"]["dane"] = serde_json::json!(true);
    server.set(doc).await;
    Lab {
        server,
        sink,
        _dns: dns,
        _ca_file: ca_file,
        outbound,
    }
}

async fn send(lab: &mut Lab, rcpt: &str) -> Delivery {
    lab.server
        .submit("app@inside.example", &[rcpt], &message("dane", ""))
        .await;
    lab.server.next_event_for(rcpt, 30).await
}

#[tokio::test]
async fn a_matching_dane_ee_record_authenticates_a_self_signed_certificate() {
    let mut lab = lab().await;
    let event = send(&mut lab, "a@dane.example").await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(
        (event.policy_level.as_str(), event.policy_source.as_str()),
        ("dane", "dane:dane.example")
    );
    assert!(
        event
            .verified_name
            .as_deref()
            .is_some_and(|v| v.starts_with("DANE-EE TLSA 3 1 1 ")),
        "{:?}",
        event.verified_name
    );
    let rpt = event.tls_rpt.clone().unwrap();
    assert_eq!((rpt.policy_type, rpt.result_type), (PolicyType::Tlsa, None));
    assert!(lab.sink.next(5).await.unwrap().tls);
    let out = lab.server.explain("a@dane.example").await;
    assert!(
        out.contains("DANE: DNSSEC-secured TLSA records (mx.dane.example TLSA 3 1 1 ")
            && out.contains("): dane (decides)"),
        "{out}"
    );
    // Its MTA-STS policy names another MX; where DANE authenticates, it yields (RFC 8461
    // section 2), so the mail went to the DANE host.
    assert!(
        out.contains("MTA-STS policy of dane.example (id 1, mode enforce, cached): verify, MX must match mx.elsewhere.example, overridden by DANE"),
        "{out}"
    );
}

#[tokio::test]
async fn a_record_that_matches_another_key_defers() {
    let mut lab = lab().await;
    let event = send(&mut lab, "a@wrong.example").await;
    assert_eq!(event.status, "deferred");
    assert!(
        event.reply.contains(
            "Server certificate not verified by DANE: the chain matches none of 1 record(s)"
        ),
        "{}",
        event.reply
    );
    let rpt = event.tls_rpt.clone().unwrap();
    assert_eq!(
        (rpt.policy_type, rpt.result_type),
        (PolicyType::Tlsa, Some(ResultType::ValidationFailure))
    );
    assert!(lab.sink.try_next().is_none());
}

#[tokio::test]
async fn a_bogus_signature_defers_and_never_falls_back_to_plaintext() {
    let mut lab = lab().await;
    let event = send(&mut lab, "a@bogus.example").await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.5")
    );
    assert!(
        event.reply.contains("DNSSEC validation failed"),
        "{}",
        event.reply
    );
    assert_eq!(event.relay, "none", "no host was even tried");
    assert_eq!(
        event.tls_rpt.clone().unwrap().result_type,
        Some(ResultType::DnssecInvalid)
    );
    assert!(lab.sink.try_next().is_none());
}

#[tokio::test]
async fn an_unsigned_zone_is_insecure_and_gets_ordinary_opportunistic_tls() {
    let mut lab = lab().await;
    let event = send(&mut lab, "a@plain.example").await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(
        (event.policy_level.as_str(), event.policy_source.as_str()),
        ("may", "global")
    );
    assert!(event.tls.is_some() && event.verified_name.is_none());
    assert!(lab.sink.next(5).await.is_some());
    let out = lab.server.explain("a@plain.example").await;
    assert!(
        out.contains("DANE: the MX records of plain.example are not DNSSEC-signed: no DANE (RFC 7672 section 2.2)"),
        "{out}"
    );
}

/// `dane-only` on a row: a domain without TLSA records gets nothing.
#[tokio::test]
async fn dane_only_without_records_defers() {
    let mut lab = lab().await;
    let mut doc = lab.server.get_settings().await;
    doc["outbound"]["dane"] = serde_json::json!(false);
    doc["policy"] = serde_json::json!([{"pattern": "plain.example", "level": "dane-only"}]);
    lab.server.set(doc).await;
    let event = send(&mut lab, "a@plain.example").await;
    assert_eq!(event.status, "deferred", "{}", event.reply);
    assert!(
        event.reply.contains(
            "DANE: no usable MX host: mx.plain.example: no DNSSEC-secured TLSA records (level dane-only)"
        ),
        "{}",
        event.reply
    );
    assert!(lab.sink.try_next().is_none());
}

/// `postern check-tls DOMAIN` says what the domain publishes under DNSSEC and whether the
/// probed MX's chain matches it.
#[tokio::test]
async fn check_tls_shows_dane() {
    let lab = lab().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = check_tls(dir.path(), &lab.outbound, "dane.example", true).await;
    assert_eq!(r["dane"]["state"], "secure", "{r}");
    assert_eq!(r["dane"]["chain_matches"], true, "{r}");
    let (text, _) = check_tls(dir.path(), &lab.outbound, "wrong.example", false).await;
    assert!(
        text.contains("DANE:        signed MX: mx.wrong.example TLSA 3 1 1 ")
            && text.contains("; this host's certificate does NOT match"),
        "{text}"
    );
    let (text, _) = check_tls(dir.path(), &lab.outbound, "plain.example", false).await;
    assert!(
        text.contains(
            "DANE:        not in use: the MX records of plain.example are not DNSSEC-signed"
        ),
        "{text}"
    );
}

/// The policy row's Test shows the domain's DANE and judges its MX by the TLSA records.
#[tokio::test]
async fn the_row_test_shows_dane() {
    let lab = lab().await;
    for (domain, passes) in [("dane.example", true), ("wrong.example", false)] {
        let row = serde_json::json!({"row": {"pattern": domain, "level": "may"}});
        let (status, t) = lab
            .server
            .api_json(hyper::Method::POST, "/api/v1/policy/test", Some(&row))
            .await;
        assert_eq!(status, hyper::StatusCode::OK, "{t}");
        assert_eq!(t["source"], format!("dane:{domain}"), "{t}");
        let lines: Vec<&str> = t["published"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .collect();
        assert!(
            lines.iter().any(|l| l.starts_with("MTA-STS"))
                && lines
                    .iter()
                    .any(|l| l.starts_with("DANE: DNSSEC-secured TLSA records")),
            "{t}"
        );
        let host = &t["test"]["hosts"][0];
        assert_eq!(host["passes"], passes, "{t}");
    }
}
