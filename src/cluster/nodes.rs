//! The node list as a running node reads it: the nodes registered in the database they share
//! (`settings::nodes` keeps the table, sealed with the settings key), with the list last read
//! kept for when that database is away, so the other nodes are still asked.

use std::sync::{Arc, Mutex};

use crate::settings::StoreError;
pub use crate::settings::nodes::{Node, Registry};

pub struct Cluster {
    pub(super) registry: Registry,
    /// The cluster credential the nodes show each other's control API.
    token: String,
    /// The node list as last read: what is asked while the database is away.
    known: Mutex<Vec<Node>>,
}

impl Cluster {
    pub fn new(registry: Registry) -> Cluster {
        Cluster {
            token: registry.cluster_token(),
            registry,
            known: Mutex::new(Vec::new()),
        }
    }

    /// This node's name in the list.
    pub fn me(&self) -> &str {
        self.registry.me()
    }

    /// The cluster credential, for comparing a bearer token with (in constant time).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The registered nodes, and why the list is the one last read when it cannot be read.
    pub async fn nodes(self: &Arc<Self>) -> (Vec<Node>, Option<String>) {
        let me = self.clone();
        let read = tokio::task::spawn_blocking(move || me.registry.nodes()).await;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(Ok(nodes)) => {
                *known = nodes.clone();
                (nodes, None)
            }
            Ok(Err(e)) => (known.clone(), Some(e.to_string())),
            Err(e) => (known.clone(), Some(e.to_string())),
        }
    }

    /// Take a node out of the list (one taken out of service); false when it was not there.
    pub async fn forget(self: &Arc<Self>, name: &str) -> Result<bool, ForgetError> {
        let (c, n) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || c.registry.forget(&n))
            .await
            .map_err(|e| ForgetError::Task(e.to_string()))?
            .map_err(ForgetError::Database)
    }
}

/// Why a node could not be taken out of the list.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The blocking task did not finish (a panic or a stop): a fault of this node.
    #[error("{0}")]
    Task(String),
    /// The shared database did not do it.
    #[error("{0}")]
    Database(StoreError),
}

/// "12 s", "3 min", "2 h": how long ago a heartbeat was.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}
