//! The TLS policy table one row at a time, and the Test of a row before it is saved: over
//! the control API (the admin page calls the same functions), against two MX hosts on
//! loopback found through the tests' DNS server, one offering STARTTLS and one not.

mod common;

use common::TestServer;
use common::dns::{Zone, serve};
use common::sink::{Sink, SinkOptions, TestCa};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

/// `partner.example`: MX 10 `mx1` (127.0.0.31, STARTTLS with a certificate of the test CA
/// for its name), MX 20 `mx2` (127.0.0.32, no STARTTLS), on one port.
struct Partner {
    server: TestServer,
    mx1: Sink,
    _mx2: Sink,
    _ca_dir: tempfile::TempDir,
}

async fn partner() -> Partner {
    let ca = TestCa::new();
    let mx1 = Sink::start_on(
        "127.0.0.31:0".parse().unwrap(),
        SinkOptions {
            starttls: true,
            cert: Some(ca.leaf(&["mx1.partner.example"])),
            ..SinkOptions::default()
        },
    )
    .await;
    let port = mx1.addr.port();
    let mx2 = Sink::start_on(
        format!("127.0.0.32:{port}").parse().unwrap(),
        SinkOptions::default(),
    )
    .await;
    let dns = serve(
        Zone::default()
            .mx("partner.example", 10, "mx1.partner.example")
            .mx("partner.example", 20, "mx2.partner.example")
            .a("mx1.partner.example", "127.0.0.31".parse().unwrap())
            .a("mx2.partner.example", "127.0.0.32".parse().unwrap()),
    )
    .await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = TestServer::start_with(&format!(
        "[outbound]\nport = {port}\nnameservers = [\"{dns}\"]\n[tls]\nextra_roots = [\"{}\"]\n",
        ca_file.display()
    ))
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    Partner {
        server,
        mx1,
        _mx2: mx2,
        _ca_dir: ca_dir,
    }
}

async fn test_row(server: &TestServer, row: Value) -> (StatusCode, Value) {
    server
        .api_json(
            Method::POST,
            "/api/v1/policy/test",
            Some(&json!({"row": row})),
        )
        .await
}

fn host<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["test"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["report"]["relay"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no host {name} in {t:#}"))
}

#[tokio::test]
async fn the_test_probes_every_mx_and_says_which_would_stop_the_row() {
    let mut p = partner().await;
    // One delivery first (at the default `may`, through mx1): the history has a record.
    p.server
        .submit(
            "a@origin.example",
            &["b@partner.example"],
            b"Subject: x\r\n\r\nhi\r\n",
        )
        .await;
    assert!(p.mx1.next(20).await.expect("mx1 took it").tls);
    let sent = p.server.next_event_for("b@partner.example", 20).await;
    assert_eq!(sent.status, "sent");

    let (status, t) = test_row(
        &p.server,
        json!({"pattern": "partner.example", "level": "encrypt"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t:#}");
    assert_eq!(t["test"]["passes"], false, "{t:#}");
    assert_eq!(t["recipient"], "postmaster@partner.example");
    assert_eq!(t["source"], "row:partner.example");
    assert_eq!(t["row_decides"], true);
    assert_eq!(t["test"]["min_bits"], 112);
    let mx1 = host(&t, "mx1.partner.example[127.0.0.31]");
    assert_eq!(mx1["passes"], true, "{mx1:#}");
    assert_eq!(mx1["report"]["starttls_offered"], true);
    assert_eq!(mx1["report"]["tls"]["protocol"], "TLSv1.3", "{mx1:#}");
    assert_eq!(
        mx1["report"]["verification"], "verified for mx1.partner.example",
        "the test CA is in extra_roots, as for delivery"
    );
    let mx2 = host(&t, "mx2.partner.example[127.0.0.32]");
    assert_eq!(mx2["passes"], false);
    assert_eq!(mx2["report"]["starttls_offered"], false);
    assert_eq!(
        mx2["verdict"],
        "TLS is required, but was not offered by host mx2.partner.example: mail would be deferred"
    );
    // What the delivery records saw: mx1 took the message above with STARTTLS offered.
    let seen = |h: &str| {
        t["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["host"] == h)
            .cloned()
            .unwrap()
    };
    assert_eq!(seen("mx1.partner.example")["connections"], 1, "{t:#}");
    assert_eq!(seen("mx1.partner.example")["offered"], 1);
    assert_eq!(seen("mx2.partner.example")["connections"], 0);

    // `verify` checks mx1's certificate for its name; `secure` for the domain, which the
    // certificate does not carry; `may` lets everything through.
    let (_, t) = test_row(
        &p.server,
        json!({"pattern": "partner.example", "level": "verify"}),
    )
    .await;
    let mx1 = host(&t, "mx1.partner.example");
    assert_eq!(mx1["passes"], true, "{mx1:#}");
    assert!(
        mx1["verdict"]
            .as_str()
            .unwrap()
            .contains("certificate verified for mx1.partner.example: mail would go over TLS"),
        "{mx1:#}"
    );
    let (_, t) = test_row(
        &p.server,
        json!({"pattern": "partner.example", "level": "secure"}),
    )
    .await;
    let mx1 = host(&t, "mx1.partner.example");
    assert_eq!(mx1["passes"], false, "{mx1:#}");
    assert!(
        mx1["verdict"]
            .as_str()
            .unwrap()
            .starts_with("Server certificate not verified for partner.example"),
        "{mx1:#}"
    );
    let (_, t) = test_row(
        &p.server,
        json!({"pattern": "partner.example", "level": "may", "on_failure": "bounce"}),
    )
    .await;
    assert_eq!(t["test"]["passes"], true, "{t:#}");
    assert_eq!(
        host(&t, "mx2.partner.example")["verdict"],
        "STARTTLS not offered to the probe: mail would go in plaintext (level may allows it)"
    );
    // The Test saved nothing.
    assert_eq!(p.server.get_settings().await["policy"], json!([]));
}

#[tokio::test]
async fn a_row_the_table_would_refuse_is_not_tested() {
    let p = partner().await;
    let (status, e) = test_row(
        &p.server,
        json!({"pattern": "not a domain", "level": "encrypt"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["field"], "policy[0].pattern", "{e:#}");
    let (status, e) = test_row(&p.server, json!({"pattern": "*", "level": "encrypt"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["field"], "pattern", "{e:#}");
    // A domain without MX or address: said, not a 500.
    let (status, e) = test_row(
        &p.server,
        json!({"pattern": "nowhere.example", "level": "encrypt"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e:#}");
    assert!(
        e["error"].as_str().unwrap().contains("nowhere.example"),
        "{e:#}"
    );
}

#[tokio::test]
async fn rows_are_added_edited_and_deleted_one_at_a_time_with_hermes_errors() {
    let p = partner().await;
    let s = &p.server;
    let rows = "/api/v1/policy/rows";
    let (status, body) = s
        .api_json(
            Method::POST,
            rows,
            Some(&json!([{"pattern": "Partner.example", "level": "encrypt"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["pattern"], "partner.example");
    // Error 5: duplicate on add.
    let (status, e) = s
        .api_json(
            Method::POST,
            rows,
            Some(&json!([{"pattern": "partner.example", "level": "verify"}])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["field"], "policy[1].pattern");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("duplicate row: \"partner.example\" is already in the table"),
        "{e}"
    );
    // Error 20: the field left blank.
    let (status, e) = s
        .api_json(
            Method::POST,
            rows,
            Some(&json!([{"pattern": " ", "level": "verify"}])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("required"), "{e}");
    // Error 6: duplicate on edit (renaming a row onto another).
    let (status, _) = s
        .api_json(
            Method::POST,
            rows,
            Some(&json!([{"pattern": "other.example", "level": "may"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = s
        .api_json(
            Method::PUT,
            "/api/v1/policy/rows/other.example",
            Some(&json!({"pattern": "partner.example", "level": "may"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("duplicate row"),
        "{e}"
    );
    // An edit that holds, then a delete.
    let (status, body) = s
        .api_json(
            Method::PUT,
            "/api/v1/policy/rows/other.example",
            Some(&json!({"pattern": "other.example", "level": "verify", "note": "since 2026"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s
        .api(Method::DELETE, "/api/v1/policy/rows/partner.example", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, e) = s
        .api_json(Method::DELETE, "/api/v1/policy/rows/partner.example", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let doc = s.get_settings().await;
    assert_eq!(
        doc["policy"],
        json!([{"pattern": "other.example", "level": "verify", "include_subdomains": false, "on_failure": "defer", "note": "since 2026"}])
    );
    let (_, audit) = s
        .api_json(Method::GET, "/api/v1/settings/audit", None)
        .await;
    assert_eq!(audit[0]["actor"], "api", "{audit:#}");
}

/// A row the table has is tested, with what was typed in its place (not refused as a
/// duplicate); nothing is saved.
#[tokio::test]
async fn a_row_in_the_table_is_tested_in_its_place() {
    let p = partner().await;
    let s = &p.server;
    let (status, body) = s
        .api_json(
            Method::POST,
            "/api/v1/policy/rows",
            Some(&json!([{"pattern": "partner.example", "level": "may"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, t) = test_row(s, json!({"pattern": "Partner.example", "level": "encrypt"})).await;
    assert_eq!(status, StatusCode::OK, "{t:#}");
    assert_eq!(t["replaces"], "partner.example");
    assert_eq!(t["source"], "row:partner.example");
    assert_eq!(
        t["test"]["level"], "encrypt",
        "the typed level, not the stored one"
    );
    assert_eq!(t["test"]["passes"], false, "mx2 offers no STARTTLS");
    assert_eq!(
        s.get_settings().await["policy"][0]["level"],
        "may",
        "nothing saved"
    );
}
