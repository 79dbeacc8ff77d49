//! The counting sink: answers 250 to everything, reads DATA to its final dot, and notes the
//! moment the COUNT-th message has arrived. Replies to pipelined commands go out together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct Sink {
    received: Arc<AtomicUsize>,
    all: watch::Receiver<Option<Instant>>,
}

struct Shared {
    received: Arc<AtomicUsize>,
    count: usize,
    all: watch::Sender<Option<Instant>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Sink {
    pub async fn start(addr: SocketAddr, count: usize, starttls: bool) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let (tx, rx) = watch::channel(None);
        let received = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            received: received.clone(),
            count,
            all: tx,
            tls: starttls.then(acceptor).transpose()?,
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = session(Box::new(tcp), &shared).await;
                });
            }
        });
        Ok(Sink { received, all: rx })
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// When the COUNT-th message's final dot was read.
    pub async fn all_received(&self) -> Instant {
        let mut all = self.all.clone();
        loop {
            if let Some(at) = *all.borrow_and_update() {
                return at;
            }
            if all.changed().await.is_err() {
                // The sender lives in the accept task, which never ends on its own.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::generate_simple_self_signed(vec!["postern-bench-sink.localdomain".into()])?;
    let cert = key.cert.der().clone();
    let private = rustls_pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn session(io: Box<dyn Io>, shared: &Shared) -> std::io::Result<()> {
    let mut io = BufReader::with_capacity(16 * 1024, io);
    let mut out: Vec<u8> = b"220 postern-bench sink ESMTP\r\n".to_vec();
    let mut line = Vec::with_capacity(256);
    let mut in_tls = false;
    loop {
        if io.buffer().is_empty() {
            flush(&mut io, &mut out).await?;
        }
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        match &verb[..] {
            b"EHLO" => {
                out.extend_from_slice(b"250-postern-bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
                if shared.tls.is_some() && !in_tls {
                    out.extend_from_slice(b"250-STARTTLS\r\n");
                }
                out.extend_from_slice(b"250 SIZE 104857600\r\n");
            }
            b"STAR" if shared.tls.is_some() && !in_tls => {
                out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                flush(&mut io, &mut out).await?;
                let Some(tls) = &shared.tls else {
                    unreachable!("checked in the match guard")
                };
                let stream = tls.accept(io.into_inner()).await?;
                io = BufReader::with_capacity(16 * 1024, Box::new(stream));
                in_tls = true;
            }
            b"DATA" => {
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                flush(&mut io, &mut out).await?;
                read_data(&mut io, &mut line).await?;
                let n = shared.received.fetch_add(1, Ordering::SeqCst) + 1;
                if n == shared.count {
                    let _ = shared.all.send(Some(Instant::now()));
                }
                out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
            }
            b"QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                return flush(&mut io, &mut out).await;
            }
            _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
        }
    }
}

async fn flush(io: &mut BufReader<Box<dyn Io>>, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        io.get_mut().write_all(out).await?;
        io.get_mut().flush().await?;
        out.clear();
    }
    Ok(())
}

/// Lines up to the one that is only ".".
async fn read_data(io: &mut BufReader<Box<dyn Io>>, line: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        line.clear();
        if io.read_until(b'\n', line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(());
        }
    }
}
