//! The dashboard's facts (`GET /api/v1/dashboard`, and the landing page): queue counts,
//! the last 24 hours of deliveries by TLS outcome per hour, the top destinations with their
//! share over TLS (as Google's email transparency report shows it), the busiest sender
//! domains with the share of their mail received over TLS, the sessions refused before a
//! message, certificates expiring within 30 days, and the last 20 errors.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{AdminState, ApiError};
use crate::events::received::RefusalCount;
use crate::events::store::{Found, Search, SenderShare, StoreError, TlsOutcome};

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

/// A sender domain, in the last 24 hours.
#[derive(Debug, Serialize)]
pub struct SenderDomain {
    /// Empty for the null sender (bounces).
    pub domain: String,
    pub received: u64,
    /// Of the messages received, the share over TLS, in percent.
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
    /// The ten busiest sender domains of the received mail.
    pub senders: Vec<SenderDomain>,
    /// Refusals before a message on yesterday and today (UTC), per client, sender domain
    /// and reason, most first, at most 20.
    pub refused: Vec<RefusalCount>,
    /// All refusals of those days.
    pub refused_total: u64,
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
    let r = records(state, first).await?;
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
        hours: hours(first, &r.hourly),
        destinations: destinations(r.top),
        senders: senders(r.senders),
        refused_total: r.refusals.iter().map(|c| c.count).sum(),
        refused: r.refusals.into_iter().take(20).collect(),
        expiring,
        errors: r.errors.records.iter().map(LastError::of).collect(),
    })
}

type Hourly = Vec<(u64, TlsOutcome, u64)>;
type Top = Vec<(String, u64, u64)>;

/// What the records say since `first`.
#[derive(Default)]
struct FromRecords {
    hourly: Hourly,
    top: Top,
    errors: Found,
    senders: SenderShare,
    refusals: Vec<RefusalCount>,
}

/// From the records since `first`: deliveries per hour and outcome, the busiest
/// destinations, the last failures, the received mail per sender domain and the refusals
/// (nothing without a records store).
async fn records(state: &AdminState, first: u64) -> Result<FromRecords, ApiError> {
    let Some(store) = state.engine.as_ref().and_then(|e| e.events().store()) else {
        return Ok(FromRecords::default());
    };
    let r = tokio::task::spawn_blocking(move || -> Result<FromRecords, StoreError> {
        let errors = store.search(&Search {
            failed_only: true,
            limit: 20,
            ..Search::default()
        })?;
        Ok(FromRecords {
            hourly: store.hourly(first)?,
            top: store.destinations(first)?,
            errors,
            senders: store.received_tls(first)?,
            refusals: store.refusals(first)?,
        })
    })
    .await
    .map_err(ApiError::internal)?;
    r.map_err(ApiError::internal)
}

/// The ten busiest sender domains, with the share received over TLS.
fn senders(share: SenderShare) -> Vec<SenderDomain> {
    share
        .into_iter()
        .take(10)
        .map(|(domain, all, tls)| SenderDomain {
            tls_percent: (tls * 100).checked_div(all).unwrap_or(0),
            domain,
            received: all,
        })
        .collect()
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
