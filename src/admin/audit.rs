//! The audit log over the API: the newest versions by section (`GET /api/v1/settings/audit`),
//! one version's changes field by field
//! (`GET /api/v1/settings/audit/{version}`), what putting a version back in force would change
//! (`POST /api/v1/settings/restore/{version}?dry_run=true`), and doing it
//! (`POST /api/v1/settings/restore/{version}`), itself a change. The Audit page calls these.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, ChangeQuery};
use crate::settings::certificates::CertChange;
use crate::settings::{FieldChange, SectionChange};

/// One change as the audit list shows it: who, when, and what by section; never the settings
/// themselves (they hold hashes).
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditLine {
    pub version: u64,
    pub unix_time: u64,
    pub actor: String,
    pub changes: Vec<SectionChange>,
    /// Certificates imported, renewed, deleted, bound or unbound: subject, serial, SHA-256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertChange>,
}

/// The last changes, newest first (`?limit=N`, default 50).
pub async fn list(
    State(state): State<AdminState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Vec<AuditLine>>, ApiError> {
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
    let settings = state.settings.clone();
    let entries = super::blocking(move || settings.audit(limit))
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditLine {
                version: e.seq,
                unix_time: e.unix_time,
                changes: match &e.previous {
                    Some(p) => crate::settings::diff(p, &e.new),
                    None => Vec::new(),
                },
                actor: e.actor,
                certificates: e.certificates,
            })
            .collect(),
    ))
}

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
    /// Certificates imported, renewed, deleted, bound or unbound; never a key.
    pub certificates: Vec<CertChange>,
    /// The first version: nothing before it to compare with.
    pub first: bool,
}

/// What restoring a version would change, shown before it applies.
#[derive(Debug, Serialize)]
pub struct RestorePreview {
    pub version: u64,
    /// The version in force the changes are counted against; a restore confirmed against
    /// it is refused once the settings have moved on.
    pub against: u64,
    /// Field by field: the value in force (`before`) and after the restore (`after`).
    pub fields: Vec<FieldChange>,
    /// The certificate bindings it makes and undoes.
    pub certificates: Vec<CertChange>,
    /// Certificates the version binds that are no longer stored, with where: it cannot be
    /// restored until they are imported again.
    pub missing: Vec<MissingCert>,
}

#[derive(Debug, Serialize)]
pub struct MissingCert {
    pub name: String,
    pub place: String,
}

/// The newest `limit` versions with their field changes: the API's and the page's.
pub(crate) async fn versions(state: &AdminState, limit: usize) -> Result<Vec<Version>, ApiError> {
    let settings = state.settings.clone();
    let entries = super::blocking(move || settings.audit(limit))
        .await?
        .map_err(ApiError::internal)?;
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
            first: e.previous.is_none(),
            certificates: e.certificates,
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

/// What restoring `version` would change against the settings in force; nothing changes.
pub(crate) async fn preview(state: &AdminState, version: u64) -> Result<RestorePreview, ApiError> {
    let settings = state.settings.clone();
    let plan = super::blocking(move || settings.restore_plan(version))
        .await?
        .map_err(|e| super::replace_error(e.into()))?
        .ok_or_else(|| gone(version))?;
    Ok(RestorePreview {
        version,
        against: plan.current.version,
        fields: crate::settings::fields(Some(&plan.current.settings), &plan.target),
        certificates: plan.certificates,
        missing: plan
            .missing
            .into_iter()
            .map(|(place, name)| MissingCert { name, place })
            .collect(),
    })
}

/// Version `version` in force again, recorded as a change by `actor`; certificates it binds
/// are served from the next handshake. `shown`: the version in force when the admin was shown
/// what it changes (`RestorePreview::against`); refused if the settings moved on since.
pub(crate) async fn restore_version(
    state: &AdminState,
    version: u64,
    actor: String,
    shown: Option<u64>,
) -> Result<std::sync::Arc<crate::settings::Snapshot>, ApiError> {
    let who = format!("{actor} (restore of version {version})");
    let put =
        move |settings: &crate::settings::SettingsHandle| settings.restore(version, &who, shown);
    match super::put_back(state, put).await? {
        Some(snapshot) => {
            tracing::info!(target: "postern/admin", "settings restored to version {version} by {actor} (now version {})", snapshot.version);
            Ok(snapshot)
        }
        None => Err(gone(version)),
    }
}

/// With `?dry_run=true`, what the restore would change (nothing is stored); else the
/// settings now in force.
pub async fn restore(
    State(state): State<AdminState>,
    Path(version): Path<u64>,
    Query(q): Query<ChangeQuery>,
) -> Result<Response, ApiError> {
    if q.dry_run {
        return Ok(Json(preview(&state, version).await?).into_response());
    }
    let snapshot = restore_version(&state, version, "api".into(), None).await?;
    Ok(Json(snapshot.settings.to_doc()).into_response())
}
