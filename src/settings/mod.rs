//! Runtime settings: the document, the redb store with its audit log, and the live snapshot
//! (ArcSwap) that every session and delivery attempt reads once.

mod admins;
mod backend;
mod cert_record;
pub mod certificates;
mod chain;
mod diff;
mod document;
pub mod nodes;
mod pg_conn;
mod pg_head;
pub mod pg_tls;
pub mod postgres;
mod sealer;
mod secret;
mod snapshot;
mod store;
mod validate;
pub mod words;

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use admins::{AdminUser, FIRST_ADMIN, INITIAL_PASSWORD_FILE};
pub use diff::{FieldChange, SECTIONS, SectionChange, diff, fields};
pub use document::{
    AdminSettings, AuthUser, AuthUserDoc, Direction, InboundLevel, InboundSettings, InboundTlsRow,
    M365Settings, MessageRule, NextHop, OnFailure, OutboundSettings, PolicyRow, RelayAuth,
    RelayDomain, RuleData, RuleTls, Settings, SettingsDoc, TlsMode, is_domain_name,
};
pub use secret::Secret;
pub use snapshot::{CompiledRule, Snapshot};
use store::Record;
pub use store::{AuditEntry, Store, StoreError, last_good_path};
pub(crate) use validate::field_error;
pub use validate::{
    FieldError, InboundTarget, PasswordHasher, inbound_target, min_bits_out_of_range,
};

/// Why a replacement was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A confirmation showed what a change would do against version `shown`; the settings
    /// have changed since, so it would do something else.
    #[error(
        "the settings changed since this was shown (version {shown} then, {now} now): look at what it changes again"
    )]
    Changed { shown: u64, now: u64 },
}

/// Whether `SettingsHandle::change` stores what it validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Yes,
    /// A dry run: validate and report, store nothing.
    No,
}

/// A validated change: the snapshot now in force and what changed, by section.
pub struct Changed {
    pub snapshot: Arc<Snapshot>,
    pub changes: Vec<SectionChange>,
}

/// The one owner of settings: the store and the live snapshot, changed together.
#[derive(Clone)]
pub struct SettingsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn backend::Backend>,
    live: ArcSwap<Snapshot>,
    /// Serialises writers so validation sees the settings it replaces.
    write: Mutex<()>,
    /// The version in force, for whoever acts on a change (certificate bindings), local or
    /// made on another node.
    changed: tokio::sync::watch::Sender<u64>,
    /// A shared database's reachability; `None` for the embedded store.
    shared: Option<Arc<postgres::Health>>,
    /// The system certificate's facts, for the audit entries that bind it (set by `certs`).
    system: std::sync::OnceLock<certificates::CertId>,
}

/// How start-up treats the settings store.
#[derive(Debug, Clone, Default)]
pub enum StartMode {
    /// Load it; a store that existed before and is now missing or empty is refused.
    #[default]
    Normal,
    /// Start from the defaults on purpose (`--reset-settings`).
    Reset,
    /// Seed an empty store from a copy (`--restore-settings FILE`, e.g. the last-good copy).
    Restore(std::path::PathBuf),
}

/// The settings a node starts with, and their audit number, as `mode` says: the stored
/// ones, the defaults (first start, `--reset-settings`) or a saved copy
/// (`--restore-settings`). A store that was used before (`seen`) and is now empty is an
/// error (`missing`), never a silent first start.
fn start_settings(
    store: &mut Store,
    path: &Path,
    mode: &StartMode,
    seen: bool,
    missing: impl Fn() -> StoreError,
) -> Result<(Settings, u64), StoreError> {
    let found = match (store.load()?, mode) {
        (Some(_), StartMode::Restore(from)) => {
            return Err(StoreError::Db(format!(
                "{}: --restore-settings {}: the store already holds settings; move it aside first",
                path.display(),
                from.display()
            )));
        }
        (Some(s), StartMode::Normal) => {
            let version = store.audit(1)?.first().map(|e| e.seq).unwrap_or(0);
            store.refresh_last_good(&s);
            (s, version)
        }
        (None, StartMode::Normal) if seen => return Err(missing()),
        (current, StartMode::Reset) => {
            tracing::warn!(target: "postern/master", "warning: {}: settings reset to the defaults (--reset-settings)", path.display());
            let s = Settings::default();
            let seq = store.save(current.as_ref(), &s, "reset at start-up")?;
            (s, seq)
        }
        (None, StartMode::Restore(from)) => {
            let bytes = std::fs::read(from)
                .map_err(|e| StoreError::Db(format!("{}: cannot read: {e}", from.display())))?;
            let s: Settings = serde_json::from_slice(&bytes)?;
            tracing::warn!(target: "postern/master", "warning: {}: settings restored from {}", path.display(), from.display());
            let seq = store.save(None, &s, "restored at start-up")?;
            (s, seq)
        }
        (None, StartMode::Normal) => {
            let s = Settings::default();
            let seq = store.save(None, &s, "first start")?;
            (s, seq)
        }
    };
    Ok(found)
}

/// `<store>.seen`: written once a store has been used, so a vanished one is noticed.
fn marker_path(path: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.seen", path.display()))
}

impl SettingsHandle {
    /// Open the store at `path`; on first start seed it with the defaults.
    pub fn open(path: &Path) -> Result<SettingsHandle, StoreError> {
        SettingsHandle::open_with(path, StartMode::Normal, 200)
    }

    /// Open the store as `mode` says, keeping `history_keep` audit entries.
    pub fn open_with(
        path: &Path,
        mode: StartMode,
        history_keep: usize,
    ) -> Result<SettingsHandle, StoreError> {
        let marker = marker_path(path);
        let seen = marker.exists();
        let missing = || StoreError::Missing {
            path: path.display().to_string(),
            marker: marker.display().to_string(),
            last_good: store::last_good_path(path).display().to_string(),
        };
        let absent = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        if seen && absent && matches!(mode, StartMode::Normal) {
            return Err(missing());
        }
        let mut store = Store::open(path)?;
        store.keep_history(history_keep);
        let (settings, version) = start_settings(&mut store, path, &mode, seen, missing)?;
        if !seen {
            crate::fsutil::write_secret(&marker, format!("{}\n", path.display()).as_bytes())
                .map_err(|e| StoreError::Db(format!("{}: {e}", marker.display())))?;
        }
        Ok(SettingsHandle::over(
            Box::new(store),
            (settings, version),
            None,
        ))
    }

    /// Settings on PostgreSQL, shared with the other nodes (see `postgres`): the document
    /// stored there, or on first use the defaults stored there. With the database away at
    /// start, the copy this node kept of what it last applied (`cache`); without one, an
    /// error: never the defaults.
    pub fn open_postgres(
        url: &str,
        sealer: postgres::Sealer,
        cache: std::path::PathBuf,
        (history_keep, tls): (usize, Arc<rustls::ClientConfig>),
    ) -> Result<(SettingsHandle, Arc<postgres::Health>), StoreError> {
        let store = postgres::PgStore::new(url, sealer, (history_keep, tls.clone()), cache.clone());
        let health = store.health();
        let (settings, version) = match store.ensure_schema().and_then(|()| store.current()) {
            Ok(Some(current)) => current,
            Ok(None) => {
                use backend::Backend;
                let s = Settings::default();
                let seq = store.save(Some(0), None, &s, &Record::by("first start"))?;
                (s, seq)
            }
            Err(e) => {
                let Some(kept) = store.remembered() else {
                    return Err(StoreError::Db(format!(
                        "{e}; and this node has no copy of the settings it last applied ({}): refusing to start on defaults",
                        cache.display()
                    )));
                };
                tracing::warn!(target: "postern/master", "warning: {e}: starting on the settings this node last applied (version {})", kept.1);
                *health.down.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                kept
            }
        };
        let handle =
            SettingsHandle::over(Box::new(store), (settings, version), Some(health.clone()));
        postgres::follow(
            Arc::downgrade(&handle.inner),
            (url.to_string(), tls),
            health.clone(),
        );
        Ok((handle, health))
    }

    /// A newer version from the shared store, applied here (the follower's step).
    fn catch_up(inner: &Inner) -> Result<(), StoreError> {
        let _guard = inner.write.lock().unwrap_or_else(|e| e.into_inner());
        let version = inner.live.load().version;
        if let Some((settings, seq)) = inner.store.newer(version)? {
            inner.live.store(Arc::new(Snapshot::new(settings, seq)));
            inner.changed.send_replace(seq);
            tracing::info!(target: "postern/master", "settings version {seq} applied (changed on another node)");
        }
        Ok(())
    }

    /// A handle over `store`, with `settings` at `version` in force.
    fn over(
        store: Box<dyn backend::Backend>,
        (settings, version): (Settings, u64),
        shared: Option<Arc<postgres::Health>>,
    ) -> SettingsHandle {
        SettingsHandle {
            inner: Arc::new(Inner {
                store,
                live: ArcSwap::from_pointee(Snapshot::new(settings, version)),
                write: Mutex::new(()),
                changed: tokio::sync::watch::Sender::new(version),
                shared,
                system: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Why the shared settings database cannot be reached now; `None` while it can, and
    /// always for the embedded store.
    pub fn shared_database_down(&self) -> Option<String> {
        let health = self.inner.shared.as_ref()?;
        health
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What this node refuses of what the shared settings database holds (rows written back
    /// without the key), in one line; `None` when nothing is, and always for the embedded store.
    pub fn shared_settings_refused(&self) -> Option<String> {
        self.inner.shared.as_ref()?.refused()
    }

    /// Whether settings live in a database the nodes share.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// The version in force, changing with every change applied here.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The snapshot in force now; keep it for the whole session or attempt.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.live.load_full()
    }

    /// Validate `doc` whole, store it with its audit record, then swap the live snapshot.
    /// On any error nothing changes. Blocking (hashing, fsync): call from a blocking task.
    pub fn replace(
        &self,
        doc: &SettingsDoc,
        actor: &str,
        hasher: &dyn PasswordHasher,
    ) -> Result<Arc<Snapshot>, ReplaceError> {
        let changed = self.change(
            |_| Ok::<_, ReplaceError>(doc.clone()),
            actor,
            hasher,
            Apply::Yes,
        )?;
        Ok(changed.snapshot)
    }

    /// Build the new document from the settings in force (`build`, under the writers' lock, so
    /// a change of some sections never loses a concurrent change of others), validate it
    /// whole, and with `Apply::Yes` store and swap it. Returns what changed by section; with
    /// `Apply::No` (a dry run) nothing is stored, and the snapshot is the one the change would
    /// make (with the version in force), for a caller that asks what it would decide.
    pub fn change<E: From<ReplaceError>>(
        &self,
        build: impl FnOnce(&Settings) -> Result<SettingsDoc, E>,
        actor: &str,
        hasher: &dyn PasswordHasher,
        apply: Apply,
    ) -> Result<Changed, E> {
        // A poisoned lock only means another writer panicked; the store is still consistent.
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        let doc = build(&old.settings)?;
        let new = old
            .settings
            .apply(&doc, hasher)
            .map_err(|e| ReplaceError::from(e.labelled(&words::doc_names(&doc))))?;
        let certificates = self
            .inner
            .store
            .certificates()
            .map_err(ReplaceError::from)?;
        certificates::check_bindings(&new, &certificates)
            .map_err(|e| ReplaceError::from(e.labelled(&words::settings_names(&new))))?;
        let changes = diff(&old.settings, &new);
        if matches!(apply, Apply::No) {
            return Ok(Changed {
                snapshot: Arc::new(Snapshot::new(new, old.version)),
                changes,
            });
        }
        let record = Record {
            certificates: self.binding_changes(&old.settings, &new, &certificates),
            ..Record::by(actor)
        };
        let snapshot = self
            .commit(&old, new, &record)
            .map_err(ReplaceError::from)?;
        Ok(Changed { snapshot, changes })
    }

    /// Store `new` as the version after `old` with its audit record, then put it in force.
    /// Under the writers' lock, which the caller holds.
    fn commit(
        &self,
        old: &Snapshot,
        new: Settings,
        record: &Record<'_>,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let version =
            self.inner
                .store
                .save(Some(old.version), Some(&old.settings), &new, record)?;
        let snapshot = Arc::new(Snapshot::new(new, version));
        self.inner.live.store(snapshot.clone());
        self.inner.changed.send_replace(version);
        Ok(snapshot)
    }

    /// Restore the settings the last change replaced, as a change of its own (audited, so a
    /// rollback can itself be rolled back). `None` when there is nothing to go back to.
    pub fn rollback(&self, actor: &str) -> Result<Option<Arc<Snapshot>>, ReplaceError> {
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        // The last version that changed the settings: a certificate imported since is a
        // version of its own, with the settings as they were.
        let Some(previous) = self
            .inner
            .store
            .audit(usize::MAX)?
            .into_iter()
            .find(|e| e.previous.as_ref() != Some(&e.new))
            .and_then(|e| e.previous)
        else {
            return Ok(None);
        };
        self.put_back(previous, actor).map(Some)
    }

    /// Make the settings of audit version `version` the ones in force again, as a change of
    /// its own. `None` when the audit log no longer holds that version. `shown`: the version
    /// in force when the admin was shown what the restore changes; refused if it moved on.
    pub fn restore(
        &self,
        version: u64,
        actor: &str,
        shown: Option<u64>,
    ) -> Result<Option<Arc<Snapshot>>, ReplaceError> {
        let _guard = self.inner.write.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.current().version;
        if let Some(shown) = shown.filter(|s| *s != now) {
            return Err(ReplaceError::Changed { shown, now });
        }
        let Some(entry) = self
            .inner
            .store
            .audit(usize::MAX)?
            .into_iter()
            .find(|e| e.seq == version)
        else {
            return Ok(None);
        };
        self.put_back(entry.new, actor).map(Some)
    }

    /// What restoring version `version` would change, without changing anything: the
    /// settings in force, those of that version, and the certificate bindings it would make
    /// and undo. `None` when the audit log no longer holds that version.
    pub fn restore_plan(&self, version: u64) -> Result<Option<RestorePlan>, StoreError> {
        let Some(entry) = self
            .inner
            .store
            .audit(usize::MAX)?
            .into_iter()
            .find(|e| e.seq == version)
        else {
            return Ok(None);
        };
        let current = self.current();
        let stored = self.inner.store.certificates()?;
        let certificates = self.binding_changes(&current.settings, &entry.new, &stored);
        let missing = certificates::missing(&entry.new, &stored);
        Ok(Some(RestorePlan {
            current,
            target: entry.new,
            certificates,
            missing,
        }))
    }

    /// Stored settings back in force (their hashes and secrets as they were): under the
    /// writers' lock, which the caller holds.
    fn put_back(&self, settings: Settings, actor: &str) -> Result<Arc<Snapshot>, ReplaceError> {
        // A certificate the old version bound may have been deleted since.
        let stored = self.inner.store.certificates()?;
        certificates::check_bindings(&settings, &stored)
            .map_err(|e| e.labelled(&words::settings_names(&settings)))?;
        let current = self.current();
        let record = Record {
            certificates: self.binding_changes(&current.settings, &settings, &stored),
            ..Record::by(actor)
        };
        Ok(self.commit(&current, settings, &record)?)
    }

    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.store.audit(limit)
    }

    pub fn certificates(&self) -> Result<Vec<certificates::StoredCert>, StoreError> {
        self.inner.store.certificates()
    }
}

/// What a restore would change: shown before it applies.
pub struct RestorePlan {
    /// The settings in force now, with their version.
    pub current: Arc<Snapshot>,
    /// The settings of the version to restore.
    pub target: Settings,
    /// The certificate bindings it makes and undoes.
    pub certificates: Vec<certificates::CertChange>,
    /// Certificates it binds that are no longer stored, with where: the restore is refused.
    pub missing: Vec<(String, String)>,
}

/// argon2id at 8 MiB and 2 passes (within OWASP's argon2id range; a few ms of one core):
/// AUTH is offered to anyone who can connect, so one check must stay cheap in memory and
/// time. Hashes made with other parameters still verify with their own.
pub struct Argon2Hasher;

fn argon2id() -> argon2::Argon2<'static> {
    // Constant parameters inside argon2's documented bounds.
    let params = argon2::Params::new(8 * 1024, 2, 1, None)
        .expect("8 MiB, 2 passes, 1 lane are valid argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

impl PasswordHasher for Argon2Hasher {
    fn hash(&self, password: &str) -> Result<String, String> {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2id()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash password: {e}"))
    }
}

/// Check a password against a stored PHC string. Blocking (tens of milliseconds).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(hash.algorithm),
        argon2::Params::try_from(&hash),
    ) else {
        return false;
    };
    let version = hash
        .version
        .map_or(Ok(argon2::Version::default()), argon2::Version::try_from);
    let Ok(version) = version else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let hasher = argon2::Argon2::new(algorithm, version, params);
    // The blocks are this thread's, kept between checks: no 8 MiB allocation per attempt,
    // which the allocator kept per thread and per arena (hundreds of MiB under a guessing
    // attack), only one buffer per password-check thread.
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        hasher
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .is_ok()
            // Output's comparison is constant-time.
            && Output::new(&out).is_ok_and(|computed| computed == expected)
    })
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn verify_with_our_parameters_and_with_older_ones() {
        let ours = Argon2Hasher.hash("correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=8192,t=2,p=1$"), "{ours}");
        assert!(verify_password("correct horse", &ours));
        assert!(!verify_password("correct horsf", &ours));
        // A hash stored before (the crate's defaults, 19 MiB) still verifies.
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let older = argon2::Argon2::default()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", &older));
        assert!(!verify_password("wrong", &older));
        assert!(
            verify_password("correct horse", &ours),
            "after a larger buffer"
        );
        assert!(!verify_password("x", "not a PHC string"));
    }
}
