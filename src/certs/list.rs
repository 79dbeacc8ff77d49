//! What the API, the pages and `postern cert list` show of the certificates, and the expiry
//! warnings the log gives daily.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::{Binding, Certs, Facts, Kind, SYSTEM, bindings, bound_at, unknown_facts};
use crate::settings::{Settings, StoreError};

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

impl Certs {
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

    pub(super) fn info(
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
                _ = crate::server::stopped(&mut stop) => return,
                _ = tokio::time::sleep(Duration::from_secs(86_400)) => {}
            }
        }
    }
}
