//! Searching the received records the Logs page's Received view reads (issue 31): 1,000,000
//! records in the store (`data/log/records.redb`), filled through its own `insert_received`
//! in batches of 10,000, then searched as the view and the impact preview of an inbound TLS
//! row search them, by the same method as the delivery records (benches/records.rs).
//! `cargo bench --bench received`. Target: within the delivery view's figures.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use postern::events::received::{Received, ReceivedFrom, ReceivedSearch, Trust};
use postern::events::store::{Retention, Store};
use postern::tls::TlsInfo;
use std::hint::black_box;

const RECORDS: u64 = 1_000_000;

/// 100,000 senders in 5,000 domains, 5,000 clients (`10.0.x.y`), three in four over TLS,
/// twenty a second.
fn record(i: u64) -> Received {
    let client = i % 5_000;
    Received {
        unix_time: 1_790_000_000 + i / 20,
        queue_id: format!("{:013X}", 0x6600_0000_0000u64 + i),
        node: None,
        client_name: "unknown".into(),
        client_addr: format!("10.0.{}.{}", client / 250, client % 250),
        helo: format!("mx{}.d{}.example", i % 2, i % 5_000),
        sender: format!("user{}@d{}.example", i % 100_000, i % 5_000),
        recipients: 1,
        size: 4_300,
        trust: Trust::None,
        tls: (!i.is_multiple_of(4)).then(|| TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            trusted: None,
            key_exchange: Some("X25519".into()),
        }),
        client_cert: None,
    }
}

fn page(f: impl FnOnce(&mut ReceivedSearch)) -> ReceivedSearch {
    let mut q = ReceivedSearch {
        limit: 50,
        ..ReceivedSearch::default()
    };
    f(&mut q);
    q
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
        let records: Vec<Received> = (b * batch..(b + 1) * batch).map(record).collect();
        store
            .insert_received(&records, b + 1 == RECORDS / batch)
            .unwrap();
    }
    eprintln!(
        "filled {RECORDS} received records in {:.1} s ({} bytes on disk)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(dir.path().join("records.redb"))
            .unwrap()
            .len()
    );
    assert_eq!(store.received_len().unwrap(), RECORDS);
    let searches = [
        (
            "received: one sender among 1,000,000",
            page(|q| q.sender = Some("user4242@d4242.example".into())),
            10,
        ),
        (
            "received: a page of one sender domain's records",
            page(|q| q.sender = Some("d4242.example".into())),
            50,
        ),
        (
            "received: a page of a .domain's records",
            page(|q| q.sender = Some(".d4242.example".into())),
            50,
        ),
        (
            "received: a page of one client's records",
            page(|q| q.client = Some("10.0.16.242".into())),
            50,
        ),
        (
            "received: a page of a /24's records (250 clients merged)",
            page(|q| q.client = Some("10.0.16.0/24".into())),
            50,
        ),
        (
            "received: one queue ID",
            page(|q| q.queue_id = Some(format!("{:013X}", 0x6600_0000_0000u64 + 42_069))),
            1,
        ),
        ("received: the newest page, no filter", page(|_| {}), 50),
        (
            "received: plaintext only, a page",
            page(|q| q.plaintext_only = true),
            50,
        ),
        (
            "received: plaintext from a domain, a page",
            page(|q| {
                q.plaintext_only = true;
                q.sender = Some("d4240.example".into());
            }),
            50,
        ),
        (
            "received: a time range alone, a page (its end found by halving)",
            page(|q| {
                q.since = Some(1_790_000_000);
                q.until = Some(1_790_000_000 + 3_600);
            }),
            50,
        ),
    ];
    for (name, q, want) in &searches {
        let found = store.search_received(q).unwrap();
        assert_eq!(found.records.len(), *want, "{name}");
        c.bench_function(name, |b| {
            b.iter(|| black_box(store.search_received(black_box(q)).unwrap()))
        });
    }
    // The impact preview of an inbound row: 30 days of what it names, at most 1,000.
    let since = 1_790_000_000 + RECORDS / 20 - 30 * 86_400;
    let previews = [
        (
            "received_from: a .domain (200 records)",
            ReceivedFrom::Domain {
                domain: "d4242.example".into(),
                subdomains: true,
            },
            200,
        ),
        (
            "received_from: a /24 (50,000 records, stops at 1,000)",
            ReceivedFrom::Network("10.0.16.0/24".parse().unwrap()),
            1_000,
        ),
    ];
    for (name, from, want) in &previews {
        let (found, _) = store.received_from(from, since, 1_000).unwrap();
        assert_eq!(found.len(), *want, "{name}");
        c.bench_function(name, |b| {
            b.iter(|| black_box(store.received_from(black_box(from), since, 1_000).unwrap()))
        });
    }
    store_cost(c, &store);
}

/// What the delivery-log thread does per message received: the record's JSON made and
/// stored with its index entries and counters, in a transaction of 512 (`STORE_BATCH`), not
/// made durable (at most once a second). Run after the searches, on the same store.
fn store_cost(c: &mut Criterion, store: &Store) {
    let mut next = RECORDS;
    c.bench_function("received: store 512 records, one transaction", |b| {
        b.iter_batched(
            || {
                next += 512;
                (next - 512..next).map(record).collect::<Vec<Received>>()
            },
            |batch| store.insert_received(black_box(&batch), false).unwrap(),
            BatchSize::PerIteration,
        )
    });
}

/// A received record as relay-bench's load makes them: one sender, one client, plaintext.
fn relay_bench_received(i: u64) -> Received {
    Received {
        unix_time: 1_790_000_000 + i / 3_000,
        queue_id: format!("{:013X}", 0x6620_0000_0000u64 + i),
        node: None,
        client_name: "unknown".into(),
        client_addr: "127.0.0.1".into(),
        helo: "vm".into(),
        sender: "a@example.org".into(),
        recipients: 1,
        size: 4_390,
        trust: Trust::TrustedNetwork,
        tls: None,
        client_cert: None,
    }
}

/// Its delivery, for comparison: what the delivery records already cost per message.
fn relay_bench_delivery(i: u64) -> postern::events::Delivery {
    serde_json::from_value(serde_json::json!({
        "unix_time": 1_790_000_000 + i / 3_000,
        "queue_id": format!("{:013X}", 0x6620_0000_0000u64 + i),
        "sender": "a@example.org", "recipient": "b@example.net",
        "relay": "127.0.0.1[127.0.0.1]:10026", "delay": 0.01, "delays": [0.0, 0.0, 0.0, 0.01],
        "dsn": "2.0.0", "status": "sent", "reply": "250 2.0.0 Ok: queued as 4XyZ",
        "starttls_offered": false, "tls": null, "verified_name": null,
        "policy_level": "may", "policy_source": "global"
    }))
    .expect("a valid record")
}

const LOAD: u64 = 20_480;

/// relay-bench's run of 20,000 messages as the delivery-log thread stores it: a new store,
/// transactions of 512, JSON made for each record. Per record: the time over `LOAD`.
fn relay_bench_load(c: &mut Criterion) {
    let retention = Retention {
        max_age_secs: u64::MAX / 2,
        max_records: u64::MAX,
    };
    let received: Vec<Vec<Received>> = (0..LOAD / 512)
        .map(|b| (b * 512..(b + 1) * 512).map(relay_bench_received).collect())
        .collect();
    let deliveries: Vec<Vec<postern::events::Delivery>> = (0..LOAD / 512)
        .map(|b| (b * 512..(b + 1) * 512).map(relay_bench_delivery).collect())
        .collect();
    c.bench_function(
        "received: relay-bench's 20,480 in batches of 512, new store",
        |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| {
                    let store = Store::open(&dir.path().join("r.redb"), retention).unwrap();
                    for batch in &received {
                        store.insert_received(batch, false).unwrap();
                    }
                    dir
                },
                BatchSize::PerIteration,
            )
        },
    );
    c.bench_function(
        "deliveries: relay-bench's 20,480 in batches of 512, new store",
        |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| {
                    let store = Store::open(&dir.path().join("r.redb"), retention).unwrap();
                    for batch in &deliveries {
                        store.insert(batch, false).unwrap();
                    }
                    dir
                },
                BatchSize::PerIteration,
            )
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_group! {
    name = load;
    config = Criterion::default().sample_size(10);
    targets = relay_bench_load
}
criterion_main!(benches, load);
