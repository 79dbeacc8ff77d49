//! `policy`: the outbound TLS table, and the rows relay domains manage.

use serde::Deserialize;

use crate::next_hop::is_domain_name;
use crate::settings::{PolicyRow, RelayDomain};

use super::{FieldError, field_error};

/// No cipher has more key bits.
pub(super) const MAX_MIN_BITS: u16 = 256;

/// The words for a minimum strength out of range, wherever the number was read.
pub fn min_bits_out_of_range(b: i64) -> String {
    format!("{b} is out of range (0–{MAX_MIN_BITS})")
}

/// `min_bits` read as any integer, so a value a `u16` cannot hold gets the same words as
/// one the validator refuses (the field and its range), not a parser's type message.
pub fn min_bits_any_integer<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u16>, D::Error> {
    let Some(b) = Option::<i64>::deserialize(d)? else {
        return Ok(None);
    };
    u16::try_from(b)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(min_bits_out_of_range(b)))
}

/// The rows relay domains with SASL credentials manage.
pub fn managed_rows(domains: &[RelayDomain]) -> Vec<PolicyRow> {
    domains
        .iter()
        .filter(|d| d.auth.is_some())
        .map(|d| PolicyRow::managed(&d.domain))
        .collect()
}

/// Policy rows: valid patterns (the messages of Hermes' errors 4, 5/6), no two rows for the
/// same pattern, a minimum strength no cipher exceeds refused. Rows managed by relay domains
/// (`managed`, from the new relay domains) are not stored: they are checked unchanged, and
/// one that existed before (`was_managed`) cannot be deleted while its domain still needs
/// authentication; a row whose domain no longer does simply goes.
pub fn check_policy(
    rows: &[PolicyRow],
    managed: &[PolicyRow],
    was_managed: &[PolicyRow],
) -> Result<Vec<PolicyRow>, FieldError> {
    let mut out: Vec<PolicyRow> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if let Some(by) = &row.managed_by {
            check_managed_row(i, row, by, managed)?;
            continue;
        }
        let pattern = check_pattern(i, row, &out, managed)?;
        if let Some(b) = row.min_bits.filter(|b| *b > MAX_MIN_BITS) {
            return Err(field_error(
                format!("policy[{i}].min_bits"),
                min_bits_out_of_range(b.into()),
            ));
        }
        let fingerprints = check_fingerprints(i, row)?;
        check_match_names(i, row)?;
        check_key_exchange(i, row)?;
        out.push(PolicyRow {
            pattern,
            fingerprints,
            match_names: row
                .match_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            ..row.clone()
        });
    }
    check_managed_kept(rows, managed, was_managed)?;
    Ok(out)
}

/// A pattern as stored: trimmed, lower case, without the trailing dot of an absolute name.
fn normal_pattern(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Row `i`'s pattern, normalised: present, a domain, `.domain`, `user@domain` or `*`, and
/// not already in the table (`out`, the rows before it) nor managed by a relay domain.
fn check_pattern(
    i: usize,
    row: &PolicyRow,
    out: &[PolicyRow],
    managed: &[PolicyRow],
) -> Result<String, FieldError> {
    let pattern = normal_pattern(&row.pattern);
    let domain = match pattern.rsplit_once('@') {
        Some((user, d)) if !user.is_empty() && !user.contains('@') => d,
        Some(_) => "",
        None => pattern.strip_prefix('.').unwrap_or(&pattern),
    };
    let field = format!("policy[{i}].pattern");
    if pattern.is_empty() {
        // Hermes' error 20: a field left blank is said as such, not as a bad domain.
        return Err(field_error(
            field,
            "required: a domain, .domain, user@domain or *",
        ));
    }
    if pattern != "*" && !is_domain_name(domain) {
        return Err(field_error(
            field,
            format!(
                "{:?} is not a valid domain, .domain, user@domain or *",
                row.pattern
            ),
        ));
    }
    if out.iter().any(|o| o.pattern == pattern) {
        // Hermes' errors 5 and 6 (duplicate on add, on edit): the field names this row.
        return Err(field_error(
            field,
            format!("duplicate row: {pattern:?} is already in the table"),
        ));
    }
    if let Some(m) = managed.iter().find(|m| m.pattern == pattern) {
        return Err(field_error(
            field,
            format!(
                "duplicate row: {pattern:?} is managed by relay domain {} (its next hop requires authentication)",
                m.pattern
            ),
        ));
    }
    Ok(pattern)
}

/// Row `i`'s pinned certificates as stored (lower-case hex, colons dropped); level
/// `fingerprint` needs at least one, or nothing would ever match.
fn check_fingerprints(i: usize, row: &PolicyRow) -> Result<Vec<String>, FieldError> {
    let mut fingerprints = Vec::with_capacity(row.fingerprints.len());
    for (k, f) in row.fingerprints.iter().enumerate() {
        let hex: String = f
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field_error(
                format!("policy[{i}].fingerprints[{k}]"),
                "must be a SHA-256 fingerprint: 64 hex digits, colons allowed",
            ));
        }
        fingerprints.push(hex);
    }
    if row.level == crate::levels::Level::Fingerprint && fingerprints.is_empty() {
        return Err(field_error(
            format!("policy[{i}].fingerprints"),
            "required for level fingerprint",
        ));
    }
    Ok(fingerprints)
}

/// Row `i`'s names to match in the peer's certificate: domain names, `*.` allowed.
fn check_match_names(i: usize, row: &PolicyRow) -> Result<(), FieldError> {
    for (k, n) in row.match_names.iter().enumerate() {
        if !is_domain_name(n.trim_start_matches("*.")) {
            return Err(field_error(
                format!("policy[{i}].match_names[{k}]"),
                format!("{n:?} is not a domain name"),
            ));
        }
    }
    Ok(())
}

/// Row `i`'s key exchange: `classical` means something only where there is TLS.
fn check_key_exchange(i: usize, row: &PolicyRow) -> Result<(), FieldError> {
    use crate::levels::{KeyExchange, Level};
    if row.key_exchange == KeyExchange::Classical && row.level == Level::None {
        return Err(field_error(
            format!("policy[{i}].key_exchange"),
            "classical applies to TLS, and level none sends mail without TLS: choose level may or above, or leave key_exchange out",
        ));
    }
    Ok(())
}

/// A managed row that existed before must still be in the document while its relay domain
/// needs authentication: deleting it here would be undone by the relay domain anyway.
fn check_managed_kept(
    rows: &[PolicyRow],
    managed: &[PolicyRow],
    was_managed: &[PolicyRow],
) -> Result<(), FieldError> {
    for m in managed.iter().filter(|m| was_managed.contains(m)) {
        if !rows.iter().any(|r| r.managed_by == m.managed_by) {
            return Err(field_error(
                "policy",
                format!(
                    "the row for {} is managed by relay domain {} (its next hop requires authentication) and cannot be deleted here; remove the relay domain's credentials instead",
                    m.pattern, m.pattern
                ),
            ));
        }
    }
    Ok(())
}

/// A managed row in the document must be what its relay domain makes it; if the domain no
/// longer needs authentication, the row is dropped.
fn check_managed_row(
    i: usize,
    row: &PolicyRow,
    by: &str,
    managed: &[PolicyRow],
) -> Result<(), FieldError> {
    let by = by.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(m) = managed
        .iter()
        .find(|m| m.managed_by.as_deref() == Some(&by))
    else {
        return Ok(());
    };
    let given = PolicyRow {
        pattern: normal_pattern(&row.pattern),
        managed_by: Some(by.clone()),
        ..row.clone()
    };
    // Every field, the note too: an edit the store would silently drop is refused instead.
    if given == *m {
        Ok(())
    } else {
        Err(field_error(
            format!("policy[{i}]"),
            format!(
                "this row is managed by relay domain {by} (its next hop requires authentication) and cannot be edited here; change the relay domain instead"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use crate::settings::*;

    #[test]
    fn policy_rows_checked() {
        let ok = doc(
            "[[policy]]\npattern = \"Partner.Example.\"\nlevel = \"encrypt\"\n[[policy]]\npattern = \"*\"\nlevel = \"may\"",
        );
        let s = Settings::default().apply(&ok, &FakeHasher).unwrap();
        assert_eq!(s.policy[0].pattern, "partner.example");
        for (text, field) in [
            (
                "[[policy]]\npattern = \"not a domain\"\nlevel = \"encrypt\"",
                "policy[0].pattern",
            ),
            (
                "[[policy]]\npattern = \"a.example\"\nlevel = \"encrypt\"\n[[policy]]\npattern = \"A.example\"\nlevel = \"may\"",
                "policy[1].pattern",
            ),
            (
                "[[policy]]\npattern = \"@a.example\"\nlevel = \"encrypt\"",
                "policy[0].pattern",
            ),
            (
                "[[policy]]\npattern = \"a.example\"\nlevel = \"encrypt\"\nmin_bits = 512",
                "policy[0].min_bits",
            ),
            (
                "[[policy]]\npattern = \"a.example\"\nlevel = \"fingerprint\"",
                "policy[0].fingerprints",
            ),
            (
                "[[policy]]\npattern = \"a.example\"\nlevel = \"fingerprint\"\nfingerprints = [\"AB:CD\"]",
                "policy[0].fingerprints[0]",
            ),
            (
                "[[policy]]\npattern = \"a.example\"\nlevel = \"secure\"\nmatch_names = [\"not a name\"]",
                "policy[0].match_names[0]",
            ),
        ] {
            let err = Settings::default()
                .apply(&doc(text), &FakeHasher)
                .unwrap_err();
            assert_eq!(err.field, field, "{text}");
        }
        // Unknown levels are refused by name, never accepted silently; dane and dane-only
        // are Postfix's names.
        assert!(
            toml::from_str::<SettingsDoc>(
                "[[policy]]\npattern = \"a.example\"\nlevel = \"mta-sts\""
            )
            .is_err()
        );
        for level in ["dane", "dane-only"] {
            let text = format!("[[policy]]\npattern = \"a.example\"\nlevel = \"{level}\"");
            assert!(toml::from_str::<SettingsDoc>(&text).is_ok(), "{level}");
        }
    }
}
