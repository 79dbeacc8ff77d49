//! Group commit: one thread writes every record that is waiting, fdatasyncs once, and only
//! then releases the sessions waiting for their 250. Many messages, one sync.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use super::envelope::{Envelope, Location, QueueEntry, QueueId};
use super::index::Index;

pub struct Commit {
    pub record: Vec<u8>,
    /// For a message record: what goes into the index. The committer inserts it after the
    /// sync and before it answers, so a message is indexed (and its segment pinned) before
    /// anyone can say 250 for it, and before the segment stops being the active one.
    pub entry: Option<(QueueId, Envelope, usize)>,
    /// Who waits for the record to be durable. `None`: a record nobody waits for (a
    /// delivery's outcome), written at once and synced with the next batch that needs a
    /// sync, or within `LAZY_SYNC`.
    pub done: Option<oneshot::Sender<io::Result<Location>>>,
}

/// The longest a record nobody waits for stays written but not synced. A process crash
/// does not lose it (it is in the page cache); a power cut within this window loses at
/// most the outcome, and the recipient is delivered again: at least once, as Postfix's
/// queue manager, which does not fsync when it marks a recipient done.
const LAZY_SYNC: std::time::Duration = std::time::Duration::from_millis(20);

/// Test hook: while paused, the committer holds the batch it has started, so every record
/// sent meanwhile joins it (a deterministic group commit, not a lucky one).
#[derive(Default)]
pub struct Gate {
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl Gate {
    pub fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = paused;
        self.resumed.notify_all();
    }

    fn wait(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        while *paused {
            paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default, Debug)]
pub struct Stats {
    pub records: AtomicU64,
    pub syncs: AtomicU64,
    /// Records handed to the committer (committed or not yet).
    pub submitted: AtomicU64,
}

/// The most one batch gathers before it syncs.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Records per `writev` (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 1024;

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:08}.log"))
}

struct Segment {
    dir: PathBuf,
    number: u64,
    file: File,
    len: u64,
}

impl Segment {
    /// A new, empty segment whose directory entry is durable before any record in it is
    /// acknowledged (fdatasync of the file alone does not persist its name).
    fn create(dir: &Path, number: u64) -> io::Result<Segment> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(segment_path(dir, number))?;
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            number,
            file,
            len: 0,
        })
    }

    /// The batch's records in one `writev` (more only for a short write), synced if
    /// `sync`.
    fn write_batch(&mut self, batch: &[Commit], sync: bool) -> io::Result<Vec<Location>> {
        let mut locations = Vec::with_capacity(batch.len());
        let mut offset = self.len;
        for c in batch {
            locations.push(Location {
                segment: self.number,
                offset,
                len: c.record.len() as u64,
            });
            offset += c.record.len() as u64;
        }
        for chunk in batch.chunks(MAX_IOV) {
            let mut slices: Vec<io::IoSlice<'_>> =
                chunk.iter().map(|c| io::IoSlice::new(&c.record)).collect();
            let mut left = &mut slices[..];
            while !left.is_empty() {
                let n = self.file.write_vectored(left)?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.len += n as u64;
                io::IoSlice::advance_slices(&mut left, n);
            }
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(locations)
    }

    /// Undo a failed batch so no half-written record sits before later good ones.
    fn rewind(&mut self, to: u64) -> io::Result<()> {
        self.file.set_len(to)?;
        self.file.seek(SeekFrom::Start(to))?;
        self.len = to;
        self.file.sync_data()
    }
}

/// What the committer thread shares with the spool.
pub struct Shared {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub stats: Arc<Stats>,
    /// The segment being written: never deleted, and only segments below it are closed.
    pub active: Arc<AtomicU64>,
    pub index: Arc<Mutex<Index>>,
    pub gate: Arc<Gate>,
}

pub fn run(rx: Receiver<Commit>, first_segment: u64, shared: Shared) {
    let Shared {
        dir,
        segment_bytes,
        stats,
        active,
        index,
        gate,
    } = shared;
    let mut next_number = first_segment;
    let mut segment: Option<Segment> = None;
    // Records written and not yet synced (only ever records nobody waits for).
    let mut unsynced = false;
    loop {
        let first = match next(&rx, unsynced) {
            Next::Record(c) => c,
            Next::SyncLazy => {
                sync_lazy(&mut segment, &stats, &mut unsynced);
                continue;
            }
            Next::Stop => break,
        };
        gate.wait();
        let mut batch = gather(first, &rx);
        let sync = batch.iter().any(|c| c.done.is_some());
        let result = commit_batch(&mut segment, &dir, &mut next_number, &batch, sync);
        if let Some(seg) = segment.as_ref() {
            active.store(seg.number, Ordering::SeqCst);
        }
        if sync {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(locations) => {
                unsynced = !sync;
                stats
                    .records
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                index_batch(&index, &mut batch, &locations);
                answer(batch, locations);
            }
            Err(e) => refuse(batch, &e),
        }
        if segment.as_ref().is_some_and(|s| s.len >= segment_bytes) {
            // A segment is closed only with everything in it synced.
            sync_lazy(&mut segment, &stats, &mut unsynced);
            segment = None;
            // Until the next batch opens it, the next segment is the active one.
            active.store(next_number, Ordering::SeqCst);
        }
    }
    sync_lazy(&mut segment, &stats, &mut unsynced);
}

// Returned once per record and matched at once, never stored: boxing would only add an
// allocation per record.
#[allow(clippy::large_enum_variant)]
enum Next {
    Record(Commit),
    /// Nothing came within `LAZY_SYNC` of an unsynced write.
    SyncLazy,
    Stop,
}

/// The next record; with records written but unsynced, waiting at most `LAZY_SYNC`.
fn next(rx: &Receiver<Commit>, unsynced: bool) -> Next {
    if !unsynced {
        return rx.recv().map_or(Next::Stop, Next::Record);
    }
    match rx.recv_timeout(LAZY_SYNC) {
        Ok(c) => Next::Record(c),
        Err(RecvTimeoutError::Timeout) => Next::SyncLazy,
        // The last sync happens on the way out.
        Err(RecvTimeoutError::Disconnected) => Next::Stop,
    }
}

/// `first` and every record already waiting, up to `MAX_BATCH_BYTES`.
fn gather(first: Commit, rx: &Receiver<Commit>) -> Vec<Commit> {
    let mut bytes = first.record.len();
    let mut batch = vec![first];
    while bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(c) => {
                bytes += c.record.len();
                batch.push(c);
            }
            Err(_) => break,
        }
    }
    batch
}

fn answer(batch: Vec<Commit>, locations: Vec<Location>) {
    for (c, loc) in batch.into_iter().zip(locations) {
        if let Some(done) = c.done {
            let _ = done.send(Ok(loc));
        }
    }
}

fn refuse(batch: Vec<Commit>, e: &io::Error) {
    let lazy = batch.iter().filter(|c| c.done.is_none()).count();
    tracing::error!(target: "postern/spool", "warning: spool write failed, {} message(s) refused with 452, {lazy} delivery outcome(s) not recorded (delivered again after a restart): {e}", batch.len() - lazy);
    for c in batch {
        if let Some(done) = c.done {
            let _ = done.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
    }
}

/// Sync the records nobody waited for, if any are unsynced.
fn sync_lazy(segment: &mut Option<Segment>, stats: &Stats, unsynced: &mut bool) {
    if !std::mem::take(unsynced) {
        return;
    }
    if let Some(seg) = segment.as_ref() {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = seg.file.sync_data() {
            tracing::error!(target: "postern/spool", "warning: spool sync failed, delivery outcomes may be lost on a power cut (delivered again after it): {e}");
        }
    }
}

/// Index the batch's messages (and note its segment) before any of them is answered and
/// before the segment can be closed: from here on, the segment holds live messages.
fn index_batch(index: &Mutex<Index>, batch: &mut [Commit], locations: &[Location]) {
    let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
    for (c, loc) in batch.iter_mut().zip(locations) {
        index.touch(loc.segment);
        if let Some((id, envelope, size)) = c.entry.take() {
            index.insert(QueueEntry::new(id, envelope, size, *loc));
        }
    }
}

fn commit_batch(
    segment: &mut Option<Segment>,
    dir: &Path,
    next_number: &mut u64,
    batch: &[Commit],
    sync: bool,
) -> io::Result<Vec<Location>> {
    if segment.is_none() {
        *segment = Some(Segment::create(dir, *next_number)?);
        *next_number += 1;
    }
    let seg = segment.as_mut().expect("set just above");
    let start = seg.len;
    match seg.write_batch(batch, sync) {
        Ok(locations) => Ok(locations),
        Err(e) => {
            if let Err(rewind) = seg.rewind(start) {
                // Cannot clean this segment: stop using it; the torn tail it keeps is skipped
                // by recovery, and the next batch starts a new segment.
                tracing::error!(target: "postern/spool", "warning: spool segment {}: cannot truncate after failed write: {rewind}", seg.dir.display());
                *segment = None;
            }
            Err(e)
        }
    }
}
