//! The certificate store: certificates imported with full checks (`check`), ACME live
//! directories watched for renewals, the system self-signed certificate; their binding to
//! SMTP STARTTLS and to the admin listener, swapped for the next handshake without a restart.

mod acme;
pub mod check;
mod import;
mod list;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;
use tokio::sync::watch;

pub use crate::settings::certificates::{
    Binding, Kind, SYSTEM, StoreOpError, StoredCert, bindings, bound_at, check_bindings,
};
use crate::settings::{Secret, SettingsHandle};
use crate::tls::{CertResolver, Served};
use acme::AcmeLoaded;
pub use check::{CheckError, Facts};
pub use import::{CertError, ImportRequest};
pub use list::{CertInfo, EXPIRY_LOG_DAYS};

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
    /// Counts `forget`s, under the `imported` lock: a load that read the store before one
    /// (an older certificate, maybe) does not put what it read in the cache.
    forgotten: AtomicU64,
    /// One rebinding at a time: an import's own and the settings watcher's would otherwise
    /// interleave, and the one that read the older certificate could swap it in last.
    rebinding: Mutex<()>,
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
            forgotten: AtomicU64::new(0),
            rebinding: Mutex::new(()),
            renewals: watch::channel(String::new()).0,
        });
        certs.rebind();
        // A pin left from an earlier run must match what is served now.
        certs.pin_admin(certs.admin.served().to_ecdsa_clients());
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
        let _one = lock(&self.rebinding);
        let snapshot = self.settings.current();
        let (inbound, admin) = (&snapshot.settings.inbound, &snapshot.settings.admin);
        let smtp = match inbound.certificate.as_deref() {
            None | Some("") => Ok(self.default_smtp.clone()),
            Some(name) => self.load(name).map(|(k, _)| k),
        };
        let admin_first = match admin.certificate.as_deref() {
            None => Ok(self.system.0.clone()),
            Some(name) => self.load(name).map(|(k, _)| k),
        };
        let listeners = [
            ("SMTP", &self.smtp, smtp, inbound.ec_certificate.as_deref()),
            (
                "admin",
                &self.admin,
                admin_first,
                admin.ec_certificate.as_deref(),
            ),
        ];
        for (what, resolver, first, ec) in listeners {
            match first.and_then(|first| self.pair(first, ec)) {
                Ok(served) => {
                    let now = resolver.served();
                    let same_ec = match (&now.ec, &served.ec) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (a, b) => a.is_none() && b.is_none(),
                    };
                    if !Arc::ptr_eq(&now.first, &served.first) || !same_ec {
                        if what == "admin" {
                            self.pin_admin(served.to_ecdsa_clients());
                        }
                        resolver.swap_served(served);
                    }
                }
                Err(e) => {
                    tracing::error!(target: "postern/tls", "error: {what} certificate not changed: {e}")
                }
            }
        }
    }

    /// `first` with the ECDSA certificate called `ec` beside it, when one is bound. The
    /// settings check the pair's keys, except an ACME one's, read only here.
    fn pair(&self, first: Arc<CertifiedKey>, ec: Option<&str>) -> Result<Served, String> {
        let Some(name) = ec.filter(|n| !n.is_empty()) else {
            return Ok(Served { first, ec: None });
        };
        let (ec, _) = self.load(name)?;
        use rustls::SignatureAlgorithm::{ECDSA, RSA};
        if ec.key.algorithm() != ECDSA || first.key.algorithm() != RSA {
            return Err(format!(
                "certificate {name:?} is served beside the other one only if it is ECDSA and the other RSA"
            ));
        }
        Ok(Served {
            first,
            ec: Some(ec),
        })
    }

    /// Publish the admin listener's certificate (public, 0644) for the CLI to pin: of a pair,
    /// the ECDSA one, which the CLI and other nodes are served; the system one needs no file.
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
        let generation = self.forgotten.load(Ordering::SeqCst);
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
                let mut cache = lock(&self.imported);
                if self.forgotten.load(Ordering::SeqCst) == generation {
                    cache.insert(name.to_string(), loaded.clone());
                }
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
}

/// A poisoned lock only means a panic elsewhere; the maps hold whole entries, still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
