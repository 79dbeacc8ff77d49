//! Thirty days of received records for the impact preview of inbound TLS rows (issue 31,
//! acceptance 4), written through the store's own API into `data/log/records.redb` before
//! the real binary starts on that data directory.
//!
//! From `partner.example` (clients 192.0.2.10–12): 60 messages over the last 29 days, one
//! every 42,000 s, the newest first as `P000`..`P059`, in turn: plaintext, TLS 128 bits
//! without a certificate, TLS 256 bits with a verified certificate for
//! `mx.partner.example`, TLS 256 bits with a verified certificate for `other.example`. So
//! 15 of each, the newest (`P000`) plaintext. Beside them, never counted for a
//! `partner.example` row: 5 plaintext from `sub.partner.example` (198.51.100.5), 5
//! plaintext from `partner.example` 31 days old and more; and from 192.0.2.20, 10
//! plaintext from `other.example`, from 192.0.2.30 2 plaintext with the null sender.

use std::path::Path;

use postern::events::received::{CertFacts, Received, Trust};
use postern::events::store::{Retention, Store};
use postern::tls::TlsInfo;

pub const PARTNER: u64 = 60;
pub const DAY: u64 = 86_400;

/// `P000`, the newest partner.example message, ...
pub fn partner_id(i: u64) -> String {
    format!("P{i:03}")
}

/// The queue IDs of the partner.example messages a plain `encrypt` row refuses (the
/// plaintext ones), newest first.
pub fn partner_plaintext() -> Vec<String> {
    (0..PARTNER).step_by(4).map(partner_id).collect()
}

fn tls(bits: u16) -> Option<TlsInfo> {
    Some(TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: if bits == 128 {
            "TLS_AES_128_GCM_SHA256".into()
        } else {
            "TLS_AES_256_GCM_SHA384".into()
        },
        bits,
        trusted: None,
        key_exchange: Some("X25519".into()),
        ..TlsInfo::default()
    })
}

fn cert(name: &str) -> Option<CertFacts> {
    Some(CertFacts {
        subject: format!("CN={name}, O=Partner"),
        issuer: "CN=Partner CA".into(),
        names: vec![name.to_string()],
        verified: true,
    })
}

fn record(unix_time: u64, queue_id: String, sender: &str, client: &str) -> Received {
    Received {
        unix_time,
        queue_id,
        node: None,
        client_name: "unknown".into(),
        client_addr: client.into(),
        helo: "mx.example".into(),
        sender: sender.into(),
        recipients: 1,
        size: 4096,
        trust: Trust::None,
        tls: None,
        client_cert: None,
    }
}

/// Every record of the fixture, as of `now`.
pub fn records(now: u64) -> Vec<Received> {
    let mut out = Vec::new();
    for i in 0..PARTNER {
        let client = format!("192.0.2.{}", 10 + i % 3);
        let sender = format!("user{}@partner.example", i % 7);
        let mut r = record(now - 3600 - i * 42_000, partner_id(i), &sender, &client);
        (r.tls, r.client_cert) = match i % 4 {
            0 => (None, None),
            1 => (tls(128), None),
            2 => (tls(256), cert("mx.partner.example")),
            _ => (tls(256), cert("other.example")),
        };
        out.push(r);
    }
    for j in 0..5 {
        let t = now - 7200 - j * DAY;
        out.push(record(
            t,
            format!("S{j:03}"),
            "a@sub.partner.example",
            "198.51.100.5",
        ));
        let old = now - 31 * DAY - j * 3600;
        out.push(record(
            old,
            format!("OLD{j}"),
            "b@partner.example",
            "192.0.2.10",
        ));
    }
    for j in 0..10 {
        let t = now - 5000 - j * 100_000;
        out.push(record(
            t,
            format!("X{j:03}"),
            "c@other.example",
            "192.0.2.20",
        ));
    }
    for j in 0..2 {
        out.push(record(
            now - 9000 - j * DAY,
            format!("N{j:03}"),
            "",
            "192.0.2.30",
        ));
    }
    // In the order a server writes them: as they arrive.
    out.sort_by_key(|r| r.unix_time);
    out
}

/// Write the fixture into `data_dir`'s record store, through `Records::insert_received`,
/// and close the store again (the server opens it).
pub fn write(data_dir: &Path, now: u64) {
    use std::os::unix::fs::DirBuilderExt;
    let log = data_dir.join("log");
    // As postern makes them: only it may read its data.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&log)
        .unwrap();
    let retention = Retention {
        max_age_secs: 30 * DAY,
        max_records: 2_000_000,
    };
    let store = Store::open(&log.join("records.redb"), retention).unwrap();
    store.insert_received(&records(now), true).unwrap();
    assert_eq!(store.received_len().unwrap(), 82);
}
