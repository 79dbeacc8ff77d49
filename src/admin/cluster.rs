//! Every node's queue from any node (issue 20). Each node keeps its own spool; the Queue
//! page and `postern queue` ask every node in the list the nodes keep in their shared
//! database (`settings::nodes`), merge the answers, and say which node holds each message.
//! A node that does not answer is listed as such with the reason, never silently left out.
//! An action on another node's message is sent to that node.
//!
//! Between nodes: HTTPS to the address a node registered, pinned to the certificate it
//! registered (both sealed with the settings key), and the cluster credential derived from
//! that key. The credential opens a node's own queue and status only (`admits_path`): it
//! changes no settings, and a request made with it is never passed on, so asking cannot loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::queue::{Bulk, BulkResult, Counts, Done, Filter, Listing, QueueItem, ShowQuery};
use super::{AdminState, ApiError};
use crate::settings::nodes::{Node, Registry};

/// How often a node says it is here.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long one node waits for another's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Cluster {
    registry: Registry,
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

    pub fn me(&self) -> &str {
        self.registry.me()
    }

    /// The bearer token is the cluster credential (compared without an early exit).
    pub fn admits(&self, token: &str) -> bool {
        super::constant_time_eq(token.as_bytes(), self.token.as_bytes())
    }

    /// The registered nodes, and why the list is the one last read when it cannot be read.
    async fn nodes(self: &Arc<Self>) -> (Vec<Node>, Option<String>) {
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
}

/// What the cluster credential may reach: one node's own queue and status.
pub fn admits_path(method: &Method, path: &str) -> bool {
    path == "/api/v1/queue"
        || path.starts_with("/api/v1/queue/")
        || (path == "/api/v1/node" && method == Method::GET)
}

/// A queue ID with the node that holds it: `4F2A91C0@gw2`; without `@node`, wherever it is.
fn qualified(id: &str) -> (&str, Option<&str>) {
    match id.split_once('@') {
        Some((id, node)) => (id, Some(node)),
        None => (id, None),
    }
}

/// One request to another node's control API; the error says why it did not answer.
async fn call(
    node: &Node,
    token: &str,
    (method, path, body): (Method, String, Option<Vec<u8>>),
) -> Result<(StatusCode, Vec<u8>), String> {
    if node.unreadable {
        return Err("its entry in the node list is sealed with another settings key".into());
    }
    if node.stopped {
        return Err(format!(
            "stopped {} ago (a graceful stop); its queue waits on its own disk",
            age(node.heartbeat_age_secs)
        ));
    }
    let api = node.api.ok_or(
        "it registered no control API address (admin.listen is a wildcard address: set settings.api_address on it)",
    )?;
    let cert = CertificateDer::from_pem_slice(node.cert_pem.as_bytes())
        .map_err(|e| format!("its registered certificate cannot be read: {e}"))?;
    let client = super::client::ApiClient::pinned(api, token, cert);
    match tokio::time::timeout(PEER_TIMEOUT, client.request(method, &path, body)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from https://{api} within {}s",
            PEER_TIMEOUT.as_secs()
        )),
    }
}

/// A node's answer as JSON, or its error passed on with its status.
fn answer<T: serde::de::DeserializeOwned>(
    node: &str,
    (status, body): (StatusCode, Vec<u8>),
) -> Result<T, ApiError> {
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("node {node}: unreadable answer: {e}"),
                None,
            )
        });
    }
    let said: Option<ApiError> = serde_json::from_slice(&body).ok();
    let (error, field) = said.map_or((format!("HTTP {status}"), None), |e| (e.error, e.field));
    Err(ApiError::new(
        status,
        format!("node {node}: {error}"),
        field,
    ))
}

fn unreachable_node(node: &str, why: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("node {node} does not answer: {why}"),
        None,
    )
}

/// "12 s", "3 min", "2 h": how long ago a heartbeat was.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// One node in a listing of several: whether it answered, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAnswer {
    pub name: String,
    /// Its control API, as registered.
    pub api: Option<String>,
    /// The node that answers this request.
    pub this: bool,
    pub answered: bool,
    pub error: Option<String>,
    /// Seconds since its last heartbeat; `None` for a node on its own.
    pub heartbeat_age_secs: Option<u64>,
    pub counts: Counts,
    pub matching: usize,
}

/// Every node's queue: their counts added up, one page of the matching messages oldest first,
/// each naming its node, and what each node answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterListing {
    pub nodes: Vec<NodeAnswer>,
    /// Why the node list is the one read last (the shared database is away).
    pub registry_error: Option<String>,
    pub counts: Counts,
    pub matching: usize,
    pub items: Vec<QueueItem>,
}

impl ClusterListing {
    /// More than one node: messages are named with their node.
    pub fn several(&self) -> bool {
        self.nodes.len() > 1
    }
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        active: a.active + b.active,
        deferred: a.deferred + b.deferred,
        held: a.held + b.held,
    }
}

/// This node's listing, off the async workers.
async fn local_listing(state: &AdminState, filter: Filter) -> Listing {
    let spool = state.spool.clone();
    tokio::task::spawn_blocking(move || super::queue::listing(&spool, &filter))
        .await
        .unwrap_or(Listing {
            counts: Counts::default(),
            matching: 0,
            items: Vec::new(),
        })
}

/// The listing of every node: each is asked for the first `offset + limit` matching
/// messages, so merging by arrival gives the same page one big queue would.
pub async fn listing(state: &AdminState, filter: &Filter) -> ClusterListing {
    let Some(cluster) = state.cluster.clone() else {
        let local = local_listing(state, filter.clone()).await;
        return ClusterListing {
            nodes: vec![NodeAnswer {
                name: state.pages.hostname.clone(),
                api: None,
                this: true,
                answered: true,
                error: None,
                heartbeat_age_secs: None,
                counts: local.counts,
                matching: local.matching,
            }],
            registry_error: None,
            counts: local.counts,
            matching: local.matching,
            items: local.items,
        };
    };
    let (offset, limit) = (
        filter.offset.unwrap_or(0),
        filter.limit.unwrap_or(usize::MAX),
    );
    let wide = Filter {
        offset: Some(0),
        limit: Some(offset.saturating_add(limit)),
        ..filter.clone()
    };
    let (nodes, registry_error) = cluster.nodes().await;
    let mut answers = ask_all(state, &cluster, &nodes, &wide).await;
    answers.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut out = ClusterListing {
        nodes: Vec::new(),
        registry_error,
        counts: Counts::default(),
        matching: 0,
        items: Vec::new(),
    };
    for (node, listing) in answers {
        if let Some(l) = listing {
            out.counts = add(out.counts, l.counts);
            out.matching += l.matching;
            out.items.extend(l.items.into_iter().map(|mut i| {
                i.node = Some(node.name.clone());
                i
            }));
        }
        out.nodes.push(node);
    }
    out.items
        .sort_by(|a, b| (a.arrival_unix, &a.node, &a.id).cmp(&(b.arrival_unix, &b.node, &b.id)));
    out.items = out.items.into_iter().skip(offset).take(limit).collect();
    out
}

/// This node's listing and every other node's, at once.
async fn ask_all(
    state: &AdminState,
    cluster: &Arc<Cluster>,
    nodes: &[Node],
    filter: &Filter,
) -> Vec<(NodeAnswer, Option<Listing>)> {
    let query = serde_urlencoded::to_string(filter).unwrap_or_default();
    let peers = nodes.iter().filter(|n| n.name != cluster.me()).map(|n| {
        let path = format!("/api/v1/queue/page?{query}");
        async move {
            let got = call(n, &cluster.token, (Method::GET, path, None)).await;
            let listing = got.and_then(|a| answer::<Listing>(&n.name, a).map_err(|e| e.error));
            peer_answer(n, listing)
        }
    });
    let (mine, mut all) = tokio::join!(
        local_listing(state, filter.clone()),
        futures_util::future::join_all(peers)
    );
    let me = nodes.iter().find(|n| n.name == cluster.me());
    all.push((
        NodeAnswer {
            name: cluster.me().to_string(),
            api: me.and_then(|n| n.api).map(|a| a.to_string()),
            this: true,
            answered: true,
            error: None,
            heartbeat_age_secs: me.map(|n| n.heartbeat_age_secs),
            counts: mine.counts,
            matching: mine.matching,
        },
        Some(mine),
    ));
    all
}

fn peer_answer(n: &Node, listing: Result<Listing, String>) -> (NodeAnswer, Option<Listing>) {
    let mut a = NodeAnswer {
        name: n.name.clone(),
        api: n.api.map(|a| a.to_string()),
        this: false,
        answered: listing.is_ok(),
        error: None,
        heartbeat_age_secs: Some(n.heartbeat_age_secs),
        counts: Counts::default(),
        matching: 0,
    };
    match listing {
        Ok(l) => {
            a.counts = l.counts;
            a.matching = l.matching;
            (a, Some(l))
        }
        Err(e) => {
            a.error = Some(e);
            (a, None)
        }
    }
}

/// The node list once per request (the one last read while the database is away); empty on
/// a node of its own.
async fn node_list(state: &AdminState) -> Vec<Node> {
    match &state.cluster {
        Some(c) => c.nodes().await.0,
        None => Vec::new(),
    }
}

/// The node named, from the list.
fn find_node(nodes: &[Node], name: &str) -> Result<Node, ApiError> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("node {name:?} is not in the node list (postern node list)"),
                Some("node".into()),
            )
        })
}

/// Which node holds `id` when the admin did not say: the one node that has it.
async fn locate(
    state: &AdminState,
    (cluster, nodes): (&Arc<Cluster>, &[Node]),
    id: &str,
) -> Result<String, ApiError> {
    if let Ok(qid) = id.parse()
        && state.spool.get(qid).is_some()
    {
        // Here: asked first, and the usual case on a node that relays alone.
        return Ok(cluster.me().to_string());
    }
    let asks = nodes
        .iter()
        .filter(|n| n.name != cluster.me())
        .map(|n| async move {
            let path = format!("/api/v1/queue/{id}");
            let got = call(n, &cluster.token, (Method::GET, path, None)).await;
            matches!(got, Ok((s, _)) if s.is_success()).then(|| n.name.clone())
        });
    let holders: Vec<String> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    match holders.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{id}: no such message in the queue of any node that answered"),
            None,
        )),
        many => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{id}: queued on nodes {}: say which, as {id}@NODE",
                many.join(", ")
            ),
            Some("id".into()),
        )),
    }
}

/// The node holding a possibly qualified ID: `None` for this one.
async fn holder(
    state: &AdminState,
    nodes: &[Node],
    id: &str,
) -> Result<(String, Option<Node>), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok((id.to_string(), None));
    };
    let (bare, node) = qualified(id);
    let name = match node {
        Some(n) => n.to_string(),
        None => locate(state, (cluster, nodes), bare).await?,
    };
    if name == cluster.me() {
        return Ok((bare.to_string(), None));
    }
    Ok((bare.to_string(), Some(find_node(nodes, &name)?)))
}

fn token(state: &AdminState) -> String {
    state
        .cluster
        .as_ref()
        .map(|c| c.token.clone())
        .unwrap_or_default()
}

/// One message, wherever it is queued: the API's and the page's.
pub async fn message(state: &AdminState, id: &str, body: bool) -> Result<QueueItem, ApiError> {
    let nodes = node_list(state).await;
    let (bare, node) = holder(state, &nodes, id).await?;
    let Some(node) = node else {
        let mut item = super::queue::message(state, &bare, body)?;
        item.node = state.cluster.as_ref().map(|c| c.me().to_string());
        return Ok(item);
    };
    let path = format!("/api/v1/queue/{bare}?body={body}");
    let got = call(&node, &token(state), (Method::GET, path, None))
        .await
        .map_err(|e| unreachable_node(&node.name, e))?;
    let mut item: QueueItem = answer(&node.name, got)?;
    item.node = Some(node.name.clone());
    Ok(item)
}

/// retry, hold, release or delete messages wherever each is queued; each answers for itself.
pub async fn act_on_all(state: &AdminState, ids: &[String], action: &str, by: &str) -> BulkResult {
    let nodes = node_list(state).await;
    let mut out = BulkResult::default();
    for id in ids {
        let done = match holder(state, &nodes, id).await {
            Ok((bare, None)) => super::queue::act_on(state, &bare, action, by).await,
            Ok((bare, Some(node))) => act_on_peer(state, &node, &bare, (action, by)).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(d) => out.done.push(d),
            Err(e) => out.failed.push(e),
        }
    }
    out
}

/// One message on another node, by its own request, so its error keeps its status; the
/// node's log line names who asked.
async fn act_on_peer(
    state: &AdminState,
    node: &Node,
    id: &str,
    (action, by): (&str, &str),
) -> Result<Done, ApiError> {
    let me = state.cluster.as_ref().map_or("", |c| c.me());
    let who = form_urlencoded::Serializer::new(String::new())
        .append_pair("by", &format!("{by} on node {me}"))
        .finish();
    let path = format!("/api/v1/queue/{id}/{action}?{who}");
    let mut done = call(node, &token(state), (Method::POST, path, None))
        .await
        .map_err(|e| unreachable_node(&node.name, e))
        .and_then(|a| answer::<Done>(&node.name, a))?;
    done.id = format!("{}@{}", done.id, node.name);
    Ok(done)
}

/// `GET /api/v1/cluster/queue`: the listing of every node.
pub async fn list(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Json<ClusterListing> {
    Json(listing(&state, &filter).await)
}

/// `GET /api/v1/cluster/queue/{id}`: one message; `ID@node`, or an ID one node holds.
pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<QueueItem>, ApiError> {
    message(&state, &id, q.body).await.map(Json)
}

/// `POST /api/v1/cluster/queue/act` `{"ids": ["4F2A91C0@gw2"], "action": "retry"}`.
pub async fn act(State(state): State<AdminState>, Json(b): Json<Bulk>) -> Json<BulkResult> {
    Json(act_on_all(&state, &b.ids, &b.action, "control API").await)
}

/// `POST /api/v1/cluster/queue/{id}/{action}`: one message, wherever it is; its error with
/// its own status.
pub async fn act_one(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Done>, ApiError> {
    let mut r = act_on_all(&state, std::slice::from_ref(&id), &action, "control API").await;
    match (r.done.pop(), r.failed.pop()) {
        (Some(done), _) => Ok(Json(done)),
        (None, Some(e)) => Err(e),
        (None, None) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{id}: no answer"),
            None,
        )),
    }
}

/// `POST /api/v1/cluster/queue/retry`: every node's `postqueue -f`.
pub async fn retry_all(State(state): State<AdminState>) -> Json<BulkResult> {
    let mine = super::queue::retry_all(State(state.clone())).await.0;
    let mut out = BulkResult {
        done: mine,
        failed: Vec::new(),
    };
    let Some(cluster) = state.cluster.clone() else {
        return Json(out);
    };
    let (nodes, _) = cluster.nodes().await;
    for n in nodes.iter().filter(|n| n.name != cluster.me()) {
        let got = call(
            n,
            &cluster.token,
            (Method::POST, "/api/v1/queue/retry".into(), None),
        )
        .await
        .map_err(|e| unreachable_node(&n.name, e))
        .and_then(|a| answer::<Vec<Done>>(&n.name, a));
        match got {
            Ok(done) => out.done.extend(done.into_iter().map(|mut d| {
                d.id = format!("{}@{}", d.id, n.name);
                d
            })),
            Err(e) => out.failed.push(e),
        }
    }
    for d in out.done.iter_mut().filter(|d| !d.id.contains('@')) {
        d.id = format!("{}@{}", d.id, cluster.me());
    }
    Json(out)
}

/// A node as `postern node list` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub api: Option<String>,
    pub this: bool,
    pub heartbeat_age_secs: u64,
    pub answered: bool,
    pub error: Option<String>,
    /// Its `GET /api/v1/node`, when it answered.
    pub status: Option<super::NodeStatus>,
}

/// `GET /api/v1/cluster/nodes`: every registered node, each asked for its status.
pub async fn nodes(State(state): State<AdminState>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let Some(cluster) = state.cluster.clone() else {
        return Err(not_clustered());
    };
    let (nodes, registry_error) = cluster.nodes().await;
    if nodes.is_empty()
        && let Some(e) = registry_error
    {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e, None));
    }
    let views = nodes.iter().map(|n| {
        let cluster = cluster.clone();
        let state = state.clone();
        async move {
            let status = if n.name == cluster.me() {
                Ok(super::node_status(State(state)).await.0)
            } else {
                call(
                    n,
                    &cluster.token,
                    (Method::GET, "/api/v1/node".into(), None),
                )
                .await
                .and_then(|a| answer(&n.name, a).map_err(|e| e.error))
            };
            NodeView {
                name: n.name.clone(),
                api: n.api.map(|a| a.to_string()),
                this: n.name == cluster.me(),
                heartbeat_age_secs: n.heartbeat_age_secs,
                answered: status.is_ok(),
                error: status.as_ref().err().cloned(),
                status: status.ok(),
            }
        }
    });
    Ok(Json(futures_util::future::join_all(views).await))
}

/// `DELETE /api/v1/cluster/nodes/{name}`: a node taken out of service leaves the list.
pub async fn forget(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(cluster) = state.cluster.clone() else {
        return Err(not_clustered());
    };
    if name == cluster.me() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{name} is this node: it registers itself again within {}s; forget it from another node after stopping it",
                HEARTBEAT.as_secs()
            ),
            Some("name".into()),
        ));
    }
    let c = cluster.clone();
    let n = name.clone();
    let gone = tokio::task::spawn_blocking(move || c.registry.forget(&n))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None))?;
    if !gone {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {name:?} is not in the node list"),
            Some("name".into()),
        ));
    }
    tracing::warn!(target: "postern/admin", "node {name} removed from the node list (control API)");
    Ok(Json(serde_json::json!({ "forgotten": name })))
}

fn not_clustered() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "this node runs on its own: no settings.database, so no node list",
        None,
    )
}

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
    data_dir: &std::path::Path,
    stopped: bool,
) -> Result<(), String> {
    let cert = super::client::served_cert_path(data_dir);
    let pem = std::fs::read_to_string(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.registry.beat(api, &pem, stopped))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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

    #[test]
    fn a_queue_id_may_name_its_node() {
        assert_eq!(qualified("4F2A@gw2"), ("4F2A", Some("gw2")));
        assert_eq!(qualified("4F2A"), ("4F2A", None));
    }
}
