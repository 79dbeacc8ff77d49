//! The embedded store's received half: its indexes, `received_from`, counters, retention.

use super::*;
use crate::events::received::{CertFacts, Refusal, Trust};
use crate::events::records::RefusalKey;
use crate::tls::TlsInfo;

/// Record `i`: one minute apart; senders of three domains (`d0.example`, `eu.d1.example`,
/// `d2.example`), clients `192.0.2.(i % 8)` and every fifth from `2001:db8::(i % 3)`; the
/// odd ones over TLS.
fn record(i: u64) -> Received {
    let domain = ["d0.example", "eu.d1.example", "d2.example"][(i % 3) as usize];
    let client = match i % 5 {
        4 => format!("2001:db8::{}", i % 3),
        _ => format!("192.0.2.{}", i % 8),
    };
    Received {
        unix_time: 1_000_000 + i * 60,
        queue_id: format!("{:X}", 0xA000 + i),
        node: None,
        client_name: "unknown".into(),
        client_addr: client,
        helo: format!("mx.{domain}"),
        sender: format!("s{}@{domain}", i % 2),
        recipients: 1,
        size: 1000 + i,
        trust: Trust::None,
        tls: (i % 2 == 1).then(|| TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            trusted: None,
            key_exchange: Some("X25519".into()),
            ..Default::default()
        }),
        client_cert: (i == 7).then(|| CertFacts {
            subject: "CN=mx.d1.example".into(),
            issuer: "CN=CA".into(),
            names: vec!["mx.d1.example".into()],
            verified: true,
        }),
    }
}

fn filled(max_records: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_secs: 365 * 86_400,
        max_records,
    };
    let s = Store::open(&dir.path().join("r.redb"), retention).unwrap();
    let batch: Vec<Received> = (0..60).map(record).collect();
    s.insert_received(&batch[..30], false).unwrap();
    s.insert_received(&batch[30..], true).unwrap();
    (dir, s)
}

fn ids(f: &Found<Received>) -> Vec<u64> {
    f.records
        .iter()
        .map(|r| u64::from_str_radix(&r.record.queue_id, 16).unwrap() - 0xA000)
        .collect()
}

fn search(s: &Store, f: impl FnOnce(&mut ReceivedSearch)) -> Vec<u64> {
    let mut q = ReceivedSearch {
        limit: 4,
        ..ReceivedSearch::default()
    };
    f(&mut q);
    ids(&s.search_received(&q).unwrap())
}

#[test]
fn each_field_finds_its_records_newest_first_a_page_at_a_time() {
    let (_d, s) = filled(1000);
    assert_eq!(s.received_len().unwrap(), 60);
    assert_eq!(s.len().unwrap(), 0, "no delivery record among them");
    let sender = |v: &str| {
        let v = v.to_string();
        move |q: &mut ReceivedSearch| q.sender = Some(v)
    };
    assert_eq!(search(&s, sender("S1@eu.D1.example")), [55, 49, 43, 37]);
    assert_eq!(search(&s, sender("d1.example")), Vec::<u64>::new());
    assert_eq!(search(&s, sender(".d1.example")), [58, 55, 52, 49]);
    assert_eq!(search(&s, sender("@d0.example")), [57, 54, 51, 48]);
    let client = |v: &str| {
        let v = v.to_string();
        move |q: &mut ReceivedSearch| q.client = Some(v)
    };
    assert_eq!(search(&s, client("192.0.2.3")), [51, 43, 35, 27]);
    assert_eq!(search(&s, client("192.0.2.0/30")), [58, 57, 56, 51]);
    assert_eq!(search(&s, client("2001:db8::/32")), [59, 54, 49, 44]);
    assert_eq!(search(&s, client("2001:db8::2")), [59, 44, 29, 14]);
    assert_eq!(search(&s, |q| q.queue_id = Some("a02a".into())), [42]);
    assert_eq!(search(&s, |q| q.plaintext_only = true), [58, 56, 54, 52]);
    let both = search(&s, |q| {
        q.plaintext_only = true;
        q.sender = Some(".d1.example".into());
    });
    assert_eq!(both, [58, 52, 46, 40]);
    assert_eq!(
        search(&s, |_| {}),
        [59, 58, 57, 56],
        "nothing given: newest"
    );
    let range = search(&s, |q| {
        q.since = Some(1_000_000 + 10 * 60);
        q.until = Some(1_000_000 + 12 * 60);
    });
    assert_eq!(range, [12, 11, 10]);
    // A time range alone starts at its end: the newer records are not read.
    let q = ReceivedSearch {
        until: Some(1_000_000 + 5 * 60 + 30),
        limit: 4,
        ..ReceivedSearch::default()
    };
    let found = s.search_received(&q).unwrap();
    assert_eq!((ids(&found), found.scanned), (vec![5, 4, 3, 2], 4));
    let before_all = ReceivedSearch {
        until: Some(999_999),
        ..q
    };
    assert!(s.search_received(&before_all).unwrap().records.is_empty());
}

#[test]
fn a_page_goes_on_from_its_cursor_and_reads_back_whole() {
    let (_d, s) = filled(1000);
    let first = s
        .search_received(&ReceivedSearch {
            sender: Some(".d1.example".into()),
            limit: 3,
            ..ReceivedSearch::default()
        })
        .unwrap();
    let next = s
        .search_received(&ReceivedSearch {
            sender: Some(".d1.example".into()),
            limit: 3,
            before: first.next,
            ..ReceivedSearch::default()
        })
        .unwrap();
    assert_eq!(
        (ids(&first), ids(&next)),
        (vec![58, 55, 52], vec![49, 46, 43])
    );
    let client = |v: &str| search(&s, |q| q.client = Some(v.into()));
    assert_eq!(client("no address"), Vec::<u64>::new());
    let facts = s
        .search_received(&ReceivedSearch {
            queue_id: Some("A007".into()),
            limit: 1,
            ..ReceivedSearch::default()
        })
        .unwrap();
    assert_eq!(facts.records[0].record, record(7), "read back whole");
}

#[test]
fn received_from_a_domain_or_a_network_since_a_time_at_most_max() {
    let (_d, s) = filled(1000);
    let domain = |d: &str, subdomains| ReceivedFrom::Domain {
        domain: d.into(),
        subdomains,
    };
    let queue = |v: &[Received]| -> Vec<u64> {
        v.iter()
            .map(|r| u64::from_str_radix(&r.queue_id, 16).unwrap() - 0xA000)
            .collect()
    };
    let since = 1_000_000 + 40 * 60;
    let (got, more) = s
        .received_from(&domain("d1.example", true), since, 100)
        .unwrap();
    assert_eq!(
        (queue(&got), more),
        (vec![58, 55, 52, 49, 46, 43, 40], false)
    );
    let (got, more) = s
        .received_from(&domain("d1.example", false), since, 100)
        .unwrap();
    assert_eq!(
        (got.len(), more),
        (0, false),
        "eu.d1.example is not d1.example"
    );
    let (got, more) = s
        .received_from(&domain(".d1.example", true), since, 3)
        .unwrap();
    assert_eq!((queue(&got), more), (vec![58, 55, 52], true));
    let net = ReceivedFrom::Network("192.0.2.4/31".parse().unwrap());
    let (got, more) = s.received_from(&net, since, 100).unwrap();
    assert_eq!((queue(&got), more), (vec![53, 52, 45], false));
    let everyone = ReceivedFrom::Network("0.0.0.0/0".parse().unwrap());
    let (got, _) = s.received_from(&everyone, since, 1000).unwrap();
    assert_eq!(got.len(), 16, "the IPv4 clients of minutes 40..59");
}

#[test]
fn counters_of_tls_per_sender_domain_and_of_refusals() {
    let (_d, s) = filled(1000);
    let share = s.received_tls(0).unwrap();
    assert_eq!(
        share,
        [
            ("d0.example".to_string(), 20, 10),
            ("d2.example".to_string(), 20, 10),
            ("eu.d1.example".to_string(), 20, 10),
        ]
    );
    let later = s.received_tls(1_000_000 + 3600).unwrap();
    assert_eq!(
        later.iter().map(|(_, n, _)| n).sum::<u64>(),
        0,
        "all in the first hour"
    );
    let day = 86_400 * 20;
    let keys: Vec<RefusalKey> = vec![
        (
            day,
            "192.0.2.9".into(),
            "partner.example".into(),
            Refusal::PlaintextRefused,
        ),
        (day, "192.0.2.9".into(), "".into(), Refusal::RelayDenied),
    ];
    let batch = Batch {
        refused: vec![(&keys[0], 3), (&keys[1], 1)],
        ..Batch::default()
    };
    s.insert_batch(&batch, true).unwrap();
    s.insert_batch(&batch, true).unwrap();
    let counted = s.refusals(day + 5).unwrap();
    assert_eq!(counted.len(), 2);
    assert_eq!(
        (
            counted[0].count,
            counted[0].reason,
            counted[0].sender_domain.as_str()
        ),
        (6, Refusal::PlaintextRefused, "partner.example")
    );
    assert_eq!(
        (counted[1].count, counted[1].reason),
        (2, Refusal::RelayDenied)
    );
    assert!(s.refusals(day + 86_400).unwrap().is_empty());
}

#[test]
fn retention_drops_the_oldest_received_and_their_index_entries() {
    let (_d, s) = filled(50);
    assert_eq!(s.prune(1_000_000).unwrap(), 10);
    assert_eq!(s.received_len().unwrap(), 50);
    assert_eq!(
        search(&s, |q| q.queue_id = Some("A009".into())),
        Vec::<u64>::new()
    );
    assert_eq!(
        search(&s, |q| q.client = Some("192.0.2.3".into())),
        [51, 43, 35, 27]
    );
    let now = 1_000_000 + 55 * 60 + 365 * 86_400;
    assert_eq!(s.prune(now).unwrap(), 45);
    assert_eq!(search(&s, |q| q.plaintext_only = true), [58, 56]);
    assert_eq!(
        search(&s, |q| q.sender = Some(".d1.example".into())),
        [58, 55]
    );
}

/// Deliveries and received records of one batch go in together.
#[test]
fn one_batch_holds_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_secs: 365 * 86_400,
        max_records: 100,
    };
    let s = Store::open(&dir.path().join("r.redb"), retention).unwrap();
    let d: Delivery = serde_json::from_value(serde_json::json!({
        "unix_time": 1_000_000, "queue_id": "A001", "sender": "s@x.example",
        "recipient": "r@y.example", "relay": "none", "delay": 0.0, "delays": [0.0, 0.0, 0.0, 0.0],
        "dsn": "2.0.0", "status": "sent", "reply": "250 ok", "starttls_offered": false,
        "tls": null, "verified_name": null, "policy_level": "may", "policy_source": "global"
    }))
    .unwrap();
    let r = record(1);
    let (dj, rj) = (
        serde_json::to_vec(&d).unwrap(),
        serde_json::to_vec(&r).unwrap(),
    );
    let batch = Batch {
        deliveries: vec![(&d, &dj[..])],
        received: vec![(&r, &rj[..])],
        refused: Vec::new(),
    };
    s.insert_batch(&batch, true).unwrap();
    assert_eq!((s.len().unwrap(), s.received_len().unwrap()), (1, 1));
}
