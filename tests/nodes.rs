//! Several gateway nodes, one configuration (issue 20, first piece): two postern nodes on
//! loopback share their settings in a real PostgreSQL (a cluster in a temporary directory,
//! `tests/common/postgres.rs`). A change made through node A's API applies to node B's next
//! delivery within a second, is audited once, and is sealed in the database. With the
//! database stopped both keep relaying on the settings in force and refuse changes; when it
//! is back, a change applies on both.

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::sink::{Sink, SinkOptions};
use common::*;
use hyper::{Method, StatusCode};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn node_config(pg: &Postgres, sink: &Sink, node: &str) -> String {
    format!(
        "[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\nnode = \"{node}\"\n[outbound.routes]\n\"partner.example\" = \"[127.0.0.1]:{}\"\n",
        pg.url(),
        sink.addr.port()
    )
}

/// Wait until `node` serves settings with a policy row for `pattern` at `level`; how long it
/// took. Fails past `within`.
async fn until_applied(
    node: &TestServer,
    pattern: &str,
    level: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let doc = node.get_settings().await;
        let has = doc["policy"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["pattern"] == pattern && r["level"] == level)
        });
        if has {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{pattern} {level} not applied within {within:?}: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn policy_row(
    node: &TestServer,
    pattern: &str,
    level: &str,
) -> (StatusCode, serde_json::Value) {
    let mut doc = node.get_settings().await;
    doc["policy"] = serde_json::json!([{"pattern": pattern, "level": level}]);
    node.put_settings(doc).await
}

async fn relay(node: &mut TestServer, rcpt: &str) -> postern::events::Delivery {
    node.submit("app@inside.example", &[rcpt], &message("nodes", ""))
        .await;
    node.next_event_for(rcpt, 30).await
}

#[tokio::test]
async fn a_change_on_one_node_applies_on_the_other_within_a_second() {
    let Some(pg) = Postgres::start() else { return };
    // The partner's server offers no STARTTLS: an `encrypt` row defers its mail.
    let mut sink = Sink::start(SinkOptions::default()).await;
    let a = TestServer::start_with(&node_config(&pg, &sink, "a")).await;
    let mut b = TestServer::start_with(&node_config(&pg, &sink, "b")).await;
    let sent = relay(&mut b, "x@partner.example").await;
    assert_eq!(sent.status, "sent", "{}", sent.reply);
    sink.next(5).await.unwrap();

    let (status, body) = policy_row(&a, "partner.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let took = until_applied(&b, "partner.example", "encrypt", Duration::from_secs(1)).await;
    eprintln!("applied on node B after {took:?}");
    let deferred = relay(&mut b, "y@partner.example").await;
    assert_eq!(
        (deferred.status.as_ref(), deferred.policy_source.as_str()),
        ("deferred", "row:partner.example"),
        "{}",
        deferred.reply
    );

    // B's deliveries are in A's Logs, naming B.
    let (status, logs) = a
        .api_json(
            Method::GET,
            "/api/v1/logs?recipient=y%40partner.example",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let records = logs["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{logs}");
    assert_eq!(records[0]["record"]["node"], "b", "{logs}");
    assert_eq!(records[0]["record"]["status"], "deferred", "{logs}");

    // One audit entry for the change, seen alike from both nodes.
    for node in [&a, &b] {
        let (status, audit) = node
            .api_json(Method::GET, "/api/v1/settings/audit", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let versions: Vec<u64> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            vec![2, 1],
            "first start, then the change: {audit}"
        );
    }

    // Nothing in the database is readable without the key.
    let url = pg.url();
    let rows = tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.query("SELECT sealed FROM postern_settings_current UNION ALL SELECT sealed FROM postern_settings_audit UNION ALL SELECT sealed FROM postern_admin_users", &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        rows.len() >= 3,
        "current, two audit entries, the admin user"
    );
    for sealed in rows {
        let text = String::from_utf8_lossy(&sealed);
        assert!(
            !text.contains("partner.example") && !text.contains("argon2"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn with_the_database_away_nodes_relay_on_what_they_have_and_refuse_changes() {
    let Some(pg) = Postgres::start() else { return };
    let mut sink = Sink::start(SinkOptions::default()).await;
    let a = TestServer::start_with(&node_config(&pg, &sink, "a")).await;
    let mut b = TestServer::start_with(&node_config(&pg, &sink, "b")).await;
    let (status, _) = policy_row(&a, "partner.example", "may").await;
    assert_eq!(status, StatusCode::OK);
    until_applied(&b, "partner.example", "may", Duration::from_secs(1)).await;

    pg.down();
    // The node says so where admins look: a gauge (and a line on every page).
    let start = Instant::now();
    loop {
        let (_, text) = b.api(Method::GET, "/api/v1/metrics", None).await;
        if text.contains("postern_settings_database_up 0") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = relay(&mut b, "x@partner.example").await;
    assert_eq!(
        (sent.status.as_ref(), sent.policy_source.as_str()),
        ("sent", "global"),
        "{}",
        sent.reply
    );
    sink.next(5).await.unwrap();
    let (status, body) = policy_row(&a, "partner.example", "encrypt").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("settings database unreachable ("),
        "{body}"
    );

    pg.up();
    let (status, body) = policy_row(&a, "partner.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // After an outage each follower reconnects first (each try is bounded by its connect
    // timeout), then catches up at once.
    until_applied(&b, "partner.example", "encrypt", Duration::from_secs(10)).await;
    until_applied(&a, "partner.example", "encrypt", Duration::from_secs(1)).await;
    let (_, text) = b.api(Method::GET, "/api/v1/metrics", None).await;
    assert!(text.contains("postern_settings_database_up 1"), "{text}");

    // What B delivered while the database was away waited on B's disk; B stores it once
    // the database is back (its store's thread looks every second), and A's Logs find it.
    let start = Instant::now();
    let records = loop {
        let (status, logs) = a
            .api_json(
                Method::GET,
                "/api/v1/logs?recipient=x%40partner.example",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{logs}");
        let records = logs["records"].as_array().cloned().unwrap_or_default();
        if !records.is_empty() {
            break records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never replayed: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["record"]["node"], "b");
    assert_eq!(records[0]["record"]["status"], "sent");
    assert!(
        !b.data_dir().join("log/shared-pending.jsonl").exists(),
        "the waiting records go once they are stored"
    );

    // A replay cut short by a crash after its commit (the file not yet removed) is replayed
    // again at the next start, and stores nothing twice: each record carries its own ID.
    let url = pg.url();
    let (rid, record) = tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let row = db
            .query_one("SELECT rid, record::text FROM postern_deliveries WHERE recipient = 'x@partner.example'", &[])
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    })
    .await
    .unwrap();
    let (_, dir) = b.stop().await;
    let fresh = record.replace("x@partner.example", "replayed@partner.example");
    std::fs::write(
        dir.path().join("log/shared-pending.jsonl"),
        format!(
            "{{\"rid\":{rid},\"record\":{record}}}\n{{\"rid\":{},\"record\":{fresh}}}\n",
            rid ^ 1
        ),
    )
    .unwrap();
    let b = TestServer::start_in(dir, &node_config(&pg, &sink, "b")).await;
    let start = Instant::now();
    while b.data_dir().join("log/shared-pending.jsonl").exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "not replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (rcpt, want) in [("x", 1), ("replayed", 1)] {
        let (_, logs) = a
            .api_json(
                Method::GET,
                &format!("/api/v1/logs?recipient={rcpt}%40partner.example"),
                None,
            )
            .await;
        assert_eq!(
            logs["records"].as_array().map(Vec::len),
            Some(want),
            "{rcpt}: {logs}"
        );
    }
}

/// A node that starts while the database is away starts on the settings it last applied,
/// never on the defaults; a node that never had any refuses to start.
#[tokio::test]
async fn a_node_never_starts_on_defaults_when_the_database_is_away() {
    let Some(pg) = Postgres::start() else { return };
    let sink = Sink::start(SinkOptions::default()).await;
    let config = node_config(&pg, &sink, "a");
    let a = TestServer::start_with(&config).await;
    let (status, _) = policy_row(&a, "partner.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK);
    let (_, dir) = a.stop().await;
    pg.down();
    let a = TestServer::start_in(dir, &config).await;
    until_applied(&a, "partner.example", "encrypt", Duration::from_secs(1)).await;

    let fresh = tempfile::tempdir().unwrap();
    let mut cfg = test_config(fresh.path(), &config);
    cfg.smtp.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    let err = postern::prepare(cfg)
        .err()
        .expect("no copy, no database: no start");
    let text = format!("{err:#}");
    assert!(text.contains("refusing to start on defaults"), "{text}");
}

/// The TLS-RPT counts are the cluster's, and one node sends each report: a day with a
/// delivery made by each node gives one report that counts both.
#[tokio::test]
async fn one_node_reports_the_clusters_tls_rpt_counts() {
    use common::published::{Lab, policy, zone};
    let Some(pg) = Postgres::start() else { return };
    let lab = Lab::new(&policy("enforce", "mx.good.example")).await;
    lab.zone.set(zone("20261201").txt(
        "_smtp._tls.good.example",
        "v=TLSRPTv1; rua=https://rpt.good.example/v1/tlsrpt",
    ));
    let mut sink = lab.sink(&["mx.good.example"]).await;
    let shared = |node: &str| {
        format!(
            "{}[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\nnode = \"{node}\"\n",
            lab.config(&sink),
            pg.url()
        )
    };
    let mut a = TestServer::start_with(&shared("a")).await;
    let mut b = TestServer::start_with(&shared("b")).await;
    for (node, rcpt) in [(&mut a, "x@good.example"), (&mut b, "y@good.example")] {
        assert_eq!(relay(node, rcpt).await.status, "sent");
        sink.next(5).await.unwrap();
    }
    let now = postern::fsutil::unix_now();
    let day = postern::outbound::tls_report::day_name(now - now % 86_400);
    let (ok, out_a, err) = a.cli(&["tls-rpt", "send", "--day", &day]).await;
    assert!(ok, "{err}");
    let (ok, out_b, err) = b.cli(&["tls-rpt", "send", "--day", &day]).await;
    assert!(ok, "{err}");
    assert!(
        out_a.contains("good.example: sent to https://rpt.good.example/v1/tlsrpt"),
        "{out_a}"
    );
    assert!(
        out_b.contains("good.example: already sent to https://rpt.good.example/v1/tlsrpt"),
        "{out_b}"
    );
    let posts = lab.https.posts();
    assert_eq!(posts.len(), 1);
    let report = gunzip_json(&posts[0].body);
    assert_eq!(
        report["policies"][0]["summary"]["total-successful-session-count"], 2,
        "one delivery by each node: {report}"
    );
}

/// `postern node drain` with 1,000 queued messages: A refuses new mail and hands its whole
/// queue to B over SMTP with each message's envelope; every message reaches the sink through
/// B once, and A's spool is empty afterwards. No database is needed for this.
#[tokio::test]
async fn a_drained_node_hands_its_queue_to_a_peer() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    // A's route for partner.example refuses connections: its mail stays queued.
    let a = TestServer::start_with("[outbound.routes]\n\"partner.example\" = \"[127.0.0.1]:1\"\n")
        .await;
    let b = TestServer::start_with(&format!(
        "[outbound.routes]\n\"partner.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    const N: usize = 1000;
    let mut c = a.connect().await;
    c.ehlo().await;
    for i in 0..N {
        let r = c
            .send(
                "app@inside.example",
                &[&format!("u{i}@partner.example")],
                &message(&format!("drain {i}"), ""),
            )
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.cmd("QUIT").await;

    let (ok, out, err) = a
        .cli(&[
            "node",
            "drain",
            "--to",
            &b.smtp.to_string(),
            "--wait",
            "120",
        ])
        .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("drained: the queue is empty"), "{out}");
    let refused = SmtpClient::connect(a.smtp, None, None).await;
    assert_eq!(refused.greeting.code, 421, "{:?}", refused.greeting);
    assert!(
        refused.greeting.lines[0].contains("being drained"),
        "{:?}",
        refused.greeting
    );

    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let got = sink.next(60).await.expect("every message reaches the sink");
        assert_eq!(got.sender, "app@inside.example");
        assert!(
            seen.insert(got.recipients[0].clone()),
            "twice: {:?}",
            got.recipients
        );
    }
    // B's queue empties; nothing more arrives.
    let start = Instant::now();
    loop {
        let (_, s) = b.api_json(Method::GET, "/api/v1/node", None).await;
        if s["queued"] == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sink.try_next().is_none(), "a message arrived twice");
    let (_, s) = a.api_json(Method::GET, "/api/v1/node", None).await;
    assert_eq!(
        (s["draining"].clone(), s["queued"].clone()),
        (serde_json::json!(true), serde_json::json!(0))
    );
    let (spool, _dir) = a.stop().await;
    assert!(spooled(&spool).is_empty(), "A's spool is empty");
}

/// TLS to the database is the default (a URL without `sslmode=disable`), verified against
/// the trust roots: here the test CA in `[tls] extra_roots`. A server whose certificate does
/// not verify is not used.
#[tokio::test]
async fn the_database_connection_is_tls_and_verified() {
    let ca = common::sink::TestCa::new();
    let Some(pg) = Postgres::start_tls(&ca.leaf(&["127.0.0.1"])) else {
        return;
    };
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.pem).unwrap();
    let config = |roots: &str| {
        format!(
            "[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\n[tls]\nextra_roots = [{roots}]\n",
            pg.url_tls()
        )
    };
    let trusted = config(&format!("\"{}\"", ca_file.path().display()));
    let a = TestServer::start_with(&trusted).await;
    let (status, body) = policy_row(&a, "partner.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without the CA the certificate does not verify: no connection, so no start (this node
    // has no copy of its own yet).
    let fresh = tempfile::tempdir().unwrap();
    let mut cfg = test_config(fresh.path(), &config(""));
    cfg.smtp.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    let err = postern::prepare(cfg)
        .err()
        .expect("an unverified database is not used");
    let text = format!("{err:#}");
    assert!(text.contains("settings database unreachable"), "{text}");
}

/// Wait until `node`'s node list holds every one of `names`, each answering.
async fn until_listed(node: &TestServer, names: &[&str]) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (status, list) = node
            .api_json(Method::GET, "/api/v1/cluster/nodes", None)
            .await;
        let answering = |n: &&str| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|x| x["name"] == *n && x["answered"] == true))
        };
        if status == StatusCode::OK && names.iter().all(answering) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{names:?} not all listed and answering: {status} {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance 1's queue: a message queued on A is seen from B (its Queue listing, `postern
/// queue list` run against B) naming node a, and retried from B: A delivers it. A node that
/// has stopped is listed as not answering, never left out; the nodes' credential opens a
/// node's own queue only.
#[tokio::test]
async fn a_message_queued_on_one_node_is_seen_and_retried_from_another() {
    let Some(pg) = Postgres::start() else { return };
    let mut sink = Sink::start(SinkOptions {
        defer_first: 1,
        ..SinkOptions::default()
    })
    .await;
    // Retries an hour apart: only the retry asked for from B delivers within the test.
    let config = |node: &str| {
        format!(
            "{}[outbound]\nfirst_retry_secs = 3600\n",
            node_config(&pg, &sink, node)
        )
    };
    let mut a = TestServer::start_with(&config("a")).await;
    let b = TestServer::start_with(&config("b")).await;
    let c = TestServer::start_with(&config("c")).await;
    until_listed(&b, &["a", "b", "c"]).await;

    let mut client = a.connect().await;
    client.ehlo().await;
    let id = queue_id(
        &client
            .send(
                "app@inside.example",
                &["x@partner.example"],
                &message("seen from b", ""),
            )
            .await,
    );
    let first = a.next_event_for("x@partner.example", 20).await;
    assert_eq!(first.status, "deferred", "{}", first.reply);
    c.stop().await;

    // B's listing: A's message, named with its node; C said to be stopped.
    let (status, listing) = b
        .api_json(Method::GET, "/api/v1/cluster/queue?state=deferred", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listing}");
    assert_eq!(
        (items[0]["id"].as_str(), items[0]["node"].as_str()),
        (Some(id.as_str()), Some("a"))
    );
    assert_eq!(listing["counts"]["deferred"], 1, "{listing}");
    let nodes = listing["nodes"].as_array().unwrap();
    let node = |n: &str| nodes.iter().find(|x| x["name"] == n).cloned().unwrap();
    assert_eq!(node("a")["answered"], true, "{listing}");
    assert_eq!(node("b")["this"], true, "{listing}");
    assert_eq!(node("c")["answered"], false, "{listing}");
    let why = node("c")["error"].as_str().unwrap().to_string();
    assert!(why.starts_with("stopped "), "{why}");

    // `postern queue list` against B: the ID with its node; C named on stderr, and an exit
    // status that says the list is incomplete.
    let (ok, out, err) = b.cli(&["queue", "list"]).await;
    assert!(out.contains(&format!("{id}@a ")), "{out}");
    assert!(out.contains("451 4.3.0 try again later"), "{out}");
    assert!(
        err.contains("node c (") && err.contains("did not answer: stopped "),
        "{err}"
    );
    assert!(!ok, "an incomplete listing is not a success");
    let (ok, out, err) = b.cli(&["queue", "show", &id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("node: a"), "{out}");
    assert!(out.contains("Subject: seen from b"), "{out}");

    // Retried from B: A delivers it now (its own retry is an hour away).
    let (ok, _, err) = b.cli(&["queue", "retry", &id]).await;
    assert!(ok, "{err}");
    assert!(err.contains(&format!("{id}@a: retry")), "{err}");
    let got = sink.next(20).await.expect("retried from b, delivered by a");
    assert!(got.data.ends_with(&message("seen from b", "")));
    let sent = a.next_event_for("x@partner.example", 20).await;
    assert_eq!(sent.status, "sent", "{}", sent.reply);
    let (ok, out, _) = b.cli(&["queue", "list"]).await;
    assert_eq!(out, "Mail queue is empty\n");
    assert!(!ok, "c still does not answer");

    // An ID no node holds, and a node that is not in the list: precise errors.
    let (status, body) = b
        .api_json(Method::POST, "/api/v1/cluster/queue/ABCDEF/hold", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = b
        .api_json(Method::POST, "/api/v1/cluster/queue/ABCDEF@zz/hold", None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("node")),
        "{body}"
    );

    // The nodes' credential: a node's own queue, nothing else, and never passed on.
    let token = postern::settings::postgres::Sealer::from_hex(KEY)
        .unwrap()
        .cluster_token();
    let pinned = postern::admin::client::ApiClient::pinned(a.api, &token, a.system_cert());
    let (status, _) = pinned
        .request(Method::GET, "/api/v1/queue/page", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    for path in ["/api/v1/settings", "/api/v1/cluster/queue"] {
        let (status, _) = pinned.request(Method::GET, path, None).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }

    // A node taken out of service leaves the list; then the listing is whole again.
    let (ok, out, err) = b.cli(&["node", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("b (this node)") && out.contains("c  "),
        "{out}"
    );
    let (ok, _, err) = b.cli(&["node", "forget", "c"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = b.cli(&["queue", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "Mail queue is empty\n");

    // The database away: the nodes known before are asked all the same, and the listing
    // says the node list is an old one (the message has no route: it stays queued).
    let mut client = a.connect().await;
    client.ehlo().await;
    let second = queue_id(
        &client
            .send(
                "app@inside.example",
                &["y@unrouted.example"],
                &message("db away", ""),
            )
            .await,
    );
    pg.down();
    let (status, listing) = b.api_json(Method::GET, "/api/v1/cluster/queue", None).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    assert!(listing["registry_error"].is_string(), "{listing}");
    let ids: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, [second.as_str()], "{listing}");
    let (_, _, err) = b.cli(&["queue", "list"]).await;
    assert!(
        err.contains("postern: the node list cannot be read ("),
        "{err}"
    );
    pg.up();
}

/// Somebody who can write to the database but has no settings key cannot add a node of his
/// own: its entry cannot be opened, so it is listed as not answering and never contacted
/// (the nodes' credential never reaches it).
#[tokio::test]
async fn a_node_entry_sealed_with_another_key_is_never_contacted() {
    let Some(pg) = Postgres::start() else { return };
    let sink = Sink::start(SinkOptions::default()).await;
    let b = TestServer::start_with(&node_config(&pg, &sink, "b")).await;
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let url = pg.url();
    tokio::task::spawn_blocking(move || {
        postern::tls::install_provider();
        let other = postern::settings::postgres::Sealer::from_hex(&"ee".repeat(32)).unwrap();
        let tls =
            postern::tls::webpki_client_config(postern::tls::trust_roots(&[]).unwrap()).unwrap();
        let rogue = postern::settings::nodes::Registry::new(&url, other, "rogue", tls);
        rogue.beat(Some(trap_addr), "", false).unwrap();
    })
    .await
    .unwrap();

    let (status, listing) = b.api_json(Method::GET, "/api/v1/cluster/queue", None).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let rogue = listing["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "rogue")
        .cloned()
        .unwrap_or_else(|| panic!("the entry is listed, not left out: {listing}"));
    assert_eq!(rogue["answered"], false);
    assert_eq!(rogue["api"], serde_json::Value::Null, "{rogue}");
    assert_eq!(
        rogue["error"],
        "its entry in the node list is sealed with another settings key"
    );
    // Nothing connected to the address the entry named: a connection made while B answered
    // would be waiting in the listener's backlog now, and one poll of accept would take it.
    use futures_util::FutureExt;
    assert!(
        trap.accept().now_or_never().is_none(),
        "the rogue entry was contacted"
    );
}
