//! Sign in, sign out, change password.

use askama::Template;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{
    AUTH_KEY, CSRF_KEY, Chrome, ClientAddr, SignedIn, check_csrf, chrome, random_token, render,
};
use crate::admin::AdminState;
use crate::settings::{Argon2Hasher, FIRST_ADMIN, INITIAL_PASSWORD_FILE, PasswordHasher};

/// A chosen password: long enough that the throttle, not the guessing, is what limits.
const MIN_PASSWORD: usize = 12;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    error: Option<String>,
    user_name: String,
    first_start: bool,
    password_file: String,
}

async fn sign_in_page(
    state: &AdminState,
    session: &Session,
    user_name: &str,
    error: Option<String>,
) -> Response {
    let file = state.pages.data_dir.join(INITIAL_PASSWORD_FILE);
    render(SignInPage {
        chrome: chrome(state, session, None).await,
        error,
        user_name: user_name.to_string(),
        first_start: file.exists(),
        password_file: file.display().to_string(),
    })
}

pub async fn sign_in_form(State(state): State<AdminState>, session: Session) -> Response {
    sign_in_page(&state, &session, "", None).await
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    user: String,
    password: String,
}

pub async fn sign_in(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(ClientAddr(ip)): axum::Extension<ClientAddr>,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let name = form.user.trim().to_string();
    let throttle = &state.pages.throttle;
    if let Some(minutes) = throttle.locked(&name, ip) {
        let error = format!(
            "Too many failed sign-ins for this user or from this address: try again in {minutes} minute(s)."
        );
        return sign_in_page(&state, &session, &name, Some(error)).await;
    }
    let user = state.settings.admin_user(&name).ok().flatten();
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = form.password;
    // Checked even for an unknown name, against a fixed hash: the time says nothing.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => crate::settings::verify_password(&password, &h),
        None => {
            crate::settings::verify_password(&password, UNKNOWN_USER_HASH);
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(target: "postern/admin", "warning: admin sign-in failed for user {name:?} from {ip}");
        if throttle.failed(&name, ip) {
            tracing::warn!(target: "postern/admin", "warning: admin sign-in locked for user {name:?} and address {ip} for 15 minutes after 5 failures");
        }
        let error = "Wrong user name or password.".to_string();
        return sign_in_page(&state, &session, &name, Some(error)).await;
    };
    throttle.succeeded(&name);
    // A new session id at sign-in: an id planted before it is worth nothing after.
    let _ = session.cycle_id().await;
    let auth = SignedIn {
        generation: state.pages.generation(&user.name),
        user: user.name.clone(),
        since: crate::fsutil::unix_now(),
        must_change: user.must_change,
    };
    let stored = session.insert(AUTH_KEY, &auth).await;
    let fresh = session.insert(CSRF_KEY, random_token()).await;
    if stored.is_err() || fresh.is_err() {
        return sign_in_page(&state, &session, &name, Some("Session store error.".into())).await;
    }
    tracing::info!(target: "postern/admin", "admin sign-in of {} from {ip}", user.name);
    Redirect::to(if user.must_change { "/password" } else { "/" }).into_response()
}

/// An argon2id hash of a random password nobody knows, for unknown user names.
const UNKNOWN_USER_HASH: &str = "$argon2id$v=19$m=8192,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3j8hQ0ZCcjF0q2e5KoR0i7W3yV6JvLQk9b2mZ8xk1aI";

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let _ = session.flush().await;
    tracing::info!(target: "postern/admin", "admin sign-out of {}", auth.user);
    Redirect::to("/sign-in").into_response()
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    chrome: Chrome,
    error: Option<String>,
    must_change: bool,
    min_len: usize,
}

async fn password_page(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    error: Option<String>,
) -> Response {
    render(PasswordPage {
        chrome: chrome(state, session, Some(auth)).await,
        error,
        must_change: auth.must_change,
        min_len: MIN_PASSWORD,
    })
}

pub async fn password_form(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    password_page(&state, &session, &auth, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: String,
    new: String,
    confirm: String,
}

pub async fn change_password(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    axum::Extension(ClientAddr(ip)): axum::Extension<ClientAddr>,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let refuse = |why: &str| Some(why.to_string());
    let error = if form.new.chars().count() < MIN_PASSWORD {
        refuse("The new password must have at least 12 characters.")
    } else if form.new != form.confirm {
        refuse("The two new passwords differ.")
    } else if form.new == form.current {
        refuse("The new password must differ from the current one.")
    } else {
        None
    };
    if error.is_some() {
        return password_page(&state, &session, &auth, error).await;
    }
    let stored = state.settings.admin_user(&auth.user).ok().flatten();
    let (current, new) = (form.current, form.new);
    let hashed = tokio::task::spawn_blocking(move || {
        let ok = stored
            .as_ref()
            .is_some_and(|u| crate::settings::verify_password(&current, &u.password_hash));
        ok.then(|| Argon2Hasher.hash(&new))
    })
    .await
    .ok()
    .flatten();
    let hash = match hashed {
        None => {
            let error = refuse("The current password is wrong.");
            return password_page(&state, &session, &auth, error).await;
        }
        Some(Err(e)) => return password_page(&state, &session, &auth, Some(e)).await,
        Some(Ok(hash)) => hash,
    };
    if let Err(e) = state.settings.set_admin_password(&auth.user, hash, false) {
        let error = Some(format!("The password could not be stored: {e}"));
        return password_page(&state, &session, &auth, error).await;
    }
    if auth.user == FIRST_ADMIN {
        // The generated password is no longer anyone's: its file goes.
        let _ = std::fs::remove_file(state.pages.data_dir.join(INITIAL_PASSWORD_FILE));
    }
    // Every other session of this user ends; this one goes on under a new id.
    let generation = state.pages.bump_generation(&auth.user);
    let _ = session.cycle_id().await;
    let renewed = SignedIn {
        generation,
        must_change: false,
        ..auth.clone()
    };
    let _ = session.insert(AUTH_KEY, &renewed).await;
    let _ = session.insert("notice", "Password changed.").await;
    tracing::info!(target: "postern/admin", "admin password of {} changed from {ip}", auth.user);
    Redirect::to("/").into_response()
}
