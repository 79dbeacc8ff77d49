//! The settings document: what `GET /api/v1/settings` returns, `PUT` replaces and
//! `postern settings export|import` writes and reads as TOML.
//!
//! Two forms: `SettingsDoc` is what crosses the API (user passwords write-only, hashes never
//! shown); `Settings` is what the store keeps (hashes, no passwords). `Settings::apply`
//! validates a whole document against the current settings and names the first bad field.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::levels::OnFailure;
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InboundSettings {
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// The certificate STARTTLS serves, by name in the certificate store. Absent: the
    /// config's `smtp.tls_cert`, else the system self-signed one (first start). Blank, the
    /// system certificate or an unknown name are refused (Hermes' rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// The admin listener (control API, and the admin page later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Certificate for HTTPS, by name; absent: the system self-signed one (allowed here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// Outbound: the global STARTTLS mode for every hop we make (the policy table refines it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    #[serde(default)]
    pub tls_mode: TlsMode,
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
        deserialize_with = "min_bits_any_integer"
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
    pub tls_level: RuleTls,
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

/// A secret the store keeps and the wire needs, never shown: its `Debug` is redacted, so a
/// logged settings value cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
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
    #[serde(default)]
    pub rules: Vec<MessageRule>,
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
        }
    }
}

/// No cipher has more key bits.
const MAX_MIN_BITS: u16 = 256;

fn min_bits_out_of_range(b: i64) -> String {
    format!("{b} is out of range (0–{MAX_MIN_BITS})")
}

/// `min_bits` read as any integer, so a value a `u16` cannot hold gets the same words as
/// one the validator refuses (the field and its range), not a parser's type message.
fn min_bits_any_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let Some(b) = Option::<i64>::deserialize(d)? else {
        return Ok(None);
    };
    u16::try_from(b)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(min_bits_out_of_range(b)))
}

/// A validation failure naming the field, e.g. `relay_domains[2].transport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub error: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for FieldError {}

pub(crate) fn field_error(field: impl Into<String>, error: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        error: error.into(),
    }
}

/// Hashes a password; a seam so validation stays pure and fast in tests.
pub trait PasswordHasher {
    fn hash(&self, password: &str) -> Result<String, String>;
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
            },
            outbound: doc.outbound.clone(),
            admin: AdminSettings {
                certificate: doc
                    .admin
                    .certificate
                    .as_ref()
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            },
            trusted_networks: parse_networks(&doc.trusted_networks)?,
            relay_domains,
            smtp_auth_users: self.apply_users(&doc.smtp_auth_users, hasher)?,
            policy,
            rule_data: check_rule_data(&doc.rule_data)?,
            rules: check_rules(&doc.rules, &doc.rule_data)?,
        })
    }

    fn apply_users(
        &self,
        users: &[AuthUserDoc],
        hasher: &dyn PasswordHasher,
    ) -> Result<Vec<AuthUser>, FieldError> {
        let mut out: Vec<AuthUser> = Vec::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            let field = |name: &str| format!("smtp_auth_users[{i}].{name}");
            let name = user.username.trim();
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(field_error(
                    field("username"),
                    "must be a non-empty name without spaces",
                ));
            }
            if out.iter().any(|u| u.username == name) {
                return Err(field_error(
                    field("username"),
                    format!("duplicate user {name:?}"),
                ));
            }
            let password_hash = match &user.password {
                Some(p) if p.len() < 8 => {
                    return Err(field_error(
                        field("password"),
                        "must be at least 8 characters",
                    ));
                }
                Some(p) => hasher
                    .hash(p)
                    .map_err(|e| field_error(field("password"), e))?,
                None => match self.smtp_auth_users.iter().find(|u| u.username == name) {
                    Some(existing) => existing.password_hash.clone(),
                    None => {
                        return Err(field_error(field("password"), "required for a new user"));
                    }
                },
            };
            out.push(AuthUser {
                username: name.to_string(),
                password_hash,
            });
        }
        Ok(out)
    }
}

fn parse_networks(networks: &[String]) -> Result<Vec<IpNet>, FieldError> {
    networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n = n.trim();
            // A bare address means that one host, as in Postfix's mynetworks.
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    field_error(
                        format!("trusted_networks[{i}]"),
                        format!("{n:?} is not an IP network (expected CIDR such as 192.0.2.0/24)"),
                    )
                })
        })
        .collect()
}

fn managed_rows(domains: &[RelayDomain]) -> Vec<PolicyRow> {
    domains
        .iter()
        .filter(|d| d.auth.is_some())
        .map(|d| PolicyRow::managed(&d.domain))
        .collect()
}

fn check_relay_domains(
    domains: &[RelayDomain],
    previous: &[RelayDomain],
) -> Result<Vec<RelayDomain>, FieldError> {
    let mut out: Vec<RelayDomain> = Vec::with_capacity(domains.len());
    for (i, d) in domains.iter().enumerate() {
        let domain = d.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = domain.strip_prefix('.').unwrap_or(&domain);
        if !is_domain_name(bare) {
            return Err(field_error(
                format!("relay_domains[{i}].domain"),
                format!("{:?} is not a valid domain name", d.domain),
            ));
        }
        if out.iter().any(|o| o.domain == domain) {
            return Err(field_error(
                format!("relay_domains[{i}].domain"),
                format!("duplicate relay domain {domain:?}"),
            ));
        }
        if let Some(t) = &d.transport {
            NextHop::parse(t)
                .map_err(|e| field_error(format!("relay_domains[{i}].transport"), e))?;
        }
        let auth = match &d.auth {
            Some(a) => Some(check_relay_auth(a, &domain, previous, i)?),
            None => None,
        };
        let recipients = match &d.recipients {
            Some(list) => Some(check_recipient_list(list, i)?),
            None => None,
        };
        out.push(RelayDomain {
            domain,
            transport: d.transport.as_ref().map(|t| t.trim().to_string()),
            recipients,
            verify_recipients: d.verify_recipients,
            auth,
            client_certificate: d
                .client_certificate
                .as_ref()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        });
    }
    Ok(out)
}

/// Each entry `local@domain`, lower-case, with at most one `*` in the local part.
fn check_recipient_list(list: &[String], i: usize) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, entry) in list.iter().enumerate() {
        let entry = entry.trim().to_ascii_lowercase();
        let valid = entry.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.matches('*').count() <= 1
                && !local.contains(['@', ' ', '<', '>'])
                && is_domain_name(domain)
        });
        if !valid {
            return Err(field_error(
                format!("relay_domains[{i}].recipients[{j}]"),
                format!(
                    "{entry:?} is not an address (local@domain, one * allowed in the local part)"
                ),
            ));
        }
        out.push(entry);
    }
    Ok(out)
}

/// A user name and password SASL PLAIN can carry (no NUL, no line breaks); the password is
/// kept from `previous` when omitted for the same domain and user.
fn check_relay_auth(
    auth: &RelayAuth,
    domain: &str,
    previous: &[RelayDomain],
    i: usize,
) -> Result<RelayAuth, FieldError> {
    let field = |name: &str| format!("relay_domains[{i}].auth.{name}");
    let username = auth.username.trim();
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err(field_error(
            field("username"),
            "must be a non-empty name without control characters",
        ));
    }
    let password = match &auth.password {
        Some(p) if p.expose().is_empty() || p.expose().chars().any(char::is_control) => {
            return Err(field_error(
                field("password"),
                "must be non-empty, without control characters",
            ));
        }
        Some(p) => p.clone(),
        None => previous
            .iter()
            .filter(|d| d.domain == domain)
            .filter_map(|d| d.auth.as_ref())
            .find(|a| a.username == username)
            .and_then(|a| a.password.clone())
            .ok_or_else(|| field_error(field("password"), "required for new credentials"))?,
    };
    Ok(RelayAuth {
        username: username.to_string(),
        password: Some(password),
    })
}

/// Policy rows: valid patterns (the messages of Hermes' errors 4, 5/6), no two rows for the
/// same pattern, a minimum strength no cipher exceeds refused. Rows managed by relay domains
/// (`managed`, from the new relay domains) are not stored: they are checked unchanged, and
/// one that existed before (`was_managed`) cannot be deleted while its domain still needs
/// authentication; a row whose domain no longer does simply goes.
fn check_policy(
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
        let pattern = row
            .pattern
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let domain = match pattern.rsplit_once('@') {
            Some((user, d)) if !user.is_empty() && !user.contains('@') => d,
            Some(_) => "",
            None => pattern.strip_prefix('.').unwrap_or(&pattern),
        };
        if pattern != "*" && !is_domain_name(domain) {
            return Err(field_error(
                format!("policy[{i}].pattern"),
                format!(
                    "{:?} is not a valid domain, .domain, user@domain or *",
                    row.pattern
                ),
            ));
        }
        if let Some(j) = out.iter().position(|o| o.pattern == pattern) {
            return Err(field_error(
                format!("policy[{i}].pattern"),
                format!("duplicate row: {pattern:?} is already row {j}"),
            ));
        }
        if let Some(m) = managed.iter().find(|m| m.pattern == pattern) {
            return Err(field_error(
                format!("policy[{i}].pattern"),
                format!(
                    "duplicate row: {pattern:?} is managed by relay domain {} (its next hop requires authentication)",
                    m.pattern
                ),
            ));
        }
        if let Some(b) = row.min_bits.filter(|b| *b > MAX_MIN_BITS) {
            return Err(field_error(
                format!("policy[{i}].min_bits"),
                min_bits_out_of_range(b.into()),
            ));
        }
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
        for (k, n) in row.match_names.iter().enumerate() {
            if !is_domain_name(n.trim_start_matches("*.")) {
                return Err(field_error(
                    format!("policy[{i}].match_names[{k}]"),
                    format!("{n:?} is not a domain name"),
                ));
            }
        }
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
    Ok(out)
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
        pattern: row
            .pattern
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
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

fn check_rule_data(lists: &[RuleData]) -> Result<Vec<RuleData>, FieldError> {
    let mut out: Vec<RuleData> = Vec::with_capacity(lists.len());
    for (i, list) in lists.iter().enumerate() {
        let name = list.name.trim();
        if name.is_empty() {
            return Err(field_error(
                format!("rule_data[{i}].name"),
                "must not be empty",
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(field_error(
                format!("rule_data[{i}].name"),
                format!("duplicate list {name:?}"),
            ));
        }
        let mut domains = Vec::with_capacity(list.domains.len());
        for (k, d) in list.domains.iter().enumerate() {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain_name(&d) {
                return Err(field_error(
                    format!("rule_data[{i}].domains[{k}]"),
                    format!("{d:?} is not a domain name"),
                ));
            }
            domains.push(d);
        }
        out.push(RuleData {
            name: name.to_string(),
            domains,
        });
    }
    Ok(out)
}

fn check_rules(rules: &[MessageRule], lists: &[RuleData]) -> Result<Vec<MessageRule>, FieldError> {
    for (i, rule) in rules.iter().enumerate() {
        if rule.name.trim().is_empty() {
            return Err(field_error(format!("rules[{i}].name"), "must not be empty"));
        }
        for (field, list) in [
            ("recipient_matches", &rule.recipient_matches),
            ("recipient_not_matches", &rule.recipient_not_matches),
            ("sender_matches", &rule.sender_matches),
            ("sender_not_matches", &rule.sender_not_matches),
        ] {
            if let Some(name) = list
                && !lists.iter().any(|l| l.name.trim() == name.trim())
            {
                return Err(field_error(
                    format!("rules[{i}].{field}"),
                    format!("no rule data named {name:?}"),
                ));
            }
        }
    }
    Ok(rules.to_vec())
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
    fn bad_network_names_the_index() {
        let d = doc("trusted_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]");
        let err = Settings::default().apply(&d, &FakeHasher).unwrap_err();
        assert_eq!(err.field, "trusted_networks[1]");
        let d = doc("trusted_networks = [\"192.0.2.7\"]");
        let s = Settings::default().apply(&d, &FakeHasher).unwrap();
        assert_eq!(s.trusted_networks[0].to_string(), "192.0.2.7/32");
    }

    #[test]
    fn relay_domain_checks() {
        let d =
            doc("[[relay_domains]]\ndomain = \"Example.COM.\"\ntransport = \"[10.0.0.5]:2525\"");
        let s = Settings::default().apply(&d, &FakeHasher).unwrap();
        assert_eq!(s.relay_domains[0].domain, "example.com");

        for (text, field) in [
            (
                "[[relay_domains]]\ndomain = \"not a domain\"",
                "relay_domains[0].domain",
            ),
            (
                "[[relay_domains]]\ndomain = \"a.example\"\n[[relay_domains]]\ndomain = \"A.example\"",
                "relay_domains[1].domain",
            ),
            (
                "[[relay_domains]]\ndomain = \"a.example\"\ntransport = \"[mx.example]:99999\"",
                "relay_domains[0].transport",
            ),
        ] {
            let err = Settings::default()
                .apply(&doc(text), &FakeHasher)
                .unwrap_err();
            assert_eq!(err.field, field, "{text}");
        }
    }

    #[test]
    fn users_keep_hash_when_password_omitted() {
        let first = Settings::default()
            .apply(
                &doc("[[smtp_auth_users]]\nusername = \"alice\"\npassword = \"correct horse\""),
                &FakeHasher,
            )
            .unwrap();
        assert_eq!(
            first.smtp_auth_users[0].password_hash,
            "hashed:correct horse"
        );
        assert_eq!(first.to_doc().smtp_auth_users[0].password, None);
        let again = first
            .apply(
                &doc("[[smtp_auth_users]]\nusername = \"alice\""),
                &FakeHasher,
            )
            .unwrap();
        assert_eq!(again.smtp_auth_users, first.smtp_auth_users);
        let err = first
            .apply(&doc("[[smtp_auth_users]]\nusername = \"bob\""), &FakeHasher)
            .unwrap_err();
        assert_eq!(err.field, "smtp_auth_users[0].password");
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
        // Unknown levels (DANE and MTA-STS are not built yet) are refused by name, never
        // accepted silently.
        assert!(
            toml::from_str::<SettingsDoc>("[[policy]]\npattern = \"a.example\"\nlevel = \"dane\"")
                .is_err()
        );
    }

    #[test]
    fn rules_reference_existing_lists() {
        let bad = doc(
            "[[rules]]\nname = \"r\"\nrecipient_matches = \"missing\"\ntls_level = \"require\"",
        );
        assert_eq!(
            Settings::default()
                .apply(&bad, &FakeHasher)
                .unwrap_err()
                .field,
            "rules[0].recipient_matches"
        );
        let bad = doc("[[rule_data]]\nname = \"l\"\ndomains = [\"ok.example\", \"bad domain\"]");
        assert_eq!(
            Settings::default()
                .apply(&bad, &FakeHasher)
                .unwrap_err()
                .field,
            "rule_data[0].domains[1]"
        );
        let ok = doc(
            "[[rule_data]]\nname = \"l\"\ndomains = [\"OK.example\"]\n[[rules]]\nname = \"r\"\nsender_not_matches = \"l\"\ntls_level = \"try\"",
        );
        let s = Settings::default().apply(&ok, &FakeHasher).unwrap();
        assert_eq!(s.rule_data[0].domains, vec!["ok.example"]);
    }
}
