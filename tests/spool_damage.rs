//! A damaged spool loses only what is damaged: recovery resumes at the next intact record,
//! says what it could not read, and keeps the segment in `spool/damaged/` where no cleanup
//! ever deletes it.

mod common;

use postern::spool::{Envelope, Final, Location, QueueId, Spool};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn envelope(n: usize) -> Envelope {
    Envelope {
        sender: "s@client.example".into(),
        recipients: vec![format!("r{n}@other.example")],
        ..Envelope::default()
    }
}

fn body(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: message {n}\r\n\r\n").into_bytes();
    m.resize(size, b'a' + (n % 26) as u8);
    m.extend_from_slice(b"\r\n");
    m
}

/// Commit `count` messages of random sizes into segments of `segment_bytes`; their IDs,
/// locations and bytes.
async fn fill(
    dir: &std::path::Path,
    segment_bytes: u64,
    count: usize,
    rng: &mut StdRng,
) -> Vec<(QueueId, Location, Vec<u8>)> {
    let (spool, _) = Spool::open(dir, segment_bytes).unwrap();
    let mut out = Vec::new();
    for n in 0..count {
        let id = spool.next_id();
        let bytes = body(n, rng.gen_range(300..3000));
        spool.commit(id, envelope(n), &bytes).await.unwrap();
        out.push((id, spool.get(id).unwrap().location, bytes));
    }
    spool.shutdown();
    out
}

fn segment_file(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    dir.join(format!("seg-{n:08}.log"))
}

/// After damage to the record of `lost`: every other message is recovered byte for byte.
fn assert_only_lost(spool: &Spool, messages: &[(QueueId, Location, Vec<u8>)], lost: QueueId) {
    for (id, _, bytes) in messages {
        if *id == lost {
            assert!(
                spool.get(*id).is_none(),
                "{id}: the damaged record came back"
            );
        } else {
            let got = spool
                .read_message(*id)
                .unwrap_or_else(|e| panic!("{id} lost with another record's damage: {e}"));
            assert_eq!(&got, bytes, "{id}");
        }
    }
    assert_eq!(spool.len(), messages.len() - 1);
}

#[tokio::test]
async fn a_flipped_byte_in_record_k_loses_record_k_only_and_the_segment_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let messages = fill(dir.path(), 1 << 20, 40, &mut rng).await;
    let (lost, at, _) = messages[3].clone();
    let path = segment_file(dir.path(), at.segment);
    let mut data = std::fs::read(&path).unwrap();
    data[(at.offset + at.len / 2) as usize] ^= 0x20;
    std::fs::write(&path, &data).unwrap();

    let (spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.messages, 39);
    assert!(recovery.torn.is_empty(), "{recovery:?}");
    assert_eq!(recovery.damaged.len(), 1, "{recovery:?}");
    let d = &recovery.damaged[0];
    assert_eq!((d.offset, d.bytes), (at.offset, at.len), "exactly record 4");
    assert_only_lost(&spool, &messages, lost);
    let kept = dir.path().join("damaged/seg-00000001.log");
    assert_eq!(std::fs::read(&kept).unwrap(), data, "kept as found");
    assert_eq!(spool.damaged(), recovery.damaged);

    // Deliver every intact message: the spool lets its segment go, the kept copy stays.
    for (id, _, _) in messages.iter().filter(|(id, _, _)| *id != lost) {
        spool
            .record_outcomes(*id, &[(0, Final::Delivered)])
            .await
            .unwrap();
    }
    spool.shutdown();
    let (spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(spool.is_empty());
    assert!(!path.exists(), "the finished segment was not let go");
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        data,
        "the damaged copy was deleted"
    );
    assert_eq!(spool.damaged().len(), 1, "still listed");
    assert!(recovery.damaged.is_empty(), "the spool itself is clean now");
}

#[tokio::test]
async fn a_truncated_older_segment_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    let messages = fill(dir.path(), 16 * 1024, 30, &mut rng).await;
    let (_, first, _) = messages[0];
    let in_first: Vec<_> = messages
        .iter()
        .filter(|(_, l, _)| l.segment == first.segment)
        .collect();
    assert!(in_first.len() >= 3 && messages.iter().any(|(_, l, _)| l.segment > first.segment));
    // Cut the first segment inside its second message.
    let cut = in_first[1].1.offset + 10;
    let path = segment_file(dir.path(), first.segment);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(cut).unwrap();

    let (spool, recovery) = Spool::open(dir.path(), 16 * 1024).unwrap();
    assert!(recovery.torn.is_empty(), "called a torn tail: {recovery:?}");
    assert_eq!(recovery.damaged.len(), 1);
    assert_eq!(recovery.damaged[0].offset, in_first[1].1.offset);
    assert_eq!(recovery.messages, messages.len() - (in_first.len() - 1));
    assert!(dir.path().join("damaged/seg-00000001.log").exists());
    assert!(spool.get(messages[0].0).is_some());
}

/// 20 seeded rounds: one random byte of one random segment changed; every record but the
/// one holding that byte is recovered, and the damage is reported where it is.
#[tokio::test]
async fn random_damage_loses_only_the_damaged_record() {
    for seed in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let messages = fill(dir.path(), 24 * 1024, 60, &mut rng).await;
        let segments: Vec<u64> = {
            let mut s: Vec<u64> = messages.iter().map(|(_, l, _)| l.segment).collect();
            s.dedup();
            s
        };
        let segment = segments[rng.gen_range(0..segments.len())];
        let path = segment_file(dir.path(), segment);
        let mut data = std::fs::read(&path).unwrap();
        let at = rng.gen_range(0..data.len()) as u64;
        data[at as usize] ^= rng.gen_range(1..=255u8);
        std::fs::write(&path, &data).unwrap();
        let (lost, loc, _) = messages
            .iter()
            .find(|(_, l, _)| l.segment == segment && (l.offset..l.offset + l.len).contains(&at))
            .cloned()
            .expect("every byte of a segment belongs to a record");

        let (spool, recovery) = Spool::open(dir.path(), 24 * 1024).unwrap();
        assert_only_lost(&spool, &messages, lost);
        let regions: Vec<(u64, u64)> = recovery
            .damaged
            .iter()
            .map(|d| (d.offset, d.bytes))
            .chain(recovery.torn.iter().map(|t| (t.1, t.2)))
            .collect();
        assert_eq!(regions.len(), 1, "seed {seed}: {recovery:?}");
        assert_eq!(
            regions[0].0, loc.offset,
            "seed {seed}: the region starts at the record"
        );
        if recovery.torn.is_empty() {
            assert!(
                dir.path()
                    .join("damaged")
                    .join(path.file_name().unwrap())
                    .exists()
            );
        }
        spool.shutdown();
    }
}

/// The real binary on a damaged spool: it starts, says how much it could not read, and
/// `postern queue damaged` lists the kept segment.
#[tokio::test]
async fn the_server_starts_and_lists_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("data/spool");
    let mut rng = StdRng::seed_from_u64(9);
    let messages = fill(&spool_dir, 1 << 20, 10, &mut rng).await;
    let (_, at, _) = messages[2];
    let path = segment_file(&spool_dir, at.segment);
    let mut data = std::fs::read(&path).unwrap();
    data[(at.offset + 20) as usize] ^= 0x01;
    std::fs::write(&path, &data).unwrap();

    let proc = common::process::spawn_postern(dir.path(), None, "");
    let log = proc.log.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!(
            "seg-00000001.log: damaged record at offset {}: {} bytes unreadable",
            at.offset, at.len
        )),
        "{log}"
    );
    assert!(log.contains("recovered 9 message(s)"), "{log}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["queue", "damaged", "--config"])
        .arg(dir.path().join("postern.toml"))
        .args(["--api", &proc.api().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "seg-00000001.log: {} bytes unreadable at offset {} (CRC mismatch)",
            at.len, at.offset
        )),
        "{text}"
    );
    assert!(proc.stop().await);
}
