//! The embedded settings store (`data/postern.redb`): the current settings and an audit
//! record of every change with the version it replaced, written in one transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::document::Settings;

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Certificate store: name -> `certs::StoredCert` (JSON; imported keys included: the file is
/// 0600 and its contents never leave through the API).
const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates");
const KEY: &str = "current";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("settings store: {0}")]
    Db(String),
    #[error("settings store: stored settings do not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// One change: who made it, when, and the settings before and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub unix_time: u64,
    pub actor: String,
    pub previous: Option<Settings>,
    pub new: Settings,
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Open or create the store; the file is made 0600 (it holds password hashes).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        crate::fsutil::restrict_to_owner(path).map_err(db_err)?;
        Ok(Store { db })
    }

    pub fn load(&self) -> Result<Option<Settings>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(CURRENT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(e)),
        };
        match table.get(KEY).map_err(db_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Write `new` as the current settings and its audit entry, atomically and durably
    /// (redb's commit is an fsync).
    pub fn save(
        &self,
        previous: Option<&Settings>,
        new: &Settings,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let seq = {
            let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
            let seq = audit
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            let entry = AuditEntry {
                seq,
                unix_time: crate::fsutil::unix_now(),
                actor: actor.to_string(),
                previous: previous.cloned(),
                new: new.clone(),
            };
            audit
                .insert(seq, serde_json::to_vec(&entry)?.as_slice())
                .map_err(db_err)?;
            let mut current = txn.open_table(CURRENT).map_err(db_err)?;
            current
                .insert(KEY, serde_json::to_vec(new)?.as_slice())
                .map_err(db_err)?;
            seq
        };
        txn.commit().map_err(db_err)?;
        Ok(seq)
    }

    pub fn certificates(&self) -> Result<Vec<crate::certs::StoredCert>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(CERTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Insert or replace, durably.
    pub fn put_certificate(&self, cert: &crate::certs::StoredCert) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(CERTS)
            .map_err(db_err)?
            .insert(cert.name.as_str(), serde_json::to_vec(cert)?.as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// False if there was no such certificate.
    pub fn delete_certificate(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let found = txn
            .open_table(CERTS)
            .map_err(db_err)?
            .remove(name)
            .map_err(db_err)?
            .is_some();
        txn.commit().map_err(db_err)?;
        Ok(found)
    }

    /// Audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(AUDIT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)?.rev().take(limit) {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_audit_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let first = Settings::default();
        let mut second = first.clone();
        second.inbound.tls_mode = super::super::TlsMode::Encrypt;
        {
            let store = Store::open(&path).unwrap();
            assert!(store.load().unwrap().is_none());
            store.save(None, &first, "init").unwrap();
            store.save(Some(&first), &second, "api").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), Some(second.clone()));
        let audit = store.audit(10).unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].seq, 2);
        assert_eq!(audit[0].actor, "api");
        assert_eq!(audit[0].previous, Some(first));
        assert_eq!(audit[0].new, second);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
