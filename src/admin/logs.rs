//! Delivery records over the API (`/api/v1/logs`), Hermes' Simple Search: recipient,
//! sender, queue ID, host or free text in a time range, newest first, a page at a time; and
//! "did host H offer STARTTLS in the last N days?" (`/api/v1/logs/starttls`). The Logs page
//! calls the same functions.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::events::StarttlsSeen;
use crate::events::store::{Found, Search, Store};

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
    pub fn search(&self) -> Search {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Search {
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
        }
    }
}

fn store(state: &AdminState) -> Result<std::sync::Arc<Store>, ApiError> {
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
    let store = store(state)?;
    tokio::task::spawn_blocking(move || store.search(&q))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))
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
    let store = store(state)?;
    let since = crate::fsutil::unix_now().saturating_sub(days * 86_400);
    let seen = tokio::task::spawn_blocking(move || store.starttls_history(&[host], since))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    Ok(seen.into_iter().next().unwrap_or_default())
}

pub async fn search(
    State(state): State<AdminState>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Found>, ApiError> {
    search_records(&state, q.search()).await.map(Json)
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
