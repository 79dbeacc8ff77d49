//! What every listener and background task shares: binding the listening sockets, the
//! accept step, and the shutdown signal (a `watch` channel that turns true once). The
//! servers (inbound, admin) and the tasks (certificates, delivery) import it from here,
//! downwards; nothing in the crate imports the crate root.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;

/// The sockets a server runs on; tests bind port 0 and pass them in.
pub struct Listeners {
    pub smtp: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Bind the addresses of the config; errors name the config key.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let smtp = listen(config.smtp.listen)
            .with_context(|| format!("smtp.listen = {}: cannot listen", config.smtp.listen))?;
        let admin = listen(config.admin.listen)
            .with_context(|| format!("admin.listen = {}: cannot listen", config.admin.listen))?;
        Ok(Listeners { smtp, admin })
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Connections the kernel completes and queues for us while every slot is taken (std's
/// default is 128): a burst past the connection caps waits there rather than being refused.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection on `listener`. An accept error (EMFILE and friends) is logged and
/// followed by a short pause rather than a busy loop; the caller never sees it.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::warn!(target: "postern/master", "warning: accept on {addr}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Resolves once `rx` has turned true (or its sender is gone). The guard `wait_for` returns
/// is dropped here, so callers' futures stay `Send`.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
