//! A session with one host: connect, greeting, EHLO, STARTTLS, minimum strength and AUTH,
//! then transactions over it until it is closed.

use std::time::Instant;

use tokio::net::TcpStream;

use super::super::classify::{Class, Outcome, Stage};
use super::auth::authenticate;
use super::conn::Conn;
use super::ehlo::{Extensions, hello};
use super::kx::ClientTls;
use super::starttls::{Upgraded, check_strength, upgrade};
use super::transaction::transaction;
use super::{Failure, Job, Session, with_port};
use crate::fsutil::os_text;
use crate::proto::Enhanced;
use crate::tls::{KxGroups, TlsInfo};

/// Connect, greeting, EHLO, STARTTLS as the level demands (offering `groups`), EHLO
/// again; then the minimum strength and SASL, before any transaction.
pub(super) async fn connect(
    job: &Job<'_>,
    tls: &ClientTls,
    groups: KxGroups,
) -> Result<Connection, Failure> {
    let started = Instant::now();
    let (conn, ext) = open(job).await?;
    let starttls_offered = ext.starttls;
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let upgraded = upgrade(conn, ext, job, (tls, groups)).await?;
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

/// TCP connect, greeting and first EHLO. Any failure here tries the next host: a server
/// that will not talk is no reason to bounce.
async fn open(job: &Job<'_>) -> Result<(Conn, Extensions), Failure> {
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
    // Postfix names the peer without the port in its reasons, with it in `connect to`.
    let peer = format!("{}[{}]", job.host, job.addr.ip());
    greet(Conn::new(tcp, job.command_timeout, peer), job).await
}

/// Trouble before the session is set up: the next host may do better.
fn next_host(outcome: Outcome) -> Failure {
    Failure::All {
        outcome,
        try_next_host: true,
        starttls_offered: false,
        tls: None,
    }
}

/// The greeting and the first EHLO of a new connection; a greeting other than 2xx ends it.
pub(super) async fn greet(mut conn: Conn, job: &Job<'_>) -> Result<(Conn, Extensions), Failure> {
    let peer = conn.name.clone();
    let greeting = conn
        .read_reply("receiving the initial server greeting")
        .await
        .map_err(next_host)?;
    let o = Outcome::from_reply(&greeting, &peer, Stage::Greeting);
    if o.class != Class::Delivered {
        // RFC 5321 section 3.1: after a refusing greeting the client SHOULD send QUIT.
        if !o.protocol_error {
            conn.quit_later();
        }
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

/// An open session with one host, ready for a transaction; kept in the `Pool` between
/// messages to the same host under the same TLS level.
pub struct Connection {
    pub(super) conn: Conn,
    pub(super) ext: Extensions,
    pub(super) name: String,
    pub(super) starttls_offered: bool,
    pub(super) verified_name: Option<String>,
    pub(super) cert_problem: Option<crate::tls::CertProblem>,
    pub(super) tls: Option<TlsInfo>,
    pub(super) setup_secs: f64,
    pub(super) transactions: u32,
    /// False once a transaction failed part-way (timeout, lost connection, protocol error).
    pub(super) in_step: bool,
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
    pub(super) async fn send(&mut self, job: &Job<'_>) -> Result<Session, Failure> {
        let (name, ext, starttls_offered) = (self.name.clone(), &self.ext, self.starttls_offered);
        let seen_tls = self
            .tls
            .clone()
            .map(|t| Box::new((t, self.verified_name.clone())));
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
            .all(|o| o.class == super::super::classify::Class::Temporary)
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
    pub(super) fn still_open(&mut self) -> bool {
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
    pub(super) fn close(self) {
        if self.in_step {
            self.conn.quit_later();
        }
    }
}
