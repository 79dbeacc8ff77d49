//! The live snapshot: settings compiled for fast lookups. A session or delivery attempt reads
//! it once (`SettingsHandle::current`) and keeps it, so a change applies to the next session
//! and never to one in flight.

use std::collections::HashMap;
use std::net::IpAddr;

use super::document::{MessageRule, PolicyRow, RelayDomain, RuleData, Settings};

#[derive(Debug)]
pub struct Snapshot {
    /// Audit sequence number of the change that made this snapshot (0: first start).
    pub version: u64,
    pub settings: Settings,
    /// Exact domains, lower-case.
    relay_exact: HashMap<String, usize>,
    /// `.example.com` rows, stored as `example.com`.
    relay_parents: Vec<(String, usize)>,
    /// Policy rows by the keys a recipient is looked up with.
    policy: PolicyIndex,
    /// Rule-data index: domain -> ids of the lists that name it.
    lists_by_domain: HashMap<String, Vec<u16>>,
    /// Message rules with their list names resolved to ids, in order.
    compiled_rules: Vec<CompiledRule>,
    /// Per relay domain (same index), its recipient table when it has one.
    recipient_tables: Vec<Option<RecipientTable>>,
}

/// Policy rows: `user@domain` and `domain` by exact key, `.domain` and subdomain-flagged
/// rows by the domain they cover, and the `*` row (indexes into `Settings::policy`).
#[derive(Debug, Default)]
struct PolicyIndex {
    exact: HashMap<String, usize>,
    parents: HashMap<String, usize>,
    every: Option<usize>,
}

impl PolicyIndex {
    fn new(rows: &[PolicyRow]) -> PolicyIndex {
        let mut index = PolicyIndex::default();
        for (i, row) in rows.iter().enumerate() {
            match row.pattern.as_str() {
                "*" => index.every = Some(i),
                p if p.starts_with('.') => {
                    index.parents.insert(p[1..].to_string(), i);
                }
                p => {
                    index.exact.insert(p.to_string(), i);
                    if row.include_subdomains && !p.contains('@') {
                        index.parents.insert(p.to_string(), i);
                    }
                }
            }
        }
        index
    }
}

/// Relay domains by name: exact domains, and `.parent` rows (stored without the dot) that
/// cover every subdomain.
fn index_relay_domains(domains: &[RelayDomain]) -> (HashMap<String, usize>, Vec<(String, usize)>) {
    let mut exact = HashMap::new();
    let mut parents = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        match d.domain.strip_prefix('.') {
            Some(parent) => parents.push((parent.to_string(), i)),
            None => {
                exact.insert(d.domain.clone(), i);
            }
        }
    }
    (exact, parents)
}

/// Domain -> ids of the rule-data lists that name it, so a rule test is one walk up the
/// recipient's labels whatever the number of lists.
fn index_rule_data(lists: &[RuleData]) -> HashMap<String, Vec<u16>> {
    let mut by_domain: HashMap<String, Vec<u16>> = HashMap::new();
    for (id, list) in lists.iter().enumerate() {
        for d in &list.domains {
            by_domain.entry(d.clone()).or_default().push(id as u16);
        }
    }
    by_domain
}

/// Message rules with their list names resolved to list ids, in order.
fn compile_rules(rules: &[MessageRule], lists: &[RuleData]) -> Vec<CompiledRule> {
    let mut list_ids: HashMap<&str, u16> = HashMap::new();
    for (id, list) in lists.iter().enumerate() {
        list_ids.insert(list.name.as_str(), id as u16);
    }
    // A name validation let through but that resolves to nothing matches nothing (u16::MAX).
    let resolve = |name: &Option<String>| {
        name.as_deref()
            .map(|n| list_ids.get(n).copied().unwrap_or(u16::MAX))
    };
    rules
        .iter()
        .enumerate()
        .map(|(index, r)| CompiledRule {
            index,
            recipient_in: resolve(&r.recipient_matches),
            recipient_not_in: resolve(&r.recipient_not_matches),
            sender_in: resolve(&r.sender_matches),
            sender_not_in: resolve(&r.sender_not_matches),
        })
        .collect()
}

/// A relay domain's known recipients: exact addresses, and `prefix*suffix` patterns.
#[derive(Debug, Default)]
struct RecipientTable {
    exact: std::collections::HashSet<String>,
    patterns: Vec<(String, String)>,
}

impl RecipientTable {
    fn new(list: &[String]) -> RecipientTable {
        let mut t = RecipientTable::default();
        for entry in list {
            match entry.split_once('*') {
                Some((prefix, suffix)) => t.patterns.push((prefix.into(), suffix.into())),
                None => {
                    t.exact.insert(entry.clone());
                }
            }
        }
        t
    }

    fn contains(&self, rcpt: &str) -> bool {
        self.exact.contains(rcpt)
            || self.patterns.iter().any(|(p, s)| {
                rcpt.len() >= p.len() + s.len()
                    && rcpt.starts_with(p.as_str())
                    && rcpt.ends_with(s.as_str())
            })
    }
}

/// A message rule with its lists resolved (validation guarantees every name exists).
#[derive(Debug)]
pub struct CompiledRule {
    pub index: usize,
    pub recipient_in: Option<u16>,
    pub recipient_not_in: Option<u16>,
    pub sender_in: Option<u16>,
    pub sender_not_in: Option<u16>,
}

impl Snapshot {
    pub fn new(settings: Settings, version: u64) -> Snapshot {
        let (relay_exact, relay_parents) = index_relay_domains(&settings.relay_domains);
        let policy = PolicyIndex::new(&settings.policy);
        let lists_by_domain = index_rule_data(&settings.rule_data);
        let compiled_rules = compile_rules(&settings.rules, &settings.rule_data);
        let recipient_tables = settings
            .relay_domains
            .iter()
            .map(|d| d.recipients.as_deref().map(RecipientTable::new))
            .collect();
        Snapshot {
            version,
            settings,
            relay_exact,
            relay_parents,
            policy,
            lists_by_domain,
            compiled_rules,
            recipient_tables,
        }
    }

    /// Ids of the rule-data lists that name `domain` or one of its parents: one walk up the
    /// labels per address, whatever the number of rules.
    pub fn rule_lists_of(&self, domain: &str) -> Vec<u16> {
        let mut out = Vec::new();
        let mut d = Some(domain.trim_end_matches('.'));
        while let Some(cur) = d {
            if let Some(ids) = self.lists_by_domain.get(cur) {
                out.extend_from_slice(ids);
            }
            d = cur.split_once('.').map(|(_, rest)| rest);
        }
        out
    }

    pub fn compiled_rules(&self) -> &[CompiledRule] {
        &self.compiled_rules
    }

    /// The most specific policy row for `recipient`: `user@domain`, then `domain`, then the
    /// nearest `.parent` (or subdomain-flagged) row, then `*`.
    pub fn policy_row(&self, recipient: &str) -> Option<&super::PolicyRow> {
        self.policy_rows(recipient).into_iter().next()
    }

    /// Every policy row that matches `recipient`, the most specific first (the one that
    /// applies); the others are what it overrides, which `policy explain` shows.
    pub fn policy_rows(&self, recipient: &str) -> Vec<&super::PolicyRow> {
        let recipient = recipient.to_ascii_lowercase();
        let domain = recipient
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&recipient);
        let domain = domain.trim_end_matches('.');
        let mut found: Vec<usize> = Vec::new();
        let mut add = |i: Option<&usize>| {
            if let Some(&i) = i.filter(|i| !found.contains(i)) {
                found.push(i);
            }
        };
        add(self.policy.exact.get(recipient.as_str()));
        add(self.policy.exact.get(domain));
        let mut parent = Some(domain);
        while let Some(d) = parent {
            add(self.policy.parents.get(d));
            parent = d.split_once('.').map(|(_, rest)| rest);
        }
        add(self.policy.every.as_ref());
        found
            .into_iter()
            .map(|i| &self.settings.policy[i])
            .collect()
    }

    /// The relay domain row for `domain` (case-insensitive, trailing dot ignored): an exact
    /// row first, then the longest `.parent` row.
    pub fn relay_domain(&self, domain: &str) -> Option<&RelayDomain> {
        self.relay_index(domain)
            .map(|i| &self.settings.relay_domains[i])
    }

    fn relay_index(&self, domain: &str) -> Option<usize> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.relay_exact.get(&domain) {
            return Some(i);
        }
        self.relay_parents
            .iter()
            .filter(|(parent, _)| {
                domain.len() > parent.len()
                    && domain.ends_with(parent.as_str())
                    && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
            })
            .max_by_key(|(parent, _)| parent.len())
            .map(|&(_, i)| i)
    }

    /// Whether RCPT for `rcpt` waits for its next hop's answer: its relay domain asks for
    /// call-ahead verification and has no recipient table that already decided.
    pub fn verifies_by_call_ahead(&self, rcpt: &str) -> bool {
        let Some((_, domain)) = rcpt.rsplit_once('@') else {
            return false;
        };
        self.relay_index(domain).is_some_and(|i| {
            self.settings.relay_domains[i].verify_recipients && self.recipient_tables[i].is_none()
        })
    }

    /// Whether `rcpt` (`local@domain`) may be accepted by its relay domain's recipient
    /// table: true when the domain is not a relay domain or has no table.
    pub fn recipient_known(&self, rcpt: &str) -> bool {
        let Some((_, domain)) = rcpt.rsplit_once('@') else {
            return true;
        };
        match self
            .relay_index(domain)
            .and_then(|i| self.recipient_tables[i].as_ref())
        {
            Some(table) => table.contains(&rcpt.trim_end_matches('.').to_ascii_lowercase()),
            None => true,
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.settings
            .trusted_networks
            .iter()
            .any(|n| n.contains(&ip))
    }

    pub fn password_hash(&self, username: &str) -> Option<&str> {
        self.settings
            .smtp_auth_users
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.password_hash.as_str())
    }
}

/// An IPv4 client seen on a dual-stack socket arrives as `::ffff:a.b.c.d`; match it against
/// IPv4 networks.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(domains: &[&str]) -> Snapshot {
        let relay_domains = domains
            .iter()
            .map(|d| RelayDomain {
                domain: d.to_string(),
                recipients: None,
                verify_recipients: false,
                transport: None,
                auth: None,
                client_certificate: None,
            })
            .collect();
        Snapshot::new(
            Settings {
                relay_domains,
                ..Settings::default()
            },
            0,
        )
    }

    #[test]
    fn exact_and_parent_rows() {
        let s = snap(&["example.com", ".sub.example.org"]);
        assert!(s.relay_domain("EXAMPLE.com.").is_some());
        assert!(s.relay_domain("a.example.com").is_none());
        assert!(s.relay_domain("a.sub.example.org").is_some());
        assert!(s.relay_domain("sub.example.org").is_none());
        assert!(s.relay_domain("xsub.example.org").is_none());
    }

    #[test]
    fn trusted_networks_match_mapped_v4() {
        let s = snap(&[]);
        assert!(s.is_trusted("127.0.0.5".parse().unwrap()));
        assert!(s.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(s.is_trusted("::1".parse().unwrap()));
        assert!(!s.is_trusted("192.0.2.1".parse().unwrap()));
    }
}
