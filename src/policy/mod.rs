//! Outbound TLS policy: for each recipient, the level its next hop must meet and why.
//!
//! This is the one seam the delivery engine asks. Today it knows the global outbound mode;
//! the policy table, `x-TLSLevel`, message rules and minimum strength join here (issue 5),
//! and `decide()` stays the single function behind delivery and `postern policy explain`.

pub mod dane;
pub mod inbound;
pub mod mta_sts;
pub mod overlap;

use std::fmt;

use crate::levels::OnFailure;
use crate::settings::{Snapshot, TlsMode};

pub use crate::levels::{Level, RuleLevel};
/// The header reader is pure parsing and lives with the other header fields (proto), where
/// the spool reads it too; policy names it here for the callers that ask policy.
pub use crate::proto::header::first_tls_level_header;

/// What decided the level, as delivery records show it (`source=row:partner.example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Global,
    Row(String),
    Header,
    Rule(String),
    /// The row a relay domain with SASL credentials manages.
    Managed(String),
    /// A relay domain delivered to its Microsoft 365 tenant (`*.mail.protection.outlook.com`):
    /// `verify` unless a row says otherwise.
    Tenant(String),
    /// The recipient domain's own MTA-STS policy (RFC 8461), as published.
    MtaSts(String),
    /// The message's `TLS-Required: No` (RFC 8689 section 5).
    TlsRequired,
    /// TLSA records of the recipient domain's MX hosts, under DNSSEC (RFC 7672).
    Dane(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Global => f.write_str("global"),
            Source::Row(p) => write!(f, "row:{p}"),
            Source::Header => f.write_str("header"),
            Source::Rule(name) => write!(f, "rule:{name}"),
            Source::Managed(domain) => write!(f, "managed:{domain}"),
            Source::Tenant(domain) => write!(f, "m365:{domain}"),
            Source::MtaSts(domain) => write!(f, "mta-sts:{domain}"),
            Source::TlsRequired => f.write_str("tls-required"),
            Source::Dane(domain) => write!(f, "dane:{domain}"),
        }
    }
}

/// Serialised as the log shows it: `global`, `row:partner.example`, `header`.
impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub level: Level,
    pub source: Source,
    /// Minimum cipher key bits: the row's, else 112 at a required level, else 0.
    pub min_bits: u16,
    pub on_failure: OnFailure,
    /// Names a certificate must match at `secure` (the row's list, else the recipient domain).
    pub match_names: Vec<String>,
    /// SHA-256 pins at `fingerprint`, lower-case hex without separators.
    pub fingerprints: Vec<String>,
    /// The message rule that matched this recipient at receipt, whether or not it decided:
    /// the delivery record and line name it (`rule=partners`).
    pub rule: Option<String>,
    /// One line per source, the deciding one marked, then strength and result: for logs and
    /// `policy explain`.
    pub explanation: Vec<String>,
    /// Every source looked at: `explanation[i]` is the line of `considered[i]`.
    pub considered: Vec<Considered>,
    /// What the domain's MTA-STS policy asks of delivery, where one is in force and not
    /// switched off.
    pub sts: Option<StsDemand>,
    /// What DANE asks of delivery, where it was looked up and applies.
    pub dane: Option<DaneDemand>,
    /// The row asks for classical key exchange only: no post-quantum share is offered.
    pub classical_kx: bool,
}

/// DANE for one recipient (RFC 7672 section 2.2): its MX hosts with secured TLSA records
/// are authenticated by them, the others get `otherwise` (none under `dane-only`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DaneDemand {
    /// MX host (lower case) → its usable records.
    pub tlsa: std::collections::BTreeMap<String, Vec<dane::Tlsa>>,
    /// Hosts whose TLSA answer failed validation, and why: never used.
    pub bogus: std::collections::BTreeMap<String, String>,
    /// The MX records themselves failed validation: nothing is delivered.
    pub bogus_mx: Option<String>,
    /// `dane-only`: a host without secured TLSA records is not used.
    pub only: bool,
    /// The level for hosts without TLSA records: what the other sources decide.
    pub otherwise: Level,
}

/// The facts delivery looked up about what a recipient domain publishes, handed to
/// `decide_published` as more sources. `None`: not looked up (no DNS, or a next hop the
/// admin set, which no published policy is about).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub sts: Option<mta_sts::StsFact>,
    /// The message says `TLS-Required: No` (RFC 8689 section 5) and may: nothing published
    /// was looked up, and the explanation says why.
    pub tls_required_no: bool,
    /// DANE, where it was asked for and a validating resolver looked.
    pub dane: Option<dane::DaneFact>,
}

/// An MTA-STS policy in force for a recipient (RFC 8461 section 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct StsDemand {
    pub domain: String,
    pub id: String,
    /// The policy's `mx` patterns: only hosts matching one may get the mail.
    pub mx: Vec<String>,
    /// `enforce`: non-matching MX hosts are skipped and TLS must verify for the MX name.
    /// False for `testing` (or `enforce` under `monitor`): delivered anyway, and what
    /// enforcement would have stopped is reported (TLS-RPT).
    pub enforce: bool,
}

/// The minimum strength a required level gets when its row names none (GlobalCerts' 112).
pub const DEFAULT_MIN_BITS: u16 = 112;

/// The first message rule whose conditions hold for this sender and recipient (evaluated at
/// receipt). Direction: inbound when the recipient is in one of our relay domains.
pub fn rule_for(snapshot: &Snapshot, sender: &str, recipient: &str) -> Option<RuleLevel> {
    use crate::settings::RuleTls;
    let domain_of = |a: &str| {
        a.rsplit_once('@')
            .map_or(a, |(_, d)| d)
            .to_ascii_lowercase()
    };
    let rcpt_domain = domain_of(recipient);
    let inbound = snapshot.relay_domain(&rcpt_domain).is_some();
    let rcpt_lists = snapshot.rule_lists_of(&rcpt_domain);
    let sender_lists = snapshot.rule_lists_of(&domain_of(sender));
    let holds =
        |list: Option<u16>, of: &[u16], want: bool| list.is_none_or(|id| of.contains(&id) == want);
    snapshot.compiled_rules().iter().find_map(|c| {
        let rule = &snapshot.settings.rules[c.index];
        let matches = rule.direction.covers(inbound)
            && holds(c.recipient_in, &rcpt_lists, true)
            && holds(c.recipient_not_in, &rcpt_lists, false)
            && holds(c.sender_in, &sender_lists, true)
            && holds(c.sender_not_in, &sender_lists, false);
        matches.then(|| RuleLevel {
            level: match rule.tls_level {
                RuleTls::Require => Level::Encrypt,
                RuleTls::Try => Level::May,
            },
            rule: rule.name.clone(),
        })
    })
}

/// `x-TLSLevel` values (Email Security's message rules): case and spaces tolerated.
pub fn header_level(value: &str) -> Option<Level> {
    match value.trim().to_ascii_lowercase().as_str() {
        "require" => Some(Level::Encrypt),
        "try" => Some(Level::May),
        _ => None,
    }
}

/// One source `decide()` looked at, as `policy explain` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Considered {
    pub source: Source,
    /// The level it asks for; `None` when it says nothing usable (an unknown header value).
    pub level: Option<Level>,
    /// False for a row a more specific one overrides, and for an ignored header: shown, so
    /// a `may` row under an `encrypt` `*` row is visible, but not counted.
    pub counts: bool,
    /// The one whose level is the effective one.
    pub decides: bool,
}

/// A source and its line in the explanation.
type Line = (Considered, String);

/// The effective policy for `recipient`: the strictest of the global outbound mode, the most
/// specific table row, `header` (the message's first `x-TLSLevel` value, passed only for
/// messages from authorised clients: the others had it removed at receipt), `rule` (the
/// message rule that matched this recipient at receipt) and the row managed by the
/// recipient's relay domain when its next hop needs authentication. Less specific rows are
/// listed as overridden.
pub fn decide(
    snapshot: &Snapshot,
    recipient: &str,
    header: Option<&str>,
    rule: Option<&RuleLevel>,
) -> Decision {
    decide_published(snapshot, recipient, header, rule, &Published::default())
}

/// `decide()` with what the recipient domain publishes (MTA-STS) as one more source; an
/// `enforce` policy asks for `verify` (TLS, and a certificate for the MX host's name,
/// section 4.2), and is the decision's `sts` either way.
pub fn decide_published(
    snapshot: &Snapshot,
    recipient: &str,
    header: Option<&str>,
    rule: Option<&RuleLevel>,
    published: &Published,
) -> Decision {
    let domain = recipient
        .rsplit_once('@')
        .map_or(recipient, |(_, d)| d)
        .to_ascii_lowercase();
    let rows = snapshot.policy_rows(recipient);
    let row = rows.first().copied();
    let (lines, sts, dane) = sources(snapshot, &rows, &domain, (header, rule), published);
    let (mut considered, mut explanation): (Vec<Considered>, Vec<String>) =
        lines.into_iter().unzip();
    let decider = decider(&considered);
    considered[decider].decides = true;
    explanation[decider].push_str(" (decides)");
    let level = considered[decider].level.unwrap_or(Level::May);
    let source = considered[decider].source.clone();
    let dane = dane.map(|d| DaneDemand {
        otherwise: otherwise(&considered),
        ..d
    });
    let (min_bits, on_failure) = strength(row, level);
    if min_bits > 0 {
        explanation.push(format!(
            "minimum strength {min_bits} bits; on failure: {}",
            match on_failure {
                OnFailure::Bounce => "bounce",
                OnFailure::Defer => "defer",
            }
        ));
    }
    let classical_kx = classical_key_exchange(row, &mut explanation);
    explanation.push(format!("effective: {level} (from {source})"));
    Decision {
        level,
        source,
        min_bits,
        on_failure,
        match_names: match row {
            Some(r) if !r.match_names.is_empty() => r.match_names.clone(),
            _ => vec![domain],
        },
        fingerprints: row.map(|r| r.fingerprints.clone()).unwrap_or_default(),
        rule: rule.map(|r| r.rule.clone()),
        explanation,
        considered,
        sts,
        dane,
        classical_kx,
    }
}

/// Whether the deciding row asks for classical key exchange only; said in the explanation.
fn classical_key_exchange(
    row: Option<&crate::settings::PolicyRow>,
    explanation: &mut Vec<String>,
) -> bool {
    let row = row.filter(|r| r.key_exchange == crate::levels::KeyExchange::Classical);
    if let Some(r) = row {
        explanation.push(format!(
            "key exchange: classical groups only, no post-quantum share (row {})",
            r.pattern
        ));
    }
    row.is_some()
}

/// The strictest counting level apart from DANE's own line: what a host without TLSA
/// records gets. A `dane` row counts as `may` here, a `dane-only` row as itself.
fn otherwise(considered: &[Considered]) -> Level {
    considered
        .iter()
        .filter(|c| c.counts && !matches!(c.source, Source::Dane(_)))
        .filter_map(|c| c.level)
        .max()
        .unwrap_or(Level::May)
}

/// Every source's line, in the order `policy explain` lists them, and the MTA-STS demand.
fn sources(
    snapshot: &Snapshot,
    rows: &[&crate::settings::PolicyRow],
    domain: &str,
    (header, rule): (Option<&str>, Option<&RuleLevel>),
    published: &Published,
) -> (Vec<Line>, Option<StsDemand>, Option<DaneDemand>) {
    let row = rows.first().copied();
    let mut lines: Vec<Line> = Vec::with_capacity(rows.len() + 6);
    lines.push(global_source(snapshot));
    row_sources(rows, &mut lines);
    lines.extend(header.map(header_source));
    lines.extend(rule.map(|r| {
        let line = format!("message rule {:?}: {}", r.rule, r.level);
        (
            considered(Source::Rule(r.rule.clone()), Some(r.level), true),
            line,
        )
    }));
    lines.extend(managed_source(snapshot, domain));
    lines.extend(tenant_source(snapshot, domain, row.is_some()));
    let by_row = row.and_then(|r| r.mta_sts);
    let switch = by_row.unwrap_or(snapshot.settings.outbound.mta_sts);
    let mut sts = None;
    if published.tls_required_no {
        let text = "TLS-Required: No: the domain's published policies (MTA-STS) are not applied (RFC 8689 section 5)";
        lines.push((considered(Source::TlsRequired, None, false), text.into()));
    }
    if let Some(fact) = &published.sts {
        let (line, demand) = sts_source(domain, fact, switch, by_row.is_some());
        lines.push(line);
        sts = demand;
    }
    let row_level = row.map(|r| r.level);
    let wanted =
        snapshot.settings.outbound.dane || matches!(row_level, Some(Level::Dane | Level::DaneOnly));
    let only = row_level == Some(Level::DaneOnly);
    let mut dane = None;
    if wanted {
        let (line, demand) = dane_source(domain, published.dane.as_ref(), only);
        lines.push(line);
        dane = demand;
    }
    // RFC 7672 section 1.3, RFC 8461 section 2: where DANE authenticates, MTA-STS yields.
    if dane
        .as_ref()
        .is_some_and(|d: &DaneDemand| !d.tlsa.is_empty())
        && sts.is_some()
    {
        if let Some((c, text)) = lines
            .iter_mut()
            .find(|(c, _)| matches!(c.source, Source::MtaSts(_)))
        {
            c.counts = false;
            text.push_str(", overridden by DANE");
        }
        sts = None;
    }
    (lines, sts, dane)
}

/// Each host's TLSA answer into `demand`, and said for the explanation.
fn dane_hosts(hosts: &[dane::HostTlsa], demand: &mut DaneDemand) -> String {
    use dane::TlsaAnswer;
    let mut said = Vec::new();
    for h in hosts {
        let host = h.host.to_ascii_lowercase();
        match &h.tlsa {
            TlsaAnswer::Records(r) => {
                let first = r.first().map(|t| t.to_string()).unwrap_or_default();
                said.push(format!("{host} TLSA {first}"));
                demand.tlsa.insert(host, r.clone());
            }
            TlsaAnswer::Bogus(why) => {
                said.push(format!("{host} TLSA {why}: not used"));
                demand.bogus.insert(host, why.clone());
            }
            TlsaAnswer::None => said.push(format!("{host} no TLSA")),
        }
    }
    said.join("; ")
}

/// The DANE line, and what it demands of delivery.
fn dane_source(
    domain: &str,
    fact: Option<&dane::DaneFact>,
    only: bool,
) -> (Line, Option<DaneDemand>) {
    use dane::DaneFact;
    let source = Source::Dane(domain.to_string());
    let mut demand = DaneDemand {
        tlsa: Default::default(),
        bogus: Default::default(),
        bogus_mx: None,
        only,
        otherwise: Level::May,
    };
    let (level, counts, text) = match fact {
        None => (
            None,
            false,
            "DANE: no DNSSEC-validating resolver (outbound.nameservers): no TLSA looked up"
                .to_string(),
        ),
        Some(DaneFact::Insecure { reason }) => (
            None,
            false,
            format!("DANE: {reason}: no DANE (RFC 7672 section 2.2)"),
        ),
        Some(DaneFact::Bogus { reason }) => {
            demand.bogus_mx = Some(reason.clone());
            (
                Some(Level::DaneOnly),
                true,
                format!(
                    "DANE: MX records of {domain}: {reason}: deferred until they validate (RFC 7672 section 2.1.1)"
                ),
            )
        }
        Some(DaneFact::Secure { hosts }) => {
            let said = dane_hosts(hosts, &mut demand);
            let any = !demand.tlsa.is_empty();
            let text = match any {
                true => format!("DANE: DNSSEC-secured TLSA records ({said}): dane"),
                false => format!("DANE: signed MX records, no secured TLSA ({said}): no DANE"),
            };
            (any.then_some(Level::Dane), any, text)
        }
    };
    let needed =
        only || !demand.tlsa.is_empty() || !demand.bogus.is_empty() || demand.bogus_mx.is_some();
    (
        (considered(source, level, counts), text),
        needed.then_some(demand),
    )
}

/// The MTA-STS line, and what the policy demands of delivery (`None` when nothing: no
/// policy, `mode: none`, or switched off).
fn sts_source(
    domain: &str,
    fact: &mta_sts::StsFact,
    switch: crate::levels::StsSwitch,
    by_row: bool,
) -> (Line, Option<StsDemand>) {
    use mta_sts::{Mode, StsFact};
    let source = Source::MtaSts(domain.to_string());
    let (id, policy, cached) = match fact {
        StsFact::NoPolicy => {
            let text = format!("MTA-STS: {domain} publishes no policy");
            return ((considered(source, None, false), text), None);
        }
        StsFact::Unavailable { reason, .. } => {
            let text = format!(
                "MTA-STS: {domain} has a record but no usable policy ({reason}): delivered as without one (RFC 8461 section 5)"
            );
            return ((considered(source, None, false), text), None);
        }
        StsFact::Policy {
            id, policy, cached, ..
        } => (id, policy, *cached),
    };
    let (counts, said, enforce) = sts_effect(policy, switch, by_row);
    let whence = if cached { ", cached" } else { "" };
    let text = format!(
        "MTA-STS policy of {domain} (id {id}, mode {}{whence}): {said}",
        policy.mode
    );
    let level = (policy.mode != Mode::None).then_some(Level::Verify);
    let demand = enforce.map(|enforce| StsDemand {
        domain: domain.to_string(),
        id: id.clone(),
        mx: policy.mx.clone(),
        enforce,
    });
    ((considered(source, level, counts), text), demand)
}

/// What the switch makes of a policy: whether it counts, the explanation's words, and
/// (where it applies at all) whether it is enforced.
fn sts_effect(
    policy: &mta_sts::StsPolicy,
    switch: crate::levels::StsSwitch,
    by_row: bool,
) -> (bool, String, Option<bool>) {
    use crate::levels::StsSwitch;
    use mta_sts::Mode;
    let mx = policy.mx.join(", ");
    let whose = if by_row { "for this row" } else { "globally" };
    let reported = format!("a host outside {mx} or a certificate not verified for it is reported");
    match (policy.mode, switch) {
        (Mode::None, _) => (false, "no policy in force".into(), None),
        (_, StsSwitch::Off) => (false, format!("ignored, MTA-STS is off {whose}"), None),
        (Mode::Enforce, StsSwitch::Enforce) => {
            (true, format!("verify, MX must match {mx}"), Some(true))
        }
        (Mode::Enforce, StsSwitch::Monitor) => (
            false,
            format!("monitored {whose} (delivered anyway; {reported})"),
            Some(false),
        ),
        (Mode::Testing, _) => (false, format!("not enforced ({reported})"), Some(false)),
    }
}

/// The strictest source that counts; on a tie the first listed (global, then the row ...).
fn decider(considered: &[Considered]) -> usize {
    considered
        .iter()
        .enumerate()
        .filter(|(_, c)| c.counts)
        .filter_map(|(i, c)| c.level.map(|l| (i, l)))
        .fold(None, |best: Option<(usize, Level)>, (i, l)| match best {
            Some((_, b)) if b >= l => best,
            _ => Some((i, l)),
        })
        .map_or(0, |(i, _)| i)
}

/// Minimum cipher bits and what a failure does: the row's, else 112 at a required level.
fn strength(row: Option<&crate::settings::PolicyRow>, level: Level) -> (u16, OnFailure) {
    let default_bits = if level >= Level::Encrypt {
        DEFAULT_MIN_BITS
    } else {
        0
    };
    (
        row.and_then(|r| r.min_bits).unwrap_or(default_bits),
        row.map(|r| r.on_failure).unwrap_or_default(),
    )
}

fn considered(source: Source, level: Option<Level>, counts: bool) -> Considered {
    Considered {
        source,
        level,
        counts,
        decides: false,
    }
}

fn global_source(snapshot: &Snapshot) -> Line {
    let mode = snapshot.settings.outbound.tls_mode;
    let global = match mode {
        TlsMode::Disabled => Level::None,
        TlsMode::May => Level::May,
        TlsMode::Encrypt => Level::Encrypt,
    };
    (
        considered(Source::Global, Some(global), true),
        format!("global outbound mode {}: {global}", mode.words()),
    )
}

/// The most specific row counts; the others are listed as what it overrides.
fn row_sources(rows: &[&crate::settings::PolicyRow], out: &mut Vec<Line>) {
    for (i, row) in rows.iter().enumerate() {
        let mut line = format!("policy row {}: {}", row.pattern, row.level);
        if !row.note.is_empty() {
            line.push_str(&format!(" ({})", row.note));
        }
        if i > 0 {
            line.push_str(&format!(
                ", overridden by the more specific row {}",
                rows[0].pattern
            ));
        }
        let source = Source::Row(row.pattern.clone());
        // `dane` asks for no TLS where no TLSA records are published: the DANE line raises
        // it where they are.
        let level = match row.level {
            Level::Dane => Level::May,
            l => l,
        };
        out.push((considered(source, Some(level), i == 0), line));
    }
}

fn header_source(value: &str) -> Line {
    let h = header_level(value);
    let line = match h {
        Some(h) => format!("x-TLSLevel: {}: {h}", value.trim()),
        None => format!("x-TLSLevel: {}: unknown value, ignored", value.trim()),
    };
    (considered(Source::Header, h, h.is_some()), line)
}

/// Separate from the table, so no more specific row can lower it: credentials for the next
/// hop never cross in plaintext.
fn managed_source(snapshot: &Snapshot, domain: &str) -> Option<Line> {
    let relay = snapshot.relay_domain(domain).filter(|d| d.auth.is_some())?;
    Some((
        considered(
            Source::Managed(relay.domain.clone()),
            Some(Level::Encrypt),
            true,
        ),
        format!(
            "managed row {}: encrypt (relay domain {} requires authentication)",
            relay.domain, relay.domain
        ),
    ))
}

/// Microsoft 365 tenants take mail over TLS with certificates for their names: delivery to a
/// tenant's `*.mail.protection.outlook.com` is `verify` by default. A row for the domain is
/// the admin's word and overrides it (the line stays, struck through).
fn tenant_source(snapshot: &Snapshot, domain: &str, has_row: bool) -> Option<Line> {
    let relay = snapshot.relay_domain(domain)?;
    let hop = crate::next_hop::NextHop::parse(relay.transport.as_deref()?).ok()?;
    let host = hop.host.to_ascii_lowercase();
    if !host.ends_with(".mail.protection.outlook.com") {
        return None;
    }
    let line = if has_row {
        format!("Microsoft 365 tenant {host}: verify, overridden by the policy row")
    } else {
        format!("Microsoft 365 tenant {host}: verify (its certificate is checked for its name)")
    };
    Some((
        considered(
            Source::Tenant(relay.domain.clone()),
            Some(Level::Verify),
            !has_row,
        ),
        line,
    ))
}

/// What an admin gives `policy explain` as the header: the bare value (`Require`) or the
/// header as it would appear in a message (`x-TLSLevel:\r\n Require`, any case or folding),
/// read by the same parser as delivery.
pub fn header_argument(text: &str) -> String {
    let mut block = text.trim_start().to_string();
    block.push_str("\r\n\r\n");
    first_tls_level_header(block.as_bytes()).unwrap_or_else(|| text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{PolicyRow, Settings};

    fn row(pattern: &str, level: Level) -> PolicyRow {
        PolicyRow::new(pattern, level)
    }

    fn snap(mode: TlsMode, rows: Vec<PolicyRow>) -> Snapshot {
        let mut s = Settings::default();
        s.outbound.tls_mode = mode;
        s.policy = rows;
        Snapshot::new(s, 0)
    }

    /// A `may` row under an `encrypt` `*` row is allowed (the more specific row applies), and
    /// explain shows both; a rule that matched is named even where a row decided.
    #[test]
    fn every_source_is_listed_and_the_decider_marked() {
        let s = snap(
            TlsMode::May,
            vec![row("*", Level::Encrypt), row("partner.example", Level::May)],
        );
        let d = decide(&s, "a@partner.example", None, None);
        assert_eq!((d.level, d.source.clone()), (Level::May, Source::Global));
        assert_eq!(
            d.explanation[..3],
            [
                "global outbound mode Opportunistic (may): may (decides)",
                "policy row partner.example: may",
                "policy row *: encrypt, overridden by the more specific row partner.example",
            ]
        );
        assert_eq!(
            d.considered.iter().map(|c| c.counts).collect::<Vec<_>>(),
            [true, true, false]
        );
        let rule = RuleLevel {
            level: Level::Encrypt,
            rule: "partners".into(),
        };
        let s = snap(TlsMode::May, vec![row("partner.example", Level::Encrypt)]);
        let d = decide(&s, "a@partner.example", None, Some(&rule));
        // The row and the rule agree; the row, listed first, decides; the rule is named.
        assert_eq!(d.source, Source::Row("partner.example".into()));
        assert_eq!(d.rule.as_deref(), Some("partners"));
        assert!(
            d.explanation
                .contains(&"policy row partner.example: encrypt (decides)".to_string()),
            "{:?}",
            d.explanation
        );
        assert!(
            d.explanation
                .contains(&"message rule \"partners\": encrypt".to_string())
        );
    }

    #[test]
    fn global_mode_alone() {
        for (mode, level) in [
            (TlsMode::Disabled, Level::None),
            (TlsMode::May, Level::May),
            (TlsMode::Encrypt, Level::Encrypt),
        ] {
            let d = decide(&snap(mode, vec![]), "a@b.example", None, None);
            assert_eq!((d.level, d.source.clone()), (level, Source::Global));
            assert_eq!(d.min_bits, if level == Level::Encrypt { 112 } else { 0 });
            assert!(d.explanation[0].contains(mode.words()));
        }
    }

    #[test]
    fn most_specific_row_wins() {
        let mut sub = row("flagged.example", Level::Encrypt);
        sub.include_subdomains = true;
        let s = snap(
            TlsMode::Disabled,
            vec![
                row("*", Level::May),
                row(".corp.example", Level::May),
                row("mx.corp.example", Level::None),
                row("ceo@corp.example", Level::Encrypt),
                sub,
            ],
        );
        let src = |r: &str| decide(&s, r, None, None).source.to_string();
        assert_eq!(src("ceo@CORP.example"), "row:ceo@corp.example");
        assert_eq!(src("other@corp.example"), "row:.corp.example"); // .domain covers itself
        assert_eq!(src("a@deep.sub.corp.example"), "row:.corp.example");
        assert_eq!(
            s.policy_row("a@mx.corp.example").unwrap().pattern,
            "mx.corp.example"
        );
        assert_eq!(
            s.policy_row("a@x.flagged.example").unwrap().pattern,
            "flagged.example"
        );
        assert_eq!(
            s.policy_row("a@flagged.example").unwrap().pattern,
            "flagged.example"
        );
        assert_eq!(src("a@elsewhere.example"), "row:*");
        assert_eq!(s.policy_row("a@notcorp.example").unwrap().pattern, "*");
    }

    #[test]
    fn strictest_source_applies_and_header_is_read() {
        let s = snap(TlsMode::May, vec![row("partner.example", Level::Encrypt)]);
        let d = decide(&s, "a@partner.example", Some("try"), None);
        assert_eq!(
            (d.level, d.source.to_string()),
            (Level::Encrypt, "row:partner.example".into())
        );
        let d = decide(&s, "a@other.example", Some("  REQUIRE "), None);
        assert_eq!(
            (d.level, d.source.clone()),
            (Level::Encrypt, Source::Header)
        );
        assert_eq!(d.min_bits, 112);
        let d = decide(&s, "a@other.example", Some("sometimes"), None);
        assert_eq!(d.level, Level::May);
        assert!(
            d.explanation
                .iter()
                .any(|l| l.contains("unknown value, ignored"))
        );
        // A weaker row never lowers the global mode.
        let s = snap(TlsMode::Encrypt, vec![row("lax.example", Level::None)]);
        assert_eq!(
            decide(&s, "a@lax.example", None, None).level,
            Level::Encrypt
        );
    }

    #[test]
    fn row_minimum_and_failure_action() {
        let mut strong = row("bank.example", Level::Encrypt);
        strong.min_bits = Some(256);
        strong.on_failure = OnFailure::Bounce;
        let d = decide(
            &snap(TlsMode::May, vec![strong]),
            "a@bank.example",
            None,
            None,
        );
        assert_eq!((d.min_bits, d.on_failure), (256, OnFailure::Bounce));
    }

    #[test]
    fn first_matching_rule_per_recipient() {
        use crate::settings::{Direction, MessageRule, RuleData, RuleTls};
        let mut s = Settings::default();
        s.rule_data.push(RuleData {
            name: "enforced".into(),
            domains: vec!["enforced.example".into()],
        });
        let rule = |name: &str, tls, direction| MessageRule {
            name: name.into(),
            direction,
            recipient_matches: Some("enforced".into()),
            recipient_not_matches: None,
            sender_matches: None,
            sender_not_matches: None,
            every_recipient: false,
            tls_level: tls,
        };
        s.rules
            .push(rule("inbound only", RuleTls::Try, Direction::Inbound));
        s.rules
            .push(rule("partners", RuleTls::Require, Direction::Outbound));
        let snap = Snapshot::new(s, 0);
        let r = rule_for(&snap, "a@inside.example", "b@mail.enforced.example").unwrap();
        assert_eq!((r.level, r.rule.as_str()), (Level::Encrypt, "partners"));
        assert!(rule_for(&snap, "a@inside.example", "b@other.example").is_none());
        let d = decide(&snap, "b@mail.enforced.example", None, Some(&r));
        assert_eq!(
            (d.level, d.source.to_string()),
            (Level::Encrypt, "rule:partners".to_string())
        );
    }

    #[test]
    fn managed_row_is_its_own_source_and_no_row_lowers_it() {
        use crate::settings::{RelayAuth, RelayDomain, Secret};
        let mut s = Settings::default();
        s.relay_domains.push(RelayDomain {
            domain: "smarthost.example".into(),
            recipients: None,
            verify_recipients: false,
            transport: Some("[relay.smarthost.example]:587".into()),
            auth: Some(RelayAuth {
                username: "gateway".into(),
                password: Some(Secret::new("s3cret-pass")),
            }),
            client_certificate: None,
        });
        s.relay_domains.push(RelayDomain {
            domain: "plain.example".into(),
            recipients: None,
            verify_recipients: false,
            ..RelayDomain::default()
        });
        // A more specific user row asks for less; a wider one asks for more.
        s.policy = vec![
            row("boss@smarthost.example", Level::None),
            row("plain.example", Level::Encrypt),
        ];
        let snap = Snapshot::new(s.clone(), 0);
        let d = decide(&snap, "boss@SmartHost.example", None, None);
        assert_eq!(
            (d.level, d.source.to_string(), d.min_bits),
            (Level::Encrypt, "managed:smarthost.example".into(), 112)
        );
        assert!(
            d.explanation
                .iter()
                .any(|l| l == "managed row smarthost.example: encrypt (relay domain smarthost.example requires authentication) (decides)"),
            "{:?}",
            d.explanation
        );
        // A relay domain without credentials manages nothing.
        let d = decide(&snap, "a@plain.example", None, None);
        assert_eq!(d.source.to_string(), "row:plain.example");
        // A stricter source still wins over the managed row.
        s.policy.push(row(".smarthost.example", Level::Verify));
        let snap = Snapshot::new(s, 0);
        let d = decide(&snap, "a@smarthost.example", None, None);
        assert_eq!(
            (d.level, d.source.to_string()),
            (Level::Verify, "row:.smarthost.example".into())
        );
    }

    #[test]
    fn first_header_counts() {
        let m = b"From: a\r\nX-TLSLevel: Try\r\nx-tlslevel: Require\r\n\r\nx-TLSLevel: body\r\n";
        assert_eq!(first_tls_level_header(m).as_deref(), Some("Try"));
        assert_eq!(
            first_tls_level_header(b"From: a\r\n\r\nx-TLSLevel: Require\r\n"),
            None
        );
    }
}
