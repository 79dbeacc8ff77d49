//! The Queue and Logs pages' functions at the sizes the issue names, filled through the
//! stores' own APIs (not SMTP): 100,000 queued messages, 1,000,000 delivery records. Paging
//! and filters must still hold; their speed is measured by `cargo bench --bench records`.

use postern::admin::queue::{Filter, listing};
use postern::events::Delivery;
use postern::events::store::{Retention, Search, Store};
use postern::spool::{Envelope, Spool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_queued_messages_page_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 8 << 20).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let id = spool.next_id();
                    let envelope = Envelope {
                        sender: format!("app{t}@inside.example"),
                        recipients: vec![format!("user{i}@d{}.example", (t * 1000 + i) % 500)],
                        received_unix: 1_790_000_000 + (t * 1000 + i) as u64,
                        ..Envelope::default()
                    };
                    spool
                        .commit(id, envelope, b"Subject: s\r\n\r\nbody\r\n")
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(spool.len(), 100_000);
    let page = |offset| Filter {
        offset: Some(offset),
        limit: Some(50),
        ..Filter::default()
    };
    let first = listing(&spool, &page(0));
    assert_eq!(first.counts.active, 100_000);
    assert_eq!(first.matching, 100_000);
    assert_eq!(first.items.len(), 50);
    assert_eq!(first.items[0].arrival_unix, 1_790_000_000, "oldest first");
    let last = listing(&spool, &page(99_950));
    assert_eq!(last.items.len(), 50);
    assert_eq!(last.items[49].arrival_unix, 1_790_099_999);
    let one_domain = listing(
        &spool,
        &Filter {
            domain: Some("D7.example".into()),
            limit: Some(50),
            ..Filter::default()
        },
    );
    assert_eq!(one_domain.matching, 200, "every 500th message, any case");
    let sender = listing(
        &spool,
        &Filter {
            sender: Some("app42@".into()),
            state: Some("active".into()),
            limit: Some(10),
            ..Filter::default()
        },
    );
    assert_eq!((sender.matching, sender.items.len()), (1000, 10));
}

fn record(i: u64) -> Delivery {
    serde_json::from_value(serde_json::json!({
        "unix_time": 1_790_000_000 + i / 20,
        "queue_id": format!("{:013X}", 0x6600_0000_0000u64 + i),
        "sender": format!("app{}@inside.example", i % 50),
        "recipient": format!("user{}@d{}.example", i % 100_000, i % 5_000),
        "relay": format!("mx.d{}.example[192.0.2.{}]:25", i % 5_000, i % 250),
        "delay": 0.4, "delays": [0.01, 0.0, 0.2, 0.19], "dsn": "2.0.0", "status": "sent",
        "reply": "250 2.0.0 Ok", "starttls_offered": true,
        "tls": {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "bits": 256},
        "verified_name": null, "policy_level": "may", "policy_source": "global"
    }))
    .unwrap()
}

/// Bytes free where `dir` is (statvfs).
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes only into the struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// A million records take 1.1 GB on disk: on a machine with less than 4 GB free in its temp
/// directory the test says so and fills 100,000, with the same checks (the record it
/// searches for is among both).
#[test]
fn a_million_delivery_records_search_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let batches: u64 = if free_bytes(dir.path()) >= 4 << 30 {
        100
    } else {
        eprintln!(
            "admin_scale: less than 4 GB free in {}: 100,000 records instead of 1,000,000",
            dir.path().display()
        );
        10
    };
    let store = Store::open(
        &dir.path().join("records.redb"),
        Retention {
            max_age_secs: u64::MAX / 2,
            max_records: u64::MAX,
        },
    )
    .unwrap();
    for b in 0..batches {
        let batch: Vec<Delivery> = (b * 10_000..(b + 1) * 10_000).map(record).collect();
        store.insert(&batch, b + 1 == batches).unwrap();
    }
    assert_eq!(store.len().unwrap(), batches * 10_000);
    let found = store
        .search(&Search {
            recipient: Some("user4242@d4242.example".into()),
            limit: 50,
            ..Search::default()
        })
        .unwrap();
    assert_eq!(
        found.records.len(),
        batches as usize / 10,
        "every 100,000th record"
    );
    let newest = (batches * 10_000 - 100_000) + 4242;
    assert_eq!(
        found.records[0].record.unix_time,
        1_790_000_000 + newest / 20
    );
    // A page of one host's records, then the next page from its cursor.
    let host = |before| Search {
        host: Some("mx.d17.example".into()),
        before,
        limit: 50,
        ..Search::default()
    };
    let one = store.search(&host(None)).unwrap();
    let two = store.search(&host(one.next)).unwrap();
    assert_eq!((one.records.len(), two.records.len()), (50, 50));
    assert!(
        two.records[0].seq < one.records[49].seq,
        "older on the next page"
    );
    // Free text walks at most MAX_SCAN records and says so.
    let text = store
        .search(&Search {
            text: Some("no such text anywhere".into()),
            limit: 50,
            ..Search::default()
        })
        .unwrap();
    assert!(text.records.is_empty());
    let max = postern::events::store::MAX_SCAN;
    assert_eq!(text.stopped_early, batches * 10_000 > max);
    assert_eq!(text.scanned, max.min(batches * 10_000));
}
