//! Settings on PostgreSQL, shared by several gateway nodes (`[settings] database =
//! "postgres://..."`). The same document, versions and audit log as the embedded store, as
//! tables; every row's content is sealed (AES-256-GCM, the key from the config or
//! `POSTERN_SETTINGS_KEY`), so relay passwords, password hashes and private keys are never in
//! the database in the clear. A save notifies the other nodes (`NOTIFY postern_settings`);
//! each follows with `LISTEN` and checks the version every second in case a notification
//! was missed. A node whose database is away keeps the settings it last applied, refuses
//! changes, and says so; it never starts on defaults.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::certificates::StoredCert;
use super::store::{AuditEntry, StoreError};
use super::{AdminUser, Settings};

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

/// The settings key: 32 bytes, given as 64 hex digits.
pub struct Sealer {
    key: LessSafeKey,
    /// The same key for HMAC: the nodes' credential between their control APIs is derived
    /// from it (`cluster_token`), so there is no second secret to hand out.
    mac: aws_lc_rs::hmac::Key,
}

impl Sealer {
    pub fn from_hex(hex: &str) -> Result<Sealer, String> {
        let hex = hex.trim();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<_>>()
            .filter(|b: &Vec<u8>| b.len() == 32 && hex.len() == 64)
            .ok_or("the settings key must be 64 hex digits (32 bytes)")?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "bad settings key")?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            mac: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The bearer token one node shows another's control API: HMAC-SHA256 of a fixed label
    /// under the settings key, in hex. Every node holding the key derives the same one; the
    /// database never sees it.
    pub fn cluster_token(&self) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.mac, b"postern cluster control API v1");
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Nonce, then ciphertext and tag; `what` (the row's key) is authenticated with it, so a
    /// sealed row cannot be moved to another.
    pub(crate) fn seal(&self, what: &str, plain: &[u8]) -> Vec<u8> {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = plain.to_vec();
        // Sealing into a Vec cannot fail for inputs under the 64 GiB AES-GCM limit.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(what.as_bytes()),
            &mut data,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        out
    }

    pub(crate) fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let fail = || StoreError::Db(format!("{what}: cannot be opened with this settings key"));
        let (nonce, data) = sealed.split_at_checked(NONCE_LEN).ok_or_else(fail)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut data)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// One database operation, run on the connection's own thread.
type Job = Box<dyn FnOnce(&mut Option<postgres::Client>) + Send>;

/// One PostgreSQL connection on a thread of its own: the synchronous client runs its own
/// runtime, which may not be entered from an async worker (start-up runs on one). Each call
/// waits for its job; a failed job drops the connection, so the next one reconnects.
pub struct DbThread {
    url: String,
    tls: Arc<rustls::ClientConfig>,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

impl DbThread {
    pub fn new(url: &str, name: &str, tls: Arc<rustls::ClientConfig>) -> DbThread {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut client = None;
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(target: "postern/master", "error: cannot start the {name} thread: {e}");
        }
        DbThread {
            url: url.to_string(),
            tls,
            jobs: Mutex::new(tx),
        }
    }

    /// Run `f` on the connection, connecting first if needed.
    pub fn with<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (url, tls) = (self.url.clone(), self.tls.clone());
        let job: Job = Box::new(move |slot: &mut Option<postgres::Client>| {
            let _ = done.send(run_job(slot, (&url, &tls), f));
        });
        let stopped = || "the database thread has stopped".to_string();
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| stopped())?;
        result.recv().map_err(|_| stopped())?
    }
}

pub struct PgStore {
    sealer: Arc<Sealer>,
    db: DbThread,
    history_keep: u64,
    /// This node's copy of the settings it last applied (0600), to start on when the
    /// database is away.
    cache: std::path::PathBuf,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

impl PgStore {
    /// Not connected yet: `ensure_schema` connects.
    pub fn new(
        url: &str,
        sealer: Sealer,
        (history_keep, tls): (usize, Arc<rustls::ClientConfig>),
        cache: std::path::PathBuf,
    ) -> PgStore {
        PgStore {
            sealer: Arc::new(sealer),
            db: DbThread::new(url, "settings-db", tls),
            history_keep: history_keep.max(1) as u64,
            cache,
        }
    }

    /// Connect and create the tables if they are missing.
    pub fn ensure_schema(&self) -> Result<(), StoreError> {
        self.with(|c| c.batch_execute(SCHEMA))
    }

    /// The settings and version stored now.
    pub fn current(&self) -> Result<Option<(Settings, u64)>, StoreError> {
        let row =
            self.with(|c| c.query_opt("SELECT seq, sealed FROM postern_settings_current", &[]))?;
        let Some(row) = row else { return Ok(None) };
        let seq = row.get::<_, i64>(0) as u64;
        let settings: Settings = self.opened_json("settings", row.get(1))?;
        self.remember(&settings, seq);
        Ok(Some((settings, seq)))
    }

    /// The copy of what this node applies, written whole and renamed into place.
    fn remember(&self, settings: &Settings, seq: u64) {
        let doc = serde_json::json!({ "version": seq, "settings": settings });
        let written = serde_json::to_vec(&doc)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::fsutil::replace_file(&self.cache, &b));
        if let Err(e) = written {
            tracing::warn!(target: "postern/master", "warning: {}: cannot keep the copy of the settings: {e}", self.cache.display());
        }
    }

    /// What `remember` kept, to start on while the database is away.
    pub fn remembered(&self) -> Option<(Settings, u64)> {
        let bytes = std::fs::read(&self.cache).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let settings = serde_json::from_value(v.get("settings")?.clone()).ok()?;
        Some((settings, v.get("version")?.as_u64()?))
    }

    /// Run `f` on the connection, opening it first if needed; an error drops it, so the next
    /// call reconnects.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.with(f).map_err(unreachable)
    }

    fn sealed_json<T: serde::Serialize>(&self, what: &str, v: &T) -> Result<Vec<u8>, StoreError> {
        Ok(self.sealer.seal(what, &serde_json::to_vec(v)?))
    }

    fn opened_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        Ok(serde_json::from_slice(&self.sealer.open(what, sealed)?)?)
    }

    /// The version stored now.
    pub fn version(&self) -> Result<u64, StoreError> {
        let row = self.with(|c| c.query_opt("SELECT seq FROM postern_settings_current", &[]))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn rows<T: serde::de::DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, StoreError> {
        let sql = format!("SELECT name, sealed FROM {table} ORDER BY name");
        let rows = self.with(move |c| c.query(&sql, &[]))?;
        rows.iter()
            .map(|r| self.opened_json(&format!("{table}/{}", r.get::<_, String>(0)), r.get(1)))
            .collect()
    }

    fn put_row<T: serde::Serialize>(
        &self,
        table: &str,
        name: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        let sealed = self.sealed_json(&format!("{table}/{name}"), v)?;
        let sql = format!(
            "INSERT INTO {table} (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed"
        );
        let name = name.to_string();
        self.with(move |c| c.execute(&sql, &[&name, &sealed]).map(|_| ()))
    }
}

/// On the connection's thread: connect if needed, run `f`; an error drops the connection,
/// so the next job reconnects. A connection from before a database restart fails its first
/// use without running anything; that job runs once more on a new connection.
fn run_job<T>(
    slot: &mut Option<postgres::Client>,
    (url, tls): (&str, &Arc<rustls::ClientConfig>),
    mut f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error>,
) -> Result<T, String> {
    let fresh = slot.as_ref().is_none_or(|c| c.is_closed());
    if fresh {
        *slot = Some(connect(url, tls).map_err(|e| describe(&e))?);
    }
    let Some(client) = slot.as_mut() else {
        return Err("not connected".into());
    };
    match f(client) {
        Ok(v) => Ok(v),
        Err(e) if !fresh && never_ran(&e) => {
            let mut client = connect(url, tls).map_err(|e| describe(&e))?;
            let result = f(&mut client).map_err(|e| describe(&e));
            *slot = result.is_ok().then_some(client);
            result
        }
        Err(e) => {
            *slot = None;
            Err(describe(&e))
        }
    }
}

/// The connection failed rather than the statement: the server closed it (a restart, an
/// administrator's kill), or it broke. Every job here may run twice: reads, upserts,
/// records with their own IDs, saves checked against the version, claims that say whose
/// they are; so the job runs once more on a new connection. An SQL error is the answer.
fn never_ran(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.as_db_error().is_none()
        || e.code().is_some_and(|c| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(c)
        })
}

/// The server's own words (`db error` alone says nothing), with the SQLSTATE.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// TLS, verified, unless the URL says `sslmode=disable` (a loopback or private link): a
/// `prefer` that would fall back to plaintext is taken as `require`.
fn connect(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<postgres::Client, postgres::Error> {
    use postgres::config::SslMode;
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    if config.get_ssl_mode() == SslMode::Disable {
        return config.connect(postgres::NoTls);
    }
    config.ssl_mode(SslMode::Require);
    config.connect(super::pg_tls::Rustls(tls.clone()))
}

impl super::backend::Backend for PgStore {
    fn newer(&self, than: u64) -> Result<Option<(Settings, u64)>, StoreError> {
        if self.version()? <= than {
            return Ok(None);
        }
        self.current()
    }

    fn save(
        &self,
        expected: Option<u64>,
        previous: Option<&Settings>,
        new: &Settings,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let current = self.sealed_json("settings", new)?;
        let mut entry = AuditEntry {
            seq: 0,
            unix_time: crate::fsutil::unix_now(),
            actor: actor.to_string(),
            previous: previous.cloned(),
            new: new.clone(),
        };
        let keep = self.history_keep as i64;
        let sealer = self.sealer.clone();
        let actor = actor.to_string();
        let saved = self.with(move |c| {
            let mut tx = c.transaction()?;
            // The row lock orders writers of every node.
            let stored: Option<i64> = tx
                .query_opt("SELECT seq FROM postern_settings_current FOR UPDATE", &[])?
                .map(|r| r.get(0));
            let stored = stored.unwrap_or(0) as u64;
            if expected.is_some_and(|e| e != stored) {
                return Ok(Err(stored));
            }
            let seq = stored + 1;
            entry.seq = seq;
            // An AuditEntry always serialises.
            let json = serde_json::to_vec(&entry).unwrap_or_default();
            let audit = sealer.seal(&format!("audit/{seq}"), &json);
            tx.execute(
                "INSERT INTO postern_settings_audit (seq, unix_time, actor, sealed) VALUES ($1, $2, $3, $4)",
                &[&(seq as i64), &(crate::fsutil::unix_now() as i64), &actor, &audit],
            )?;
            tx.execute(
                "INSERT INTO postern_settings_current (id, seq, sealed) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, sealed = EXCLUDED.sealed",
                &[&(seq as i64), &current],
            )?;
            tx.execute(
                "DELETE FROM postern_settings_audit WHERE seq <= $1",
                &[&(seq as i64 - keep)],
            )?;
            tx.execute(&format!("NOTIFY postern_settings, '{seq}'"), &[])?;
            tx.commit()?;
            Ok(Ok(seq))
        })?;
        let seq = saved.map_err(StoreError::Conflict)?;
        self.remember(new, seq);
        Ok(seq)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.with(move |c| {
            c.query(
                "SELECT seq, sealed FROM postern_settings_audit ORDER BY seq DESC LIMIT $1",
                &[&(limit.min(i64::MAX as usize) as i64)],
            )
        })?;
        rows.iter()
            .map(|r| self.opened_json(&format!("audit/{}", r.get::<_, i64>(0)), r.get(1)))
            .collect()
    }

    fn certificates(&self) -> Result<Vec<StoredCert>, StoreError> {
        self.rows("postern_certificates")
    }

    fn put_certificate(&self, cert: &StoredCert) -> Result<(), StoreError> {
        self.put_row("postern_certificates", &cert.name, cert)
    }

    fn delete_certificate(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        let n = self.with(move |c| {
            c.execute("DELETE FROM postern_certificates WHERE name = $1", &[&name])
        })?;
        Ok(n > 0)
    }

    fn admin_users(&self) -> Result<Vec<AdminUser>, StoreError> {
        self.rows("postern_admin_users")
    }

    fn put_admin_user(&self, user: &AdminUser) -> Result<(), StoreError> {
        self.put_row("postern_admin_users", &user.name, user)
    }
}

/// A node's view of the shared store, for its page and metrics.
#[derive(Debug, Default)]
pub struct Health {
    /// Why the database cannot be reached now; `None` while it can.
    pub down: Mutex<Option<String>>,
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
