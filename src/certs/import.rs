//! Storing and deleting certificates: an import (PEM text, or an ACME live directory)
//! checked in full before anything is stored, then served at once where it is bound.

use std::sync::Arc;

use serde::Deserialize;

use super::acme::AcmeLoaded;
use super::{CertInfo, Certs, Kind, SYSTEM, StoreOpError, StoredCert, check, lock};
use crate::settings::{Secret, StoreError};

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

impl Certs {
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
    pub(super) fn forget(&self, name: &str) {
        let mut cache = lock(&self.imported);
        cache.remove(name);
        self.forgotten
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(cache);
        lock(&self.acme).remove(name);
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
