//! The connection pool: sessions kept open between messages to the same host under the same
//! demands (Postfix's connection cache), and delivery over one of them or a new one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::kx::ClientTls;
use super::session::{Connection, connect};
use super::{Failure, Job, Session, with_port};
use crate::policy::Level;
use crate::tls::KxGroups;

/// Sessions kept open between messages, per (host, address, TLS level): a connection made
/// under one level is never used for a message that needs another.
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<PoolKey, Vec<(Connection, Instant)>>>,
    /// How long a session may wait for its next message (Postfix's
    /// smtp_connection_cache_time_limit).
    pub max_idle: Duration,
    /// Transactions per session before it is closed (a long-lived session is not a goal).
    pub max_transactions: u32,
}

/// Host, address, level, minimum strength, certificate check, SASL user and client
/// certificate: a session is reused only for messages that demand exactly what it was
/// opened, verified and authenticated under.
type PoolKey = (
    String,
    SocketAddr,
    Level,
    u16,
    String,
    Option<String>,
    Option<String>,
);

impl Pool {
    pub fn new(max_idle: Duration) -> Pool {
        Pool {
            idle: Default::default(),
            max_idle,
            max_transactions: 100,
        }
    }

    fn key(job: &Job<'_>) -> PoolKey {
        let check = job
            .check
            .as_ref()
            .map(|(c, _)| format!("{c:?}"))
            .unwrap_or_default();
        (
            job.host.to_string(),
            job.addr,
            job.level,
            job.min_bits,
            check,
            job.auth.map(|(user, _)| user.to_string()),
            job.client_cert.as_ref().map(|(name, _)| name.to_string()),
        )
    }

    fn take(&self, key: &PoolKey) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < self.max_idle {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, key: PoolKey, c: Connection) -> Option<Connection> {
        if self.max_idle.is_zero() || c.transactions >= self.max_transactions {
            return Some(c);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.entry(key).or_default().push((c, Instant::now()));
        None
    }

    /// Close every cached session (shutdown): QUITs sent together, each bounded by its
    /// own short timeout.
    pub async fn close_all(&self) {
        let all: Vec<Connection> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain()
                .flat_map(|(_, l)| l.into_iter().map(|(c, _)| c))
                .collect()
        };
        let mut quits = tokio::task::JoinSet::new();
        for c in all.into_iter().filter(|c| c.in_step) {
            quits.spawn(c.conn.quit());
        }
        while quits.join_next().await.is_some() {}
    }

    /// Close sessions idle too long (QUIT, politely, in the background).
    pub fn sweep(&self) {
        let expired: Vec<Connection> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) = list
                    .drain(..)
                    .partition(|(_, since)| since.elapsed() < self.max_idle);
                *list = keep;
                out.extend(old.into_iter().map(|(c, _)| c));
            }
            idle.retain(|_, l| !l.is_empty());
            out
        };
        for c in expired {
            c.close();
        }
    }
}

/// Deliver `job`: over an idle session to the same host under the same level when one is
/// still open, else over a new connection; the session is kept afterwards. A reused
/// session that fails before the server answered anything (it closed as we began) is
/// dropped and the next one tried: nothing of the message can have been accepted.
pub async fn deliver(job: &Job<'_>, tls: &ClientTls, pool: &Pool) -> Result<Session, Failure> {
    let key = Pool::key(job);
    while let Some(mut c) = pool.take(&key) {
        if !c.still_open() {
            continue;
        }
        let answered = c.conn.replies;
        let mut result = c.send(job).await;
        if c.conn.replies == answered && result.as_ref().is_err_and(Failure::is_temporary) {
            c.close();
            continue;
        }
        if let Ok(session) = result.as_mut() {
            // Nothing was spent on set-up for this message.
            session.setup_secs = 0.0;
        }
        keep_or_close(pool, key, c, result.is_ok());
        return result;
    }
    let mut c = connect_kx(job, tls).await?;
    let result = c.send(job).await;
    keep_or_close(pool, key, c, result.is_ok());
    result
}

/// A new connection with the groups `tls` gives the host; a handshake that died right after
/// the post-quantum ClientHello is retried once with classical groups, logged (the words of
/// smtp(8)'s warnings), and the host remembered so that it gets classical ones at once.
async fn connect_kx(job: &Job<'_>, tls: &ClientTls) -> Result<Connection, Failure> {
    let groups = tls.groups_for(job.host, job.classical_kx);
    match connect(job, tls, groups).await {
        Err(Failure::FirstFlight {
            reason,
            hello_bytes,
        }) => {
            tracing::warn!(
                target: "postern/smtp",
                "{}: warning: TLS handshake with {} failed right after a {hello_bytes}-byte ClientHello offering X25519MLKEM768 ({reason}); retrying with classical key exchange only, as for this host for the next {} hours",
                job.queue_id,
                with_port(job),
                super::kx::REMEMBER.as_secs() / 3600
            );
            tls.remember(job.host);
            connect(job, tls, KxGroups::Classical).await
        }
        other => other,
    }
}

fn keep_or_close(pool: &Pool, key: PoolKey, c: Connection, ok: bool) {
    if !ok {
        c.close();
    } else if let Some(c) = pool.put(key, c) {
        c.close();
    }
}
