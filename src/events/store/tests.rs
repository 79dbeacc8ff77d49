//! The embedded store: its indexes, retention and counters.

use super::*;
use crate::tls::TlsInfo;

fn record(i: u64, rcpt: &str, relay: &str, tls: bool) -> Delivery {
    Delivery {
        unix_time: 1_000_000 + i * 60,
        queue_id: format!("Q{i:04}"),
        sender: format!("s{}@inside.example", i % 3),
        recipient: rcpt.into(),
        relay: relay.into(),
        delay: 0.1,
        delays: [0.0; 4],
        dsn: "2.0.0".into(),
        status: "sent".into(),
        reply: "250 2.0.0 Ok: queued as X".into(),
        starttls_offered: tls,
        tls: tls.then(|| TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            trusted: None,
            key_exchange: None,
            ..Default::default()
        }),
        verified_name: None,
        policy_level: "may".into(),
        policy_source: "global".into(),
        rule: None,
        tenant: None,
        hosts_tried: Vec::new(),
        tls_rpt: None,
        node: None,
    }
}

fn store(max_records: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_secs: 365 * 86_400,
        max_records,
    };
    let s = Store::open(&dir.path().join("r.redb"), retention).unwrap();
    (dir, s)
}

fn filled(max_records: u64) -> (tempfile::TempDir, Store) {
    let (dir, s) = store(max_records);
    let batch: Vec<Delivery> = (0..100)
        .map(|i| {
            let rcpt = format!("u{}@d{}.example", i % 10, i % 4);
            let relay = format!("mx{}.example[192.0.2.{}]:25", i % 2, i % 2);
            record(i, &rcpt, &relay, i % 2 == 0)
        })
        .collect();
    s.insert(&batch[..50], false).unwrap();
    s.insert(&batch[50..], true).unwrap();
    (dir, s)
}

fn ids(f: &Found) -> Vec<String> {
    f.records
        .iter()
        .map(|r| r.record.queue_id.clone())
        .collect()
}

#[test]
fn each_field_finds_its_records_newest_first_a_page_at_a_time() {
    let (_d, s) = filled(1000);
    assert_eq!(s.len().unwrap(), 100);
    let by = |q: Search| s.search(&Search { limit: 3, ..q }).unwrap();
    let f = by(Search {
        recipient: Some("U3@D3.example".into()),
        ..Search::default()
    });
    assert_eq!(
        ids(&f),
        ["Q0083", "Q0063", "Q0043"],
        "any case, newest first"
    );
    let next = s
        .search(&Search {
            recipient: Some("u3@d3.example".into()),
            before: f.next,
            limit: 3,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&next), ["Q0023", "Q0003"]);
    let f = by(Search {
        queue_id: Some("Q0042".into()),
        ..Search::default()
    });
    assert_eq!(ids(&f), ["Q0042"]);
    let f = by(Search {
        host: Some("MX1.example".into()),
        sender: Some("s0@inside.example".into()),
        ..Search::default()
    });
    assert_eq!(
        ids(&f),
        ["Q0099", "Q0093", "Q0087"],
        "two fields, both hold"
    );
    let f = by(Search {
        text: Some("Q005".into()),
        since: Some(1_000_000 + 52 * 60),
        ..Search::default()
    });
    assert_eq!(ids(&f), ["Q0059", "Q0058", "Q0057"]);
    let f = s
        .search(&Search {
            text: Some("q005".into()),
            until: Some(1_000_000 + 52 * 60),
            limit: 10,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&f), ["Q0052", "Q0051", "Q0050"]);
}

#[test]
fn retention_drops_the_oldest_and_their_index_entries() {
    let (_d, s) = filled(60);
    assert_eq!(s.prune(1_000_000).unwrap(), 40);
    assert_eq!(s.len().unwrap(), 60);
    let f = s
        .search(&Search {
            recipient: Some("u3@d3.example".into()),
            limit: 10,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&f), ["Q0083", "Q0063", "Q0043"], "Q0023 and Q0003 went");
    // By age: everything before minute 90 is older than a year at this `now`.
    let now = 1_000_000 + 90 * 60 + 365 * 86_400;
    assert_eq!(s.prune(now).unwrap(), 50);
    assert_eq!(s.len().unwrap(), 10);
}

#[test]
fn starttls_history_and_dashboard_counters() {
    let (_d, s) = filled(1000);
    let seen = s
        .starttls_history(
            &["mx0.example".into(), "mx9.example".into()],
            1_000_000 + 50 * 60,
        )
        .unwrap();
    assert_eq!(seen[0].connections, 25);
    assert_eq!(seen[0].offered, 25, "mx0 is the even records: all TLS");
    assert_eq!(seen[0].last, Some(1_000_000 + 98 * 60));
    assert_eq!(seen[1].connections, 0);
    let hourly = s.hourly(0).unwrap();
    let total: u64 = hourly.iter().map(|(_, _, n)| n).sum();
    assert_eq!(total, 100);
    let plain: u64 = hourly
        .iter()
        .filter(|(_, o, _)| *o == TlsOutcome::Plaintext)
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(plain, 50);
    let top = s.destinations(0).unwrap();
    assert_eq!(top.len(), 4);
    assert_eq!(top[0], ("d0.example".to_string(), 25, 25));
    assert_eq!(top[1], ("d1.example".to_string(), 25, 0));
}

#[test]
fn a_policy_refusal_is_its_own_outcome_and_other_failures_none() {
    let mut d = record(1, "a@b.example", "none", false);
    d.status = "deferred".into();
    d.dsn = "4.4.1".into();
    assert_eq!(TlsOutcome::of(&d), None);
    d.dsn = "4.7.4".into();
    assert_eq!(TlsOutcome::of(&d), Some(TlsOutcome::Refused));
    let mut v = record(1, "a@b.example", "mx.b.example[192.0.2.1]:25", true);
    assert_eq!(TlsOutcome::of(&v), Some(TlsOutcome::Encrypted));
    v.verified_name = Some("mx.b.example".into());
    assert_eq!(TlsOutcome::of(&v), Some(TlsOutcome::Verified));
}

/// A store written before the domain indexes existed gets them when it is opened.
#[test]
fn an_older_store_is_indexed_by_domain_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    let retention = Retention {
        max_age_secs: 365 * 86_400,
        max_records: 1000,
    };
    {
        let s = Store::open(&path, retention).unwrap();
        let batch: Vec<Delivery> = (0..10)
            .map(|i| record(i, &format!("u{i}@d{}.example", i % 2), "none", false))
            .collect();
        s.insert(&batch, true).unwrap();
    }
    {
        // As the store was before: no domain tables.
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        assert!(tx.delete_table(BY_RCPT_DOMAIN).unwrap());
        assert!(tx.delete_table(BY_SENDER_DOMAIN).unwrap());
        tx.commit().unwrap();
    }
    let s = Store::open(&path, retention).unwrap();
    let f = s
        .search(&Search {
            recipient: Some("d1.example".into()),
            sender: Some(".inside.example".into()),
            limit: 10,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&f), ["Q0009", "Q0007", "Q0005", "Q0003", "Q0001"]);
}

/// A `.domain` with more subdomains than are merged is found by walking the records.
#[test]
fn a_dot_domain_with_many_subdomains_is_still_found_newest_first() {
    let (_d, s) = store(10_000);
    let batch: Vec<Delivery> = (0..600)
        .map(|i| record(i, &format!("u@h{i}.big.example"), "none", false))
        .collect();
    s.insert(&batch, true).unwrap();
    let f = s
        .search(&Search {
            recipient: Some(".big.example".into()),
            limit: 3,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&f), ["Q0599", "Q0598", "Q0597"]);
    let few = s
        .search(&Search {
            recipient: Some(".h12.big.example".into()),
            limit: 3,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(ids(&few), ["Q0012"]);
}
