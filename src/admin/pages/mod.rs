//! The admin page: server-rendered HTML on the admin listener, beside the control API. Sign
//! in with a user of the settings store; sessions live on the server (tower-sessions), their
//! cookie `HttpOnly; Secure; SameSite=Strict`; every form that changes something carries the
//! session's CSRF token. Pages are a thin layer: they call the same code as the API.

mod audit;
mod auth;
mod certificates;
mod csrf;
mod dashboard;
mod explain;
mod logs;
mod logs_received;
mod m365;
mod password_rules;
pub mod policy;
mod queue;
mod relay;
mod rules;
pub mod sessions;
mod sign_in_token;
mod throttle;
mod tls;
mod words;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tower_sessions::{Expiry, Session, SessionManagerLayer, cookie::SameSite};

use super::AdminState;

/// What a page says of a refused change: the field named by its form label, never by its
/// path, which names a field of a document the page does not show (issue 28). The API and
/// the CLI say the path.
impl super::ApiError {
    pub(crate) fn words(&self) -> String {
        let label = match (&self.label, &self.field) {
            (Some(label), _) => label.clone(),
            (None, Some(field)) => crate::settings::words::field_words(field, &|_, _| None),
            (None, None) => return self.error.clone(),
        };
        // A field of the request rather than of the settings (`pattern`): the page's form
        // is the context, its name adds nothing.
        if self.field.as_deref() == Some(label.as_str()) {
            return self.message().to_string();
        }
        format!("{label}: {}", self.message())
    }
}

/// What the pages need beyond the API's state.
pub struct Pages {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub idle: Duration,
    pub max_age: Duration,
    throttle: crate::inbound::Throttle,
    sign_in: sign_in_token::SignInTokens,
    /// Signed-in sessions, bounded (`sessions.rs`); the listener's reserve asks it.
    pub sessions: sessions::Sessions,
    /// Bumped by a password change: sessions signed in before it end.
    generations: Mutex<HashMap<String, u64>>,
}

impl Pages {
    pub fn new(hostname: &str, data_dir: PathBuf, idle: Duration, max_age: Duration) -> Pages {
        Pages {
            hostname: hostname.to_string(),
            data_dir,
            idle,
            max_age,
            throttle: throttle::admin_throttle(),
            sign_in: sign_in_token::SignInTokens::default(),
            sessions: sessions::Sessions::default(),
            generations: Mutex::new(HashMap::new()),
        }
    }

    fn generation(&self, user: &str) -> u64 {
        let map = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user).copied().unwrap_or(0)
    }

    /// `postern admin reset-password`: the user's sessions end, and the sign-in throttle
    /// forgets every address and user (the operator must get in from wherever they are).
    pub fn password_reset(&self, user: &str) {
        self.bump_generation(user);
        self.throttle.clear();
    }

    fn bump_generation(&self, user: &str) -> u64 {
        let mut map = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let g = map.entry(user.to_string()).or_insert(0);
        *g += 1;
        *g
    }
}

/// The client's address, put on each request by the listener (for throttling and logs).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Who is signed in, kept in the session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedIn {
    pub user: String,
    /// UNIX seconds of the sign-in: the absolute limit counts from here.
    pub since: u64,
    pub generation: u64,
    /// A generated password: every page but the password form sends the user there.
    pub must_change: bool,
}

impl SignedIn {
    /// Who the audit log names for a change made on a page.
    pub fn actor(&self) -> String {
        format!("{} (admin page)", self.user)
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "postern_session";
/// The session's `SignedIn`; `sessions.rs` knows a signed-in session by it.
const AUTH_KEY: &str = "auth";
const CSRF_KEY: &str = "csrf";
const SEEN_KEY: &str = "seen";

pub fn router(state: AdminState) -> Router {
    let idle = i64::try_from(state.pages.idle.as_secs()).unwrap_or(i64::MAX);
    let sessions = SessionManagerLayer::new(state.pages.sessions.clone())
        .with_name(SESSION_COOKIE)
        .with_secure(true)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(idle)));
    Router::new()
        .merge(signed_in_routes(&state))
        .route("/sign-in", get(auth::sign_in_form).post(auth::sign_in))
        .route("/assets/style.css", get(stylesheet))
        // Around every route and the fallback (an unknown path, a wrong method): a
        // state-changing request shows its token before any handler sees it.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::require_csrf,
        ))
        .layer(sessions)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The pages behind sign-in.
fn signed_in_routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/tls", get(tls::page).post(tls::save))
        .route(
            "/certificates",
            get(certificates::page).post(certificates::import),
        )
        .route(
            "/certificates/delete",
            get(certificates::confirm_delete).post(certificates::delete),
        )
        .route("/policy", get(policy::page))
        .route("/policy/add", post(policy::save))
        .route("/policy/edit", post(policy::save))
        .route("/policy/test", post(policy::test))
        .route("/policy/bulk", post(policy::bulk))
        .route(
            "/policy/delete",
            get(policy::confirm_delete).post(policy::delete),
        )
        .route("/relay", get(relay::page))
        .route("/relay/save", post(relay::save))
        .route("/relay/delete", post(relay::delete))
        .route("/relay/networks", post(relay::networks))
        .route("/relay/users", post(relay::user))
        .route("/logs", get(logs::page))
        .route("/logs/received", get(logs_received::page))
        .route("/m365", get(m365::page).post(m365::save))
        .route("/rules", get(rules::page))
        .route("/rules/save", post(rules::save_rule))
        .route("/rules/rule", post(rules::rule_action))
        .route("/rules/list", post(rules::save_list))
        .route("/audit", get(audit::page))
        .route("/audit/restore", post(audit::restore))
        .route("/queue", get(queue::page))
        .route("/queue/act", post(queue::act))
        .route("/queue/{id}", get(queue::message_page))
        .route("/explain", get(explain::page))
        .route(
            "/password",
            get(auth::password_form).post(auth::change_password),
        )
        .route("/sign-out", post(auth::sign_out))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_sign_in,
        ))
}

/// On every page response: nothing but postern itself may be loaded or frame it, nothing is
/// cached or leaked in a Referer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../../assets/style.css"),
    )
        .into_response()
}

/// Pages behind sign-in: without a live session, to the sign-in form (a POST changes
/// nothing); a session past its absolute limit or from before a password change ends here.
async fn require_sign_in(
    State(state): State<AdminState>,
    session: Session,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(auth) = signed_in(&state, &session).await else {
        return Redirect::to("/sign-in").into_response();
    };
    let path = req.uri().path();
    if auth.must_change && path != "/password" && path != "/sign-out" {
        return Redirect::to("/password").into_response();
    }
    // Reading is not activity for tower-sessions: a write keeps the idle clock honest.
    let _ = session.insert(SEEN_KEY, crate::fsutil::unix_now()).await;
    req.extensions_mut().insert(auth);
    next.run(req).await
}

async fn signed_in(state: &AdminState, session: &Session) -> Option<SignedIn> {
    let auth: SignedIn = session.get(AUTH_KEY).await.ok().flatten()?;
    let age = crate::fsutil::unix_now().saturating_sub(auth.since);
    if age >= state.pages.max_age.as_secs() || auth.generation != state.pages.generation(&auth.user)
    {
        let _ = session.flush().await;
        return None;
    }
    Some(auth)
}

/// What every page's frame (`base.html`) shows: the gateway's name, who is signed in, and
/// the session's CSRF token for the sign-out form and the page's own forms.
pub struct Chrome {
    pub hostname: String,
    pub user: Option<String>,
    pub csrf: String,
    /// Why the shared settings database cannot be reached, shown on every page.
    pub database_down: Option<String>,
    /// What this node refuses of what the shared settings database holds, shown on every page.
    pub settings_refused: Option<String>,
    /// This node's name, when it is one of several.
    pub node: Option<String>,
}

async fn chrome(state: &AdminState, session: &Session, auth: Option<&SignedIn>) -> Chrome {
    Chrome {
        hostname: state.pages.hostname.clone(),
        user: auth.map(|a| a.user.clone()),
        csrf: csrf_token(session).await,
        database_down: state.settings.shared_database_down(),
        settings_refused: state.settings.shared_settings_refused(),
        node: state.cluster.as_ref().map(|c| c.me().to_string()),
    }
}

/// The session's CSRF token, made on first use.
async fn csrf_token(session: &Session) -> String {
    if let Ok(Some(t)) = session.get::<String>(CSRF_KEY).await {
        return t;
    }
    let token = random_token();
    let _ = session.insert(CSRF_KEY, &token).await;
    token
}

/// 256 random bits, hex.
fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => super::ApiError::internal(format!("page rendering failed: {e}")).into_page(),
    }
}
