//! Where settings are kept: the embedded redb store (one node), or PostgreSQL (several nodes
//! sharing one configuration, `postgres.rs`). `SettingsHandle` holds one of them; both keep
//! the current document, its audit log, certificates and admin users.

use super::cert_record::StoredCert;
use super::store::{AuditEntry, Record, StoreError};
use super::{AdminUser, Settings};

pub trait Backend: Send + Sync {
    /// Store `new`, its audit entry and the certificate row `record` names, atomically;
    /// returns its version. `expected`: the version the change was validated against. A
    /// shared store refuses the save when another node has stored a newer one since, so no
    /// change is validated against stale settings.
    fn save(
        &self,
        expected: Option<u64>,
        previous: Option<&Settings>,
        new: &Settings,
        record: &Record<'_>,
    ) -> Result<u64, StoreError>;
    /// Newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    fn certificates(&self) -> Result<Vec<StoredCert>, StoreError>;
    fn admin_users(&self) -> Result<Vec<AdminUser>, StoreError>;
    fn put_admin_user(&self, user: &AdminUser) -> Result<(), StoreError>;
    /// A shared store's current settings and version, when newer than `than`, for a node
    /// that follows the others' changes; `None` for a store only this node writes.
    fn newer(&self, _than: u64) -> Result<Option<(Settings, u64)>, StoreError> {
        Ok(None)
    }
}

impl Backend for super::Store {
    fn save(
        &self,
        _expected: Option<u64>,
        previous: Option<&Settings>,
        new: &Settings,
        record: &Record<'_>,
    ) -> Result<u64, StoreError> {
        super::Store::record(self, previous, new, record)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        super::Store::audit(self, limit)
    }

    fn certificates(&self) -> Result<Vec<StoredCert>, StoreError> {
        super::Store::certificates(self)
    }

    fn admin_users(&self) -> Result<Vec<AdminUser>, StoreError> {
        super::Store::admin_users(self)
    }

    fn put_admin_user(&self, user: &AdminUser) -> Result<(), StoreError> {
        super::Store::put_admin_user(self, user)
    }
}
