//! Received records over the API (`/api/v1/logs/received`): every message accepted, searched
//! as the delivery records are (sender as an address, a domain or a `.domain`, client address
//! or network, queue ID, time range, plaintext only), newest first, a page at a time; each
//! record with the lines Postfix would log for it. The Logs page's Received view calls the
//! same functions.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::logs::{PAGE, records_store};
use super::{AdminState, ApiError};
use crate::events::received::{Received, ReceivedSearch, client_network};
use crate::events::search::Party;
use crate::events::store::Found;

const MAX_PAGE: usize = 500;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ReceivedQuery {
    #[serde(default)]
    pub sender: Option<String>,
    /// An IP address or a network.
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub queue_id: Option<String>,
    /// UNIX seconds, inclusive.
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub until: Option<u64>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub before: Option<u64>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only messages received in plaintext.
    #[serde(default)]
    pub plaintext: bool,
}

impl ReceivedQuery {
    /// The search asked for; a sender that is neither an address, a domain nor a `.domain`,
    /// or a client that is no address or network, is refused naming the field.
    pub fn search(&self) -> Result<ReceivedSearch, ApiError> {
        let refuse = |field: &str, message: String| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{field}: {message}"),
                Some(field.into()),
            )
        };
        if let Err(e) = Party::check(self.sender.as_deref().unwrap_or("")) {
            return Err(refuse("sender", e));
        }
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let client = given(&self.client);
        if let Some(c) = &client
            && client_network(c).is_none()
        {
            let e = format!("{:?} is not an IP address or a network", c.trim());
            return Err(refuse("client", e));
        }
        Ok(ReceivedSearch {
            sender: given(&self.sender),
            client,
            queue_id: given(&self.queue_id),
            since: self.since,
            until: self.until,
            before: self.before,
            limit: self.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE),
            plaintext_only: self.plaintext,
        })
    }
}

/// A page of received records as the API answers it.
#[derive(Debug, Serialize)]
pub struct ReceivedPage {
    pub records: Vec<ReceivedRecord>,
    /// `before` for the next (older) page, if there may be one.
    pub next: Option<u64>,
    pub scanned: u64,
    pub stopped_early: bool,
}

#[derive(Debug, Serialize)]
pub struct ReceivedRecord {
    pub seq: u64,
    pub record: Received,
    pub lines: Vec<String>,
}

impl From<Found<Received>> for ReceivedPage {
    fn from(f: Found<Received>) -> ReceivedPage {
        ReceivedPage {
            records: f
                .records
                .into_iter()
                .map(|s| ReceivedRecord {
                    seq: s.seq,
                    lines: s.record.lines(),
                    record: s.record,
                })
                .collect(),
            next: f.next,
            scanned: f.scanned,
            stopped_early: f.stopped_early,
        }
    }
}

/// The one search of the API and the page.
pub(crate) async fn search_received(
    state: &AdminState,
    q: ReceivedSearch,
) -> Result<Found<Received>, ApiError> {
    let store = records_store(state)?;
    super::blocking(move || store.search_received(&q))
        .await?
        .map_err(ApiError::internal)
}

pub async fn list(
    State(state): State<AdminState>,
    Query(q): Query<ReceivedQuery>,
) -> Result<Json<ReceivedPage>, ApiError> {
    let found = search_received(&state, q.search()?).await?;
    Ok(Json(found.into()))
}
