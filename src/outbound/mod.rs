//! The delivery engine: takes each queued message to its next hop, as Postfix's qmgr and
//! smtp do. A scheduler keeps the retry times; each attempt groups the pending recipients by
//! destination and TLS level, connects, enforces the level, and records every result:
//! final ones durably in the spool (so they are never retried), each one as a delivery event.
//!
//! Where each concern lives:
//!
//! | file            | concern                                                              |
//! |-----------------|----------------------------------------------------------------------|
//! | `mod.rs`        | the `Engine` and its builder                                         |
//! | `qmgr.rs`       | the queue manager: due times, retries, concurrency, `run`            |
//! | `body.rs`       | message bodies in memory and their gauge                             |
//! | `drain.rs`      | node drain: queued mail handed to a peer                             |
//! | `grouping.rs`   | what destinations publish; recipients grouped per transaction        |
//! | `attempt.rs`    | one attempt at a message: groups delivered, results recorded         |
//! | `host.rs`       | one destination's hosts in order, one host and its session           |
//! | `tls_choice.rs` | usable hosts under MTA-STS, DANE, REQUIRETLS; each host's TLS level  |
//! | `results.rs`    | the result per recipient and the delivery event it becomes           |
//! | `next_hop.rs`   | next hops: route, transport, relayhost or MX                         |
//! | `dns.rs`        | the resolver seam, MX hosts in order, name service errors            |
//! | `dsn.rs`        | non-delivery notifications: built and queued                         |
//! | `classify.rs`   | replies and failures into Delivered / Temporary / Permanent          |
//! | `client/`       | the SMTP client dialogue, the connection pool, the wire probes       |
//! | `call_ahead.rs` | recipient verification by call-ahead, its answers kept               |
//! | `check_tls.rs`  | `postern check-tls` and the policy page's Test                       |
//! | `sts.rs`        | MTA-STS (RFC 8461): fetch, cache, host matching                      |
//! | `dane.rs`       | DANE (RFC 7672): TLSA lookup, hosts without records                  |
//! | `https.rs`      | the HTTPS client MTA-STS and TLS-RPT use                             |
//! | `tls_report.rs` | TLS-RPT (RFC 8460): daily reports sent                               |

pub mod check_tls;
pub mod classify;
pub mod client;
pub mod dane;
pub mod dns;
pub mod dsn;
pub mod https;
pub mod sts;
pub mod tls_report;

mod attempt;
mod body;
mod call_ahead;
mod drain;
mod grouping;
mod host;
mod next_hop;
mod qmgr;
mod results;
mod tls_choice;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::OutboundConfig;
use crate::events::EventLog;
use crate::settings::SettingsHandle;
use crate::spool::Spool;

pub use body::BodyGauge;
pub use qmgr::run;

pub struct Engine {
    resolver: Option<Arc<dyn dns::Resolver>>,
    /// Mozilla roots plus `[tls] extra_roots`, for `verify` and `secure`.
    roots: Arc<rustls::RootCertStore>,
    /// The same roots as a chain verifier, for the Trusted/Untrusted line at `may`/`encrypt`.
    chain_check: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    spool: Spool,
    settings: SettingsHandle,
    cfg: OutboundConfig,
    helo: String,
    tls: client::ClientTls,
    /// Idle sessions kept for the next message to the same host and level.
    pool: client::Pool,
    events: Arc<EventLog>,
    total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Client certificates for relay domains that name one.
    certs: Option<Arc<crate::certs::Certs>>,
    /// Attempts in flight at most (each holds at most one message body).
    max_attempts: usize,
    bodies: Arc<BodyGauge>,
    /// Call-ahead answers: address -> (verdict, until when it holds).
    verified: Mutex<HashMap<String, (crate::recipient::Verdict, Instant)>>,
    /// MTA-STS lookups and their cache; none without DNS.
    sts: Option<Arc<sts::Sts>>,
    /// The DNSSEC-validating resolver DANE asks; none without DNS.
    dane: Option<Arc<dyn dns::SecureResolver>>,
    /// Who TLS-RPT reports come from; none when they are off.
    tls_rpt: Option<tls_report::Reporting>,
    /// One round of reports at a time (the daily one, one asked for through the API).
    tls_rpt_round: tokio::sync::Mutex<()>,
    /// `postern node drain`: every queued message goes to this peer, with its envelope.
    handover: arc_swap::ArcSwapOption<SocketAddr>,
    /// Set while draining: SMTP refuses new mail (the inbound side reads it).
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Attempts in flight: twice the global limit, so the next transactions are ready as slots
/// free, and no more (each may hold a message body).
fn cfg_max_attempts(cfg: &OutboundConfig) -> usize {
    cfg.max_concurrency.max(1) * 2
}

impl Engine {
    pub fn new(
        spool: Spool,
        settings: SettingsHandle,
        cfg: OutboundConfig,
        helo: String,
        events: impl Into<Arc<EventLog>>,
        resolver: Option<Arc<dyn dns::Resolver>>,
        roots: Arc<rustls::RootCertStore>,
    ) -> Engine {
        Engine {
            max_attempts: cfg_max_attempts(&cfg),
            verified: Mutex::new(HashMap::new()),
            resolver,
            chain_check: crate::tls::chain_verifier(roots.clone()),
            roots,
            total: Arc::new(Semaphore::new(cfg.max_concurrency)),
            pool: client::Pool::new(Duration::from_secs(cfg.connection_cache_secs)),
            spool,
            settings,
            cfg,
            helo,
            tls: client::ClientTls::default(),
            events: events.into(),
            per_destination: Mutex::new(HashMap::new()),
            certs: None,
            bodies: Arc::default(),
            sts: None,
            dane: None,
            tls_rpt: None,
            tls_rpt_round: tokio::sync::Mutex::new(()),
            handover: arc_swap::ArcSwapOption::empty(),
            draining: Arc::default(),
        }
    }

    /// DANE (RFC 7672) through `resolver`, which validates DNSSEC itself.
    pub fn with_dane(mut self, resolver: Option<Arc<dyn dns::SecureResolver>>) -> Engine {
        self.dane = resolver;
        self
    }

    /// TLS-RPT reports (RFC 8460), sent daily as `reporting` says, when `on`.
    pub fn with_tls_rpt_if(mut self, on: bool, reporting: tls_report::Reporting) -> Engine {
        self.tls_rpt = on.then_some(reporting);
        self
    }

    /// MTA-STS (RFC 8461), its policies cached at `cache` across restarts: for every
    /// domain delivered to by its MX records, when there is DNS to ask.
    pub fn with_mta_sts(mut self, cache: std::path::PathBuf) -> Engine {
        self.sts = self.resolver.clone().map(|resolver| {
            Arc::new(sts::Sts::open(
                cache,
                resolver,
                self.roots.clone(),
                self.cfg.policy_hosts.clone(),
            ))
        });
        self
    }

    /// Message bodies in memory now and at most since start (see `BodyGauge`).
    pub fn bodies(&self) -> (usize, usize) {
        self.bodies.get()
    }

    /// The bound on attempts in flight.
    pub fn max_attempts(&self) -> usize {
        self.max_attempts
    }

    /// Where relay domains' client certificates come from.
    pub fn with_certs(mut self, certs: Arc<crate::certs::Certs>) -> Engine {
        self.certs = Some(certs);
        self
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// The event log, for the inbound sessions' received records.
    pub fn event_log(&self) -> Arc<EventLog> {
        self.events.clone()
    }
}
