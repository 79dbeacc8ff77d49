//! Every node's queue from any node (issue 20), as the control API and the Queue page ask
//! it: each node keeps its own spool; this merges what every node in the list answers
//! (`crate::cluster` asks them) and says which node holds each message. A node that does not
//! answer is listed as such with the reason, never silently left out. An action on another
//! node's message is sent to that node. The node list's own routes are here too.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::queue::{Bulk, BulkResult, Counts, Done, Filter, Listing, QueueItem, ShowQuery};
use super::{AdminState, ApiError};
pub use crate::cluster::age;
use crate::cluster::{Cluster, ClusterError, ForgetError, HEARTBEAT, Node};

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> ApiError {
        ApiError::new(e.status, e.error, e.field)
    }
}

/// Whether a bearer token is the cluster credential (compared without an early exit).
pub fn admits(cluster: &Cluster, token: &str) -> bool {
    super::constant_time_eq(token.as_bytes(), cluster.token().as_bytes())
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
    let ask = (Method::GET, format!("/api/v1/queue/page?{query}"), None);
    let (mine, peers) = tokio::join!(
        local_listing(state, filter.clone()),
        cluster.ask_peers::<Listing>(nodes, &ask)
    );
    let mut all: Vec<_> = peers.into_iter().map(|(n, l)| peer_answer(n, l)).collect();
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

/// The node holding a possibly qualified ID, with the cluster that reaches it: `None` for
/// this one.
async fn holder(
    state: &AdminState,
    nodes: &[Node],
    id: &str,
) -> Result<(String, Option<(Arc<Cluster>, Node)>), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok((id.to_string(), None));
    };
    let spool = &state.spool;
    let here = |bare: &str| bare.parse().is_ok_and(|qid| spool.get(qid).is_some());
    let (bare, node) = cluster.holder(nodes, id, here).await?;
    Ok((bare, node.map(|n| (cluster.clone(), n))))
}

/// One message, wherever it is queued: the API's and the page's.
pub async fn message(state: &AdminState, id: &str, body: bool) -> Result<QueueItem, ApiError> {
    let nodes = node_list(state).await;
    let (bare, node) = holder(state, &nodes, id).await?;
    let Some((cluster, node)) = node else {
        let mut item = super::queue::message(state, &bare, body)?;
        item.node = state.cluster.as_ref().map(|c| c.me().to_string());
        return Ok(item);
    };
    let path = format!("/api/v1/queue/{bare}?body={body}");
    let mut item: QueueItem = cluster.ask(&node, (Method::GET, path, None)).await?;
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
            Ok((bare, Some((cluster, node)))) => {
                act_on_peer(&cluster, &node, &bare, (action, by)).await
            }
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
    cluster: &Cluster,
    node: &Node,
    id: &str,
    (action, by): (&str, &str),
) -> Result<Done, ApiError> {
    let who = form_urlencoded::Serializer::new(String::new())
        .append_pair("by", &format!("{by} on node {}", cluster.me()))
        .finish();
    let path = format!("/api/v1/queue/{id}/{action}?{who}");
    let mut done: Done = cluster.ask(node, (Method::POST, path, None)).await?;
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
        (None, None) => Err(ApiError::internal(format!("{id}: no answer"))),
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
        let retry = (Method::POST, "/api/v1/queue/retry".into(), None);
        let got = cluster.ask::<Vec<Done>>(n, retry).await;
        match got {
            Ok(done) => out.done.extend(done.into_iter().map(|mut d| {
                d.id = format!("{}@{}", d.id, n.name);
                d
            })),
            Err(e) => out.failed.push(e.into()),
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
                let ask = (Method::GET, "/api/v1/node".into(), None);
                cluster.ask_words(n, ask).await
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
    let gone = cluster.forget(&name).await.map_err(|e| match e {
        ForgetError::Task(e) => ApiError::internal(e),
        ForgetError::Database(e) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None)
        }
    })?;
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
