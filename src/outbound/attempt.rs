//! One attempt at a message: its pending recipients grouped, each group delivered, every
//! result recorded (finals in the spool, each as a delivery event), bounces notified.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::body::{Body, body};
use super::classify::{Class, Outcome};
use super::drain::handover_group;
use super::grouping::{Group, GroupKey, group_recipients, published_for};
use super::host::{Hop, deliver_group};
use super::results::RcptResult;
use super::{Engine, dsn, sts};
use crate::config::OutboundConfig;
use crate::events::Delivery;
use crate::policy::{self, Decision};
use crate::proto::Enhanced;
use crate::settings::Snapshot;
use crate::spool::{Final, QueueEntry, QueueId, TlsHeader};

/// The `x-TLSLevel` value that counts for `entry`: only from authorised clients (the others
/// had it removed at receipt), as read at receipt; a record from before that reads the body.
async fn tls_header(
    engine: &Engine,
    entry: &QueueEntry,
    body: &mut Option<Body>,
) -> std::io::Result<Option<String>> {
    if !entry.envelope.authorised {
        return Ok(None);
    }
    let value = match &entry.envelope.tls_header {
        TlsHeader::Absent => None,
        TlsHeader::Value(v) => Some(v.clone()),
        TlsHeader::NotRead => {
            let loaded = Body::load(engine, entry.id).await?;
            let v = policy::first_tls_level_header(&loaded.bytes);
            *body = Some(loaded);
            v
        }
    };
    if let Some(h) = value.as_deref()
        && policy::header_level(h).is_none()
    {
        tracing::warn!(target: "postern/smtp", "{}: warning: unknown x-TLSLevel value {h:?} ignored (expected Require or Try)", entry.id);
    }
    Ok(value)
}

/// What one attempt decided, recipient by recipient, until it is recorded.
#[derive(Default)]
struct Tally {
    finals: Vec<(u32, Final)>,
    /// Index, outcome and relay of each bounced recipient, for the notification.
    bounced: Vec<(usize, Outcome, String)>,
    last_problem: Option<String>,
    still_pending: bool,
    /// Published once the queue reflects them: whoever sees `status=sent` (the log, the
    /// feed) finds the recipient gone from the queue, and a deferral's reason in `queue list`.
    records: Vec<Delivery>,
}

impl Tally {
    fn add(
        &mut self,
        index: usize,
        result: RcptResult,
        entry: &QueueEntry,
        (decision, fact): (&Decision, Option<&policy::mta_sts::StsFact>),
    ) {
        self.records
            .push(result.event(entry, index, decision, fact));
        match result.outcome.class {
            Class::Delivered => self.finals.push((index as u32, Final::Delivered)),
            Class::Permanent => {
                self.finals.push((index as u32, Final::Bounced));
                self.bounced.push((index, result.outcome, result.relay));
            }
            Class::Temporary => {
                self.still_pending = true;
                self.last_problem = Some(result.outcome.reason);
            }
        }
    }
}

/// One attempt at every pending recipient of a message. Returns whether any remain pending.
pub(super) async fn attempt(engine: Arc<Engine>, entry: QueueEntry) -> (QueueId, bool) {
    let id = entry.id;
    let mut loaded: Option<Body> = None;
    let header = match tls_header(&engine, &entry, &mut loaded).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(target: "postern/qmgr", "{id}: cannot read message from the spool: {e}");
            return (id, true);
        }
    };
    // Read once: a settings change applies to the next attempt.
    let snapshot = engine.settings.current();
    let started = Instant::now();
    let mut tally = Tally::default();
    let handover = engine.handing_over();
    let (published, groups) = plan(&engine, &entry, &snapshot, header.as_deref(), handover).await;
    for ((domain, ..), group) in groups {
        // The destination first, then the global limit: waiting for a busy destination
        // never holds a slot another destination could use.
        let slots = engine.destination_slots(&domain);
        let _dest = slots.acquire().await;
        let _total = engine.total.acquire().await;
        let message = match body(&engine, id, &mut loaded).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(target: "postern/qmgr", "{id}: cannot read message from the spool: {e}");
                tally.still_pending = true;
                break;
            }
        };
        let decision = &group[0].1;
        let rcpts: Vec<String> = group
            .iter()
            .map(|(i, _)| entry.envelope.recipients[*i].clone())
            .collect();
        let hop = Hop {
            engine: &engine,
            entry: &entry,
            message,
            snapshot: &snapshot,
            started,
            handover,
        };
        let results = deliver_group(&hop, &domain, decision, &rcpts).await;
        let fact = published.get(&domain).and_then(|p| p.sts.as_ref());
        for ((index, _), mut result) in group.iter().zip(results) {
            sts::attribute(decision.sts.as_ref(), &mut result.outcome);
            expire_if_too_old(&engine.cfg, &entry, &mut result.outcome);
            tally.add(*index, result, &entry, (decision, fact));
        }
    }
    queue_bounce_notice(&engine, &entry, &mut loaded, &mut tally).await;
    drop(loaded);
    record(&engine, id, tally).await
}

/// The attempt's transactions: while draining, one to the peer; else one per destination
/// and policy, with what each destination publishes.
pub(super) async fn plan(
    engine: &Engine,
    entry: &QueueEntry,
    snapshot: &Snapshot,
    header: Option<&str>,
    handover: Option<SocketAddr>,
) -> (
    HashMap<String, policy::Published>,
    BTreeMap<GroupKey, Group>,
) {
    if let Some(peer) = handover {
        return (HashMap::new(), handover_group(entry, peer));
    }
    let published = published_for(engine, entry, snapshot).await;
    let groups = group_recipients(entry, snapshot, header, &published);
    (published, groups)
}

/// The notice is queued before the bounce is recorded: a crash in between sends it twice
/// rather than never. Not queued, the bounces stay pending and are tried again.
async fn queue_bounce_notice(
    engine: &Engine,
    entry: &QueueEntry,
    loaded: &mut Option<Body>,
    tally: &mut Tally,
) {
    if tally.bounced.is_empty() {
        return;
    }
    let queued = match body(engine, entry.id, loaded).await {
        Ok(message) => dsn::queue(engine, entry, message, &tally.bounced).await,
        Err(e) => {
            tracing::error!(target: "postern/bounce", "{}: cannot read message from the spool for its notification, will retry: {e}", entry.id);
            false
        }
    };
    if !queued {
        tally.finals.retain(|(_, state)| *state != Final::Bounced);
        tally.still_pending = true;
    }
}

/// Outcomes into the spool, then the records out; returns whether any remain pending.
async fn record(engine: &Engine, id: QueueId, mut tally: Tally) -> (QueueId, bool) {
    if let Err(e) = engine
        .spool
        .record_delivery_outcomes(id, &tally.finals)
        .await
    {
        // Not recorded means retried: at-least-once, never lost.
        tracing::error!(target: "postern/qmgr", "{id}: cannot record delivery outcomes, will retry them: {e}");
        tally.still_pending = true;
    }
    if tally.still_pending {
        engine.spool.note_attempt(id, tally.last_problem.take());
    }
    for record in &tally.records {
        engine.events.record(record).await;
    }
    if !tally.still_pending {
        tracing::info!(target: "postern/qmgr", "{id}: removed");
    }
    (id, tally.still_pending)
}

/// Past the queue lifetime, a temporary failure becomes the final one (RFC 3463 X.4.7).
fn expire_if_too_old(cfg: &OutboundConfig, entry: &QueueEntry, outcome: &mut Outcome) {
    let age = crate::fsutil::unix_now().saturating_sub(entry.envelope.received_unix);
    if outcome.class == Class::Temporary && age >= cfg.queue_lifetime_secs {
        *outcome = Outcome::permanent(
            Enhanced(5, 4, 7),
            format!(
                "message expired after {age}s in the queue; last problem: {}",
                outcome.reason
            ),
        );
    }
}
