//! TLS-RPT (RFC 8460) end to end: a day of mixed outcomes under good.example's MTA-STS
//! policy (and one domain without a policy) becomes one report per policy domain, sent to
//! both `rua` kinds its `_smtp._tls` record names: `mailto:` as a message through postern's
//! own queue to a loopback sink, `https:` as a POST to a loopback HTTPS server. The JSON is
//! checked against RFC 8460 section 4.4 written out as a JSON Schema, and its counts against
//! the delivery records. A report goes to each address once, across restarts too.

mod common;

use common::dns::Zone;
use common::published::{Lab, policy};
use common::sink::{Sink, SinkOptions};
use common::*;
use postern::events::Delivery;

const RUA: &str =
    "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example,https://rpt.good.example/v1/tlsrpt";

fn today() -> String {
    let now = postern::fsutil::unix_now();
    postern::outbound::tls_report::day_name(now - now % 86_400)
}

fn valid(report: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("data/tlsrpt-report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{report:#}");
}

/// The report attached to a mailed report (section 5.3): base64 of gzip of JSON.
fn attached(message: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let text = String::from_utf8_lossy(message);
    let part = text
        .split("Content-Type: application/tlsrpt+gzip")
        .nth(1)
        .expect("a tlsrpt+gzip part");
    let body = part.split("\r\n\r\n").nth(1).unwrap();
    let b64: String = body.lines().take_while(|l| !l.starts_with("--")).collect();
    gunzip_json(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

async fn send(server: &mut TestServer, rcpt: &str) -> Delivery {
    server
        .submit("app@inside.example", &[rcpt], &message("rpt", ""))
        .await;
    server.next_event_for(rcpt, 30).await
}

#[tokio::test]
async fn a_day_of_mixed_outcomes_is_reported_once_to_both_rua_kinds() {
    let lab = Lab::new(&policy("enforce", "*.good.example")).await;
    // mx.good.example answers at 127.0.0.1 (certificate for its name) and, once the zone
    // moves it, at 127.0.0.2 (certificate for another name); nopolicy.example has no policy.
    let mut good = lab.sink(&["mx.good.example"]).await;
    let port = good.addr.port();
    let mut wrong = Sink::start_on(
        format!("127.0.0.2:{port}").parse().unwrap(),
        SinkOptions {
            starttls: true,
            cert: Some(lab.ca.leaf(&["other.example"])),
            ..SinkOptions::default()
        },
    )
    .await;
    let zone_with = |mx_ip: &str| {
        Zone::default()
            .mx("good.example", 10, "mx.good.example")
            .a("mx.good.example", mx_ip.parse().unwrap())
            .txt("_mta-sts.good.example", "v=STSv1; id=20261201;")
            .txt("_smtp._tls.good.example", RUA)
            .mx("nopolicy.example", 10, "mx.nopolicy.example")
            .a("mx.nopolicy.example", "127.0.0.1".parse().unwrap())
            .txt(
                "_smtp._tls.nopolicy.example",
                "v=TLSRPTv1; rua=https://rpt.good.example/v1/nopolicy",
            )
    };
    lab.zone.set(zone_with("127.0.0.1"));
    // Mailed reports go to the sink at 127.0.0.1 too (`outbound.port` is every hop's port).
    let config = format!(
        "{}[outbound.routes]\n\"reports.example\" = \"[127.0.0.1]\"\n",
        lab.config(&good)
    );
    let mut server = TestServer::start_with(&config).await;

    let mut records = Vec::new();
    for _ in 0..3 {
        records.push(send(&mut server, "a@good.example").await);
        good.next(5).await.unwrap();
    }
    records.push(send(&mut server, "b@nopolicy.example").await);
    good.next(5).await.unwrap();
    // The MX moves to the host whose certificate names another: two deferrals.
    lab.zone.set(zone_with("127.0.0.2"));
    for rcpt in ["c@good.example", "d@good.example"] {
        let r = send(&mut server, rcpt).await;
        assert_eq!(r.status, "deferred", "{} via {}", r.reply, r.relay);
        records.push(r);
    }
    assert!(wrong.try_next().is_none());

    let (ok, out, err) = server.cli(&["tls-rpt", "send", "--day", &today()]).await;
    assert!(ok, "{err}");
    let day = today();
    assert!(
        out.contains(&format!(
            "{day} good.example: sent to mailto:tlsrpt@reports.example, https://rpt.good.example/v1/tlsrpt"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{day} nopolicy.example: sent to https://rpt.good.example/v1/nopolicy"
        )),
        "{out}"
    );

    // By mail, through the queue.
    let mail = good.next(30).await.expect("the mailed report");
    assert_eq!(mail.recipients, vec!["tlsrpt@reports.example"]);
    let text = String::from_utf8_lossy(&mail.data).into_owned();
    assert!(
        text.contains("\r\nTLS-Report-Domain: good.example\r\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "Subject: Report Domain: good.example Submitter: mx.test.example Report-ID: <"
        )
    );
    assert!(text.contains("multipart/report; report-type=\"tlsrpt\""));
    let mailed = attached(&mail.data);
    valid(&mailed);

    // By HTTPS.
    let posts = lab.https.posts();
    assert_eq!(posts.len(), 2, "one per domain");
    let post = posts.iter().find(|r| r.path == "/v1/tlsrpt").unwrap();
    assert!(
        post.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/tlsrpt+gzip")
    );
    let posted = gunzip_json(&post.body);
    valid(&posted);
    assert_eq!(posted["policies"], mailed["policies"]);

    // The counts are the delivery records'.
    let p = &posted["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "good.example");
    assert_eq!(p["policy"]["mx-host"][0], "*.good.example");
    assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
    let of = |domain: &str, success: bool| {
        records
            .iter()
            .filter(|r| {
                r.tls_rpt.as_ref().is_some_and(|o| {
                    o.policy_domain == domain && o.result_type.is_none() == success
                })
            })
            .count() as u64
    };
    assert_eq!(
        p["summary"]["total-successful-session-count"],
        of("good.example", true)
    );
    assert_eq!(
        p["summary"]["total-failure-session-count"],
        of("good.example", false)
    );
    assert_eq!(
        (of("good.example", true), of("good.example", false)),
        (3, 2)
    );
    let detail = &p["failure-details"][0];
    assert_eq!(detail["result-type"], "certificate-host-mismatch");
    assert_eq!(detail["receiving-mx-hostname"], "mx.good.example");
    assert_eq!(detail["receiving-ip"], "127.0.0.2");
    assert_eq!(detail["failed-session-count"], 2);
    let other = gunzip_json(
        &posts
            .iter()
            .find(|r| r.path == "/v1/nopolicy")
            .unwrap()
            .body,
    );
    valid(&other);
    assert_eq!(
        other["policies"][0]["policy"]["policy-type"],
        "no-policy-found"
    );
    assert_eq!(
        other["policies"][0]["summary"]["total-successful-session-count"],
        1
    );

    // Once: asked again, and after a restart, nothing more goes out.
    let (ok, out, _) = server.cli(&["tls-rpt", "send", "--day", &today()]).await;
    assert!(ok);
    assert!(out.contains("good.example: already sent to mailto:tlsrpt@reports.example, https://rpt.good.example/v1/tlsrpt"), "{out}");
    let (_, dir) = server.stop().await;
    let server = TestServer::start_in(dir, &config).await;
    let (ok, out, err) = server.cli(&["tls-rpt", "send", "--day", &today()]).await;
    assert!(ok, "{err}");
    assert!(!out.contains(": sent to"), "{out}");
    assert!(
        out.contains("good.example: already sent to"),
        "the records survived the restart: {out}"
    );
    assert_eq!(lab.https.posts().len(), 2);
    assert!(good.try_next().is_none(), "the report was mailed once");
}

#[tokio::test]
async fn a_day_argument_that_is_not_a_date_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let (status, body) = server
        .api_json(
            hyper::Method::POST,
            "/api/v1/tls-rpt/send",
            Some(&serde_json::json!({"day": "yesterday"})),
        )
        .await;
    assert_eq!(status, hyper::StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "day");
    assert_eq!(
        body["error"],
        "day: \"yesterday\" is not a date as YYYY-MM-DD"
    );
}
