//! The segment lifecycle under load: tiny segments, many sessions appending, deliveries
//! finishing while appends are in flight. A segment may go only once every message in it is
//! final, so every acknowledged message must still be readable when its delivery comes, and
//! no segment may be left behind once the queue is empty.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::sink::{Sink, SinkOptions};
use common::*;
use postern::spool::{Envelope, Final, QueueId, Spool};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The bytes of message `id`, `size` long: a reader can tell one message from another.
fn body(id: QueueId, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: {id}\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("{id} ").as_bytes());
    }
    m.extend_from_slice(b"\r\n");
    m
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    names.sort();
    names
}

/// One seeded round straight on the spool's API: `sessions` tasks commit `total` messages
/// of random sizes (one or two recipients) into segments of 16-64 KiB; each commit is
/// delivered at once by its own task, which reads it back and records the recipients final,
/// one at a time for two-recipient messages, racing the appends (`lazy`: with
/// `record_delivery_outcomes`, as the delivery engine does, not waiting for the sync).
async fn spool_round(seed: u64, sessions: usize, total: usize, lazy: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let segment_bytes = rng.gen_range(16..=64) * 1024;
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), segment_bytes).unwrap();
    let (tx, mut committed) = tokio::sync::mpsc::unbounded_channel();
    spool.subscribe(tx);
    let plans: Vec<Vec<(usize, usize)>> = (0..sessions)
        .map(|_| {
            (0..total / sessions)
                .map(|_| (rng.gen_range(100..6000), rng.gen_range(1..=2)))
                .collect()
        })
        .collect();
    let expected = plans.iter().map(Vec::len).sum::<usize>();
    let appenders: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for (size, rcpts) in plan {
                    let id = spool.next_id();
                    let envelope = Envelope {
                        sender: "s@client.example".into(),
                        recipients: (0..rcpts).map(|r| format!("r{r}@other.example")).collect(),
                        ..Envelope::default()
                    };
                    spool.commit(id, envelope, &body(id, size)).await.unwrap();
                }
            })
        })
        .collect();
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..expected {
        let id = committed.recv().await.expect("every commit is announced");
        let (spool, failures) = (spool.clone(), failures.clone());
        deliveries.spawn(async move {
            let entry = spool.get(id).expect("a committed message is in the index");
            match spool.load_message(id).await {
                Ok(m)
                    if m.starts_with(format!("Subject: {id}\r\n").as_bytes())
                        && m.len() == entry.size => {}
                Ok(_) => failures.lock().unwrap().push(format!("{id}: wrong bytes")),
                Err(e) => failures.lock().unwrap().push(format!("{id}: {e}")),
            }
            for r in 0..entry.envelope.recipients.len() {
                let outcome = [(r as u32, Final::Delivered)];
                if lazy {
                    // As the delivery engine records them: not waited for.
                    spool.record_delivery_outcomes(id, &outcome).await.unwrap();
                } else {
                    spool.record_outcomes(id, &outcome).await.unwrap();
                }
            }
        });
    }
    for a in appenders {
        a.await.unwrap();
    }
    while deliveries.join_next().await.transpose().unwrap().is_some() {}
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "seed {seed}, segments of {segment_bytes} bytes: {} of {expected} acknowledged messages unreadable at delivery: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(spool.is_empty(), "seed {seed}: queue not empty");
    // Only the segment being written may remain; it goes at the next start.
    let left = segment_files(dir.path());
    assert!(
        left.len() <= 1,
        "seed {seed}: finished segments left behind: {left:?}"
    );
    spool.shutdown();
    let (spool, recovery) = Spool::open(dir.path(), segment_bytes).unwrap();
    assert_eq!(recovery.messages, 0, "seed {seed}");
    assert!(spool.is_empty());
    assert_eq!(
        segment_files(dir.path()),
        Vec::<String>::new(),
        "seed {seed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_segments_many_sessions_deliveries_racing_appends() {
    for seed in 1..=6 {
        spool_round(seed, 32, 3000, false).await;
    }
}

/// The same with outcomes recorded as deliveries record them (handed to the committer, not
/// waited for): segments still go only when final, and after the shutdown's last sync a
/// restart finds nothing left to deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_segments_with_delivery_outcomes_not_waited_for() {
    for seed in 7..=12 {
        spool_round(seed, 32, 3000, true).await;
    }
}

/// The same through the whole server: SMTP sessions in, a fast sink out, segments of 16-64
/// KiB. Every message that got a 250 reaches the sink, and once the last delivery record is
/// out, no finished segment is left.
async fn server_round(seed: u64, sessions: usize, per_session: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let segment_bytes = rng.gen_range(16..=64) * 1024;
    let mut sink = Sink::start(SinkOptions::default()).await;
    let config = format!(
        "[spool]\nsegment_bytes = {segment_bytes}\n[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    );
    let server = TestServer::start_with(&config).await;
    let sizes: Vec<Vec<usize>> = (0..sessions)
        .map(|_| (0..per_session).map(|_| rng.gen_range(200..8000)).collect())
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = sizes
        .into_iter()
        .enumerate()
        .map(|(s, sizes)| {
            let (addr, acked) = (server.smtp, acked.clone());
            tokio::spawn(async move {
                let mut c = SmtpClient::connect(addr, None, None).await;
                c.ehlo().await;
                let mut keys = Vec::new();
                for (n, size) in sizes.into_iter().enumerate() {
                    let key = format!("s{s}n{n}");
                    let mut m = format!("Subject: {key}\r\n\r\n").into_bytes();
                    m.resize(size, b'x');
                    m.extend_from_slice(b"\r\n");
                    let r = c.send("s@client.example", &["r@other.example"], &m).await;
                    assert_eq!(r.code, 250, "{r:?}");
                    acked.fetch_add(1, Ordering::SeqCst);
                    keys.push(key);
                }
                c.cmd("QUIT").await;
                keys
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for c in clients {
        sent.extend(c.await.unwrap());
    }
    let mut received = HashSet::new();
    while received.len() < sent.len() {
        let Some(m) = sink.next(30).await else {
            panic!(
                "seed {seed}, segments of {segment_bytes} bytes: {} of {} acknowledged messages never arrived",
                sent.len() - received.len(),
                sent.len()
            );
        };
        let text = String::from_utf8_lossy(&m.data);
        let key = text
            .split("Subject: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert!(received.insert(key.to_string()), "{key} delivered twice");
    }
    assert_eq!(received, sent);
    let spool_dir = server.data_dir().join("spool");
    // The sink has each message before postern records it: wait for the queue to drain.
    let mut server = server;
    let mut finished = 0;
    while finished < sent.len() {
        if server.next_event(30).await.status == "sent" {
            finished += 1;
        }
    }
    let left = segment_files(&spool_dir);
    assert!(
        left.len() <= 1,
        "seed {seed}: finished segments left behind: {left:?}"
    );
    let (spool, _dir) = server.stop().await;
    assert!(spool.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_segments_through_smtp_to_a_fast_sink() {
    for seed in 1..=3 {
        server_round(seed, 16, 60).await;
    }
}
