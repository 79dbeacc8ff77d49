//! `/api/v1/certificates`: list, import (PEM text or an ACME name), delete. Responses carry
//! the certificate's facts, never key material.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{AdminState, ApiError};
use crate::certs::{CertError, CertInfo, ImportRequest, StoreOpError};
use crate::settings::StoreError;

pub async fn list(State(state): State<AdminState>) -> Result<axum::Json<Vec<CertInfo>>, ApiError> {
    listed(&state).await.map(axum::Json)
}

/// Every certificate with its facts and bindings; the store is read off the async workers.
pub(crate) async fn listed(state: &AdminState) -> Result<Vec<CertInfo>, ApiError> {
    let certs = state.certs.clone();
    super::blocking(move || certs.list())
        .await?
        .map_err(|e| match e {
            // The shared database away: its state, said as a settings change hears it.
            e @ (StoreError::Unreachable(_) | StoreError::Refused(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None)
            }
            e => ApiError::internal(e),
        })
}

/// 201 with the facts and warnings; 400 naming the field; 409 for a name in use.
pub async fn import(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<CertInfo>), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: ImportRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: {}", e.inner()),
            Some(field),
        )
    })?;
    let info = import_certificate(&state, req, "api", "api token")
        .await?
        .map_err(cert_error)?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

pub async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_certificate(&state, name, "api", "api token")
        .await?
        .map_err(cert_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The one import of the API and the page, off the async workers: `actor` is what the audit
/// log records, `by` whom the admin log line names. The inner error is the request's (a
/// field, a name in use) or the shared store's state; the outer one postern's own fault.
pub(crate) async fn import_certificate(
    state: &AdminState,
    req: ImportRequest,
    actor: &str,
    by: &str,
) -> Result<Result<CertInfo, CertError>, ApiError> {
    let (certs, actor) = (state.certs.clone(), actor.to_string());
    let result = super::blocking(move || certs.import(&req, &actor)).await?;
    let info = match result {
        Ok(info) => info,
        Err(e) => return fault(e).map(Err),
    };
    let done = if info.renewed { "renewed" } else { "imported" };
    tracing::info!(target: "postern/admin", "certificate {} {done} by {by}", info.name);
    Ok(Ok(info))
}

/// The one delete of the API and the page, as `import_certificate`.
pub(crate) async fn delete_certificate(
    state: &AdminState,
    name: String,
    actor: &str,
    by: &str,
) -> Result<Result<(), CertError>, ApiError> {
    let (certs, actor, which) = (state.certs.clone(), actor.to_string(), name.clone());
    let result = super::blocking(move || certs.delete(&which, &actor)).await?;
    if let Err(e) = result {
        return fault(e).map(Err);
    }
    tracing::info!(target: "postern/admin", "certificate {name} deleted by {by}");
    Ok(Ok(()))
}

/// The store failing (not away, not refusing: failing) is postern's fault, said by the error
/// funnel; everything else is the request's to show.
fn fault(e: CertError) -> Result<CertError, ApiError> {
    match e {
        CertError::Store(StoreOpError::Store(
            e @ (StoreError::Unreachable(_) | StoreError::Refused(_)),
        )) => Ok(CertError::Store(StoreOpError::Store(e))),
        CertError::Store(StoreOpError::Store(e)) => Err(ApiError::internal(e)),
        e => Ok(e),
    }
}

fn cert_error(e: CertError) -> ApiError {
    match e {
        CertError::Invalid { field, error } => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: {error}"),
            Some(field),
        ),
        CertError::Store(e) => {
            let status = match &e {
                StoreOpError::NotFound(_) => StatusCode::NOT_FOUND,
                StoreOpError::Exists(_)
                | StoreOpError::NameTaken { .. }
                | StoreOpError::InUse { .. }
                | StoreOpError::System => StatusCode::CONFLICT,
                // The shared database away, or its settings row refused: the store's
                // state, not a fault here; the same answer as a settings change gets.
                // (`fault` has made the store's failures internal errors already.)
                StoreOpError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            ApiError::new(status, e.to_string(), None)
        }
    }
}
