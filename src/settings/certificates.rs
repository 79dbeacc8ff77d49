//! The certificate table as the settings own it: what the store keeps of each certificate,
//! the rules for binding one (Hermes' errors 1-3) and where one is bound. Loading, serving
//! and watching certificates is `certs`' business; this side knows names and kinds only.

pub use super::cert_record::{CertAction, CertChange, CertId, Kind, SYSTEM, StoredCert};
use super::store::{CertRow, Record};
use super::validate::cert_pair::check_pair;
pub use super::validate::cert_pair::{KeyKind, leaf_key};
use super::{FieldError, Settings, SettingsHandle, StoreError, TlsMode, field_error};

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
    /// `inbound.ec_certificate`: the ECDSA one served beside it.
    InboundEc,
    /// `admin.certificate`: served by the admin listener.
    Admin,
    /// `admin.ec_certificate`: the ECDSA one served beside it.
    AdminEc,
    /// `relay_domains[index].client_certificate`: presented to that domain's next hop.
    RelayClient { index: usize, domain: String },
}

impl Binding {
    /// The field of the settings document, for the API and the CLI.
    pub fn field(&self) -> String {
        match self {
            Binding::Inbound => "inbound.certificate".into(),
            Binding::InboundEc => "inbound.ec_certificate".into(),
            Binding::Admin => "admin.certificate".into(),
            Binding::AdminEc => "admin.ec_certificate".into(),
            Binding::RelayClient { index, .. } => {
                format!("relay_domains[{index}].client_certificate")
            }
        }
    }

    /// What it is for, in the admin's words: the one naming of a place, said by the
    /// certificates page, its delete question, the audit and the restore's diff.
    pub fn words(&self) -> String {
        match self {
            Binding::Inbound => "SMTP STARTTLS (inbound)".into(),
            Binding::InboundEc => "SMTP STARTTLS (inbound), ECDSA".into(),
            Binding::Admin => "admin page".into(),
            Binding::AdminEc => "admin page, ECDSA".into(),
            Binding::RelayClient { domain, .. } => {
                format!("client certificate for relay domain {domain}")
            }
        }
    }
}

/// Where `name` is bound in `settings`.
pub fn bindings(settings: &Settings, name: &str) -> Vec<Binding> {
    every_binding(settings)
        .into_iter()
        .filter(|(_, n)| n == name)
        .map(|(b, _)| b)
        .collect()
}

/// Where `name` is bound in `settings`, as the settings document names the fields (with
/// the words), for the API and the CLI.
pub fn bound_at(settings: &Settings, name: &str) -> Vec<String> {
    bindings(settings, name)
        .iter()
        .map(|b| format!("{} ({})", b.field(), b.words()))
        .collect()
}

/// Every place a certificate is bound in `settings`, with its name.
fn every_binding(settings: &Settings) -> Vec<(Binding, String)> {
    let mut out = Vec::new();
    let mut add = |place: Binding, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            out.push((place, n.to_string()));
        }
    };
    add(Binding::Inbound, settings.inbound.certificate.as_deref());
    add(
        Binding::InboundEc,
        settings.inbound.ec_certificate.as_deref(),
    );
    add(Binding::Admin, settings.admin.certificate.as_deref());
    add(Binding::AdminEc, settings.admin.ec_certificate.as_deref());
    for (index, d) in settings.relay_domains.iter().enumerate() {
        let place = Binding::RelayClient {
            index,
            domain: d.domain.clone(),
        };
        add(place, d.client_certificate.as_deref());
    }
    out
}

/// Every place a certificate is bound, in words, with its name: what the audit records.
fn places(settings: &Settings) -> Vec<(String, String)> {
    every_binding(settings)
        .into_iter()
        .map(|(b, name)| (b.words(), name))
        .collect()
}

/// The bindings `new` changes from `old`, each named with what the certificate is (from
/// `stored`, or `system` for the system one): what the audit entry of the change records.
pub fn binding_changes(
    old: &Settings,
    new: &Settings,
    stored: &[StoredCert],
    system: Option<&CertId>,
) -> Vec<CertChange> {
    let id = |name: &str| match name {
        SYSTEM => system.cloned(),
        _ => stored
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.id.clone()),
    };
    let change = |action, (place, name): &(String, String)| CertChange {
        action,
        name: name.clone(),
        place: Some(place.clone()),
        id: id(name),
        replaced: None,
    };
    let (before, after) = (places(old), places(new));
    let mut out: Vec<CertChange> = before
        .iter()
        .filter(|b| !after.contains(b))
        .map(|b| change(CertAction::Unbound, b))
        .collect();
    out.extend(
        after
            .iter()
            .filter(|b| !before.contains(b))
            .map(|b| change(CertAction::Bound, b)),
    );
    out
}

/// The certificates `settings` binds that `stored` no longer holds, with where (in words).
pub fn missing(settings: &Settings, stored: &[StoredCert]) -> Vec<(String, String)> {
    places(settings)
        .into_iter()
        .filter(|(_, name)| name != SYSTEM && !stored.iter().any(|c| c.name == *name))
        .collect()
}

/// The certificate store's writes: each a version of its own in the audit log, with the
/// settings as they are, so an import, a renewal and a deletion say who, when and what.
impl SettingsHandle {
    /// The system certificate's facts, for the audit entries that bind or unbind it.
    pub fn know_system_certificate(&self, id: CertId) {
        let _ = self.inner.system.set(id);
    }

    pub(super) fn binding_changes(
        &self,
        old: &Settings,
        new: &Settings,
        stored: &[StoredCert],
    ) -> Vec<CertChange> {
        binding_changes(old, new, stored, self.inner.system.get())
    }

    /// Store a certificate; one of the same name is replaced only when `replace` (a renewal).
    /// Under the writers' lock, so a binding check never races a deletion. Returns what it
    /// was: imported, or replaced (renewed).
    pub fn put_certificate(
        &self,
        cert: &StoredCert,
        replace: bool,
        actor: &str,
    ) -> Result<CertAction, StoreOpError> {
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        if cert.name.eq_ignore_ascii_case(SYSTEM) {
            return Err(StoreOpError::System);
        }
        // Names are unique without regard to case: `Partner` and `partner` side by side would
        // be one typo away from binding the wrong one.
        let stored = self.inner.store.certificates()?;
        let before = match stored
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&cert.name))
        {
            Some(c) if c.name != cert.name => {
                return Err(StoreOpError::NameTaken {
                    name: cert.name.clone(),
                    existing: c.name.clone(),
                });
            }
            Some(_) if !replace => return Err(StoreOpError::Exists(cert.name.clone())),
            found => found,
        };
        let action = match before {
            Some(_) => CertAction::Replaced,
            None => CertAction::Imported,
        };
        let change = CertChange {
            action,
            name: cert.name.clone(),
            place: None,
            id: cert.id.clone(),
            replaced: before.and_then(|c| c.id.clone()),
        };
        self.record_certificate(change, CertRow::Put(cert), actor)?;
        Ok(action)
    }

    /// Delete a certificate that nothing binds.
    pub fn delete_certificate(&self, name: &str, actor: &str) -> Result<(), StoreOpError> {
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        if name == SYSTEM {
            return Err(StoreOpError::System);
        }
        let bound = bound_at(&self.current().settings, name);
        if !bound.is_empty() {
            return Err(StoreOpError::InUse {
                name: name.to_string(),
                bound,
            });
        }
        let stored = self.inner.store.certificates()?;
        let Some(gone) = stored.iter().find(|c| c.name == name) else {
            return Err(StoreOpError::NotFound(name.to_string()));
        };
        let change = CertChange {
            action: CertAction::Deleted,
            name: name.to_string(),
            place: None,
            id: gone.id.clone(),
            replaced: None,
        };
        self.record_certificate(change, CertRow::Delete(name), actor)
    }

    /// `row` written with a version of its own that records `change`. Under the writers'
    /// lock, which the caller holds.
    fn record_certificate(
        &self,
        change: CertChange,
        row: CertRow<'_>,
        actor: &str,
    ) -> Result<(), StoreOpError> {
        let current = self.current();
        let record = Record {
            actor,
            certificates: vec![change],
            row: Some(row),
        };
        self.commit(&current, current.settings.clone(), &record)?;
        Ok(())
    }
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
    let (inbound, admin) = (&settings.inbound, &settings.admin);
    let pair = |first: &Option<String>, ec: &Option<String>| (first.clone(), ec.clone());
    for (section, (first, ec)) in [
        (
            "inbound",
            pair(&inbound.certificate, &inbound.ec_certificate),
        ),
        ("admin", pair(&admin.certificate, &admin.ec_certificate)),
    ] {
        check_pair(section, first.as_deref(), ec.as_deref(), stored)?;
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
            id: Some(CertId {
                subject: format!("CN={name}"),
                serial: "01".into(),
                sha256: "ab".into(),
            }),
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
        assert_eq!(
            bound_at(&s, "mx"),
            vec!["inbound.certificate (SMTP STARTTLS (inbound))"]
        );
    }

    #[test]
    fn a_binding_changed_is_named_by_place_and_certificate() {
        let store = [stored("mx"), stored("mx-2027")];
        let mut old = Settings::default();
        old.inbound.certificate = Some("mx".into());
        let mut new = old.clone();
        new.inbound.certificate = Some("mx-2027".into());
        new.admin.certificate = Some(SYSTEM.into());
        let system = CertId {
            subject: "CN=system".into(),
            serial: "02".into(),
            sha256: "cd".into(),
        };
        let changes = binding_changes(&old, &new, &store, Some(&system));
        let words: Vec<String> = changes
            .iter()
            .map(|c| {
                let place = c.place.as_deref().unwrap_or_default();
                let subject = c.id.as_ref().map_or("?", |i| i.subject.as_str());
                format!("{} {} {place} ({subject})", c.name, c.action)
            })
            .collect();
        assert_eq!(
            words,
            [
                "mx unbound from SMTP STARTTLS (inbound) (CN=mx)",
                "mx-2027 bound to SMTP STARTTLS (inbound) (CN=mx-2027)",
                "system bound to admin page (CN=system)",
            ]
        );
        assert!(binding_changes(&new, &new, &store, None).is_empty());
        // A JSON entry carries the facts flat, never a key.
        let json = serde_json::to_value(&changes[0]).unwrap();
        assert_eq!(json["sha256"], "ab");
        assert_eq!(json["action"], "unbound");
    }

    /// A certificate change as (action, name, serial, replaced serial).
    type Seen = (CertAction, String, String, String);

    /// The newest audit entry: its version, its actor and its certificate changes.
    fn newest(h: &SettingsHandle) -> (u64, String, Vec<Seen>) {
        let e = h.audit(1).unwrap().remove(0);
        let serial = |i: &Option<CertId>| i.as_ref().map(|i| i.serial.clone()).unwrap_or_default();
        let changes = e
            .certificates
            .iter()
            .map(|c| (c.action, c.name.clone(), serial(&c.id), serial(&c.replaced)))
            .collect();
        (e.seq, e.actor, changes)
    }

    #[test]
    fn every_certificate_change_is_a_version_of_the_audit_log() {
        use CertAction::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let h = SettingsHandle::open(&path).unwrap();
        let hasher = &super::super::Argon2Hasher;
        let mut doc = h.current().settings.to_doc();
        doc.inbound.tls_mode = TlsMode::Encrypt;
        h.replace(&doc, "carol", hasher).unwrap();

        h.put_certificate(&stored("mx"), false, "alice").unwrap();
        let imported = (Imported, "mx".to_string(), "01".to_string(), String::new());
        assert_eq!(newest(&h), (3, "alice".into(), vec![imported]));
        assert_eq!(h.current().version, 3);
        let entry = h.audit(1).unwrap().remove(0);
        assert_eq!(
            entry.previous.as_ref(),
            Some(&entry.new),
            "settings as they were"
        );
        // Rollback undoes the last settings change, not the import.
        h.rollback("carol").unwrap().unwrap();
        assert_eq!(h.current().settings.inbound.tls_mode, TlsMode::May);
        assert_eq!(h.certificates().unwrap().len(), 1);

        let mut renewed = stored("mx");
        renewed.id.as_mut().unwrap().serial = "02".into();
        assert!(matches!(
            h.put_certificate(&renewed, false, "alice"),
            Err(StoreOpError::Exists(_))
        ));
        h.put_certificate(&renewed, true, "alice").unwrap();
        let replaced = (
            Replaced,
            "mx".to_string(),
            "02".to_string(),
            "01".to_string(),
        );
        assert_eq!(newest(&h), (5, "alice".into(), vec![replaced]));

        let mut doc = h.current().settings.to_doc();
        doc.inbound.certificate = Some("mx".into());
        h.replace(&doc, "carol", hasher).unwrap();
        let bound = (Bound, "mx".to_string(), "02".to_string(), String::new());
        assert_eq!(newest(&h).2, vec![bound]);

        // A restore says first what it undoes, and is refused once the settings moved on.
        let plan = h.restore_plan(2).unwrap().unwrap();
        assert_eq!(plan.certificates[0].action, Unbound);
        assert!(plan.missing.is_empty());
        assert!(matches!(
            h.restore(2, "carol", Some(5)),
            Err(super::super::ReplaceError::Changed { shown: 5, now: 6 })
        ));
        h.restore(2, "carol", Some(6)).unwrap().unwrap();
        assert_eq!(newest(&h).2[0].0, Unbound);

        h.delete_certificate("mx", "bob").unwrap();
        let deleted = (Deleted, "mx".to_string(), "02".to_string(), String::new());
        assert_eq!(newest(&h), (8, "bob".into(), vec![deleted]));
        assert!(h.certificates().unwrap().is_empty());
        let plan = h.restore_plan(6).unwrap().unwrap();
        assert_eq!(
            plan.missing,
            vec![(Binding::Inbound.words(), "mx".to_string())]
        );
        drop(h);
        // Reopened, the log reads back whole.
        let h = SettingsHandle::open(&path).unwrap();
        assert_eq!(h.audit(100).unwrap().len(), 8);
        assert_eq!(h.current().version, 8);
    }
}
