//! The Logs page's search (issue 28), the same on both record stores: the embedded one
//! (`data/log/records.redb`) and the PostgreSQL table several nodes share (a real
//! PostgreSQL, `tests/common/postgres.rs`). The text is looked for in what an admin reads —
//! the record's Postfix lines and values — not in the JSON it is stored as; `Host offered
//! STARTTLS: [host]` finds the attempts where that host offered it; a recipient or sender
//! is an address, a domain or a `.domain`; a search of nothing lists the newest records.

mod common;

use postern::events::store::{Found, Retention, Search, Store};
use postern::events::{Delivery, HostTried};

/// Twelve attempts, oldest first; `Q01`..`Q12`.
fn records(now: u64) -> Vec<Delivery> {
    let rows = [
        // (recipient, sender, relay, STARTTLS offered, TLS, status)
        (
            "ceo@partner.example",
            "app@inside.example",
            "mx.partner.example[127.0.0.41]:25",
            true,
            true,
            "sent",
        ),
        (
            "ops@eu.partner.example",
            "app@inside.example",
            "mx.eu.partner.example[127.0.0.42]:25",
            true,
            true,
            "sent",
        ),
        (
            "ceo@mypartner.example",
            "billing@inside.example",
            "mx.mypartner.example[127.0.0.43]:25",
            false,
            false,
            "sent",
        ),
        (
            "ceo@partner.example",
            "app@inside.example",
            "none",
            false,
            false,
            "deferred",
        ),
        (
            "a@plain.example",
            "app@eu.inside.example",
            "mx.plain.example[127.0.0.44]:25",
            false,
            false,
            "sent",
        ),
        (
            "b@plain.example",
            "app@eu.inside.example",
            "mx.plain.example[127.0.0.44]:25",
            false,
            false,
            "deferred",
        ),
        (
            "c@partner.example",
            "app@inside.example",
            "mx.partner.example[127.0.0.41]:25",
            true,
            false,
            "deferred",
        ),
        (
            "d@other.example",
            "app@inside.example",
            "mx.other.example[127.0.0.45]:25",
            true,
            true,
            "sent",
        ),
        (
            "e@other.example",
            "app@inside.example",
            "mx.other.example[127.0.0.45]:25",
            true,
            true,
            "sent",
        ),
        (
            "f@other.example",
            "ext@outside.example",
            "mx.other.example[127.0.0.45]:25",
            true,
            true,
            "sent",
        ),
        (
            "g@other.example",
            "app@inside.example",
            "mx.other.example[127.0.0.45]:25",
            true,
            true,
            "sent",
        ),
        (
            "h@other.example",
            "app@inside.example",
            "mx.other.example[127.0.0.45]:25",
            true,
            true,
            "sent",
        ),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, &(rcpt, sender, relay, offered, tls, status))| {
            let sent = status == "sent";
            let mut d: Delivery = serde_json::from_value(serde_json::json!({
                "unix_time": now - 600 + i as u64 * 10,
                "queue_id": format!("Q{:02}", i + 1),
                "sender": sender, "recipient": rcpt, "relay": relay,
                "delay": 0.3, "delays": [0.0, 0.0, 0.2, 0.1],
                "dsn": if sent { "2.0.0" } else { "4.4.1" }, "status": status,
                "reply": if sent { "250 2.0.0 Ok: queued as X1" } else { "connect to host: Connection refused" },
                "starttls_offered": offered,
                "tls": tls.then(|| serde_json::json!({"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "bits": 256})),
                "verified_name": null, "policy_level": "may", "policy_source": "global",
            }))
            .unwrap();
            if i == 9 {
                d.tenant = Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into());
            }
            if relay != "none" {
                d.hosts_tried = vec![HostTried {
                    relay: relay.into(),
                    status: status.to_string().into(),
                    dsn: d.dsn.clone(),
                    reply: d.reply.clone(),
                }];
            }
            d
        })
        .collect()
}

fn ids(f: &Found) -> Vec<String> {
    f.records
        .iter()
        .map(|r| r.record.queue_id.clone())
        .collect()
}

/// Every search, and the queue IDs it must find, newest first.
fn searches() -> Vec<(&'static str, Search, Vec<&'static str>)> {
    let text = |t: &str| Search {
        text: Some(t.into()),
        limit: 50,
        ..Search::default()
    };
    let rcpt = |r: &str| Search {
        recipient: Some(r.into()),
        limit: 50,
        ..Search::default()
    };
    let sender = |s: &str| Search {
        sender: Some(s.into()),
        limit: 50,
        ..Search::default()
    };
    let offered = vec!["Q12", "Q11", "Q10", "Q09", "Q08", "Q07", "Q02", "Q01"];
    vec![
        (
            "the text of the lines: STARTTLS offered, or not offered and said",
            text("STARTTLS"),
            vec![
                "Q12", "Q11", "Q10", "Q09", "Q08", "Q07", "Q05", "Q03", "Q02", "Q01",
            ],
        ),
        (
            "offered",
            text("Offered"),
            vec![
                "Q12", "Q11", "Q10", "Q09", "Q08", "Q07", "Q05", "Q03", "Q02", "Q01",
            ],
        ),
        (
            "Host offered STARTTLS",
            text("Host offered STARTTLS"),
            offered,
        ),
        ("a JSON field name", text("unix_time"), vec![]),
        ("another", text("starttls_offered"), vec![]),
        (
            "the seeds' search for one host",
            text("Host offered STARTTLS: [mx.partner.example]"),
            vec!["Q07", "Q01"],
        ),
        (
            "a host that did not offer it",
            text("Host offered STARTTLS: [mx.plain.example]"),
            vec![],
        ),
        (
            "a value, any case",
            text("EXT@outside.example"),
            vec!["Q10"],
        ),
        (
            "the TLS line",
            text("TLS connection established to mx.eu."),
            vec!["Q02"],
        ),
        (
            "a recipient domain",
            rcpt("partner.example"),
            vec!["Q07", "Q04", "Q01"],
        ),
        (
            "@domain",
            rcpt("@Partner.Example"),
            vec!["Q07", "Q04", "Q01"],
        ),
        (
            ".domain: the domain and its subdomains",
            rcpt(".partner.example"),
            vec!["Q07", "Q04", "Q02", "Q01"],
        ),
        (
            "an address",
            rcpt("CEO@partner.example"),
            vec!["Q04", "Q01"],
        ),
        (
            "a sender domain",
            sender("inside.example"),
            vec![
                "Q12", "Q11", "Q09", "Q08", "Q07", "Q04", "Q03", "Q02", "Q01",
            ],
        ),
        (
            "a sender .domain",
            sender(".inside.example"),
            vec![
                "Q12", "Q11", "Q09", "Q08", "Q07", "Q06", "Q05", "Q04", "Q03", "Q02", "Q01",
            ],
        ),
        (
            "a domain and a text",
            Search {
                recipient: Some(".partner.example".into()),
                text: Some("status=sent".into()),
                limit: 50,
                ..Search::default()
            },
            vec!["Q02", "Q01"],
        ),
        (
            "mail the connector relayed",
            Search {
                from_tenant: true,
                limit: 50,
                ..Search::default()
            },
            vec!["Q10"],
        ),
    ]
}

/// The searches, then a search of nothing: the newest page, and the next from its cursor.
fn every_search_finds_the_same(store: &Store, backend: &str) {
    for (what, search, want) in searches() {
        let found = store.search(&search).unwrap();
        assert_eq!(ids(&found), want, "{backend}: {what}");
    }
    let newest = |before| Search {
        before,
        limit: 5,
        ..Search::default()
    };
    let first = store.search(&newest(None)).unwrap();
    assert_eq!(
        ids(&first),
        ["Q12", "Q11", "Q10", "Q09", "Q08"],
        "{backend}"
    );
    let second = store.search(&newest(first.next)).unwrap();
    assert_eq!(
        ids(&second),
        ["Q07", "Q06", "Q05", "Q04", "Q03"],
        "{backend}"
    );
    let third = store.search(&newest(second.next)).unwrap();
    assert_eq!(ids(&third), ["Q02", "Q01"], "{backend}");
    assert_eq!(third.next, None, "{backend}: the last page");
    // The same cursor for a domain search.
    let page = |before| Search {
        recipient: Some(".partner.example".into()),
        before,
        limit: 3,
        ..Search::default()
    };
    let one = store.search(&page(None)).unwrap();
    assert_eq!(ids(&one), ["Q07", "Q04", "Q02"], "{backend}");
    assert_eq!(
        ids(&store.search(&page(one.next)).unwrap()),
        ["Q01"],
        "{backend}"
    );
}

fn retention() -> Retention {
    Retention {
        max_age_secs: 365 * 86_400,
        max_records: 1_000_000,
    }
}

#[test]
fn the_embedded_store_searches_what_the_admin_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("records.redb"), retention()).unwrap();
    let now = postern::fsutil::unix_now();
    let all = records(now);
    store.insert(&all[..5], false).unwrap();
    store.insert(&all[5..], true).unwrap();
    every_search_finds_the_same(&store, "embedded");
}

#[test]
fn the_shared_store_searches_the_same() {
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    postern::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    let tls = postern::tls::webpki_client_config(postern::tls::trust_roots(&[]).unwrap()).unwrap();
    let shared = postern::events::shared::SharedRecords::open(
        &pg.url(),
        "gw1",
        retention(),
        (tls, dir.path()),
    );
    let store = Store::Shared(shared);
    let now = postern::fsutil::unix_now();
    let all = records(now);
    store.insert(&all, true).unwrap();
    assert!(
        !dir.path().join("log/shared-pending.jsonl").exists(),
        "stored in the database, not kept for later"
    );
    assert_eq!(store.len().unwrap(), all.len() as u64);
    every_search_finds_the_same(&store, "PostgreSQL");
}

/// `GET /api/v1/logs` over a real delivery: a `.domain`, the text of a line, each record
/// with its lines; nothing given, the newest; a recipient that is no address or domain is
/// refused naming the field.
#[tokio::test]
async fn the_api_answers_with_the_lines_and_refuses_what_is_no_address() {
    use common::sink::{Sink, SinkOptions};
    use hyper::{Method, StatusCode};
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = common::TestServer::start_with(&format!(
        "[outbound.routes]\n\"eu.partner.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    server
        .set(serde_json::json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    server
        .submit(
            "app@inside.example",
            &["ceo@eu.partner.example"],
            b"Subject: t\r\n\r\nhi\r\n",
        )
        .await;
    assert!(sink.next(20).await.expect("delivered").tls);
    let sent = server.next_event_for("ceo@eu.partner.example", 20).await;
    let found = |query: &'static str| {
        let server = &server;
        async move {
            let start = std::time::Instant::now();
            loop {
                let (status, body) = server
                    .api_json(Method::GET, &format!("/api/v1/logs?{query}"), None)
                    .await;
                assert_eq!(status, StatusCode::OK, "{query}: {body}");
                // The feed may come a moment before the store has the record.
                if !body["records"].as_array().unwrap().is_empty()
                    || start.elapsed().as_secs() >= 10
                {
                    return body;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    for query in [
        "recipient=.partner.example",
        "recipient=eu.partner.example",
        "sender=inside.example",
        "text=Host%20offered%20STARTTLS%3A%20%5B127.0.0.1%5D",
        // The log says Untrusted (the sink's certificate chains to no root): so does the page.
        "text=Untrusted%20TLS%20connection%20established",
        "",
    ] {
        let body = found(query).await;
        let record = &body["records"][0];
        assert_eq!(
            record["record"]["queue_id"], sent.queue_id,
            "{query}: {body}"
        );
        let lines: Vec<&str> = record["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            lines[0],
            format!(
                "postern/smtp: {}: Host offered STARTTLS: [127.0.0.1]",
                sent.queue_id
            ),
            "{query}"
        );
        assert_eq!(
            lines.last().unwrap(),
            &format!("postern/smtp: {}", sent.postfix_line())
        );
        assert!(
            lines[1].starts_with(
                "postern/smtp: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:"
            ),
            "{query}: {lines:?}"
        );
    }
    let (status, body) = server
        .api_json(Method::GET, "/api/v1/logs?recipient=partner.example", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["records"], serde_json::json!([]), "not a subdomain's");
    let (status, e) = server
        .api_json(Method::GET, "/api/v1/logs?sender=a%20b", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["field"], "sender");
    assert_eq!(
        e["error"],
        "sender: \"a b\" is not an address, a domain or a .domain"
    );
}
