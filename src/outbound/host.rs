//! One destination's hosts, tried in order until one takes or finally refuses the
//! recipients: one host and its session at a time, with the credentials it needs of us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::classify::Outcome;
use super::next_hop::next_hops;
use super::results::{RcptResult, Seen, for_all, per_recipient};
use super::tls_choice::{tls_for, usable_hosts};
use super::{Engine, client};
use crate::events::HostTried;
use crate::policy::{Decision, Level};
use crate::proto::Enhanced;
use crate::settings::Snapshot;
use crate::spool::{QueueEntry, QueueId};

/// What every host of an attempt is tried with: the message and the settings it started on.
pub(super) struct Hop<'a> {
    pub(super) engine: &'a Engine,
    pub(super) entry: &'a QueueEntry,
    pub(super) message: &'a [u8],
    pub(super) snapshot: &'a Snapshot,
    pub(super) started: Instant,
    /// Draining: the peer every recipient goes to, whatever its domain.
    pub(super) handover: Option<SocketAddr>,
}

/// What a relay domain's next hop needs of us: SASL credentials, a client certificate.
struct Credentials<'a> {
    auth: Option<(&'a str, &'a str)>,
    client_cert: Option<(&'a str, Arc<rustls::sign::CertifiedKey>)>,
}

/// How one host went, for the loop over a destination's hosts.
enum HostOutcome {
    Session(client::Session),
    /// Final for this attempt: the other hosts would not change it.
    Stop(Outcome, Seen),
    /// Given up for the next host.
    Next(Outcome, Seen),
}

impl Hop<'_> {
    /// Postfix's `delays=` b: in the queue before this attempt (or since arrival).
    fn queued_secs(&self) -> f64 {
        let since_arrival =
            crate::fsutil::unix_now().saturating_sub(self.entry.envelope.received_unix);
        self.started
            .elapsed()
            .as_secs_f64()
            .max(since_arrival as f64)
    }

    fn job<'j>(
        &'j self,
        (host, addr): (&'j str, std::net::SocketAddr),
        queue_id: &'j str,
        decision: &Decision,
        rcpts: &'j [String],
        creds: &Credentials<'j>,
    ) -> client::Job<'j> {
        let engine = self.engine;
        let (level, check) = tls_for(decision, host);
        client::Job {
            queue_id,
            host,
            addr,
            helo: &engine.helo,
            level,
            sender: &self.entry.envelope.sender,
            recipients: rcpts,
            message: self.message,
            smtputf8: self.entry.envelope.smtputf8,
            eight_bit: self.entry.envelope.eight_bit,
            requiretls: self.entry.envelope.requiretls,
            min_bits: decision.min_bits,
            bounce_on_failure: decision.on_failure == crate::settings::OnFailure::Bounce,
            check: check.map(|c| (c, engine.roots.clone())),
            chain_check: engine.chain_check.clone(),
            connect_timeout: Duration::from_secs(engine.cfg.connect_timeout_secs),
            command_timeout: Duration::from_secs(engine.cfg.command_timeout_secs),
            auth: creds.auth,
            client_cert: creds.client_cert.clone(),
            classical_kx: decision.classical_kx,
        }
    }
}

/// The hosts to try and what they need of us: the peer alone while draining (our own node:
/// no published policy, no relay-domain credentials), else the domain's next hops as the
/// policies leave them.
async fn hosts_for<'a>(
    hop: &Hop<'a>,
    domain: &str,
    decision: &Decision,
) -> Result<(Vec<(String, SocketAddr)>, Credentials<'a>), Outcome> {
    if let Some(peer) = hop.handover {
        let none = Credentials {
            auth: None,
            client_cert: None,
        };
        return Ok((vec![(peer.ip().to_string(), peer)], none));
    }
    let engine = hop.engine;
    let resolver = engine.resolver.as_deref();
    let hosts = next_hops(&engine.cfg, resolver, hop.snapshot, domain).await?;
    let hosts = usable_hosts(hop.entry, decision, domain, hosts)?;
    Ok((hosts, credentials(hop, domain).await?))
}

/// One destination's recipients: its hosts in order until one takes or finally refuses them.
pub(super) async fn deliver_group(
    hop: &Hop<'_>,
    domain: &str,
    decision: &Decision,
    rcpts: &[String],
) -> Vec<RcptResult> {
    let queued = hop.queued_secs();
    let all = |outcome, relay, seen, earlier: &[HostTried]| {
        for_all(rcpts.len(), outcome, relay, seen, earlier, queued)
    };
    let (hosts, creds) = match hosts_for(hop, domain, decision).await {
        Ok(h) => h,
        Err(outcome) => return all(outcome, "none".into(), Seen::default(), &[]),
    };
    let queue_id = hop.entry.id.to_string();
    let mut tried: Vec<HostTried> = Vec::new();
    let mut last = Outcome::connection(format!("no host to try for {domain}"));
    let mut last_relay = "none".to_string();
    let mut last_seen = Seen::default();
    for (host, addr) in &hosts {
        let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
        let job = hop.job((host, *addr), &queue_id, decision, rcpts, &creds);
        match try_host(hop, job, &relay).await {
            HostOutcome::Session(session) => {
                log_tls(hop.entry.id, &relay, &session, decision.level);
                return per_recipient(session, &relay, &tried, queued);
            }
            HostOutcome::Stop(outcome, seen) => return all(outcome, relay, seen, &tried),
            HostOutcome::Next(outcome, seen) => {
                (last, last_relay, last_seen) = (outcome, relay, seen)
            }
        }
        if hosts.len() > 1 {
            tried.push(HostTried::of(&last_relay, &last));
        }
    }
    // The last host failed too: it is the record's own relay, not an earlier one.
    tried.pop();
    all(last, last_relay, last_seen, &tried)
}

/// One host; at `may`, a failed handshake is retried once in plaintext, and logged.
async fn try_host(hop: &Hop<'_>, mut job: client::Job<'_>, relay: &str) -> HostOutcome {
    let engine = hop.engine;
    let mut result = client::deliver(&job, &engine.tls, &engine.pool).await;
    if let Err(client::Failure::TlsFailedMay { reason }) = &result {
        tracing::warn!(
            target: "postern/smtp",
            "{}: warning: TLS handshake with {relay} failed ({reason}); opportunistic level may: retrying in plaintext",
            hop.entry.id
        );
        job.level = Level::None;
        result = client::deliver(&job, &engine.tls, &engine.pool).await;
    }
    match result {
        Ok(session) => HostOutcome::Session(session),
        Err(client::Failure::All {
            outcome,
            try_next_host,
            starttls_offered,
            tls,
        }) => {
            let seen = Seen {
                starttls_offered,
                tls: tls.map(|b| *b),
            };
            if !try_next_host {
                return HostOutcome::Stop(outcome, seen);
            }
            // A host given up for the next one leaves its line, as in Postfix, so the log
            // shows the MX that failed before the one that worked.
            log_host_failure(hop.entry.id, &outcome);
            HostOutcome::Next(outcome, seen)
        }
        Err(
            client::Failure::TlsFailedMay { reason } | client::Failure::FirstFlight { reason, .. },
        ) => HostOutcome::Next(
            Outcome::connection(format!(
                "TLS and plaintext both failed with {relay}: {reason}"
            )),
            Seen {
                starttls_offered: true,
                tls: None,
            },
        ),
    }
}

/// Credentials belong to the relay domain; decide() made its level `encrypt` at least. A
/// client certificate that cannot be loaded defers: never a silent fallback to none, since
/// the next hop may accept us only by it.
async fn credentials<'a>(hop: &Hop<'a>, domain: &str) -> Result<Credentials<'a>, Outcome> {
    let relay_domain = hop.snapshot.relay_domain(domain);
    let auth = relay_domain
        .and_then(|d| d.auth.as_ref())
        .and_then(|a| Some((a.username.as_str(), a.password.as_ref()?.expose())));
    let client_cert = match relay_domain.and_then(|d| d.client_certificate.as_deref()) {
        None => None,
        Some(name) => match client_key(hop.engine, name).await {
            Some(Ok(key)) => Some((name, key)),
            Some(Err(e)) => {
                return Err(Outcome::temporary(
                    Enhanced(4, 7, 0),
                    format!("client certificate {name} for {domain} cannot be used: {e}"),
                ));
            }
            None => None,
        },
    };
    Ok(Credentials { auth, client_cert })
}

/// A relay domain's client certificate; a cache miss reads the settings store, so it runs
/// off the async workers.
async fn client_key(
    engine: &Engine,
    name: &str,
) -> Option<Result<Arc<rustls::sign::CertifiedKey>, String>> {
    let certs = engine.certs.clone()?;
    let name = name.to_string();
    Some(
        tokio::task::spawn_blocking(move || certs.client_key(&name))
            .await
            .unwrap_or_else(|e| Err(format!("certificate load failed: {e}"))),
    )
}

/// Postfix logs a refused connection without the queue ID (`connect to host[ip]:port:
/// Connection refused`), everything else with it.
fn log_host_failure(id: QueueId, outcome: &Outcome) {
    if outcome.reason.starts_with("connect to ") {
        tracing::info!(target: "postern/smtp", "{}", outcome.reason);
    } else {
        tracing::info!(target: "postern/smtp", "{id}: {}", outcome.reason);
    }
}

/// The TLS handshake and the STARTTLS offer are logged by the client, once per connection;
/// what is left is plaintext, which only `may` and `none` allow: said per message, so an
/// admin checking a partner before forcing TLS finds it (Hermes' guide).
fn log_tls(id: QueueId, relay: &str, session: &client::Session, level: Level) {
    if session.tls.is_none() && !session.starttls_offered && level > Level::None {
        tracing::info!(
            target: "postern/smtp",
            "{id}: STARTTLS not offered by {relay}: delivered without TLS (policy level {level})"
        );
    }
}
