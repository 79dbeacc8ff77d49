//! The dashboard's facts (`GET /api/v1/dashboard`, and the landing page): queue counts,
//! the last 24 hours of deliveries by TLS outcome per hour, the top destinations with their
//! share over TLS (as Google's email transparency report shows it), certificates expiring
//! within 30 days, and the last 20 errors.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{AdminState, ApiError};
use crate::events::store::{Found, Search, TlsOutcome};

const HOUR: u64 = 3600;

#[derive(Debug, Serialize)]
pub struct Hour {
    /// UNIX seconds of the hour's start.
    pub start: u64,
    pub verified: u64,
    pub encrypted: u64,
    pub plaintext: u64,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct Destination {
    pub domain: String,
    pub deliveries: u64,
    /// Messages delivered there; of those, over TLS: the share in percent.
    pub tls_percent: u64,
}

#[derive(Debug, Serialize)]
pub struct Expiring {
    pub name: String,
    pub days_left: i64,
    pub used_for: String,
}

#[derive(Debug, Serialize)]
pub struct Dashboard {
    pub queue: crate::admin::queue::Counts,
    pub hours: Vec<Hour>,
    pub destinations: Vec<Destination>,
    pub expiring: Vec<Expiring>,
    /// The newest deferrals and bounces, newest first.
    pub errors: Vec<LastError>,
}

/// A deferral or bounce: when (UNIX seconds), and its Postfix-style line.
#[derive(Debug, Serialize)]
pub struct LastError {
    pub unix_time: u64,
    pub line: String,
}

/// The one gathering of the API and the page.
pub(crate) async fn gather(state: &AdminState) -> Result<Dashboard, ApiError> {
    let spool = state.spool.clone();
    let queue = tokio::task::spawn_blocking(move || {
        let filter = crate::admin::queue::Filter {
            limit: Some(0),
            ..Default::default()
        };
        crate::admin::queue::listing(&spool, &filter).counts
    })
    .await
    .unwrap_or_default();
    let now = crate::fsutil::unix_now();
    let first = now - now % HOUR - 23 * HOUR;
    let (hourly, top, errors) = records(state, first).await?;
    let expiring = crate::admin::certs::listed(state)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.days_left <= 30)
        .map(|c| Expiring {
            name: c.name,
            days_left: c.days_left,
            used_for: c.used_for.join("; "),
        })
        .collect();
    Ok(Dashboard {
        queue,
        hours: hours(first, &hourly),
        destinations: destinations(top),
        expiring,
        errors: errors.records.iter().map(LastError::of).collect(),
    })
}

type Hourly = Vec<(u64, TlsOutcome, u64)>;
type Top = Vec<(String, u64, u64)>;

/// From the delivery records since `first`: counts per hour and outcome, the busiest
/// destinations, the last failures (nothing without a records store).
async fn records(state: &AdminState, first: u64) -> Result<(Hourly, Top, Found), ApiError> {
    let Some(store) = state.engine.as_ref().and_then(|e| e.events().store()) else {
        return Ok((Vec::new(), Vec::new(), Found::default()));
    };
    let (hourly, top, errors) = tokio::task::spawn_blocking(move || {
        let errors = store.search(&Search {
            failed_only: true,
            limit: 20,
            ..Search::default()
        });
        (store.hourly(first), store.destinations(first), errors)
    })
    .await
    .map_err(ApiError::internal)?;
    let internal = ApiError::internal;
    Ok((
        hourly.map_err(internal)?,
        top.map_err(internal)?,
        errors.map_err(internal)?,
    ))
}

/// The last 24 hours from `first`, each with its deliveries by TLS outcome.
fn hours(first: u64, hourly: &Hourly) -> Vec<Hour> {
    (0..24)
        .map(|i| {
            let start = first + i * HOUR;
            let count = |o: TlsOutcome| {
                hourly
                    .iter()
                    .filter(|(h, out, _)| *h == start && *out == o)
                    .map(|(_, _, n)| n)
                    .sum()
            };
            Hour {
                start,
                verified: count(TlsOutcome::Verified),
                encrypted: count(TlsOutcome::Encrypted),
                plaintext: count(TlsOutcome::Plaintext),
                refused: count(TlsOutcome::Refused),
            }
        })
        .collect()
}

/// The ten busiest destinations, with the share delivered over TLS.
fn destinations(top: Top) -> Vec<Destination> {
    top.into_iter()
        .take(10)
        .map(|(domain, all, tls)| Destination {
            tls_percent: (tls * 100).checked_div(all).unwrap_or(0),
            domain,
            deliveries: all,
        })
        .collect()
}

impl LastError {
    fn of(s: &crate::events::store::Stored) -> LastError {
        LastError {
            unix_time: s.record.unix_time,
            line: s.record.postfix_line(),
        }
    }
}

pub async fn show(State(state): State<AdminState>) -> Result<Json<Dashboard>, ApiError> {
    gather(&state).await.map(Json)
}
