//! Received records over real sockets (issue 31, acceptance 3): messages sent in plaintext,
//! over TLS, after SMTP AUTH, from a trusted network and from the Microsoft 365 connector
//! (an rcgen CA in `[tls] extra_roots`, a client certificate named as Exchange Online's) are
//! each found through `GET /api/v1/logs/received` with their facts, on the embedded store
//! and on the PostgreSQL the nodes share (`tests/common/postgres.rs`); a queue ID finds both
//! the receipt and the delivery; refusals before a message are counted on the dashboard.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::sink::{Sink, SinkOptions, TestCa};
use common::{SmtpClient, TestServer, queue_id};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Lab {
    server: TestServer,
    sink: Sink,
    ca: TestCa,
}

/// postern with `ours.example` a relay domain and `outside.example` routed to the sink;
/// 127.0.0.1 trusted, a user for SMTP AUTH, the connector on for TENANT. `database`: the
/// shared PostgreSQL's URL (records go there).
async fn lab(database: Option<&str>) -> Lab {
    let sink = Sink::start(SinkOptions::default()).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let port = sink.addr.port();
    let shared = database
        .map(|url| format!("[settings]\ndatabase = \"{url}\"\nkey = \"{KEY}\"\nnode = \"gw1\"\n"))
        .unwrap_or_default();
    let server = TestServer::start_in(
        dir,
        &format!(
            "{shared}[tls]\nextra_roots = [\"{}\"]\n[outbound.routes]\n\"outside.example\" = \"[127.0.0.1]:{port}\"\n",
            ca_file.display()
        ),
    )
    .await;
    server
        .set(json!({
            "trusted_networks": ["127.0.0.1/32"],
            "relay_domains": [{"domain": "ours.example", "transport": format!("[127.0.0.1]:{port}")}],
            "smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}],
            "m365": {"enabled": true, "tenants": [TENANT]},
        }))
        .await;
    Lab { server, sink, ca }
}

fn with_cert(leaf: &Arc<(Vec<u8>, Vec<u8>)>) -> Arc<rustls::ClientConfig> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
            leaf.1.clone().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![leaf.0.clone().into()], key);
    postern::tls::unauthenticated_client_config_with(Arc::new(certified))
}

fn message(subject: &str, headers: &str) -> Vec<u8> {
    format!("{headers}From: <x@example>\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

/// The queue IDs of the five messages, by kind.
struct Sent {
    plain: String,
    tls: String,
    auth: String,
    trusted: String,
    connector: String,
}

/// Each kind of message, and a relay refusal.
async fn send_each(lab: &Lab) -> Sent {
    let s = &lab.server;
    let mut c = s.connect_from("127.0.0.2").await;
    c.cmd("EHLO plain.client.example").await;
    let plain = queue_id(
        &c.send("p@plain.example", &["u@ours.example"], &message("p", ""))
            .await,
    );
    // Not ours, not authorised: refused at RCPT, and counted.
    assert_eq!(c.cmd("MAIL FROM:<p@plain.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@outside.example>").await.code, 554);
    c.cmd("RSET").await;

    let mut c = s.connect_from("127.0.0.2").await;
    c.cmd("EHLO tls.client.example").await;
    c.starttls().await;
    c.cmd("EHLO tls.client.example").await;
    let tls = queue_id(
        &c.send("t@tls.example", &["u@ours.example"], &message("t", ""))
            .await,
    );

    let mut c = s.connect_from("127.0.0.2").await;
    c.cmd("EHLO app.client.example").await;
    c.starttls().await;
    c.cmd("EHLO app.client.example").await;
    let plain_auth =
        base64::engine::general_purpose::STANDARD.encode("\0alice\0correct horse battery");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain_auth}")).await.code, 235);
    let auth = queue_id(
        &c.send(
            "app@inside.example",
            &["bob@outside.example"],
            &message("a", ""),
        )
        .await,
    );

    let trusted = s
        .submit(
            "cron@inside.example",
            &["u@ours.example"],
            &message("c", ""),
        )
        .await;

    let leaf = lab.ca.leaf(&["mail.protection.outlook.com"]);
    let mut c = SmtpClient::connect(s.smtp, Some("127.0.0.3".parse().unwrap()), None).await;
    c.cmd("EHLO mail.protection.outlook.com").await;
    c.starttls_with(with_cert(&leaf)).await;
    c.cmd("EHLO mail.protection.outlook.com").await;
    let tenant = format!("X-MS-Exchange-CrossTenant-Id: {TENANT}\r\n");
    let r = c
        .send(
            "alice@contoso.example",
            &["carol@outside.example"],
            &message("m", &tenant),
        )
        .await;
    let connector = queue_id(&r);
    Sent {
        plain,
        tls,
        auth,
        trusted,
        connector,
    }
}

/// `GET path` until `done` holds for its answer (the store takes each record within a
/// fraction of a second of its 250), at most 15 s.
async fn until(server: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = server.api_json(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one received record of `id`.
async fn receipt(server: &TestServer, id: &str) -> Value {
    let path = format!("/api/v1/logs/received?queue_id={id}");
    let body = until(server, &path, |b| {
        b["records"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(body["records"].as_array().unwrap().len(), 1, "{body}");
    body["records"][0].clone()
}

/// The answer to `path` once it has a record.
async fn found(server: &TestServer, path: String) -> Value {
    until(server, &path, |b| {
        !b["records"].as_array().unwrap().is_empty()
    })
    .await
}

fn queue_ids(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["queue_id"].as_str().unwrap().to_string())
        .collect()
}

/// Every message found with its facts; the searches; the queue ID both ways; the counts.
async fn each_is_found_with_its_facts(lab: &mut Lab, node: Option<&str>) {
    let sent = send_each(lab).await;
    let s = &lab.server;
    let plain = receipt(s, &sent.plain).await;
    let r = &plain["record"];
    assert_eq!(
        (
            &r["client_name"],
            &r["client_addr"],
            &r["helo"],
            &r["sender"]
        ),
        (
            &json!("unknown"),
            &json!("127.0.0.2"),
            &json!("plain.client.example"),
            &json!("p@plain.example")
        )
    );
    assert_eq!(
        (&r["trust"], &r["tls"], &r["recipients"]),
        (&json!({"kind": "none"}), &Value::Null, &json!(1))
    );
    assert!(r["size"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["node"].as_str(), node);
    assert_eq!(
        plain["lines"][0],
        format!("postern/smtpd: {}: client=unknown[127.0.0.2]", sent.plain)
    );

    let tls = receipt(s, &sent.tls).await;
    let t = &tls["record"]["tls"];
    assert_eq!(
        (&t["protocol"], &t["bits"]),
        (&json!("TLSv1.3"), &json!(256)),
        "{tls}"
    );
    // postern's client offers X25519MLKEM768 first, and so gets it; the line is Postfix
    // 3.10+'s (tls_misc.c, tls_log_summary), the system certificate's ECDSA signature too.
    assert_eq!(t["key_exchange"], "X25519MLKEM768", "{tls}");
    assert_eq!(tls["record"]["client_cert"], Value::Null);
    assert_eq!(
        tls["lines"][0],
        "postern/smtpd: Anonymous TLS connection established from unknown[127.0.0.2]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256",
        "{tls}"
    );

    let auth = receipt(s, &sent.auth).await;
    assert_eq!(
        auth["record"]["trust"],
        json!({"kind": "auth_user", "user": "alice"})
    );
    assert!(
        auth["lines"][1]
            .as_str()
            .unwrap()
            .ends_with(", sasl_username=alice"),
        "{auth}"
    );
    let trusted = receipt(s, &sent.trusted).await;
    assert_eq!(
        trusted["record"]["trust"],
        json!({"kind": "trusted_network"})
    );
    assert_eq!(trusted["record"]["client_addr"], "127.0.0.1");

    let connector = receipt(s, &sent.connector).await;
    let c = &connector["record"];
    assert_eq!(
        c["trust"],
        json!({"kind": "connector", "name": "mail.protection.outlook.com", "tenant": TENANT})
    );
    let cert = &c["client_cert"];
    assert_eq!(
        (&cert["verified"], &cert["names"]),
        (&json!(true), &json!(["mail.protection.outlook.com"])),
        "{c}"
    );
    assert!(
        cert["issuer"].as_str().unwrap().contains("postern test CA"),
        "{cert}"
    );
    assert!(
        connector["lines"][0].as_str().unwrap().starts_with(
            "postern/smtpd: Trusted TLS connection established from unknown[127.0.0.3]"
        )
    );

    // The searches of the Received view.
    let search = |q: &str| found(s, format!("/api/v1/logs/received?{q}"));
    assert_eq!(
        queue_ids(&search("client=127.0.0.2&plaintext=true").await),
        [sent.plain.as_str()]
    );
    assert_eq!(
        queue_ids(&search("client=127.0.0.2%2F31").await),
        [&sent.connector[..], &sent.auth, &sent.tls, &sent.plain]
    );
    assert_eq!(
        queue_ids(&search("sender=.tls.example").await),
        [sent.tls.as_str()]
    );
    assert_eq!(
        queue_ids(&search("sender=alice%40Contoso.example").await),
        [sent.connector.as_str()]
    );
    let all = search("").await;
    assert_eq!(queue_ids(&all).len(), 5, "{all}");
    let (status, e) = s
        .api_json(
            Method::GET,
            "/api/v1/logs/received?client=partner.example",
            None,
        )
        .await;
    assert_eq!(
        (status, &e["field"]),
        (StatusCode::BAD_REQUEST, &json!("client")),
        "{e}"
    );
    assert_eq!(
        e["error"],
        "client: \"partner.example\" is not an IP address or a network"
    );

    // A queue ID finds both the receipt and its delivery.
    lab.sink.next(20).await.expect("a delivery");
    let delivered = until(s, &format!("/api/v1/logs?queue_id={}", sent.auth), |b| {
        b["records"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["record"]["status"] == "sent"))
    })
    .await;
    assert_eq!(
        delivered["records"][0]["record"]["recipient"],
        "bob@outside.example"
    );

    // The dashboard: the TLS share per sender domain, and the relay refusal counted.
    let dash = until(s, "/api/v1/dashboard", |d| d["refused_total"] == 1).await;
    let senders = dash["senders"].as_array().unwrap();
    let tls_example = senders
        .iter()
        .find(|d| d["domain"] == "tls.example")
        .unwrap();
    let plain_example = senders
        .iter()
        .find(|d| d["domain"] == "plain.example")
        .unwrap();
    assert_eq!(
        (&tls_example["received"], &tls_example["tls_percent"]),
        (&json!(1), &json!(100))
    );
    assert_eq!(
        (&plain_example["received"], &plain_example["tls_percent"]),
        (&json!(1), &json!(0))
    );
    let refused = &dash["refused"][0];
    assert_eq!(
        (
            &refused["client"],
            &refused["sender_domain"],
            &refused["reason"],
            &refused["count"]
        ),
        (
            &json!("127.0.0.2"),
            &json!("plain.example"),
            &json!("relay_denied"),
            &json!(1)
        )
    );
}

#[tokio::test]
async fn each_message_is_found_with_its_facts_on_the_embedded_store() {
    let mut lab = lab(None).await;
    each_is_found_with_its_facts(&mut lab, None).await;
    // The JSON lines for log shippers, one per message.
    let lines = std::fs::read_to_string(lab.server.data_dir().join("log/received.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5, "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<postern::events::received::Received>(line).unwrap();
    }
}

#[tokio::test]
async fn each_message_is_found_with_its_facts_on_the_shared_database() {
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    let mut lab = lab(Some(&pg.url())).await;
    each_is_found_with_its_facts(&mut lab, Some("gw1")).await;
}

/// `encrypt` refuses MAIL in plaintext: counted as such, by client and sender domain.
#[tokio::test]
async fn a_plaintext_refusal_is_counted() {
    let server = TestServer::start().await;
    server
        .set(json!({"inbound": {"tls_mode": "encrypt"}}))
        .await;
    let mut c = server.connect_from("127.0.0.4").await;
    c.cmd("EHLO a.example").await;
    for _ in 0..2 {
        let r = c.cmd("MAIL FROM:<x@Partner.example>").await;
        assert_eq!(r.code, 530, "{r:?}");
    }
    let dash = until(&server, "/api/v1/dashboard", |d| d["refused_total"] == 2).await;
    assert_eq!(
        dash["refused"],
        json!([{
            "day": dash["refused"][0]["day"], "client": "127.0.0.4",
            "sender_domain": "partner.example", "reason": "plaintext_refused", "count": 2
        }])
    );
    let (status, _) = server.api(Method::GET, "/api/v1/logs/received", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// The new route, like every other, answers nothing without the token.
#[tokio::test]
async fn the_route_needs_the_token() {
    let server = TestServer::start().await;
    let config = postern::tls::pinned_client_config(server.system_cert());
    let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /api/v1/logs/received HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
