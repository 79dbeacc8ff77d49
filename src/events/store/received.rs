//! The received half of the embedded store: each received record once by sequence number,
//! with an index per field the Received view searches by (sender, sender domain written
//! backwards so a `.domain` is a key range, queue ID, client address as 16 bytes so a
//! network is a key range, and the plaintext ones); per-hour counters of messages and of
//! those over TLS per sender domain (the dashboard reads those, not the records); refusals
//! counted per day, client, sender domain and reason.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::super::received::{
    Received, ReceivedFrom, ReceivedSearch, Refusal, RefusalCount, client_key, network_keys,
    sender_domain,
};
use super::super::received_query::ReceivedQuery;
use super::super::records::{Found, RefusalKey, SenderShare, StoreError};
use super::super::search::{Party, domain_key};
use super::walk::{Page, SeqRange, Seqs, keys_under, newest_first};
use super::{DAY, HOUR, Local};

const RECEIVED: TableDefinition<u64, &[u8]> = TableDefinition::new("received");
const BY_SENDER: TableDefinition<(&str, u64), ()> = TableDefinition::new("received_by_sender");
/// Keyed by `search::domain_key`: `partner.example` as `elpmaxe.rentrap`.
const BY_SENDER_DOMAIN: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("received_by_sender_domain");
const BY_QUEUE_ID: TableDefinition<(&str, u64), ()> = TableDefinition::new("received_by_queue_id");
/// `received::client_key`: IPv4 as IPv4-mapped IPv6.
const BY_CLIENT: TableDefinition<(&[u8; 16], u64), ()> = TableDefinition::new("received_by_client");
/// The records of messages received in plaintext.
const PLAINTEXT: TableDefinition<u64, ()> = TableDefinition::new("received_plaintext");
/// (hour start, sender domain) → (messages, of which over TLS).
const SENDERS: TableDefinition<(u64, &str), (u64, u64)> = TableDefinition::new("received_senders");
/// (UTC day start, client address, sender domain, reason) → refusals.
const REFUSALS: TableDefinition<(u64, &str, &str, u8), u64> = TableDefinition::new("refusals");

/// Past this many client addresses a network search walks the records instead of merging
/// the index ranges of each address.
const MAX_CLIENTS: usize = 4096;

type Tx = redb::WriteTransaction;

/// The index keys of a record.
struct Keys {
    sender: String,
    domain: String,
    queue_id: String,
    client: [u8; 16],
}

fn keys(r: &Received) -> Keys {
    Keys {
        sender: r.sender.to_ascii_lowercase(),
        domain: domain_key(&r.sender),
        queue_id: r.queue_id.to_ascii_uppercase(),
        client: r.client_addr.parse().map_or([0; 16], client_key),
    }
}

impl Local {
    /// Every table of the received half, made if missing.
    pub(super) fn create_received(&self, tx: &Tx) -> Result<(), redb::Error> {
        tx.open_table(RECEIVED)?;
        tx.open_table(BY_SENDER)?;
        tx.open_table(BY_SENDER_DOMAIN)?;
        tx.open_table(BY_QUEUE_ID)?;
        tx.open_table(BY_CLIENT)?;
        tx.open_table(PLAINTEXT)?;
        tx.open_table(SENDERS)?;
        tx.open_table(REFUSALS)?;
        Ok(())
    }

    /// Received records and refusal counts, in the delivery records' transaction.
    pub(super) fn put_received(
        &self,
        tx: &Tx,
        batch: &[(&Received, &[u8])],
        refused: &[(&RefusalKey, u64)],
    ) -> Result<(), redb::Error> {
        if !batch.is_empty() {
            self.put_records(tx, batch)?;
        }
        if refused.is_empty() {
            return Ok(());
        }
        let mut table = tx.open_table(REFUSALS)?;
        for ((day, client, domain, reason), n) in refused {
            let key = (*day, client.as_str(), domain.as_str(), reason.code());
            let had = table.get(key)?.map_or(0, |v| v.value());
            table.insert(key, had + n)?;
        }
        Ok(())
    }

    fn put_records(&self, tx: &Tx, batch: &[(&Received, &[u8])]) -> Result<(), redb::Error> {
        let mut records = tx.open_table(RECEIVED)?;
        let first = records.last()?.map_or(0, |(k, _)| k.value() + 1);
        let mut by_sender = tx.open_table(BY_SENDER)?;
        let mut by_domain = tx.open_table(BY_SENDER_DOMAIN)?;
        let mut by_queue_id = tx.open_table(BY_QUEUE_ID)?;
        let mut by_client = tx.open_table(BY_CLIENT)?;
        let mut plaintext = tx.open_table(PLAINTEXT)?;
        // Counters summed over the batch first: one read and write per key, not per record.
        let mut senders: HashMap<(u64, String), (u64, u64)> = HashMap::new();
        for (seq, (r, json)) in (first..).zip(batch) {
            records.insert(seq, *json)?;
            let k = keys(r);
            by_sender.insert((k.sender.as_str(), seq), ())?;
            by_domain.insert((k.domain.as_str(), seq), ())?;
            by_queue_id.insert((k.queue_id.as_str(), seq), ())?;
            by_client.insert((&k.client, seq), ())?;
            if r.tls.is_none() {
                plaintext.insert(seq, ())?;
            }
            let hour = r.unix_time - r.unix_time % HOUR;
            let e = senders.entry((hour, sender_domain(&r.sender))).or_default();
            e.0 += 1;
            e.1 += u64::from(r.tls.is_some());
        }
        let mut table = tx.open_table(SENDERS)?;
        for ((hour, domain), (all, tls)) in senders {
            let key = (hour, domain.as_str());
            let (a, t) = table.get(key)?.map_or((0, 0), |v| v.value());
            table.insert(key, (a + all, t + tls))?;
        }
        Ok(())
    }

    /// Drop the received records retention no longer keeps (older than `cutoff`, and the
    /// oldest beyond the count), their counters and refusal counts past `cutoff`.
    pub(super) fn prune_received(&self, tx: &Tx, cutoff: u64) -> Result<u64, redb::Error> {
        let mut records = tx.open_table(RECEIVED)?;
        let over = records.len()?.saturating_sub(self.retention.max_records);
        let mut doomed: Vec<(u64, Received)> = Vec::new();
        for entry in records.iter()? {
            let (k, v) = entry?;
            let Ok(r) = serde_json::from_slice::<Received>(v.value()) else {
                continue;
            };
            if (doomed.len() as u64) < over || r.unix_time < cutoff {
                doomed.push((k.value(), r));
            } else {
                break;
            }
        }
        let mut by_sender = tx.open_table(BY_SENDER)?;
        let mut by_domain = tx.open_table(BY_SENDER_DOMAIN)?;
        let mut by_queue_id = tx.open_table(BY_QUEUE_ID)?;
        let mut by_client = tx.open_table(BY_CLIENT)?;
        let mut plaintext = tx.open_table(PLAINTEXT)?;
        for (seq, r) in &doomed {
            let (seq, k) = (*seq, keys(r));
            records.remove(seq)?;
            by_sender.remove((k.sender.as_str(), seq))?;
            by_domain.remove((k.domain.as_str(), seq))?;
            by_queue_id.remove((k.queue_id.as_str(), seq))?;
            by_client.remove((&k.client, seq))?;
            plaintext.remove(seq)?;
        }
        tx.open_table(SENDERS)?
            .retain(|(hour, _), _| hour + HOUR > cutoff)?;
        tx.open_table(REFUSALS)?
            .retain(|(day, _, _, _), _| day + DAY > cutoff)?;
        Ok(doomed.len() as u64)
    }

    pub(super) fn received_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        records.len().map_err(|e| self.err(e))
    }

    /// The sequence numbers an index gives for the query, newest first (below `before`);
    /// none when no field has one, or a `.domain` or a network has too many keys to merge.
    fn received_candidates(
        &self,
        tx: &redb::ReadTransaction,
        q: &ReceivedQuery,
        before: u64,
    ) -> Result<Option<Seqs<'static>>, redb::Error> {
        let mut ranges: Vec<SeqRange<'static>> = Vec::new();
        if let Some(id) = &q.queue_id {
            let index = tx.open_table(BY_QUEUE_ID)?;
            let id = id.as_str();
            ranges.push(newest_first(index.range((id, 0)..(id, before))?));
        } else if let Some(Party::Address(a)) = &q.sender {
            let index = tx.open_table(BY_SENDER)?;
            ranges.push(newest_first(
                index.range((a.as_str(), 0)..(a.as_str(), before))?,
            ));
        } else if let Some(net) = &q.client {
            let index = tx.open_table(BY_CLIENT)?;
            let Some(clients) = clients_in(&index, net)? else {
                return Ok(None);
            };
            for c in &clients {
                ranges.push(newest_first(index.range((c, 0)..(c, before))?));
            }
        } else if let Some(Party::Domain(d) | Party::Subdomains(d)) = &q.sender {
            let index = tx.open_table(BY_SENDER_DOMAIN)?;
            let key = domain_key(d);
            let keys = match q.sender {
                Some(Party::Subdomains(_)) => match keys_under(&index, &key)? {
                    Some(keys) => keys,
                    None => return Ok(None),
                },
                _ => vec![key],
            };
            for k in &keys {
                let range = index.range((k.as_str(), 0)..(k.as_str(), before))?;
                ranges.push(newest_first(range));
            }
        } else if q.plaintext_only {
            let index = tx.open_table(PLAINTEXT)?;
            let seqs = index
                .range(..before)?
                .rev()
                .map(|e| e.map(|(k, _)| k.value()));
            ranges.push(Box::new(seqs));
        } else {
            return Ok(None);
        }
        Ok(Some(Seqs::new(ranges)?))
    }

    /// The Received view's search: a field by its index, else the records newest first; at
    /// most `MAX_SCAN` records looked at either way.
    pub(super) fn search_received_in(
        &self,
        q: &ReceivedSearch,
    ) -> Result<Found<Received>, StoreError> {
        let query = ReceivedQuery::of(q);
        if query.impossible {
            return Ok(Found::default());
        }
        let e = |e: redb::Error| self.err(e);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        let before = q.before.unwrap_or(u64::MAX);
        let mut page = Page::new(&query, q.limit);
        let walk: SeqRange<'static> =
            match self.received_candidates(&tx, &query, before).map_err(e)? {
                Some(seqs) => Box::new(seqs),
                None => {
                    let newer = match q.until {
                        Some(until) => first_after(&records, until).map_err(e)?,
                        None => u64::MAX,
                    };
                    let all = records
                        .range(..before.min(newer))
                        .map_err(|e| self.err(e))?;
                    Box::new(all.rev().map(|e| e.map(|(k, _)| k.value())))
                }
            };
        for seq in walk {
            let seq = seq.map_err(|e| self.err(e))?;
            let Some(v) = records.get(seq).map_err(|e| self.err(e))? else {
                continue;
            };
            if page.look(seq, v.value()) {
                break;
            }
            // Records are in time order: past `since`, nothing older can match.
            if q.since.is_some_and(|s| super::time_of(v.value()) < s) {
                break;
            }
        }
        Ok(page.found)
    }

    /// `Records::received_from`, by the sender domain's or the client's index.
    pub(super) fn received_from_in(
        &self,
        from: &ReceivedFrom,
        since: u64,
        max: u64,
    ) -> Result<(Vec<Received>, bool), StoreError> {
        let query = ReceivedQuery::from(from, since);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let records = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        let walk: SeqRange<'static> = match self
            .received_candidates(&tx, &query, u64::MAX)
            .map_err(|e| self.err(e))?
        {
            Some(seqs) => Box::new(seqs),
            None => {
                let all = records.range(0u64..).map_err(|e| self.err(e))?;
                Box::new(all.rev().map(|e| e.map(|(k, _)| k.value())))
            }
        };
        let mut out = Vec::new();
        for seq in walk {
            let seq = seq.map_err(|e| self.err(e))?;
            let Some(v) = records.get(seq).map_err(|e| self.err(e))? else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<Received>(v.value()) else {
                continue;
            };
            if r.unix_time < since {
                break;
            }
            if query.holds(&r) {
                if out.len() as u64 >= max {
                    return Ok((out, true));
                }
                out.push(r);
            }
        }
        Ok((out, false))
    }

    /// Sender domains since `since`: messages, of which over TLS; most first.
    pub(super) fn received_tls_in(&self, since: u64) -> Result<SenderShare, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(SENDERS).map_err(|e| self.err(e))?;
        let mut sums: HashMap<String, (u64, u64)> = HashMap::new();
        for entry in table.range((since, "")..).map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (all, tls) = v.value();
            let e = sums.entry(k.value().1.to_string()).or_default();
            e.0 += all;
            e.1 += tls;
        }
        let mut out: SenderShare = sums.into_iter().map(|(d, (a, t))| (d, a, t)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Refusals counted from the UTC day of `since` on, most first.
    pub(super) fn refusals_in(&self, since: u64) -> Result<Vec<RefusalCount>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(REFUSALS).map_err(|e| self.err(e))?;
        let day = since - since % DAY;
        let mut out = Vec::new();
        for entry in table.range((day, "", "", 0)..).map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (day, client, domain, code) = k.value();
            let Some(reason) = Refusal::from_code(code) else {
                continue;
            };
            out.push(RefusalCount {
                day,
                client: client.to_string(),
                sender_domain: domain.to_string(),
                reason,
                count: v.value(),
            });
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.day.cmp(&b.day)));
        Ok(out)
    }
}

/// The first sequence number whose record is newer than `until`, found by halving: records
/// are stored in the order they were received, so a time range alone starts its walk there
/// rather than at the newest record.
fn first_after(
    records: &redb::ReadOnlyTable<u64, &'static [u8]>,
    until: u64,
) -> Result<u64, redb::Error> {
    let (Some(first), Some(last)) = (records.first()?, records.last()?) else {
        return Ok(0);
    };
    let (mut low, mut high) = (first.0.value(), last.0.value() + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        let newer = match records.get(mid)? {
            Some(v) => super::time_of(v.value()) > until,
            // No gap between the oldest and the newest: retention removes the oldest only.
            None => true,
        };
        if newer {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Ok(low)
}

/// The client addresses of the index inside `net`, each once; `None` past `MAX_CLIENTS`.
/// One seek per address found.
fn clients_in(
    index: &redb::ReadOnlyTable<(&'static [u8; 16], u64), ()>,
    net: &ipnet::IpNet,
) -> Result<Option<Vec<[u8; 16]>>, redb::StorageError> {
    let (mut first, last) = network_keys(net);
    if first == last {
        return Ok(Some(vec![first]));
    }
    let mut found = Vec::new();
    loop {
        let next = index.range((&first, 0)..=(&last, u64::MAX))?.next();
        let Some(entry) = next else {
            return Ok(Some(found));
        };
        let key = *entry?.0.value().0;
        if found.len() >= MAX_CLIENTS {
            return Ok(None);
        }
        found.push(key);
        // The next address after `key`.
        match u128::from_be_bytes(key).checked_add(1) {
            Some(n) if n.to_be_bytes() <= last => first = n.to_be_bytes(),
            _ => return Ok(Some(found)),
        }
    }
}
