//! Queue operations over the control API, shaped for admins who know `postqueue -p`,
//! `postsuper -h/-H/-d` and `postqueue -i`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::spool::{Final, QueueEntry, QueueId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    /// pending, delivered, bounced, deleted
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: String,
    /// The node that holds it, in a listing of several nodes (`settings.node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub arrival_unix: u64,
    pub size: usize,
    pub sender: String,
    pub recipients: Vec<RecipientView>,
    /// Where it came from: the client's address and its EHLO name.
    #[serde(default)]
    pub client_ip: String,
    #[serde(default)]
    pub helo: String,
    pub held: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the last attempt ended and when the next is due (UNIX seconds), since start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_unix: Option<u64>,
    /// The message's header section (`show` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// The body (`show?body=true` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl QueueItem {
    fn from_entry(e: &QueueEntry) -> QueueItem {
        let recipients = e
            .envelope
            .recipients
            .iter()
            .zip(&e.done)
            .map(|(address, done)| RecipientView {
                address: address.clone(),
                state: match done {
                    None => "pending",
                    Some(Final::Delivered) => "delivered",
                    Some(Final::Bounced) => "bounced",
                    Some(Final::Deleted) => "deleted",
                }
                .to_string(),
            })
            .collect();
        QueueItem {
            id: e.id.to_string(),
            node: None,
            arrival_unix: e.envelope.received_unix,
            size: e.size,
            sender: e.envelope.sender.clone(),
            recipients,
            client_ip: e.envelope.client_ip.clone(),
            helo: e.envelope.helo.clone(),
            held: e.held,
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            last_attempt_unix: e.last_attempt_unix,
            next_attempt_unix: e.next_attempt_unix,
            headers: None,
            body: None,
        }
    }

    /// Its state in the words of the listing: active, deferred or held.
    pub fn state(&self) -> &'static str {
        state_word(self.held, self.attempts, self.last_error.is_some())
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Filter {
    /// Substring of the envelope sender, case-insensitive.
    pub sender: Option<String>,
    /// Substring of any recipient, case-insensitive.
    pub recipient: Option<String>,
    /// A recipient domain (exact, any case; `.example.com` also its subdomains).
    pub domain: Option<String>,
    /// Only held (true) or only not held (false) messages.
    pub held: Option<bool>,
    /// `active` (not tried yet), `deferred` (tried, waiting), `held`.
    pub state: Option<String>,
    /// Only messages at least this old.
    pub min_age_secs: Option<u64>,
    /// Paging, oldest first: skip this many, show at most `limit` (default all).
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

/// The state the queue page counts by.
pub fn state_of(e: &QueueEntry) -> &'static str {
    state_word(e.held, e.attempts, e.last_error.is_some())
}

/// Postfix's queue names: `hold`, `active` (not tried yet), `deferred` (tried, waiting for
/// its retry).
fn state_word(held: bool, attempts: u32, failed: bool) -> &'static str {
    if held {
        "held"
    } else if attempts == 0 && !failed {
        "active"
    } else {
        "deferred"
    }
}

/// Messages by state, over the whole queue.
#[derive(Debug, Default, Serialize, Deserialize, Clone, Copy)]
pub struct Counts {
    pub active: usize,
    pub deferred: usize,
    pub held: usize,
}

/// A page of the queue and what it came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    pub counts: Counts,
    /// Messages matching the filter (all pages).
    pub matching: usize,
    pub items: Vec<QueueItem>,
}

impl Filter {
    fn keeps(&self, e: &QueueEntry, now: u64) -> bool {
        let contains = |hay: &str, needle: &Option<String>| {
            needle.as_deref().is_none_or(|n| {
                n.trim().is_empty()
                    || hay
                        .to_ascii_lowercase()
                        .contains(&n.trim().to_ascii_lowercase())
            })
        };
        let domain = self
            .domain
            .as_deref()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        let in_domain = |r: &str| {
            let Some(d) = &domain else { return true };
            let rd = r
                .rsplit_once('@')
                .map_or(r, |(_, x)| x)
                .to_ascii_lowercase();
            match d.strip_prefix('.') {
                Some(parent) => rd == parent || rd.ends_with(d.as_str()),
                None => rd == *d,
            }
        };
        contains(&e.envelope.sender, &self.sender)
            && e.envelope
                .recipients
                .iter()
                .any(|r| contains(r, &self.recipient) && in_domain(r))
            && self.held.is_none_or(|h| e.held == h)
            && self
                .state
                .as_deref()
                .is_none_or(|s| s.is_empty() || s == "all" || s == state_of(e))
            && self
                .min_age_secs
                .is_none_or(|a| now.saturating_sub(e.envelope.received_unix) >= a)
    }
}

/// The one listing of the API and the page: counts of the whole queue, the matching
/// messages oldest first, one page of them.
pub fn listing(spool: &crate::spool::Spool, filter: &Filter) -> Listing {
    let now = crate::fsutil::unix_now();
    let mut counts = Counts::default();
    let mut kept: Vec<(u64, QueueId)> = Vec::new();
    spool.visit(|e| {
        match state_of(e) {
            "held" => counts.held += 1,
            "active" => counts.active += 1,
            _ => counts.deferred += 1,
        }
        if filter.keeps(e, now) {
            kept.push((e.envelope.received_unix, e.id));
        }
    });
    kept.sort_unstable();
    let offset = filter.offset.unwrap_or(0);
    let limit = filter.limit.unwrap_or(usize::MAX);
    let items = kept
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|(_, id)| spool.get(*id))
        .map(|e| QueueItem::from_entry(&e))
        .collect();
    Listing {
        counts,
        matching: kept.len(),
        items,
    }
}

pub async fn list(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Json<Vec<QueueItem>> {
    let spool = state.spool.clone();
    let listing = tokio::task::spawn_blocking(move || listing(&spool, &filter)).await;
    Json(listing.map(|l| l.items).unwrap_or_default())
}

/// Counts and one page: `GET /api/v1/queue/page?state=deferred&offset=0&limit=50`.
pub async fn page(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Result<Json<Listing>, ApiError> {
    let spool = state.spool.clone();
    tokio::task::spawn_blocking(move || listing(&spool, &filter))
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

fn parse_id(id: &str) -> Result<QueueId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("id: {id:?} is not a queue ID"),
            Some("id".into()),
        )
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{id}: no such message in the queue"),
        None,
    )
}

fn storage(e: std::io::Error) -> ApiError {
    ApiError::internal(format!("spool: {e}"))
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    /// Include the body (only when asked: it is the sender's mail).
    #[serde(default)]
    pub body: bool,
}

pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<QueueItem>, ApiError> {
    message(&state, &id, q.body).map(Json)
}

/// One message with its header section, and its body when asked: the API's and the page's.
pub(crate) fn message(state: &AdminState, id: &str, body: bool) -> Result<QueueItem, ApiError> {
    let qid = parse_id(id)?;
    let entry = state.spool.get(qid).ok_or_else(|| not_found(id))?;
    let mut item = QueueItem::from_entry(&entry);
    let message = state.spool.read_message(qid).map_err(storage)?;
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len());
    item.headers = Some(String::from_utf8_lossy(&message[..end]).into_owned());
    if body {
        let start = (end + 2).min(message.len());
        item.body = Some(String::from_utf8_lossy(&message[start..]).into_owned());
    }
    Ok(item)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub id: String,
    pub action: String,
    /// False for a hold of a message already held, a release of one not held, a retry of a
    /// held one: nothing was done to it (absent from an older node's answer, which did not
    /// say).
    #[serde(default = "changed")]
    pub changed: bool,
}

fn changed() -> bool {
    true
}

/// Who asked, when another node passes an admin's action on (`?by=admin page by alice on
/// node gw1`), for the log line here.
#[derive(Debug, Default, Deserialize)]
pub struct ByQuery {
    pub by: Option<String>,
}

pub async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    Query(q): Query<ByQuery>,
) -> Result<Json<Done>, ApiError> {
    let by = match &q.by {
        Some(who) => format!("control API, for {who}"),
        None => "control API".to_string(),
    };
    let done = act_on(&state, &id, &action, &by).await?;
    Ok(Json(done))
}

/// retry, hold, release or delete one message: the API's and the page's one action.
/// `by` says where from, for the log line (`control API`, `admin page by alice`).
pub(crate) async fn act_on(
    state: &AdminState,
    id: &str,
    action: &str,
    by: &str,
) -> Result<Done, ApiError> {
    let qid = parse_id(id)?;
    let held = |h| state.spool.set_held(qid, h);
    let found = match action {
        "hold" => held(true).await.map_err(storage)?,
        "release" => held(false).await.map_err(storage)?,
        // A held message waits for its release, as `postqueue -i` leaves it (postsuper(1)).
        "retry" => state.spool.get(qid).map(|e| {
            if !e.held {
                state.spool.poke(qid);
            }
            !e.held
        }),
        "delete" => (state.spool.delete(qid).await.map_err(storage)?).then_some(true),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("action {action:?}: expected retry, hold, release or delete"),
                Some("action".into()),
            ));
        }
    };
    let Some(changed) = found else {
        return Err(not_found(id));
    };
    if action == "delete" {
        tracing::info!(target: "postern/admin", "{id}: removed (deleted through the {by})");
    } else if changed {
        tracing::info!(target: "postern/admin", "{id}: {action} ({by})");
    }
    Ok(Done {
        id: id.to_string(),
        action: action.to_string(),
        changed,
    })
}

/// Several messages at once: `{"ids": [...], "action": "hold"}`; each answers for itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bulk {
    pub ids: Vec<String>,
    pub action: String,
}

#[derive(Debug, Default, Serialize)]
pub struct BulkResult {
    pub done: Vec<Done>,
    pub failed: Vec<ApiError>,
}

pub async fn bulk(State(state): State<AdminState>, Json(b): Json<Bulk>) -> Json<BulkResult> {
    Json(act_on_all(&state, &b.ids, &b.action, "control API").await)
}

pub(crate) async fn act_on_all(
    state: &AdminState,
    ids: &[String],
    action: &str,
    by: &str,
) -> BulkResult {
    let mut out = BulkResult {
        done: Vec::new(),
        failed: Vec::new(),
    };
    for id in ids {
        match act_on(state, id, action, by).await {
            Ok(d) => out.done.push(d),
            Err(e) => out.failed.push(e),
        }
    }
    out
}

pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    Ok(Json(act_on(&state, &id, "delete", "control API").await?))
}

/// Postfix's `postqueue -f`: every message not on hold, now.
pub async fn retry_all(State(state): State<AdminState>) -> Json<Vec<Done>> {
    let mut out = Vec::new();
    for e in state.spool.list().into_iter().filter(|e| !e.held) {
        state.spool.poke(e.id);
        out.push(Done {
            id: e.id.to_string(),
            action: "retry".into(),
            changed: true,
        });
    }
    Json(out)
}

/// Damaged spool segments kept in `spool/damaged/`, with the regions that could not be read
/// (`postern queue damaged`).
pub async fn damaged(State(state): State<AdminState>) -> Json<Vec<crate::spool::Damage>> {
    let spool = state.spool.clone();
    Json(
        tokio::task::spawn_blocking(move || spool.damaged())
            .await
            .unwrap_or_default(),
    )
}
