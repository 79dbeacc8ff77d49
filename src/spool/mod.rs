//! The durable queue (`data/spool/`): append-only segment files, a CRC per record, one
//! committer that fdatasyncs a batch before any of its 250s go out, recovery at start-up that
//! skips a torn tail, and the in-memory index the delivery engine and the admin page read.
//!
//! This file is the surface (`Spool` and what it hands out); the parts live beside it:
//! `envelope` (the queue's data: IDs, envelopes, entries), `record` (the on-disk record),
//! `committer` (group commit), `index` (messages not yet final, live messages per segment)
//! and `recovery` (start-up replay, torn tails, damage).

mod committer;
mod envelope;
mod index;
mod record;
mod recovery;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use committer::{Commit, Gate, Shared, Stats, segment_path};
pub use envelope::{Envelope, Final, Location, QueueEntry, QueueId, TlsHeader};
use index::Index;
use record::Decoded;
use recovery::recover;
pub use recovery::{DAMAGED_DIR, Damage, Recovery, damaged_segments};

#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Shared with the committer, which inserts each message before its 250 can be sent.
    index: Arc<Mutex<Index>>,
    gate: Arc<Gate>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    /// The segment the committer writes now: never deleted.
    active_segment: Arc<AtomicU64>,
    /// Told the ID of each newly committed message (the delivery engine).
    subscriber: Mutex<Option<tokio::sync::mpsc::UnboundedSender<QueueId>>>,
    /// Segment files held open for reads (an `openat` per delivery was a tenth of the
    /// syscalls of a relayed message); dropped before a segment is unlinked.
    readers: Mutex<BTreeMap<u64, Arc<std::fs::File>>>,
}

/// How many segment files stay open for reads (within `Config::fd_budget`'s reserve).
const OPEN_READERS: usize = 4;

impl Spool {
    /// Open the spool in `dir`, replaying every segment into the index, and start the
    /// committer. New records always go to a new segment, so a torn tail is never appended to.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Spool, Recovery)> {
        crate::fsutil::private_dir(dir)?;
        let (index, recovery, last_segment) = recover(dir)?;
        let max_id = recovery.max_id.map(|id| id.0 + 1).unwrap_or(0);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let active_segment = Arc::new(AtomicU64::new(last_segment + 1));
        let index = Arc::new(Mutex::new(index));
        let gate = Arc::new(Gate::default());
        let thread = {
            let shared = Shared {
                dir: dir.to_path_buf(),
                segment_bytes,
                stats: stats.clone(),
                active: active_segment.clone(),
                index: index.clone(),
                gate: gate.clone(),
            };
            std::thread::Builder::new()
                .name("spool-committer".into())
                .spawn(move || committer::run(rx, last_segment + 1, shared))?
        };
        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                index,
                gate,
                next_id: AtomicU64::new(max_id.max(now_micros())),
                stats,
                active_segment,
                subscriber: Mutex::new(None),
                readers: Mutex::new(BTreeMap::new()),
            }),
        };
        spool.delete_finished_segments();
        Ok((spool, recovery))
    }

    pub fn next_id(&self) -> QueueId {
        QueueId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Append the message and wait until it is on disk and in the index. Only after `Ok` may
    /// the client be told 250; on `Err` nothing of it is in the queue.
    pub async fn commit(&self, id: QueueId, envelope: Envelope, message: &[u8]) -> io::Result<()> {
        let record = record::encode_message(id, &envelope, message);
        self.append(record, Some((id, envelope, message.len())))
            .await?;
        self.poke(id);
        Ok(())
    }

    /// `commit` of a message given in parts (our Received header, the client's bytes), which
    /// are dropped once the record is built: while the sync is awaited, the record is the
    /// only copy of the message in memory.
    pub async fn commit_owned(
        &self,
        id: QueueId,
        envelope: Envelope,
        parts: Vec<Vec<u8>>,
    ) -> io::Result<()> {
        let size = parts.iter().map(Vec::len).sum();
        let record = {
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            record::encode_message_parts(id, &envelope, &slices)
        };
        drop(parts);
        self.append(record, Some((id, envelope, size))).await?;
        self.poke(id);
        Ok(())
    }

    /// Durably record recipients that reached a final state (returns once synced). Once
    /// every recipient of the message is final, it leaves the queue; on restart, final
    /// recipients are not retried.
    pub async fn record_outcomes(&self, id: QueueId, outcomes: &[(u32, Final)]) -> io::Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.append(record::encode_outcome(id, outcomes), None)
            .await?;
        self.apply_final(id, outcomes).await;
        Ok(())
    }

    /// `record_outcomes` for a delivery's outcomes, without waiting: the record is handed
    /// to the committer, which writes it with its next batch and syncs it within
    /// `committer::LAZY_SYNC`. Losing it (a power cut in that window, a failed write, said
    /// in the log) means the recipient is delivered again, never that a message is lost:
    /// the message's own record stays until the outcome is applied here, and a segment goes
    /// only when every message in it is final.
    pub async fn record_delivery_outcomes(
        &self,
        id: QueueId,
        outcomes: &[(u32, Final)],
    ) -> io::Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.send(Commit {
            record: record::encode_outcome(id, outcomes),
            entry: None,
            done: None,
        })?;
        self.apply_final(id, outcomes).await;
        Ok(())
    }

    /// Apply recorded outcomes to the index; a finished message leaves it, and segments
    /// left with no live message are deleted.
    async fn apply_final(&self, id: QueueId, outcomes: &[(u32, Final)]) {
        let deletable = {
            let mut index = self.lock_index();
            let finished = index.messages.get_mut(&id).is_some_and(|e| {
                e.apply(outcomes);
                e.is_final()
            });
            if finished {
                index.finish(id);
            }
            finished && index.has_deletable(self.inner.active_segment.load(Ordering::SeqCst))
        };
        if deletable {
            // Unlinking is file-system work: off the async workers.
            let spool = self.clone();
            let _ = tokio::task::spawn_blocking(move || spool.delete_finished_segments()).await;
        }
    }

    /// Put a message on hold or release it, durably. `None` if there is no such message,
    /// else whether this changed it: a message already in that state is left as it is (no
    /// record written), so the admin is told what was really released, as `postsuper -H`
    /// counts only the messages it took off hold.
    pub async fn set_held(&self, id: QueueId, held: bool) -> io::Result<Option<bool>> {
        match self.get(id) {
            None => return Ok(None),
            Some(e) if e.held == held => return Ok(Some(false)),
            Some(_) => {}
        }
        let location = self.append(record::encode_hold(id, held), None).await?;
        let mut index = self.lock_index();
        index.touch(location.segment);
        // Read and set under the lock: of two releases at once, one is told it released.
        let was = index
            .messages
            .get_mut(&id)
            .map(|e| std::mem::replace(&mut e.held, held));
        drop(index);
        let changed = was.map(|was| was != held);
        if changed == Some(true) && !held {
            self.poke(id);
        }
        Ok(changed)
    }

    /// Remove a message without delivering it or bouncing it. False if there is none.
    pub async fn delete(&self, id: QueueId) -> io::Result<bool> {
        let Some(entry) = self.get(id) else {
            return Ok(false);
        };
        let outcomes: Vec<(u32, Final)> = entry
            .pending()
            .into_iter()
            .map(|i| (i as u32, Final::Deleted))
            .collect();
        self.record_outcomes(id, &outcomes).await?;
        Ok(true)
    }

    /// Remember how the last attempt went, for the queue listing (not persisted).
    pub fn note_attempt(&self, id: QueueId, last_error: Option<String>) {
        let now = crate::fsutil::unix_now();
        if let Some(e) = self.lock_index().messages.get_mut(&id) {
            e.attempts += 1;
            e.last_error = last_error;
            e.last_attempt_unix = Some(now);
        }
    }

    /// Remember when the delivery engine will try `id` next, for the queue listing.
    pub fn note_next_attempt(&self, id: QueueId, at_unix: u64) {
        if let Some(e) = self.lock_index().messages.get_mut(&id) {
            e.next_attempt_unix = Some(at_unix);
        }
    }

    /// Ask the delivery engine to try `id` now.
    pub fn poke(&self, id: QueueId) {
        let subscriber = self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = subscriber.as_ref() {
            let _ = tx.send(id);
        }
    }

    /// Tell `tx` the ID of every message committed from now on.
    pub fn subscribe(&self, tx: tokio::sync::mpsc::UnboundedSender<QueueId>) {
        *self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    async fn append(
        &self,
        record: Vec<u8>,
        entry: Option<(QueueId, Envelope, usize)>,
    ) -> io::Result<Location> {
        let (done, wait) = oneshot::channel();
        self.send(Commit {
            record,
            entry,
            done: Some(done),
        })?;
        wait.await
            .map_err(|_| io::Error::other("spool committer stopped"))?
    }

    fn send(&self, commit: Commit) -> io::Result<()> {
        let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        let tx = tx
            .as_ref()
            .ok_or_else(|| io::Error::other("spool is shut down"))?;
        tx.send(commit)
            .map_err(|_| io::Error::other("spool committer stopped"))?;
        self.inner.stats.submitted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn delete_finished_segments(&self) {
        let active = self.inner.active_segment.load(Ordering::SeqCst);
        let deletable = self.lock_index().take_deletable(active);
        for seg in deletable {
            self.inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&seg);
            let path = segment_path(&self.inner.dir, seg);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(target: "postern/spool", "warning: {}: cannot remove finished segment: {e}", path.display());
            }
        }
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        // Index updates are small and complete under the lock; a panic elsewhere cannot
        // leave it half-changed, so a poisoned lock is still usable.
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue IDs of every message not yet final (no copy of their envelopes).
    pub fn ids(&self) -> Vec<QueueId> {
        self.lock_index().messages.keys().copied().collect()
    }

    pub fn list(&self) -> Vec<QueueEntry> {
        self.lock_index().messages.values().cloned().collect()
    }

    /// Look at every message not yet final, under the index lock and without copying them
    /// (the queue page filters 100,000 of them per request): keep `f` short.
    pub fn visit(&self, mut f: impl FnMut(&QueueEntry)) {
        for e in self.lock_index().messages.values() {
            f(e);
        }
    }

    pub fn get(&self, id: QueueId) -> Option<QueueEntry> {
        self.lock_index().messages.get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock_index().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message bytes, read on the calling thread when the page cache holds them (the
    /// common case: a message delivered just after it was committed), else by
    /// `read_message` off the async workers (a disk read blocks).
    pub async fn load_message(&self, id: QueueId) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.read_cached(id)? {
            return Ok(bytes);
        }
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.read_message(id))
            .await
            .map_err(|e| io::Error::other(format!("{id}: spool read task failed: {e}")))?
    }

    /// Test hook: hold the committer before its next batch (`false` lets it go on), so the
    /// records sent meanwhile are written with one sync.
    #[doc(hidden)]
    pub fn pause_commits(&self, paused: bool) {
        self.inner.gate.set(paused);
    }

    /// Records handed to the committer since start, written or still waiting.
    #[doc(hidden)]
    pub fn submitted(&self) -> u64 {
        self.inner.stats.submitted.load(Ordering::SeqCst)
    }

    /// The message bytes as accepted (Received header included), CRC-checked again.
    pub fn read_message(&self, id: QueueId) -> io::Result<Vec<u8>> {
        let location = self.location(id)?;
        let file = self.segment_file(location.segment)?;
        let mut buf = vec![0; location.len as usize];
        file.read_exact_at(&mut buf, location.offset)?;
        decode_message(id, buf)
    }

    /// `read_message` if the record's pages are all cached (`preadv2` with `RWF_NOWAIT`
    /// never waits for the disk); `None` when the read would have to.
    fn read_cached(&self, id: QueueId) -> io::Result<Option<Vec<u8>>> {
        let location = self.location(id)?;
        let file = self.segment_file(location.segment)?;
        let mut buf = vec![0; location.len as usize];
        match crate::fsutil::pread_nowait(&file, &mut buf, location.offset) {
            Some(n) if n == buf.len() => decode_message(id, buf).map(Some),
            _ => Ok(None),
        }
    }

    fn location(&self, id: QueueId) -> io::Result<Location> {
        self.lock_index()
            .messages
            .get(&id)
            .map(|e| e.location)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{id}: no such message"))
            })
    }

    /// The segment's file, opened once. A message in the index pins its segment, so the
    /// file exists; a segment is forgotten here before it is unlinked, and a reader that
    /// still holds it reads the unlinked file's bytes, unchanged.
    fn segment_file(&self, segment: u64) -> io::Result<Arc<std::fs::File>> {
        let mut open = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = open.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(std::fs::File::open(segment_path(&self.inner.dir, segment))?);
        if open.len() >= OPEN_READERS {
            // The oldest first: deliveries mostly read the newest segments.
            open.pop_first();
        }
        open.insert(segment, file.clone());
        Ok(file)
    }

    /// Damaged segments kept in `damaged/` (this start's and earlier ones), with their regions.
    pub fn damaged(&self) -> Vec<Damage> {
        damaged_segments(&self.inner.dir)
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
        self.inner.gate.set(false);
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

/// The message bytes of a record read whole into `buf`, in `buf` itself (a 100 KiB message
/// is not copied into a new allocation).
fn decode_message(id: QueueId, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let (start, len) = match record::decode(&buf) {
        Decoded::Message { message, .. } => (
            message.as_ptr() as usize - buf.as_ptr() as usize,
            message.len(),
        ),
        Decoded::Outcome { .. } | Decoded::Hold { .. } => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{id}: index points at an outcome record"),
            ));
        }
        Decoded::Torn(why) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{id}: spool record damaged: {why}"),
            ));
        }
    };
    buf.truncate(start + len);
    buf.drain(..start);
    Ok(buf)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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

    /// Reads through the held-open segment files: more segments than stay open (each
    /// message in its own tiny segment), read out of order and again; a finished segment
    /// is let go before it is unlinked, and the others still read.
    #[tokio::test]
    async fn reads_through_held_open_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 100).unwrap();
        let mut ids = Vec::new();
        for n in 0..(OPEN_READERS * 3) {
            let id = spool.next_id();
            let body = format!("message {n}\r\n");
            spool
                .commit(id, env("a@x.example"), body.as_bytes())
                .await
                .unwrap();
            ids.push((id, body));
        }
        for (id, body) in ids.iter().rev().chain(ids.iter()) {
            assert_eq!(spool.load_message(*id).await.unwrap(), body.as_bytes());
        }
        let (first, _) = ids[0];
        let first_segment = spool.get(first).unwrap().location.segment;
        spool.segment_file(first_segment).unwrap();
        spool
            .record_outcomes(first, &[(0, Final::Delivered)])
            .await
            .unwrap();
        let open = spool
            .inner
            .readers
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>();
        assert!(!open.contains(&first_segment), "{open:?}");
        assert!(!segment_path(dir.path(), first_segment).exists());
        for (id, body) in &ids[1..] {
            assert_eq!(spool.read_message(*id).unwrap(), body.as_bytes());
        }
        assert!(spool.inner.readers.lock().unwrap().len() <= OPEN_READERS);
    }

    /// A delivery's outcome is not waited for, but the committer syncs it by itself (no
    /// other record needs to come along), and a restart from the files then knows it.
    #[tokio::test]
    async fn delivery_outcomes_are_synced_without_being_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let (a, b) = (spool.next_id(), spool.next_id());
        spool.commit(a, env("a@x.example"), b"a\r\n").await.unwrap();
        spool.commit(b, env("b@x.example"), b"b\r\n").await.unwrap();
        let (_, syncs) = spool.stats();
        spool
            .record_delivery_outcomes(a, &[(0, Final::Delivered)])
            .await
            .unwrap();
        assert!(spool.get(a).is_none(), "final at once in the index");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spool.stats().1 == syncs {
            assert!(std::time::Instant::now() < deadline, "never synced");
            tokio::task::yield_now().await;
        }
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let (after, rec) = Spool::open(copy.path(), 1 << 20).unwrap();
        assert_eq!(rec.messages, 1);
        assert!(after.get(a).is_none() && after.get(b).is_some());
        spool.shutdown();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        // Held before its first batch, the committer sees all 50 records waiting at once.
        spool.pause_commits(true);
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
        while spool.submitted() < 50 {
            tokio::task::yield_now().await;
        }
        spool.pause_commits(false);
        for t in tasks {
            t.await.unwrap();
        }
        let (records, syncs) = spool.stats();
        assert_eq!(records, 50);
        assert_eq!(syncs, 1, "50 waiting records, one group commit");
        assert_eq!(spool.len(), 50);
    }

    #[tokio::test]
    async fn outcomes_finish_messages_and_free_segments() {
        let dir = tempfile::tempdir().unwrap();
        let two = Envelope {
            recipients: vec!["a@x.example".into(), "b@x.example".into()],
            ..env("unused@x.example")
        };
        let (spool, _) = Spool::open(dir.path(), 100).unwrap();
        let (a, b) = (spool.next_id(), spool.next_id());
        spool.commit(a, two.clone(), &[b'a'; 200]).await.unwrap();
        spool.commit(b, two.clone(), &[b'b'; 200]).await.unwrap();
        spool
            .record_outcomes(a, &[(1, Final::Bounced)])
            .await
            .unwrap();
        assert_eq!(spool.get(a).unwrap().pending(), vec![0]);
        spool.shutdown();

        // Restart: the bounced recipient stays final.
        let (spool, rec) = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(rec.messages, 2);
        assert_eq!(spool.get(a).unwrap().pending(), vec![0]);
        spool
            .record_outcomes(a, &[(0, Final::Delivered)])
            .await
            .unwrap();
        assert!(spool.get(a).is_none());
        // Segment 1 (message a) is gone; segment 2 (b) is still needed.
        assert!(!segment_path(dir.path(), 1).exists());
        assert!(segment_path(dir.path(), 2).exists());
        spool
            .record_outcomes(b, &[(0, Final::Delivered), (1, Final::Delivered)])
            .await
            .unwrap();
        spool.shutdown();
        let (spool, rec) = Spool::open(dir.path(), 100).unwrap();
        assert!(spool.is_empty());
        assert_eq!(rec.messages, 0);
        // A new ID is still above every ID ever used.
        assert!(spool.next_id() > b);
    }

    #[tokio::test]
    async fn hold_survives_restart_and_delete_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let (a, b) = (spool.next_id(), spool.next_id());
        spool.commit(a, env("a@x.example"), b"a").await.unwrap();
        spool.commit(b, env("b@x.example"), b"b").await.unwrap();
        assert_eq!(spool.set_held(a, true).await.unwrap(), Some(true));
        assert_eq!(spool.set_held(a, true).await.unwrap(), Some(false));
        assert_eq!(spool.set_held(b, false).await.unwrap(), Some(false));
        assert_eq!(spool.set_held(QueueId(1), true).await.unwrap(), None);
        assert!(spool.delete(b).await.unwrap());
        spool.shutdown();
        let (spool, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.messages, 1);
        assert!(spool.get(a).unwrap().held);
        assert!(spool.get(b).is_none());
        assert_eq!(spool.set_held(a, false).await.unwrap(), Some(true));
        spool.shutdown();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!spool.get(a).unwrap().held);
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
        // Other people's mail: owner-only.
        use std::os::unix::fs::PermissionsExt;
        for n in 1..=3 {
            let mode = std::fs::metadata(segment_path(dir.path(), n))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "segment {n}");
        }
        // One left 0644 by an older version is narrowed at the next start.
        std::fs::set_permissions(
            segment_path(dir.path(), 2),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let (spool, rec) = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(rec.segments, 3);
        assert_eq!(spool.len(), 3);
        let mode = std::fs::metadata(segment_path(dir.path(), 2))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
