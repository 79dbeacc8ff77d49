//! The SMTP client for one delivery attempt to one host: EHLO (HELO fallback), STARTTLS as
//! the policy level demands, MAIL/RCPT/DATA (pipelined when offered) with a result per
//! recipient. It never falls back to plaintext on its own: a failed handshake under `may` is
//! reported as such and the caller decides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::classify::{Class, Outcome, Stage, TlsFailure};
use crate::policy::Level;
use crate::proto::{Enhanced, Reply, ReplyLine, dot_stuff};
use crate::tls::TlsInfo;

pub struct Job<'a> {
    /// The message's queue ID, for the log lines of the connection made for it.
    pub queue_id: &'a str,
    /// Name for logs, SNI and errors: the MX or transport host.
    pub host: &'a str,
    pub addr: SocketAddr,
    pub helo: &'a str,
    pub level: Level,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub message: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// Sent with `REQUIRETLS` (RFC 8689): only to a server that offers it.
    pub requiretls: bool,
    /// Minimum cipher key bits (0 without TLS); below it, no transaction.
    pub min_bits: u16,
    /// A policy failure is final (the row says `bounce`) rather than retried.
    pub bounce_on_failure: bool,
    /// What the certificate must satisfy (`verify`, `secure`, `fingerprint`), with the roots.
    pub check: Option<(crate::tls::CertCheck, Arc<rustls::RootCertStore>)>,
    /// The roots' chain verifier, to tell a Trusted connection from an Untrusted one where
    /// the level checks nothing.
    pub chain_check: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// SASL user name and password the next hop requires; sent only inside TLS.
    pub auth: Option<(&'a str, &'a str)>,
    /// The certificate (by name) to present if the next hop asks for a client certificate.
    pub client_cert: Option<(&'a str, Arc<rustls::sign::CertifiedKey>)>,
}

/// What one session with one host produced.
#[derive(Debug)]
pub struct Session {
    /// One per recipient of the job, in order.
    pub results: Vec<Outcome>,
    pub starttls_offered: bool,
    /// The name (or pin) the certificate was verified for, at `verify`/`secure`/`fingerprint`.
    pub verified_name: Option<String>,
    /// At an observing check (MTA-STS `testing`): why the certificate would have failed.
    pub cert_problem: Option<crate::tls::CertProblem>,
    pub tls: Option<TlsInfo>,
    /// Seconds: connection set-up (connect, greeting, EHLO, TLS) and transmission.
    pub setup_secs: f64,
    pub transmit_secs: f64,
}

/// Why the whole session failed before per-recipient results existed.
#[derive(Debug)]
pub enum Failure {
    /// Applies to every recipient; `try_next_host` for connection-level trouble.
    All {
        outcome: Outcome,
        try_next_host: bool,
        starttls_offered: bool,
        /// The TLS in force when a transaction failed inside an encrypted session, and the
        /// name the certificate was verified for: the delivery record says how it crossed.
        tls: Option<(TlsInfo, Option<String>)>,
    },
    /// TLS handshake failed under `may`: the caller may retry this host in plaintext.
    TlsFailedMay { reason: String },
}

use crate::fsutil::os_text;

/// Bounds on what a next hop may send as one reply (RFC 5321 section 4.5.3.1.5 sets 512
/// octets per reply line; servers exceed it, so we allow more, but not without limit).
const MAX_REPLY_LINE: usize = 8192;
const MAX_REPLY_LINES: usize = 200;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
    name: String,
    /// Replies read so far: a reused session whose transaction failed before any reply
    /// cannot have accepted the message.
    replies: u64,
}

impl Conn {
    async fn read_reply(&mut self, stage: &str) -> Result<Reply, Outcome> {
        let mut texts = Vec::new();
        loop {
            if texts.len() >= MAX_REPLY_LINES {
                return Err(Outcome::temporary(
                    Enhanced(4, 5, 0),
                    format!(
                        "host {} sent a reply of more than {MAX_REPLY_LINES} lines while {stage}",
                        self.name
                    ),
                ));
            }
            let raw = self.read_line(stage).await?;
            let line = String::from_utf8_lossy(&raw);
            let text = line.trim_end_matches(['\r', '\n']);
            let parsed = ReplyLine::parse(text).ok_or_else(|| {
                Outcome::temporary(
                    Enhanced(4, 5, 0),
                    format!(
                        "host {} sent a malformed reply while {stage}: {text:?}",
                        self.name
                    ),
                )
            })?;
            texts.push(parsed.text.to_string());
            if parsed.last {
                self.replies += 1;
                return Ok(Reply::from_lines(parsed.code, texts));
            }
        }
    }

    /// One reply line, within the command timeout and `MAX_REPLY_LINE` bytes: a next hop
    /// that never ends its line must not grow our memory.
    async fn read_line(&mut self, stage: &str) -> Result<Vec<u8>, Outcome> {
        let mut raw = Vec::new();
        let mut limited = (&mut self.io).take(MAX_REPLY_LINE as u64);
        let read = tokio::time::timeout(self.timeout, limited.read_until(b'\n', &mut raw)).await;
        let lost = |why: String| {
            Outcome::connection(format!(
                "lost connection with {} while {stage}{why}",
                self.name
            ))
        };
        match read {
            Err(_) => {
                return Err(Outcome::timeout(
                    &format!("waiting for reply to {stage}"),
                    &self.name,
                ));
            }
            Ok(Err(e)) => return Err(lost(format!(": {}", os_text(&e)))),
            Ok(Ok(0)) => return Err(lost(String::new())),
            Ok(Ok(_)) => {}
        }
        if raw.last() != Some(&b'\n') {
            return Err(Outcome::temporary(
                Enhanced(4, 5, 0),
                format!(
                    "host {} sent a reply line longer than {MAX_REPLY_LINE} bytes while {stage}",
                    self.name
                ),
            ));
        }
        Ok(raw)
    }

    /// The message and the end of data (RFC 5321 section 4.5.2). A message with no line
    /// starting with a dot goes as it is, the terminator after it in the same `writev`;
    /// only one that needs stuffing is copied.
    async fn write_message(&mut self, message: &[u8]) -> Result<(), Outcome> {
        const STAGE: &str = "sending message body";
        let Some(end) = crate::proto::end_without_stuffing(message) else {
            let mut wire = Vec::with_capacity(message.len() + 16);
            dot_stuff(message, &mut wire);
            return self.write(&wire, STAGE).await;
        };
        let w = self.io.get_mut();
        let write = async {
            let mut parts = [std::io::IoSlice::new(message), std::io::IoSlice::new(end)];
            let mut left = &mut parts[..];
            while !left.is_empty() {
                let n = w.write_vectored(left).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                std::io::IoSlice::advance_slices(&mut left, n);
            }
            w.flush().await
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.finish_write(result, STAGE)
    }

    async fn write(&mut self, bytes: &[u8], stage: &str) -> Result<(), Outcome> {
        let io = self.io.get_mut();
        let write = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.finish_write(result, stage)
    }

    fn finish_write(
        &self,
        result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
        stage: &str,
    ) -> Result<(), Outcome> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Outcome::connection(format!(
                "lost connection with {} while {stage}: {}",
                self.name,
                os_text(&e)
            ))),
            Err(_) => Err(Outcome::timeout(stage, &self.name)),
        }
    }

    async fn command(&mut self, line: &str, stage: &str) -> Result<Reply, Outcome> {
        self.write(format!("{line}\r\n").as_bytes(), stage).await?;
        self.read_reply(stage).await
    }

    /// QUIT in the background with a short timeout of its own: a next hop that never
    /// answers QUIT holds nothing of ours but this task and its socket.
    fn quit_later(self) {
        tokio::spawn(self.quit());
    }

    async fn quit(mut self) {
        self.timeout = QUIT_TIMEOUT;
        let _ = self.command("QUIT", "QUIT").await;
    }
}

/// How long a QUIT may take before the connection is simply closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// EHLO keywords that matter to us.
#[derive(Debug, Default)]
struct Extensions {
    esmtp: bool,
    starttls: bool,
    pipelining: bool,
    size: Option<u64>,
    eight_bit: bool,
    smtputf8: bool,
    requiretls: bool,
    /// SASL mechanisms, upper-case.
    auth: Vec<String>,
}

fn extensions(reply: &Reply) -> Extensions {
    let mut ext = Extensions {
        esmtp: true,
        ..Extensions::default()
    };
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("STARTTLS") => ext.starttls = true,
            Some("PIPELINING") => ext.pipelining = true,
            Some("8BITMIME") => ext.eight_bit = true,
            Some("SMTPUTF8") => ext.smtputf8 = true,
            Some("REQUIRETLS") => ext.requiretls = true,
            Some("SIZE") => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
            Some("AUTH") => ext.auth.extend(words.map(str::to_ascii_uppercase)),
            // The pre-RFC 4954 form some servers still send: `AUTH=LOGIN PLAIN`.
            Some(w) if w.starts_with("AUTH=") => ext.auth.extend(
                std::iter::once(&w[5..])
                    .chain(words)
                    .map(str::to_ascii_uppercase),
            ),
            _ => {}
        }
    }
    ext
}

/// Connect, greeting, EHLO, STARTTLS as the level demands, EHLO again; then the minimum
/// strength and SASL, before any transaction.
async fn connect(job: &Job<'_>, tls: &Arc<rustls::ClientConfig>) -> Result<Connection, Failure> {
    let started = Instant::now();
    let (conn, ext) = open(job).await?;
    let starttls_offered = ext.starttls;
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let upgraded = upgrade(conn, ext, job, tls).await?;
    let Upgraded {
        mut conn,
        ext,
        tls: negotiated,
        verified_name,
        cert_problem,
    } = upgraded;
    let peer = conn.name.clone();
    if let Err(o) = check_strength(job, negotiated.as_ref(), &peer) {
        conn.quit_later();
        return Err(fail(o));
    }
    if let Some(credentials) = job.auth {
        let tls = negotiated.is_some();
        if let Err(o) = authenticate(&mut conn, &ext, credentials, tls, &peer).await {
            conn.quit_later();
            // As Postfix does: a failed login is retried, and another host may accept it.
            return Err(Failure::All {
                outcome: o,
                try_next_host: true,
                starttls_offered,
                tls: None,
            });
        }
    }
    Ok(Connection {
        conn,
        ext,
        name: peer,
        starttls_offered,
        verified_name,
        cert_problem,
        tls: negotiated,
        setup_secs: started.elapsed().as_secs_f64(),
        transactions: 0,
        in_step: true,
    })
}

/// `host[ip]:port`, as Postfix names a peer in `connect to` and TLS lines.
fn with_port(job: &Job<'_>) -> String {
    format!("{}[{}]:{}", job.host, job.addr.ip(), job.addr.port())
}

/// TCP connect, greeting and first EHLO. Any failure here tries the next host: a server
/// that will not talk is no reason to bounce.
async fn open(job: &Job<'_>) -> Result<(Conn, Extensions), Failure> {
    // Postfix names the peer without the port in its reasons, with it in `connect to`.
    let peer = format!("{}[{}]", job.host, job.addr.ip());
    let next_host = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: true,
        starttls_offered: false,
        tls: None,
    };
    let connect_to = |why: String| {
        next_host(Outcome::connection(format!(
            "connect to {}: {why}",
            with_port(job)
        )))
    };
    let tcp = match tokio::time::timeout(job.connect_timeout, TcpStream::connect(job.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(connect_to(os_text(&e))),
        Err(_) => return Err(connect_to("Connection timed out".into())),
    };
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        io: BufReader::new(Box::new(tcp)),
        timeout: job.command_timeout,
        name: peer.clone(),
        replies: 0,
    };
    let greeting = conn
        .read_reply("receiving the initial server greeting")
        .await
        .map_err(next_host)?;
    let o = Outcome::from_reply(&greeting, &peer, Stage::Greeting);
    if o.class != Class::Delivered {
        return Err(next_host(o));
    }
    let ext = hello(&mut conn, job.helo, &peer).await.map_err(next_host)?;
    if ext.starttls {
        // Once per new connection, at every level (Postfix's smtp_tls_note_starttls_offer):
        // the line admins search before they require TLS of a partner.
        tracing::info!(target: "postern/smtp", "{}: Host offered STARTTLS: [{}]", job.queue_id, job.host);
    }
    Ok((conn, ext))
}

/// A session after `upgrade`: in TLS or not, as the level allowed.
struct Upgraded {
    conn: Conn,
    ext: Extensions,
    tls: Option<TlsInfo>,
    /// The name (or pin) the certificate was verified for.
    verified_name: Option<String>,
    cert_problem: Option<crate::tls::CertProblem>,
}

/// STARTTLS as the level demands. A required level never falls back to plaintext; `may`
/// hands a failed STARTTLS back (`TlsFailedMay`) for a plaintext retry that is logged.
async fn upgrade(
    mut conn: Conn,
    ext: Extensions,
    job: &Job<'_>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Upgraded, Failure> {
    let starttls_offered = ext.starttls;
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let plain = |conn, ext| Upgraded {
        conn,
        ext,
        tls: None,
        verified_name: None,
        cert_problem: None,
    };
    let peer = conn.name.clone();
    match (job.level, ext.starttls) {
        (Level::None, _) | (Level::May, false) => Ok(plain(conn, ext)),
        (_, false) => {
            // With a minimum strength, the reference's words (GlobalCerts' NDR: "5.7.0
            // encryption too weak 0 less than 112") with Postfix's in parentheses, so a
            // grep for either finds it.
            let not_offered = format!("TLS is required, but was not offered by host {peer}");
            let reason = match job.min_bits {
                0 => not_offered,
                min => format!("encryption too weak 0 less than {min} ({not_offered})"),
            };
            let detail = if job.bounce_on_failure { 0 } else { 4 };
            Err(fail(
                policy_failure(job, detail, reason).tls(TlsFailure::NoStarttls),
            ))
        }
        (_, true) => {
            ask_starttls(&mut conn, job, &peer, starttls_offered).await?;
            let (conn, tls, verified_name, cert_problem) =
                handshake(conn, job, tls, starttls_offered).await?;
            let mut conn = conn;
            let ext = hello(&mut conn, job.helo, &peer).await.map_err(fail)?;
            Ok(Upgraded {
                conn,
                ext,
                tls: Some(tls),
                verified_name,
                cert_problem,
            })
        }
    }
}

/// The STARTTLS command and its reply.
async fn ask_starttls(
    conn: &mut Conn,
    job: &Job<'_>,
    peer: &str,
    starttls_offered: bool,
) -> Result<(), Failure> {
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let reply = conn.command("STARTTLS", "STARTTLS").await.map_err(fail)?;
    let o = Outcome::from_reply(&reply, peer, Stage::StartTls);
    if o.protocol_error {
        // A 2xx without a handshake to follow: out of step, at any level; never a reason
        // to go on in plaintext on this session or another.
        return Err(fail(o));
    }
    if o.class == Class::Delivered {
        return Ok(());
    }
    if job.level == Level::May {
        return Err(Failure::TlsFailedMay {
            reason: format!("STARTTLS refused: {}", reply.summary()),
        });
    }
    Err(fail(
        policy_failure(
            job,
            5,
            format!(
                "TLS is required, but host {peer} refused to start TLS: {}",
                reply.summary()
            ),
        )
        .tls(TlsFailure::NoStarttls),
    ))
}

/// The handshake under the level's certificate check, and its one log line.
async fn handshake(
    conn: Conn,
    job: &Job<'_>,
    tls: &Arc<rustls::ClientConfig>,
    starttls_offered: bool,
) -> Result<Handshaken, Failure> {
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let peer = conn.name.clone();
    let (config, verifier) = client_tls_config(job, tls).map_err(fail)?;
    let chain_check = job.chain_check.as_deref().filter(|_| verifier.is_none());
    let peer_at = (job.host, job.addr);
    match start_tls(conn, peer_at, job.command_timeout, &config, chain_check).await {
        Ok((conn, info, chain_trusted)) => {
            let verified_name = verifier.as_ref().and_then(|v| v.verified_name());
            // Once per handshake, in Postfix's words (smtp(8)): Verified when the chain and
            // the name (or pin) were checked, Trusted when the chain leads to a trusted root
            // but no name was asked for (`may`, `encrypt`), Untrusted otherwise.
            let trust = match (verified_name.is_some(), chain_trusted) {
                (true, _) => "Verified",
                (false, true) => "Trusted",
                (false, false) => "Untrusted",
            };
            tracing::info!(target: "postern/smtp", "{trust} TLS connection established to {}: {}", with_port(job), info.describe());
            let problem = verifier.as_ref().and_then(|v| v.problem());
            Ok((conn, info, verified_name, problem))
        }
        Err(reason) if job.level == Level::May => Err(Failure::TlsFailedMay { reason }),
        Err(reason) => {
            let kind = match verifier.as_ref().and_then(|v| v.problem()) {
                Some(p) => TlsFailure::Certificate(p),
                None => TlsFailure::Handshake,
            };
            let reason = format!("Cannot start TLS with {peer}: {reason}");
            Err(fail(policy_failure(job, 5, reason).tls(kind)))
        }
    }
}

/// A finished handshake: the session, its TLS, the name the certificate was verified for,
/// and (at an observing check) why it would have failed.
type Handshaken = (
    Conn,
    TlsInfo,
    Option<String>,
    Option<crate::tls::CertProblem>,
);

/// The client config for this job's level: shared and unauthenticated at `may`/`encrypt`
/// (with the relay domain's client certificate if it has one), checking at the others.
fn client_tls_config(
    job: &Job<'_>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<TlsConfigs, Outcome> {
    let client_cert = job.client_cert.as_ref().map(|(_, k)| k.clone());
    match (&job.check, client_cert) {
        (None, None) => Ok((tls.clone(), None)),
        (None, Some(k)) => Ok((crate::tls::unauthenticated_client_config_with(k), None)),
        (Some((check, roots)), client_cert) => {
            crate::tls::policy_client_config(check.clone(), roots.clone(), client_cert)
                .map(|(c, v)| (c, Some(v)))
                .map_err(|e| policy_failure(job, 5, format!("cannot check certificates: {e}")))
        }
    }
}

type TlsConfigs = (
    Arc<rustls::ClientConfig>,
    Option<Arc<crate::tls::PolicyVerifier>>,
);

/// Minimum strength (GlobalCerts): checked before any transaction, so a message never
/// crosses a session weaker than its policy allows. Plaintext counts as 0 bits.
fn check_strength(job: &Job<'_>, tls: Option<&TlsInfo>, peer: &str) -> Result<(), Outcome> {
    let bits = tls.map_or(0, |t| t.bits);
    if job.min_bits == 0 || bits >= job.min_bits {
        return Ok(());
    }
    Err(policy_failure(
        job,
        0,
        format!(
            "encryption too weak {bits} less than {} (host {peer})",
            job.min_bits
        ),
    ))
}

/// SASL PLAIN (RFC 4616) or LOGIN, PLAIN preferred, and only inside TLS: credentials never
/// cross in plaintext, whatever the policy said. Failures read as Postfix's.
async fn authenticate(
    conn: &mut Conn,
    ext: &Extensions,
    (user, password): (&str, &str),
    tls: bool,
    name: &str,
) -> Result<(), Outcome> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let refused = |why: String| Outcome::temporary(Enhanced(4, 7, 0), why);
    if !tls {
        return Err(refused(format!(
            "SASL authentication to {name} requires TLS: credentials are not sent in plaintext"
        )));
    }
    let offers = |m: &str| ext.auth.iter().any(|a| a == m);
    let reply = if offers("PLAIN") {
        let token = STANDARD.encode(format!("\0{user}\0{password}"));
        conn.command(&format!("AUTH PLAIN {token}"), "sending AUTH")
            .await?
    } else if offers("LOGIN") {
        let mut reply = conn.command("AUTH LOGIN", "sending AUTH").await?;
        for step in [user, password] {
            if reply.code != 334 {
                break;
            }
            reply = conn.command(&STANDARD.encode(step), "sending AUTH").await?;
        }
        reply
    } else {
        return Err(refused(format!(
            "SASL authentication failed; server {name} offered no compatible authentication mechanisms for this type of connection security"
        )));
    };
    let o = Outcome::from_reply(&reply, name, Stage::Auth);
    if o.class == Class::Delivered {
        Ok(())
    } else {
        Err(refused(format!(
            "SASL authentication failed; server {name} said: {}",
            reply.summary()
        )))
    }
}

/// An open session with one host, ready for a transaction; kept in the `Pool` between
/// messages to the same host under the same TLS level.
pub struct Connection {
    conn: Conn,
    ext: Extensions,
    name: String,
    starttls_offered: bool,
    verified_name: Option<String>,
    cert_problem: Option<crate::tls::CertProblem>,
    tls: Option<TlsInfo>,
    setup_secs: f64,
    transactions: u32,
    /// False once a transaction failed part-way (timeout, lost connection, protocol error).
    in_step: bool,
}

/// What the server's EHLO already rules out, and whether another host may differ: a
/// message over its SIZE, one that needs SMTPUTF8 from a server without it (RFC 6531
/// section 3.4: returned, not downgraded), a REQUIRETLS message to a server that does not
/// offer REQUIRETLS (RFC 8689 section 4.2.1: another MX may; none left, it is returned).
fn refused_before_mail(job: &Job<'_>, ext: &Extensions, name: &str) -> Option<(Outcome, bool)> {
    if let Some(limit) = ext.size
        && job.message.len() as u64 > limit
    {
        let size = job.message.len();
        return Some((
            Outcome::permanent(
                Enhanced(5, 3, 4),
                format!("message size {size} exceeds size limit {limit} of server {name}"),
            ),
            false,
        ));
    }
    if job.smtputf8 && !ext.smtputf8 {
        return Some((
            Outcome::permanent(
                Enhanced(5, 6, 7),
                format!("SMTPUTF8 is required, but was not offered by host {name}"),
            ),
            false,
        ));
    }
    (job.requiretls && !ext.requiretls).then(|| {
        let why = format!("REQUIRETLS support required, but not offered by host {name}");
        (Outcome::permanent(Enhanced(5, 7, 30), why), true)
    })
}

impl Connection {
    /// One transaction: MAIL, RCPTs, DATA.
    async fn send(&mut self, job: &Job<'_>) -> Result<Session, Failure> {
        let (name, ext, starttls_offered) = (self.name.clone(), &self.ext, self.starttls_offered);
        let seen_tls = self.tls.clone().map(|t| (t, self.verified_name.clone()));
        let fail = |outcome: Outcome| Failure::All {
            outcome,
            try_next_host: false,
            starttls_offered,
            tls: seen_tls.clone(),
        };
        if let Some((outcome, try_next_host)) = refused_before_mail(job, ext, &name) {
            let tls = seen_tls;
            return Err(Failure::All {
                outcome,
                try_next_host,
                starttls_offered,
                tls,
            });
        }
        let transmit = Instant::now();
        let results = transaction(&mut self.conn, job, ext, &name)
            .await
            .map_err(|o| {
                self.in_step = false;
                fail(o)
            })?;
        // 421: the server is closing the session (RFC 5321 section 3.8): try the next host, as
        // Postfix does, rather than wait for the retry.
        if results
            .iter()
            .all(|o| o.class == super::classify::Class::Temporary)
            && let Some(o) = results.iter().find(|o| {
                o.remote_reply
                    .as_deref()
                    .is_some_and(|r| r.starts_with("421"))
            })
        {
            return Err(Failure::All {
                outcome: o.clone(),
                try_next_host: true,
                starttls_offered,
                tls: seen_tls,
            });
        }
        self.transactions += 1;
        Ok(Session {
            results,
            starttls_offered,
            tls: self.tls.clone(),
            verified_name: self.verified_name.clone(),
            cert_problem: self.cert_problem,
            setup_secs: self.setup_secs,
            transmit_secs: transmit.elapsed().as_secs_f64(),
        })
    }

    /// Whether an idle session can take the next transaction, without a round trip: the
    /// stream is polled once, and only "nothing to read yet" means open. An end of file or
    /// bytes nobody asked for (a 421 before closing) mean the server has gone. A TLS
    /// stream handles records such as session tickets itself and still says "nothing yet".
    /// After a completed transaction the server is in its initial state (RFC 5321 section
    /// 4.1.1.5: RSET is not needed between transactions), so no RSET is sent.
    fn still_open(&mut self) -> bool {
        use tokio::io::AsyncBufRead;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        matches!(
            std::pin::Pin::new(&mut self.conn.io).poll_fill_buf(&mut cx),
            std::task::Poll::Pending
        )
    }

    /// Close the session: with QUIT (in the background) while it is in step with the
    /// server; simply dropped after a failed transaction, where a QUIT could be taken for
    /// message data or wait for a reply that never comes.
    fn close(self) {
        if self.in_step {
            self.conn.quit_later();
        }
    }
}

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
pub async fn deliver(
    job: &Job<'_>,
    tls: &Arc<rustls::ClientConfig>,
    pool: &Pool,
) -> Result<Session, Failure> {
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
    let mut c = connect(job, tls).await?;
    let result = c.send(job).await;
    keep_or_close(pool, key, c, result.is_ok());
    result
}

impl Failure {
    fn is_temporary(&self) -> bool {
        match self {
            Failure::All { outcome, .. } => outcome.class == super::classify::Class::Temporary,
            Failure::TlsFailedMay { .. } => true,
        }
    }
}

fn keep_or_close(pool: &Pool, key: PoolKey, c: Connection, ok: bool) {
    if !ok {
        c.close();
    } else if let Some(c) = pool.put(key, c) {
        c.close();
    }
}

/// Ask `host` whether it takes `rcpt`, as Postfix's address verification does: greeting,
/// EHLO, STARTTLS when offered, `MAIL FROM:<>`, `RCPT TO`, then QUIT. The RCPT reply, or why
/// the question could not be asked (a refused null sender included: that says nothing of
/// the recipient).
pub async fn probe_recipient(
    host: &str,
    addr: SocketAddr,
    helo: &str,
    rcpt: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Reply, String> {
    let name = format!("{host}[{}]:{}", addr.ip(), addr.port());
    let peer = format!("{host}[{}]", addr.ip());
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {name}: Connection timed out"))?
        .map_err(|e| format!("connect to {name}: {}", os_text(&e)))?;
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        io: BufReader::new(Box::new(tcp)),
        timeout,
        name: peer.clone(),
        replies: 0,
    };
    let greeting = conn
        .read_reply("receiving the initial server greeting")
        .await
        .map_err(|o| o.reason)?;
    let o = Outcome::from_reply(&greeting, &peer, Stage::Greeting);
    if o.class != Class::Delivered {
        return Err(o.reason);
    }
    let ext = hello(&mut conn, helo, &peer).await.map_err(|o| o.reason)?;
    if ext.starttls {
        let reply = conn
            .command("STARTTLS", "STARTTLS")
            .await
            .map_err(|o| o.reason)?;
        if Stage::StartTls.accepts(reply.code) {
            conn = start_tls(conn, (host, addr), timeout, tls, None).await?.0;
            hello(&mut conn, helo, &peer).await.map_err(|o| o.reason)?;
        }
    }
    let mail = conn
        .command("MAIL FROM:<>", "MAIL FROM")
        .await
        .map_err(|o| o.reason)?;
    let o = Outcome::from_reply(&mail, &peer, Stage::Mail);
    if o.class != Class::Delivered {
        conn.quit_later();
        return Err(o.reason);
    }
    let reply = conn
        .command(&format!("RCPT TO:<{rcpt}>"), "RCPT TO")
        .await
        .map_err(|o| o.reason)?;
    conn.quit_later();
    Ok(reply)
}

/// What a STARTTLS probe saw (`postern check-tls`).
pub struct Probe {
    pub greeting: String,
    pub starttls_offered: bool,
    pub tls: Option<TlsInfo>,
    /// The peer's chain as sent, end-entity first.
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub tls_error: Option<String>,
}

/// Connect, EHLO, and STARTTLS if offered, accepting any certificate so it can be reported.
pub async fn probe(
    host: &str,
    addr: SocketAddr,
    helo: &str,
    timeout: Duration,
) -> Result<Probe, String> {
    let name = format!("{host}[{}]:{}", addr.ip(), addr.port());
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {name}: Connection timed out"))?
        .map_err(|e| format!("connect to {name}: {}", os_text(&e)))?;
    let mut conn = Conn {
        io: BufReader::new(Box::new(tcp)),
        timeout,
        name: name.clone(),
        replies: 0,
    };
    let greeting = conn.read_reply("greeting").await.map_err(|o| o.reason)?;
    let ext = hello(&mut conn, helo, &name).await.map_err(|o| o.reason)?;
    let mut probe = Probe {
        greeting: greeting.summary(),
        starttls_offered: ext.starttls,
        tls: None,
        chain: Vec::new(),
        tls_error: None,
    };
    if !ext.starttls {
        let _ = conn.command("QUIT", "QUIT").await;
        return Ok(probe);
    }
    let reply = conn
        .command("STARTTLS", "STARTTLS")
        .await
        .map_err(|o| o.reason)?;
    if !Stage::StartTls.accepts(reply.code) {
        probe.tls_error = Some(format!("STARTTLS refused: {}", reply.summary()));
        return Ok(probe);
    }
    probe_tls(conn, (host, addr), timeout, &mut probe).await;
    Ok(probe)
}

/// The handshake of a probe, accepting any certificate so that it can be reported.
async fn probe_tls(
    conn: Conn,
    (host, addr): (&str, SocketAddr),
    timeout: Duration,
    probe: &mut Probe,
) {
    let server_name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(unauthenticated_tls_config());
    let stream = conn.io.into_inner();
    match tokio::time::timeout(timeout, connector.connect(server_name, stream)).await {
        Ok(Ok(mut tls)) => {
            let state = tls.get_ref().1;
            probe.tls = TlsInfo::from_connection(state);
            probe.chain = state
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let _ = tls.write_all(b"QUIT\r\n").await;
        }
        Ok(Err(e)) => probe.tls_error = Some(crate::tls::words::handshake_error(&e)),
        Err(_) => probe.tls_error = Some("TLS handshake timed out".into()),
    }
}

async fn hello(conn: &mut Conn, helo: &str, name: &str) -> Result<Extensions, Outcome> {
    let reply = conn.command(&format!("EHLO {helo}"), "EHLO").await?;
    if Stage::Ehlo.accepts(reply.code) {
        return Ok(extensions(&reply));
    }
    let reply = conn.command(&format!("HELO {helo}"), "HELO").await?;
    let o = Outcome::from_reply(&reply, name, Stage::Helo);
    if o.class == Class::Delivered {
        return Ok(Extensions::default());
    }
    Err(o)
}

async fn start_tls(
    conn: Conn,
    (host, addr): (&str, SocketAddr),
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    chain_check: Option<&rustls::client::WebPkiServerVerifier>,
) -> Result<(Conn, TlsInfo, bool), String> {
    if !conn.io.buffer().is_empty() {
        // The server spoke after its 220: the response-injection mirror of CVE-2011-0411.
        return Err("server sent data after its STARTTLS reply".into());
    }
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let stream = conn.io.into_inner();
    let tls_stream = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| crate::tls::words::handshake_error(&e))?;
    let session = tls_stream.get_ref().1;
    let info =
        TlsInfo::from_connection(session).ok_or("handshake finished without a cipher suite")?;
    let chain_trusted = match (chain_check, session.peer_certificates()) {
        (Some(verifier), Some(chain)) => crate::tls::chain_trusted(verifier, chain),
        _ => false,
    };
    Ok((
        Conn {
            io: BufReader::new(Box::new(tls_stream)),
            timeout: conn.timeout,
            name: conn.name,
            replies: conn.replies,
        },
        info,
        chain_trusted,
    ))
}

/// MAIL, RCPTs, DATA: one outcome per recipient.
async fn transaction(
    conn: &mut Conn,
    job: &Job<'_>,
    ext: &Extensions,
    name: &str,
) -> Result<Vec<Outcome>, Outcome> {
    let (mail_reply, rcpt_replies, data_reply) = envelope(conn, job, ext).await?;
    let mail = checked(Outcome::from_reply(&mail_reply, name, Stage::Mail))?;
    if mail.class != Class::Delivered {
        end_empty_data(conn, data_reply.as_ref()).await?;
        return Ok(vec![mail; job.recipients.len()]);
    }
    let mut results: Vec<Option<Outcome>> = Vec::with_capacity(rcpt_replies.len());
    for r in &rcpt_replies {
        let o = checked(Outcome::from_reply(r, name, Stage::Rcpt))?;
        results.push((o.class != Class::Delivered).then_some(o));
    }
    let accepted = results.iter().filter(|r| r.is_none()).count();
    let data_reply = match data_reply {
        Some(r) => r,
        None if accepted == 0 => Reply::from_lines(503, vec!["no recipients accepted".into()]),
        None => conn.command("DATA", "DATA").await?,
    };
    if accepted == 0 {
        end_empty_data(conn, Some(&data_reply)).await?;
        let _ = conn.command("RSET", "RSET").await;
        return Ok(results.into_iter().flatten().collect());
    }
    let data = checked(Outcome::from_reply(&data_reply, name, Stage::Data))?;
    let final_outcome = if data.class == Class::Delivered {
        conn.write_message(job.message).await?;
        let end = conn.read_reply("end of DATA").await?;
        checked(Outcome::from_reply(&end, name, Stage::EndOfData))?
    } else {
        data
    };
    Ok(results
        .iter_mut()
        .map(|r| r.take().unwrap_or_else(|| final_outcome.clone()))
        .collect())
}

/// The replies to MAIL, each RCPT and (pipelined) DATA.
type EnvelopeReplies = (Reply, Vec<Reply>, Option<Reply>);

/// MAIL FROM with the parameters the server supports, and the RCPTs: with PIPELINING
/// (RFC 2920) MAIL, every RCPT and DATA in one write; without it one command at a time,
/// no RCPT after a refused MAIL.
async fn envelope(
    conn: &mut Conn,
    job: &Job<'_>,
    ext: &Extensions,
) -> Result<EnvelopeReplies, Outcome> {
    let mut mail = format!("MAIL FROM:<{}>", job.sender);
    if ext.size.is_some() {
        mail.push_str(&format!(" SIZE={}", job.message.len()));
    }
    if job.eight_bit && ext.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if job.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if job.requiretls {
        mail.push_str(" REQUIRETLS");
    }
    let rcpt_lines: Vec<String> = job
        .recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>"))
        .collect();
    if ext.pipelining && ext.esmtp {
        let mut batch = format!("{mail}\r\n");
        for r in &rcpt_lines {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        conn.write(batch.as_bytes(), "sending MAIL FROM").await?;
        let mail_reply = conn.read_reply("MAIL FROM").await?;
        let mut rcpt_replies = Vec::with_capacity(rcpt_lines.len());
        for _ in &rcpt_lines {
            rcpt_replies.push(conn.read_reply("RCPT TO").await?);
        }
        let data_reply = conn.read_reply("DATA").await?;
        return Ok((mail_reply, rcpt_replies, Some(data_reply)));
    }
    let mail_reply = conn.command(&mail, "MAIL FROM").await?;
    let mut rcpt_replies = Vec::new();
    if Stage::Mail.accepts(mail_reply.code) {
        for r in &rcpt_lines {
            rcpt_replies.push(conn.command(r, "RCPT TO").await?);
        }
    }
    Ok((mail_reply, rcpt_replies, None))
}

/// A protocol error ends the whole session: nothing after it can be trusted (a 250 to DATA
/// means the server never waited for the body).
fn checked(o: Outcome) -> Result<Outcome, Outcome> {
    if o.protocol_error { Err(o) } else { Ok(o) }
}

/// A policy requirement not met: final (5.7.x) when the row says bounce, else retried
/// (4.7.x). Never a fallback to plaintext.
fn policy_failure(job: &Job<'_>, detail: u16, reason: String) -> Outcome {
    if job.bounce_on_failure {
        Outcome::permanent(Enhanced(5, 7, detail), reason)
    } else {
        Outcome::temporary(Enhanced(4, 7, detail), reason)
    }
}

/// A pipelined DATA that got 354 although nothing else was accepted must still be ended,
/// with an empty message the server will refuse for want of recipients.
async fn end_empty_data(conn: &mut Conn, data_reply: Option<&Reply>) -> Result<(), Outcome> {
    if data_reply.is_some_and(|r| Stage::Data.accepts(r.code)) {
        conn.write(b".\r\n", "ending an empty DATA").await?;
        conn.read_reply("end of empty DATA").await?;
    }
    Ok(())
}

/// The client TLS config for `may` and `encrypt`: encryption without authentication, as
/// those levels define (the certificate is not checked; `verify` and `secure` come with the
/// policy issue). One shared config, so TLS sessions are resumed across connections.
pub fn unauthenticated_tls_config() -> Arc<rustls::ClientConfig> {
    crate::tls::unauthenticated_client_config()
}
