//! Delivery records of every node in the PostgreSQL database they share (issue 20): one
//! table partitioned by UTC day, each record naming its node, so the Logs page, the
//! dashboard, "did host H offer STARTTLS?" and the TLS-RPT counts cover the whole cluster.
//! Retention drops whole days. The fields searched have their own columns and indexes (a
//! recipient's or sender's domain an expression index on the address, written backwards as
//! the embedded store keys it); the record itself is kept as JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::received::{Received, ReceivedFrom, ReceivedSearch, RefusalCount};
use super::records::{
    Batch, Found, MAX_SCAN, Records, Retention, Search, SenderShare, StoreError, Stored,
    TlsOutcome, domain_of, host_of,
};
use super::search::{Party, Query, domain_key};
use super::tls_rpt::RptOutcome;
use super::{Delivery, StarttlsSeen};
use crate::settings::postgres::DbThread;

mod pending;
mod received;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS postern_deliveries (
    seq BIGSERIAL,
    unix_time BIGINT NOT NULL,
    node TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    host TEXT NOT NULL,
    rcpt_domain TEXT NOT NULL,
    outcome SMALLINT,
    tls BOOLEAN NOT NULL,
    starttls_offered BOOLEAN NOT NULL,
    sent BOOLEAN NOT NULL,
    tls_rpt TEXT,
    record JSONB NOT NULL,
    rid BIGINT NOT NULL,
    PRIMARY KEY (unix_time, seq)
) PARTITION BY RANGE (unix_time);
CREATE UNIQUE INDEX IF NOT EXISTS postern_deliveries_rid ON postern_deliveries (unix_time, node, rid);
CREATE INDEX IF NOT EXISTS postern_deliveries_recipient ON postern_deliveries (recipient, seq);
CREATE INDEX IF NOT EXISTS postern_deliveries_sender ON postern_deliveries (sender, seq);
CREATE INDEX IF NOT EXISTS postern_deliveries_queue_id ON postern_deliveries (queue_id, seq);
CREATE INDEX IF NOT EXISTS postern_deliveries_host ON postern_deliveries (host, unix_time);
CREATE INDEX IF NOT EXISTS postern_deliveries_seq ON postern_deliveries (seq);
CREATE INDEX IF NOT EXISTS postern_deliveries_rcpt_domain ON postern_deliveries ((split_part(reverse(recipient), '@', 1)) text_pattern_ops, seq);
CREATE INDEX IF NOT EXISTS postern_deliveries_sender_domain ON postern_deliveries ((split_part(reverse(sender), '@', 1)) text_pattern_ops, seq);
CREATE TABLE IF NOT EXISTS postern_tls_rpt_sent (
    day BIGINT NOT NULL,
    domain TEXT NOT NULL,
    rua TEXT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (day, domain, rua)
);
";

const DAY: u64 = 86_400;

pub struct SharedRecords {
    db: DbThread,
    node: Arc<str>,
    retention: Retention,
    /// Days whose partition exists (created on first use), of deliveries and of received.
    days: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    received_days: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// The tables exist (made by this process's first successful call).
    ready: AtomicBool,
    /// Records not stored while the database was away (`data/log/shared-pending.jsonl`),
    /// stored first when it is back.
    pending: PathBuf,
    /// After a failure, the database is not asked again before this: records go straight to
    /// `pending` rather than each batch waiting for a connection that is not there.
    retry_at: std::sync::Mutex<Option<Instant>>,
    /// Said once per outage.
    away: AtomicBool,
}

fn err(message: String) -> StoreError {
    StoreError {
        path: "settings.database (delivery records)".into(),
        message,
    }
}

impl SharedRecords {
    /// Not connected yet: a database away at start is no reason to keep the records
    /// elsewhere; they wait in `pending` (kept in `data_dir`) until it is back.
    pub fn open(
        url: &str,
        node: &str,
        retention: Retention,
        (tls, data_dir): (Arc<rustls::ClientConfig>, &std::path::Path),
    ) -> SharedRecords {
        SharedRecords {
            db: DbThread::new(url, "records-db", tls),
            node: node.into(),
            retention,
            days: Default::default(),
            received_days: Default::default(),
            ready: AtomicBool::new(false),
            pending: data_dir.join("log/shared-pending.jsonl"),
            retry_at: std::sync::Mutex::new(None),
            away: AtomicBool::new(false),
        }
    }

    /// The connection, the tables made first if this process has not yet.
    fn db(&self) -> Result<&DbThread, StoreError> {
        self.ensure_schema()?;
        Ok(&self.db)
    }

    /// One statement without an answer (a partition made or dropped).
    fn batch(&self, sql: String) -> Result<(), StoreError> {
        self.db()?.with(move |c| c.batch_execute(&sql)).map_err(err)
    }

    fn known_days(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.days.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the tables if this process has not yet.
    fn ensure_schema(&self) -> Result<(), StoreError> {
        if !self.ready.load(Ordering::Relaxed) {
            self.db
                .with(|c| {
                    let schema = format!("{SCHEMA}{}", Self::RECEIVED_SCHEMA);
                    crate::settings::postgres::create_schema(c, &schema)
                })
                .map_err(err)?;
            self.ready.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The day partitions of `table` for records of `times`; `received` says which table.
    pub(super) fn partitions(
        &self,
        received: bool,
        times: impl Iterator<Item = u64>,
    ) -> Result<(), StoreError> {
        let (table, known) = match received {
            false => ("postern_deliveries", &self.days),
            true => ("postern_received", &self.received_days),
        };
        let lock = || known.lock().unwrap_or_else(|e| e.into_inner());
        let needed: Vec<u64> = {
            let days = lock();
            let mut n: Vec<u64> = times
                .map(|t| t - t % DAY)
                .filter(|d| !days.contains(d))
                .collect();
            n.sort_unstable();
            n.dedup();
            n
        };
        for day in needed {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {table}_{day} PARTITION OF {table} FOR VALUES FROM ({day}) TO ({})",
                day + DAY
            );
            self.batch(sql)?;
            lock().insert(day);
        }
        Ok(())
    }

    /// Forget a dropped partition of the received records.
    pub(super) fn forget_received_day(&self, day: u64) {
        self.received_days
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&day);
    }

    /// Delivery records into the transaction, each naming `node`.
    fn insert_delivery_rows(
        tx: &mut postgres::Transaction<'_>,
        node: &str,
        records: &[Delivery],
        rids: &[i64],
    ) -> Result<(), postgres::Error> {
        if records.is_empty() {
            return Ok(());
        }
        let stmt = tx.prepare(
            "INSERT INTO postern_deliveries (unix_time, node, recipient, sender, queue_id, host, rcpt_domain, outcome, tls, starttls_offered, sent, tls_rpt, record, rid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
        )?;
        for (d, rid) in records.iter().zip(rids) {
            let mut d = d.clone();
            d.node = Some(node.to_string());
            let d = &d;
            let record = serde_json::to_value(d).unwrap_or_default();
            let rpt = d
                .tls_rpt
                .as_ref()
                .and_then(|o| serde_json::to_string(o).ok());
            let outcome = TlsOutcome::of(d).map(|o| i16::from(o.code()));
            tx.execute(
                &stmt,
                &[
                    &(d.unix_time as i64),
                    &node,
                    &d.recipient.to_ascii_lowercase(),
                    &d.sender.to_ascii_lowercase(),
                    &d.queue_id.to_ascii_uppercase(),
                    &host_of(&d.relay),
                    &domain_of(&d.recipient),
                    &outcome,
                    &d.tls.is_some(),
                    &d.starttls_offered,
                    &(d.status == "sent"),
                    &rpt,
                    &postgres::types::Json(record),
                    rid,
                ],
            )?;
        }
        Ok(())
    }

    /// Up to `chunk` rows that meet `conds`, newest first, below `before`.
    fn rows(
        &self,
        conds: &[String],
        args: &[String],
        before: Option<u64>,
        chunk: usize,
    ) -> Result<Vec<(u64, Delivery)>, StoreError> {
        let mut conds = conds.to_vec();
        conds.extend(before.map(|b| format!("seq < {b}")));
        let sql = format!(
            "SELECT seq, record FROM postern_deliveries {} ORDER BY seq DESC LIMIT {chunk}",
            match conds.is_empty() {
                true => String::new(),
                false => format!("WHERE {}", conds.join(" AND ")),
            },
        );
        let args = args.to_vec();
        let rows = self
            .db()?
            .with(move |c| {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                c.query(&sql, &params)
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|row| {
                let postgres::types::Json(record): postgres::types::Json<Delivery> = row.get(1);
                (row.get::<_, i64>(0) as u64, record)
            })
            .collect())
    }
}

impl Records for SharedRecords {
    /// Store `batch`, after whatever waits in `pending`; with the database away the batch
    /// joins `pending` (said once per outage). An error: not even `pending` could keep it
    /// (the record is in `delivery.jsonl` or `received.jsonl` all the same). The JSON of
    /// the files is not what the tables keep (each record names its node).
    fn insert_batch(&self, batch: &Batch<'_>, _durable: bool) -> Result<(), StoreError> {
        self.store_or_keep(batch)
    }

    /// Store what waits in `pending` if the database is back; the store's thread asks every
    /// few seconds when no record comes.
    fn tick(&self) {
        if !self.pending.exists() || self.ready_to_try().is_err() {
            return;
        }
        match self.replay() {
            Ok(()) => self.away.store(false, Ordering::Relaxed),
            Err(_) => self.failed(),
        }
    }

    /// Whole days past the age limit go, every node's, as the catalog lists them (not only
    /// the days this process wrote); the count limit is the embedded store's, here the
    /// database's size is the admin's. Report claims older than that go with them.
    fn prune(&self, now: u64) -> Result<u64, StoreError> {
        let cutoff = now.saturating_sub(self.retention.max_age_secs);
        let cutoff_day = cutoff - cutoff % DAY;
        let names = self
            .db()?
            .with(|c| {
                c.query(
                    "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'postern_deliveries'::regclass",
                    &[],
                )
            })
            .map_err(err)?;
        let days: Vec<u64> = names
            .iter()
            .filter_map(|r| {
                r.get::<_, String>(0)
                    .strip_prefix("postern_deliveries_")?
                    .parse()
                    .ok()
            })
            .filter(|d| *d < cutoff_day)
            .collect();
        let dropped = days.len() as u64;
        for day in days {
            let sql = format!("DROP TABLE IF EXISTS postern_deliveries_{day}");
            self.batch(sql)?;
            self.known_days().remove(&day);
        }
        let before = cutoff_day as i64;
        self.db()?
            .with(move |c| {
                c.execute(
                    "DELETE FROM postern_tls_rpt_sent WHERE day < $1",
                    &[&before],
                )
            })
            .map_err(err)?;
        Ok(dropped + self.prune_received(cutoff_day)?)
    }

    /// Claim the sending of a day's report to one address for this node: false when a node
    /// (this one or another) has it already. The counts are the whole cluster's, so one node
    /// sends each report.
    fn claim_report(&self, day: u64, domain: &str, rua: &str) -> Result<bool, StoreError> {
        let (domain, rua, node) = (domain.to_string(), rua.to_string(), self.node.to_string());
        self.db()?
            .with(move |c| {
                // Whose the claim is, not whether this insert made it: asked twice (a
                // connection lost after the commit), the answer is the same.
                c.query_one(
                    "INSERT INTO postern_tls_rpt_sent (day, domain, rua, node) VALUES ($1, $2, $3, $4) ON CONFLICT (day, domain, rua) DO UPDATE SET node = postern_tls_rpt_sent.node RETURNING node",
                    &[&(day as i64), &domain, &rua, &node],
                )
                .map(|row| row.get::<_, String>(0) == node)
            })
            .map_err(err)
    }

    /// Give a claim back after the report could not be sent, for the next round.
    fn unclaim_report(&self, day: u64, domain: &str, rua: &str) -> Result<(), StoreError> {
        let (domain, rua) = (domain.to_string(), rua.to_string());
        self.db()?
            .with(move |c| {
                c.execute(
                    "DELETE FROM postern_tls_rpt_sent WHERE day = $1 AND domain = $2 AND rua = $3",
                    &[&(day as i64), &domain, &rua],
                )
            })
            .map(|_| ())
            .map_err(err)
    }

    fn len(&self) -> Result<u64, StoreError> {
        self.db()?
            .with(|c| c.query_one("SELECT count(*) FROM postern_deliveries", &[]))
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(err)
    }

    /// The Logs page's search, newest first, a page at a time (`before` a sequence number).
    /// The fields narrow the rows in SQL, by their indexes, and so do the words of the text
    /// (`search::Text`); each row is then judged as the embedded store judges its records,
    /// a chunk of rows at a time, at most `MAX_SCAN` rows.
    fn search(&self, q: &Search) -> Result<Found, StoreError> {
        let query = Query::of(q);
        let (conds, args) = conditions(&query);
        let limit = q.limit.max(1);
        let mut found = Found::default();
        let mut cursor = q.before;
        let mut chunk = limit + 1;
        loop {
            let rows = self.rows(&conds, &args, cursor, chunk)?;
            let exhausted = rows.len() < chunk;
            let n = rows.len();
            for (i, (seq, record)) in rows.into_iter().enumerate() {
                found.scanned += 1;
                cursor = Some(seq);
                if let Some(record) = query.judge(record) {
                    found.records.push(Stored { seq, record });
                }
                let more = !exhausted || i + 1 < n;
                if found.records.len() >= limit {
                    found.next = more.then_some(seq);
                    return Ok(found);
                }
                if found.scanned >= MAX_SCAN && more {
                    found.stopped_early = true;
                    found.next = Some(seq);
                    return Ok(found);
                }
            }
            if exhausted {
                return Ok(found);
            }
            chunk = (chunk * 4).min(10_000);
        }
    }

    fn received_len(&self) -> Result<u64, StoreError> {
        self.received_count()
    }

    fn search_received(&self, q: &ReceivedSearch) -> Result<Found<Received>, StoreError> {
        self.search_received_in(q)
    }

    fn received_from(
        &self,
        from: &ReceivedFrom,
        since: u64,
        max: u64,
    ) -> Result<(Vec<Received>, bool), StoreError> {
        self.received_from_in(from, since, max)
    }

    fn received_tls(&self, since: u64) -> Result<SenderShare, StoreError> {
        self.received_tls_in(since)
    }

    fn refusals(&self, since: u64) -> Result<Vec<RefusalCount>, StoreError> {
        self.refusals_in(since)
    }

    fn starttls_history(
        &self,
        hosts: &[String],
        since: u64,
    ) -> Result<Vec<StarttlsSeen>, StoreError> {
        let hosts: Vec<String> = hosts.to_vec();
        let keys: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT host, count(*), count(*) FILTER (WHERE starttls_offered), max(unix_time) FROM postern_deliveries WHERE host = ANY($1) AND unix_time >= $2 GROUP BY host",
                    &[&keys, &(since as i64)],
                )
            })
            .map_err(err)?;
        Ok(hosts
            .iter()
            .map(|h| {
                let row = rows
                    .iter()
                    .find(|r| r.get::<_, String>(0) == h.to_ascii_lowercase());
                StarttlsSeen {
                    host: h.clone(),
                    connections: row.map_or(0, |r| r.get::<_, i64>(1) as u64),
                    offered: row.map_or(0, |r| r.get::<_, i64>(2) as u64),
                    last: row
                        .and_then(|r| r.get::<_, Option<i64>>(3))
                        .map(|t| t as u64),
                }
            })
            .collect())
    }

    fn hourly(&self, since: u64) -> Result<Vec<(u64, TlsOutcome, u64)>, StoreError> {
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT unix_time - unix_time % 3600 AS hour, outcome, count(*) FROM postern_deliveries WHERE unix_time >= $1 AND outcome IS NOT NULL GROUP BY hour, outcome ORDER BY hour",
                    &[&(since as i64)],
                )
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let code = r.get::<_, i16>(1) as usize;
                let outcome = *TlsOutcome::ALL.get(code)?;
                Some((
                    r.get::<_, i64>(0) as u64,
                    outcome,
                    r.get::<_, i64>(2) as u64,
                ))
            })
            .collect())
    }

    fn destinations(&self, since: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let refused = i16::from(TlsOutcome::Refused.code());
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT rcpt_domain, count(*), count(*) FILTER (WHERE tls) FROM postern_deliveries WHERE unix_time >= $1 AND outcome IS NOT NULL AND outcome <> $2 GROUP BY rcpt_domain ORDER BY count(*) DESC, rcpt_domain",
                    &[&(since as i64), &refused],
                )
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .collect())
    }

    fn tls_rpt_day(&self, day: u64) -> Result<Vec<(RptOutcome, u64)>, StoreError> {
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT tls_rpt, count(*) FROM postern_deliveries WHERE unix_time >= $1 AND unix_time < $2 AND tls_rpt IS NOT NULL GROUP BY tls_rpt",
                    &[&(day as i64), &((day + DAY) as i64)],
                )
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let o = serde_json::from_str(&r.get::<_, String>(0)).ok()?;
                Some((o, r.get::<_, i64>(1) as u64))
            })
            .collect())
    }
}

/// The search in SQL, as far as SQL can say it: `$n` arguments (all text) in `args`. What
/// it cannot (a word's place in a line) `Query::judge` decides on each row.
fn conditions(q: &Query) -> (Vec<String>, Vec<String>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    let mut arg = |v: String| {
        args.push(v);
        format!("${}", args.len())
    };
    for (col, party) in [("recipient", &q.recipient), ("sender", &q.sender)] {
        // The expression of the domain index (`SCHEMA`).
        let key = format!("split_part(reverse({col}), '@', 1)");
        match party {
            Some(Party::Address(a)) => conds.push(format!("{col} = {}", arg(a.clone()))),
            Some(Party::Domain(d)) => conds.push(format!("{key} = {}", arg(domain_key(d)))),
            Some(Party::Subdomains(d)) => {
                let exact = arg(domain_key(d));
                let under = arg(format!("{}.%", like_escaped(&domain_key(d))));
                conds.push(format!("({key} = {exact} OR {key} LIKE {under})"));
            }
            None => {}
        }
    }
    if let Some(id) = &q.queue_id {
        conds.push(format!("queue_id = {}", arg(id.clone())));
    }
    if let Some(host) = &q.host {
        conds.push(format!("host = {}", arg(host.clone())));
    }
    if let Some(text) = &q.text {
        if let Some(host) = &text.offered_by {
            conds.push(format!("host = {} AND starttls_offered", arg(host.clone())));
        }
        for word in &text.words {
            let pattern = arg(format!("%{}%", like_escaped(word)));
            conds.push(format!("record::text ILIKE {pattern}"));
        }
    }
    let num = |col: &str, op: &str, v: Option<u64>| v.map(|v| format!("{col} {op} {v}"));
    conds.extend(num("unix_time", ">=", q.since));
    conds.extend(num("unix_time", "<=", q.until));
    if q.failed_only {
        conds.push("NOT sent".into());
    }
    if q.from_tenant {
        conds.push("record->>'tenant' IS NOT NULL".into());
    }
    (conds, args)
}

/// `text` matched literally by LIKE (its default escape is the backslash).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
