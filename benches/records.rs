//! Searching the delivery records the Logs page reads: 1,000,000 records in the store
//! (`data/log/records.redb`), filled through its own `insert`, then one recipient's records
//! found by its index. `cargo bench --bench records`. Target (issue 15): under 50 ms.
//! Issue 28: a recipient domain and `.domain` (their index), `Host offered STARTTLS:
//! [host]` (the host's index), and a text only the lines' own words make up, which matches
//! nothing (the worst case: every record of the 200,000 walked is read and its lines made).

use criterion::{Criterion, criterion_group, criterion_main};
use postern::events::Delivery;
use postern::events::store::{Retention, Search, Store};
use std::hint::black_box;

const RECORDS: u64 = 1_000_000;

fn record(i: u64) -> Delivery {
    serde_json::from_value(serde_json::json!({
        "unix_time": 1_790_000_000 + i / 20,
        "queue_id": format!("{:013X}", 0x6600_0000_0000u64 + i),
        "sender": format!("app{}@inside.example", i % 50),
        "recipient": format!("user{}@d{}.example", i % 100_000, i % 5_000),
        "relay": format!("mx{}.d{}.example[192.0.2.{}]:25", i % 2, i % 5_000, i % 250),
        "delay": 0.4, "delays": [0.01, 0.0, 0.2, 0.19], "dsn": "2.0.0", "status": "sent",
        "reply": "250 2.0.0 Ok: queued as 4XyZ", "starttls_offered": true,
        "tls": {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "bits": 256},
        "verified_name": null, "policy_level": "may", "policy_source": "global"
    }))
    .expect("a valid record")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_secs: u64::MAX / 2,
        max_records: u64::MAX,
    };
    let store = Store::open(&dir.path().join("records.redb"), retention).unwrap();
    let started = std::time::Instant::now();
    let batch = 10_000;
    for b in 0..RECORDS / batch {
        let records: Vec<Delivery> = (b * batch..(b + 1) * batch).map(record).collect();
        store.insert(&records, b + 1 == RECORDS / batch).unwrap();
    }
    eprintln!(
        "filled {RECORDS} records in {:.1} s ({} bytes on disk)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(dir.path().join("records.redb"))
            .unwrap()
            .len()
    );
    assert_eq!(store.len().unwrap(), RECORDS);
    let one = |q: Search| {
        let found = store.search(&q).unwrap();
        assert!(!found.records.is_empty());
        found
    };
    let by_recipient = Search {
        recipient: Some("user4242@d4242.example".into()),
        limit: 50,
        ..Search::default()
    };
    assert_eq!(
        one(by_recipient.clone()).records.len(),
        10,
        "every 100,000th record"
    );
    c.bench_function("records: one recipient among 1,000,000", |b| {
        b.iter(|| black_box(store.search(black_box(&by_recipient)).unwrap()))
    });
    let by_host = Search {
        host: Some("mx1.d17.example".into()),
        limit: 50,
        ..Search::default()
    };
    c.bench_function("records: a page of one host's records", |b| {
        b.iter(|| black_box(store.search(black_box(&by_host)).unwrap()))
    });
    let newest = Search {
        limit: 50,
        ..Search::default()
    };
    c.bench_function("records: the newest page, no filter", |b| {
        b.iter(|| black_box(store.search(black_box(&newest)).unwrap()))
    });
    let text = Search {
        text: Some("user99999@".into()),
        limit: 50,
        ..Search::default()
    };
    c.bench_function("records: free text, scan bounded at 200,000", |b| {
        b.iter(|| black_box(store.search(black_box(&text)).unwrap()))
    });
    let search = |recipient: Option<&str>, text: Option<&str>| Search {
        recipient: recipient.map(str::to_string),
        text: text.map(str::to_string),
        limit: 50,
        ..Search::default()
    };
    let domain = search(Some("d4242.example"), None);
    assert_eq!(one(domain.clone()).records.len(), 50, "200 records, a page");
    c.bench_function("records: a page of one recipient domain's records", |b| {
        b.iter(|| black_box(store.search(black_box(&domain)).unwrap()))
    });
    let subdomains = search(Some(".d4242.example"), None);
    assert_eq!(one(subdomains.clone()).records.len(), 50);
    c.bench_function("records: a page of a .domain's records", |b| {
        b.iter(|| black_box(store.search(black_box(&subdomains)).unwrap()))
    });
    let offered = search(None, Some("Host offered STARTTLS: [mx1.d17.example]"));
    assert_eq!(one(offered.clone()).records.len(), 50);
    c.bench_function("records: Host offered STARTTLS: [host], a page", |b| {
        b.iter(|| black_box(store.search(black_box(&offered)).unwrap()))
    });
    let nowhere = search(None, Some("STARTTLS not offered"));
    let found = store.search(&nowhere).unwrap();
    assert!(found.records.is_empty() && found.stopped_early);
    c.bench_function("records: line words only, no match, 200,000 walked", |b| {
        b.iter(|| black_box(store.search(black_box(&nowhere)).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
