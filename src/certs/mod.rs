//! The certificate store: certificates imported with full checks (`check`), ACME live
//! directories watched for renewals, the system self-signed certificate; their binding to
//! SMTP STARTTLS and to the admin listener, swapped for the next handshake without a restart.

pub mod check;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::settings::certificates::{
    Binding, Kind, SYSTEM, StoreOpError, StoredCert, bindings, bound_at, check_bindings,
};
use crate::settings::{Secret, Settings, SettingsHandle, StoreError};
use crate::tls::CertResolver;
pub use check::{CheckError, Facts};

/// Below this many days left, the daily check logs a warning.
pub const EXPIRY_LOG_DAYS: i64 = 21;

/// A certificate as the API and `postern cert list` show it: never its key.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The system self-signed certificate (decided by this flag, never by position).
    pub system: bool,
    #[serde(flatten)]
    pub facts: Facts,
    pub days_left: i64,
    pub bound_to: Vec<String>,
    /// Where it is used, in the admin's words (`bound_to` without the settings paths), for
    /// the pages.
    #[serde(skip)]
    pub used_for: Vec<String>,
    /// A replace of a certificate of the same name (a renewal), for the import's answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub renewed: bool,
    /// Import warnings (expiring soon, host name not among the names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Acme: the live directory read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

/// An import through the API: PEM text, or an ACME name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub name: String,
    #[serde(default)]
    pub cert: Option<String>,
    /// Redacted in `Debug`, so a logged request cannot leak it.
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub chain: Option<String>,
    /// Read `<acme_live_dir>/<name>/` instead of PEM text.
    #[serde(default)]
    pub acme: bool,
    /// Replace a certificate of the same name (a renewal); bound, it is served at once.
    #[serde(default)]
    pub replace: bool,
}

/// Why an import or deletion failed, with the field when one is at fault.
#[derive(Debug)]
pub enum CertError {
    Invalid { field: String, error: String },
    Store(StoreOpError),
}

impl From<StoreOpError> for CertError {
    fn from(e: StoreOpError) -> CertError {
        CertError::Store(e)
    }
}

impl From<StoreError> for CertError {
    fn from(e: StoreError) -> CertError {
        CertError::Store(StoreOpError::Store(e))
    }
}

fn invalid(field: &str, error: impl Into<String>) -> CertError {
    CertError::Invalid {
        field: field.to_string(),
        error: error.into(),
    }
}

/// ACME material as last loaded from its directory.
struct AcmeLoaded {
    /// SHA-256 of fullchain.pem and privkey.pem as read: a change means a renewal.
    digest: [u8; 32],
    /// None: those files were refused; the previous good key (if any) stays served.
    good: Option<(Arc<CertifiedKey>, Facts)>,
    /// A different digest seen at the last look and not yet acted on.
    changing: Option<[u8; 32]>,
}

/// The runtime side of the store: loads what the settings bind and swaps it into the
/// resolvers the SMTP and admin listeners serve from.
pub struct Certs {
    settings: SettingsHandle,
    hostname: String,
    system: (Arc<CertifiedKey>, Facts),
    /// Served for STARTTLS while `inbound.certificate` is unset: the config's PEM files or
    /// the system certificate.
    default_smtp: Arc<CertifiedKey>,
    smtp: Arc<CertResolver>,
    admin: Arc<CertResolver>,
    acme_dir: PathBuf,
    /// `data/tls/admin.crt`: the admin listener's certificate, which the CLI pins.
    admin_pin: PathBuf,
    acme: Mutex<HashMap<String, AcmeLoaded>>,
    /// Imported certificates as parsed from the store, so a delivery presenting a client
    /// certificate does not read and parse PEM each time; dropped on import and delete.
    imported: Mutex<HashMap<String, (Arc<CertifiedKey>, Facts)>>,
    /// Each ACME renewal handled, as a line (what tests and the dashboard wait on).
    renewals: watch::Sender<String>,
}

impl Certs {
    pub fn new(
        settings: SettingsHandle,
        hostname: &str,
        system: CertifiedKey,
        default_smtp: CertifiedKey,
        acme_dir: PathBuf,
        data_dir: &std::path::Path,
    ) -> Arc<Certs> {
        let facts = system
            .cert
            .first()
            .and_then(|c| check::describe(c.as_ref()))
            .unwrap_or_else(unknown_facts);
        settings.know_system_certificate(facts.id());
        let system = Arc::new(system);
        let default_smtp = Arc::new(default_smtp);
        let certs = Arc::new(Certs {
            settings,
            hostname: hostname.to_string(),
            smtp: CertResolver::new((*default_smtp).clone()),
            admin: CertResolver::new((*system).clone()),
            system: (system, facts),
            default_smtp,
            acme_dir,
            admin_pin: data_dir.join("tls/admin.crt"),
            acme: Mutex::new(HashMap::new()),
            imported: Mutex::new(HashMap::new()),
            renewals: watch::channel(String::new()).0,
        });
        certs.rebind();
        // A pin left from an earlier run must match what is served now.
        certs.pin_admin(&certs.admin.current());
        certs
    }

    /// Where ACME certificates are read from (`[tls] acme_live_dir`).
    pub fn acme_dir(&self) -> &std::path::Path {
        &self.acme_dir
    }

    pub fn smtp_resolver(&self) -> Arc<CertResolver> {
        self.smtp.clone()
    }

    pub fn admin_resolver(&self) -> Arc<CertResolver> {
        self.admin.clone()
    }

    pub fn subscribe_renewals(&self) -> watch::Receiver<String> {
        self.renewals.subscribe()
    }

    /// Serve what the settings bind now, from the next handshake on; sessions in flight
    /// keep the certificate they started with. A binding that cannot be loaded keeps the
    /// current certificate and says why.
    pub fn rebind(&self) {
        let snapshot = self.settings.current();
        let smtp = match snapshot.settings.inbound.certificate.as_deref() {
            None | Some("") => Ok(self.default_smtp.clone()),
            Some(name) => self.load(name).map(|(k, _)| k),
        };
        let admin = match snapshot.settings.admin.certificate.as_deref() {
            None => Ok(self.system.0.clone()),
            Some(name) => self.load(name).map(|(k, _)| k),
        };
        for (what, resolver, key) in [("SMTP", &self.smtp, smtp), ("admin", &self.admin, admin)] {
            match key {
                Ok(k) => {
                    if !Arc::ptr_eq(&resolver.current(), &k) {
                        if what == "admin" {
                            self.pin_admin(&k);
                        }
                        resolver.swap_arc(k);
                    }
                }
                Err(e) => {
                    tracing::error!(target: "postern/tls", "error: {what} certificate not changed: {e}")
                }
            }
        }
    }

    /// Publish the admin listener's certificate (public, 0644) for the CLI to pin; the
    /// system one needs no file.
    fn pin_admin(&self, key: &CertifiedKey) {
        let result = if key.cert.first() == self.system.0.cert.first() {
            std::fs::remove_file(&self.admin_pin).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            let pem = key
                .cert
                .first()
                .map(|c| check::pem("CERTIFICATE", c.as_ref()))
                .unwrap_or_default();
            let tmp = self.admin_pin.with_extension("crt.tmp");
            std::fs::write(&tmp, pem).and_then(|()| std::fs::rename(&tmp, &self.admin_pin))
        };
        if let Err(e) = result {
            tracing::error!(target: "postern/tls", "error: {}: {e}", self.admin_pin.display());
        }
    }

    /// Whether the certificate called `name`, with the intermediates stored with it, chains
    /// to the public trust roots: the Mozilla set shipped with postern, never `[tls]
    /// extra_roots` (a private CA there is trusted by this gateway, not by Exchange Online
    /// or other senders). Blocking (the store may be read).
    pub fn publicly_trusted(&self, name: &str) -> Result<bool, String> {
        static PUBLIC: std::sync::OnceLock<Option<Arc<rustls::client::WebPkiServerVerifier>>> =
            std::sync::OnceLock::new();
        let verifier = PUBLIC
            .get_or_init(|| {
                crate::tls::trust_roots(&[])
                    .ok()
                    .and_then(crate::tls::chain_verifier)
            })
            .as_ref()
            .ok_or("the public trust roots could not be loaded")?;
        let (key, _) = self.load(name)?;
        Ok(crate::tls::chain_trusted(verifier, &key.cert))
    }

    /// The certificate and key called `name`, to present as a TLS client.
    pub fn client_key(&self, name: &str) -> Result<Arc<CertifiedKey>, String> {
        self.load(name).map(|(key, _)| key)
    }

    /// The key and facts of the certificate called `name`.
    fn load(&self, name: &str) -> Result<(Arc<CertifiedKey>, Facts), String> {
        if name == SYSTEM {
            return Ok(self.system.clone());
        }
        if let Some(hit) = lock(&self.imported).get(name).cloned() {
            return Ok(hit);
        }
        let stored = self
            .settings
            .certificates()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no certificate named {name:?}"))?;
        match stored.kind {
            Kind::Acme => self.acme_current(name),
            _ => {
                let key = stored.key_pem.as_ref().map(Secret::expose).unwrap_or("");
                let certified = crate::tls::certified_key_from_pem(
                    stored.chain_pem.as_bytes(),
                    key.as_bytes(),
                    &format!("certificate {name}"),
                )
                .map_err(|e| e.to_string())?;
                let facts = certified
                    .cert
                    .first()
                    .and_then(|c| check::describe(c.as_ref()))
                    .unwrap_or_else(unknown_facts);
                let loaded = (Arc::new(certified), facts);
                lock(&self.imported).insert(name.to_string(), loaded.clone());
                Ok(loaded)
            }
        }
    }

    /// Without `inbound.certificate`, SMTP serves the config's PEM files if given, else the
    /// system self-signed certificate.
    fn default_smtp_is_system(&self) -> bool {
        self.default_smtp.cert.first() == self.system.0.cert.first()
    }

    /// Whether STARTTLS serves the system self-signed certificate now, which senders that
    /// verify certificates will not trust.
    pub fn smtp_serves_system(&self) -> bool {
        self.smtp.current().cert.first() == self.system.0.cert.first()
    }

    /// Every certificate, the system one first.
    pub fn list(&self) -> Result<Vec<CertInfo>, StoreError> {
        let settings = self.settings.current().settings.clone();
        let now = crate::fsutil::unix_now() as i64;
        let mut out = vec![self.info(SYSTEM, Kind::System, self.system.1.clone(), &settings, now)];
        for stored in self.settings.certificates()? {
            let facts = match self.load(&stored.name) {
                Ok((_, f)) => f,
                Err(e) => {
                    tracing::warn!(target: "postern/tls", "warning: certificate {}: {e}", stored.name);
                    unknown_facts()
                }
            };
            out.push(self.info(&stored.name, stored.kind, facts, &settings, now));
        }
        for c in &out {
            crate::metrics::certificate_days_left(&c.name, &format!("{:?}", c.kind), c.days_left);
        }
        Ok(out)
    }

    fn info(
        &self,
        name: &str,
        kind: Kind,
        facts: Facts,
        settings: &Settings,
        now: i64,
    ) -> CertInfo {
        let mut bound_to = bound_at(settings, name);
        let mut used_for: Vec<String> = bindings(settings, name)
            .iter()
            .map(Binding::words)
            .collect();
        let smtp_unbound = settings
            .inbound
            .certificate
            .as_deref()
            .is_none_or(str::is_empty);
        let mut by_default = |place: Binding, why: &str| {
            let said = format!("{}, {why}", place.words());
            bound_to.push(said.clone());
            used_for.push(said);
        };
        if kind == Kind::System && smtp_unbound && self.default_smtp_is_system() {
            by_default(Binding::Inbound, "while no other is bound");
        }
        if kind == Kind::System && settings.admin.certificate.is_none() {
            by_default(Binding::Admin, "while no other is bound");
        }
        CertInfo {
            name: name.to_string(),
            kind,
            system: kind == Kind::System,
            days_left: facts.days_left(now),
            facts,
            bound_to,
            used_for,
            renewed: false,
            warnings: Vec::new(),
            directory: (kind == Kind::Acme).then(|| self.acme_dir.join(name).display().to_string()),
        }
    }

    /// Check and store a certificate, audited as `actor`'s. Blocking (store commit). Nothing
    /// is stored on error.
    pub fn import(&self, req: &ImportRequest, actor: &str) -> Result<CertInfo, CertError> {
        let name = check_name(&req.name)?;
        let now = crate::fsutil::unix_now() as i64;
        let (stored, checked, digest) = if req.acme {
            self.acme_material(req, name, now)?
        } else {
            let (stored, checked) = self.pem_material(req, name, now)?;
            (stored, checked, None)
        };
        let stored = StoredCert {
            id: Some(checked.facts.id()),
            ..stored
        };
        let action = self.settings.put_certificate(&stored, req.replace, actor)?;
        let renewed = action == crate::settings::certificates::CertAction::Replaced;
        self.forget(name);
        if let Some(digest) = digest {
            // After the commit: a poll before this finds no entry and leaves it alone.
            lock(&self.acme).insert(
                name.to_string(),
                AcmeLoaded {
                    digest,
                    good: Some((Arc::new(checked.key.clone()), checked.facts.clone())),
                    changing: None,
                },
            );
        }
        for w in &checked.warnings {
            tracing::warn!(target: "postern/tls", "warning: certificate {name}: {w}");
        }
        let done = if renewed { "renewed" } else { "imported" };
        tracing::info!(target: "postern/tls", "certificate {name} {done} by {actor}: subject {}, serial {}, sha256 {}, not after {}", checked.facts.subject, checked.facts.serial, checked.facts.sha256, checked.facts.not_after);
        self.rebind();
        let settings = self.settings.current().settings.clone();
        let mut info = self.info(name, stored.kind, checked.facts, &settings, now);
        info.warnings = checked.warnings;
        info.renewed = renewed;
        Ok(info)
    }

    /// PEM text from the request, checked; the record to store.
    fn pem_material(
        &self,
        req: &ImportRequest,
        name: &str,
        now: i64,
    ) -> Result<(StoredCert, check::Checked), CertError> {
        let cert = req.cert.as_deref().filter(|c| !c.trim().is_empty());
        let key = req
            .key
            .as_ref()
            .map(Secret::expose)
            .filter(|k| !k.trim().is_empty());
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(invalid(
                if cert.is_none() { "cert" } else { "key" },
                "required (PEM text)",
            ));
        };
        let checked = check::check(cert, key, req.chain.as_deref(), &self.hostname, now)
            .map_err(|e| invalid(e.field.name(), e.error))?;
        let stored = StoredCert {
            name: name.to_string(),
            kind: Kind::Imported,
            chain_pem: checked.chain_pem.clone(),
            key_pem: Some(Secret::new(checked.key_pem.clone())),
            added_unix: now as u64,
            id: None,
        };
        Ok((stored, checked))
    }

    /// The ACME live directory's files, checked; the record to store (no material: the
    /// files are read) and the files' digest.
    fn acme_material(
        &self,
        req: &ImportRequest,
        name: &str,
        now: i64,
    ) -> Result<(StoredCert, check::Checked, Option<[u8; 32]>), CertError> {
        if req.cert.is_some() || req.key.is_some() || req.chain.is_some() {
            return Err(invalid(
                "acme",
                "an ACME certificate is read from its live directory: give no cert, key or chain",
            ));
        }
        let (checked, digest) = self
            .read_acme(name, now)
            .map_err(|(field, e)| invalid(&field, e))?;
        let stored = StoredCert {
            name: name.to_string(),
            kind: Kind::Acme,
            chain_pem: String::new(),
            key_pem: None,
            added_unix: now as u64,
            id: None,
        };
        Ok((stored, checked, Some(digest)))
    }

    /// Delete a certificate nothing binds, audited as `actor`'s.
    pub fn delete(&self, name: &str, actor: &str) -> Result<(), CertError> {
        self.settings.delete_certificate(name, actor)?;
        self.forget(name);
        tracing::info!(target: "postern/tls", "certificate {name} deleted by {actor}");
        Ok(())
    }

    /// Drop what was loaded for `name` (it was replaced or deleted).
    fn forget(&self, name: &str) {
        lock(&self.imported).remove(name);
        lock(&self.acme).remove(name);
    }

    /// Read and check `<acme_dir>/<name>/fullchain.pem` and `privkey.pem`, as certbot lays
    /// them out (symlinks into `archive/`, followed).
    fn read_acme(
        &self,
        name: &str,
        now: i64,
    ) -> Result<(check::Checked, [u8; 32]), (String, String)> {
        let dir = self.acme_dir.join(name);
        let digest = acme_digest(&dir);
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).map_err(|e| {
                (
                    "name".to_string(),
                    format!("{}: {e}", dir.join(file).display()),
                )
            })
        };
        let (chain, key) = (read("fullchain.pem")?, read("privkey.pem")?);
        let checked = check::check(&chain, &key, None, &self.hostname, now).map_err(|e| {
            let file = if e.field == check::Field::Key {
                "privkey.pem"
            } else {
                "fullchain.pem"
            };
            (
                e.field.name().to_string(),
                format!("{}: {}", dir.join(file).display(), e.error),
            )
        })?;
        Ok((checked, digest))
    }

    /// The ACME certificate as last loaded (loading it if it was not yet).
    fn acme_current(&self, name: &str) -> Result<(Arc<CertifiedKey>, Facts), String> {
        if let Some(good) = lock(&self.acme).get(name).and_then(|l| l.good.clone()) {
            return Ok(good);
        }
        let now = crate::fsutil::unix_now() as i64;
        let (checked, digest) = self.read_acme(name, now).map_err(|(_, e)| e)?;
        let good = (Arc::new(checked.key), checked.facts);
        lock(&self.acme).insert(
            name.to_string(),
            AcmeLoaded {
                digest,
                good: Some(good.clone()),
                changing: None,
            },
        );
        Ok(good)
    }

    /// One look at every ACME directory: changed files that pass the checks are swapped in;
    /// changed files that fail are refused, the old certificate kept, and the reason logged
    /// once. A change is acted on once the directory reads the same at two looks in a row:
    /// certbot switches its two symlinks one at a time, and a look between the two must not
    /// count as a bad pair. Blocking (file reads).
    pub fn poll_acme(&self) {
        let Ok(stored) = self.settings.certificates() else {
            return;
        };
        let now = crate::fsutil::unix_now() as i64;
        let mut changed = false;
        let mut lines = Vec::new();
        for cert in stored.iter().filter(|c| c.kind == Kind::Acme) {
            let name = &cert.name;
            let digest = acme_digest(&self.acme_dir.join(name));
            {
                let mut acme = lock(&self.acme);
                // Not loaded yet: loaded from the files when it is first bound or listed.
                let Some(loaded) = acme.get_mut(name) else {
                    continue;
                };
                if loaded.digest == digest {
                    loaded.changing = None;
                    continue;
                }
                if loaded.changing != Some(digest) {
                    loaded.changing = Some(digest);
                    continue;
                }
            }
            let result = self.read_acme(name, now);
            let mut acme = lock(&self.acme);
            let line = match result {
                Ok((checked, digest)) => {
                    let line = format!(
                        "certificate {name} renewed from {}: serial {}, not after {}",
                        self.acme_dir.join(name).display(),
                        checked.facts.serial,
                        checked.facts.not_after
                    );
                    tracing::info!(target: "postern/tls", "{line}");
                    acme.insert(
                        name.clone(),
                        AcmeLoaded {
                            digest,
                            good: Some((Arc::new(checked.key), checked.facts)),
                            changing: None,
                        },
                    );
                    changed = true;
                    line
                }
                Err((_, e)) => {
                    // The refused files are remembered by their digest, so the error is
                    // logged once per change, not at every look.
                    let line = format!(
                        "error: certificate {name}: renewed files refused, keeping the current certificate: {e}"
                    );
                    tracing::error!(target: "postern/tls", "{line}");
                    let good = acme.get(name).and_then(|l| l.good.clone());
                    acme.insert(
                        name.clone(),
                        AcmeLoaded {
                            digest,
                            good,
                            changing: None,
                        },
                    );
                    line
                }
            };
            lines.push(line);
        }
        if changed {
            self.rebind();
        }
        // Announced once served, so whoever hears of a renewal gets it at the next handshake.
        for line in lines {
            self.renewals.send_replace(line);
        }
    }

    /// Watch the ACME live directories every `every` until `stop`.
    pub async fn watch_acme(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => return,
                _ = tokio::time::sleep(every) => {}
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.poll_acme()).await;
        }
    }

    /// Log a warning for each certificate with fewer than EXPIRY_LOG_DAYS left; returns the
    /// lines. Run at start and daily.
    pub fn expiry_warnings(&self) -> Vec<String> {
        let Ok(list) = self.list() else {
            return Vec::new();
        };
        list.iter()
            .filter(|c| c.days_left < EXPIRY_LOG_DAYS)
            .map(|c| {
                let line = format!(
                    "warning: certificate {} expires in {} days ({}){}",
                    c.name,
                    c.days_left,
                    c.facts.not_after,
                    if c.bound_to.is_empty() {
                        String::new()
                    } else {
                        format!("; bound to {}", c.bound_to.join(", "))
                    }
                );
                tracing::warn!(target: "postern/tls", "{line}");
                line
            })
            .collect()
    }

    pub async fn warn_daily(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.expiry_warnings()).await;
            tokio::select! {
                _ = crate::stopped(&mut stop) => return,
                _ = tokio::time::sleep(Duration::from_secs(86_400)) => {}
            }
        }
    }
}

/// A certificate name, which is also a directory name under the ACME live directory: no
/// `..`, no hidden names; `system` is reserved.
fn check_name(name: &str) -> Result<&str, CertError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(invalid(
            "name",
            "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    if name == SYSTEM {
        return Err(CertError::Store(StoreOpError::System));
    }
    Ok(name)
}

/// A poisoned lock only means a panic elsewhere; the maps hold whole entries, still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn acme_digest(dir: &std::path::Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    Sha256::new()
        .chain_update(read("fullchain.pem"))
        .chain_update([0])
        .chain_update(read("privkey.pem"))
        .finalize()
        .into()
}

fn unknown_facts() -> Facts {
    Facts {
        subject: "(unreadable)".into(),
        issuer: String::new(),
        serial: String::new(),
        sans: Vec::new(),
        not_before: String::new(),
        not_after: String::new(),
        not_after_unix: 0,
        sha256: String::new(),
        chain_length: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn certs_on(dir: &std::path::Path, settings: SettingsHandle) -> Arc<Certs> {
        let (cert, key) = self_signed("system.test.example");
        let system =
            crate::tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), "system").unwrap();
        Certs::new(
            settings,
            "mx.test.example",
            system.clone(),
            system,
            dir.join("live"),
            dir,
        )
    }

    #[test]
    fn imported_and_bound_certificate_is_served_again_after_a_restart() {
        crate::tls::install_provider();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        let store = dir.path().join("s.redb");
        let (cert, key) = self_signed("mx.test.example");
        {
            let settings = SettingsHandle::open(&store).unwrap();
            let certs = certs_on(dir.path(), settings.clone());
            let req = ImportRequest {
                name: "mx".into(),
                cert: Some(cert.clone()),
                key: Some(Secret::new(key)),
                chain: None,
                acme: false,
                replace: false,
            };
            certs.import(&req, "test").unwrap();
            let mut doc = settings.current().settings.to_doc();
            doc.inbound.certificate = Some("mx".into());
            settings
                .replace(&doc, "test", &crate::settings::Argon2Hasher)
                .unwrap();
        }
        let certs = certs_on(dir.path(), SettingsHandle::open(&store).unwrap());
        let served = certs.smtp_resolver().current();
        let want = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(served.cert[0], want);
        assert_eq!(certs.publicly_trusted("mx"), Ok(false), "self-signed");
        assert!(certs.publicly_trusted("no-such").is_err());
    }
}
