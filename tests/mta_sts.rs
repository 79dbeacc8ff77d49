//! MTA-STS (RFC 8461) end to end: the tests' DNS server publishes `_mta-sts` TXT, MX and A
//! records, a loopback HTTPS server serves the policy file with a certificate from a test CA
//! (`[tls] extra_roots`), and the policy host's address is mapped in the config
//! (`outbound.policy_hosts`), as `outbound.port` maps the MX host's port to the sink.

mod common;

use common::dns::Zone;
use common::published::{Lab, policy, zone};
use common::sink::{Sink, SinkOptions};
use common::*;
use postern::events::Delivery;
use postern::events::tls_rpt::{PolicyType, ResultType};

const RCPT: &str = "user@good.example";

async fn send(server: &mut TestServer) -> Delivery {
    server
        .submit("app@inside.example", &[RCPT], &message("sts", ""))
        .await;
    server.next_event_for(RCPT, 30).await
}

fn rpt(event: &Delivery) -> (PolicyType, String, Option<ResultType>) {
    let r = event
        .tls_rpt
        .clone()
        .expect("a TLS-RPT outcome on the record");
    (r.policy_type, r.policy_domain, r.result_type)
}

#[tokio::test]
async fn enforce_with_a_matching_mx_and_a_verified_certificate_delivers() {
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(
        (event.policy_level.as_str(), event.policy_source.as_str()),
        ("verify", "mta-sts:good.example")
    );
    assert_eq!(event.verified_name.as_deref(), Some("mx.good.example"));
    assert_eq!(
        rpt(&event),
        (PolicyType::Sts, "good.example".into(), None),
        "a success for the sts policy"
    );
    assert!(sink.next(5).await.is_some());
    let get = &lab.https.requests()[0];
    assert_eq!(get.method, "GET");
    assert!(
        get.headers
            .iter()
            .any(|(k, v)| k == "host" && v == "mta-sts.good.example")
    );
}

#[tokio::test]
async fn an_mx_outside_the_policy_is_not_used() {
    let lab = Lab::new(&policy("enforce", "mx.elsewhere.example")).await;
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("deferred", "4.7.5")
    );
    assert!(
        event.reply.contains(
            "MX host mx.good.example does not match the MTA-STS policy of good.example (mx: mx.elsewhere.example)"
        ),
        "{}",
        event.reply
    );
    assert_eq!(event.relay, "none");
    assert_eq!(rpt(&event).2, Some(ResultType::ValidationFailure));
    assert!(
        sink.try_next().is_none(),
        "nothing may reach a host the policy does not name"
    );
}

/// Deferred, saying `why` and that it was the enforced policy's demand.
fn deferred_by_the_policy(event: &Delivery, why: &str) {
    assert_eq!(event.status, "deferred", "{}", event.reply);
    let r = &event.reply;
    assert!(r.contains(why), "{r}");
    assert!(
        r.ends_with("(MTA-STS policy of good.example, mode enforce)"),
        "{r}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_defers() {
    let lab = Lab::new(&policy("enforce", "*.good.example")).await;
    let mut sink = lab.sink(&["other.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    deferred_by_the_policy(
        &event,
        "Server certificate not verified for mx.good.example",
    );
    assert_eq!(rpt(&event).2, Some(ResultType::CertificateHostMismatch));
    assert!(sink.try_next().is_none());
}

#[tokio::test]
async fn a_stripped_starttls_defers() {
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    let mut sink = Sink::start(SinkOptions::default()).await; // no STARTTLS on offer
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    deferred_by_the_policy(&event, "TLS is required, but was not offered by host");
    assert_eq!(rpt(&event).2, Some(ResultType::StarttlsNotSupported));
    assert!(sink.try_next().is_none());
}

#[tokio::test]
async fn testing_mode_delivers_and_counts_the_failure() {
    let lab = Lab::new(&policy("testing", "mx.good.example")).await;
    let mut sink = lab.sink(&["other.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(event.policy_level, "may");
    assert!(event.tls.is_some() && event.verified_name.is_none());
    assert_eq!(
        rpt(&event),
        (
            PolicyType::Sts,
            "good.example".into(),
            Some(ResultType::CertificateHostMismatch)
        )
    );
    assert!(sink.next(5).await.is_some());
}

/// FortiMail's monitor mode on one row: an `enforce` policy is taken as `testing` there.
#[tokio::test]
async fn a_monitor_row_delivers_what_enforce_would_stop() {
    let lab = Lab::new(&policy("enforce", "mx.elsewhere.example")).await;
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let mut doc = server.get_settings().await;
    doc["policy"] = serde_json::json!([
        {"pattern": "good.example", "level": "may", "mta_sts": "monitor"}
    ]);
    server.set(doc).await;
    let event = send(&mut server).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(rpt(&event).2, Some(ResultType::ValidationFailure));
    assert!(sink.next(5).await.is_some());
    let out = server.explain(RCPT).await;
    assert!(
        out.contains("MTA-STS policy of good.example (id 20261201, mode enforce, cached): monitored for this row"),
        "{out}"
    );
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_a_new_id_is_fetched() {
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let config = lab.config(&sink);
    let mut server = TestServer::start_with(&config).await;
    assert_eq!(send(&mut server).await.status, "sent");
    assert_eq!(lab.fetches(), 1);
    sink.next(5).await.unwrap();

    // Restarted, with the policy server failing: the cached policy still holds.
    let (_, dir) = server.stop().await;
    lab.https.answer(500, "down");
    let mut server = TestServer::start_in(dir, &config).await;
    let out = server.explain(RCPT).await;
    assert!(
        out.contains("MTA-STS policy of good.example (id 20261201, mode enforce, cached): verify, MX must match mx.good.example (decides)"),
        "{out}"
    );
    let event = send(&mut server).await;
    assert_eq!(
        (event.status.as_ref(), event.policy_source.as_str()),
        ("sent", "mta-sts:good.example")
    );
    assert_eq!(lab.fetches(), 1, "same id: not fetched again");
    sink.next(5).await.unwrap();

    // A new id: fetched again, and the new policy (another MX) applies at once.
    lab.https
        .answer(200, &policy("enforce", "mx.elsewhere.example"));
    lab.zone.set(zone("20261202"));
    let event = send(&mut server).await;
    assert_eq!(lab.fetches(), 2);
    assert_eq!(event.status, "deferred");
    assert!(
        event.reply.contains("does not match the MTA-STS policy"),
        "{}",
        event.reply
    );
    assert!(sink.try_next().is_none());
}

/// A record whose policy cannot be fetched, with nothing cached: delivered as without a
/// policy (RFC 8461 section 5), said in the explanation and counted as a fetch error.
#[tokio::test]
async fn an_unfetchable_policy_is_no_policy_and_is_reported() {
    let lab = Lab::new("not found").await;
    lab.https.answer(404, "not found");
    let mut sink = lab.sink(&["other.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(event.policy_source, "global");
    assert_eq!(
        rpt(&event),
        (
            PolicyType::Sts,
            "good.example".into(),
            Some(ResultType::StsPolicyFetchError)
        )
    );
    assert!(sink.next(5).await.is_some());
    let out = server.explain(RCPT).await;
    assert!(
        out.contains("MTA-STS: good.example has a record but no usable policy (https://mta-sts.good.example/.well-known/mta-sts.txt answered 404 Not Found)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_domain_without_a_record_is_counted_as_no_policy_found() {
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    lab.zone.set(
        Zone::default()
            .mx("good.example", 10, "mx.good.example")
            .a("mx.good.example", "127.0.0.1".parse().unwrap()),
    );
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let event = send(&mut server).await;
    assert_eq!(event.status, "sent");
    assert_eq!(
        rpt(&event),
        (PolicyType::NoPolicyFound, "good.example".into(), None)
    );
    assert_eq!(lab.fetches(), 0);
    assert!(sink.next(5).await.is_some());
}

/// `postern check-tls DOMAIN` shows the policy beside what the MX offers, fetched now and
/// not kept (the running server's cache is its own).
#[tokio::test]
async fn check_tls_shows_the_policy() {
    let lab = Lab::new(&policy("enforce", "*.good.example")).await;
    let sink = lab.sink(&["mx.good.example"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = lab.config(&sink);
    let (_, r) = check_tls(dir.path(), &config, "good.example", true).await;
    assert_eq!(r["verification"], "verified for mx.good.example", "{r}");
    assert_eq!(r["mta_sts"]["state"], "policy", "{r}");
    assert_eq!(r["mta_sts"]["policy"]["mode"], "enforce", "{r}");
    assert_eq!(r["mta_sts"]["host_matches"], true, "{r}");
    let (text, _) = check_tls(dir.path(), &config, "good.example", false).await;
    assert!(
        text.contains(
            "MTA-STS:     mode enforce (id 20261201, max_age 86400), mx: *.good.example; this host matches"
        ),
        "{text}"
    );
    assert!(!dir.path().join("mta-sts.json").exists());
}

/// The policy row's Test shows what the domain publishes and judges each MX by it.
#[tokio::test]
async fn the_row_test_shows_the_policy_and_judges_hosts_by_it() {
    let lab = Lab::new(&policy("enforce", "mx.elsewhere.example")).await;
    let sink = lab.sink(&["mx.good.example"]).await;
    let server = TestServer::start_with(&lab.config(&sink)).await;
    let row = serde_json::json!({"row": {"pattern": "good.example", "level": "may"}});
    let (status, t) = server
        .api_json(hyper::Method::POST, "/api/v1/policy/test", Some(&row))
        .await;
    assert_eq!(status, hyper::StatusCode::OK, "{t}");
    assert_eq!(t["source"], "mta-sts:good.example", "{t}");
    assert!(
        t["published"][0]
            .as_str()
            .unwrap()
            .starts_with("MTA-STS policy of good.example (id 20261201, mode enforce): verify"),
        "{t}"
    );
    let host = &t["test"]["hosts"][0];
    assert_eq!(host["passes"], false, "{t}");
    assert_eq!(
        host["verdict"],
        "not in the MTA-STS policy of good.example (mx: mx.elsewhere.example): never used"
    );
}

/// RFC 8689 section 5: `TLS-Required: No` from a client that may set policy sets the
/// domain's published policy aside (here an enforced one naming another MX).
#[tokio::test]
async fn tls_required_no_sets_the_published_policy_aside() {
    let lab = Lab::new(&policy("enforce", "mx.elsewhere.example")).await;
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    server
        .submit(
            "app@inside.example",
            &[RCPT],
            &message("no tls required", "TLS-Required: No\r\n"),
        )
        .await;
    let event = server.next_event_for(RCPT, 30).await;
    assert_eq!(event.status, "sent", "{}", event.reply);
    assert_eq!(event.policy_source, "global");
    assert!(event.tls_rpt.is_none());
    assert_eq!(lab.fetches(), 0, "nothing published was looked up");
    assert!(sink.next(5).await.is_some());
}

/// REQUIRETLS under an enforced MTA-STS policy: the verified policy RFC 8689 asks for.
#[tokio::test]
async fn requiretls_goes_out_under_an_enforced_policy() {
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        requiretls: true,
        cert: Some(lab.ca.leaf(&["mx.good.example"])),
        ..SinkOptions::default()
    })
    .await;
    let mut server = TestServer::start_with(&lab.config(&sink)).await;
    let mut c = server.connect().await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<app@inside.example> REQUIRETLS").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd(&format!("RCPT TO:<{RCPT}>")).await.code, 250);
    assert_eq!(c.data(&message("sts", "")).await.code, 250);
    let event = server.next_event_for(RCPT, 30).await;
    assert_eq!(
        (event.status.as_ref(), event.policy_source.as_str()),
        ("sent", "mta-sts:good.example"),
        "{}",
        event.reply
    );
    let got = sink.next(5).await.unwrap();
    assert!(
        got.mail_params.contains("REQUIRETLS"),
        "{:?}",
        got.mail_params
    );
}

/// Section 3.3: a redirect is not followed, and a policy over 64 KiB is not read; either
/// way the domain is treated as having none (nothing cached), and the explanation says why.
#[tokio::test]
async fn redirects_and_oversized_policies_are_refused() {
    let lab = Lab::new("").await;
    let sink = lab.sink(&["mx.good.example"]).await;
    let server = TestServer::start_with(&lab.config(&sink)).await;
    let explain = || server.explain(RCPT);
    lab.https.answer(301, "moved");
    let out = explain().await;
    assert!(
        out.contains(
            "answered 301 Moved Permanently: redirects are not followed (RFC 8461 section 3.3)"
        ),
        "{out}"
    );
    // A failed fetch is not tried again for every message: a new id is.
    lab.https.answer(
        200,
        &format!(
            "{}{}",
            policy("enforce", "mx.good.example"),
            "x".repeat(70_000)
        ),
    );
    lab.zone.set(zone("20261203"));
    let out = explain().await;
    assert!(out.contains("at most 65536 bytes"), "{out}");
    assert_eq!(lab.fetches(), 2);
}
