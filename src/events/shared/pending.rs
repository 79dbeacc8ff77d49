//! Records kept on this node's disk while the shared database is away
//! (`data/log/shared-pending.jsonl`), and each batch stored in one transaction: a record
//! waits there with the ID that makes its replay idempotent, and is stored first when the
//! database is back.

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::Delivery;
use super::super::received::Received;
use super::super::records::{Batch, RefusalKey, StoreError};
use super::{SharedRecords, err};

/// How long a failed database is left alone before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Records replayed per transaction.
const REPLAY_CHUNK: usize = 2_000;

/// A record waiting in `pending`, with the ID that makes its replay idempotent: a delivery
/// (as it always was), a received record, or a refusal count.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    rid: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<Delivery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    received: Option<Received>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<(RefusalKey, u64)>,
}

impl Pending {
    fn of(batch: &Batch<'_>) -> Vec<Pending> {
        let new = || Pending {
            rid: rand::random::<i64>(),
            record: None,
            received: None,
            refused: None,
        };
        let deliveries = batch.deliveries.iter().map(|(d, _)| Pending {
            record: Some((*d).clone()),
            ..new()
        });
        let received = batch.received.iter().map(|(r, _)| Pending {
            received: Some((*r).clone()),
            ..new()
        });
        let refused = batch.refused.iter().map(|(k, n)| Pending {
            refused: Some(((*k).clone(), *n)),
            ..new()
        });
        deliveries.chain(received).chain(refused).collect()
    }
}

impl SharedRecords {
    /// Store `batch` (after whatever waits in `pending`), or keep it there.
    pub(super) fn store_or_keep(&self, batch: &Batch<'_>) -> Result<(), StoreError> {
        let batch = Pending::of(batch);
        if batch.is_empty() {
            return Ok(());
        }
        let stored = self.ready_to_try().and_then(|()| {
            self.replay()?;
            self.store(&batch)
        });
        match stored {
            Ok(()) => {
                self.away.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed();
                self.keep_pending(&batch)?;
                if !self.away.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "postern/master", "warning: {}: delivery records are kept in {} until the database is back", e.message, self.pending.display());
                }
                Ok(())
            }
        }
    }

    /// Not within `RETRY_AFTER` of a failure.
    pub(super) fn ready_to_try(&self) -> Result<(), StoreError> {
        let at = *self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(t) if Instant::now() < t => Err(err("the database was away a moment ago".into())),
            _ => self.ensure_schema(),
        }
    }

    pub(super) fn failed(&self) {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + RETRY_AFTER);
    }

    /// Append to `pending` (0600, synced: it holds what the database has not got yet).
    fn keep_pending(&self, batch: &[Pending]) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: std::io::Error| err(format!("{}: {e}", self.pending.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.pending)
            .map_err(fail)?;
        let mut out = Vec::new();
        for p in batch {
            serde_json::to_writer(&mut out, p).map_err(|e| fail(e.into()))?;
            out.push(b'\n');
        }
        file.write_all(&out)
            .and_then(|()| file.sync_data())
            .map_err(fail)
    }

    /// Store what waited in `pending`, a chunk per transaction; the file goes only once all
    /// of it is in. A replay cut short is replayed again: each record's `rid` makes a second
    /// insert a no-op.
    pub(super) fn replay(&self) -> Result<(), StoreError> {
        let file = match std::fs::File::open(&self.pending) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(format!("{}: {e}", self.pending.display()))),
        };
        let mut chunk = Vec::new();
        let mut replayed = 0usize;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| err(format!("{}: {e}", self.pending.display())))?;
            // A torn last line (a crash mid-append) is in delivery.jsonl all the same.
            if let Ok(p) = serde_json::from_str::<Pending>(&line) {
                chunk.push(p);
            }
            if chunk.len() >= REPLAY_CHUNK {
                self.store(&chunk)?;
                replayed += chunk.len();
                chunk.clear();
            }
        }
        self.store(&chunk)?;
        replayed += chunk.len();
        std::fs::remove_file(&self.pending)
            .map_err(|e| err(format!("{}: {e}", self.pending.display())))?;
        tracing::info!(target: "postern/master", "{replayed} delivery record(s) kept while the settings database was away are now stored in it");
        Ok(())
    }

    /// One transaction; a record stored before (same `rid`) is skipped.
    fn store(&self, batch: &[Pending]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (mut records, mut rids) = (Vec::new(), Vec::new());
        let (mut received, mut refused) = (Vec::new(), Vec::new());
        for p in batch {
            if let Some(d) = &p.record {
                records.push(d.clone());
                rids.push(p.rid);
            }
            if let Some(r) = &p.received {
                received.push((p.rid, r.clone()));
            }
            if let Some(c) = &p.refused {
                refused.push((p.rid, c.clone()));
            }
        }
        self.partitions(false, records.iter().map(|d| d.unix_time))?;
        self.partitions(true, received.iter().map(|(_, r)| r.unix_time))?;
        let node = self.node.to_string();
        self.db()?
            .with(move |c| {
                let mut tx = c.transaction()?;
                Self::insert_received_rows(&mut tx, &node, &received)?;
                Self::insert_refusal_rows(&mut tx, &node, &refused)?;
                Self::insert_delivery_rows(&mut tx, &node, &records, &rids)?;
                tx.commit()
            })
            .map_err(err)
    }
}
