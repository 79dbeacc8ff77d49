//! The probes: a recipient call-ahead (address verification) and the STARTTLS probe of
//! `postern check-tls`. Neither sends a message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::super::classify::{Class, Outcome, Stage};
use super::conn::Conn;
use super::ehlo::hello;
use super::kx::{ClientTls, Counted, Counts, TlsFailed};
use super::starttls::start_tls;
use crate::fsutil::os_text;
use crate::proto::Reply;
use crate::tls::{KxGroups, TlsInfo};

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
    tls: &ClientTls,
) -> Result<Reply, String> {
    let tls = tls.shared(tls.groups_for(host, false));
    let tcp = tcp(host, addr, timeout).await?;
    let _ = tcp.set_nodelay(true);
    let conn = Conn::new(tcp, timeout, format!("{host}[{}]", addr.ip()));
    let conn = greeted(conn, (host, addr), helo, tls).await?;
    ask_rcpt(conn, rcpt).await
}

/// TCP to `addr` within `timeout`; a failure in Postfix's `connect to` words.
async fn tcp(host: &str, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let name = format!("{host}[{}]:{}", addr.ip(), addr.port());
    tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {name}: Connection timed out"))?
        .map_err(|e| format!("connect to {name}: {}", os_text(&e)))
}

/// Greeting, EHLO, and STARTTLS when offered and accepted (then EHLO again): the session
/// the recipient probe asks its question in.
async fn greeted(
    mut conn: Conn,
    (host, addr): (&str, SocketAddr),
    helo: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Conn, String> {
    let peer = conn.name.clone();
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
            let timeout = conn.timeout;
            conn = start_tls(conn, (host, addr), timeout, tls, None)
                .await
                .map_err(|f| f.reason)?
                .0;
            hello(&mut conn, helo, &peer).await.map_err(|o| o.reason)?;
        }
    }
    Ok(conn)
}

/// `MAIL FROM:<>`, then the RCPT whose reply is the answer; QUIT in the background after.
async fn ask_rcpt(mut conn: Conn, rcpt: &str) -> Result<Reply, String> {
    let mail = conn
        .command("MAIL FROM:<>", "MAIL FROM")
        .await
        .map_err(|o| o.reason)?;
    let o = Outcome::from_reply(&mail, &conn.name, Stage::Mail);
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
    /// The post-quantum ClientHello went unanswered and classical groups were tried, as
    /// delivery would: what happened to the first.
    pub kx_fallback: Option<String>,
}

/// Connect, EHLO, and STARTTLS if offered, accepting any certificate so it can be reported;
/// offering `groups`. A handshake that died right after a post-quantum ClientHello is
/// probed again with classical groups, as delivery retries it.
pub async fn probe(
    host: &str,
    addr: SocketAddr,
    helo: &str,
    timeout: Duration,
    groups: KxGroups,
) -> Result<Probe, String> {
    let (first, unanswered) = probe_once(host, addr, helo, timeout, groups).await?;
    let Some(hello_bytes) = unanswered.filter(|_| groups == KxGroups::PostQuantum) else {
        return Ok(first);
    };
    let (mut again, _) = probe_once(host, addr, helo, timeout, KxGroups::Classical).await?;
    again.kx_fallback = Some(format!(
        "a {hello_bytes}-byte ClientHello offering X25519MLKEM768 went unanswered ({}); classical groups tried, as delivery would",
        first.tls_error.unwrap_or_default()
    ));
    Ok(again)
}

/// One probe; with the ClientHello's size when the handshake died before the peer answered.
async fn probe_once(
    host: &str,
    addr: SocketAddr,
    helo: &str,
    timeout: Duration,
    groups: KxGroups,
) -> Result<(Probe, Option<u64>), String> {
    let name = format!("{host}[{}]:{}", addr.ip(), addr.port());
    let tcp = tcp(host, addr, timeout).await?;
    let mut conn = Conn::new(tcp, timeout, name.clone());
    let greeting = conn.read_reply("greeting").await.map_err(|o| o.reason)?;
    let ext = hello(&mut conn, helo, &name).await.map_err(|o| o.reason)?;
    let mut probe = Probe {
        greeting: greeting.summary(),
        starttls_offered: ext.starttls,
        tls: None,
        chain: Vec::new(),
        tls_error: None,
        kx_fallback: None,
    };
    if !ext.starttls {
        let _ = conn.command("QUIT", "QUIT").await;
        return Ok((probe, None));
    }
    let reply = conn
        .command("STARTTLS", "STARTTLS")
        .await
        .map_err(|o| o.reason)?;
    if !Stage::StartTls.accepts(reply.code) {
        probe.tls_error = Some(format!("STARTTLS refused: {}", reply.summary()));
        return Ok((probe, None));
    }
    let config = crate::tls::unauthenticated_client_config_for(None, groups);
    let unanswered = probe_tls(conn, (host, addr), (timeout, &config), &mut probe).await;
    Ok((probe, unanswered))
}

/// The handshake of a probe, accepting any certificate so that it can be reported; the
/// ClientHello's size when it died before the peer answered.
async fn probe_tls(
    conn: Conn,
    (host, addr): (&str, SocketAddr),
    (timeout, config): (Duration, &Arc<rustls::ClientConfig>),
    probe: &mut Probe,
) -> Option<u64> {
    let server_name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let counts = Counts::default();
    let stream = Counted {
        inner: conn.io.into_inner(),
        counts: counts.clone(),
    };
    let handshake = crate::tls::noting(connector.connect(server_name, stream));
    let failed = match tokio::time::timeout(timeout, handshake).await {
        Ok((Ok(mut tls), noted)) => {
            let state = tls.get_ref().1;
            probe.tls = TlsInfo::from_handshake(state, &noted, false);
            probe.chain = state
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let _ = tls.write_all(b"QUIT\r\n").await;
            return None;
        }
        Ok((Err(e), _)) => {
            let why = crate::tls::words::handshake_error(&e);
            TlsFailed::first_flight(why, Some(&e), &counts)
        }
        Err(_) => TlsFailed::first_flight("TLS handshake timed out".into(), None, &counts),
    };
    probe.tls_error = Some(failed.reason);
    failed.unanswered
}
