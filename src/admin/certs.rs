//! `/api/v1/certificates`: list, import (PEM text or an ACME name), delete. Responses carry
//! the certificate's facts, never key material.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{AdminState, ApiError};
use crate::certs::{CertError, CertInfo, ImportRequest, StoreOpError};

pub async fn list(State(state): State<AdminState>) -> Result<axum::Json<Vec<CertInfo>>, ApiError> {
    listed(&state).await.map(axum::Json)
}

/// Every certificate with its facts and bindings; the store is read off the async workers.
pub(crate) async fn listed(state: &AdminState) -> Result<Vec<CertInfo>, ApiError> {
    let certs = state.certs.clone();
    tokio::task::spawn_blocking(move || certs.list())
        .await
        .map_err(internal)?
        .map_err(internal)
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
    let certs = state.certs.clone();
    let info = tokio::task::spawn_blocking(move || certs.import(&req, "api"))
        .await
        .map_err(internal)?
        .map_err(cert_error)?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

pub async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let certs = state.certs.clone();
    tokio::task::spawn_blocking(move || certs.delete(&name, "api"))
        .await
        .map_err(internal)?
        .map_err(cert_error)?;
    Ok(StatusCode::NO_CONTENT)
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
                StoreOpError::Store(
                    crate::settings::StoreError::Unreachable(_)
                    | crate::settings::StoreError::Refused(_),
                ) => StatusCode::SERVICE_UNAVAILABLE,
                StoreOpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, e.to_string(), None)
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
}
