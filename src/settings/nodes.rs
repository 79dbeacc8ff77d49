//! The nodes of a cluster, as they register themselves in the database they share (issue
//! 20): each writes its name, its control API's address and the certificate that API serves,
//! with a heartbeat every few seconds. The Queue page and `postern queue` of any node reach
//! every other through this list, pinning the certificate found here. The row's content is
//! sealed with the settings key like every other row: somebody who can write to the database
//! but has no key cannot add a node of his own and collect the nodes' credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::postgres::{DbThread, Sealer};
use super::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS postern_nodes (
    name TEXT PRIMARY KEY,
    seen TIMESTAMPTZ NOT NULL,
    stopped BOOLEAN NOT NULL,
    sealed BYTEA NOT NULL
);
";

/// What a node says of itself, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Card {
    /// Where the other nodes reach its control API; `None` when it listens on a wildcard
    /// address and `settings.api_address` is not set.
    api: Option<SocketAddr>,
    /// The certificate its control API serves (PEM; public).
    cert_pem: String,
}

/// A registered node, as read back.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub api: Option<SocketAddr>,
    pub cert_pem: String,
    /// Seconds since its last heartbeat, by the database's clock (no node's clock is
    /// trusted against another's).
    pub heartbeat_age_secs: u64,
    /// It said so at a graceful stop.
    pub stopped: bool,
    /// Its row cannot be opened with this node's key: written by a node with another key.
    pub unreadable: bool,
}

pub struct Registry {
    db: DbThread,
    sealer: Sealer,
    me: String,
    /// The table exists (made by this process's first call).
    ready: AtomicBool,
}

fn unreachable(e: String) -> StoreError {
    StoreError::Unreachable(e)
}

impl Registry {
    /// Not connected until the first call; the table is made by the first heartbeat.
    pub fn new(url: &str, sealer: Sealer, me: &str, tls: Arc<rustls::ClientConfig>) -> Registry {
        Registry {
            db: DbThread::new(url, "nodes-db", tls),
            sealer,
            me: me.to_string(),
            ready: AtomicBool::new(false),
        }
    }

    /// Run `f` on the connection, the table made first if this process has not yet.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        if !self.ready.load(Ordering::Relaxed) {
            self.db
                .with(|c| super::postgres::create_schema(c, SCHEMA))
                .map_err(unreachable)?;
            self.ready.store(true, Ordering::Relaxed);
        }
        self.db.with(f).map_err(unreachable)
    }

    /// This node's name in the list.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The credential the nodes show each other's control API.
    pub fn cluster_token(&self) -> String {
        self.sealer.cluster_token()
    }

    /// Say this node is here (or, with `stopped`, that it stopped on purpose).
    pub fn beat(
        &self,
        api: Option<SocketAddr>,
        cert_pem: &str,
        stopped: bool,
    ) -> Result<(), StoreError> {
        let card = Card {
            api,
            cert_pem: cert_pem.to_string(),
        };
        let sealed = self
            .sealer
            .seal(&format!("node/{}", self.me), &serde_json::to_vec(&card)?);
        let name = self.me.clone();
        self.with(move |c| {
                c.execute(
                    "INSERT INTO postern_nodes (name, seen, stopped, sealed) VALUES ($1, now(), $2, $3) ON CONFLICT (name) DO UPDATE SET seen = now(), stopped = EXCLUDED.stopped, sealed = EXCLUDED.sealed",
                    &[&name, &stopped, &sealed],
                )
                .map(|_| ())
            })
    }

    /// Every registered node, by name.
    pub fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT name, GREATEST(0, EXTRACT(EPOCH FROM now() - seen))::BIGINT, stopped, sealed FROM postern_nodes ORDER BY name",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let card = self
                    .sealer
                    .open(&format!("node/{name}"), r.get(3))
                    .ok()
                    .and_then(|plain| serde_json::from_slice::<Card>(&plain).ok());
                Node {
                    unreadable: card.is_none(),
                    api: card.as_ref().and_then(|c| c.api),
                    cert_pem: card.map(|c| c.cert_pem).unwrap_or_default(),
                    heartbeat_age_secs: r.get::<_, i64>(1).max(0) as u64,
                    stopped: r.get(2),
                    name,
                }
            })
            .collect())
    }

    /// Take a node out of the list (one taken out of service); false when it was not there.
    pub fn forget(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with(move |c| c.execute("DELETE FROM postern_nodes WHERE name = $1", &[&name]))
            .map(|n| n > 0)
    }
}
