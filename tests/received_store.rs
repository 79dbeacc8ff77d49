//! Received records (issue 31) the same on both record stores: the embedded one
//! (`data/log/records.redb`) and the PostgreSQL tables several nodes share (a real
//! PostgreSQL, `tests/common/postgres.rs`): the Received view's searches, `received_from`
//! (what an inbound TLS row's impact preview reads), the TLS share per sender domain and
//! the refusal counts.

mod common;

use postern::events::received::{
    Received, ReceivedFrom, ReceivedSearch, Refusal, Trust, client_key,
};
use postern::events::records::Batch;
use postern::events::store::{Retention, Store};
use postern::tls::TlsInfo;

/// Twelve receipts, oldest first (`R01`..`R12`), ten seconds apart.
fn records(now: u64) -> Vec<Received> {
    let rows = [
        // (sender, client, TLS)
        ("ceo@partner.example", "192.0.2.10", true),
        ("ops@eu.partner.example", "192.0.2.11", false),
        ("ceo@mypartner.example", "198.51.100.1", false),
        ("ceo@partner.example", "192.0.2.10", false),
        ("a@plain.example", "2001:db8::25", false),
        ("", "2001:db8::26", true),
        ("b@partner.example", "192.0.2.200", true),
        ("d@other.example", "203.0.113.9", true),
        ("e@other.example", "203.0.113.9", true),
        ("f@EU.partner.example", "192.0.2.12", true),
        ("g@other.example", "203.0.113.9", false),
        ("h@other.example", "::ffff:203.0.113.10", true),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, &(sender, client, tls))| Received {
            unix_time: now - 600 + i as u64 * 10,
            queue_id: format!("R{:02}", i + 1),
            node: None,
            client_name: "unknown".into(),
            client_addr: client
                .parse::<std::net::IpAddr>()
                .unwrap()
                .to_canonical()
                .to_string(),
            helo: "mx.example".into(),
            sender: sender.into(),
            recipients: 1,
            size: 2048,
            trust: if i == 9 {
                Trust::AuthUser { user: "app".into() }
            } else {
                Trust::None
            },
            tls: tls.then(|| TlsInfo {
                protocol: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                bits: 128,
                trusted: None,
                key_exchange: Some("X25519".into()),
                ..Default::default()
            }),
            client_cert: None,
        })
        .collect()
}

fn searches() -> Vec<(&'static str, ReceivedSearch, Vec<&'static str>)> {
    let s = |f: fn(&mut ReceivedSearch)| {
        let mut q = ReceivedSearch {
            limit: 50,
            ..ReceivedSearch::default()
        };
        f(&mut q);
        q
    };
    vec![
        (
            "a sender domain",
            s(|q| q.sender = Some("partner.example".into())),
            vec!["R07", "R04", "R01"],
        ),
        (
            "a .domain: the domain and its subdomains, any case",
            s(|q| q.sender = Some(".Partner.example".into())),
            vec!["R10", "R07", "R04", "R02", "R01"],
        ),
        (
            "an address",
            s(|q| q.sender = Some("CEO@partner.example".into())),
            vec!["R04", "R01"],
        ),
        (
            "a client address",
            s(|q| q.client = Some("203.0.113.9".into())),
            vec!["R11", "R09", "R08"],
        ),
        (
            "a client network, an IPv4-mapped address in it",
            s(|q| q.client = Some("203.0.113.0/24".into())),
            vec!["R12", "R11", "R09", "R08"],
        ),
        (
            "an IPv6 network",
            s(|q| q.client = Some("2001:db8::/64".into())),
            vec!["R06", "R05"],
        ),
        (
            "a queue ID",
            s(|q| q.queue_id = Some("r03".into())),
            vec!["R03"],
        ),
        (
            "plaintext only",
            s(|q| q.plaintext_only = true),
            vec!["R11", "R05", "R04", "R03", "R02"],
        ),
        (
            "plaintext from a .domain",
            s(|q| {
                q.plaintext_only = true;
                q.sender = Some(".partner.example".into());
            }),
            vec!["R04", "R02"],
        ),
    ]
}

fn ids(records: &[Received]) -> Vec<String> {
    records.iter().map(|r| r.queue_id.clone()).collect()
}

fn every_search_finds_the_same(store: &Store, backend: &str, now: u64) {
    for (what, search, want) in searches() {
        let found = store.search_received(&search).unwrap();
        let got: Vec<Received> = found.records.into_iter().map(|s| s.record).collect();
        assert_eq!(ids(&got), want, "{backend}: {what}");
    }
    // Nothing given: the newest, a page at a time.
    let page = |before| ReceivedSearch {
        before,
        limit: 5,
        ..ReceivedSearch::default()
    };
    let first = store.search_received(&page(None)).unwrap();
    let second = store.search_received(&page(first.next)).unwrap();
    let third = store.search_received(&page(second.next)).unwrap();
    let got = |f: &postern::events::store::Found<Received>| {
        f.records
            .iter()
            .map(|s| s.record.queue_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got(&first),
        ["R12", "R11", "R10", "R09", "R08"],
        "{backend}"
    );
    assert_eq!(
        got(&second),
        ["R07", "R06", "R05", "R04", "R03"],
        "{backend}"
    );
    assert_eq!(
        (got(&third), third.next),
        (vec!["R02".into(), "R01".into()], None)
    );
    // What an inbound TLS row would read for its impact preview.
    let partner = ReceivedFrom::Domain {
        domain: "partner.example".into(),
        subdomains: true,
    };
    let (all, more) = store.received_from(&partner, now - 3600, 10).unwrap();
    assert_eq!(
        (ids(&all), more),
        (
            vec![
                "R10".into(),
                "R07".into(),
                "R04".into(),
                "R02".into(),
                "R01".into()
            ],
            false
        ),
        "{backend}"
    );
    let (two, more) = store.received_from(&partner, now - 3600, 2).unwrap();
    assert_eq!(
        (ids(&two), more),
        (vec!["R10".into(), "R07".into()], true),
        "{backend}"
    );
    let (recent, _) = store.received_from(&partner, now - 600 + 25, 10).unwrap();
    assert_eq!(ids(&recent), ["R10", "R07", "R04"], "{backend}: since");
    let net = ReceivedFrom::Network("192.0.2.0/25".parse().unwrap());
    let (got_net, _) = store.received_from(&net, now - 3600, 10).unwrap();
    assert_eq!(ids(&got_net), ["R10", "R04", "R02", "R01"], "{backend}");
    // The whole record comes back.
    let r10 = &all[0];
    assert_eq!(r10.trust, Trust::AuthUser { user: "app".into() });
    assert_eq!(
        r10.tls.as_ref().unwrap().key_exchange.as_deref(),
        Some("X25519")
    );
    // The TLS share per sender domain, busiest first.
    let share = store.received_tls(now - now % 3600 - 3600).unwrap();
    let other = share.iter().find(|(d, _, _)| d == "other.example").unwrap();
    assert_eq!(other, &("other.example".to_string(), 4, 3), "{backend}");
    assert_eq!(share[0].0, "other.example", "{backend}: the busiest first");
}

fn retention() -> Retention {
    Retention {
        max_age_secs: 365 * 86_400,
        max_records: 1_000_000,
    }
}

fn refusals_are_counted(store: &Store, backend: &str, now: u64) {
    let day = now - now % 86_400;
    let keys = [
        (
            day,
            "192.0.2.66".to_string(),
            "partner.example".to_string(),
            Refusal::PlaintextRefused,
        ),
        (
            day,
            "192.0.2.67".to_string(),
            String::new(),
            Refusal::RelayDenied,
        ),
    ];
    for _ in 0..2 {
        let batch = Batch {
            refused: vec![(&keys[0], 4), (&keys[1], 1)],
            ..Batch::default()
        };
        store.insert_batch(&batch, true).unwrap();
    }
    let counted = store.refusals(now).unwrap();
    let found: Vec<(String, String, Refusal, u64)> = counted
        .iter()
        .map(|c| (c.client.clone(), c.sender_domain.clone(), c.reason, c.count))
        .collect();
    assert_eq!(
        found,
        [
            (
                "192.0.2.66".into(),
                "partner.example".into(),
                Refusal::PlaintextRefused,
                8
            ),
            ("192.0.2.67".into(), String::new(), Refusal::RelayDenied, 2),
        ],
        "{backend}"
    );
}

#[test]
fn the_embedded_store_keeps_and_finds_received_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("records.redb"), retention()).unwrap();
    let now = postern::fsutil::unix_now();
    let all = records(now);
    store.insert_received(&all[..4], false).unwrap();
    store.insert_received(&all[4..], true).unwrap();
    assert_eq!(store.received_len().unwrap(), 12);
    every_search_finds_the_same(&store, "embedded", now);
    refusals_are_counted(&store, "embedded", now);
}

#[test]
fn the_shared_store_keeps_and_finds_the_same() {
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
    store.insert_received(&all, true).unwrap();
    assert!(
        !dir.path().join("log/shared-pending.jsonl").exists(),
        "stored in the database, not kept for later"
    );
    assert_eq!(store.received_len().unwrap(), 12);
    every_search_finds_the_same(&store, "PostgreSQL", now);
    refusals_are_counted(&store, "PostgreSQL", now);
    // Each record names the node that accepted it.
    let one = store
        .search_received(&ReceivedSearch {
            limit: 1,
            ..ReceivedSearch::default()
        })
        .unwrap();
    assert_eq!(one.records[0].record.node.as_deref(), Some("gw1"));
    assert_eq!(client_key("203.0.113.10".parse().unwrap()).len(), 16);
}

/// With the database away, received records and refusal counts wait on this node's disk
/// and are stored, once each, when it is back.
#[test]
fn the_shared_store_keeps_received_records_while_the_database_is_away() {
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    postern::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    let tls = postern::tls::webpki_client_config(postern::tls::trust_roots(&[]).unwrap()).unwrap();
    let store = Store::Shared(postern::events::shared::SharedRecords::open(
        &pg.url(),
        "gw1",
        retention(),
        (tls, dir.path()),
    ));
    let now = postern::fsutil::unix_now();
    let all = records(now);
    store.insert_received(&all[..2], true).unwrap();
    pg.down();
    store.insert_received(&all[2..], true).unwrap();
    let key = (
        now - now % 86_400,
        "192.0.2.66".to_string(),
        String::new(),
        Refusal::RelayDenied,
    );
    store
        .insert_batch(
            &Batch {
                refused: vec![(&key, 3)],
                ..Batch::default()
            },
            true,
        )
        .unwrap();
    assert!(dir.path().join("log/shared-pending.jsonl").exists());
    pg.up();
    let start = std::time::Instant::now();
    while dir.path().join("log/shared-pending.jsonl").exists() {
        assert!(start.elapsed().as_secs() < 20, "not replayed");
        store.tick();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(store.received_len().unwrap(), 12);
    let counted = store.refusals(now).unwrap();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0].count, 3);
}
