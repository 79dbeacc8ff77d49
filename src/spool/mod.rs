//! The durable queue (`data/spool/`): append-only segment files, a CRC per record, one
//! committer that fdatasyncs a batch before any of its 250s go out, recovery at start-up that
//! skips a torn tail, and the in-memory index the delivery engine and the admin page read.

mod committer;
mod record;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use committer::Location;
use committer::{Commit, Stats, segment_path};
use record::Decoded;

/// Postfix-style queue ID: uppercase hex, unique across restarts (seeded from the clock and
/// from the highest ID recovered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

impl std::str::FromStr for QueueId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(QueueId)
    }
}

/// What the spool keeps besides the message bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub client_ip: String,
    pub helo: String,
    /// The client was authorised to relay (trusted network or SMTP AUTH): its `x-TLSLevel`
    /// header counts for the TLS policy.
    pub authorised: bool,
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub received_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: QueueId,
    pub envelope: Envelope,
    pub size: usize,
    pub location: Location,
}

/// What start-up found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub messages: usize,
    pub segments: usize,
    /// (segment file, offset, bytes skipped, why)
    pub torn: Vec<(String, u64, u64, &'static str)>,
}

#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    index: Mutex<BTreeMap<QueueId, QueueEntry>>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
}

impl Spool {
    /// Open the spool in `dir`, replaying every segment into the index, and start the
    /// committer. New records always go to a new segment, so a torn tail is never appended to.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Spool, Recovery)> {
        crate::fsutil::private_dir(dir)?;
        let (index, recovery, last_segment) = recover(dir)?;
        let max_id = index.keys().next_back().map(|id| id.0 + 1).unwrap_or(0);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let thread = {
            let dir = dir.to_path_buf();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("spool-committer".into())
                .spawn(move || committer::run(rx, dir, last_segment + 1, segment_bytes, stats))?
        };
        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                index: Mutex::new(index),
                next_id: AtomicU64::new(max_id.max(now_micros())),
                stats,
            }),
        };
        Ok((spool, recovery))
    }

    pub fn next_id(&self) -> QueueId {
        QueueId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Append the message and wait until it is on disk. Only after `Ok` may the client be
    /// told 250; on `Err` nothing of it is in the queue.
    pub async fn commit(&self, id: QueueId, envelope: Envelope, message: &[u8]) -> io::Result<()> {
        let record = record::encode_message(id, &envelope, message);
        let (done, wait) = oneshot::channel();
        {
            let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
            let tx = tx
                .as_ref()
                .ok_or_else(|| io::Error::other("spool is shut down"))?;
            tx.send(Commit { record, done })
                .map_err(|_| io::Error::other("spool committer stopped"))?;
        }
        let location = wait
            .await
            .map_err(|_| io::Error::other("spool committer stopped"))??;
        let entry = QueueEntry {
            id,
            envelope,
            size: message.len(),
            location,
        };
        self.lock_index().insert(id, entry);
        Ok(())
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, BTreeMap<QueueId, QueueEntry>> {
        // Index updates are single inserts/removes; a panic mid-update cannot leave it torn.
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<QueueEntry> {
        self.lock_index().values().cloned().collect()
    }

    pub fn get(&self, id: QueueId) -> Option<QueueEntry> {
        self.lock_index().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock_index().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message bytes as accepted (Received header included), CRC-checked again.
    pub fn read_message(&self, id: QueueId) -> io::Result<Vec<u8>> {
        let entry = self.get(id).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{id}: no such message"))
        })?;
        let file = std::fs::File::open(segment_path(&self.inner.dir, entry.location.segment))?;
        let mut buf = vec![0; entry.location.len as usize];
        file.read_exact_at(&mut buf, entry.location.offset)?;
        match record::decode(&buf) {
            Decoded::Message { message, .. } => Ok(message.to_vec()),
            Decoded::Torn(why) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{id}: spool record damaged: {why}"),
            )),
        }
    }

    /// (records committed, fdatasyncs) since start: syncs per message is their ratio.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.inner.stats.records.load(Ordering::Relaxed),
            self.inner.stats.syncs.load(Ordering::Relaxed),
        )
    }

    /// Stop the committer after it has finished the batches already sent.
    pub fn shutdown(&self) {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

type Recovered = (BTreeMap<QueueId, QueueEntry>, Recovery, u64);

/// Replay every segment in order. A record that fails its checks ends that segment: it was
/// being written when the process died and was never acknowledged.
fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    let mut index = BTreeMap::new();
    let mut report = Recovery {
        segments: numbers.len(),
        ..Recovery::default()
    };
    for &n in &numbers {
        let path = segment_path(dir, n);
        let data = std::fs::read(&path)?;
        let mut at = 0usize;
        while at < data.len() {
            match record::decode(&data[at..]) {
                Decoded::Message {
                    id,
                    envelope,
                    message,
                    len,
                } => {
                    let entry = QueueEntry {
                        id,
                        envelope,
                        size: message.len(),
                        location: Location {
                            segment: n,
                            offset: at as u64,
                            len: len as u64,
                        },
                    };
                    index.insert(id, entry);
                    at += len;
                }
                Decoded::Torn(why) => {
                    let name = path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    tracing::warn!(
                        target: "postern/spool",
                        "warning: {name}: torn record at offset {at}, {} bytes skipped ({why}); it was never acknowledged",
                        data.len() - at
                    );
                    report
                        .torn
                        .push((name, at as u64, (data.len() - at) as u64, why));
                    break;
                }
            }
        }
    }
    report.messages = index.len();
    Ok((index, report, numbers.last().copied().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(rcpt: &str) -> Envelope {
        Envelope {
            sender: "s@example.org".into(),
            recipients: vec![rcpt.into()],
            ..Envelope::default()
        }
    }

    #[tokio::test]
    async fn commit_recover_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec, Recovery::default());
        let a = spool.next_id();
        let b = spool.next_id();
        spool
            .commit(a, env("a@x.example"), b"message a\r\n")
            .await
            .unwrap();
        spool
            .commit(b, env("b@x.example"), b"message b\r\n")
            .await
            .unwrap();
        assert_eq!(spool.read_message(b).unwrap(), b"message b\r\n");
        spool.shutdown();

        // A crash mid-write leaves half a record at the end of the segment.
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        let half = record::encode_message(QueueId(99), &env("c@x.example"), b"never acked");
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut f, &half[..half.len() / 2]).unwrap();

        let (spool, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.messages, 2);
        assert_eq!(rec.torn.len(), 1);
        assert_eq!(rec.torn[0].1, len);
        assert_eq!(spool.read_message(a).unwrap(), b"message a\r\n");
        assert!(spool.get(QueueId(99)).is_none());
        // New writes go to a fresh segment; the IDs keep increasing.
        let c = spool.next_id();
        assert!(c > b);
        spool.commit(c, env("c@x.example"), b"c").await.unwrap();
        spool.shutdown();
        let (spool, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.messages, 3);
        assert_eq!(rec.segments, 2);
        assert_eq!(spool.read_message(c).unwrap(), b"c");
    }

    #[tokio::test]
    async fn concurrent_commits_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let id = spool.next_id();
                spool
                    .commit(id, env(&format!("r{i}@x.example")), &[b'x'; 100])
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (records, syncs) = spool.stats();
        assert_eq!(records, 50);
        assert!(syncs <= 50);
        assert_eq!(spool.len(), 50);
    }

    #[tokio::test]
    async fn segments_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 100).unwrap();
        for _ in 0..3 {
            let id = spool.next_id();
            spool
                .commit(id, env("a@x.example"), &[b'y'; 200])
                .await
                .unwrap();
        }
        spool.shutdown();
        let (spool, rec) = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(rec.segments, 3);
        assert_eq!(spool.len(), 3);
    }
}
