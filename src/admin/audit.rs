//! The audit log over the API: one version's changes field by field
//! (`GET /api/v1/settings/audit/{version}`), and putting a version back in force
//! (`POST /api/v1/settings/restore/{version}`), itself a change. The Audit page calls these.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::{AdminState, ApiError};
use crate::settings::{FieldChange, SectionChange, SettingsDoc};

/// Versions the Audit page lists.
pub const LISTED: usize = 50;

#[derive(Debug, Serialize)]
pub struct Version {
    pub version: u64,
    pub unix_time: u64,
    pub actor: String,
    pub changes: Vec<SectionChange>,
    /// Field by field against the version before it (empty for the first).
    pub fields: Vec<FieldChange>,
}

/// The newest `limit` versions with their field changes: the API's and the page's.
pub(crate) async fn versions(state: &AdminState, limit: usize) -> Result<Vec<Version>, ApiError> {
    let settings = state.settings.clone();
    let entries = tokio::task::spawn_blocking(move || settings.audit(limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    Ok(entries
        .into_iter()
        .map(|e| Version {
            version: e.seq,
            unix_time: e.unix_time,
            changes: match &e.previous {
                Some(p) => crate::settings::diff(p, &e.new),
                None => Vec::new(),
            },
            fields: crate::settings::fields(e.previous.as_ref(), &e.new),
            actor: e.actor,
        })
        .collect())
}

pub async fn show(
    State(state): State<AdminState>,
    Path(version): Path<u64>,
) -> Result<Json<Version>, ApiError> {
    versions(&state, usize::MAX)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .map(Json)
        .ok_or_else(|| gone(version))
}

fn gone(version: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("version {version} is not in the audit log (it keeps the newest versions only)"),
        Some("version".into()),
    )
}

/// Version `version` in force again, recorded as a change by `actor`; certificates it binds
/// are served from the next handshake.
pub(crate) async fn restore_version(
    state: &AdminState,
    version: u64,
    actor: String,
) -> Result<std::sync::Arc<crate::settings::Snapshot>, ApiError> {
    let who = format!("{actor} (restore of version {version})");
    match super::put_back(state, move |settings| settings.restore(version, &who)).await? {
        Some(snapshot) => {
            tracing::info!(target: "postern/admin", "settings restored to version {version} by {actor} (now version {})", snapshot.version);
            Ok(snapshot)
        }
        None => Err(gone(version)),
    }
}

pub async fn restore(
    State(state): State<AdminState>,
    Path(version): Path<u64>,
) -> Result<Json<SettingsDoc>, ApiError> {
    let snapshot = restore_version(&state, version, "api".into()).await?;
    Ok(Json(snapshot.settings.to_doc()))
}
