//! The result of an attempt for one recipient, with the facts of the session that produced
//! it, and the delivery event it becomes.

use super::classify::Outcome;
use super::grouping::recipient_domain;
use super::{client, sts};
use crate::events::{Delivery, HostTried};
use crate::policy::{self, Decision};
use crate::spool::QueueEntry;

/// The result for one recipient, with the facts of the session that produced it.
pub(super) struct RcptResult {
    pub(super) outcome: Outcome,
    pub(super) relay: String,
    /// Hosts given up before `relay` in this attempt.
    pub(super) earlier: Vec<HostTried>,
    pub(super) starttls_offered: bool,
    pub(super) tls: Option<crate::tls::TlsInfo>,
    pub(super) verified_name: Option<String>,
    pub(super) cert_problem: Option<crate::tls::CertProblem>,
    pub(super) delays: [f64; 4],
}

/// What a host showed before it failed: whether it offered STARTTLS, and the TLS of the
/// session a transaction failed in (none when it failed before or without TLS).
#[derive(Default, Clone)]
pub(super) struct Seen {
    pub(super) starttls_offered: bool,
    pub(super) tls: Option<(crate::tls::TlsInfo, Option<String>)>,
}

impl RcptResult {
    /// The earlier hosts, then this one (none when no host was reached at all).
    fn hosts_tried(&self) -> Vec<HostTried> {
        let mut hosts = self.earlier.clone();
        if self.relay != "none" {
            hosts.push(HostTried::of(&self.relay, &self.outcome));
        }
        hosts
    }

    pub(super) fn event(
        &self,
        entry: &QueueEntry,
        index: usize,
        decision: &Decision,
        fact: Option<&policy::mta_sts::StsFact>,
    ) -> Delivery {
        let now = crate::fsutil::unix_now();
        let recipient = &entry.envelope.recipients[index];
        let session = sts::Session {
            relay: &self.relay,
            outcome: &self.outcome,
            tls: self.tls.is_some(),
            starttls_offered: self.starttls_offered,
            cert_problem: self.cert_problem,
        };
        let domain = recipient_domain(recipient);
        let tls_rpt = sts::rpt_outcome(&domain, fact, decision, &session);
        Delivery {
            unix_time: now,
            queue_id: entry.id.to_string(),
            sender: entry.envelope.sender.clone(),
            recipient: entry.envelope.recipients[index].clone(),
            relay: self.relay.clone(),
            delay: self.delays.iter().sum(),
            delays: self.delays,
            dsn: self.outcome.dsn.to_string(),
            status: self.outcome.status().into(),
            reply: self.outcome.reason.clone(),
            starttls_offered: self.starttls_offered,
            tls: self.tls.clone(),
            verified_name: self.verified_name.clone(),
            policy_level: decision.level.to_string(),
            policy_source: decision.source.to_string(),
            rule: decision.rule.clone(),
            tenant: entry.envelope.tenant.clone(),
            hosts_tried: self.hosts_tried(),
            tls_rpt,
            node: None,
        }
    }
}

impl HostTried {
    pub(super) fn of(relay: &str, outcome: &Outcome) -> HostTried {
        HostTried {
            relay: relay.to_string(),
            status: outcome.status().into(),
            dsn: outcome.dsn.to_string(),
            reply: outcome.reason.clone(),
        }
    }
}

/// The same result for every recipient of a group (no host reached, or one final answer).
pub(super) fn for_all(
    n: usize,
    outcome: Outcome,
    relay: String,
    seen: Seen,
    earlier: &[HostTried],
    queued: f64,
) -> Vec<RcptResult> {
    let (tls, verified_name) = seen.tls.map_or((None, None), |(t, v)| (Some(t), v));
    (0..n)
        .map(|_| RcptResult {
            outcome: outcome.clone(),
            relay: relay.clone(),
            earlier: earlier.to_vec(),
            starttls_offered: seen.starttls_offered,
            tls: tls.clone(),
            verified_name: verified_name.clone(),
            cert_problem: None,
            delays: [0.0, queued, 0.0, 0.0],
        })
        .collect()
}

/// A session's outcomes, one result per recipient, with the facts of the session.
pub(super) fn per_recipient(
    session: client::Session,
    relay: &str,
    tried: &[HostTried],
    queued: f64,
) -> Vec<RcptResult> {
    session
        .results
        .into_iter()
        .map(|outcome| RcptResult {
            outcome,
            relay: relay.to_string(),
            earlier: tried.to_vec(),
            starttls_offered: session.starttls_offered,
            tls: session.tls.clone(),
            verified_name: session.verified_name.clone(),
            cert_problem: session.cert_problem,
            delays: [0.0, queued, session.setup_secs, session.transmit_secs],
        })
        .collect()
}
