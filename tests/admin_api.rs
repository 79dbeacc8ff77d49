//! The API twins of the admin page's part 2 actions: each refuses a request without the
//! token, and validates exactly as its page does (the page calls the same function).

mod common;

use common::TestServer;
use common::sink::{Sink, SinkOptions};
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_new_route_needs_the_token() {
    let server = TestServer::start().await;
    let config = postern::tls::pinned_client_config(server.system_cert());
    for (method, path) in [
        ("GET", "/api/v1/logs?recipient=a%40b.example"),
        ("GET", "/api/v1/logs/starttls?host=mx.example"),
        ("GET", "/api/v1/dashboard"),
        ("GET", "/api/v1/queue/page"),
        ("POST", "/api/v1/queue/act"),
        ("POST", "/api/v1/relay-domains"),
        ("PUT", "/api/v1/users/alice"),
        ("DELETE", "/api/v1/rule-data/l"),
        ("POST", "/api/v1/rules/r/move?direction=up"),
        ("GET", "/api/v1/settings/audit/1"),
        ("POST", "/api/v1/settings/restore/1"),
        ("POST", "/api/v1/policy/rows"),
        ("POST", "/api/v1/policy/test"),
        ("POST", "/api/v1/tls-rpt/send"),
        ("GET", "/api/v1/cluster/queue"),
        ("GET", "/api/v1/cluster/queue/ABC"),
        ("POST", "/api/v1/cluster/queue/ABC/retry"),
        ("POST", "/api/v1/cluster/queue/act"),
        ("POST", "/api/v1/cluster/queue/retry"),
        ("GET", "/api/v1/cluster/nodes"),
        ("DELETE", "/api/v1/cluster/nodes/b"),
    ] {
        let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "x")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

#[tokio::test]
async fn lists_rules_restore_logs_and_dashboard_through_the_api() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"partner.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    let s = &server;
    // A relay domain with credentials: its managed row is in the policy table.
    let (status, body) = s
        .api_json(
            Method::POST,
            "/api/v1/relay-domains",
            Some(
                &json!({"domain": "smarthost.example", "transport": "[127.0.0.1]:2525",
                         "auth": {"username": "gw", "password": "relay-secret-1"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body[0]["auth"],
        json!({"username": "gw"}),
        "no password back"
    );
    let doc = s.get_settings().await;
    assert_eq!(doc["policy"][0]["managed_by"], "smarthost.example");
    // The validator's duplicate, as for the page.
    let (status, e) = s
        .api_json(
            Method::POST,
            "/api/v1/relay-domains",
            Some(&json!({"domain": "SmartHost.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("duplicate relay domain"),
        "{e}"
    );
    // Users: add, a new password, delete.
    let users = "/api/v1/users";
    let (status, _) = s
        .api_json(
            Method::POST,
            users,
            Some(&json!({"username": "alice", "password": "long-enough-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = s
        .api_json(
            Method::PUT,
            "/api/v1/users/alice",
            Some(&json!({"username": "alice", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (status, _) = s.api(Method::DELETE, "/api/v1/users/alice", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Rule data and two rules, the second moved up: it decides.
    let (status, _) = s
        .api_json(
            Method::POST,
            "/api/v1/rule-data",
            Some(&json!({"name": "partners", "domains": ["partner.example"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (name, rcpt, level) in [
        ("try all", None, "try"),
        ("require partners", Some("partners"), "require"),
    ] {
        let mut rule = json!({"name": name, "direction": "outbound", "tls_level": level});
        match rcpt {
            Some(l) => rule["recipient_matches"] = json!(l),
            // Without a condition, every recipient is chosen explicitly (issue 28).
            None => rule["every_recipient"] = json!(true),
        }
        let (status, e) = s.api_json(Method::POST, "/api/v1/rules", Some(&rule)).await;
        assert_eq!(status, StatusCode::OK, "{e}");
    }
    let (status, e) = s
        .api_json(
            Method::POST,
            "/api/v1/rules",
            Some(&json!({"name": "try all", "tls_level": "try"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("duplicate rule \"try all\""),
        "{e}"
    );
    let (status, rules) = s
        .api_json(
            Method::POST,
            "/api/v1/rules/require%20partners/move?direction=up",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    assert_eq!(rules[0]["name"], "require partners");
    // A delivery, found in the records by recipient, counted on the dashboard.
    s.submit(
        "app@inside.example",
        &["ceo@partner.example"],
        b"Subject: t\r\n\r\nhi\r\n",
    )
    .await;
    assert!(sink.next(20).await.expect("delivered").tls);
    server.next_event_for("ceo@partner.example", 20).await;
    let s = &server;
    let (status, found) = s
        .api_json(
            Method::GET,
            "/api/v1/logs?recipient=CEO%40partner.example",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let record = &found["records"][0]["record"];
    assert_eq!(record["status"], "sent");
    assert_eq!(record["policy_source"], "rule:require partners");
    assert_eq!(record["tls"]["protocol"], "TLSv1.3");
    let (_, seen) = s
        .api_json(
            Method::GET,
            "/api/v1/logs/starttls?host=127.0.0.1&days=1",
            None,
        )
        .await;
    assert_eq!(
        (seen["connections"].as_u64(), seen["offered"].as_u64()),
        (Some(1), Some(1)),
        "{seen}"
    );
    let (_, dash) = s.api_json(Method::GET, "/api/v1/dashboard", None).await;
    let encrypted: u64 = dash["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["encrypted"].as_u64().unwrap())
        .sum();
    assert_eq!(encrypted, 1, "{dash:#}");
    assert_eq!(dash["destinations"][0]["domain"], "partner.example");
    assert_eq!(dash["destinations"][0]["tls_percent"], 100);
    // Restore the version before the rules: they are gone, and the restore is a version.
    let (_, audit) = s
        .api_json(Method::GET, "/api/v1/settings/audit", None)
        .await;
    let before_rules = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["section"] == "rule_data")
        })
        .map(|v| v["version"].as_u64().unwrap() - 1)
        .unwrap();
    let (_, detail) = s
        .api_json(
            Method::GET,
            &format!("/api/v1/settings/audit/{}", before_rules + 1),
            None,
        )
        .await;
    assert_eq!(
        detail["fields"][0]["path"], "rule_data[partners].domains",
        "{detail:#}"
    );
    let (status, doc) = s
        .api_json(
            Method::POST,
            &format!("/api/v1/settings/restore/{before_rules}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["rules"], json!([]));
    let (_, audit) = s
        .api_json(Method::GET, "/api/v1/settings/audit?limit=1", None)
        .await;
    assert_eq!(
        audit[0]["actor"],
        format!("api (restore of version {before_rules})")
    );
    let (status, _) = s
        .api_json(Method::POST, "/api/v1/settings/restore/999999", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
