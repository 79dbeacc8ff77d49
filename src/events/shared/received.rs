//! The received half of the records the nodes share: a table partitioned by UTC
//! day like the deliveries', each record naming its node, with a column and an index per
//! field the Received view searches by (the sender's domain written backwards, as the
//! embedded store keys it, so a `.domain` is a prefix; the client address as 16 bytes, so a
//! network is a range); and refusal counts, one row per counter of a writer's batch (its own
//! ID makes a replay after an outage a no-op), summed when read.

use super::super::received::{
    Received, ReceivedFrom, ReceivedSearch, Refusal, RefusalCount, client_key, network_keys,
};
use super::super::received_query::ReceivedQuery;
use super::super::records::{Found, RefusalKey, SenderShare, StoreError, Stored};
use super::super::search::{Party, domain_key};
use super::{DAY, SharedRecords, err, like_escaped};

type Arg = Box<dyn postgres::types::ToSql + Sync + Send>;

impl SharedRecords {
    pub(super) const RECEIVED_SCHEMA: &'static str = "
CREATE TABLE IF NOT EXISTS postern_received (
    seq BIGSERIAL,
    unix_time BIGINT NOT NULL,
    node TEXT NOT NULL,
    sender TEXT NOT NULL,
    domain_key TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    client BYTEA NOT NULL,
    tls BOOLEAN NOT NULL,
    record JSONB NOT NULL,
    rid BIGINT NOT NULL,
    PRIMARY KEY (unix_time, seq)
) PARTITION BY RANGE (unix_time);
CREATE UNIQUE INDEX IF NOT EXISTS postern_received_rid ON postern_received (unix_time, node, rid);
CREATE INDEX IF NOT EXISTS postern_received_sender ON postern_received (sender, seq);
CREATE INDEX IF NOT EXISTS postern_received_domain ON postern_received (domain_key text_pattern_ops, seq);
CREATE INDEX IF NOT EXISTS postern_received_queue_id ON postern_received (queue_id, seq);
CREATE INDEX IF NOT EXISTS postern_received_client ON postern_received (client, seq);
CREATE INDEX IF NOT EXISTS postern_received_seq ON postern_received (seq);
CREATE INDEX IF NOT EXISTS postern_received_plaintext ON postern_received (seq) WHERE NOT tls;
CREATE TABLE IF NOT EXISTS postern_refusals (
    day BIGINT NOT NULL,
    node TEXT NOT NULL,
    rid BIGINT NOT NULL,
    client TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    reason SMALLINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, node, rid)
);
";

    /// Received records into the transaction, each naming `node`; one stored before (same
    /// `rid`) is skipped.
    pub(super) fn insert_received_rows(
        tx: &mut postgres::Transaction<'_>,
        node: &str,
        rows: &[(i64, Received)],
    ) -> Result<(), postgres::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let stmt = tx.prepare(
            "INSERT INTO postern_received (unix_time, node, sender, domain_key, queue_id, client, tls, record, rid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )?;
        for (rid, r) in rows {
            let mut r = r.clone();
            r.node = Some(node.to_string());
            let client = r.client_addr.parse().map_or([0; 16], client_key).to_vec();
            let record = serde_json::to_value(&r).unwrap_or_default();
            tx.execute(
                &stmt,
                &[
                    &(r.unix_time as i64),
                    &node,
                    &r.sender.to_ascii_lowercase(),
                    &domain_key(&r.sender),
                    &r.queue_id.to_ascii_uppercase(),
                    &client,
                    &r.tls.is_some(),
                    &postgres::types::Json(record),
                    rid,
                ],
            )?;
        }
        Ok(())
    }

    /// Refusal counts into the transaction, one row each.
    pub(super) fn insert_refusal_rows(
        tx: &mut postgres::Transaction<'_>,
        node: &str,
        rows: &[(i64, (RefusalKey, u64))],
    ) -> Result<(), postgres::Error> {
        for (rid, ((day, client, domain, reason), n)) in rows {
            tx.execute(
                "INSERT INTO postern_refusals (day, node, rid, client, sender_domain, reason, n) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &(*day as i64),
                    &node,
                    rid,
                    client,
                    domain,
                    &i16::from(reason.code()),
                    &(*n as i64),
                ],
            )?;
        }
        Ok(())
    }

    /// Whole days of received records past the cut-off go, every node's, and the refusal
    /// counts of those days.
    pub(super) fn prune_received(&self, cutoff_day: u64) -> Result<u64, StoreError> {
        let names = self
            .db()?
            .with(|c| {
                c.query(
                    "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'postern_received'::regclass",
                    &[],
                )
            })
            .map_err(err)?;
        let days: Vec<u64> = names
            .iter()
            .filter_map(|r| {
                r.get::<_, String>(0)
                    .strip_prefix("postern_received_")?
                    .parse()
                    .ok()
            })
            .filter(|d| *d < cutoff_day)
            .collect();
        let dropped = days.len() as u64;
        for day in days {
            self.batch(format!("DROP TABLE IF EXISTS postern_received_{day}"))?;
            self.forget_received_day(day);
        }
        let before = cutoff_day as i64;
        self.db()?
            .with(move |c| c.execute("DELETE FROM postern_refusals WHERE day < $1", &[&before]))
            .map_err(err)?;
        Ok(dropped)
    }

    pub(super) fn received_count(&self) -> Result<u64, StoreError> {
        self.db()?
            .with(|c| c.query_one("SELECT count(*) FROM postern_received", &[]))
            .map(|r| r.get::<_, i64>(0) as u64)
            .map_err(err)
    }

    /// Up to `limit` records that meet `conds`, newest first.
    fn received_rows(
        &self,
        conds: Vec<String>,
        args: Vec<Arg>,
        limit: u64,
    ) -> Result<Vec<(u64, Received)>, StoreError> {
        let sql = format!(
            "SELECT seq, record FROM postern_received {} ORDER BY seq DESC LIMIT {limit}",
            match conds.is_empty() {
                true => String::new(),
                false => format!("WHERE {}", conds.join(" AND ")),
            },
        );
        let rows = self
            .db()?
            .with(move |c| {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a.as_ref() as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                c.query(&sql, &params)
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let postgres::types::Json(r): postgres::types::Json<Received> =
                    row.try_get(1).ok()?;
                Some((row.get::<_, i64>(0) as u64, r))
            })
            .collect())
    }

    /// The Received view's search, in SQL whole: every field has its column.
    pub(super) fn search_received_in(
        &self,
        q: &ReceivedSearch,
    ) -> Result<Found<Received>, StoreError> {
        let query = ReceivedQuery::of(q);
        if query.impossible {
            return Ok(Found::default());
        }
        let (mut conds, args) = received_conditions(&query);
        conds.extend(q.before.map(|b| format!("seq < {b}")));
        let limit = q.limit.max(1);
        let rows = self.received_rows(conds, args, limit as u64 + 1)?;
        let mut found = Found {
            scanned: rows.len() as u64,
            ..Found::default()
        };
        let more = rows.len() > limit;
        for (seq, record) in rows.into_iter().take(limit) {
            found.next = Some(seq);
            found.records.push(Stored { seq, record });
        }
        if !more {
            found.next = None;
        }
        Ok(found)
    }

    pub(super) fn received_from_in(
        &self,
        from: &ReceivedFrom,
        since: u64,
        max: u64,
    ) -> Result<(Vec<Received>, bool), StoreError> {
        let (conds, args) = received_conditions(&ReceivedQuery::from(from, since));
        let mut rows = self.received_rows(conds, args, max.saturating_add(1))?;
        let more = rows.len() as u64 > max;
        rows.truncate(max as usize);
        Ok((rows.into_iter().map(|(_, r)| r).collect(), more))
    }

    pub(super) fn received_tls_in(&self, since: u64) -> Result<SenderShare, StoreError> {
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT domain_key, count(*), count(*) FILTER (WHERE tls) FROM postern_received WHERE unix_time >= $1 GROUP BY domain_key ORDER BY count(*) DESC, domain_key",
                    &[&(since as i64)],
                )
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0).chars().rev().collect(),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .collect())
    }

    pub(super) fn refusals_in(&self, since: u64) -> Result<Vec<RefusalCount>, StoreError> {
        let day = (since - since % DAY) as i64;
        let rows = self
            .db()?
            .with(move |c| {
                c.query(
                    "SELECT day, client, sender_domain, reason, sum(n)::BIGINT AS n FROM postern_refusals WHERE day >= $1 GROUP BY day, client, sender_domain, reason ORDER BY n DESC, day",
                    &[&day],
                )
            })
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(RefusalCount {
                    day: r.get::<_, i64>(0) as u64,
                    client: r.get(1),
                    sender_domain: r.get(2),
                    reason: Refusal::from_code(u8::try_from(r.get::<_, i16>(3)).ok()?)?,
                    count: r.get::<_, i64>(4) as u64,
                })
            })
            .collect())
    }
}

/// The query in SQL, `$n` arguments in `args`.
fn received_conditions(q: &ReceivedQuery) -> (Vec<String>, Vec<Arg>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let mut arg = |v: Arg| {
        args.push(v);
        format!("${}", args.len())
    };
    match &q.sender {
        Some(Party::Address(a)) => conds.push(format!("sender = {}", arg(Box::new(a.clone())))),
        Some(Party::Domain(d)) => {
            conds.push(format!("domain_key = {}", arg(Box::new(domain_key(d)))))
        }
        Some(Party::Subdomains(d)) => {
            let exact = arg(Box::new(domain_key(d)));
            let under = arg(Box::new(format!("{}.%", like_escaped(&domain_key(d)))));
            conds.push(format!("(domain_key = {exact} OR domain_key LIKE {under})"));
        }
        None => {}
    }
    if let Some(net) = &q.client {
        let (first, last) = network_keys(net);
        let (first, last) = (arg(Box::new(first.to_vec())), arg(Box::new(last.to_vec())));
        conds.push(format!("client BETWEEN {first} AND {last}"));
    }
    if let Some(id) = &q.queue_id {
        conds.push(format!("queue_id = {}", arg(Box::new(id.clone()))));
    }
    conds.extend(q.since.map(|s| format!("unix_time >= {s}")));
    conds.extend(q.until.map(|u| format!("unix_time <= {u}")));
    if q.plaintext_only {
        conds.push("NOT tls".into());
    }
    (conds, args)
}
