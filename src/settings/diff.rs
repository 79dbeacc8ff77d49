//! What a settings change changes, section by section: what `postern settings import` prints
//! before it applies a file, and all `--dry-run` does.

use serde::{Deserialize, Serialize};

use super::Settings;

/// The top-level sections of the settings document, in the document's order.
pub const SECTIONS: [&str; 11] = [
    "inbound",
    "outbound",
    "admin",
    "trusted_networks",
    "relay_domains",
    "smtp_auth_users",
    "policy",
    "rule_data",
    "rules",
    "m365",
    "inbound_tls",
];

/// One section's change. Lists count rows by their key (pattern, domain, user name, list or
/// rule name); a single-table section such as `inbound` is one row that changed or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionChange {
    pub section: String,
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl std::fmt::Display for SectionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.added, "added"),
            (self.removed, "removed"),
            (self.changed, "changed"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        write!(f, "{}: {}", self.section, parts.join(", "))
    }
}

/// The sections `new` changes from `old`, only those with a change. Stored forms are
/// compared, so a new password (a new hash) counts as a changed user.
pub fn diff(old: &Settings, new: &Settings) -> Vec<SectionChange> {
    let one = |section: &str, same: bool| SectionChange {
        section: section.to_string(),
        added: 0,
        removed: 0,
        changed: usize::from(!same),
    };
    let changes = vec![
        one("inbound", old.inbound == new.inbound),
        one("outbound", old.outbound == new.outbound),
        one("admin", old.admin == new.admin),
        rows(
            "trusted_networks",
            &old.trusted_networks,
            &new.trusted_networks,
            |n| n.to_string(),
        ),
        rows(
            "relay_domains",
            &old.relay_domains,
            &new.relay_domains,
            |d| d.domain.clone(),
        ),
        rows(
            "smtp_auth_users",
            &old.smtp_auth_users,
            &new.smtp_auth_users,
            |u| u.username.clone(),
        ),
        rows("policy", &old.policy, &new.policy, |p| p.pattern.clone()),
        rows("rule_data", &old.rule_data, &new.rule_data, |l| {
            l.name.clone()
        }),
        rows_ordered("rules", &old.rules, &new.rules, |r| r.name.clone()),
        one("m365", old.m365 == new.m365),
        rows("inbound_tls", &old.inbound_tls, &new.inbound_tls, |r| {
            r.pattern.clone()
        }),
    ];
    changes
        .into_iter()
        .filter(|c| c.added + c.removed + c.changed > 0)
        .collect()
}

fn rows<T: PartialEq>(
    section: &str,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> String,
) -> SectionChange {
    let find = |list: &[T], k: &str| list.iter().position(|x| key(x) == k);
    let mut change = SectionChange {
        section: section.to_string(),
        added: 0,
        removed: 0,
        changed: 0,
    };
    for n in new {
        match find(old, &key(n)) {
            None => change.added += 1,
            Some(i) if old[i] != *n => change.changed += 1,
            Some(_) => {}
        }
    }
    change.removed = old.iter().filter(|o| find(new, &key(o)).is_none()).count();
    change
}

/// As `rows`, and a reordering of the same rules counts as a change: the first rule that
/// matches decides, so the order is part of what each rule means.
fn rows_ordered<T: PartialEq>(
    section: &str,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> String,
) -> SectionChange {
    let mut change = rows(section, old, new, &key);
    if change.added + change.removed + change.changed == 0 && old != new {
        let moved = old
            .iter()
            .zip(new)
            .filter(|(a, b)| key(a) != key(b))
            .count();
        change.changed = moved;
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::Level;
    use crate::settings::{MessageRule, PolicyRow, RuleTls};

    fn rule(name: &str) -> MessageRule {
        MessageRule {
            name: name.into(),
            direction: Default::default(),
            recipient_matches: None,
            recipient_not_matches: None,
            sender_matches: None,
            sender_not_matches: None,
            every_recipient: true,
            tls_level: RuleTls::Require,
        }
    }

    #[test]
    fn counts_rows_by_key() {
        let old = Settings {
            policy: vec![
                PolicyRow::new("a.example", Level::May),
                PolicyRow::new("b.example", Level::Encrypt),
            ],
            ..Settings::default()
        };
        let new = Settings {
            policy: vec![
                PolicyRow::new("b.example", Level::Verify),
                PolicyRow::new("c.example", Level::May),
                PolicyRow::new("d.example", Level::May),
            ],
            trusted_networks: vec![],
            ..old.clone()
        };
        let changes = diff(&old, &new);
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "trusted_networks: 2 removed",
                "policy: 2 added, 1 removed, 1 changed"
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn reordered_rules_are_a_change() {
        let old = Settings {
            rules: vec![rule("a"), rule("b")],
            ..Settings::default()
        };
        let new = Settings {
            rules: vec![rule("b"), rule("a")],
            ..Settings::default()
        };
        assert_eq!(diff(&old, &new)[0].to_string(), "rules: 2 changed");
    }
}

/// One field that differs between two versions, as the audit page shows it:
/// `policy[partner.example].level: "may" → "encrypt"`. Secrets are never in the document,
/// so never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub path: String,
    /// JSON of the old value; `None` where the field did not exist.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Field by field, `old` → `new` (no `old`: the first version, every field added). List
/// items are named by their key (pattern, domain, user name, name) so that a row added in
/// the middle is one change, not a shift of every row after it.
pub fn fields(old: Option<&Settings>, new: &Settings) -> Vec<FieldChange> {
    let flat = |s: &Settings| {
        let mut out = std::collections::BTreeMap::new();
        let value = serde_json::to_value(s.to_doc()).unwrap_or_default();
        flatten(String::new(), &value, &mut out);
        out
    };
    let before = old.map(flat).unwrap_or_default();
    let after = flat(new);
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| FieldChange {
            path: p.clone(),
            before: before.get(p).cloned(),
            after: after.get(p).cloned(),
        })
        .collect()
}

fn flatten(
    at: String,
    value: &serde_json::Value,
    out: &mut std::collections::BTreeMap<String, String>,
) {
    use serde_json::Value;
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(join(k), v, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| item_key(i).is_some()) && !items.is_empty() => {
            for item in items {
                let key = item_key(item).unwrap_or_default();
                flatten(format!("{at}[{key}]"), item, out);
            }
        }
        // An empty list is no field: its first item shows as added, its last as removed.
        Value::Array(items) if items.is_empty() => {}
        other => {
            out.insert(at, other.to_string());
        }
    }
}

/// The field that names a list item, as `diff` counts rows.
fn item_key(item: &serde_json::Value) -> Option<String> {
    ["pattern", "domain", "username", "name"]
        .iter()
        .find_map(|k| item.get(*k).and_then(|v| v.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod field_tests {
    use super::*;
    use crate::levels::Level;
    use crate::settings::PolicyRow;

    #[test]
    fn each_changed_field_is_named_by_its_row() {
        let mut old = Settings::default();
        old.policy.push(PolicyRow::new("a.example", Level::May));
        old.policy.push(PolicyRow::new("c.example", Level::May));
        let mut new = old.clone();
        new.policy
            .insert(1, PolicyRow::new("b.example", Level::Encrypt));
        new.policy[0].level = Level::Verify;
        new.inbound.tls_mode = crate::settings::TlsMode::Encrypt;
        let changes = fields(Some(&old), &new);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert!(paths.contains(&"inbound.tls_mode"), "{paths:?}");
        assert!(paths.contains(&"policy[a.example].level"), "{paths:?}");
        assert!(paths.contains(&"policy[b.example].pattern"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.starts_with("policy[c.example]")),
            "the row after the insertion did not change: {paths:?}"
        );
        let level = changes
            .iter()
            .find(|c| c.path == "policy[a.example].level")
            .unwrap();
        assert_eq!(
            (level.before.as_deref(), level.after.as_deref()),
            (Some("\"may\""), Some("\"verify\""))
        );
        let added = changes
            .iter()
            .find(|c| c.path == "policy[b.example].level")
            .unwrap();
        assert_eq!(added.before, None);
    }
}
