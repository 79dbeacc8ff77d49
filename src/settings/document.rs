//! The settings document: what `GET /api/v1/settings` returns, `PUT` replaces and
//! `postern settings export|import` writes and reads as TOML.
//!
//! Two forms: `SettingsDoc` is what crosses the API (user passwords write-only, hashes never
//! shown); `Settings` is what the store keeps (hashes, no passwords). `Settings::apply`
//! validates a whole document against the current settings and names the first bad field.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use super::secret::Secret;
use super::validate::{
    FieldError, PasswordHasher, check_inbound_tls, check_m365, check_policy, check_reject_code,
    check_relay_domains, check_rule_data, check_rules, check_users, managed_rows, parse_networks,
};

pub use crate::levels::{InboundLevel, OnFailure};
pub use crate::next_hop::{NextHop, is_domain_name};

/// Inbound (and, later, outbound) STARTTLS modes: the three of Hermes and Postfix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS not offered, and refused if sent.
    Disabled,
    /// Offered; plaintext allowed (opportunistic).
    #[default]
    May,
    /// Offered and required before MAIL (mandatory).
    Encrypt,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disabled => "disabled",
            TlsMode::May => "may",
            TlsMode::Encrypt => "encrypt",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSettings {
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// The certificate STARTTLS serves, by name in the certificate store. Absent: the
    /// config's `smtp.tls_cert`, else the system self-signed one (first start). Blank, the
    /// system certificate or an unknown name are refused (Hermes' rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// An ECDSA certificate served beside `certificate`, then RSA, to clients that accept
    /// ECDSA (Postfix's `smtpd_tls_eccert_file` beside `smtpd_tls_cert_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec_certificate: Option<String>,
    /// The reply code of an inbound TLS row's refusal (Postfix's `plaintext_reject_code`):
    /// 450 by default, so a partner's mail waits in its queue while it fixes its TLS; 4xx or
    /// 5xx only.
    #[serde(default = "InboundSettings::default_plaintext_reject_code")]
    pub plaintext_reject_code: u16,
}

impl InboundSettings {
    /// Postfix's default `plaintext_reject_code`.
    pub const fn default_plaintext_reject_code() -> u16 {
        450
    }
}

impl Default for InboundSettings {
    fn default() -> Self {
        InboundSettings {
            tls_mode: TlsMode::default(),
            certificate: None,
            ec_certificate: None,
            plaintext_reject_code: InboundSettings::default_plaintext_reject_code(),
        }
    }
}

/// One inbound TLS row: what mail from a sender domain, or from a client address, must have
/// by MAIL FROM. Judged by `policy::inbound`; the most specific row of each kind applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundTlsRow {
    /// A sender domain (`partner.example`; `.partner.example`: the domain and all its
    /// subdomains), or a client address or network (`192.0.2.7`, `192.0.2.0/24`,
    /// `2001:db8::/32`).
    pub pattern: String,
    /// `encrypt` or `verify`.
    pub level: crate::levels::InboundLevel,
    /// `verify`: the names the client certificate must carry (one of them); required there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
    /// Minimum cipher key bits; absent: any TLS will do.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::validate::min_bits_any_integer"
    )]
    pub min_bits: Option<u16>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl InboundTlsRow {
    /// A row with only its pattern and level set.
    pub fn new(pattern: impl Into<String>, level: crate::levels::InboundLevel) -> InboundTlsRow {
        InboundTlsRow {
            pattern: pattern.into(),
            level,
            match_names: Vec::new(),
            min_bits: None,
            note: String::new(),
        }
    }
}

/// The admin listener (control API, and the admin page later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Certificate for HTTPS, by name; absent: the system self-signed one (allowed here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// An ECDSA certificate beside `certificate`, then RSA, as `inbound.ec_certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec_certificate: Option<String>,
}

/// Outbound: the global STARTTLS mode for every hop we make (the policy table refines it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// Published MTA-STS policies (RFC 8461): `enforce` (the default, as the RFC asks of a
    /// sender that implements it), `monitor` or `off`. A policy row may say otherwise.
    #[serde(default)]
    pub mta_sts: crate::levels::StsSwitch,
    /// DANE (RFC 7672) for every domain, as Postfix's `smtp_tls_security_level = dane`:
    /// TLSA records under DNSSEC authenticate the MX hosts that publish them. Off: only
    /// rows at `dane` or `dane-only` look them up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dane: bool,
}

/// One row of the outbound TLS policy table (Hermes' TLS policy domains, GlobalCerts'
/// partner list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRow {
    /// `user@domain`, `domain`, `.domain` (the domain and all its subdomains), or `*`
    /// (every domain: GlobalCerts' blank line).
    pub pattern: String,
    /// `none`, `may`, `encrypt`, `verify`, `secure` or `fingerprint`.
    pub level: crate::levels::Level,
    /// A plain `domain` row also covers its subdomains (GlobalCerts' behaviour).
    #[serde(default)]
    pub include_subdomains: bool,
    /// Minimum cipher key bits; default 112 for a required level, 0 otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::validate::min_bits_any_integer"
    )]
    pub min_bits: Option<u16>,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// `secure`: names the certificate may match instead of the recipient domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
    /// `fingerprint`: SHA-256 of the certificate or of its public key, hex (colons allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<String>,
    /// Set on rows a relay domain manages (its next hop needs SASL authentication): shown in
    /// the document, changed only through the relay domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// The recipient domain's MTA-STS policy for this row's recipients, instead of the
    /// global `outbound.mta_sts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<crate::levels::StsSwitch>,
    /// `classical`: offer no post-quantum key share to this destination's hosts.
    #[serde(
        default,
        skip_serializing_if = "crate::levels::KeyExchange::is_default"
    )]
    pub key_exchange: crate::levels::KeyExchange,
}

impl PolicyRow {
    /// A row with only its pattern and level set; the other fields at their defaults.
    pub fn new(pattern: impl Into<String>, level: crate::levels::Level) -> PolicyRow {
        PolicyRow {
            pattern: pattern.into(),
            level,
            include_subdomains: false,
            min_bits: None,
            on_failure: OnFailure::Defer,
            note: String::new(),
            match_names: Vec::new(),
            fingerprints: Vec::new(),
            managed_by: None,
            mta_sts: None,
            key_exchange: crate::levels::KeyExchange::PostQuantum,
        }
    }

    /// The row a relay domain with SASL credentials manages (Hermes' "Auto-added: domain
    /// requires authentication"): `encrypt`, so the credentials never cross in plaintext.
    pub fn managed(relay_domain: &str) -> PolicyRow {
        PolicyRow {
            note: MANAGED_NOTE.to_string(),
            managed_by: Some(relay_domain.to_string()),
            ..PolicyRow::new(relay_domain, crate::levels::Level::Encrypt)
        }
    }
}

/// The note of a managed row.
pub const MANAGED_NOTE: &str = "Auto-added: relay domain requires authentication";

/// A named list of domains for message rules (Email Security's "rule data").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleData {
    pub name: String,
    /// One domain per entry; each also covers its subdomains.
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Any,
    /// To one of our relay domains.
    Inbound,
    /// To anywhere else.
    Outbound,
}

impl Direction {
    /// Whether a rule of this direction looks at a recipient that is (`inbound`) or is not in
    /// one of our relay domains.
    pub fn covers(self, inbound: bool) -> bool {
        match self {
            Direction::Any => true,
            Direction::Inbound => inbound,
            Direction::Outbound => !inbound,
        }
    }
}

/// The action of a message rule: the `x-TLSLevel` it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleTls {
    /// `x-TLSLevel: Require` (encrypt).
    Require,
    /// `x-TLSLevel: Try` (may).
    Try,
}

/// An ordered message rule: the first whose conditions all hold sets the TLS level for that
/// recipient, at receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRule {
    pub name: String,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_not_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_not_matches: Option<String>,
    /// The admin's explicit choice of a rule without conditions: it applies to every
    /// recipient of its direction. A rule needs a condition or this (issue 28: a rule saved
    /// without a condition used to require TLS for all outbound mail, unasked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_recipient: bool,
    pub tls_level: RuleTls,
}

impl MessageRule {
    /// Whether any of the four conditions is set.
    pub fn has_condition(&self) -> bool {
        [
            &self.recipient_matches,
            &self.recipient_not_matches,
            &self.sender_matches,
            &self.sender_not_matches,
        ]
        .iter()
        .any(|c| c.is_some())
    }
}

/// Stored rules from before `every_recipient` existed: a rule without conditions applied to
/// every recipient then, so it is read as having chosen that, and keeps applying (and later
/// changes of other sections still validate).
fn stored_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<MessageRule>, D::Error> {
    let mut rules = Vec::<MessageRule>::deserialize(d)?;
    for r in &mut rules {
        if !r.has_condition() {
            r.every_recipient = true;
        }
    }
    Ok(rules)
}

/// A domain we accept mail for from anyone, and where it goes next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RelayDomain {
    /// `example.com` (that domain) or `.example.com` (its subdomains).
    pub domain: String,
    /// Next hop, Postfix's transport syntax: `host`, `host:port`, `[host]`, `[host]:port`
    /// (brackets: no MX lookup). Absent: MX lookup of the recipient domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// SASL credentials the next hop requires (Postfix's smtp_sasl_password_maps entry).
    /// Setting them adds a managed `encrypt` row for the domain to the policy table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RelayAuth>,
    /// A certificate from the store presented as TLS client certificate to the next hop
    /// (Microsoft 365 inbound connectors can identify the gateway by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// The recipients that exist behind this domain (Postfix's relay_recipient_maps):
    /// addresses, or patterns with one `*` in the local part (`sales-*@example.com`).
    /// Anyone else gets `550 5.1.1 ... User unknown in relay recipient table` at RCPT, so no
    /// bounce is ever sent for them to a forged sender. Absent: every address is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// Without `recipients`: ask the next hop at RCPT whether it takes each recipient
    /// (Postfix's reject_unverified_recipient), with answers cached: refused ones get
    /// `550 5.1.1 ... undeliverable address`, unanswerable ones `450 4.1.1`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_recipients: bool,
}

/// Credentials for a relay domain's next hop, sent with AUTH PLAIN or LOGIN inside TLS only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAuth {
    pub username: String,
    /// Write-only: set it to create or change the credentials, omit it to keep the stored
    /// one. The document never shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// An SMTP AUTH user as the API shows it: never with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUserDoc {
    pub username: String,
    /// Write-only: set to create a user or change a password; omit to keep the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The Microsoft 365 gateway profile: which Exchange Online connector may relay, and for
/// which tenants (docs/m365.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M365Settings {
    /// Off: a client certificate gives no rights, whatever it is.
    #[serde(default)]
    pub enabled: bool,
    /// Tenant IDs (GUIDs) whose mail may relay, from `X-MS-Exchange-CrossTenant-Id`.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Names the connector's client certificate must be valid for (Exchange Online presents
    /// `mail.protection.outlook.com`).
    #[serde(default = "M365Settings::default_names")]
    pub certificate_names: Vec<String>,
    /// When set, the connector must also connect from one of these (CIDR); empty: any
    /// address. See config/m365-ranges.txt for Microsoft's published ranges.
    #[serde(default)]
    pub ranges: Vec<String>,
    /// Without a tenant header, accept `X-OriginatorOrg` naming one of these domains (the
    /// organisation's accepted domains). Empty: the tenant header is required.
    #[serde(default)]
    pub originator_domains: Vec<String>,
}

impl M365Settings {
    pub fn default_names() -> Vec<String> {
        vec!["mail.protection.outlook.com".to_string()]
    }
}

impl Default for M365Settings {
    fn default() -> Self {
        M365Settings {
            enabled: false,
            tenants: Vec::new(),
            certificate_names: M365Settings::default_names(),
            ranges: Vec::new(),
            originator_domains: Vec::new(),
        }
    }
}

/// The whole settings document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SettingsDoc {
    #[serde(default)]
    pub inbound: InboundSettings,
    #[serde(default)]
    pub outbound: OutboundSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    /// CIDR blocks whose clients may relay (Postfix's mynetworks).
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    #[serde(default)]
    pub relay_domains: Vec<RelayDomain>,
    #[serde(default)]
    pub smtp_auth_users: Vec<AuthUserDoc>,
    /// The outbound TLS policy table; the most specific matching row applies.
    #[serde(default)]
    pub policy: Vec<PolicyRow>,
    #[serde(default)]
    pub rule_data: Vec<RuleData>,
    /// Message rules, in order.
    #[serde(default)]
    pub rules: Vec<MessageRule>,
    #[serde(default)]
    pub m365: M365Settings,
    /// Inbound TLS rows: what named senders and clients must have by MAIL FROM.
    #[serde(default)]
    pub inbound_tls: Vec<InboundTlsRow>,
}

/// A stored SMTP AUTH user: the argon2 PHC string, never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    pub username: String,
    pub password_hash: String,
}

/// What the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub inbound: InboundSettings,
    #[serde(default)]
    pub outbound: OutboundSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    pub trusted_networks: Vec<IpNet>,
    pub relay_domains: Vec<RelayDomain>,
    pub smtp_auth_users: Vec<AuthUser>,
    #[serde(default)]
    pub policy: Vec<PolicyRow>,
    #[serde(default)]
    pub rule_data: Vec<RuleData>,
    #[serde(default, deserialize_with = "stored_rules")]
    pub rules: Vec<MessageRule>,
    #[serde(default)]
    pub m365: M365Settings,
    #[serde(default)]
    pub inbound_tls: Vec<InboundTlsRow>,
}

impl Default for Settings {
    /// First start: opportunistic STARTTLS, this host trusted (Postfix's
    /// `mynetworks_style = host`), no relay domains, no users.
    fn default() -> Self {
        Settings {
            inbound: InboundSettings::default(),
            outbound: OutboundSettings::default(),
            admin: AdminSettings::default(),
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("literal CIDR"),
                "::1/128".parse().expect("literal CIDR"),
            ],
            relay_domains: Vec::new(),
            smtp_auth_users: Vec::new(),
            policy: Vec::new(),
            rule_data: Vec::new(),
            rules: Vec::new(),
            m365: M365Settings::default(),
            inbound_tls: Vec::new(),
        }
    }
}

impl Settings {
    /// The document form: users without hashes.
    pub fn to_doc(&self) -> SettingsDoc {
        SettingsDoc {
            inbound: self.inbound.clone(),
            outbound: self.outbound.clone(),
            admin: self.admin.clone(),
            trusted_networks: self.trusted_networks.iter().map(IpNet::to_string).collect(),
            relay_domains: self
                .relay_domains
                .iter()
                .map(|d| RelayDomain {
                    auth: d.auth.as_ref().map(|a| RelayAuth {
                        username: a.username.clone(),
                        password: None,
                    }),
                    ..d.clone()
                })
                .collect(),
            smtp_auth_users: self
                .smtp_auth_users
                .iter()
                .map(|u| AuthUserDoc {
                    username: u.username.clone(),
                    password: None,
                })
                .collect(),
            policy: self
                .policy
                .iter()
                .cloned()
                .chain(self.managed_rows())
                .collect(),
            rule_data: self.rule_data.clone(),
            rules: self.rules.clone(),
            m365: self.m365.clone(),
            inbound_tls: self.inbound_tls.clone(),
        }
    }

    /// The rows relay domains manage: one `encrypt` row per relay domain with credentials.
    pub fn managed_rows(&self) -> Vec<PolicyRow> {
        managed_rows(&self.relay_domains)
    }

    /// Validate `doc` whole and build the settings it describes. Users and relay credentials
    /// given without a password keep their stored one; new ones without it are an error.
    pub fn apply(
        &self,
        doc: &SettingsDoc,
        hasher: &dyn PasswordHasher,
    ) -> Result<Settings, FieldError> {
        let relay_domains = check_relay_domains(&doc.relay_domains, &self.relay_domains)?;
        let policy = check_policy(
            &doc.policy,
            &managed_rows(&relay_domains),
            &self.managed_rows(),
        )?;
        Ok(Settings {
            inbound: InboundSettings {
                tls_mode: doc.inbound.tls_mode,
                certificate: doc
                    .inbound
                    .certificate
                    .as_ref()
                    .map(|c| c.trim().to_string()),
                ec_certificate: named(&doc.inbound.ec_certificate),
                plaintext_reject_code: check_reject_code(doc.inbound.plaintext_reject_code)?,
            },
            outbound: doc.outbound.clone(),
            admin: AdminSettings {
                certificate: named(&doc.admin.certificate),
                ec_certificate: named(&doc.admin.ec_certificate),
            },
            trusted_networks: parse_networks(&doc.trusted_networks)?,
            relay_domains,
            smtp_auth_users: check_users(&self.smtp_auth_users, &doc.smtp_auth_users, hasher)?,
            policy,
            rule_data: check_rule_data(&doc.rule_data)?,
            rules: check_rules(&doc.rules, &doc.rule_data)?,
            m365: check_m365(&doc.m365)?,
            inbound_tls: check_inbound_tls(&doc.inbound_tls)?,
        })
    }
}

/// A certificate binding as given, trimmed; blank is no binding.
fn named(field: &Option<String>) -> Option<String> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeHasher;
    impl PasswordHasher for FakeHasher {
        fn hash(&self, password: &str) -> Result<String, String> {
            Ok(format!("hashed:{password}"))
        }
    }

    fn doc(toml_text: &str) -> SettingsDoc {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_round_trip_through_the_document() {
        let s = Settings::default();
        let back = s.apply(&s.to_doc(), &FakeHasher).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn relay_credentials_manage_an_encrypt_row() {
        let with_auth = doc(
            "[[relay_domains]]\ndomain = \"smarthost.example\"\ntransport = \"[10.0.0.9]:587\"\nauth = { username = \"gw\", password = \"s3cret\" }",
        );
        let s = Settings::default().apply(&with_auth, &FakeHasher).unwrap();
        assert!(s.policy.is_empty(), "managed rows are derived, not stored");
        let shown = s.to_doc();
        // The password is write-only; the managed row is shown, marked.
        assert_eq!(shown.relay_domains[0].auth.as_ref().unwrap().password, None);
        assert!(!serde_json::to_string(&shown).unwrap().contains("s3cret"));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug must not leak it"
        );
        assert_eq!(shown.policy.len(), 1);
        let managed = &shown.policy[0];
        assert_eq!(
            (
                managed.pattern.as_str(),
                managed.level,
                managed.managed_by.as_deref()
            ),
            (
                "smarthost.example",
                crate::levels::Level::Encrypt,
                Some("smarthost.example")
            )
        );
        // The shown document applies unchanged and keeps the stored password.
        let again = s.apply(&shown, &FakeHasher).unwrap();
        assert_eq!(again, s);

        // Editing the managed row is refused, naming the relay domain.
        let mut edited = shown.clone();
        edited.policy[0].level = crate::levels::Level::May;
        let err = s.apply(&edited, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "policy[0]");
        assert!(
            err.error
                .contains("managed by relay domain smarthost.example"),
            "{err}"
        );
        // The note too: it would not be kept, so it is refused rather than dropped.
        let mut noted = shown.clone();
        noted.policy[0].note = "our smarthost".into();
        let err = s.apply(&noted, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "policy[0]");
        // Deleting it is refused while the domain still needs authentication.
        let mut deleted = shown.clone();
        deleted.policy.clear();
        let err = s.apply(&deleted, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "policy");
        assert!(
            err.error.contains("relay domain smarthost.example"),
            "{err}"
        );
        // A user row for the same pattern collides with it.
        let mut dup = shown.clone();
        dup.policy.push(PolicyRow::new(
            "SmartHost.example",
            crate::levels::Level::Verify,
        ));
        let err = s.apply(&dup, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "policy[1].pattern");
        assert!(err.error.contains("managed by relay domain"), "{err}");

        // Without credentials the row goes, even if the document still lists it.
        let mut no_auth = shown.clone();
        no_auth.relay_domains[0].auth = None;
        let s2 = s.apply(&no_auth, &FakeHasher).unwrap();
        assert!(s2.to_doc().policy.is_empty());
        // New credentials need a password; a changed user name is new credentials.
        let mut renamed = shown;
        renamed.relay_domains[0].auth.as_mut().unwrap().username = "other".into();
        let err = s.apply(&renamed, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "relay_domains[0].auth.password");
    }
}
