//! The inbound SMTP server: accept loop with connection limits and graceful shutdown, and the
//! loop that drives one `Session` over one connection.

mod auth;
mod auth_guard;
mod conn;
pub mod connector;
mod message;
mod received;
mod relay;
mod session;
mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::proto::{self, Reply, replies};
use crate::settings::SettingsHandle;
use crate::spool::Spool;
pub use auth_guard::{AuthGuard, AuthLimits};
use conn::{Conn, Line, ReadError};
pub use message::strip_header;
use session::{Session, Step};
pub use throttle::{Attempt, Throttle, ThrottleLimits, Turn};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub recipient_overshoot_limit: usize,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_errors: u32,
    pub timeout: Duration,
    pub min_data_rate: u64,
    pub max_connection_rate_per_client: u32,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            max_message_size: c.smtp.max_message_size,
            max_recipients: c.smtp.max_recipients,
            recipient_overshoot_limit: c.smtp.recipient_overshoot_limit,
            max_connections: c.smtp.max_connections,
            max_connections_per_client: c.smtp.max_connections_per_client,
            max_errors: c.smtp.max_errors,
            timeout: c.timeout(),
            min_data_rate: c.smtp.min_data_rate,
            max_connection_rate_per_client: c.smtp.max_connection_rate_per_client,
            shutdown_grace: c.shutdown_grace(),
        }
    }
}

/// What every session shares.
pub struct Context {
    pub hostname: String,
    pub limits: Limits,
    pub settings: SettingsHandle,
    pub spool: Spool,
    pub tls: TlsAcceptor,
    pub auth: AuthGuard,
    /// Asks relay domains' next hops about recipients (call-ahead verification).
    pub verifier: Option<std::sync::Arc<dyn crate::recipient::RecipientVerifier>>,
    /// Mozilla roots plus `[tls] extra_roots`: what a client certificate must chain to
    /// (the Microsoft 365 connector).
    pub client_roots: std::sync::Arc<rustls::RootCertStore>,
    /// Set by `postern node drain`: new connections are told 421.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Where each accepted message is recorded and refusals are counted.
    pub events: Option<Arc<crate::events::EventLog>>,
}

/// Accept until `shutdown` turns true, then give sessions `shutdown_grace` to finish.
/// Sessions idle between commands are told `421 4.3.2` at once; a session in DATA finishes
/// its message (its 250 is only sent after the spool sync) or is cut at the grace limit,
/// before any 250, so nothing acknowledged is lost.
pub async fn run(listener: TcpListener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut admission = Admission {
        slots: Arc::new(Semaphore::new(ctx.limits.max_connections)),
        per_client: Arc::new(ClientCounts::default()),
        rates: ConnectionRates::default(),
    };
    let mut sessions = JoinSet::new();
    let mut memory = crate::memory::Trim::default();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = crate::server::accept(&listener) => accepted,
            // Ended sessions are reaped as they end: a finished task's cell is freed only
            // when joined, and 10,000 of them once held their memory until the next accept.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                memory.ended(sessions.len());
                continue;
            }
            _ = crate::server::stopped(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        match admission.admit(&ctx, peer) {
            Ok(slots) => {
                let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
                sessions.spawn(async move {
                    serve(tcp, peer, ctx, shutdown).await;
                    drop(slots);
                });
            }
            Err(reply) => {
                sessions.spawn(refuse(tcp, peer, reply));
            }
        }
        memory.started(sessions.len());
    }
    drop(listener);
    let grace = ctx.limits.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(target: "postern/smtpd", "warning: {} session(s) cut at the shutdown grace limit", sessions.len());
        sessions.shutdown().await;
    }
}

/// The limits a new connection must pass: connection rate per client, sessions in all,
/// sessions per client.
struct Admission {
    slots: Arc<Semaphore>,
    per_client: Arc<ClientCounts>,
    rates: ConnectionRates,
}

impl Admission {
    /// The session's slots, or the reply that refuses it.
    fn admit(
        &mut self,
        ctx: &Context,
        peer: SocketAddr,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, ClientSlot), Reply> {
        if ctx.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(replies::draining(&ctx.hostname));
        }
        let client = || peer.ip().to_canonical().to_string();
        let limit = ctx.limits.max_connection_rate_per_client;
        if limit > 0 && !ctx.settings.current().is_trusted(peer.ip()) {
            let n = self.rates.count(peer.ip());
            if n > limit {
                tracing::warn!(target: "postern/smtpd", "warning: Connection rate limit exceeded: {n} from unknown[{}] for service smtp", client());
                return Err(replies::too_many_connections_from(&client()));
            }
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(replies::too_many_connections());
        };
        let Some(client_slot) = self
            .per_client
            .acquire(peer.ip(), ctx.limits.max_connections_per_client)
        else {
            return Err(replies::too_many_connections_from(&client()));
        };
        Ok((slot, client_slot))
    }
}

async fn refuse(tcp: TcpStream, peer: SocketAddr, reply: Reply) {
    tracing::warn!(target: "postern/smtpd", "warning: refused unknown[{}]: {}", peer.ip().to_canonical(), reply.summary());
    let mut conn = Conn::new(tcp, Duration::from_secs(10));
    let _ = conn.send(&reply).await;
    conn.close().await;
}

/// New connections per client address in the current minute (Postfix's anvil, with its
/// 60 s time unit): a fixed window per address, forgotten once it has passed.
#[derive(Default)]
struct ConnectionRates {
    windows: HashMap<IpAddr, (std::time::Instant, u32)>,
}

impl ConnectionRates {
    const WINDOW: Duration = Duration::from_secs(60);

    /// Count a connection from `ip`; the count in its window, this one included.
    fn count(&mut self, ip: IpAddr) -> u32 {
        let now = std::time::Instant::now();
        if self.windows.len() >= 100_000 {
            // Many addresses seen: drop the finished windows rather than grow.
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let (start, n) = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        *n
    }
}

/// Open sessions per client address.
#[derive(Default)]
struct ClientCounts {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl ClientCounts {
    fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// One connection, greeting to close.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut session = Session::new(ctx.clone(), peer);
    let mut conn = Conn::new(tcp, ctx.limits.timeout).with_min_data_rate(ctx.limits.min_data_rate);
    tracing::info!(target: "postern/smtpd", "connect from {}", session.client);
    let end = drive(&mut session, &mut conn, &ctx, &mut shutdown).await;
    // Postfix's smtpd words, naming where the session was (smtpd.c: "timeout after %s",
    // "lost connection after %s").
    match end {
        Ok(()) => {}
        Err(ReadError::Timeout) => {
            tracing::info!(target: "postern/smtpd", "timeout after {} from {}", session.state, session.client);
            let _ = conn.send(&replies::timeout()).await;
        }
        Err(ReadError::ShuttingDown) => {
            let _ = conn.send(&replies::shutting_down()).await;
        }
        Err(ReadError::Eof) => {
            tracing::info!(target: "postern/smtpd", "lost connection after {} from {}", session.state, session.client);
        }
        Err(ReadError::Io(e)) => {
            tracing::info!(target: "postern/smtpd", "lost connection after {} from {}", session.state, session.client);
            tracing::debug!(target: "postern/smtpd", "{}: {e}", session.client);
        }
    }
    conn.close().await;
    tracing::info!(target: "postern/smtpd", "disconnect from {} {}", session.client, session.counters.summary());
}

async fn drive(
    session: &mut Session,
    conn: &mut Conn,
    ctx: &Context,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ReadError> {
    conn.send(&session.greeting()).await?;
    let mut errors = 0u32;
    loop {
        let line = match conn.read_line(shutdown).await? {
            Line::Line(line) => line,
            Line::TooLong => {
                session.counters.record("unknown", false);
                conn.queue(&replies::line_too_long());
                errors += 1;
                if errors >= ctx.limits.max_errors {
                    conn.send(&replies::too_many_errors()).await?;
                    return Ok(());
                }
                continue;
            }
        };
        let (verb, step) = if session.awaiting_auth_response() {
            ("auth", session.handle_auth_response(&line))
        } else {
            match proto::parse(&line) {
                Ok(cmd) => (cmd.verb(), session.handle(cmd)),
                Err(reply) => ("unknown", Step::Reply(reply)),
            }
        };
        session.state = postfix_state(verb);
        let (reply, close) = run_step(step, session, conn, ctx).await?;
        if matches!(verb, "data" | "bdat") && reply.as_ref().is_some_and(|r| r.code == 250) {
            session.state = "END-OF-MESSAGE";
        }
        let ok = reply.as_ref().is_none_or(Reply::is_positive);
        // A 334 challenge is counted when the exchange ends.
        if reply.as_ref().is_none_or(|r| r.code != 334) {
            session.counters.record(verb, ok);
        }
        if let Some(reply) = reply {
            conn.queue(&reply);
            if reply.code >= 400 && !session.take_overshoot_pardon() {
                errors += 1;
            }
        }
        if close {
            conn.flush().await?;
            return Ok(());
        }
        if errors >= ctx.limits.max_errors {
            conn.queue(&replies::too_many_errors());
            conn.flush().await?;
            tracing::info!(target: "postern/smtpd", "too many errors after {verb} from {}", session.client);
            return Ok(());
        }
    }
}

/// A verb as Postfix's smtpd names its state.
fn postfix_state(verb: &str) -> &'static str {
    match verb {
        "ehlo" => "EHLO",
        "helo" => "HELO",
        "mail" => "MAIL",
        "rcpt" => "RCPT",
        "data" => "DATA",
        "bdat" => "BDAT",
        "rset" => "RSET",
        "noop" => "NOOP",
        "quit" => "QUIT",
        "vrfy" => "VRFY",
        "help" => "HELP",
        "starttls" => "STARTTLS",
        "auth" => "AUTH",
        _ => "UNKNOWN",
    }
}

/// Carry out a step; returns the reply to queue (if any) and whether to close.
async fn run_step(
    step: Step,
    session: &mut Session,
    conn: &mut Conn,
    ctx: &Context,
) -> Result<(Option<Reply>, bool), ReadError> {
    match step {
        Step::Reply(reply) => Ok((Some(reply), false)),
        Step::Quit(reply) => Ok((Some(reply), true)),
        Step::StartTls(reply) => start_tls(reply, session, conn, ctx).await,
        Step::Data(reply) => {
            conn.queue(&reply);
            let mut reader = session.data_reader();
            conn.read_data(&mut reader).await?;
            let outcome = match session.end_of_data(reader) {
                Ok(prepared) => commit(session, ctx, prepared).await,
                Err(reply) => reply,
            };
            Ok((Some(outcome), false))
        }
        Step::Bdat { size, last, accept } => {
            let mut chunk = Vec::new();
            conn.read_chunk(size, accept, &mut chunk).await?;
            let reply = match session.bdat_chunk(chunk, size, last) {
                Ok(Some(prepared)) => commit(session, ctx, prepared).await,
                Ok(None) => replies::chunk_ok(size as usize),
                Err(reply) => reply,
            };
            Ok((Some(reply), false))
        }
        Step::VerifyRcpt(to) => {
            let verdict = match ctx.verifier.as_ref() {
                Some(v) => v.verify(&to.to_string()).await,
                None => crate::recipient::Verdict::Unverified("no verifier configured".into()),
            };
            Ok((Some(session.rcpt_verified(to, verdict)), false))
        }
        Step::Auth(creds) => Ok((Some(auth(creds, session, ctx).await), false)),
    }
}

/// STARTTLS: the 220, then the handshake on the same socket; what was pipelined behind the
/// command in plaintext is discarded (CVE-2011-0411 class). A failed handshake ends the
/// session.
async fn start_tls(
    reply: Reply,
    session: &mut Session,
    conn: &mut Conn,
    ctx: &Context,
) -> Result<(Option<Reply>, bool), ReadError> {
    conn.queue(&reply);
    let discarded = conn.discard_pipelined();
    if discarded > 0 {
        tracing::warn!(
            target: "postern/smtpd",
            "warning: {}: {discarded} bytes pipelined after STARTTLS discarded (command injection attempt?)",
            session.client
        );
    }
    match conn.start_tls(&ctx.tls).await {
        Ok((info, chain)) => {
            session.tls_established(info, &chain);
            log_tls_client(session);
            Ok((None, false))
        }
        Err(e) => {
            tracing::warn!(target: "postern/smtpd", "warning: TLS library problem: {} from {}", e, session.client);
            session.counters.record("starttls", false);
            Err(ReadError::Eof)
        }
    }
}

/// Postfix's smtpd line for the handshake: `Anonymous` without a client certificate,
/// `Trusted` (chain verified) or `Untrusted` with one, and what it is worth here.
fn log_tls_client(session: &session::Session) {
    use connector::{ClientCert, Verdict};
    let info = session
        .tls
        .as_ref()
        .map(|t| t.describe_session())
        .unwrap_or_default();
    match &session.client_cert {
        ClientCert::None => tracing::info!(
            target: "postern/smtpd",
            "Anonymous TLS connection established from {}: {info}",
            session.client
        ),
        ClientCert::Presented {
            cn,
            issuer,
            verdict,
        } => {
            let (trust, note) = match verdict {
                Verdict::Connector(name) => {
                    ("Trusted", format!("Microsoft 365 connector ({name})"))
                }
                Verdict::WrongName { .. } => (
                    "Trusted",
                    "not the Microsoft 365 connector: wrong name".into(),
                ),
                Verdict::OutsideRanges(_) => (
                    "Trusted",
                    "not the Microsoft 365 connector: outside its ranges".into(),
                ),
                Verdict::Untrusted(why) => (
                    "Untrusted",
                    format!("not the Microsoft 365 connector: {why}"),
                ),
                Verdict::Disabled => (
                    "Untrusted",
                    "client certificates give no rights (m365 off)".into(),
                ),
            };
            tracing::info!(
                target: "postern/smtpd",
                "{trust} TLS connection established from {}: {info}, client CN=\"{cn}\", issuer=\"{issuer}\": {note}",
                session.client
            );
        }
    }
}

/// AUTH: a locked-out address or user is not even checked (no hashing); a failure holds
/// this session, never a thread, for its growing delay.
/// SMTP AUTH: one attempt per client address at a time, counted before its check (a client
/// over its limit gets 454 without one, and a line fail2ban can match), slowed by the user's
/// failures if this address failed too, then checked in the bounded pool. The failure's
/// delay runs after the turn, so the next attempt is not held behind it.
async fn auth(creds: auth::Credentials, session: &mut Session, ctx: &Context) -> Reply {
    let ip = session.peer_ip();
    let turn = ctx.auth.turn(ip).await;
    match ctx.auth.arrive(ip, &creds.user) {
        Attempt::Refused { .. } => return session.auth_refused(&creds),
        Attempt::Check { delay } => tokio::time::sleep(delay).await,
    }
    let hash = session.password_hash(&creds.user);
    let ok = ctx.auth.verify(creds.password.clone(), hash).await;
    if ok {
        ctx.auth.succeeded(ip);
    } else {
        let delay = ctx.auth.failed(ip, &creds.user, &session.client);
        drop(turn);
        tokio::time::sleep(delay).await;
    }
    session.auth_result(&creds, ok)
}

/// Spool the message; the 250 only after the sync, 452 4.3.1 on any storage failure.
async fn commit(session: &Session, ctx: &Context, prepared: session::Prepared) -> Reply {
    let summary = prepared.summary();
    let parts = vec![prepared.received.into_bytes(), prepared.body];
    match ctx
        .spool
        .commit_owned(prepared.id, prepared.envelope, parts)
        .await
    {
        Ok(()) => {
            if let Some(events) = &ctx.events {
                events.received(session.received_record(&summary));
            }
            session.committed(&summary)
        }
        Err(e) => {
            tracing::error!(target: "postern/smtpd", "{}: spool commit failed for {}: {e}", summary.id, session.client);
            replies::storage_full()
        }
    }
}
