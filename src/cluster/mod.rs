//! The cluster (issue 20): several postern nodes in front of the same domains, each with its
//! own spool, sharing one PostgreSQL database for settings, delivery records and the node
//! list. Here: the node list as a node reads it (`nodes`), its heartbeat (`heartbeat`), the
//! node-to-node HTTPS client (`client`) and asking the other nodes (`fanout`). The Queue
//! page and `postern queue` merge what every node answers (`admin::cluster`).
//!
//! Between nodes: HTTPS to the address a node registered, pinned to the certificate it
//! registered (both sealed with the settings key), and the cluster credential derived from
//! that key. The credential opens a node's own queue and status only (`admits_path`): it
//! changes no settings, and a request made with it is never passed on, so asking cannot loop.

pub mod client;
pub mod fanout;
pub mod heartbeat;
pub mod nodes;

use hyper::Method;

pub use client::Call;
pub use fanout::{ClusterError, qualified};
pub use heartbeat::{HEARTBEAT, heartbeat};
pub use nodes::{Cluster, ForgetError, Node, age};

/// What the cluster credential may reach: one node's own queue and status.
pub fn admits_path(method: &Method, path: &str) -> bool {
    path == "/api/v1/queue"
        || path.starts_with("/api/v1/queue/")
        || (path == "/api/v1/node" && method == Method::GET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_credential_opens_a_nodes_own_queue_and_status_only() {
        assert!(admits_path(&Method::GET, "/api/v1/queue/page"));
        assert!(admits_path(&Method::POST, "/api/v1/queue/act"));
        assert!(admits_path(&Method::DELETE, "/api/v1/queue/4F2A"));
        assert!(admits_path(&Method::GET, "/api/v1/node"));
        assert!(!admits_path(&Method::POST, "/api/v1/node/drain"));
        assert!(!admits_path(&Method::GET, "/api/v1/queuex"));
        assert!(!admits_path(&Method::GET, "/api/v1/cluster/queue"));
        assert!(!admits_path(&Method::PUT, "/api/v1/settings"));
    }
}
