//! The certificate table as the settings own it: what the store keeps of each certificate,
//! the rules for binding one (Hermes' errors 1-3) and where one is bound. Loading, serving
//! and watching certificates is `certs`' business; this side knows names and kinds only.

use serde::{Deserialize, Serialize};

use super::{FieldError, Secret, Settings, StoreError, TlsMode, field_error};

/// The name of the certificate generated at first start.
pub const SYSTEM: &str = "system";
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Pasted or uploaded: chain and key kept in the settings store.
    Imported,
    /// Read from `<acme_live_dir>/<name>/{fullchain,privkey}.pem`, watched for renewals.
    Acme,
    /// Generated at first start; allowed for the admin listener only, never deleted.
    System,
}

/// What the store keeps of an Imported or Acme certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCert {
    pub name: String,
    pub kind: Kind,
    /// Imported: the chain, leaf first, canonical PEM. Acme: empty (the files are read).
    #[serde(default)]
    pub chain_pem: String,
    #[serde(default)]
    pub key_pem: Option<Secret>,
    pub added_unix: u64,
}

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpError {
    #[error("a certificate named {0:?} exists (set \"replace\": true to renew it)")]
    Exists(String),
    #[error(
        "a certificate named {existing:?} exists: names are unique without regard to case, choose another name than {name:?} (or --replace {existing:?})"
    )]
    NameTaken { name: String, existing: String },
    #[error("no certificate named {0:?}")]
    NotFound(String),
    #[error("certificate {name:?} is in use: bound to {}", bound.join(", "))]
    InUse { name: String, bound: Vec<String> },
    #[error(
        "the system self-signed certificate is managed by postern: it cannot be replaced or deleted"
    )]
    System,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One place a certificate is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// `inbound.certificate`: served to SMTP clients for STARTTLS.
    Inbound,
    /// `admin.certificate`: served by the admin listener.
    Admin,
    /// `relay_domains[index].client_certificate`: presented to that domain's next hop.
    RelayClient { index: usize, domain: String },
}

impl Binding {
    /// The field of the settings document, for the API and the CLI.
    pub fn field(&self) -> String {
        match self {
            Binding::Inbound => "inbound.certificate".into(),
            Binding::Admin => "admin.certificate".into(),
            Binding::RelayClient { index, .. } => {
                format!("relay_domains[{index}].client_certificate")
            }
        }
    }

    /// What it is for, in the admin's words.
    pub fn words(&self) -> String {
        match self {
            Binding::Inbound => "SMTP TLS".into(),
            Binding::Admin => "admin listener".into(),
            Binding::RelayClient { domain, .. } => {
                format!("client certificate towards {domain}")
            }
        }
    }
}

/// Where `name` is bound in `settings`.
pub fn bindings(settings: &Settings, name: &str) -> Vec<Binding> {
    let mut out = Vec::new();
    if settings.inbound.certificate.as_deref() == Some(name) {
        out.push(Binding::Inbound);
    }
    if settings.admin.certificate.as_deref() == Some(name) {
        out.push(Binding::Admin);
    }
    for (index, d) in settings.relay_domains.iter().enumerate() {
        if d.client_certificate.as_deref() == Some(name) {
            out.push(Binding::RelayClient {
                index,
                domain: d.domain.clone(),
            });
        }
    }
    out
}

/// Where `name` is bound in `settings`, as the settings document names the fields.
pub fn bound_at(settings: &Settings, name: &str) -> Vec<String> {
    bindings(settings, name)
        .iter()
        .map(|b| format!("{} ({})", b.field(), b.words()))
        .collect()
}

/// Hermes' binding rules for SMTP TLS (its internals document: errors 1-3), decided by the
/// certificate's kind rather than a row number; the admin listener may use the system one.
pub fn check_bindings(settings: &Settings, stored: &[StoredCert]) -> Result<(), FieldError> {
    let known = |n: &str| stored.iter().any(|c| c.name == n);
    match settings.inbound.certificate.as_deref() {
        Some("") if settings.inbound.tls_mode != TlsMode::Disabled => {
            return Err(field_error(
                "inbound.certificate",
                "SMTP TLS Certificate cannot be blank when TLS Mode is set to Opportunistic or Mandatory",
            ));
        }
        Some(SYSTEM) => {
            return Err(field_error(
                "inbound.certificate",
                "You cannot select the system-self-signed Certificate for SMTP TLS",
            ));
        }
        Some(n) if !n.is_empty() && !known(n) => {
            return Err(field_error(
                "inbound.certificate",
                "The SMTP TLS Certificate you entered is not valid",
            ));
        }
        _ => {}
    }
    if let Some(n) = settings.admin.certificate.as_deref()
        && n != SYSTEM
        && !known(n)
    {
        return Err(field_error(
            "admin.certificate",
            "The certificate you entered is not valid",
        ));
    }
    for (i, d) in settings.relay_domains.iter().enumerate() {
        if let Some(n) = d.client_certificate.as_deref()
            && n != SYSTEM
            && !known(n)
        {
            return Err(field_error(
                format!("relay_domains[{i}].client_certificate"),
                "The certificate you entered is not valid",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str) -> StoredCert {
        StoredCert {
            name: name.into(),
            kind: Kind::Imported,
            chain_pem: String::new(),
            key_pem: None,
            added_unix: 0,
        }
    }

    #[test]
    fn binding_rules_are_hermes_and_decided_by_the_flag() {
        let store = [stored("mx")];
        let with = |mode: TlsMode, cert: Option<&str>| {
            let mut s = Settings::default();
            s.inbound.tls_mode = mode;
            s.inbound.certificate = cert.map(str::to_string);
            check_bindings(&s, &store).map_err(|e| (e.field, e.error))
        };
        let field = "inbound.certificate".to_string();
        for mode in [TlsMode::May, TlsMode::Encrypt] {
            assert_eq!(
                with(mode, Some("")),
                Err((field.clone(), "SMTP TLS Certificate cannot be blank when TLS Mode is set to Opportunistic or Mandatory".into()))
            );
        }
        assert_eq!(with(TlsMode::Disabled, Some("")), Ok(()));
        assert_eq!(
            with(TlsMode::May, Some("nosuch")),
            Err((
                field.clone(),
                "The SMTP TLS Certificate you entered is not valid".into()
            ))
        );
        assert_eq!(
            with(TlsMode::Encrypt, Some(SYSTEM)),
            Err((
                field,
                "You cannot select the system-self-signed Certificate for SMTP TLS".into()
            ))
        );
        assert_eq!(with(TlsMode::Encrypt, Some("mx")), Ok(()));
        // The admin listener may use the system certificate.
        let mut s = Settings::default();
        s.admin.certificate = Some(SYSTEM.into());
        assert_eq!(check_bindings(&s, &store), Ok(()));
        s.inbound.certificate = Some("mx".into());
        assert_eq!(bound_at(&s, "mx"), vec!["inbound.certificate (SMTP TLS)"]);
    }
}
