//! Each node says it is here: every `HEARTBEAT` it writes its control API's address and the
//! certificate that API serves into the node list, and at a graceful stop that it stopped,
//! so the others tell a node stopped on purpose from one that is gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::client::served_cert_path;
use super::nodes::Cluster;

/// How often a node says it is here.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Register this node and beat until `stop`; a graceful stop is said in the list.
pub async fn heartbeat(
    cluster: Arc<Cluster>,
    api: Option<SocketAddr>,
    data_dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let ok = beat(&cluster, api, &data_dir, false).await;
        match (&ok, failing) {
            (Err(e), false) => {
                tracing::warn!(target: "postern/master", "warning: cannot register this node in the node list: {e}; the other nodes' Queue pages show it as not answering until it can");
            }
            (Ok(()), true) => {
                tracing::info!(target: "postern/master", "node {} registered in the node list again", cluster.me());
            }
            _ => {}
        }
        failing = ok.is_err();
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Said if the database answers soon; a stop does not wait on one that is away.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), beat(&cluster, api, &data_dir, true)).await;
}

async fn beat(
    cluster: &Arc<Cluster>,
    api: Option<SocketAddr>,
    data_dir: &Path,
    stopped: bool,
) -> Result<(), String> {
    let cert = served_cert_path(data_dir);
    let pem = std::fs::read_to_string(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.registry.beat(api, &pem, stopped))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
