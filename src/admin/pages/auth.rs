//! Sign in, sign out, change password.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::password_rules::{self, MIN_PASSWORD};
use super::sign_in_token::SignInTokens;
use super::{AUTH_KEY, CSRF_KEY, Chrome, ClientAddr, SignedIn, chrome, random_token, render};
use crate::admin::AdminState;
use crate::inbound::Attempt;
use crate::settings::{Argon2Hasher, FIRST_ADMIN, INITIAL_PASSWORD_FILE, PasswordHasher};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    error: Option<String>,
    user_name: String,
    first_start: bool,
    password_file: String,
}

/// The sign-in form: its token from the browser's nonce cookie (set here when new); nothing
/// is stored on the server (`sign_in_token.rs`).
fn sign_in_page(
    state: &AdminState,
    headers: &HeaderMap,
    user_name: &str,
    error: Option<String>,
) -> Response {
    let file = state.pages.data_dir.join(INITIAL_PASSWORD_FILE);
    let nonce = SignInTokens::nonce(headers);
    let mut response = render(SignInPage {
        chrome: Chrome {
            hostname: state.pages.hostname.clone(),
            user: None,
            csrf: state.pages.sign_in.token(&nonce.value),
            database_down: state.settings.shared_database_down(),
            settings_refused: state.settings.shared_settings_refused(),
            node: state.cluster.as_ref().map(|c| c.me().to_string()),
        },
        error,
        user_name: user_name.to_string(),
        first_start: file.exists(),
        password_file: file.display().to_string(),
    });
    if nonce.new {
        let (name, value) = SignInTokens::set_cookie(&nonce.value);
        response.headers_mut().insert(name, value);
    }
    response
}

pub async fn sign_in_form(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    sign_in_page(&state, &headers, "", None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    user: String,
    password: String,
}

pub async fn sign_in(
    State(state): State<AdminState>,
    session: Session,
    headers: HeaderMap,
    axum::Extension(ClientAddr(ip)): axum::Extension<ClientAddr>,
    Form(form): Form<SignInForm>,
) -> Response {
    let name = form.user.trim().to_string();
    let user = state.settings.admin_user(&name).ok().flatten();
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    if let Err(error) = checked(&state, ip, &name, form.password, hash, "sign-in").await {
        return sign_in_page(&state, &headers, &name, Some(error));
    }
    let Some(user) = user else {
        // `checked` fails an unknown name; no user, no sign-in whatever it said.
        return sign_in_page(&state, &headers, &name, Some(WRONG.into()));
    };
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
        let error = Some("Session store error.".into());
        return sign_in_page(&state, &headers, &name, error);
    }
    tracing::info!(target: "postern/admin", "admin sign-in of {} from {ip}", user.name);
    Redirect::to(if user.must_change { "/password" } else { "/" }).into_response()
}

const WRONG: &str = "Wrong user name or password.";

/// One password check of the page (sign-in, the current password of a change), through the
/// throttle: in the address's turn, counted before the check, refused past the address's
/// limit, slowed by the user's failures; every failure one line with user and address
/// (fail2ban's filter is in README). `Err` holds the words for the form.
async fn checked(
    state: &AdminState,
    ip: std::net::IpAddr,
    name: &str,
    password: String,
    hash: Option<String>,
    what: &str,
) -> Result<(), String> {
    let throttle = &state.pages.throttle;
    let turn = throttle.turn(ip).await;
    match throttle.arrive(ip, name) {
        Attempt::Refused { retry_after } => {
            tracing::warn!(target: "postern/admin", "warning: admin {what} failed for user {name:?} from {ip}: too many failed attempts from this address");
            return Err(super::throttle::refusal(retry_after));
        }
        Attempt::Check { delay } => tokio::time::sleep(delay).await,
    }
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
    if ok {
        throttle.succeeded(ip);
        return Ok(());
    }
    tracing::warn!(target: "postern/admin", "warning: admin {what} failed for user {name:?} from {ip}");
    let failure = throttle.failed(ip, name);
    if failure.locks {
        let minutes = super::throttle::WINDOW.as_secs() / 60;
        tracing::warn!(target: "postern/admin", "warning: admin sign-in refused from {ip} for {minutes} minutes after {} failed attempts", super::throttle::LIMIT);
    }
    drop(turn);
    tokio::time::sleep(failure.delay).await;
    Err(if what == "sign-in" {
        WRONG.into()
    } else {
        "The current password is wrong.".into()
    })
}

/// An argon2id hash of a random password nobody knows, for unknown user names.
const UNKNOWN_USER_HASH: &str = "$argon2id$v=19$m=8192,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3j8hQ0ZCcjF0q2e5KoR0i7W3yV6JvLQk9b2mZ8xk1aI";

pub async fn sign_out(
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
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
    let error = session
        .remove::<String>(PASSWORD_ERROR)
        .await
        .ok()
        .flatten();
    password_page(&state, &session, &auth, error).await
}

/// Where a refused change's reason waits for the form it is shown on.
const PASSWORD_ERROR: &str = "password_error";

/// A refused change is shown after a redirect (post/redirect/get): reloading the page then
/// shows the form, where reloading the answer to the POST sent the passwords again, each
/// time counted by the throttle as one more failure.
async fn refused(session: &Session, error: String) -> Response {
    let _ = session.insert(PASSWORD_ERROR, error).await;
    Redirect::to("/password").into_response()
}

#[derive(Deserialize)]
pub struct PasswordForm {
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
    let error = if let Some(why) = password_rules::weak(&form.new, &auth.user) {
        Some(why)
    } else if form.new != form.confirm {
        Some("The two new passwords differ.")
    } else if form.new == form.current {
        Some("The new password must differ from the current one.")
    } else {
        None
    };
    if let Some(error) = error {
        return refused(&session, error.into()).await;
    }
    let stored = state.settings.admin_user(&auth.user).ok().flatten();
    let hash = stored.map(|u| u.password_hash);
    let what = "password change";
    if let Err(e) = checked(&state, ip, &auth.user, form.current, hash, what).await {
        return refused(&session, e).await;
    }
    let new = form.new;
    let hash = match tokio::task::spawn_blocking(move || Argon2Hasher.hash(&new)).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return refused(&session, e).await,
        Err(e) => return refused(&session, e.to_string()).await,
    };
    if let Err(e) = state.settings.set_admin_password(&auth.user, hash, false) {
        let error = format!("The password could not be stored: {e}");
        return refused(&session, error).await;
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
