//! Delivery records in an embedded indexed store (`data/log/records.redb`), for the Logs
//! page, the dashboard and "did host H offer STARTTLS?". redb because postern already keeps
//! its settings in it (no second engine, no C library to build): each record is stored once
//! by sequence number, with one index table per field admins search by (recipient, sender,
//! queue ID, host, and the recipient's and sender's domains, written backwards so a
//! `.domain` is a key range) and one by time, each a `(key, seq)` range. Hourly counters are kept
//! beside them, so the dashboard reads 24 rows, not a day of records.
//!
//! Records are written by the delivery-log thread in batches; a batch is made durable at
//! most once a second (the JSON-lines file beside it is the record of last resort, and a
//! log record is not a message: losing the last second of them in a crash loses no mail).

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};
mod received;
mod walk;

use super::received::{Received, ReceivedFrom, ReceivedSearch, RefusalCount};
pub use super::records::{
    Batch, Found, MAX_SCAN, Records, Retention, Search, SenderShare, StoreError, Stored, TlsOutcome,
};
use super::records::{domain_of, host_of};
use super::search::{Party, Query, domain_key};
use super::shared::SharedRecords;
use super::tls_rpt::RptOutcome;
use super::{Delivery, StarttlsSeen};
use walk::{Page, Seqs, keys_under, newest_first};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const BY_RECIPIENT: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_recipient");
const BY_SENDER: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_sender");
const BY_QUEUE_ID: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_queue_id");
const BY_HOST: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_host");
/// Keyed by `search::domain_key`: `partner.example` as `elpmaxe.rentrap`.
const BY_RCPT_DOMAIN: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_rcpt_domain");
const BY_SENDER_DOMAIN: TableDefinition<(&str, u64), ()> = TableDefinition::new("by_sender_domain");
/// The index tables, in the order of `index_keys`.
const INDEXES: [TableDefinition<(&str, u64), ()>; 6] = [
    BY_RECIPIENT,
    BY_SENDER,
    BY_QUEUE_ID,
    BY_HOST,
    BY_RCPT_DOMAIN,
    BY_SENDER_DOMAIN,
];
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("by_time");
/// (hour start, outcome) → deliveries.
const HOURLY: TableDefinition<(u64, u8), u64> = TableDefinition::new("hourly");
/// (hour start, recipient domain) → (attempts, of which over TLS).
const DESTINATIONS: TableDefinition<(u64, &str), (u64, u64)> = TableDefinition::new("destinations");
/// (UTC day start, TLS-RPT outcome as JSON) → attempts: the day's report is read from here.
const TLS_RPT: TableDefinition<(u64, &str), u64> = TableDefinition::new("tls_rpt");
const DAY: u64 = 86_400;

/// The delivery records the pages read: this node's (`Local`, redb) or every node's
/// (`SharedRecords`, PostgreSQL), behind the one `Records` trait; callers hold this and never
/// ask which it is.
pub struct Store(Box<dyn Records>);

impl Store {
    /// This node's embedded store at `path`.
    pub fn open(path: &Path, retention: Retention) -> Result<Store, StoreError> {
        Local::open(path, retention).map(|l| Store(Box::new(l)))
    }

    /// The records the nodes share. Spelt as the enum variant it replaced (issue 30), so
    /// `Store::Shared(records)` reads as it did where a store is made.
    #[allow(non_snake_case)]
    pub fn Shared(records: SharedRecords) -> Store {
        Store(Box::new(records))
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Records;

    fn deref(&self) -> &(dyn Records + 'static) {
        &*self.0
    }
}

/// The embedded store of one node.
pub struct Local {
    db: Database,
    path: String,
    retention: Retention,
}

const HOUR: u64 = 3600;

impl Local {
    pub fn open(path: &Path, retention: Retention) -> Result<Local, StoreError> {
        let name = path.display().to_string();
        let db = Database::create(path).map_err(|e| StoreError {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let store = Local {
            db,
            path: name,
            retention,
        };
        // Every table exists from the start, so readers never meet a missing one.
        let tx = store.db.begin_write().map_err(|e| store.err(e))?;
        let domains_indexed = tx
            .list_tables()
            .map_err(|e| store.err(e))?
            .any(|t| t.name() == BY_RCPT_DOMAIN.name());
        {
            tx.open_table(RECORDS).map_err(|e| store.err(e))?;
            for t in INDEXES {
                tx.open_table(t).map_err(|e| store.err(e))?;
            }
            if !domains_indexed {
                store.index_domains(&tx).map_err(|e| store.err(e))?;
            }
            tx.open_table(BY_TIME).map_err(|e| store.err(e))?;
            tx.open_table(HOURLY).map_err(|e| store.err(e))?;
            tx.open_table(DESTINATIONS).map_err(|e| store.err(e))?;
            tx.open_table(TLS_RPT).map_err(|e| store.err(e))?;
            store.create_received(&tx).map_err(|e| store.err(e))?;
        }
        tx.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// A store written before the domain indexes gets them from its address indexes, once.
    fn index_domains(&self, tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
        for (from, to) in [
            (BY_RECIPIENT, BY_RCPT_DOMAIN),
            (BY_SENDER, BY_SENDER_DOMAIN),
        ] {
            let from = tx.open_table(from)?;
            let mut to = tx.open_table(to)?;
            let mut n = 0u64;
            for entry in from.iter()? {
                let (key, _) = entry?;
                let (address, seq) = key.value();
                to.insert((domain_key(address).as_str(), seq), ())?;
                n += 1;
            }
            if n > 0 {
                tracing::info!(target: "postern/smtp", "{}: {n} delivery records indexed by {} (once, after an upgrade)", self.path, to.name());
            }
        }
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn put_all(
        &self,
        tx: &redb::WriteTransaction,
        batch: &[(&Delivery, &[u8])],
    ) -> Result<(), redb::Error> {
        let mut records = tx.open_table(RECORDS)?;
        let first = records.last()?.map_or(0, |(k, _)| k.value() + 1);
        let mut indexes = Vec::with_capacity(INDEXES.len());
        for t in INDEXES {
            indexes.push(tx.open_table(t)?);
        }
        let mut by_time = tx.open_table(BY_TIME)?;
        // Counters summed over the batch first: one read and write per key, not per record.
        let mut hours: std::collections::HashMap<(u64, u8), u64> = Default::default();
        let mut dests: std::collections::HashMap<(u64, String), (u64, u64)> = Default::default();
        let mut rpt: std::collections::HashMap<(u64, String), u64> = Default::default();
        for (seq, (d, json)) in (first..).zip(batch) {
            records.insert(seq, *json)?;
            for (table, key) in indexes.iter_mut().zip(index_keys(d)) {
                table.insert((key.as_str(), seq), ())?;
            }
            by_time.insert((d.unix_time, seq), ())?;
            if let Some(o) = d
                .tls_rpt
                .as_ref()
                .and_then(|o| serde_json::to_string(o).ok())
            {
                *rpt.entry((d.unix_time - d.unix_time % DAY, o)).or_default() += 1;
            }
            let Some(outcome) = TlsOutcome::of(d) else {
                continue;
            };
            let hour = d.unix_time - d.unix_time % HOUR;
            *hours.entry((hour, outcome.code())).or_default() += 1;
            // The destinations' share over TLS is of deliveries made, not of refusals.
            if outcome != TlsOutcome::Refused {
                let e = dests.entry((hour, domain_of(&d.recipient))).or_default();
                e.0 += 1;
                e.1 += u64::from(d.tls.is_some());
            }
        }
        let mut hourly = tx.open_table(HOURLY)?;
        for (key, n) in hours {
            let had = hourly.get(key)?.map_or(0, |v| v.value());
            hourly.insert(key, had + n)?;
        }
        let mut destinations = tx.open_table(DESTINATIONS)?;
        for ((hour, domain), (all, tls)) in dests {
            let key = (hour, domain.as_str());
            let (a, t) = destinations.get(key)?.map_or((0, 0), |v| v.value());
            destinations.insert(key, (a + all, t + tls))?;
        }
        let mut tls_rpt = tx.open_table(TLS_RPT)?;
        for ((day, outcome), n) in rpt {
            let key = (day, outcome.as_str());
            let had = tls_rpt.get(key)?.map_or(0, |v| v.value());
            tls_rpt.insert(key, had + n)?;
        }
        Ok(())
    }

    /// The sequence numbers an index gives for the search, newest first (below `before`);
    /// none when no field has one, or a `.domain` has too many subdomains to merge.
    fn candidates(
        &self,
        tx: &redb::ReadTransaction,
        q: &Query,
        before: u64,
    ) -> Result<Option<Seqs<'static>>, StoreError> {
        let address = |p: &Option<Party>, table| match p {
            Some(Party::Address(a)) => Some((table, a.clone(), false)),
            _ => None,
        };
        let domain = |p: &Option<Party>, table| match p {
            Some(Party::Domain(d)) => Some((table, domain_key(d), false)),
            Some(Party::Subdomains(d)) => Some((table, domain_key(d), true)),
            _ => None,
        };
        let exact = |table, key: &str| Some((table, key.to_string(), false));
        // The likely narrowest first: every other field is checked on each record anyway.
        let chosen = q
            .queue_id
            .as_deref()
            .and_then(|id| exact(BY_QUEUE_ID, id))
            .or_else(|| address(&q.recipient, BY_RECIPIENT))
            .or_else(|| address(&q.sender, BY_SENDER))
            .or_else(|| q.host.as_deref().and_then(|h| exact(BY_HOST, h)))
            .or_else(|| domain(&q.recipient, BY_RCPT_DOMAIN))
            .or_else(|| domain(&q.sender, BY_SENDER_DOMAIN))
            .or_else(|| q.relay_host().and_then(|h| exact(BY_HOST, h)));
        let Some((table, key, subdomains)) = chosen else {
            return Ok(None);
        };
        let index = tx.open_table(table).map_err(|e| self.err(e))?;
        let keys = if subdomains {
            match keys_under(&index, &key).map_err(|e| self.err(e))? {
                Some(keys) => keys,
                None => return Ok(None),
            }
        } else {
            vec![key]
        };
        let mut ranges = Vec::with_capacity(keys.len());
        for key in &keys {
            let range = index
                .range((key.as_str(), 0)..(key.as_str(), before))
                .map_err(|e| self.err(e))?;
            ranges.push(newest_first(range));
        }
        Seqs::new(ranges).map(Some).map_err(|e| self.err(e))
    }
}

impl Records for Local {
    /// One transaction for the batch; `durable` makes it (and every batch before it) survive
    /// a crash.
    fn insert_batch(&self, batch: &Batch<'_>, durable: bool) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        if !durable {
            tx.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
        }
        if !batch.deliveries.is_empty() {
            self.put_all(&tx, &batch.deliveries)
                .map_err(|e| self.err(e))?;
        }
        self.put_received(&tx, &batch.received, &batch.refused)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Drop what retention no longer keeps: older than the age limit, and the oldest beyond
    /// the count. Returns how many records went.
    fn prune(&self, now: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let removed;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            let count = records.len().map_err(|e| self.err(e))?;
            let over = count.saturating_sub(self.retention.max_records);
            let cutoff = now.saturating_sub(self.retention.max_age_secs);
            let mut doomed: Vec<(u64, Delivery)> = Vec::new();
            for entry in records.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let d: Delivery = match serde_json::from_slice(v.value()) {
                    Ok(d) => d,
                    Err(_) => continue,
                };
                if (doomed.len() as u64) < over || d.unix_time < cutoff {
                    doomed.push((k.value(), d));
                } else {
                    break;
                }
            }
            let mut indexes = Vec::with_capacity(INDEXES.len());
            for t in INDEXES {
                indexes.push(tx.open_table(t).map_err(|e| self.err(e))?);
            }
            let mut by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
            for (seq, d) in &doomed {
                records.remove(*seq).map_err(|e| self.err(e))?;
                for (table, key) in indexes.iter_mut().zip(index_keys(d)) {
                    table
                        .remove((key.as_str(), *seq))
                        .map_err(|e| self.err(e))?;
                }
                by_time
                    .remove((d.unix_time, *seq))
                    .map_err(|e| self.err(e))?;
            }
            let mut hourly = tx.open_table(HOURLY).map_err(|e| self.err(e))?;
            hourly
                .retain(|(hour, _), _| hour + HOUR > cutoff)
                .map_err(|e| self.err(e))?;
            let mut destinations = tx.open_table(DESTINATIONS).map_err(|e| self.err(e))?;
            destinations
                .retain(|(hour, _), _| hour + HOUR > cutoff)
                .map_err(|e| self.err(e))?;
            let mut tls_rpt = tx.open_table(TLS_RPT).map_err(|e| self.err(e))?;
            tls_rpt
                .retain(|(day, _), _| day + DAY > cutoff)
                .map_err(|e| self.err(e))?;
            removed =
                doomed.len() as u64 + self.prune_received(&tx, cutoff).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
        records.len().map_err(|e| self.err(e))
    }

    /// The newest records that match, a page at a time. A field uses its index (a
    /// `.domain` the index ranges of the domain and each subdomain, merged); a search by
    /// time or text alone walks the records newest first. At most `MAX_SCAN` either way.
    fn search(&self, q: &Search) -> Result<Found, StoreError> {
        let query = Query::of(q);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
        let before = q.before.unwrap_or(u64::MAX);
        let mut page = Page::new(&query, q.limit);
        match self.candidates(&tx, &query, before)? {
            Some(seqs) => {
                for seq in seqs {
                    let seq = seq.map_err(|e| self.err(e))?;
                    let Some(v) = records.get(seq).map_err(|e| self.err(e))? else {
                        continue;
                    };
                    if page.look(seq, v.value()) {
                        break;
                    }
                }
            }
            None => {
                for entry in records.range(..before).map_err(|e| self.err(e))?.rev() {
                    let (k, v) = entry.map_err(|e| self.err(e))?;
                    if page.look(k.value(), v.value()) {
                        break;
                    }
                    // Records are in time order: past `since`, nothing older can match.
                    if q.since.is_some_and(|s| time_of(v.value()) < s) {
                        break;
                    }
                }
            }
        }
        Ok(page.found)
    }

    /// For each host: the records since `since` whose relay is that host (by its index).
    fn starttls_history(
        &self,
        hosts: &[String],
        since: u64,
    ) -> Result<Vec<StarttlsSeen>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
        let index = tx.open_table(BY_HOST).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            let key = host.to_ascii_lowercase();
            let mut seen = StarttlsSeen {
                host: host.clone(),
                ..StarttlsSeen::default()
            };
            let range = index
                .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .map_err(|e| self.err(e))?;
            for entry in range.rev() {
                let seq = entry.map_err(|e| self.err(e))?.0.value().1;
                let Some(v) = records.get(seq).map_err(|e| self.err(e))? else {
                    continue;
                };
                let Ok(d) = serde_json::from_slice::<Delivery>(v.value()) else {
                    continue;
                };
                if d.unix_time < since {
                    break;
                }
                seen.connections += 1;
                seen.offered += u64::from(d.starttls_offered);
                seen.last = seen.last.max(Some(d.unix_time));
            }
            out.push(seen);
        }
        Ok(out)
    }

    /// Deliveries per hour by TLS outcome, from `since` (an hour boundary) on.
    fn hourly(&self, since: u64) -> Result<Vec<(u64, TlsOutcome, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(HOURLY).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.range((since, 0)..).map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (hour, code) = k.value();
            if let Some(o) = TlsOutcome::ALL.get(usize::from(code)) {
                out.push((hour, *o, v.value()));
            }
        }
        Ok(out)
    }

    /// The TLS-RPT outcomes of the UTC day starting at `day` (a day boundary), counted.
    fn tls_rpt_day(&self, day: u64) -> Result<Vec<(RptOutcome, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(TLS_RPT).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table
            .range((day, "")..(day + 1, ""))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            if let Ok(o) = serde_json::from_str(k.value().1) {
                out.push((o, v.value()));
            }
        }
        Ok(out)
    }

    /// Recipient domains since `since`: (domain, attempts that reached a host, over TLS).
    fn destinations(&self, since: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(DESTINATIONS).map_err(|e| self.err(e))?;
        let mut sums: std::collections::HashMap<String, (u64, u64)> = Default::default();
        for entry in table.range((since, "")..).map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (all, tls) = v.value();
            let e = sums.entry(k.value().1.to_string()).or_default();
            e.0 += all;
            e.1 += tls;
        }
        let mut out: Vec<(String, u64, u64)> =
            sums.into_iter().map(|(d, (a, t))| (d, a, t)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
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
}

/// The index keys of a record, in the order of `INDEXES`.
fn index_keys(d: &Delivery) -> [String; 6] {
    [
        d.recipient.to_ascii_lowercase(),
        d.sender.to_ascii_lowercase(),
        d.queue_id.to_ascii_uppercase(),
        host_of(&d.relay),
        domain_key(&d.recipient),
        domain_key(&d.sender),
    ]
}

fn time_of(bytes: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Time {
        unix_time: u64,
    }
    serde_json::from_slice::<Time>(bytes).map_or(0, |t| t.unix_time)
}

#[cfg(test)]
mod received_tests;
#[cfg(test)]
mod tests;
