//! The delivery records as both stores keep them: what a search asks and finds, the
//! retention, the dashboard's TLS outcome, and `Records`, the one trait the embedded store
//! (`store`, redb, one node) and the shared one (`shared`, PostgreSQL, every node) implement,
//! as settings' `Backend` does for the settings. Below both stores and the search, so none of
//! them imports another's types.

use serde::Serialize;

use super::received::{Received, ReceivedFrom, ReceivedSearch, Refusal, RefusalCount};
use super::tls_rpt::RptOutcome;
use super::{Delivery, StarttlsSeen};

/// How long and how many records are kept (`[log]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_secs: u64,
    pub max_records: u64,
}

/// What a delivery's TLS came to, for the dashboard's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsOutcome {
    /// Over TLS with the certificate verified for a name (verify, secure, fingerprint).
    Verified,
    /// Over TLS, certificate not checked (may, encrypt).
    Encrypted,
    /// In plaintext.
    Plaintext,
    /// Not sent: the policy demanded TLS the host could not give.
    Refused,
}

impl TlsOutcome {
    pub const ALL: [TlsOutcome; 4] = [
        TlsOutcome::Verified,
        TlsOutcome::Encrypted,
        TlsOutcome::Plaintext,
        TlsOutcome::Refused,
    ];

    /// Deliveries by how they crossed, and refusals by the policy; any other failure (DNS,
    /// a busy host) says nothing about TLS and is not counted.
    pub fn of(d: &Delivery) -> Option<TlsOutcome> {
        if d.dsn.starts_with("4.7.") || d.dsn.starts_with("5.7.") {
            return Some(TlsOutcome::Refused);
        }
        if d.status != "sent" {
            return None;
        }
        Some(match (&d.tls, &d.verified_name) {
            (Some(_), Some(_)) => TlsOutcome::Verified,
            (Some(_), None) => TlsOutcome::Encrypted,
            (None, _) => TlsOutcome::Plaintext,
        })
    }

    pub(super) fn code(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, thiserror::Error)]
#[error("delivery records {path}: {message}")]
pub struct StoreError {
    pub(super) path: String,
    pub(super) message: String,
}

/// What the Logs page asks: every given field must hold; the newest first.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// An address, a `domain` or a `.domain` (the domain and its subdomains), any case
    /// (`search::Party`).
    pub recipient: Option<String>,
    pub sender: Option<String>,
    pub queue_id: Option<String>,
    /// The host name of the relay (`mx.example.net`), any case.
    pub host: Option<String>,
    /// In the record's Postfix lines or its values, any case (`search::Text`).
    pub text: Option<String>,
    /// UNIX seconds, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Paging: only records older than this sequence number.
    pub before: Option<u64>,
    pub limit: usize,
    /// Only deferrals and bounces (the dashboard's last errors).
    pub failed_only: bool,
    /// Only mail the Microsoft 365 connector relayed (the record names its tenant).
    pub from_tenant: bool,
}

/// A page of results: delivery records, or received ones (`Found<Received>`).
#[derive(Debug, Serialize)]
pub struct Found<R = Delivery> {
    pub records: Vec<Stored<R>>,
    /// The cursor for the next (older) page, if there may be one.
    pub next: Option<u64>,
    /// Records looked at; a free-text search stops at `MAX_SCAN` and says so.
    pub scanned: u64,
    pub stopped_early: bool,
}

impl<R> Default for Found<R> {
    fn default() -> Found<R> {
        Found {
            records: Vec::new(),
            next: None,
            scanned: 0,
            stopped_early: false,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Stored<R = Delivery> {
    pub seq: u64,
    pub record: R,
}

/// What the delivery-log thread stores at once, in one transaction where the store has
/// them: delivery and received records, each with its JSON (made once, for its file and
/// the store), and refusals counted since the last batch.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub deliveries: Vec<(&'a Delivery, &'a [u8])>,
    pub received: Vec<(&'a Received, &'a [u8])>,
    /// (UTC day start, client address, sender domain, reason) → refusals.
    pub refused: Vec<(&'a RefusalKey, u64)>,
}

/// A refusal counter's key: the UTC day's start, the client address, the sender domain
/// (lower case, empty when none was given), the reason.
pub type RefusalKey = (u64, String, String, Refusal);

/// Received mail per sender domain: (domain, messages, of which over TLS), most first.
pub type SenderShare = Vec<(String, u64, u64)>;

/// A search looks at this many records at most per page (a free text or a time range
/// alone walks the records; a field narrows it to its index).
pub const MAX_SCAN: u64 = 200_000;

/// A store of delivery records: the pages, the dashboard, "did host H offer STARTTLS?" and the
/// TLS-RPT counts read through this, whichever store it is.
pub trait Records: Send + Sync {
    /// Store a batch of every kind; `durable` makes it (and every batch before it) survive a
    /// crash where the store can choose (the shared store's every transaction is durable).
    fn insert_batch(&self, batch: &Batch<'_>, durable: bool) -> Result<(), StoreError>;
    /// Delivery records alone.
    fn insert(&self, batch: &[Delivery], durable: bool) -> Result<(), StoreError> {
        let encoded = encode(batch)?;
        let deliveries = batch.iter().zip(&encoded).map(|(d, j)| (d, &j[..]));
        self.insert_encoded(&deliveries.collect::<Vec<_>>(), durable)
    }
    /// As `insert`, with each record's JSON already made.
    fn insert_encoded(
        &self,
        batch: &[(&Delivery, &[u8])],
        durable: bool,
    ) -> Result<(), StoreError> {
        let batch = Batch {
            deliveries: batch.to_vec(),
            ..Batch::default()
        };
        self.insert_batch(&batch, durable)
    }
    /// Received records alone (fixtures, the benches).
    fn insert_received(&self, batch: &[Received], durable: bool) -> Result<(), StoreError> {
        let encoded = encode(batch)?;
        let received = batch.iter().zip(&encoded).map(|(r, j)| (r, &j[..]));
        let batch = Batch {
            received: received.collect(),
            ..Batch::default()
        };
        self.insert_batch(&batch, durable)
    }
    /// Between records: the shared store stores what waited while its database was away.
    fn tick(&self) {}
    /// Drop what retention no longer keeps; returns how many records (or days) went.
    fn prune(&self, now: u64) -> Result<u64, StoreError>;
    fn len(&self) -> Result<u64, StoreError>;
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
    /// The Logs page's search, newest first, a page at a time.
    fn search(&self, q: &Search) -> Result<Found, StoreError>;
    /// For each host: the deliveries since `since` whose relay it was, and how many of them
    /// it offered STARTTLS in.
    fn starttls_history(
        &self,
        hosts: &[String],
        since: u64,
    ) -> Result<Vec<StarttlsSeen>, StoreError>;
    /// Deliveries per hour by TLS outcome, from `since` (an hour boundary) on.
    fn hourly(&self, since: u64) -> Result<Vec<(u64, TlsOutcome, u64)>, StoreError>;
    /// Recipient domains since `since`: (domain, attempts that reached a host, over TLS),
    /// most attempts first.
    fn destinations(&self, since: u64) -> Result<Vec<(String, u64, u64)>, StoreError>;
    /// The TLS-RPT outcomes of the UTC day starting at `day` (a day boundary), counted.
    fn tls_rpt_day(&self, day: u64) -> Result<Vec<(RptOutcome, u64)>, StoreError>;
    /// Claim the sending of a day's TLS report to one address: false when another node has
    /// it. Records of one node are its own: it always sends its report.
    fn claim_report(&self, _day: u64, _domain: &str, _rua: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Give a claim back after the report could not be sent, for the next round.
    fn unclaim_report(&self, _day: u64, _domain: &str, _rua: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn received_len(&self) -> Result<u64, StoreError>;
    /// The Received view's search, newest first, a page at a time.
    fn search_received(&self, q: &ReceivedSearch) -> Result<Found<Received>, StoreError>;
    /// What a sender domain (or `.domain`) or a client network sent since `since`, newest
    /// first, at most `max`; true when more matched than `max` (the impact preview of an
    /// inbound TLS row).
    fn received_from(
        &self,
        from: &ReceivedFrom,
        since: u64,
        max: u64,
    ) -> Result<(Vec<Received>, bool), StoreError>;
    /// Sender domains since `since` (an hour boundary): messages received, of which over
    /// TLS; most messages first.
    fn received_tls(&self, since: u64) -> Result<SenderShare, StoreError>;
    /// Refusals counted on the UTC days from the one of `since` on, most first.
    fn refusals(&self, since: u64) -> Result<Vec<RefusalCount>, StoreError>;
}

/// Each record's JSON, as a store keeps it.
fn encode<T: Serialize>(batch: &[T]) -> Result<Vec<Vec<u8>>, StoreError> {
    batch
        .iter()
        .map(|r| serde_json::to_vec(r))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError {
            path: "records".into(),
            message: e.to_string(),
        })
}

pub(super) fn host_of(relay: &str) -> String {
    relay.split('[').next().unwrap_or("").to_ascii_lowercase()
}

pub(super) fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(_, d)| d)
        .to_ascii_lowercase()
}
