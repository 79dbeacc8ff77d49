//! One PostgreSQL connection on a thread of its own, for the shared settings, the node list
//! and the shared delivery records: verified TLS unless the URL says `sslmode=disable`, and a
//! job that failed because the connection went is run once more on a new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub(super) fn connect(
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

/// Create tables that may not exist yet, one node at a time: two nodes starting together
/// both running `CREATE TABLE IF NOT EXISTS` can collide in PostgreSQL's catalog
/// (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`), so the
/// statements run in a transaction under one advisory lock every postern node takes.
pub fn create_schema(c: &mut postgres::Client, schema: &str) -> Result<(), postgres::Error> {
    // Any fixed number: the lock's name among postern's nodes ("pstn").
    const SCHEMA_LOCK: i64 = 0x7073_746e;
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(schema)?;
    tx.commit()
}
