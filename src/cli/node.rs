//! `postern node`: this node of a cluster (draining it for maintenance) and the node list
//! of the shared database.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::Method;
use postern::admin::NodeStatus;
use postern::admin::client::ApiClient;
use postern::admin::cluster::NodeView;
use postern::config::Config;

use super::{api_client, parse_response, url_escape};

#[derive(clap::Subcommand)]
pub enum NodeAction {
    /// Draining or not, and how many messages are queued here.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Refuse new mail (421) and hand every queued message to the peer node over SMTP, with
    /// its original envelope; each is deleted here only after the peer's 250.
    Drain {
        /// The peer's SMTP listener, ip:port.
        #[arg(long)]
        to: String,
        /// Wait this many seconds for the queue to empty (held messages stay); 0: return now.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Every node in the node list of the shared database: address, last heartbeat, and
    /// whether it answers now.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of the node list (one taken out of service for good).
    Forget { name: String },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: NodeAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    match action {
        NodeAction::Status { json } => {
            let s = status(&client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", status_text(&s));
            }
        }
        NodeAction::Drain { to, wait } => drain(&client, &to, wait).await?,
        NodeAction::List { json } => {
            let (code, body) = client
                .request(Method::GET, "/api/v1/cluster/nodes", None)
                .await?;
            let nodes: Vec<NodeView> = parse_response(code, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print!("{}", node_listing(&nodes));
            }
        }
        NodeAction::Forget { name } => {
            let path = format!("/api/v1/cluster/nodes/{}", url_escape(&name));
            let (code, body) = client.request(Method::DELETE, &path, None).await?;
            let _: serde_json::Value = parse_response(code, &body)?;
            println!("node {name} removed from the node list");
        }
    }
    Ok(())
}

async fn status(client: &ApiClient) -> anyhow::Result<NodeStatus> {
    let (status, body) = client.request(Method::GET, "/api/v1/node", None).await?;
    parse_response::<NodeStatus>(status, &body)
}

/// `node drain --to PEER [--wait SECS]`: start draining, then (with `--wait`) ask once a
/// second until what is not held has gone; an error when some is left at the end.
async fn drain(client: &ApiClient, to: &str, wait: u64) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({ "peer": to }))?;
    let (code, body) = client
        .request(Method::POST, "/api/v1/node/drain", Some(body))
        .await?;
    let s: NodeStatus = parse_response(code, &body)?;
    println!(
        "draining to {to}: new mail refused, {} queued message(s) handed over",
        s.queued - s.held
    );
    let until = Instant::now() + Duration::from_secs(wait);
    let mut left = s.queued - s.held;
    while left > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = status(client).await?;
        left = s.queued - s.held;
    }
    if wait > 0 {
        anyhow::ensure!(left == 0, "{left} message(s) still queued after {wait}s");
        println!("drained: the queue is empty");
    }
    Ok(())
}

/// Draining or not, and the queue: `accepting mail; 3 queued (1 on hold)`.
fn status_text(s: &NodeStatus) -> String {
    let mode = match &s.peer {
        Some(p) => format!("draining to {p}"),
        None => "accepting mail".into(),
    };
    format!("{mode}; {} queued ({} on hold)", s.queued, s.held)
}

/// One line per node: name, API, heartbeat age, and what it said or why it did not answer.
fn node_listing(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    for n in nodes {
        let me = if n.this { " (this node)" } else { "" };
        let api = n.api.as_deref().unwrap_or("no API address");
        let state = match (&n.status, &n.error) {
            (Some(s), _) => status_text(s),
            (None, Some(e)) => format!("not answering: {e}"),
            (None, None) => "not answering".into(),
        };
        out.push_str(&format!(
            "{}{me}  {api}  heartbeat {}s ago  {state}\n",
            n.name, n.heartbeat_age_secs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, this: bool, status: Option<NodeStatus>, error: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            api: (name != "gw3").then(|| format!("192.0.2.{}:8443", &name[2..])),
            this,
            heartbeat_age_secs: 4,
            answered: status.is_some(),
            error: error.map(str::to_string),
            status,
        }
    }

    #[test]
    fn node_list_says_what_each_node_answered_or_why_not() {
        let accepting = NodeStatus {
            draining: false,
            peer: None,
            queued: 3,
            held: 1,
        };
        let draining = NodeStatus {
            draining: true,
            peer: Some("192.0.2.9:25".into()),
            queued: 0,
            held: 0,
        };
        let nodes = [
            view("gw1", true, Some(accepting), None),
            view("gw2", false, Some(draining), None),
            view("gw3", false, None, Some("connection refused")),
        ];
        assert_eq!(
            node_listing(&nodes),
            "gw1 (this node)  192.0.2.1:8443  heartbeat 4s ago  accepting mail; 3 queued (1 on hold)\n\
             gw2  192.0.2.2:8443  heartbeat 4s ago  draining to 192.0.2.9:25; 0 queued (0 on hold)\n\
             gw3  no API address  heartbeat 4s ago  not answering: connection refused\n"
        );
    }
}
