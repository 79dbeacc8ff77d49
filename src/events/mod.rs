//! Delivery records: one per recipient per attempt, written as the Postfix line admins grep
//! for, as a JSON line with the same facts (`data/log/delivery.jsonl`, for log shippers), and
//! into the indexed store the Logs page and the dashboard search (`store`). Received records
//! (`received`): one per accepted message, as a JSON line (`data/log/received.jsonl`) and
//! into the same store, by the same thread; refusals before a message are counted there.

pub mod received;
pub mod received_query;
pub mod records;
pub mod search;
pub mod shared;
pub mod store;
pub mod tls_rpt;

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::tls::TlsInfo;
use received::{Received, Refusal};
use records::{Batch, RefusalKey};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub unix_time: u64,
    pub queue_id: String,
    pub sender: String,
    pub recipient: String,
    /// `host[ip]:port`, or `none` when no host was reached.
    pub relay: String,
    /// Postfix's `delay` and `delays=a/b/c/d`: before the queue, in the queue, connection
    /// set-up (including TLS), transmission.
    pub delay: f64,
    pub delays: [f64; 4],
    pub dsn: String,
    /// sent, deferred, bounced
    pub status: Cow<'static, str>,
    pub reply: String,
    pub starttls_offered: bool,
    pub tls: Option<TlsInfo>,
    /// Whether the peer certificate was verified, and for which name (none yet at `may`/`encrypt`).
    pub verified_name: Option<String>,
    pub policy_level: String,
    pub policy_source: String,
    /// The message rule that matched the recipient, even where another source decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The Microsoft 365 tenant the message came from, when the connector relayed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Every host tried in this attempt, in order, the one of `relay` last: an MX given up
    /// for the next one is on the record with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts_tried: Vec<HostTried>,
    /// What this attempt counts for in the recipient domain's TLS-RPT report, where its
    /// published policies were looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_rpt: Option<tls_rpt::RptOutcome>,
    /// The node that made the attempt, on records read from the database several nodes
    /// share (`settings.node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One host of an attempt and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostTried {
    /// `host[ip]:port`
    pub relay: String,
    /// sent, deferred, bounced
    pub status: Cow<'static, str>,
    pub dsn: String,
    pub reply: String,
}

/// Postfix prints delays with at most two significant decimals and no trailing zeros.
#[cfg(test)]
fn short(secs: f64) -> String {
    let mut out = String::new();
    write_short(&mut out, secs);
    out
}

/// `short`, written into `out` (the lines are made for every record a search reads).
fn write_short(out: &mut String, secs: f64) {
    use std::fmt::Write as _;
    let start = out.len();
    let _ = if secs >= 10.0 {
        write!(out, "{secs:.0}")
    } else if secs >= 0.1 {
        write!(out, "{secs:.1}")
    } else {
        write!(out, "{secs:.2}")
    };
    if out[start..].contains('.') {
        let kept = out[start..]
            .trim_end_matches('0')
            .trim_end_matches('.')
            .len();
        out.truncate(start + kept);
    }
    if out.len() == start {
        out.push('0');
    }
}

/// Where delivery records go. The JSON file is kept to a size: past `max_bytes` it becomes
/// `delivery.jsonl.1` (replacing the previous one) and a new file starts; each record is
/// appended by the delivery that made it (one `write(2)` into the page cache, no thread
/// hop). The indexed store keeps records by the retention of `[log]`; it is written by a
/// thread of its own, in large transactions, so its commits never stall a delivery.
pub struct EventLog {
    file: std::sync::Mutex<JsonFile>,
    writer: std::sync::mpsc::Sender<Msg>,
    path: PathBuf,
    /// Emptied by `close`: a stopped server lets go of the store.
    store: arc_swap::ArcSwapOption<store::Store>,
    /// Live feed of records (tests, and later the admin page's live view).
    live: tokio::sync::broadcast::Sender<Delivery>,
}

/// A record on its way to the store's thread, with its JSON line (no newline).
struct Pending {
    record: Delivery,
    line: Vec<u8>,
}

/// What the store's thread is sent: records, and at a graceful stop, the last word.
/// Records are nearly all of it, moved as before: boxing them would cost an allocation per
/// delivery to spare the one close message its size.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Pending),
    /// Written to `received.jsonl` and stored by the thread, off the session's path.
    Received(Received),
    Refused(RefusalKey),
    /// Store what came before, make it durable, let go of the store, then say so.
    Close(std::sync::mpsc::SyncSender<()>),
}

/// `delivery.jsonl` and its length, rotated past `max_bytes`.
struct JsonFile {
    file: Option<(std::fs::File, u64)>,
    path: PathBuf,
    max_bytes: u64,
}

/// A UTC day, as refusals are counted by.
const DAY: u64 = 86_400;
/// Records read off the channel at once.
const BATCH: usize = 1024;
/// The store takes records in transactions of up to this many, or whatever has waited
/// `STORE_LINGER`, or whatever is there when nothing came for `GATHER`: a redb commit
/// costs the same for one record as for hundreds (issue 15's measurement).
const STORE_BATCH: usize = 512;
const STORE_LINGER: Duration = Duration::from_millis(100);
const GATHER: Duration = Duration::from_millis(10);

impl EventLog {
    pub fn open(data_dir: &Path, max_bytes: u64) -> std::io::Result<EventLog> {
        EventLog::open_with(data_dir, max_bytes, None)
    }

    /// With `retention`, records also go into the indexed store `data/log/records.redb`; a
    /// store that cannot be opened is said once and the JSON file goes on alone.
    pub fn open_with(
        data_dir: &Path,
        max_bytes: u64,
        retention: Option<store::Retention>,
    ) -> std::io::Result<EventLog> {
        let dir = data_dir.join("log");
        crate::fsutil::private_dir(&dir)?;
        let store = retention.and_then(|r| {
            let at = dir.join("records.redb");
            match store::Store::open(&at, r) {
                Ok(s) => {
                    let _ = crate::fsutil::restrict_to_owner(&at);
                    Some(Arc::new(s))
                }
                Err(e) => {
                    tracing::warn!(target: "postern/smtp", "warning: {e}: the Logs page and the dashboard have no records until it can be opened");
                    None
                }
            }
        });
        EventLog::open_with_store(data_dir, max_bytes, store)
    }

    /// The JSON file, and `store` (this node's, or the one the nodes share) for the pages.
    pub fn open_with_store(
        data_dir: &Path,
        max_bytes: u64,
        store: Option<Arc<store::Store>>,
    ) -> std::io::Result<EventLog> {
        let dir = data_dir.join("log");
        crate::fsutil::private_dir(&dir)?;
        let path = dir.join("delivery.jsonl");
        let file = JsonFile::open_file(&path)?;
        let len = file.metadata()?.len();
        let live = tokio::sync::broadcast::channel(1024).0;
        let json = JsonFile {
            file: Some((file, len)),
            path: path.clone(),
            max_bytes: max_bytes.max(1),
        };
        let received_path = dir.join("received.jsonl");
        let received_file = JsonFile::open_file(&received_path)?;
        let received_len = received_file.metadata()?.len();
        let writer = Writer {
            store: store.clone(),
            last_durable: Instant::now(),
            since_prune: 0,
            last_prune: None,
            waiting: Vec::new(),
            received: Vec::new(),
            refused: std::collections::HashMap::new(),
            received_json: JsonFile {
                file: Some((received_file, received_len)),
                path: received_path,
                max_bytes: max_bytes.max(1),
            },
            live: live.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("delivery-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(EventLog {
            file: std::sync::Mutex::new(json),
            writer: tx,
            path,
            store: arc_swap::ArcSwapOption::new(store),
            live,
        })
    }

    /// The indexed store, when it is open.
    pub fn store(&self) -> Option<Arc<store::Store>> {
        self.store.load_full()
    }

    /// At a graceful stop: every record so far stored and made durable (the TLS-RPT counts
    /// of the last second too), and the store closed, so the next start opens it, even in
    /// this process. Blocks until the store's thread has done so (at most 10 s).
    pub fn close(&self) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.writer.send(Msg::Close(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(10));
        }
        self.store.store(None);
    }

    /// A message accepted (after its 250 was decided): its JSON line and its place in the
    /// store are made by the store's thread, in its next batch; the session does not wait.
    pub fn received(&self, r: Received) {
        let _ = self.writer.send(Msg::Received(r));
    }

    /// A session refused before a message (plaintext refused, relay denied): counted per
    /// UTC day, client address, sender domain and reason, not stored per attempt.
    pub fn refused(&self, client: std::net::IpAddr, sender_domain: Option<&str>, reason: Refusal) {
        let now = crate::fsutil::unix_now();
        let domain = sender_domain
            .unwrap_or("")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let key = (
            now - now % DAY,
            client.to_canonical().to_string(),
            domain,
            reason,
        );
        let _ = self.writer.send(Msg::Refused(key));
    }

    /// Every record from now on (a slow reader misses the oldest, never blocks delivery).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Delivery> {
        self.live.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Log the line and append the JSON record (before this returns); the store's thread
    /// then stores it and publishes it: whoever sees it in the feed finds it in the file and
    /// in the store.
    pub async fn record(&self, d: &Delivery) {
        tracing::info!(target: "postern/smtp", "{}", d.postfix_line());
        let mut line = serde_json::to_vec(d).unwrap_or_default();
        line.push(b'\n');
        {
            let mut json = self.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = json.append(&line) {
                tracing::warn!(target: "postern/smtp", "warning: {}: cannot write delivery record: {e}", json.path.display());
            }
        }
        line.pop();
        let _ = self.writer.send(Msg::Record(Pending {
            record: d.clone(),
            line,
        }));
    }
}

/// What the delivery records say of one host's STARTTLS (Hermes' "search the log for `Host
/// offered STARTTLS`", answered directly).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StarttlsSeen {
    pub host: String,
    /// Records of deliveries (any status) that reached the host since the cut-off.
    pub connections: u64,
    /// Of those, how many saw STARTTLS offered.
    pub offered: u64,
    /// UNIX seconds of the latest such record.
    pub last: Option<u64>,
}

impl StarttlsSeen {
    /// "offered STARTTLS in 12 of 12 deliveries in the last 30 days (last 2026-11-30 09:12:00
    /// UTC)": the pages' style of time, as the Logs table beside it shows them.
    pub fn describe(&self, days: u64) -> String {
        if self.connections == 0 {
            return format!("no deliveries to this host in the last {days} days");
        }
        let last = self
            .last
            .map(|t| format!("{} UTC", crate::proto::utc_at(t)))
            .unwrap_or_default();
        format!(
            "offered STARTTLS in {} of {} deliveries in the last {days} days (last {last})",
            self.offered, self.connections
        )
    }
}

/// The store, owned by its writer thread.
struct Writer {
    store: Option<Arc<store::Store>>,
    last_durable: Instant,
    /// Records stored since the last retention pass, and when it was (none yet: the first
    /// batch after start has one).
    since_prune: usize,
    last_prune: Option<Instant>,
    /// Written to the file, waiting for the store (JSON line without its newline), and
    /// since when the oldest has waited.
    waiting: Vec<(Delivery, Vec<u8>)>,
    /// Received records waiting for their file and the store.
    received: Vec<Received>,
    /// Refusals counted since the last batch.
    refused: std::collections::HashMap<RefusalKey, u64>,
    /// `received.jsonl`, written by this thread a batch at a time.
    received_json: JsonFile,
    live: tokio::sync::broadcast::Sender<Delivery>,
}

/// How often the store's batches are made durable, and how many records between retention
/// passes.
const DURABLE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: usize = 10_000;
const PRUNE_AFTER: Duration = Duration::from_secs(3600);
/// How often a quiet store's thread looks up from its channel (`Store::tick`).
const TICK: Duration = Duration::from_secs(1);

impl Writer {
    /// Records are stored in large transactions, then published.
    fn run(mut self, rx: std::sync::mpsc::Receiver<Msg>) {
        let mut closing = None;
        while closing.is_none() {
            let first = match rx.recv_timeout(TICK) {
                Ok(m) => m,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(store) = &self.store {
                        store.tick();
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            closing = self.take(first, &rx);
            // Records that come now are taken in `GATHER` steps: the thread sleeps rather
            // than waits on the channel, so a delivery's send wakes nobody (a wake-up per
            // record was a context switch per message).
            let since = Instant::now();
            while closing.is_none()
                && self.pending() < STORE_BATCH
                && since.elapsed() < STORE_LINGER
            {
                std::thread::sleep(GATHER);
                let before = self.pending();
                match rx.try_recv() {
                    Ok(m) => closing = self.take(m, &rx),
                    Err(_) => break,
                }
                if self.pending() == before {
                    break;
                }
            }
            self.flush();
        }
        self.flush();
        // The last batches, made durable on the way out; then the store is let go.
        if let Some(store) = self.store.take() {
            let _ = store.insert(&[], true);
        }
        if let Some(ack) = closing {
            let _ = ack.send(());
        }
    }

    /// `first` and whatever else is queued, kept for the store; a close request ends it.
    fn take(
        &mut self,
        first: Msg,
        rx: &std::sync::mpsc::Receiver<Msg>,
    ) -> Option<std::sync::mpsc::SyncSender<()>> {
        let mut next = Some(first);
        for _ in 0..BATCH {
            match next.take()? {
                Msg::Record(p) => self.waiting.push((p.record, p.line)),
                Msg::Received(r) => self.received.push(r),
                Msg::Refused(key) => *self.refused.entry(key).or_default() += 1,
                Msg::Close(ack) => return Some(ack),
            }
            next = rx.try_recv().ok();
        }
        None
    }

    /// Records and refusals waiting for the store.
    fn pending(&self) -> usize {
        self.waiting.len() + self.received.len() + self.refused.len()
    }

    /// Store what waits in one transaction, then publish it.
    fn flush(&mut self) {
        if self.pending() == 0 {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        let received = std::mem::take(&mut self.received);
        let refused = std::mem::take(&mut self.refused);
        let lines = self.write_received(&received);
        let batch = Batch {
            deliveries: waiting.iter().map(|(d, j)| (d, j.as_slice())).collect(),
            received: received
                .iter()
                .zip(&lines)
                .map(|(r, j)| (r, &j[..]))
                .collect(),
            refused: refused.iter().map(|(k, n)| (k, *n)).collect(),
        };
        self.store_batch(&batch);
        for (record, _) in waiting {
            let _ = self.live.send(record);
        }
    }

    /// Each received record's JSON, appended to `received.jsonl` in one write; the lines,
    /// without their newlines, for the store.
    fn write_received(&mut self, received: &[Received]) -> Vec<Vec<u8>> {
        if received.is_empty() {
            return Vec::new();
        }
        let lines: Vec<Vec<u8>> = received
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap_or_default())
            .collect();
        let mut all = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in &lines {
            all.extend_from_slice(line);
            all.push(b'\n');
        }
        if let Err(e) = self.received_json.append(&all) {
            tracing::warn!(target: "postern/smtpd", "warning: {}: cannot write received records: {e}", self.received_json.path.display());
        }
        lines
    }

    fn store_batch(&mut self, batch: &Batch<'_>) {
        let Some(store) = &self.store else {
            return;
        };
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        if let Err(e) = store.insert_batch(batch, durable) {
            tracing::warn!(target: "postern/smtp", "warning: {e}");
        }
        if durable {
            self.last_durable = Instant::now();
        }
        self.since_prune += batch.deliveries.len() + batch.received.len();
        // By count, and by time too, so a quiet gateway still lets old days go.
        let due = self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_AFTER);
        if self.since_prune >= PRUNE_EVERY || due {
            self.since_prune = 0;
            self.last_prune = Some(Instant::now());
            if let Err(e) = store.prune(crate::fsutil::unix_now()) {
                tracing::warn!(target: "postern/smtp", "warning: {e}");
            }
        }
    }
}

impl JsonFile {
    /// Created 0600; an older file with wider rights is narrowed (records name addresses).
    fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        crate::fsutil::restrict_to_owner(path)?;
        Ok(file)
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self
            .file
            .as_ref()
            .is_some_and(|(_, len)| *len > 0 && len + line.len() as u64 > self.max_bytes)
        {
            self.file = None;
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        if self.file.is_none() {
            self.file = Some((JsonFile::open_file(&self.path)?, 0));
        }
        let (file, len) = self.file.as_mut().expect("opened just above");
        file.write_all(line)?;
        *len += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Delivery {
        Delivery {
            unix_time: 0,
            queue_id: format!("ID{n}"),
            sender: "s@x.example".into(),
            recipient: "r@y.example".into(),
            relay: "none".into(),
            delay: 0.0,
            delays: [0.0; 4],
            dsn: "2.0.0".into(),
            status: "sent".into(),
            reply: "250 ok".into(),
            starttls_offered: false,
            tls: None,
            verified_name: None,
            policy_level: "may".into(),
            policy_source: "global".into(),
            rule: None,
            tenant: None,
            hosts_tried: Vec::new(),
            tls_rpt: None,
            node: None,
        }
    }

    #[test]
    fn the_line_names_a_matched_rule_after_the_source() {
        let mut r = record(1);
        assert!(
            r.postfix_line()
                .ends_with("(250 ok) policy=may source=global")
        );
        r.rule = Some("partners".into());
        assert!(
            r.postfix_line()
                .ends_with("(250 ok) policy=may source=global rule=partners"),
            "{}",
            r.postfix_line()
        );
    }

    #[tokio::test]
    async fn json_log_rotates_at_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 1000).unwrap();
        for n in 0..20 {
            log.record(&record(n)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("log/delivery.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let current = std::fs::read_to_string(dir.path().join("log/delivery.jsonl")).unwrap();
        let previous = std::fs::read_to_string(dir.path().join("log/delivery.jsonl.1")).unwrap();
        assert!(current.len() <= 1000 && previous.len() <= 1000);
        assert!(current.ends_with("\n") && current.contains("\"queue_id\":\"ID19\""));
        let kept = current.lines().count() + previous.lines().count();
        assert!(kept < 20, "nothing was dropped");
        for line in current.lines().chain(previous.lines()) {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn delays_in_postfix_form() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.013), "0.01");
        assert_eq!(short(0.25), "0.2");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(12.4), "12");
    }
}
