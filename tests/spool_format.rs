//! The spool's stored format: a segment written by an earlier build (kept in
//! `tests/data/spool-format/`) still loads with every envelope fact, and the same records
//! written today come out byte for byte the same. Moving a type between modules must not
//! change a serde name: a queue on disk outlives the binary that wrote it.

use postern::levels::{Level, RuleLevel};
use postern::spool::{Envelope, Final, QueueId, Spool, TlsHeader};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/spool-format/seg-00000001.log"
);
const SEGMENT: &str = "seg-00000001.log";

/// Every field set, so each serde name is in the file.
fn full() -> Envelope {
    Envelope {
        sender: "sender@example.org".into(),
        recipients: vec!["a@x.example".into(), "b@y.example".into()],
        client_ip: "192.0.2.7".into(),
        helo: "client.example.org".into(),
        authorised: true,
        smtputf8: true,
        eight_bit: true,
        received_unix: 1_700_000_000,
        rule_levels: vec![
            Some(RuleLevel {
                level: Level::Encrypt,
                rule: "partners require TLS".into(),
            }),
            None,
        ],
        tls_header: TlsHeader::Value("Require".into()),
        tenant: Some("0f1e2d3c-aaaa-bbbb-cccc-123456789abc".into()),
        requiretls: true,
        tls_required_no: true,
    }
}

/// The fewest fields: the optional ones are left out of the record.
fn bare(tls_header: TlsHeader) -> Envelope {
    Envelope {
        sender: String::new(),
        recipients: vec!["c@z.example".into()],
        client_ip: "198.51.100.1".into(),
        helo: "mx.example.net".into(),
        received_unix: 1_700_000_100,
        tls_header,
        ..Envelope::default()
    }
}

const A: QueueId = QueueId(0x1A2B3C4D5E);
const B: QueueId = QueueId(0x1A2B3C4D5F);
const C: QueueId = QueueId(0x1A2B3C4D60);

/// The records of the golden segment, written through the spool's API.
async fn write(dir: &std::path::Path) {
    let (spool, _) = Spool::open(dir, 1 << 20).unwrap();
    spool
        .commit(A, full(), b"Subject: a\r\n\r\na\r\n")
        .await
        .unwrap();
    let b = bare(TlsHeader::Absent);
    spool
        .commit(B, b, b"Subject: b\r\n\r\nb\r\n")
        .await
        .unwrap();
    let c = bare(TlsHeader::NotRead);
    spool
        .commit(C, c, b"Subject: c\r\n\r\nc\r\n")
        .await
        .unwrap();
    assert_eq!(spool.set_held(B, true).await.unwrap(), Some(true));
    spool
        .record_outcomes(A, &[(1, Final::Bounced)])
        .await
        .unwrap();
    spool.shutdown();
}

#[tokio::test]
async fn a_segment_written_before_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(GOLDEN, dir.path().join(SEGMENT)).unwrap();
    let (spool, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!((rec.messages, rec.torn.len(), rec.damaged.len()), (3, 0, 0));
    let a = spool.get(A).unwrap();
    assert_eq!(a.envelope, full());
    assert_eq!(a.pending(), vec![0], "the bounced recipient stays final");
    let b = spool.get(B).unwrap();
    assert_eq!(b.envelope, bare(TlsHeader::Absent));
    assert!(b.held);
    assert_eq!(spool.get(C).unwrap().envelope, bare(TlsHeader::NotRead));
    assert_eq!(spool.read_message(C).unwrap(), b"Subject: c\r\n\r\nc\r\n");
    spool.shutdown();
}

#[tokio::test]
async fn the_same_records_are_written_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path()).await;
    let today = std::fs::read(dir.path().join(SEGMENT)).unwrap();
    let before = std::fs::read(GOLDEN).unwrap();
    assert!(
        today == before,
        "the spool's records changed:\nbefore: {}\ntoday:  {}",
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&today)
    );
}
