//! What each destination publishes (MTA-STS, DANE), and the pending recipients grouped by
//! the policy that follows: one SMTP transaction per group.

use std::collections::{BTreeMap, HashMap};

use super::next_hop::configured_hop;
use super::{Engine, dane};
use crate::policy::{self, Decision, Level};
use crate::settings::Snapshot;
use crate::spool::QueueEntry;

impl Engine {
    /// What `domain` publishes, as delivery to it would find it now: looked up only for a
    /// domain reached by its own MX records (a next hop the admin set is the admin's
    /// policy), and not when MTA-STS is off everywhere.
    pub async fn published(&self, snapshot: &Snapshot, domain: &str) -> policy::Published {
        use crate::levels::StsSwitch;
        let Some(sts) = &self.sts else {
            return policy::Published::default();
        };
        let by_mx = matches!(configured_hop(&self.cfg, snapshot, domain), Ok((ref n, _, true)) if n == domain);
        let settings = &snapshot.settings;
        let dane_wanted = settings.outbound.dane
            || settings
                .policy
                .iter()
                .any(|r| matches!(r.level, Level::Dane | Level::DaneOnly));
        let dane = match (&self.dane, by_mx && dane_wanted) {
            (Some(resolver), true) => Some(dane::lookup(resolver.as_ref(), domain).await),
            _ => None,
        };
        let wanted = settings.outbound.mta_sts != StsSwitch::Off
            || settings
                .policy
                .iter()
                .any(|r| r.mta_sts.is_some_and(|m| m != StsSwitch::Off));
        let sts = match by_mx && wanted {
            true => Some(sts.lookup(domain).await),
            false => None,
        };
        policy::Published {
            sts,
            tls_required_no: false,
            dane,
        }
    }
}

/// What each destination domain of `entry` publishes, looked up once per attempt; nothing
/// for a message that says `TLS-Required: No` and may.
pub(super) async fn published_for(
    engine: &Engine,
    entry: &QueueEntry,
    snapshot: &Snapshot,
) -> HashMap<String, policy::Published> {
    let mut published = HashMap::new();
    for domain in destination_domains(entry) {
        let facts = match entry.envelope.tls_required_no {
            true => policy::Published {
                tls_required_no: true,
                ..policy::Published::default()
            },
            false => engine.published(snapshot, &domain).await,
        };
        published.insert(domain, facts);
    }
    published
}

pub(super) type Group = Vec<(usize, Decision)>;

/// Pending recipients by (destination domain, TLS level): one SMTP transaction each.
/// Recipients that can share one transaction: same domain, same policy demands.
pub(super) type GroupKey = (
    String,
    Level,
    u16,
    crate::settings::OnFailure,
    Option<policy::StsDemand>,
);

pub(super) fn group_recipients(
    entry: &QueueEntry,
    snapshot: &Snapshot,
    header: Option<&str>,
    published: &HashMap<String, policy::Published>,
) -> BTreeMap<GroupKey, Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let none = policy::Published::default();
    for i in entry.pending() {
        let rcpt = &entry.envelope.recipients[i];
        let domain = recipient_domain(rcpt);
        let rule = entry.envelope.rule_levels.get(i).and_then(Option::as_ref);
        let facts = published.get(&domain).unwrap_or(&none);
        let decision = policy::decide_published(snapshot, rcpt, header, rule, facts);
        groups
            .entry((
                domain,
                decision.level,
                decision.min_bits,
                decision.on_failure,
                decision.sts.clone(),
            ))
            .or_default()
            .push((i, decision));
    }
    groups
}

/// The pending recipients' domains, each once, lower-case.
pub(super) fn destination_domains(entry: &QueueEntry) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in entry.pending() {
        let d = recipient_domain(&entry.envelope.recipients[i]);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

pub(super) fn recipient_domain(rcpt: &str) -> String {
    rcpt.rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}
