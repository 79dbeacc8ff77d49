//! The SMTP client for one delivery attempt to one host: EHLO (HELO fallback), STARTTLS as
//! the policy level demands, MAIL/RCPT/DATA (pipelined when offered) with a result per
//! recipient. It never falls back to plaintext on its own: a failed handshake under `may` is
//! reported as such and the caller decides.
//!
//! | file             | concern                                                          |
//! |------------------|------------------------------------------------------------------|
//! | `conn.rs`        | one connection: reading replies, writing commands and the body   |
//! | `ehlo.rs`        | EHLO (HELO fallback) and the extensions it announces             |
//! | `session.rs`     | opening a session (greeting, EHLO, TLS, AUTH), one transaction   |
//! | `starttls.rs`    | STARTTLS at the level's demands, the handshake, minimum strength |
//! | `kx.rs`          | key-exchange groups: post-quantum first, classical on a dropped ClientHello |
//! | `auth.rs`        | SASL PLAIN or LOGIN, inside TLS only                             |
//! | `transaction.rs` | MAIL, RCPT, DATA (pipelined when offered)                        |
//! | `pool.rs`        | idle sessions kept for the next message, and `deliver`           |
//! | `probe.rs`       | the probes: `check-tls` (STARTTLS) and the recipient call-ahead  |

mod auth;
mod conn;
mod ehlo;
mod kx;
mod pool;
mod probe;
mod session;
mod starttls;
#[cfg(test)]
mod tests;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::classify::Outcome;
use crate::policy::Level;
use crate::tls::TlsInfo;

pub use kx::{ClientTls, REMEMBER};
pub use pool::{Pool, deliver};
pub use probe::{Probe, probe, probe_recipient};

#[derive(Clone)]
pub struct Job<'a> {
    /// The message's queue ID, for the log lines of the connection made for it.
    pub queue_id: &'a str,
    /// Name for logs, SNI and errors: the MX or transport host.
    pub host: &'a str,
    pub addr: SocketAddr,
    pub helo: &'a str,
    pub level: Level,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub message: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// Sent with `REQUIRETLS` (RFC 8689): only to a server that offers it.
    pub requiretls: bool,
    /// Minimum cipher key bits (0 without TLS); below it, no transaction.
    pub min_bits: u16,
    /// A policy failure is final (the row says `bounce`) rather than retried.
    pub bounce_on_failure: bool,
    /// What the certificate must satisfy (`verify`, `secure`, `fingerprint`), with the roots.
    pub check: Option<(crate::tls::CertCheck, Arc<rustls::RootCertStore>)>,
    /// The roots' chain verifier, to tell a Trusted connection from an Untrusted one where
    /// the level checks nothing.
    pub chain_check: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// SASL user name and password the next hop requires; sent only inside TLS.
    pub auth: Option<(&'a str, &'a str)>,
    /// The certificate (by name) to present if the next hop asks for a client certificate.
    pub client_cert: Option<(&'a str, Arc<rustls::sign::CertifiedKey>)>,
    /// The policy row asks for classical key exchange only (no post-quantum share).
    pub classical_kx: bool,
}

/// What one session with one host produced.
#[derive(Debug)]
pub struct Session {
    /// One per recipient of the job, in order.
    pub results: Vec<Outcome>,
    pub starttls_offered: bool,
    /// The name (or pin) the certificate was verified for, at `verify`/`secure`/`fingerprint`.
    pub verified_name: Option<String>,
    /// At an observing check (MTA-STS `testing`): why the certificate would have failed.
    pub cert_problem: Option<crate::tls::CertProblem>,
    pub tls: Option<TlsInfo>,
    /// Seconds: connection set-up (connect, greeting, EHLO, TLS) and transmission.
    pub setup_secs: f64,
    pub transmit_secs: f64,
}

/// Why the whole session failed before per-recipient results existed.
#[derive(Debug)]
pub enum Failure {
    /// Applies to every recipient; `try_next_host` for connection-level trouble.
    All {
        outcome: Outcome,
        try_next_host: bool,
        starttls_offered: bool,
        /// The TLS in force when a transaction failed inside an encrypted session, and the
        /// name the certificate was verified for: the delivery record says how it crossed.
        /// Boxed: the rarer, larger case keeps `Failure` small.
        tls: Option<Box<(TlsInfo, Option<String>)>>,
    },
    /// TLS handshake failed under `may`: the caller may retry this host in plaintext.
    TlsFailedMay { reason: String },
    /// The peer reset, closed or went quiet right after our post-quantum ClientHello of
    /// `hello_bytes`, before any byte of its own: `deliver` retries it with classical groups.
    FirstFlight { reason: String, hello_bytes: u64 },
}

/// `host[ip]:port`, as Postfix names a peer in `connect to` and TLS lines.
fn with_port(job: &Job<'_>) -> String {
    format!("{}[{}]:{}", job.host, job.addr.ip(), job.addr.port())
}

impl Failure {
    fn is_temporary(&self) -> bool {
        match self {
            Failure::All { outcome, .. } => outcome.class == super::classify::Class::Temporary,
            Failure::TlsFailedMay { .. } | Failure::FirstFlight { .. } => true,
        }
    }
}
