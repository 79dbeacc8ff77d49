//! The sending side: sessions that send their share of the messages, one command at a
//! time as smtp-source does (no pipelining), and time each final dot to its 250.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::RunArgs;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Conn = BufReader<Box<dyn Io>>;

/// What the sources did.
pub struct Sent {
    /// Microseconds from the final dot written to its 250 read.
    pub latency: Histogram<u64>,
    pub handshakes: usize,
    pub resumed: usize,
}

struct Plan {
    args: RunArgs,
    /// Messages not yet taken by a session.
    left: AtomicUsize,
    tls: Option<tokio_rustls::TlsConnector>,
    body: Vec<u8>,
}

pub async fn run(args: &RunArgs) -> anyhow::Result<Sent> {
    let tls = args.starttls.then(|| connector(!args.no_resume));
    let plan = Arc::new(Plan {
        args: args.clone(),
        left: AtomicUsize::new(args.count),
        tls,
        body: body(args.size),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.sessions {
        let plan = plan.clone();
        tasks.spawn(async move { sessions(&plan).await });
    }
    let mut sent = Sent {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        handshakes: 0,
        resumed: 0,
    };
    while let Some(done) = tasks.join_next().await {
        let one = done??;
        sent.latency.add(&one.latency)?;
        sent.handshakes += one.handshakes;
        sent.resumed += one.resumed;
    }
    Ok(sent)
}

/// One sender: connections one after the other until no message is left.
async fn sessions(plan: &Plan) -> anyhow::Result<Sent> {
    let mut sent = Sent {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        handshakes: 0,
        resumed: 0,
    };
    loop {
        let n = take(&plan.left, plan.args.per_conn);
        if n == 0 {
            return Ok(sent);
        }
        let mut conn = open(plan.args.relay).await?;
        if let Some(tls) = &plan.tls {
            let resumed;
            (conn, resumed) = starttls(conn, tls).await?;
            sent.handshakes += 1;
            sent.resumed += usize::from(resumed);
        }
        for _ in 0..n {
            let micros = message(&mut conn, plan).await?;
            sent.latency.record(micros.max(1))?;
        }
        command(&mut conn, b"QUIT\r\n", 221).await?;
    }
}

/// Up to `most` of what is left.
fn take(left: &AtomicUsize, most: usize) -> usize {
    let mut now = left.load(Ordering::SeqCst);
    loop {
        let n = now.min(most);
        if n == 0 {
            return 0;
        }
        match left.compare_exchange(now, now - n, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return n,
            Err(actual) => now = actual,
        }
    }
}

async fn open(relay: SocketAddr) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(relay)
        .await
        .with_context(|| format!("connect to {relay}"))?;
    tcp.set_nodelay(true)?;
    let mut conn: Conn = BufReader::with_capacity(8 * 1024, Box::new(tcp));
    reply(&mut conn, 220).await?;
    command(&mut conn, b"EHLO postern-bench.localdomain\r\n", 250).await?;
    Ok(conn)
}

/// STARTTLS, the handshake and EHLO again; whether the session was resumed.
async fn starttls(
    mut conn: Conn,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<(Conn, bool)> {
    command(&mut conn, b"STARTTLS\r\n", 220).await?;
    if !conn.buffer().is_empty() {
        bail!("the relay sent more after its 220 to STARTTLS");
    }
    let name = rustls_pki_types::ServerName::try_from("relay-bench.localdomain")?;
    let stream = tls.connect(name, conn.into_inner()).await?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut conn: Conn = BufReader::with_capacity(8 * 1024, Box::new(stream));
    command(&mut conn, b"EHLO postern-bench.localdomain\r\n", 250).await?;
    Ok((conn, resumed))
}

/// One transaction; the microseconds from the final dot to its 250.
async fn message(conn: &mut Conn, plan: &Plan) -> anyhow::Result<u64> {
    let args = &plan.args;
    command(
        conn,
        format!("MAIL FROM:<{}>\r\n", args.from).as_bytes(),
        250,
    )
    .await?;
    command(conn, format!("RCPT TO:<{}>\r\n", args.to).as_bytes(), 250).await?;
    command(conn, b"DATA\r\n", 354).await?;
    let head = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: postern-bench\r\nMessage-ID: <{}.{:x}@postern-bench>\r\n\r\n",
        args.from,
        args.to,
        std::process::id(),
        rand_id()
    );
    let w = conn.get_mut();
    w.write_all(head.as_bytes()).await?;
    w.write_all(&plan.body).await?;
    w.flush().await?;
    let dot = Instant::now();
    reply(conn, 250).await?;
    Ok(dot.elapsed().as_micros() as u64)
}

async fn command(conn: &mut Conn, line: &[u8], want: u16) -> anyhow::Result<()> {
    let w = conn.get_mut();
    w.write_all(line).await?;
    w.flush().await?;
    reply(conn, want).await
}

/// A whole reply (its last line has a space after the code), which must have code `want`.
async fn reply(conn: &mut Conn, want: u16) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("the relay closed the connection (waiting for {want})");
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code != want {
            bail!("wanted {want}, the relay said: {}", line.trim_end());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

/// SIZE bytes of 78-character lines and CRLF, then the final dot.
fn body(size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size + 5);
    let line = [b'X'; 78];
    while b.len() + 80 <= size {
        b.extend_from_slice(&line);
        b.extend_from_slice(b"\r\n");
    }
    if b.len() < size {
        let rest = size - b.len();
        b.extend(std::iter::repeat_n(b'X', rest.saturating_sub(2)));
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b".\r\n");
    b
}

/// A per-message number for the Message-ID (not secret, only distinct).
fn rand_id() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (NEXT.fetch_add(1, Ordering::Relaxed) as u64).rotate_left(40)
}

fn connector(resume: bool) -> tokio_rustls::TlsConnector {
    let provider = crate::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::AnyCert(provider)))
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `n` sessions opened and greeted, then held (closed when dropped).
pub async fn hold(relay: SocketAddr, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(open(relay).await?);
    }
    Ok(held)
}
