//! The embedded settings store (`data/postern.redb`): the current settings and an audit
//! record of every change with the version it replaced, written in one transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::cert_record::{CertChange, StoredCert};
use super::document::Settings;

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Certificate store: name -> `certs::StoredCert` (JSON; imported keys included: the file is
/// 0600 and its contents never leave through the API).
const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates");
/// Admin page users, by name: argon2id hashes, never passwords.
const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_users");
const KEY: &str = "current";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("settings store: {0}")]
    Db(String),
    /// The shared settings database cannot be reached (several nodes).
    #[error(
        "settings database unreachable ({0}): the settings in force stay, changes are refused until it is back"
    )]
    Unreachable(String),
    /// The shared database holds a settings row this node does not take: older than the one
    /// it holds, or not on top of it (written back without the key).
    #[error(
        "settings database refused ({0}): the settings in force stay, changes are refused until the database holds a version that follows them"
    )]
    Refused(String),
    /// Another node stored a newer version while this change was made.
    #[error(
        "the settings changed on another node (version {0}) while this change was made: reload and make it again"
    )]
    Conflict(u64),
    #[error("settings store: stored settings do not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// The store is gone or empty, but this data directory had one: starting on defaults
    /// would silently drop every setting.
    #[error(
        "{path}: the settings store is missing or empty, but postern has run on this data directory before ({marker} exists). Refusing to start on defaults, which would drop trusted networks, relay domains, policy rows, users and certificates. Restore the file from a backup, or start with `postern serve --restore-settings {last_good}` (the last settings stored, without certificates) or `--reset-settings` (defaults, on purpose)"
    )]
    Missing {
        path: String,
        marker: String,
        last_good: String,
    },
    /// The file is there but cannot be read as a store.
    #[error(
        "{path}: the settings store is damaged ({why}). Move it aside and start with `postern serve --restore-settings {last_good}` (the last settings stored, without certificates), or restore it from a backup"
    )]
    Damaged {
        path: String,
        why: String,
        last_good: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// One change: who made it, when, the settings before and after, and the certificates it
/// stored, deleted, bound or unbound (named by their facts, never their keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub unix_time: u64,
    pub actor: String,
    pub previous: Option<Settings>,
    pub new: Settings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertChange>,
}

/// What a version records besides the settings: who made it, the certificate changes the
/// audit entry names, and the certificate row written in the same transaction.
pub struct Record<'a> {
    pub actor: &'a str,
    pub certificates: Vec<CertChange>,
    pub row: Option<CertRow<'a>>,
}

impl<'a> Record<'a> {
    /// A settings change and nothing else.
    pub fn by(actor: &'a str) -> Record<'a> {
        Record {
            actor,
            certificates: Vec::new(),
            row: None,
        }
    }

    /// The audit entry of version `seq`.
    pub fn entry(&self, seq: u64, previous: Option<&Settings>, new: &Settings) -> AuditEntry {
        AuditEntry {
            seq,
            unix_time: crate::fsutil::unix_now(),
            actor: self.actor.to_string(),
            previous: previous.cloned(),
            new: new.clone(),
            certificates: self.certificates.clone(),
        }
    }
}

/// A certificate row stored or deleted with a version (an import, a renewal, a deletion).
#[derive(Clone, Copy)]
pub enum CertRow<'a> {
    Put(&'a StoredCert),
    Delete(&'a str),
}

pub struct Store {
    /// `None` only while being reopened after an I/O error.
    db: std::sync::RwLock<Option<Database>>,
    path: std::path::PathBuf,
    /// A write failed: redb refuses everything after an I/O error ("previous I/O error"),
    /// so the next operation reopens the file first (a full disk once meant 500s until
    /// restart).
    broken: std::sync::atomic::AtomicBool,
    /// Audit entries kept (the oldest go as new ones come); at least 1, for rollback.
    history_keep: u64,
    /// A copy of the current settings outside the store (`<store>.last-good.json`).
    last_good: std::path::PathBuf,
}

/// The database, held open for one operation (a reopen waits for it).
struct OpenDb<'a>(std::sync::RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for OpenDb<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        // `Store::db` hands one out only when the database is open.
        self.0.as_ref().expect("checked by Store::db")
    }
}

/// `<store>.last-good.json`: the current settings, rewritten after every change.
pub fn last_good_path(path: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.last-good.json", path.display()))
}

impl Store {
    /// Open or create the store; the file is made 0600 (it holds password hashes). A file
    /// redb cannot read is `Damaged`, never a panic (redb can panic on garbage).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let damaged = |why: String| StoreError::Damaged {
            path: path.display().to_string(),
            why,
            last_good: last_good_path(path).display().to_string(),
        };
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(|| Database::create(path));
        std::panic::set_hook(hook);
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(db_err(redb::DatabaseError::DatabaseAlreadyOpen));
            }
            Ok(Err(e)) => return Err(damaged(e.to_string())),
            Err(_) => return Err(damaged("the file is not a redb database".into())),
        };
        crate::fsutil::restrict_to_owner(path).map_err(db_err)?;
        Ok(Store {
            db: std::sync::RwLock::new(Some(db)),
            path: path.to_path_buf(),
            broken: std::sync::atomic::AtomicBool::new(false),
            history_keep: 200,
            last_good: last_good_path(path),
        })
    }

    /// The database, reopened first if the last write failed.
    fn db(&self) -> Result<OpenDb<'_>, StoreError> {
        use std::sync::atomic::Ordering;
        if self.broken.swap(false, Ordering::SeqCst) {
            let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
            // The old handle must be gone before the file can be opened again.
            *db = None;
            match Database::create(&self.path) {
                Ok(fresh) => {
                    *db = Some(fresh);
                    tracing::warn!(target: "postern/master", "warning: {}: settings store reopened after a write error", self.path.display());
                }
                Err(e) => {
                    self.broken.store(true, Ordering::SeqCst);
                    return Err(db_err(format!("cannot reopen after a write error: {e}")));
                }
            }
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            self.broken.store(true, Ordering::SeqCst);
            return Err(db_err("the store is being reopened"));
        }
        Ok(OpenDb(db))
    }

    /// A write's result: a failure marks the store for reopening.
    fn wrote<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// Keep `n` audit entries (at least one).
    pub fn keep_history(&mut self, n: usize) {
        self.history_keep = n.max(1) as u64;
    }

    pub fn load(&self) -> Result<Option<Settings>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(db_err)?;
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
        self.record(previous, new, &Record::by(actor))
    }

    /// As `save`, with the certificate changes the entry names and the certificate row
    /// stored or deleted in the same transaction: a certificate never changes unaudited.
    pub fn record(
        &self,
        previous: Option<&Settings>,
        new: &Settings,
        record: &Record<'_>,
    ) -> Result<u64, StoreError> {
        let saved = self.save_once(previous, new, record);
        self.wrote(saved)
    }

    fn save_once(
        &self,
        previous: Option<&Settings>,
        new: &Settings,
        record: &Record<'_>,
    ) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(db_err)?;
        let seq = {
            let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
            let seq = audit
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            let entry = record.entry(seq, previous, new);
            audit
                .insert(seq, serde_json::to_vec(&entry)?.as_slice())
                .map_err(db_err)?;
            // Bounded history: ten large documents once grew the store eightfold.
            if seq > self.history_keep {
                audit
                    .retain_in(..=seq - self.history_keep, |_, _| false)
                    .map_err(db_err)?;
            }
            let mut current = txn.open_table(CURRENT).map_err(db_err)?;
            current
                .insert(KEY, serde_json::to_vec(new)?.as_slice())
                .map_err(db_err)?;
            let mut certs = txn.open_table(CERTS).map_err(db_err)?;
            match record.row {
                Some(CertRow::Put(cert)) => {
                    certs
                        .insert(cert.name.as_str(), serde_json::to_vec(cert)?.as_slice())
                        .map_err(db_err)?;
                }
                Some(CertRow::Delete(name)) => {
                    certs.remove(name).map_err(db_err)?;
                }
                None => {}
            }
            seq
        };
        txn.commit().map_err(db_err)?;
        self.write_last_good(new);
        Ok(seq)
    }

    /// The copy outside the store, written whole and renamed into place; a failure is
    /// logged, never fatal (the store itself is the truth).
    fn write_last_good(&self, settings: &Settings) {
        let written = serde_json::to_vec_pretty(settings)
            .map_err(std::io::Error::other)
            .and_then(|bytes| self.replace_last_good(&bytes));
        if let Err(e) = written {
            tracing::warn!(target: "postern/master", "warning: {}: cannot write the copy of the settings: {e}", self.last_good.display());
        }
    }

    fn replace_last_good(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.last_good.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        crate::fsutil::write_secret(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.last_good)
    }

    /// At start-up, the copy as the settings in force: a crash between the store's commit
    /// and the copy's rename leaves it a version behind (or missing), and the copy is what
    /// `--restore-settings` would be given on the day the store is lost.
    pub fn refresh_last_good(&self, settings: &Settings) {
        let Ok(bytes) = serde_json::to_vec_pretty(settings) else {
            return self.write_last_good(settings);
        };
        if std::fs::read(&self.last_good).is_ok_and(|kept| kept == bytes) {
            return;
        }
        match self.replace_last_good(&bytes) {
            Ok(()) => {
                tracing::info!(target: "postern/master", "{}: the copy of the settings differed from the store; rewritten", self.last_good.display())
            }
            Err(e) => {
                tracing::warn!(target: "postern/master", "warning: {}: cannot write the copy of the settings: {e}", self.last_good.display())
            }
        }
    }

    pub fn certificates(&self) -> Result<Vec<StoredCert>, StoreError> {
        self.rows(CERTS)
    }

    pub fn admin_users(&self) -> Result<Vec<super::AdminUser>, StoreError> {
        self.rows(ADMINS)
    }

    /// Insert or replace, durably.
    pub fn put_admin_user(&self, user: &super::AdminUser) -> Result<(), StoreError> {
        let put = self.put_row(ADMINS, &user.name, user);
        self.wrote(put)
    }

    /// Every row of a JSON-valued table; none when the table was never written.
    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(db_err)?;
        let table = match txn.open_table(table) {
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

    fn put_row<T: serde::Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(table)
            .map_err(db_err)?
            .insert(key, serde_json::to_vec(value)?.as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(db_err)?;
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

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_a_copy_is_kept_outside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut store = Store::open(&path).unwrap();
        store.keep_history(3);
        let mut s = Settings::default();
        for n in 0..10 {
            s.trusted_networks = vec![format!("10.0.{n}.0/24").parse().unwrap()];
            store.save(None, &s, "test").unwrap();
        }
        let audit = store.audit(100).unwrap();
        assert_eq!(
            audit.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![10, 9, 8]
        );
        let copy: Settings =
            serde_json::from_slice(&std::fs::read(last_good_path(&path)).unwrap()).unwrap();
        assert_eq!(copy, s);
    }

    #[test]
    fn garbage_is_damaged_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        match Store::open(&path) {
            Err(StoreError::Damaged { path: p, .. }) => assert!(p.ends_with("s.redb")),
            Err(other) => panic!("expected Damaged, got {other}"),
            Ok(_) => panic!("garbage opened as a store"),
        }
    }
}
