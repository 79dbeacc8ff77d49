//! What the queue knows of a message besides its bytes: its queue ID, its envelope (the
//! facts receipt established, which delivery decides by), where its record lies, and each
//! recipient's final state. Plain data: the record format serialises it, the index holds it.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// Where a committed record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    /// Bytes of the whole record.
    pub len: u64,
}

/// A recipient's final state, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Final {
    Delivered = 1,
    Bounced = 2,
    /// Removed by an admin (`postern queue delete`): no delivery, no DSN.
    Deleted = 3,
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
    /// Per recipient: the TLS level a message rule set at receipt, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_levels: Vec<Option<crate::levels::RuleLevel>>,
    /// The message's `x-TLSLevel` header, read at receipt: delivery decides each
    /// recipient's level from the envelope, before it reads the body.
    #[serde(default)]
    pub tls_header: TlsHeader,
    /// The Microsoft 365 tenant the connector's message named (`X-MS-Exchange-CrossTenant-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `MAIL FROM:<..> REQUIRETLS` (RFC 8689): relayed only over TLS verified under a
    /// policy, to a next hop that offers REQUIRETLS too, else returned with 5.7.30.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// `TLS-Required: No` from an authorised client, without REQUIRETLS (RFC 8689 section
    /// 5): the recipient domain's published policies (MTA-STS) are not applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_required_no: bool,
}

/// What receipt found of the `x-TLSLevel` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsHeader {
    /// A record written before receipt read the header: delivery reads it from the body.
    #[default]
    NotRead,
    Absent,
    /// The first field's value, unfolded.
    Value(String),
}

impl TlsHeader {
    pub fn of(message: &[u8]) -> TlsHeader {
        match crate::proto::header::first_tls_level_header(message) {
            Some(v) => TlsHeader::Value(v),
            None => TlsHeader::Absent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: QueueId,
    pub envelope: Envelope,
    pub size: usize,
    pub location: Location,
    /// Per recipient (same order as `envelope.recipients`): its final state once recorded.
    pub done: Vec<Option<Final>>,
    /// On hold: not delivered until released (kept across restarts).
    pub held: bool,
    /// Attempts since start-up and the last temporary problem (for the queue listing).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the last attempt ended and when the next is due, UNIX seconds (for the queue
    /// listing; not persisted: after a restart every message is due at once).
    pub last_attempt_unix: Option<u64>,
    pub next_attempt_unix: Option<u64>,
}

impl QueueEntry {
    pub(super) fn new(
        id: QueueId,
        envelope: Envelope,
        size: usize,
        location: Location,
    ) -> QueueEntry {
        let done = vec![None; envelope.recipients.len()];
        QueueEntry {
            id,
            envelope,
            size,
            location,
            done,
            held: false,
            attempts: 0,
            last_error: None,
            last_attempt_unix: None,
            next_attempt_unix: None,
        }
    }

    /// Indexes of recipients still to be delivered.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.done.len())
            .filter(|&i| self.done[i].is_none())
            .collect()
    }

    pub(super) fn apply(&mut self, outcomes: &[(u32, Final)]) {
        for &(i, state) in outcomes {
            if let Some(slot) = self.done.get_mut(i as usize) {
                *slot = Some(state);
            }
        }
    }

    pub(super) fn is_final(&self) -> bool {
        self.done.iter().all(Option::is_some)
    }
}
