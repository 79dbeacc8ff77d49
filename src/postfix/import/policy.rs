//! `smtp_tls_policy_maps` as postern's policy rows, placed by Postfix's lookup (the
//! module's comment in `mod.rs` says why): by a route's next hop, by the relayhost, or by
//! the recipient domain.

use super::levels::level_of;
use super::routes::{Transports, parents, route_for};
use super::{ImportError, Imported, Tables};
use crate::levels::Level;
use crate::postfix::conf::MainCf;
use crate::postfix::maps::{self, Entry};
use crate::settings::PolicyRow;

/// A parsed policy value: the level and its attributes.
struct PolicyValue {
    level: Option<Level>,
    word: String,
    matches: Vec<String>,
    /// Attributes and match patterns not carried over.
    ignored: Vec<String>,
}

fn policy_value(value: &str) -> PolicyValue {
    let mut words = value.split_whitespace();
    let word = words.next().unwrap_or("").to_ascii_lowercase();
    let mut v = PolicyValue {
        level: level_of(&word),
        word,
        matches: Vec::new(),
        ignored: Vec::new(),
    };
    for attr in words {
        match attr.split_once('=') {
            Some(("match", names)) => {
                for n in names.split(':') {
                    match n {
                        // Postfix's own words for what postern checks by default.
                        "nexthop" | "dot-nexthop" | "hostname" => {}
                        // "any subdomain of": postern matches names, so it is stricter here.
                        n if n.starts_with('.') => v.ignored.push(format!("match {n}")),
                        n => v.matches.push(n.to_string()),
                    }
                }
            }
            _ => v.ignored.push(attr.to_string()),
        }
    }
    v
}

/// Postfix's policy lookup for a next hop: `[host]` keys verbatim; a domain exact, then
/// `.parent` keys (subdomains only).
fn policy_for<'a>(entries: &'a [Entry], hop: &str) -> Option<&'a Entry> {
    if hop.starts_with('[') {
        let bare = hop.strip_suffix(":25").unwrap_or(hop);
        return maps::find(entries, hop).or_else(|| maps::find(entries, bare));
    }
    maps::find(entries, hop)
        .or_else(|| parents(hop).find_map(|p| maps::find(entries, &format!(".{p}"))))
}

/// `smtp_tls_policy_maps`: each row placed where Postfix would have found it (see the
/// module's comment), and what could not be placed named in the report.
pub(super) fn policy(
    cf: &MainCf,
    tables: &mut Tables,
    transport: &Transports,
    global: Level,
    out: &mut Imported,
) -> Result<(), ImportError> {
    let Some(value) = cf.get("smtp_tls_policy_maps").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => {
            out.dropped("smtp_tls_policy_maps", why, true);
            return Ok(());
        }
    };
    let relayhost = cf.get("relayhost").filter(|r| !r.is_empty());
    let mut rows: Vec<PolicyRow> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    routed_rows(&entries, transport, global, &mut rows, &mut notes);
    match &relayhost {
        // Everything else goes to the relayhost: one lookup decides it all.
        Some(hop) => {
            if let Some(e) = policy_for(&entries, hop) {
                rows.extend(row("*", e, &mut notes));
            }
            notes.push(format!(
                "domain rows are not used by Postfix with relayhost {hop}"
            ));
        }
        None => domain_rows(&entries, transport, global, &mut rows, &mut notes),
    }
    report(rows, global, notes, out);
    Ok(())
}

/// Mail routed by the transport table: its rows are found by the route's next hop.
fn routed_rows(
    entries: &[Entry],
    transport: &Transports,
    global: Level,
    rows: &mut Vec<PolicyRow>,
    notes: &mut Vec<String>,
) {
    for (key, hop) in transport {
        if let Some(e) = policy_for(entries, hop) {
            rows.extend(row(key, e, notes));
            // Postfix's `.d` route leaves `d` itself to the MX (and its own row); postern's
            // `.d` row would cover it, so `d` gets the row Postfix finds for it.
            if let Some(bare) = key.strip_prefix('.')
                && route_for(transport, bare).is_none()
            {
                match policy_for(entries, bare) {
                    Some(own) => rows.extend(row(bare, own, notes)),
                    None => rows.push(PolicyRow {
                        note: format!(
                            "imported: Postfix's route .{bare} does not cover {bare} itself"
                        ),
                        ..PolicyRow::new(bare, global)
                    }),
                }
            }
        }
    }
}

/// The rows into the settings and one report line: a security drop when a value was not a
/// level postern has. A row below the global level is kept and named: postern applies the
/// stricter of the two, Postfix applied the row.
fn report(rows: Vec<PolicyRow>, global: Level, mut notes: Vec<String>, out: &mut Imported) {
    for r in &rows {
        if r.level < global && r.pattern != "*" {
            notes.push(format!(
                "{} {}: below the global level {global}, which postern keeps (the stricter wins)",
                r.pattern, r.level
            ));
        }
    }
    let dropped_level = notes.iter().any(|n| n.contains("not a level postern has"));
    let what = format!("{} policy row(s)", rows.len());
    out.settings.policy.extend(rows);
    if dropped_level {
        out.dropped(
            "smtp_tls_policy_maps",
            format!("{what}; {}", notes.join("; ")),
            true,
        );
    } else if notes.is_empty() {
        out.carried("smtp_tls_policy_maps", what);
    } else {
        out.carried(
            "smtp_tls_policy_maps",
            format!("{what}; {}", notes.join("; ")),
        );
    }
}

/// Domain keys, for mail delivered by MX: `d` as `d`; `.d` as `.d`, with a `d` row at the
/// global level when the table has none (postern's `.d` covers `d` too, Postfix's does not).
fn domain_rows(
    entries: &[Entry],
    transport: &Transports,
    global: Level,
    rows: &mut Vec<PolicyRow>,
    notes: &mut Vec<String>,
) {
    for e in entries {
        if e.key.starts_with('[') {
            if !transport
                .iter()
                .any(|(_, hop)| policy_for(std::slice::from_ref(e), hop).is_some())
            {
                notes.push(format!(
                    "{}: no transport route goes there, so Postfix never uses it",
                    e.key
                ));
            }
            continue;
        }
        if let Some(hop) = route_for(transport, e.key.trim_start_matches('.'))
            && transport.iter().any(|(k, _)| *k == e.key)
        {
            notes.push(format!(
                "{}: routed to {hop}, so Postfix looks up {hop}, not this row",
                e.key
            ));
            continue;
        }
        rows.extend(row(&e.key, e, notes));
        if let Some(bare) = e.key.strip_prefix('.')
            && maps::find(entries, bare).is_none()
        {
            rows.push(PolicyRow {
                note: format!("imported: Postfix's .{bare} does not cover {bare} itself"),
                ..PolicyRow::new(bare, global)
            });
        }
    }
}

/// The postern row for Postfix's entry `e`, placed at `pattern`.
fn row(pattern: &str, e: &Entry, notes: &mut Vec<String>) -> Option<PolicyRow> {
    let v = policy_value(&e.value);
    let Some(level) = v.level else {
        notes.push(format!("{} {}: not a level postern has", e.key, v.word));
        return None;
    };
    if !v.ignored.is_empty() {
        notes.push(format!(
            "{}: {} not carried (postern's TLS baseline is fixed; it matches certificate names, not subdomains of them)",
            e.key,
            v.ignored.join(" ")
        ));
    }
    let mut r = PolicyRow::new(pattern, level);
    r.note = format!("imported from smtp_tls_policy_maps line {}", e.line);
    if level == Level::Fingerprint {
        r.fingerprints = v.matches;
    } else {
        r.match_names = v.matches;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_as_postfix_does_them() {
        let t = maps::table(".example.com encrypt\nexample.org may\n[relay.example]:2525 verify\n");
        assert_eq!(policy_for(&t, "a.example.com").unwrap().value, "encrypt");
        assert!(
            policy_for(&t, "example.com").is_none(),
            ".d is subdomains only"
        );
        assert!(policy_for(&t, "a.example.org").is_none(), "d is exact");
        assert_eq!(
            policy_for(&t, "[relay.example]:2525").unwrap().value,
            "verify"
        );
        let routes = vec![(".corp.example".to_string(), "[10.0.0.5]".to_string())];
        assert_eq!(route_for(&routes, "mail.corp.example"), Some("[10.0.0.5]"));
        assert_eq!(route_for(&routes, "corp.example"), None);
    }
}
