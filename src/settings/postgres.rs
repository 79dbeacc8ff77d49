//! Settings on PostgreSQL, shared by several gateway nodes (`[settings] database =
//! "postgres://..."`). The same document, versions and audit log as the embedded store, as
//! tables; every row's content is sealed (AES-256-GCM, the key from the config or
//! `POSTERN_SETTINGS_KEY`), so relay passwords, password hashes and private keys are never in
//! the database in the clear. A save notifies the other nodes (`NOTIFY postern_settings`);
//! each follows with `LISTEN` and checks the version every second in case a notification
//! was missed. A node whose database is away keeps the settings it last applied, refuses
//! changes, and says so; it never starts on defaults. The rows hang together in a chain
//! (`chain.rs`, `pg_head.rs`), so an old sealed row written back by somebody without the key
//! is refused, not applied.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::cert_record::StoredCert;
use super::chain::{self, AuditRecord, Trusted};
use super::pg_conn::connect;
use super::pg_head::{ADMINS, CERTS, Ctx, Fail};
use super::store::{AuditEntry, CertRow, Record, StoreError};
use super::{AdminUser, Settings};

pub use super::pg_conn::{DbThread, create_schema, describe};
pub use super::pg_head::Health;
pub use super::sealer::Sealer;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS postern_settings_audit (
    seq BIGINT PRIMARY KEY,
    unix_time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    sealed BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS postern_settings_current (
    id INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    sealed BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS postern_certificates (name TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS postern_admin_users (name TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
";

/// How often a follower checks the version without a notification.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct PgStore {
    ctx: Ctx,
    db: DbThread,
    history_keep: u64,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl PgStore {
    /// Not connected yet: `ensure_schema` connects. `cache`: this node's copy of the settings
    /// it last applied (0600), to start on when the database is away, with the head it holds.
    pub fn new(
        url: &str,
        sealer: Sealer,
        (history_keep, tls): (usize, Arc<rustls::ClientConfig>),
        cache: std::path::PathBuf,
    ) -> PgStore {
        PgStore {
            ctx: Ctx::new(sealer, cache),
            db: DbThread::new(url, "settings-db", tls),
            history_keep: history_keep.max(1) as u64,
        }
    }

    pub fn health(&self) -> Arc<Health> {
        self.ctx.health.clone()
    }

    /// Connect, create the tables if they are missing, and re-seal a database sealed before
    /// the chain (`Ctx::upgrade`).
    pub fn ensure_schema(&self) -> Result<(), StoreError> {
        self.job(|c| Ok(create_schema(c, SCHEMA)?))?;
        let ctx = self.ctx.clone();
        self.job(move |c| ctx.upgrade(c))
    }

    /// The settings and version this node holds after a look at the database: what it
    /// stores now, unless refused (then what this node held, and the refusal is said).
    pub fn current(&self) -> Result<Option<(Settings, u64)>, StoreError> {
        let held = self.read(|_, _, held| Ok(held.cloned()))?;
        Ok(held.map(|t| (t.head.settings, t.head.version)))
    }

    /// What this node's copy holds, to start on while the database is away.
    pub fn remembered(&self) -> Option<(Settings, u64)> {
        self.ctx.remembered()
    }

    /// Run `f` on the connection, opening it first if needed; a connection or SQL error
    /// drops it, so the next call reconnects.
    fn job<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut postgres::Client) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StoreError> {
        let result = self.db.with(move |c| match f(c) {
            Ok(v) => Ok(Ok(v)),
            Err(Fail::Pg(e)) => Err(e),
            Err(Fail::Store(e)) => Ok(Err(e)),
        });
        result.map_err(unreachable)?
    }

    /// In one read-only snapshot: the head looked at (`Ctx::look`), then `f` with the head
    /// held, which the other rows are checked against.
    fn read<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&Ctx, &mut postgres::Transaction<'_>, Option<&Trusted>) -> Result<T, Fail>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let ctx = self.ctx.clone();
        self.job(move |c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let held = ctx.look(&mut tx)?;
            let out = f(&ctx, &mut tx, held.as_deref())?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn rows<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.read(move |ctx, tx, held| ctx.rows(tx, table, held))
    }

    /// Store a row of `table` (an admin user), and a head one generation on that names it as
    /// it is now: in one transaction, under the head's lock. Certificate rows are stored with
    /// a version of their own (`write_version`): they are audited.
    fn put_row(&self, table: &'static str, name: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        let ctx = self.ctx.clone();
        let name = name.to_string();
        self.job(move |c| {
            let mut tx = c.transaction()?;
            let Some(prev) = ctx.lock_head(&mut tx)? else {
                return Err(
                    StoreError::Db("the settings database holds no settings yet".into()).into(),
                );
            };
            let mut head = chain::next(
                Some((&prev.head, &prev.digest)),
                prev.head.version,
                prev.head.settings.clone(),
            );
            write_row(&mut tx, &mut head.links, table, &name, Some(&sealed))?;
            let stored = ctx.store_head(&mut tx, head)?;
            tx.commit()?;
            ctx.adopt(stored);
            Ok(())
        })
    }

    fn seal_row<T: serde::Serialize>(
        &self,
        table: &str,
        name: &str,
        v: &T,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .ctx
            .sealer
            .seal(&format!("{table}/{name}"), &serde_json::to_vec(v)?))
    }
}

impl super::backend::Backend for PgStore {
    /// The follower's look, each second and at each notification: the head, and every
    /// admin-user and certificate row by its digest, so what is put back is refused (and
    /// said) at once, not at its next use.
    fn newer(&self, than: u64) -> Result<Option<(Settings, u64)>, StoreError> {
        self.read(move |ctx, tx, held| {
            ctx.checked(tx, ADMINS, held, false)?;
            ctx.checked(tx, CERTS, held, false)?;
            Ok(held
                .filter(|t| t.head.version > than)
                .map(|t| (t.head.settings.clone(), t.head.version)))
        })
    }

    fn save(
        &self,
        expected: Option<u64>,
        previous: Option<&Settings>,
        new: &Settings,
        record: &Record<'_>,
    ) -> Result<u64, StoreError> {
        let entry = record.entry(0, previous, new);
        // Sealed before the job: the certificate row, stored or deleted with the version.
        let row = match record.row {
            Some(CertRow::Put(cert)) => Some((
                cert.name.clone(),
                Some(self.seal_row(CERTS, &cert.name, cert)?),
            )),
            Some(CertRow::Delete(name)) => Some((name.to_string(), None)),
            None => None,
        };
        let keep = self.history_keep;
        let ctx = self.ctx.clone();
        let saved = self.job(move |c| {
            let mut tx = c.transaction()?;
            let version = write_version(&ctx, &mut tx, (expected, keep), &entry, row.as_ref())?;
            if version.is_ok() {
                tx.commit()?;
            }
            Ok(version.map(|(stored, seq)| {
                ctx.adopt(stored);
                seq
            }))
        })?;
        saved.map_err(StoreError::Conflict)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |ctx, tx, held| ctx.audit(tx, held, limit))
    }

    fn certificates(&self) -> Result<Vec<StoredCert>, StoreError> {
        self.rows(CERTS)
    }

    fn admin_users(&self) -> Result<Vec<AdminUser>, StoreError> {
        self.rows(ADMINS)
    }

    fn put_admin_user(&self, user: &AdminUser) -> Result<(), StoreError> {
        let sealed = self.seal_row(ADMINS, &user.name, user)?;
        self.put_row(ADMINS, &user.name, sealed)
    }
}

/// In `tx`, under the head's lock: audit entry `entry` as the next version, the certificate
/// row `row` stored (`Some` sealed bytes) or deleted, and the head one generation on naming
/// both. `Err(version stored)`: not written, as another node changed the settings first (or
/// deleted the row), and the caller rolls back.
fn write_version(
    ctx: &Ctx,
    tx: &mut postgres::Transaction<'_>,
    (expected, keep): (Option<u64>, u64),
    entry: &AuditEntry,
    row: Option<&(String, Option<Vec<u8>>)>,
) -> Result<Result<(Trusted, u64), u64>, Fail> {
    // The row lock orders writers of every node; a head put back refuses the save.
    let prev = ctx.lock_head(tx)?;
    let stored = prev.as_ref().map_or(0, |t| t.head.version);
    if expected.is_some_and(|e| e != stored) {
        return Ok(Err(stored));
    }
    let seq = stored + 1;
    let record = AuditRecord {
        entry: AuditEntry {
            seq,
            ..entry.clone()
        },
        chain: prev
            .as_ref()
            .map(|t| t.head.links.audit.clone())
            .unwrap_or_default(),
    };
    let audit = ctx
        .sealer
        .seal(&format!("audit/{seq}"), &serde_json::to_vec(&record)?);
    tx.execute(
        "INSERT INTO postern_settings_audit (seq, unix_time, actor, sealed) VALUES ($1, $2, $3, $4)",
        &[&(seq as i64), &(record.entry.unix_time as i64), &record.entry.actor, &audit],
    )?;
    tx.execute(
        "DELETE FROM postern_settings_audit WHERE seq <= $1",
        &[&(seq as i64 - keep as i64)],
    )?;
    let prev = prev.as_ref().map(|t| (&t.head, t.digest.as_str()));
    let mut head = chain::next(prev, seq, entry.new.clone());
    head.links.audit = chain::digest(&audit);
    if let Some((name, sealed)) = row
        && !write_row(tx, &mut head.links, CERTS, name, sealed.as_deref())?
    {
        return Ok(Err(stored));
    }
    Ok(Ok((ctx.store_head(tx, head)?, seq)))
}

/// Store (`Some`) or delete the row `name` of `table` in `tx`, and name it in `links` as it is
/// now. False: no such row to delete.
fn write_row(
    tx: &mut postgres::Transaction<'_>,
    links: &mut chain::Links,
    table: &str,
    name: &str,
    sealed: Option<&[u8]>,
) -> Result<bool, Fail> {
    let key = format!("{table}/{name}");
    match sealed {
        Some(sealed) => {
            let sql = format!(
                "INSERT INTO {table} (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed"
            );
            tx.execute(&sql, &[&name, &sealed])?;
            links.rows.insert(key, chain::digest(sealed));
        }
        None => {
            let sql = format!("DELETE FROM {table} WHERE name = $1");
            if tx.execute(&sql, &[&name])? == 0 {
                return Ok(false);
            }
            links.rows.remove(&key);
        }
    }
    Ok(true)
}

/// Follow the other nodes' changes until `handle` is gone: `LISTEN`, and the version checked
/// every second, so a missed notification costs at most a second. A database that goes
/// away is said once, and again when it is back.
pub(super) fn follow(
    handle: Weak<super::Inner>,
    (url, tls): (String, Arc<rustls::ClientConfig>),
    health: Arc<Health>,
) {
    std::thread::Builder::new()
        .name("settings-follow".into())
        .spawn(move || {
            let mut listening: Option<postgres::Client> = None;
            loop {
                let Some(inner) = handle.upgrade() else { return };
                let result = follow_once(&inner, (&url, &tls), &mut listening, &health);
                drop(inner);
                note_health(&health, result.err());
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(target: "postern/master", "error: cannot follow the settings database: {e}"));
}

/// Wait up to `CHECK_EVERY` for a notification, then apply a newer version if there is one.
fn follow_once(
    inner: &super::Inner,
    (url, tls): (&str, &Arc<rustls::ClientConfig>),
    listening: &mut Option<postgres::Client>,
    health: &Health,
) -> Result<(), String> {
    if listening.as_ref().is_none_or(|c| c.is_closed()) {
        let mut c = connect(url, tls).map_err(|e| e.to_string())?;
        c.batch_execute("LISTEN postern_settings")
            .map_err(|e| e.to_string())?;
        *listening = Some(c);
        // Reachable again: said at once, not after the next wait.
        note_health(health, None);
        // What changed while this node was not listening.
        super::SettingsHandle::catch_up(inner).map_err(|e| e.to_string())?;
    }
    let Some(client) = listening.as_mut() else {
        return Ok(());
    };
    use postgres::fallible_iterator::FallibleIterator;
    let waited = client.notifications().timeout_iter(CHECK_EVERY).next();
    if let Err(e) = waited {
        *listening = None;
        return Err(e.to_string());
    }
    super::SettingsHandle::catch_up(inner).map_err(|e| e.to_string())
}

fn note_health(health: &Health, error: Option<String>) {
    let mut down = health.down.lock().unwrap_or_else(|e| e.into_inner());
    match (&*down, error) {
        (None, Some(e)) => {
            tracing::warn!(target: "postern/master", "warning: settings database unreachable ({e}): relaying on the settings in force; changes are refused until it is back");
            *down = Some(e);
        }
        (Some(_), None) => {
            tracing::info!(target: "postern/master", "settings database reachable again: following its changes");
            *down = None;
        }
        _ => {}
    }
}
