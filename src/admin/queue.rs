//! Queue operations over the control API, shaped for admins who know `postqueue -p`,
//! `postsuper -h/-H/-d` and `postqueue -i`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::spool::{Final, QueueEntry, QueueId};

#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    /// pending, delivered, bounced, deleted
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: String,
    pub arrival_unix: u64,
    pub size: usize,
    pub sender: String,
    pub recipients: Vec<RecipientView>,
    pub held: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The message's header section (`show` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
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
            arrival_unix: e.envelope.received_unix,
            size: e.size,
            sender: e.envelope.sender.clone(),
            recipients,
            held: e.held,
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            headers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Filter {
    /// Substring of the envelope sender, case-insensitive.
    pub sender: Option<String>,
    /// Substring of any recipient, case-insensitive.
    pub recipient: Option<String>,
    /// Only held (true) or only not held (false) messages.
    pub held: Option<bool>,
}

pub async fn list(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Json<Vec<QueueItem>> {
    let contains = |hay: &str, needle: &Option<String>| {
        needle
            .as_deref()
            .is_none_or(|n| hay.to_ascii_lowercase().contains(&n.to_ascii_lowercase()))
    };
    let items = state
        .spool
        .list()
        .iter()
        .filter(|e| contains(&e.envelope.sender, &filter.sender))
        .filter(|e| {
            filter.recipient.is_none()
                || e.envelope
                    .recipients
                    .iter()
                    .any(|r| contains(r, &filter.recipient))
        })
        .filter(|e| filter.held.is_none_or(|h| e.held == h))
        .map(QueueItem::from_entry)
        .collect();
    Json(items)
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
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("spool: {e}"),
        None,
    )
}

pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QueueItem>, ApiError> {
    let qid = parse_id(&id)?;
    let entry = state.spool.get(qid).ok_or_else(|| not_found(&id))?;
    let mut item = QueueItem::from_entry(&entry);
    let message = state.spool.read_message(qid).map_err(storage)?;
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len());
    item.headers = Some(String::from_utf8_lossy(&message[..end]).into_owned());
    Ok(Json(item))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub id: String,
    pub action: String,
}

pub async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Done>, ApiError> {
    let qid = parse_id(&id)?;
    let found = match action.as_str() {
        "hold" => state.spool.set_held(qid, true).await.map_err(storage)?,
        "release" => state.spool.set_held(qid, false).await.map_err(storage)?,
        "retry" => {
            let found = state.spool.get(qid).is_some();
            if found {
                state.spool.poke(qid);
            }
            found
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("action {action:?}: expected retry, hold or release"),
                Some("action".into()),
            ));
        }
    };
    if !found {
        return Err(not_found(&id));
    }
    tracing::info!(target: "postern/admin", "{id}: {action} (control API)");
    Ok(Json(Done { id, action }))
}

pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let qid = parse_id(&id)?;
    if !state.spool.delete(qid).await.map_err(storage)? {
        return Err(not_found(&id));
    }
    tracing::info!(target: "postern/admin", "{id}: removed (deleted through the control API)");
    Ok(Json(Done {
        id,
        action: "delete".into(),
    }))
}

/// Postfix's `postqueue -f`: every message not on hold, now.
pub async fn retry_all(State(state): State<AdminState>) -> Json<Vec<Done>> {
    let mut out = Vec::new();
    for e in state.spool.list().into_iter().filter(|e| !e.held) {
        state.spool.poke(e.id);
        out.push(Done {
            id: e.id.to_string(),
            action: "retry".into(),
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
