//! Received records: one per message accepted (its 250 sent after the spool's sync), kept
//! beside the delivery records in the same stores and by the same retention, so "did
//! partner.example send to us over TLS last month?" has an answer before an inbound TLS row
//! is enforced. Sessions refused before a message are counted, not stored per attempt
//! (`Refusal`). The types here are plain: the stores index them, the Logs page's Received
//! view searches them, the impact preview of inbound rows reads them (`ReceivedFrom`).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::tls::TlsInfo;

/// One accepted message, as the session knew it at its 250.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub unix_time: u64,
    pub queue_id: String,
    /// The node that accepted it, on records read from the database several nodes share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The client's name as smtpd logs it: `unknown` (no reverse lookup is made).
    pub client_name: String,
    /// The client's IP address (IPv4 as such, not IPv4-mapped).
    pub client_addr: String,
    /// What the client said in EHLO or HELO.
    pub helo: String,
    /// The envelope sender; empty for the null sender (`<>`).
    pub sender: String,
    pub recipients: u32,
    /// Bytes spooled: the message with our Received header.
    pub size: u64,
    pub trust: Trust,
    /// The session's TLS (none in plaintext).
    pub tls: Option<TlsInfo>,
    /// The certificate the client showed at STARTTLS, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<CertFacts>,
}

/// A client certificate as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// Its DNS names (subjectAltName).
    pub names: Vec<String>,
    /// It chains to the trust roots (Mozilla's and `[tls] extra_roots`), is within its dates,
    /// and its extended key usage allows TLS client or server authentication (or is absent).
    pub verified: bool,
}

/// How the client was trusted for the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trust {
    /// Anyone: mail for a relay domain.
    None,
    /// From a trusted network (Postfix's mynetworks).
    TrustedNetwork,
    /// Logged in with SMTP AUTH.
    AuthUser { user: String },
    /// The Microsoft 365 connector (its certificate name), relaying for `tenant` (empty when
    /// the message needed no relay, so no tenant was checked).
    Connector { name: String, tenant: String },
}

impl Trust {
    /// In the admin's words, for the Received view.
    pub fn describe(&self) -> String {
        match self {
            Trust::None => "none".into(),
            Trust::TrustedNetwork => "trusted network".into(),
            Trust::AuthUser { user } => format!("SMTP AUTH {user}"),
            Trust::Connector { name, tenant } if tenant.is_empty() => {
                format!("Microsoft 365 connector ({name})")
            }
            Trust::Connector { name, tenant } => {
                format!("Microsoft 365 connector ({name}), tenant {tenant}")
            }
        }
    }
}

/// Who an inbound TLS row names: a sender domain (with its subdomains for `.domain`), or a
/// client address or network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceivedFrom {
    Domain { domain: String, subdomains: bool },
    Network(ipnet::IpNet),
}

/// Why a session was refused before a message, as counted per day, client and sender domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// TLS was required and the client sent MAIL in plaintext.
    PlaintextRefused,
    /// A client certificate was required and was missing or did not do.
    CertificateRefused,
    /// RCPT to a domain postern does not relay for, from a client without the right.
    RelayDenied,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::PlaintextRefused,
        Refusal::CertificateRefused,
        Refusal::RelayDenied,
    ];

    /// The number a store keeps it as (its place in `ALL`).
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Refusal> {
        Refusal::ALL.get(usize::from(code)).copied()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Refusal::PlaintextRefused => "plaintext refused",
            Refusal::CertificateRefused => "client certificate refused",
            Refusal::RelayDenied => "relay denied",
        }
    }
}

/// One counter of refusals: a UTC day, a client, a sender domain (empty when the client had
/// given no sender), a reason, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// The UTC day's start, UNIX seconds.
    pub day: u64,
    pub client: String,
    pub sender_domain: String,
    pub reason: Refusal,
    pub count: u64,
}

/// What the Received view asks: every given field must hold; the newest first.
#[derive(Debug, Clone, Default)]
pub struct ReceivedSearch {
    /// An address, a `domain` or a `.domain`, any case (`search::Party`).
    pub sender: Option<String>,
    /// An IP address or a network (`192.0.2.0/24`).
    pub client: Option<String>,
    pub queue_id: Option<String>,
    /// UNIX seconds, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Paging: only records older than this sequence number.
    pub before: Option<u64>,
    pub limit: usize,
    /// Only messages that came in plaintext.
    pub plaintext_only: bool,
}

/// A client field read as a network: an address is its own network (`/32`, `/128`); an
/// IPv4-mapped IPv6 address is the IPv4 one.
pub fn client_network(given: &str) -> Option<ipnet::IpNet> {
    let given = given.trim();
    if let Ok(ip) = given.parse::<IpAddr>() {
        return Some(ipnet::IpNet::from(ip.to_canonical()));
    }
    let net: ipnet::IpNet = given.parse().ok()?;
    Some(net.trunc())
}

/// The key a store keeps a client address under: 16 bytes, IPv4 as IPv4-mapped IPv6, so
/// that a network is one range of keys.
pub fn client_key(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The first and last keys of `net` (`client_key`).
pub fn network_keys(net: &ipnet::IpNet) -> ([u8; 16], [u8; 16]) {
    (client_key(net.network()), client_key(net.broadcast()))
}

/// A sender's domain, lower case (empty for the null sender).
pub fn sender_domain(sender: &str) -> String {
    sender
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Received {
    /// `unknown[192.0.2.7]`, as smtpd names the client.
    pub fn client(&self) -> String {
        format!("{}[{}]", self.client_name, self.client_addr)
    }

    /// The lines Postfix would log for it: the TLS session (`smtpd`), the client line with
    /// the SASL user, and qmgr's `from=<…>, size=…, nrcpt=…`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(3);
        let client = self.client();
        if let Some(t) = &self.tls {
            let trust = match &self.client_cert {
                None => "Anonymous",
                Some(c) if c.verified => "Trusted",
                Some(_) => "Untrusted",
            };
            out.push(format!(
                "postern/smtpd: {trust} TLS connection established from {client}: {}",
                t.describe_session()
            ));
        }
        let mut line = format!("postern/smtpd: {}: client={client}", self.queue_id);
        if let Trust::AuthUser { user } = &self.trust {
            let _ = write!(line, ", sasl_username={user}");
        }
        out.push(line);
        out.push(format!(
            "postern/qmgr: {}: from=<{}>, size={}, nrcpt={} (queue active)",
            self.queue_id, self.sender, self.size, self.recipients
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_one_range_of_keys_and_ipv4_is_mapped() {
        let net = client_network("192.0.2.0/24").unwrap();
        let (first, last) = network_keys(&net);
        let inside = client_key("192.0.2.77".parse().unwrap());
        let mapped = client_key("::ffff:192.0.2.77".parse().unwrap());
        assert_eq!(inside, mapped);
        assert!(first <= inside && inside <= last);
        assert!(client_key("192.0.3.1".parse().unwrap()) > last);
        assert_eq!(
            client_network(" ::ffff:192.0.2.7 ").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            client_network("192.0.2.9/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert!(client_network("partner.example").is_none());
    }

    #[test]
    fn the_trust_and_the_record_read_as_json_both_ways() {
        let r = Received {
            unix_time: 1,
            queue_id: "ABC".into(),
            node: None,
            client_name: "unknown".into(),
            client_addr: "192.0.2.7".into(),
            helo: "mx.partner.example".into(),
            sender: "a@Partner.example".into(),
            recipients: 2,
            size: 1234,
            trust: Trust::Connector {
                name: "mail.protection.outlook.com".into(),
                tenant: "t".into(),
            },
            tls: None,
            client_cert: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["trust"]["kind"], "connector");
        assert_eq!(serde_json::from_value::<Received>(json).unwrap(), r);
        assert_eq!(sender_domain(&r.sender), "partner.example");
        assert_eq!(sender_domain(""), "");
        assert_eq!(
            r.lines(),
            [
                "postern/smtpd: ABC: client=unknown[192.0.2.7]",
                "postern/qmgr: ABC: from=<a@Partner.example>, size=1234, nrcpt=2 (queue active)"
            ]
        );
    }
}
