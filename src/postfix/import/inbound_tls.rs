//! TLS required of named senders and clients: `check_sender_access` and
//! `check_client_access` maps (in any `smtpd_*_restrictions`) whose action is
//! `reject_plaintext_session`, directly or through a restriction class, become inbound
//! `encrypt` rows; `plaintext_reject_code` is carried. Postfix identifies client
//! certificates by fingerprint (`check_ccert_access`, `permit_tls_clientcerts` with
//! `relay_clientcerts`), postern's `verify` rows by the names a certificate carries: those are
//! named as left behind, saying what to add instead.

use std::collections::HashMap;

use ipnet::IpNet;

use super::{Imported, Tables};
use crate::levels::InboundLevel;
use crate::postfix::conf::{MainCf, list};
use crate::postfix::maps::{self, Entry, MapRef};
use crate::settings::{InboundTlsRow, is_domain_name};

/// The restriction lists an access map may be named in.
pub(super) const RESTRICTIONS: [&str; 5] = [
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_relay_restrictions",
];

/// The restrictions that ask for a client certificate, which Postfix matches by fingerprint.
const CERT_RESTRICTIONS: [&str; 3] = [
    "check_ccert_access",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
];

/// What an access map's action (or a restriction class) asks of the session's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    /// `reject_plaintext_session` first: TLS required.
    Encrypt,
    /// A certificate by fingerprint: which restriction.
    Certificate(String),
    Other,
}

/// Everything this file carries or names; the access maps carried whole are kept in
/// `out.restrictions_carried`, so the restriction lists do not name them again.
pub(super) fn inbound_tls(cf: &MainCf, tables: &mut Tables, out: &mut Imported) {
    reject_code(cf, out);
    let classes = classes(cf);
    let parent_style = parent_style(cf);
    for param in RESTRICTIONS {
        let Some(value) = cf.get(param) else {
            continue;
        };
        for (check, map) in checks(&value) {
            match check.as_str() {
                "check_sender_access" | "check_client_access" => {
                    access_map(tables, (&check, &map), &classes, parent_style, out)
                }
                "check_ccert_access" => out.dropped(
                    &format!("{check} {map}"),
                    "its keys are certificate fingerprints; postern's inbound verify rows name a sender domain or client address and the DNS names its certificate must carry: add those rows by name",
                    true,
                ),
                _ => {}
            }
        }
    }
    if cf.has("relay_clientcerts") {
        out.dropped(
            "relay_clientcerts",
            "certificate fingerprints that may relay (permit_tls_clientcerts): postern relays for a certificate only as the Microsoft 365 connector (m365.certificate_names), and its inbound verify rows name the certificate's DNS names: add those by name",
            true,
        );
    }
    if cf.has("smtpd_tls_ask_ccert") {
        out.carried(
            "smtpd_tls_ask_ccert",
            "postern asks every client for a certificate at STARTTLS (never requires one; inbound verify rows judge it at MAIL FROM)",
        );
    }
}

/// `plaintext_reject_code`: 4xx or 5xx, as postern validates it.
fn reject_code(cf: &MainCf, out: &mut Imported) {
    if !cf.has("plaintext_reject_code") {
        return;
    }
    let value = cf.get("plaintext_reject_code").unwrap_or_default();
    match value.parse::<u16>() {
        Ok(code) if (400..=599).contains(&code) => {
            out.settings.inbound.plaintext_reject_code = code;
            out.carried(
                "plaintext_reject_code",
                format!("inbound.plaintext_reject_code = {code}"),
            );
        }
        _ => out.dropped(
            "plaintext_reject_code",
            format!("{value:?}: not a 4xx or 5xx reply code"),
            false,
        ),
    }
}

/// Whether `domain` keys of access maps also match subdomains (Postfix's default
/// `parent_domain_matches_subdomains` lists `smtpd_access_maps`): then `.domain` keys are
/// never looked up.
fn parent_style(cf: &MainCf) -> bool {
    cf.get("parent_domain_matches_subdomains")
        .is_none_or(|v| list(&v).iter().any(|i| i == "smtpd_access_maps"))
}

/// The restriction classes main.cf defines, by what each asks: `reject_plaintext_session`
/// first is TLS required; one that names a certificate restriction asks for a certificate.
fn classes(cf: &MainCf) -> HashMap<String, Ask> {
    let mut out = HashMap::new();
    for name in list(&cf.get("smtpd_restriction_classes").unwrap_or_default()) {
        let items: Vec<String> = list(&cf.get(&name).unwrap_or_default())
            .iter()
            .map(|i| i.to_ascii_lowercase())
            .collect();
        let ask = if items
            .first()
            .is_some_and(|i| i == "reject_plaintext_session")
        {
            Ask::Encrypt
        } else if items
            .iter()
            .any(|i| CERT_RESTRICTIONS.contains(&i.as_str()))
        {
            Ask::Certificate(format!("{name} = {}", items.join(", ")))
        } else {
            Ask::Other
        };
        out.insert(name.to_ascii_lowercase(), ask);
    }
    out
}

/// The `check_*` restrictions of a list with the table each names (`check_sender_access
/// hash:/etc/postfix/tls_senders`).
pub(super) fn checks(value: &str) -> Vec<(String, String)> {
    let items = list(value);
    items
        .windows(2)
        .filter(|w| w[0].starts_with("check_") && w[1].contains(':'))
        .map(|w| (w[0].to_ascii_lowercase(), w[1].clone()))
        .collect()
}

/// What an access map's action asks.
fn ask(action: &str, classes: &HashMap<String, Ask>) -> Ask {
    let first = list(action)
        .first()
        .map(|i| i.to_ascii_lowercase())
        .unwrap_or_default();
    if first == "reject_plaintext_session" {
        return Ask::Encrypt;
    }
    if CERT_RESTRICTIONS.contains(&first.as_str()) {
        return Ask::Certificate(first);
    }
    classes.get(&first).cloned().unwrap_or(Ask::Other)
}

/// One access map of a restriction list: its `reject_plaintext_session` entries become
/// rows; the rest of a map that has any is named as left behind. A map without any is not
/// this file's (the restriction list names it).
fn access_map(
    tables: &mut Tables,
    (check, map): (&str, &str),
    classes: &HashMap<String, Ask>,
    parent_style: bool,
    out: &mut Imported,
) {
    let Ok(entries) = entries(tables, map) else {
        return;
    };
    let asks: Vec<Ask> = entries.iter().map(|e| ask(&e.value, classes)).collect();
    if asks.iter().all(|a| *a == Ask::Other) {
        return;
    }
    let label = format!("{check} {map}");
    let (mut rows, mut left) = (Vec::new(), Vec::new());
    for (e, a) in entries.iter().zip(&asks) {
        let entry = format!("{} {} (line {})", e.key, e.value, e.line);
        let pattern = match (a, check) {
            (Ask::Encrypt, "check_sender_access") => sender_pattern(&e.key, parent_style),
            (Ask::Encrypt, _) => client_pattern(&e.key),
            (Ask::Certificate(what), _) => Err(format!(
                "{what}: a client certificate Postfix matches by fingerprint; add a verify row with the names the certificate carries"
            )),
            (Ask::Other, _) => Err("not an inbound TLS requirement".to_string()),
        };
        match pattern {
            Ok(pattern) => rows.push(row(pattern, &label, e)),
            Err(why) => left.push(format!("{entry}: {why}")),
        }
    }
    let said: Vec<String> = rows
        .iter()
        .map(|r| format!("{} encrypt", r.pattern))
        .collect();
    for r in rows {
        if !out
            .settings
            .inbound_tls
            .iter()
            .any(|o| o.pattern == r.pattern)
        {
            out.settings.inbound_tls.push(r);
        }
    }
    if !said.is_empty() {
        out.carried(&label, format!("inbound TLS rows: {}", said.join(", ")));
    }
    if left.is_empty() {
        out.restrictions_carried.push(label);
    } else {
        out.dropped(&label, left.join("; "), true);
    }
}

/// The entries of `map`: a text table postmap builds, or a `cidr:` table, which is its own
/// source (first match wins there; postern's longest prefix gives the same answer unless
/// a wider network is listed before a narrower one with another action).
fn entries(tables: &mut Tables, map: &str) -> Result<Vec<Entry>, String> {
    match MapRef::parse(map) {
        Some(m) if m.kind == "cidr" => {
            let path = m.source(&tables.config_directory, &tables.dir);
            std::fs::read_to_string(&path)
                .map(|text| maps::table(&text))
                .map_err(|e| format!("{m}: {}: {e}", path.display()))
        }
        _ => tables.read(map),
    }
}

fn row(pattern: String, label: &str, e: &Entry) -> InboundTlsRow {
    InboundTlsRow {
        note: format!("imported: {label} line {}", e.line),
        ..InboundTlsRow::new(pattern, InboundLevel::Encrypt)
    }
}

/// A `check_sender_access` key as a sender row. With Postfix's default parent style,
/// `partner.example` also matches its subdomains: postern's `.partner.example`.
fn sender_pattern(key: &str, parent_style: bool) -> Result<String, String> {
    if key.contains('@') {
        return Err("an address: postern's sender rows name domains".into());
    }
    let (domain, dotted) = match key.strip_prefix('.') {
        Some(d) => (d, true),
        None => (key, false),
    };
    if !is_domain_name(domain) {
        return Err("not a domain".into());
    }
    match (dotted, parent_style) {
        (false, true) => Ok(format!(".{domain}")),
        (false, false) => Ok(domain.to_string()),
        (true, false) => Ok(format!(".{domain}")),
        (true, true) => Err(
            "never looked up: parent_domain_matches_subdomains lists smtpd_access_maps, so Postfix's own key is the domain without the dot".into(),
        ),
    }
}

/// A `check_client_access` key as a client row: an address, a network (`cidr:` tables), or
/// Postfix's partial IPv4 address (`192.0.2` is 192.0.2.0/24).
fn client_pattern(key: &str) -> Result<String, String> {
    if let Ok(ip) = key.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    if let Ok(net) = key.parse::<IpNet>() {
        return Ok(net.trunc().to_string());
    }
    let octets: Vec<&str> = key.split('.').collect();
    if (1..=3).contains(&octets.len()) && octets.iter().all(|o| o.parse::<u8>().is_ok()) {
        let mut full = octets.clone();
        full.resize(4, "0");
        return Ok(format!("{}/{}", full.join("."), 8 * octets.len()));
    }
    Err("a client host name: postern's client rows name addresses and networks (it looks up no client names)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_patterns_as_postfix_looks_them_up() {
        assert_eq!(
            sender_pattern("partner.example", true).unwrap(),
            ".partner.example"
        );
        assert_eq!(
            sender_pattern("partner.example", false).unwrap(),
            "partner.example"
        );
        assert_eq!(
            sender_pattern(".partner.example", false).unwrap(),
            ".partner.example"
        );
        assert!(
            sender_pattern(".partner.example", true)
                .unwrap_err()
                .contains("never looked up")
        );
        assert!(sender_pattern("ceo@partner.example", true).is_err());
        assert_eq!(client_pattern("192.0.2").unwrap(), "192.0.2.0/24");
        assert_eq!(client_pattern("10").unwrap(), "10.0.0.0/8");
        assert_eq!(client_pattern("192.0.2.5/24").unwrap(), "192.0.2.0/24");
        assert_eq!(client_pattern("2001:db8::25").unwrap(), "2001:db8::25");
        assert!(
            client_pattern("mail.partner.example")
                .unwrap_err()
                .contains("host name")
        );
    }

    #[test]
    fn checks_pair_with_their_tables() {
        assert_eq!(
            checks(
                "permit_mynetworks, check_sender_access hash:/etc/postfix/tls, reject_unauth_destination"
            ),
            [(
                "check_sender_access".to_string(),
                "hash:/etc/postfix/tls".to_string()
            )]
        );
    }
}
