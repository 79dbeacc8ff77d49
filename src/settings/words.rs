//! The settings in the admin's words, for the pages: a field of the settings document
//! (`smtp_auth_users[0].password`, `inbound.certificate`) named by the label its form gives it
//! (`SMTP AUTH user alice, password`), and the STARTTLS modes named once, the same on every
//! page. The API and the CLI keep the paths: there they name a field of a document.

use super::{Settings, SettingsDoc, TlsMode};

impl TlsMode {
    /// The mode as every page shows it: the page's word, then Postfix's
    /// (`smtpd_tls_security_level`, `smtp_tls_security_level`), which admins know.
    pub fn words(self) -> &'static str {
        match self {
            TlsMode::Disabled => "Disabled (none)",
            TlsMode::May => "Opportunistic (may)",
            TlsMode::Encrypt => "Mandatory (encrypt)",
        }
    }
}

/// The name of item `index` of the list `section` (its domain, pattern, user or name).
pub type Names<'a> = dyn Fn(&str, usize) -> Option<String> + 'a;

/// The items of `doc`'s lists by their names, for `field_words`.
pub fn doc_names(doc: &SettingsDoc) -> impl Fn(&str, usize) -> Option<String> + '_ {
    move |section, i| match section {
        "trusted_networks" => doc.trusted_networks.get(i).cloned(),
        "relay_domains" => doc.relay_domains.get(i).map(|d| d.domain.clone()),
        "smtp_auth_users" => doc.smtp_auth_users.get(i).map(|u| u.username.clone()),
        "policy" => doc.policy.get(i).map(|r| r.pattern.clone()),
        "rule_data" => doc.rule_data.get(i).map(|l| l.name.clone()),
        "rules" => doc.rules.get(i).map(|r| r.name.clone()),
        "inbound_tls" => doc.inbound_tls.get(i).map(|r| r.pattern.clone()),
        _ => None,
    }
}

/// The items of `settings`' lists by their names, for `field_words`.
pub fn settings_names(settings: &Settings) -> impl Fn(&str, usize) -> Option<String> + '_ {
    move |section, i| match section {
        "trusted_networks" => settings.trusted_networks.get(i).map(ToString::to_string),
        "relay_domains" => settings.relay_domains.get(i).map(|d| d.domain.clone()),
        "smtp_auth_users" => settings.smtp_auth_users.get(i).map(|u| u.username.clone()),
        "policy" => settings.policy.get(i).map(|r| r.pattern.clone()),
        "rule_data" => settings.rule_data.get(i).map(|l| l.name.clone()),
        "rules" => settings.rules.get(i).map(|r| r.name.clone()),
        "inbound_tls" => settings.inbound_tls.get(i).map(|r| r.pattern.clone()),
        _ => None,
    }
}

/// A path of the settings document in the words of the page that edits it: the list item
/// by its name (an index through `names`; the audit's diff names items by key already), the
/// field by its form label. A path outside the document (`direction`) is returned as is.
pub fn field_words(path: &str, names: &Names<'_>) -> String {
    let split = path.find(['.', '[']).unwrap_or(path.len());
    let (section, rest) = path.split_at(split);
    let (item, leaf) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((item, leaf)) => (Some(item), leaf.strip_prefix('.').unwrap_or(leaf)),
        None => (None, rest.strip_prefix('.').unwrap_or(rest)),
    };
    let Some((what, labels)) = section_words(section) else {
        return path.to_string();
    };
    // A field of a single-table section is known by its label alone ("SMTP TLS certificate").
    if item.is_none() && !leaf.is_empty() && ["inbound", "outbound", "admin"].contains(&section) {
        return capitalised(&leaf_words(leaf, labels));
    }
    let mut out = match item {
        None => what.to_string(),
        Some(item) => {
            let name = match item.parse::<usize>() {
                Ok(i) => names(section, i).unwrap_or_else(|| format!("#{}", i + 1)),
                Err(_) => item.to_string(),
            };
            let name = if name.trim().is_empty() {
                "(blank)"
            } else {
                name.trim()
            };
            format!("{what} {name}")
        }
    };
    if !leaf.is_empty() {
        out.push_str(", ");
        out.push_str(&leaf_words(leaf, labels));
    }
    out
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// A field's label in the form that edits it, with the entry (`fingerprints[1]`) counted
/// as the admin counts the lines of the box.
fn leaf_words(leaf: &str, labels: &[(&str, &str)]) -> String {
    let (field, entry) = match leaf.split_once('[') {
        Some((f, k)) => (f, k.trim_end_matches(']').parse::<usize>().ok()),
        None => (leaf, None),
    };
    let label = labels
        .iter()
        .find(|(f, _)| *f == field)
        .map_or_else(|| field.replace(['_', '.'], " "), |(_, l)| l.to_string());
    match entry {
        Some(k) => format!("{label} (entry {})", k + 1),
        None => label,
    }
}

/// What a section's item is called, and its fields' labels, as the pages say them.
fn section_words(section: &str) -> Option<(&'static str, &'static [(&'static str, &'static str)])> {
    Some(match section {
        "inbound" => (
            "SMTP TLS Settings (inbound)",
            &[
                ("tls_mode", "Inbound STARTTLS"),
                ("certificate", "SMTP TLS certificate"),
                ("ec_certificate", "SMTP TLS ECDSA certificate"),
                (
                    "plaintext_reject_code",
                    "reply code when an inbound TLS row refuses",
                ),
            ][..],
        ),
        "outbound" => (
            "SMTP TLS Settings (outbound)",
            &[
                ("tls_mode", "Outbound STARTTLS"),
                ("mta_sts", "recipient domains' own MTA-STS policies"),
                ("dane", "DANE for every domain"),
            ],
        ),
        "admin" => (
            "Admin page",
            &[
                ("certificate", "admin page certificate"),
                ("ec_certificate", "admin page ECDSA certificate"),
            ],
        ),
        "trusted_networks" => ("Trusted network", &[]),
        "relay_domains" => ("Relay domain", RELAY_DOMAIN),
        "smtp_auth_users" => (
            "SMTP AUTH user",
            &[("username", "user name"), ("password", "password")],
        ),
        "policy" => ("TLS policy row", POLICY_ROW),
        "rule_data" => (
            "List",
            &[("name", "name"), ("domains", "domains, one per line")],
        ),
        "rules" => ("Rule", RULE),
        "m365" => ("Microsoft 365 connector", M365),
        "inbound_tls" => ("Inbound TLS row", INBOUND_TLS_ROW),
        _ => return None,
    })
}

const RELAY_DOMAIN: &[(&str, &str)] = &[
    ("domain", "domain"),
    ("transport", "next hop"),
    ("auth.username", "user name at the next hop"),
    ("auth.password", "password at the next hop"),
    ("auth", "user name and password at the next hop"),
    ("client_certificate", "client certificate to present"),
    ("recipients", "recipients that exist"),
    (
        "verify_recipients",
        "ask the next hop whether each recipient exists",
    ),
];

const POLICY_ROW: &[(&str, &str)] = &[
    ("pattern", "domain"),
    ("level", "level"),
    ("include_subdomains", "subdomains too"),
    ("min_bits", "minimum cipher strength in bits"),
    ("on_failure", "when the level cannot be met"),
    ("note", "note"),
    ("match_names", "certificate names for secure"),
    ("fingerprints", "SHA-256 fingerprints"),
    ("managed_by", "managed by relay domain"),
    ("mta_sts", "the domain's own MTA-STS policy"),
];

const INBOUND_TLS_ROW: &[(&str, &str)] = &[
    ("pattern", "sender domain or client address"),
    ("level", "level"),
    ("match_names", "names the client certificate must carry"),
    ("min_bits", "minimum cipher strength in bits"),
    ("note", "note"),
];

const RULE: &[(&str, &str)] = &[
    ("name", "name"),
    ("direction", "direction"),
    ("recipient_matches", "recipient matches"),
    ("recipient_not_matches", "recipient does not match"),
    ("sender_matches", "sender matches"),
    ("sender_not_matches", "sender does not match"),
    ("every_recipient", "no condition: every recipient"),
    ("tls_level", "action"),
];

const M365: &[(&str, &str)] = &[
    ("enabled", "enabled"),
    ("tenants", "allowed tenant IDs"),
    ("certificate_names", "connector certificate names"),
    ("ranges", "Exchange Online address ranges"),
    (
        "originator_domains",
        "accepted domains for the X-OriginatorOrg fallback",
    ),
];

/// A top-level section by the page that edits it, for the audit's summary of a change.
pub fn section_title(section: &str) -> &str {
    match section {
        "inbound" => "SMTP TLS Settings (inbound)",
        "outbound" => "SMTP TLS Settings (outbound)",
        "admin" => "Admin page",
        "trusted_networks" => "Trusted networks",
        "relay_domains" => "Relay domains",
        "smtp_auth_users" => "SMTP AUTH users",
        "policy" => "TLS Policy Domains",
        "rule_data" => "Rule data",
        "rules" => "Rules",
        "m365" => "Microsoft 365",
        "inbound_tls" => "Inbound TLS",
        other => other,
    }
}

/// A value of the audit's diff (JSON) as the page shows it: a STARTTLS mode in its words.
pub fn value_words(path: &str, json: &str) -> String {
    if path.ends_with("tls_mode")
        && let Ok(mode) = serde_json::from_str::<TlsMode>(json)
    {
        return mode.words().to_string();
    }
    json.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_said_by_label_and_by_the_item_s_name() {
        let mut doc = SettingsDoc::default();
        doc.smtp_auth_users.push(crate::settings::AuthUserDoc {
            username: "alice".into(),
            password: None,
        });
        let names = doc_names(&doc);
        let said = |p: &str| field_words(p, &names);
        assert_eq!(
            said("smtp_auth_users[0].password"),
            "SMTP AUTH user alice, password"
        );
        assert_eq!(said("inbound.certificate"), "SMTP TLS certificate");
        assert_eq!(
            said("outbound.mta_sts"),
            "Recipient domains' own MTA-STS policies"
        );
        assert_eq!(
            said("policy[a.example].level"),
            "TLS policy row a.example, level"
        );
        assert_eq!(
            said("relay_domains[3].auth.password"),
            "Relay domain #4, password at the next hop"
        );
        assert_eq!(
            said("policy[0].fingerprints[1]"),
            "TLS policy row #1, SHA-256 fingerprints (entry 2)"
        );
        assert_eq!(
            said("m365.tenants[0]"),
            "Microsoft 365 connector, allowed tenant IDs (entry 1)"
        );
        assert_eq!(said("policy"), "TLS policy row");
        assert_eq!(
            said("inbound_tls[partner.example].match_names[0]"),
            "Inbound TLS row partner.example, names the client certificate must carry (entry 1)"
        );
        assert_eq!(
            said("inbound.plaintext_reject_code"),
            "Reply code when an inbound TLS row refuses"
        );
        assert_eq!(said("direction"), "direction", "not a settings path");
    }

    #[test]
    fn modes_are_said_once_with_postfix_s_word() {
        assert_eq!(TlsMode::May.words(), "Opportunistic (may)");
        assert_eq!(TlsMode::Disabled.words(), "Disabled (none)");
        assert_eq!(
            value_words("inbound.tls_mode", "\"encrypt\""),
            "Mandatory (encrypt)"
        );
        assert_eq!(value_words("policy[a].level", "\"may\""), "\"may\"");
    }
}
