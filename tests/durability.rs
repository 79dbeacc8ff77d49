//! Durability with a real postern process: SIGKILL while 20 sessions are mid-stream, then
//! restart; and a storage failure (file size limit) that must give 452, never 250.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::process::spawn_postern;
use common::*;
use postern::spool::Spool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn body_for(session: usize, n: usize) -> Vec<u8> {
    // ~48 KiB, sent in several writes, so a kill often lands inside DATA.
    let mut m = format!(
        "Subject: s{session} n{n}\r\nMessage-ID: <s{session}.n{n}@durability.test>\r\n\r\n"
    )
    .into_bytes();
    for line in 0..600 {
        m.extend_from_slice(
            format!(
                "session {session} message {n} line {line:04} ............................\r\n"
            )
            .as_bytes(),
        );
    }
    m
}

#[derive(Default)]
struct Outcome {
    /// message key -> queue ID from the 250
    acked: HashMap<String, String>,
    /// keys whose final "." was written but whose reply never came
    unanswered: Vec<String>,
}

/// One client: messages back to back until the connection dies.
async fn client(
    addr: SocketAddr,
    session: usize,
    acked_total: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
) -> Outcome {
    let mut out = Outcome::default();
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return out;
    };
    let (r, mut w) = tcp.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut line = String::new();
    macro_rules! reply {
        () => {{
            line.clear();
            match r.read_line(&mut line).await {
                Ok(n) if n > 0 => line.clone(),
                _ => return out,
            }
        }};
    }
    reply!();
    if w.write_all(b"HELO durability.test\r\n").await.is_err() {
        return out;
    }
    reply!();
    for n in 0.. {
        let key = format!("s{session}.n{n}");
        let head =
            "MAIL FROM:<s@durability.test>\r\nRCPT TO:<r@other.example>\r\nDATA\r\n".to_string();
        if w.write_all(head.as_bytes()).await.is_err() {
            return out;
        }
        for _ in 0..3 {
            reply!();
        }
        let mut wire = Vec::new();
        postern::proto::dot_stuff(&body_for(session, n), &mut wire);
        let (data, dot) = wire.split_at(wire.len() - 3);
        for piece in data.chunks(8192) {
            if w.write_all(piece).await.is_err() {
                return out;
            }
            tokio::task::yield_now().await;
        }
        if w.write_all(dot).await.is_err() {
            return out;
        }
        out.unanswered.push(key.clone());
        let reply = reply!();
        out.unanswered.pop();
        assert!(
            reply.starts_with("250 2.0.0 Ok: queued as "),
            "unexpected reply {reply}"
        );
        out.acked.insert(
            key,
            reply.trim_end().rsplit(' ').next().unwrap().to_string(),
        );
        acked_total.fetch_add(1, Ordering::SeqCst);
        progress.notify_one();
    }
    out
}

fn key_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let id = text
        .split("Message-ID: <")
        .nth(1)
        .expect("message has our Message-ID");
    id.split('@').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() {
    sigkill_mid_stream("").await;
}

/// Segments smaller than one message: every record starts a segment, so the kill lands
/// around segment rotation too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_with_tiny_segments() {
    sigkill_mid_stream("[spool]\nsegment_bytes = 32768\n").await;
}

async fn sigkill_mid_stream(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_postern(dir.path(), None, config);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let clients: Vec<_> = (0..20)
        .map(|s| tokio::spawn(client(proc.smtp, s, acked_total.clone(), progress.clone())))
        .collect();
    // Kill once enough has been acknowledged, while every session is still sending.
    while acked_total.load(Ordering::SeqCst) < 200 {
        progress.notified().await;
    }
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    let mut acked = HashMap::new();
    let mut unanswered = Vec::new();
    for c in clients {
        let o = c.await.unwrap();
        acked.extend(o.acked);
        unanswered.extend(o.unanswered);
    }
    assert!(acked.len() >= 200);

    // A crash can also leave half a record: add one, as a torn write would.
    let spool_dir = dir.path().join("data/spool");
    let last_segment = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last_segment)
        .unwrap();
    std::io::Write::write_all(&mut f, b"PSTN\x01\xff\xff\x00\x00partial").unwrap();

    // Restart: it must come up, saying it skipped the torn tail.
    let mut proc = spawn_postern(dir.path(), None, config);
    let started = proc.log.lock().unwrap().join("\n");
    assert!(started.contains("torn record at offset"), "{started}");
    assert!(!started.contains("recovered 0 message"), "{started}");
    // It still accepts mail after the crash.
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("HELO after.crash").await;
    let after = queue_id(
        &c.send("s@durability.test", &["r@other.example"], &body_for(99, 0))
            .await,
    );
    c.cmd("QUIT").await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(proc.child.id().to_string())
        .status();
    let status = proc.child.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        proc.log.lock().unwrap().join("\n")
    );

    let (spool, _) = Spool::open(&spool_dir, 1 << 26).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in spool.list() {
        let stored = spool.read_message(entry.id).unwrap();
        let key = key_of(&stored);
        *seen.entry(key.clone()).or_default() += 1;
        // Byte-identical: our Received header, then exactly what the client sent.
        let (session, n) = key[1..].split_once(".n").unwrap();
        let original = body_for(session.parse().unwrap(), n.parse().unwrap());
        assert!(stored.starts_with(b"Received: "), "{key}");
        assert!(
            stored.ends_with(&original),
            "{key}: stored message differs from what was sent"
        );
        let acked_id = acked.get(&key);
        assert!(
            acked_id.is_some() || unanswered.contains(&key) || key == "s99.n0",
            "{key} is in the queue but was never completely sent"
        );
        if let Some(id) = acked_id {
            assert_eq!(
                &entry.id.to_string(),
                id,
                "{key}: queue ID differs from the 250's"
            );
        }
    }
    for key in acked.keys() {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{key} got a 250 but is in the queue {:?} times",
            seen.get(key)
        );
    }
    assert!(spool.get(after.parse().unwrap()).is_some());
}

#[tokio::test]
async fn storage_failure_gives_452_never_250() {
    let dir = tempfile::tempdir().unwrap();
    // Every file postern writes may grow to 1 MiB (ulimit -f counts KiB); SIGXFSZ ignored so a
    // write past it fails with EFBIG, as a full disk fails with ENOSPC.
    let mut proc = spawn_postern(dir.path(), Some("trap '' XFSZ; ulimit -f 1024"), "");
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("HELO fill.test").await;
    let big = vec![b'y'; 1000]
        .into_iter()
        .chain(*b"\r\n")
        .cycle()
        .take(1_500_000)
        .collect::<Vec<u8>>();
    let r = c.send("s@fill.test", &["r@other.example"], &big).await;
    assert_eq!(r.first(), "452 4.3.1 Insufficient system storage");
    // The failed batch was rolled back: a message that fits is accepted and durable.
    let small = message("fits", "");
    let id = queue_id(&c.send("s@fill.test", &["r@other.example"], &small).await);
    c.cmd("QUIT").await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(proc.child.id().to_string())
        .status();
    proc.child.wait().unwrap();
    let log = proc.log.lock().unwrap().join("\n");
    assert!(log.contains("spool write failed"), "{log}");
    let (spool, rec) = Spool::open(&dir.path().join("data/spool"), 1 << 26).unwrap();
    assert!(rec.torn.is_empty(), "rollback left a torn record: {rec:?}");
    assert_eq!(spool.len(), 1);
    assert!(
        spool
            .read_message(id.parse().unwrap())
            .unwrap()
            .ends_with(&small)
    );
}
