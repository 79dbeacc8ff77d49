//! Issue 31, acceptance 4, on the API and the page without a browser: with 30 days of
//! received records in the store (`common::inbound_fixture`, written through the store's own
//! API before the real binary starts), `POST /api/v1/inbound-tls/test` validates a row as
//! the change would and stores nothing, and says how much mail from that sender or client
//! arrived, how much the row would now refuse and why, and the latest of it. The page's add
//! shows the same figures before anything is saved, and its refusals name each field in the
//! admin's words.

mod common;

use common::inbound_fixture::{self, partner_plaintext};
use common::page::{Browser, Page, initial_password, location, urlencode};
use common::process::{Proc, spawn_postern};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery";

/// The real binary on a data directory holding the fixture.
fn start(dir: &std::path::Path) -> Proc {
    let now = postern::fsutil::unix_now();
    inbound_fixture::write(&dir.join("data"), now);
    spawn_postern(dir, None, "")
}

async fn api(
    proc: &Proc,
    dir: &std::path::Path,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let client = postern::admin::client::ApiClient::new(proc.api(), &dir.join("data")).unwrap();
    let body = (!body.is_null()).then(|| serde_json::to_vec(&body).unwrap());
    let (status, bytes) = client.request(method, path, body).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn impact(proc: &Proc, dir: &std::path::Path, body: Value) -> Value {
    let (status, v) = api(proc, dir, Method::POST, "/api/v1/inbound-tls/test", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// The inbound TLS rows stored now.
async fn stored(proc: &Proc, dir: &std::path::Path) -> Value {
    let (status, doc) = api(proc, dir, Method::GET, "/api/v1/settings", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    doc.get("inbound_tls").cloned().unwrap_or(json!([]))
}

fn ids(v: &Value) -> Vec<String> {
    v["latest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["queue_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_api_test_counts_what_a_row_would_refuse_over_30_days_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proc = start(dir.path());
    let d = dir.path();

    let v = impact(
        &proc,
        d,
        json!({"row": {"pattern": "Partner.Example.", "level": "encrypt"}}),
    )
    .await;
    assert_eq!(
        v["row"]["pattern"], "partner.example",
        "validated as stored"
    );
    assert_eq!(v["kind"], "sender");
    assert_eq!(
        (v["days"].as_u64(), v["arrived"].as_u64()),
        (Some(30), Some(60)),
        "{v}"
    );
    assert_eq!(v["refused"], 15, "the plaintext ones: {v}");
    assert_eq!(
        v["reasons"],
        json!({"plaintext": 15, "too_weak": 0, "no_certificate": 0, "certificate": 0})
    );
    assert_eq!(v["partial"], false);
    assert_eq!(
        ids(&v),
        partner_plaintext()[..10],
        "the latest ten, newest first"
    );
    let first = &v["latest"][0];
    assert_eq!(first["client"], "unknown[192.0.2.10]");
    assert_eq!(first["sender"], "user0@partner.example");
    assert_eq!(first["reply"], "450 4.7.1 Session encryption is required");
    assert_eq!(first["why"], json!({"reason": "plaintext"}));
    assert!(first.get("tls").is_none(), "plaintext: {first}");
    assert_eq!(
        v["plaintext_reply"],
        "450 4.7.1 Session encryption is required"
    );
    assert_eq!(stored(&proc, d).await, json!([]), "a test stores nothing");

    // A minimum of 256 bits also refuses the 128-bit sessions.
    let body = json!({"row": {"pattern": "partner.example", "level": "encrypt", "min_bits": 256}});
    let v = impact(&proc, d, body).await;
    assert_eq!(
        (v["refused"].as_u64(), v["reasons"]["too_weak"].as_u64()),
        (Some(30), Some(15))
    );
    assert_eq!(
        v["latest"][1]["reply"],
        "450 4.7.0 encryption too weak 128 less than 256"
    );
    assert!(
        v["latest"][1]["tls"]
            .as_str()
            .unwrap()
            .contains("(128/128 bits)")
    );

    // verify: no certificate, and a certificate for another name, are refused too.
    let body = json!({"row": {"pattern": "partner.example", "level": "verify", "match_names": ["MX.partner.example"]}});
    let v = impact(&proc, d, body).await;
    assert_eq!(v["refused"], 45, "{v}");
    assert_eq!(
        v["reasons"],
        json!({"plaintext": 15, "too_weak": 0, "no_certificate": 15, "certificate": 15})
    );
    let wrong = &v["latest"][2];
    assert_eq!(wrong["queue_id"], "P003");
    assert_eq!(
        wrong["reply"],
        "450 4.7.1 <other.example>: Client certificate rejected: certificate is not valid for mx.partner.example (it names other.example)"
    );
    assert!(
        wrong["certificate"]
            .as_str()
            .unwrap()
            .contains("CN=other.example, O=Partner, issued by CN=Partner CA; verified")
    );

    // `.partner.example` covers sub.partner.example too; a client network whatever the sender.
    let v = impact(
        &proc,
        d,
        json!({"row": {"pattern": ".partner.example", "level": "encrypt"}}),
    )
    .await;
    assert_eq!(
        (v["arrived"].as_u64(), v["refused"].as_u64()),
        (Some(65), Some(20)),
        "{v}"
    );
    let v = impact(
        &proc,
        d,
        json!({"row": {"pattern": "192.0.2.0/24", "level": "encrypt"}}),
    )
    .await;
    assert_eq!(v["kind"], "client");
    assert_eq!(
        (v["arrived"].as_u64(), v["refused"].as_u64()),
        (Some(72), Some(27)),
        "{v}"
    );
    assert_eq!(ids(&v)[..3], ["P000", "X000", "N000"]);

    // With partner.example in the table, `.partner.example` decides only for its subdomains;
    // an edit is tested in the stored row's place.
    let row = json!({"pattern": "partner.example", "level": "verify", "match_names": ["mx.partner.example"]});
    let (status, _) = api(&proc, d, Method::POST, "/api/v1/inbound-tls", row).await;
    assert_eq!(status, StatusCode::OK);
    let v = impact(
        &proc,
        d,
        json!({"row": {"pattern": ".partner.example", "level": "encrypt"}}),
    )
    .await;
    assert_eq!(
        (
            v["arrived"].as_u64(),
            v["decided_by_other_rows"].as_u64(),
            v["refused"].as_u64()
        ),
        (Some(65), Some(60), Some(5)),
        "{v}"
    );
    assert_eq!(ids(&v), ["S000", "S001", "S002", "S003", "S004"]);
    let body = json!({"row": {"pattern": "partner.example", "level": "encrypt"}, "replacing": "partner.example"});
    let v = impact(&proc, d, body).await;
    assert_eq!(
        (v["refused"].as_u64(), v["replaces"].as_str()),
        (Some(15), Some("partner.example"))
    );
    assert_eq!(
        stored(&proc, d).await[0]["level"],
        "verify",
        "the test changed nothing"
    );
    assert!(proc.stop().await);
}

#[tokio::test]
async fn the_api_test_refuses_what_the_change_would_refuse_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let proc = start(dir.path());
    let d = dir.path();
    let refused = |body: Value| {
        let proc = &proc;
        async move {
            let (status, v) = api(proc, d, Method::POST, "/api/v1/inbound-tls/test", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
            (
                v["field"].as_str().unwrap_or("").to_string(),
                v["error"].as_str().unwrap().to_string(),
            )
        }
    };
    let (field, error) =
        refused(json!({"row": {"pattern": "ceo@partner.example", "level": "encrypt"}})).await;
    assert!(
        field.ends_with(".pattern") && error.contains("is an address"),
        "{field}: {error}"
    );
    let (field, error) =
        refused(json!({"row": {"pattern": "partner.example", "level": "verify"}})).await;
    assert!(
        field.ends_with(".match_names") && error.contains("required for level verify"),
        "{field}: {error}"
    );
    let (field, _) = refused(
        json!({"row": {"pattern": "partner.example", "level": "encrypt", "min_bits": 999}}),
    )
    .await;
    assert!(field.ends_with(".min_bits"), "{field}");
    let row = json!({"pattern": "partner.example", "level": "encrypt"});
    let (status, _) = api(&proc, d, Method::POST, "/api/v1/inbound-tls", row.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (field, error) = refused(json!({"row": row})).await;
    assert!(
        field.ends_with(".pattern") && error.contains("duplicate row"),
        "an add of a stored row: {error}"
    );
    let (status, v) = api(
        &proc,
        d,
        Method::POST,
        "/api/v1/inbound-tls/test",
        json!({"row": {"pattern": "x.example", "level": "encrypt"}, "replacing": "nosuch.example"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(stored(&proc, d).await.as_array().unwrap().len(), 1);
    assert!(proc.stop().await);
}

/// A browser signed in as `admin` with its own password (the first start done).
async fn admin(proc: &Proc, dir: &std::path::Path) -> Browser {
    let mut b = Browser::new(proc);
    b.sign_in("admin", &initial_password(dir)).await;
    let csrf = b.csrf("/password").await;
    let form = format!(
        "csrf={csrf}&current={}&new={PASSWORD}&confirm={PASSWORD}",
        urlencode(&initial_password(dir))
    );
    assert_eq!(location(&b.go("POST", "/password", &form).await), "/");
    b
}

/// A form's fields, as typed.
type Fields<'a> = &'a [(&'a str, &'a str)];

/// POST `fields` (URL-encoded here) with the page's token.
async fn post(b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> Page {
    let csrf = b.csrf("/inbound-tls").await;
    let mut body = format!("csrf={csrf}");
    for (k, v) in fields {
        body.push_str(&format!("&{k}={}", urlencode(v)));
    }
    b.go("POST", path, &body).await
}

/// The text of the field error right after the field `id`, if any.
fn error_under(body: &str, id: &str) -> Option<String> {
    let at = body.find(&format!("id=\"{id}\""))?;
    let rest = &body[at..];
    let next_label = rest[1..].find("<label").map_or(rest.len(), |i| i + 1);
    let err = rest[..next_label]
        .split("class=\"field-error\" role=\"alert\">")
        .nth(1)?;
    let text = err.split("</p>").next()?;
    Some(
        text.replace("&#34;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn the_page_shows_the_impact_before_saving_and_names_each_refused_field() {
    let dir = tempfile::tempdir().unwrap();
    let proc = start(dir.path());
    let d = dir.path();
    let mut b = admin(&proc, d).await;

    let page = post(
        &mut b,
        "/inbound-tls/save",
        &[("pattern", "partner.example"), ("level", "encrypt")],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Nothing is saved yet"), "{}", page.body);
    assert!(
        page.body.contains("<b id=\"arrived\">60 messages</b>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<b id=\"refused\">15 messages</b>"));
    assert!(page.body.contains("15 messages without TLS (plaintext)"));
    let newest = page
        .body
        .find(">P000</a>")
        .expect("the newest refused message");
    assert!(newest < page.body.find(">P036</a>").expect("the tenth"));
    assert!(!page.body.contains(">P040</a>"), "ten at most");
    assert!(
        page.body
            .contains("450 4.7.1 Session encryption is required")
    );
    assert_eq!(
        stored(&proc, d).await,
        json!([]),
        "nothing saved before the confirmation"
    );

    let page = post(
        &mut b,
        "/inbound-tls/save",
        &[
            ("pattern", "partner.example"),
            ("level", "encrypt"),
            ("confirmed", "yes"),
        ],
    )
    .await;
    assert_eq!(location(&page), "/inbound-tls#top");
    assert_eq!(
        stored(&proc, d).await,
        json!([{"pattern": "partner.example", "level": "encrypt"}])
    );

    // Each refusal under its field, in the admin's words, never a settings path.
    let cases: [(Fields, &str, &str); 5] = [
        (
            &[("pattern", "ceo@partner.example"), ("level", "encrypt")],
            "pattern",
            "is an address: a row names the sender's domain",
        ),
        (
            &[("pattern", "partner.example"), ("level", "encrypt")],
            "pattern",
            "duplicate row",
        ),
        (
            &[("pattern", "b.example"), ("level", "verify")],
            "match_names",
            "required for level verify",
        ),
        (
            &[
                ("pattern", "b.example"),
                ("level", "encrypt"),
                ("min_bits", "many"),
            ],
            "min_bits",
            "is not a whole number of bits",
        ),
        (
            &[
                ("pattern", "b.example"),
                ("level", "encrypt"),
                ("min_bits", "999"),
            ],
            "min_bits",
            "out of range",
        ),
    ];
    for (fields, id, words) in cases {
        let page = post(&mut b, "/inbound-tls/save", fields).await;
        assert_eq!(page.status, 400, "{fields:?}");
        let under = error_under(&page.body, id)
            .unwrap_or_else(|| panic!("no error under {id}: {}", page.body));
        assert!(under.contains(words), "{fields:?}: {under}");
        assert!(
            page.body
                .contains("Not saved: see the message under the field.")
        );
        assert!(!page.body.contains("inbound_tls["), "{}", page.body);
    }
    for (code, words) in [
        ("250", "250 is not a refusal code"),
        ("soon", "is not a reply code"),
    ] {
        let page = post(
            &mut b,
            "/inbound-tls/code",
            &[("plaintext_reject_code", code)],
        )
        .await;
        assert_eq!(page.status, 400);
        let under = error_under(&page.body, "plaintext_reject_code").unwrap();
        assert!(under.contains(words), "{under}");
        assert!(
            !page.body.contains("inbound.plaintext_reject_code"),
            "{}",
            page.body
        );
    }
    let page = post(
        &mut b,
        "/inbound-tls/code",
        &[("plaintext_reject_code", "550")],
    )
    .await;
    assert_eq!(location(&page), "/inbound-tls#reject-code");
    let (_, doc) = api(&proc, d, Method::GET, "/api/v1/settings", Value::Null).await;
    assert_eq!(doc["inbound"]["plaintext_reject_code"], 550);
    assert_eq!(
        stored(&proc, d).await.as_array().unwrap().len(),
        1,
        "no refused row was stored"
    );
    assert!(proc.stop().await);
}
