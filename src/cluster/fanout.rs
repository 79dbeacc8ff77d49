//! Asking the other nodes (issue 20): one node, every other node at once, or whichever node
//! holds a queue ID. A node that does not answer is named with the reason, never silently
//! left out; a node's own error is passed on with its status.

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::client::{Call, call};
use super::nodes::{Cluster, Node};

/// What the cluster answers when a node cannot: the status the control API passes on, the
/// words, and the field they are about.
#[derive(Debug)]
pub struct ClusterError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
}

impl ClusterError {
    pub fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> ClusterError {
        ClusterError {
            status,
            error: error.into(),
            field: field.map(str::to_string),
        }
    }
}

/// A node's error body, as its control API writes it: `{"error": "...", "field": "..."}`.
#[derive(Deserialize)]
struct Said {
    error: String,
    #[serde(default)]
    field: Option<String>,
}

/// A node's answer as JSON, or its error passed on with its status.
fn answer<T: DeserializeOwned>(
    node: &str,
    (status, body): (StatusCode, Vec<u8>),
) -> Result<T, ClusterError> {
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            ClusterError::new(
                StatusCode::BAD_GATEWAY,
                format!("node {node}: unreadable answer: {e}"),
                None,
            )
        });
    }
    let said: Option<Said> = serde_json::from_slice(&body).ok();
    let (error, field) = said.map_or((format!("HTTP {status}"), None), |e| (e.error, e.field));
    Err(ClusterError {
        status,
        error: format!("node {node}: {error}"),
        field,
    })
}

fn unreachable_node(node: &str, why: String) -> ClusterError {
    ClusterError::new(
        StatusCode::BAD_GATEWAY,
        format!("node {node} does not answer: {why}"),
        None,
    )
}

/// A queue ID with the node that holds it: `4F2A91C0@gw2`; without `@node`, wherever it is.
pub fn qualified(id: &str) -> (&str, Option<&str>) {
    match id.split_once('@') {
        Some((id, node)) => (id, Some(node)),
        None => (id, None),
    }
}

impl Cluster {
    /// One node asked: its answer, its own error with its status, or a 502 naming it when
    /// it does not answer.
    pub async fn ask<T: DeserializeOwned>(
        &self,
        node: &Node,
        req: Call,
    ) -> Result<T, ClusterError> {
        call(node, self.token(), req)
            .await
            .map_err(|e| unreachable_node(&node.name, e))
            .and_then(|a| answer(&node.name, a))
    }

    /// As `ask`, for a listing of nodes that says of each why it did not answer, in words.
    pub async fn ask_words<T: DeserializeOwned>(
        &self,
        node: &Node,
        req: Call,
    ) -> Result<T, String> {
        let got = call(node, self.token(), req).await?;
        answer(&node.name, got).map_err(|e| e.error)
    }

    /// Every other node asked the same at once, each with its answer or why not.
    pub async fn ask_peers<'n, T: DeserializeOwned>(
        &self,
        nodes: &'n [Node],
        req: &Call,
    ) -> Vec<(&'n Node, Result<T, String>)> {
        let asks = nodes
            .iter()
            .filter(|n| n.name != self.me())
            .map(|n| async move { (n, self.ask_words(n, req.clone()).await) });
        futures_util::future::join_all(asks).await
    }

    /// The node holding a possibly qualified ID, and the bare ID: `None` for this node.
    /// Without `@node`, this node's own queue is asked first (`held_here`), then the others.
    pub async fn holder(
        &self,
        nodes: &[Node],
        id: &str,
        held_here: impl FnOnce(&str) -> bool,
    ) -> Result<(String, Option<Node>), ClusterError> {
        let (bare, node) = qualified(id);
        let name = match node {
            Some(n) => n.to_string(),
            // Here: asked first, and the usual case on a node that relays alone.
            None if held_here(bare) => self.me().to_string(),
            None => self.locate(nodes, bare).await?,
        };
        if name == self.me() {
            return Ok((bare.to_string(), None));
        }
        Ok((bare.to_string(), Some(find_node(nodes, &name)?)))
    }

    /// Which other node holds `id`: the one node that has it.
    async fn locate(&self, nodes: &[Node], id: &str) -> Result<String, ClusterError> {
        let asks = nodes
            .iter()
            .filter(|n| n.name != self.me())
            .map(|n| async move {
                let path = format!("/api/v1/queue/{id}");
                let got = call(n, self.token(), (Method::GET, path, None)).await;
                matches!(got, Ok((s, _)) if s.is_success()).then(|| n.name.clone())
            });
        let holders: Vec<String> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        match holders.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ClusterError::new(
                StatusCode::NOT_FOUND,
                format!("{id}: no such message in the queue of any node that answered"),
                None,
            )),
            many => Err(ClusterError::new(
                StatusCode::CONFLICT,
                format!(
                    "{id}: queued on nodes {}: say which, as {id}@NODE",
                    many.join(", ")
                ),
                Some("id"),
            )),
        }
    }
}

/// The node named, from the list.
fn find_node(nodes: &[Node], name: &str) -> Result<Node, ClusterError> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .ok_or_else(|| {
            ClusterError::new(
                StatusCode::NOT_FOUND,
                format!("node {name:?} is not in the node list (postern node list)"),
                Some("node"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_id_may_name_its_node() {
        assert_eq!(qualified("4F2A@gw2"), ("4F2A", Some("gw2")));
        assert_eq!(qualified("4F2A"), ("4F2A", None));
    }
}
