//! Which key-exchange groups a connection offers. X25519MLKEM768 first (with an X25519
//! share beside it) makes a ClientHello of about 1.5 KB, two TCP segments: a host, or a
//! middlebox in front of it, that cannot take one resets or closes the connection, or goes
//! quiet, before it sends a byte of its handshake. Such a failure is retried once with
//! classical groups only (a ClientHello of a few hundred bytes), logged, and the host
//! remembered for `REMEMBER`, so its next connections go classical at once. A policy row
//! can ask for classical groups for a destination outright (`Job::classical_kx`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::KxGroups;

/// How long a host whose handshake failed after the post-quantum ClientHello gets
/// classical groups at once.
pub const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// Hosts remembered at most; the one remembered longest ago goes first.
const MAX_HOSTS: usize = 10_000;

/// The client configs delivery shares (so TLS sessions resume across connections), one per
/// set of groups, and the hosts that get classical groups for now.
pub struct ClientTls {
    post_quantum: Arc<rustls::ClientConfig>,
    classical: Arc<rustls::ClientConfig>,
    remembered: ClassicalHosts,
}

impl Default for ClientTls {
    fn default() -> ClientTls {
        ClientTls::new(REMEMBER)
    }
}

impl ClientTls {
    /// Shared configs for `may` and `encrypt`; a host is remembered for `remember`.
    pub fn new(remember: Duration) -> ClientTls {
        let config = |g| crate::tls::unauthenticated_client_config_for(None, g);
        ClientTls {
            post_quantum: config(KxGroups::PostQuantum),
            classical: config(KxGroups::Classical),
            remembered: ClassicalHosts::new(remember, MAX_HOSTS),
        }
    }

    /// The shared config offering `groups`.
    pub(super) fn shared(&self, groups: KxGroups) -> &Arc<rustls::ClientConfig> {
        match groups {
            KxGroups::PostQuantum => &self.post_quantum,
            KxGroups::Classical => &self.classical,
        }
    }

    /// The groups a new connection to `host` offers: classical where the row asks for it
    /// or the host is remembered, else post-quantum first.
    pub fn groups_for(&self, host: &str, classical_kx: bool) -> KxGroups {
        match classical_kx || self.remembered.remembers(host) {
            true => KxGroups::Classical,
            false => KxGroups::PostQuantum,
        }
    }

    /// `host` failed after the post-quantum ClientHello: classical from now on, for a while.
    pub(super) fn remember(&self, host: &str) {
        self.remembered.remember(host);
    }

    /// Whether `host` is remembered now (the admin API and tests ask).
    pub fn remembers(&self, host: &str) -> bool {
        self.remembered.remembers(host)
    }
}

/// A handshake that failed: the words, and whether the peer answered nothing at all.
#[derive(Debug)]
pub(super) struct TlsFailed {
    pub(super) reason: String,
    /// Bytes we sent (the ClientHello) when the peer reset or closed the connection, or
    /// timed out, before sending a byte of its own: what a ClientHello it could not take
    /// looks like. `None`: it answered, or failed otherwise.
    pub(super) unanswered: Option<u64>,
}

impl TlsFailed {
    pub(super) fn new(reason: impl Into<String>) -> TlsFailed {
        TlsFailed {
            reason: reason.into(),
            unanswered: None,
        }
    }

    /// A failure that a smaller ClientHello may not meet: reset, closed, or timed out (`e`
    /// is `None`) with nothing read from the peer.
    pub(super) fn first_flight(
        reason: String,
        e: Option<&std::io::Error>,
        io: &Counts,
    ) -> TlsFailed {
        use std::io::ErrorKind as K;
        let dropped = e.is_none_or(|e| {
            matches!(
                e.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe
            )
        });
        let (read, written) = io.get();
        TlsFailed {
            reason,
            unanswered: (dropped && read == 0).then_some(written),
        }
    }
}

/// Bytes read from and written to a stream, shared with whoever wraps it (`Counted`).
#[derive(Debug, Default, Clone)]
pub(super) struct Counts(Arc<(AtomicU64, AtomicU64)>);

impl Counts {
    fn get(&self) -> (u64, u64) {
        (
            self.0.0.load(Ordering::Relaxed),
            self.0.1.load(Ordering::Relaxed),
        )
    }
}

/// A stream that counts its bytes into `Counts`: the handshake's first flight, seen from
/// outside the TLS library (which says only "reset" or "end of file").
pub(super) struct Counted<T> {
    pub(super) inner: T,
    pub(super) counts: Counts,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.counts.0.0.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.counts.0.1.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.counts.0.1.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Host names (lower case) and when each stops being remembered; bounded.
struct ClassicalHosts {
    until: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    max: usize,
}

impl ClassicalHosts {
    fn new(ttl: Duration, max: usize) -> ClassicalHosts {
        ClassicalHosts {
            until: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    fn remember(&self, host: &str) {
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= self.max {
            until.retain(|_, t| *t > now);
        }
        if until.len() >= self.max
            && let Some(oldest) = until
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(h, _)| h.clone())
        {
            until.remove(&oldest);
        }
        until.insert(host.to_ascii_lowercase(), now + self.ttl);
    }

    fn remembers(&self, host: &str) -> bool {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until
            .get(&host.to_ascii_lowercase())
            .is_some_and(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_for_a_while_and_bounded() {
        let hosts = ClassicalHosts::new(Duration::from_secs(60), 2);
        hosts.remember("MX1.example");
        assert!(hosts.remembers("mx1.example"));
        assert!(!hosts.remembers("mx2.example"));
        hosts.remember("mx2.example");
        hosts.remember("mx3.example");
        // Full: the one remembered first made room.
        assert!(!hosts.remembers("mx1.example"));
        assert!(hosts.remembers("mx2.example") && hosts.remembers("mx3.example"));
        let gone = ClassicalHosts::new(Duration::ZERO, 2);
        gone.remember("mx1.example");
        assert!(!gone.remembers("mx1.example"));
    }

    #[test]
    fn a_row_or_the_memory_makes_it_classical() {
        let tls = ClientTls::new(Duration::from_secs(60));
        assert_eq!(tls.groups_for("mx.example", false), KxGroups::PostQuantum);
        assert_eq!(tls.groups_for("mx.example", true), KxGroups::Classical);
        tls.remember("mx.example");
        assert_eq!(tls.groups_for("MX.example", false), KxGroups::Classical);
    }
}
