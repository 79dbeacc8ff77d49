//! ACME certificates: read from `<acme_live_dir>/<name>/` as certbot lays it out, and
//! watched, so a renewal is served from the next handshake without a restart.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{Certs, Facts, Kind, check, lock};

/// ACME material as last loaded from its directory.
pub(super) struct AcmeLoaded {
    /// SHA-256 of fullchain.pem and privkey.pem as read: a change means a renewal.
    pub(super) digest: [u8; 32],
    /// None: those files were refused; the previous good key (if any) stays served.
    pub(super) good: Option<(Arc<CertifiedKey>, Facts)>,
    /// A different digest seen at the last look and not yet acted on.
    pub(super) changing: Option<[u8; 32]>,
}

impl Certs {
    /// Read and check `<acme_dir>/<name>/fullchain.pem` and `privkey.pem`, as certbot lays
    /// them out (symlinks into `archive/`, followed).
    pub(super) fn read_acme(
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
    pub(super) fn acme_current(&self, name: &str) -> Result<(Arc<CertifiedKey>, Facts), String> {
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
            let Some(digest) = self.settled_change(&cert.name) else {
                continue;
            };
            let (line, renewed) = self.reload_acme(&cert.name, digest, now);
            changed |= renewed;
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

    /// The digest of `name`'s files when they changed and read the same as at the previous
    /// look, which is when the change is acted on; a first look at a change only remembers it.
    fn settled_change(&self, name: &str) -> Option<[u8; 32]> {
        let digest = acme_digest(&self.acme_dir.join(name));
        let mut acme = lock(&self.acme);
        // Not loaded yet: loaded from the files when it is first bound or listed.
        let loaded = acme.get_mut(name)?;
        if loaded.digest == digest {
            loaded.changing = None;
            return None;
        }
        if loaded.changing != Some(digest) {
            loaded.changing = Some(digest);
            return None;
        }
        Some(digest)
    }

    /// Read `name`'s changed files (`digest` as last looked at): taken if they pass the
    /// checks, else refused with the current certificate kept. The line logged, and whether
    /// the certificate was renewed.
    fn reload_acme(&self, name: &str, digest: [u8; 32], now: i64) -> (String, bool) {
        let result = self.read_acme(name, now);
        let mut acme = lock(&self.acme);
        match result {
            Ok((checked, digest)) => {
                let line = format!(
                    "certificate {name} renewed from {}: serial {}, not after {}",
                    self.acme_dir.join(name).display(),
                    checked.facts.serial,
                    checked.facts.not_after
                );
                tracing::info!(target: "postern/tls", "{line}");
                acme.insert(
                    name.to_string(),
                    AcmeLoaded {
                        digest,
                        good: Some((Arc::new(checked.key), checked.facts)),
                        changing: None,
                    },
                );
                (line, true)
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
                    name.to_string(),
                    AcmeLoaded {
                        digest,
                        good,
                        changing: None,
                    },
                );
                (line, false)
            }
        }
    }

    /// Watch the ACME live directories every `every` until `stop`.
    pub async fn watch_acme(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = crate::server::stopped(&mut stop) => return,
                _ = tokio::time::sleep(every) => {}
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.poll_acme()).await;
        }
    }
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
