//! Delivery records over the API (`/api/v1/logs`), Hermes' Simple Search: recipient and
//! sender (an address, a domain or a `.domain`), queue ID, host, and text in the record's
//! Postfix lines and values (`Host offered STARTTLS: [host]`), in a time range, newest
//! first, a page at a time (nothing given: the newest records); each record with its
//! Postfix lines. And "did host H offer STARTTLS in the last N days?"
//! (`/api/v1/logs/starttls`). The Logs page calls the same functions.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::events::search::Party;
use crate::events::store::{Found, Search, Store};
use crate::events::{Delivery, StarttlsSeen};

/// Records per page unless asked otherwise, and at most.
pub const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub recipient: Option<String>,
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default)]
    pub queue_id: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
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
}

impl LogQuery {
    /// The search asked for; a recipient or sender that is neither an address, a domain
    /// nor a `.domain` is refused, naming the field.
    pub fn search(&self) -> Result<Search, ApiError> {
        for (field, v) in [("recipient", &self.recipient), ("sender", &self.sender)] {
            if let Err(e) = Party::check(v.as_deref().unwrap_or("")) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{field}: {e}"),
                    Some(field.into()),
                ));
            }
        }
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Ok(Search {
            recipient: given(&self.recipient),
            sender: given(&self.sender),
            queue_id: given(&self.queue_id),
            host: given(&self.host),
            text: given(&self.text),
            since: self.since,
            until: self.until,
            before: self.before,
            limit: self.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE),
            failed_only: false,
            from_tenant: false,
        })
    }
}

/// A page of records as the API answers it: each with the Postfix lines it stands for.
#[derive(Debug, Serialize)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    /// `before` for the next (older) page, if there may be one.
    pub next: Option<u64>,
    pub scanned: u64,
    /// The search looked at `scanned` records without filling the page, and stopped.
    pub stopped_early: bool,
}

#[derive(Debug, Serialize)]
pub struct LogRecord {
    pub seq: u64,
    pub record: Delivery,
    pub lines: Vec<String>,
}

impl From<Found> for LogPage {
    fn from(f: Found) -> LogPage {
        LogPage {
            records: f
                .records
                .into_iter()
                .map(|s| LogRecord {
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

/// The record store, or the 503 that says it is not open.
pub(crate) fn records_store(state: &AdminState) -> Result<std::sync::Arc<Store>, ApiError> {
    state
        .engine
        .as_ref()
        .and_then(|e| e.events().store())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the delivery record store is not open (see the start-up log)",
                None,
            )
        })
}

/// The one search of the API and the page.
pub(crate) async fn search_records(state: &AdminState, q: Search) -> Result<Found, ApiError> {
    let store = records_store(state)?;
    super::blocking(move || store.search(&q))
        .await?
        .map_err(ApiError::internal)
}

/// What the records say of `host` over the last `days`.
pub(crate) async fn starttls_seen(
    state: &AdminState,
    host: &str,
    days: u64,
) -> Result<StarttlsSeen, ApiError> {
    let host = host.trim().to_ascii_lowercase();
    if !crate::settings::is_domain_name(&host) && host.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("host: {host:?} is not a host name"),
            Some("host".into()),
        ));
    }
    if !(1..=3650).contains(&days) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("days: {days} is out of range (1–3650)"),
            Some("days".into()),
        ));
    }
    let store = records_store(state)?;
    let since = crate::fsutil::unix_now().saturating_sub(days * 86_400);
    let seen = super::blocking(move || store.starttls_history(&[host], since))
        .await?
        .map_err(ApiError::internal)?;
    Ok(seen.into_iter().next().unwrap_or_default())
}

pub async fn search(
    State(state): State<AdminState>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let found = search_records(&state, q.search()?).await?;
    Ok(Json(found.into()))
}

#[derive(Debug, Deserialize)]
pub struct StarttlsQuery {
    pub host: String,
    #[serde(default = "thirty")]
    pub days: u64,
}

fn thirty() -> u64 {
    30
}

pub async fn starttls(
    State(state): State<AdminState>,
    Query(q): Query<StarttlsQuery>,
) -> Result<Json<StarttlsSeen>, ApiError> {
    starttls_seen(&state, &q.host, q.days).await.map(Json)
}
