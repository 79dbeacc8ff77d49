//! What the settings store keeps of a certificate and what its audit log says of one: the
//! records both stores (redb and PostgreSQL) write and the certificate rules read. Below
//! `certificates.rs` and `store.rs`, which both use them.

use serde::{Deserialize, Serialize};

use super::Secret;

/// The name of the certificate generated at first start.
pub const SYSTEM: &str = "system";

/// What kind of certificate a record is: where its chain and key come from.
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
    /// What the certificate was when stored, for the audit log to name it by when it is
    /// bound or unbound; absent in records stored before certificates were audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CertId>,
}

/// A certificate as the audit log names it: what an admin checks it by, never its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertId {
    pub subject: String,
    pub serial: String,
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub sha256: String,
}

/// What happened to a certificate in one audited version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertAction {
    Imported,
    /// Imported again under its name (a renewal): `replaced` names the one before.
    Replaced,
    Deleted,
    Bound,
    Unbound,
}

impl std::fmt::Display for CertAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertAction::Imported => "imported",
            CertAction::Replaced => "replaced (renewed)",
            CertAction::Deleted => "deleted",
            CertAction::Bound => "bound to",
            CertAction::Unbound => "unbound from",
        })
    }
}

/// One certificate change of an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertChange {
    pub action: CertAction,
    pub name: String,
    /// Bound and Unbound: where, in words (`SMTP STARTTLS (inbound)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// The certificate; absent when its record predates the audit of certificates.
    #[serde(flatten)]
    pub id: Option<CertId>,
    /// Replaced: the certificate it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<CertId>,
}
