//! The socket side of a session: buffered reads with timeouts, replies queued and flushed
//! only when the client has nothing more pipelined (RFC 2920 section 3.1), and STARTTLS,
//! which consumes the plaintext stream and returns the TLS one.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::proto::{DotReader, MAX_COMMAND_LINE, Progress, Reply};
use crate::tls::TlsInfo;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    Eof,
    Timeout,
    /// Shutdown was requested while the session was idle between commands.
    ShuttingDown,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

pub enum Line {
    Line(Vec<u8>),
    TooLong,
}

/// Bytes asked of the socket per read: small between commands (an idle session should
/// cost little; the buffer's pages are touched when it grows), large inside DATA and BDAT.
const COMMAND_CHUNK: usize = 1024;
const READ_CHUNK: usize = 64 * 1024;

pub struct Conn {
    stream: Option<Stream>,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    pos: usize,
    out: Vec<u8>,
    timeout: Duration,
    /// Bytes per second a DATA or BDAT transfer must keep up (0: no minimum).
    min_data_rate: u64,
}

impl Conn {
    pub fn new(tcp: TcpStream, timeout: Duration) -> Conn {
        Conn {
            stream: Some(Stream::Plain(tcp)),
            buf: Vec::with_capacity(COMMAND_CHUNK),
            pos: 0,
            out: Vec::with_capacity(512),
            timeout,
            min_data_rate: 0,
        }
    }

    /// Postfix's smtpd_min_data_rate: a transfer's deadline grows by one second per
    /// `rate` bytes received, and by nothing else.
    pub fn with_min_data_rate(mut self, rate: u64) -> Conn {
        self.min_data_rate = rate;
        self
    }

    /// The deadline after `n` more bytes of a transfer arrived.
    fn extend(&self, deadline: Instant, n: usize) -> Instant {
        match self.min_data_rate {
            0 => Instant::now() + self.timeout,
            rate => deadline + Duration::from_secs_f64(n as f64 / rate as f64),
        }
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "stream lost during TLS handshake",
            )
        })
    }

    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let timeout = self.timeout;
        let stream = self.stream()?;
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        let result = tokio::time::timeout(timeout, write)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout")));
        self.out = out;
        self.out.clear();
        result
    }

    /// Send one reply now (greeting, 421 before closing).
    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.queue(reply);
        self.flush().await
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn has_unread(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Flush pending replies, then read more from the socket into the buffer, by `deadline`
    /// at the latest (a whole command, or a transfer, has one: a client trickling a byte at
    /// a time cannot hold its slot). While `idle` is given, a shutdown request ends the wait.
    /// Returns the bytes read.
    async fn fill(
        &mut self,
        idle: Option<&mut watch::Receiver<bool>>,
        deadline: Instant,
        chunk: usize,
    ) -> Result<usize, ReadError> {
        self.flush().await?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        // Read into the spare capacity: nothing is zero-filled first (a 64 KiB memset per
        // DATA read was 1 % of the relay's CPU), and an idle session's buffer pages are
        // touched only as far as bytes arrive.
        self.buf.reserve(chunk);
        let stream = self.stream.as_mut().ok_or(ReadError::Eof)?;
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut self.buf));
        let result = match idle {
            Some(shutdown) if *shutdown.borrow() => Err(ReadError::ShuttingDown),
            Some(shutdown) => tokio::select! {
                r = read => r.map_err(|_| ReadError::Timeout),
                _ = shutdown.changed() => Err(ReadError::ShuttingDown),
            },
            None => read.await.map_err(|_| ReadError::Timeout),
        };
        let n = match result {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.buf.truncate(start);
                return Err(ReadError::Io(e));
            }
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        self.buf.truncate(start + n);
        if n == 0 {
            return Err(ReadError::Eof);
        }
        Ok(n)
    }

    /// The next command line without its line ending. Lines longer than `MAX_COMMAND_LINE`
    /// are consumed to their end and reported as `TooLong`.
    pub async fn read_line(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Line, ReadError> {
        let mut too_long = false;
        // One deadline for the whole line, however it trickles in (smtpd_timeout).
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(nl) = self.unread().iter().position(|&b| b == b'\n') {
                let line_end = self.pos + nl;
                let mut line = self.buf[self.pos..line_end].to_vec();
                self.pos = line_end + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(if too_long || line.len() > MAX_COMMAND_LINE {
                    Line::TooLong
                } else {
                    Line::Line(line)
                });
            }
            if self.unread().len() > MAX_COMMAND_LINE {
                too_long = true;
                self.pos = self.buf.len();
            }
            self.fill(Some(shutdown), deadline, COMMAND_CHUNK).await?;
        }
    }

    /// After a transfer: give back the large read buffer (what is left unread is kept).
    fn shrink(&mut self) {
        if self.buf.capacity() > COMMAND_CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.shrink_to(COMMAND_CHUNK);
        }
    }

    /// Feed DATA bytes to `reader` until the end of data; bytes after it stay buffered.
    pub async fn read_data(&mut self, reader: &mut DotReader) -> Result<(), ReadError> {
        let mut deadline = Instant::now() + self.timeout;
        loop {
            if self.has_unread() {
                match reader.feed(self.unread()) {
                    Progress::Done { consumed } => {
                        self.pos += consumed;
                        self.shrink();
                        return Ok(());
                    }
                    Progress::NeedMore => self.pos = self.buf.len(),
                }
            }
            let n = self.fill(None, deadline, READ_CHUNK).await?;
            deadline = self.extend(deadline, n);
        }
    }

    /// Read exactly `size` bytes of a BDAT chunk; `keep` false discards them (a refused
    /// chunk must still be consumed, RFC 3030 section 3).
    pub async fn read_chunk(
        &mut self,
        size: u64,
        keep: bool,
        into: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let mut left = size;
        let mut deadline = Instant::now() + self.timeout;
        loop {
            let take = (self.unread().len() as u64).min(left) as usize;
            if keep {
                into.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            }
            self.pos += take;
            left -= take as u64;
            if left == 0 {
                self.shrink();
                return Ok(());
            }
            let n = self.fill(None, deadline, READ_CHUNK).await?;
            deadline = self.extend(deadline, n);
        }
    }

    /// RFC 3207 section 4 and the STARTTLS command-injection bug class (CVE-2011-0411):
    /// anything the client pipelined after STARTTLS was sent in plaintext and must not be
    /// read as if it came over TLS. Returns how many bytes were thrown away.
    pub fn discard_pipelined(&mut self) -> usize {
        let n = self.unread().len();
        self.buf.clear();
        self.pos = 0;
        n
    }

    /// Flush the 220, then handshake over the same TCP connection. Returns what was
    /// negotiated and the client's certificate chain (empty when it showed none).
    pub async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
    ) -> io::Result<(TlsInfo, Vec<rustls_pki_types::CertificateDer<'static>>)> {
        self.flush().await?;
        let tcp = match self.stream.take() {
            Some(Stream::Plain(tcp)) => tcp,
            Some(tls @ Stream::Tls(_)) => {
                self.stream = Some(tls);
                return Err(io::Error::other("TLS already active"));
            }
            None => return Err(io::Error::new(io::ErrorKind::NotConnected, "no stream")),
        };
        // Noted: the signatures the handshake made, for Postfix's TLS line.
        let handshake = crate::tls::noting(acceptor.accept(tcp));
        let (tls, noted) = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout"))?;
        let tls = tls?;
        let state = tls.get_ref().1;
        let info = TlsInfo::from_handshake(state, &noted, true)
            .ok_or_else(|| io::Error::other("handshake finished without a cipher suite"))?;
        let chain = state
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        self.stream = Some(Stream::Tls(Box::new(tls)));
        Ok((info, chain))
    }

    pub async fn close(&mut self) {
        let _ = self.flush().await;
        if let Some(stream) = self.stream.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
        }
    }
}
