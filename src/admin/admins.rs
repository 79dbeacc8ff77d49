//! Admin page users from the control API: `postern admin reset-password USER` for the day
//! an admin is locked out or has lost the password anyway (the bearer token in
//! `data/api-token` is the proof of being the server's operator).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::settings::PasswordHasher;

#[derive(Deserialize)]
pub struct NewPassword {
    /// Chosen by the CLI, never answered back.
    pub password: String,
}

#[derive(Serialize, Deserialize)]
pub struct PasswordReset {
    pub user: String,
    /// The new password must be changed at the next sign-in.
    pub must_change: bool,
    /// The user's sessions that ended.
    pub sessions_ended: bool,
}

/// `POST /api/v1/admins/{name}/password`: a new password that must be changed at the next
/// sign-in; the user's sessions end and the sign-in throttle forgets every failure, so the
/// operator's own address can sign in at once.
pub async fn reset_password(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Json(body): Json<NewPassword>,
) -> Result<Json<PasswordReset>, ApiError> {
    let field = || Some("password".to_string());
    if body.password.trim().chars().count() < 12 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "password: at least 12 characters, not only spaces",
            field(),
        ));
    }
    let settings = state.settings.clone();
    let who = name.clone();
    let stored = tokio::task::spawn_blocking(move || {
        if settings.admin_user(&who)?.is_none() {
            return Ok(false);
        }
        let hash = crate::settings::Argon2Hasher
            .hash(&body.password)
            .map_err(crate::settings::StoreError::Db)?;
        settings.set_admin_password(&who, hash, true).map(|()| true)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if !stored {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("user: no admin page user {name:?}"),
            Some("user".into()),
        ));
    }
    state.pages.password_reset(&name);
    tracing::warn!(target: "postern/admin", "admin password of {name:?} reset through the control API; sign-in throttle cleared");
    Ok(Json(PasswordReset {
        user: name,
        must_change: true,
        sessions_ended: true,
    }))
}
