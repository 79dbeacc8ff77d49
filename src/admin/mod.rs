//! The control API: JSON over HTTPS on the admin listener, bearer token from
//! `data/api-token`. The one way to change a running postern; the CLI and (later) the admin
//! pages are built on these handlers.

pub mod admins;
pub mod audit;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod dashboard;
mod error;
mod explain;
pub mod inbound_tls;
mod listener;
pub mod logs;
pub mod m365;
pub mod pages;
pub mod policy;
pub mod queue;
pub mod reach;
pub mod received;
pub mod sections;

pub use error::ApiError;
pub(crate) use error::{blocking, replace_error};
pub use explain::ExplainQuery;
pub(crate) use explain::explain_decision;
pub use listener::run;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::settings::{Argon2Hasher, ReplaceError, SettingsDoc, SettingsHandle};

#[derive(Clone)]
pub struct AdminState {
    pub settings: SettingsHandle,
    pub spool: crate::spool::Spool,
    pub certs: Arc<crate::certs::Certs>,
    pub pages: Arc<pages::Pages>,
    /// The delivery engine, for the policy Test (its hosts, roots and delivery records).
    pub engine: Option<Arc<crate::outbound::Engine>>,
    /// The other nodes, when the settings are shared: every node's queue from this one.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    token: Arc<str>,
}

impl AdminState {
    pub fn new(
        settings: SettingsHandle,
        spool: crate::spool::Spool,
        certs: Arc<crate::certs::Certs>,
        token: String,
    ) -> AdminState {
        AdminState {
            settings,
            spool,
            certs,
            pages: Arc::new(pages::Pages::new(
                "postern",
                std::path::PathBuf::from("data"),
                Duration::from_secs(1800),
                Duration::from_secs(43_200),
            )),
            engine: None,
            cluster: None,
            token: token.into(),
        }
    }

    pub fn with_engine(mut self, engine: Arc<crate::outbound::Engine>) -> AdminState {
        self.engine = Some(engine);
        self
    }

    /// The nodes this one shares its settings with.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> AdminState {
        self.cluster = cluster;
        self
    }

    /// The admin page's settings: host name, data directory, session limits.
    pub fn with_pages(mut self, pages: pages::Pages) -> AdminState {
        self.pages = Arc::new(pages);
        self
    }
}

/// The control API under `/api/v1/` (bearer token) and the admin page beside it (sign-in).
pub fn router(state: AdminState) -> Router {
    api_router(state.clone())
        .merge(pages::router(state))
        .layer(middleware::from_fn(error::request_id))
}

fn api_router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/api/v1/settings",
            get(get_settings).put(put_settings).patch(patch_settings),
        )
        .route("/api/v1/settings/rollback", axum::routing::post(rollback))
        .route("/api/v1/settings/audit", get(audit::list))
        .route("/api/v1/settings/audit/{version}", get(audit::show))
        .route(
            "/api/v1/settings/restore/{version}",
            axum::routing::post(audit::restore),
        )
        .route("/api/v1/policy/explain", get(explain::explain))
        .route("/api/v1/policy/rows", axum::routing::post(policy::add))
        .route(
            "/api/v1/policy/rows/{pattern}",
            axum::routing::put(policy::replace).delete(policy::delete),
        )
        .route("/api/v1/policy/test", axum::routing::post(policy::test))
        .route(
            "/api/v1/tls-rpt/send",
            axum::routing::post(send_tls_reports),
        )
        .route(
            "/api/v1/admins/{name}/password",
            axum::routing::post(admins::reset_password),
        )
        .route("/api/v1/node", get(node_status))
        .route("/api/v1/node/drain", axum::routing::post(node_drain))
        .route("/api/v1/metrics", get(metrics))
        .merge(section_routes())
        .route("/api/v1/logs", get(logs::search))
        .route("/api/v1/dashboard", get(dashboard::show))
        .route("/api/v1/m365/checklist", get(m365::show))
        .route("/api/v1/logs/starttls", get(logs::starttls))
        .route("/api/v1/logs/received", get(received::list))
        .route("/api/v1/certificates", get(certs::list).post(certs::import))
        .route(
            "/api/v1/certificates/{name}",
            axum::routing::delete(certs::delete),
        )
        .merge(queue_routes())
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// This node's queue and every node's (`/api/v1/queue`, `/api/v1/cluster`).
fn queue_routes() -> Router<AdminState> {
    use axum::routing::{delete, post};
    Router::new()
        .route("/api/v1/cluster/queue", get(cluster::list))
        .route("/api/v1/cluster/queue/act", post(cluster::act))
        .route("/api/v1/cluster/queue/retry", post(cluster::retry_all))
        .route("/api/v1/cluster/queue/{id}", get(cluster::show))
        .route(
            "/api/v1/cluster/queue/{id}/{action}",
            post(cluster::act_one),
        )
        .route("/api/v1/cluster/nodes", get(cluster::nodes))
        .route("/api/v1/cluster/nodes/{name}", delete(cluster::forget))
        .route("/api/v1/queue", get(queue::list))
        .route("/api/v1/queue/retry", post(queue::retry_all))
        .route("/api/v1/queue/page", get(queue::page))
        .route("/api/v1/queue/act", post(queue::bulk))
        .route("/api/v1/queue/damaged", get(queue::damaged))
        .route("/api/v1/queue/{id}", get(queue::show).delete(queue::delete))
        .route("/api/v1/queue/{id}/{action}", post(queue::act))
}

/// One set of routes per list of the settings: add, replace, delete, and move for rules.
fn section_routes() -> Router<AdminState> {
    use axum::routing::{post, put};
    use sections::{Section, add, delete, move_item, replace};
    fn rest<T: Section>(base: &str) -> Router<AdminState> {
        Router::new()
            .route(base, post(add::<T>))
            .route(
                &format!("{base}/{{key}}"),
                put(replace::<T>).delete(delete::<T>),
            )
            .route(&format!("{base}/{{key}}/move"), post(move_item::<T>))
    }
    rest::<crate::settings::RelayDomain>("/api/v1/relay-domains")
        .merge(rest::<crate::settings::AuthUserDoc>("/api/v1/users"))
        .merge(rest::<crate::settings::RuleData>("/api/v1/rule-data"))
        .merge(rest::<crate::settings::MessageRule>("/api/v1/rules"))
        .merge(rest::<crate::settings::InboundTlsRow>(
            "/api/v1/inbound-tls",
        ))
}

async fn require_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given.map(str::trim) {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        // Another node: its own queue and status only, never passed on.
        Some(t)
            if state
                .cluster
                .as_ref()
                .is_some_and(|c| cluster::admits(c, t)) =>
        {
            if crate::cluster::admits_path(req.method(), req.uri().path()) {
                next.run(req).await
            } else {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the cluster credential opens a node's own queue and status only",
                    None,
                )
                .into_response()
            }
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token", None).into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <contents of data/api-token>)",
            None,
        )
        .into_response(),
    }
}

impl AdminState {
    /// The request carries this node's bearer token, another node's, or the cookie of a
    /// signed-in session: what the listener's reserve and pre-sign-in limits ask.
    pub(crate) fn privileged(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(t) = bearer {
            let node = self.cluster.as_ref().is_some_and(|c| cluster::admits(c, t));
            return node || constant_time_eq(t.as_bytes(), self.token.as_bytes());
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| {
                kv.trim()
                    .strip_prefix(pages::SESSION_COOKIE)?
                    .strip_prefix('=')
            })
            .any(|id| self.pages.sessions.signed_in(id))
    }
}

/// Compare without an early exit, so response time says nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get_settings(State(state): State<AdminState>) -> axum::Json<SettingsDoc> {
    axum::Json(state.settings.current().settings.to_doc())
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ChangeQuery {
    /// Validate and report what would change; store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a dry run answers: the sections the document would change.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Preview {
    pub dry_run: bool,
    pub changes: Vec<crate::settings::SectionChange>,
}

/// Validate the whole document, apply it atomically and hot, or change nothing and name the
/// bad field.
async fn put_settings(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<ChangeQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let doc = parse_doc(&body)?;
    change_settings(state, q, "api", move |_| Ok(doc)).await
}

/// Replace only the sections present in the body (a JSON object whose keys are top-level
/// sections of the document); the others stay as they are.
async fn patch_settings(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<ChangeQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON object of settings sections: {e}"),
                None,
            )
        })?;
    if let Some(k) = patch
        .keys()
        .find(|k| !crate::settings::SECTIONS.contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{k}: unknown section, expected one of {}",
                crate::settings::SECTIONS.join(", ")
            ),
            Some(k.clone()),
        ));
    }
    change_settings(state, q, "api (sections)", move |current| {
        let mut doc = match serde_json::to_value(current.to_doc()) {
            Ok(serde_json::Value::Object(doc)) => doc,
            other => {
                return Err(ApiError::internal(format!(
                    "the settings in force do not serialise: {other:?}"
                )));
            }
        };
        doc.extend(patch);
        parse_doc(&serde_json::Value::Object(doc).to_string().into_bytes())
    })
    .await
}

/// The one path of PUT and PATCH: build, validate, apply (or only report), rebind.
async fn change_settings(
    state: AdminState,
    q: ChangeQuery,
    actor: &'static str,
    build: impl FnOnce(&crate::settings::Settings) -> Result<SettingsDoc, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let apply = if q.dry_run {
        crate::settings::Apply::No
    } else {
        crate::settings::Apply::Yes
    };
    let result = apply_settings(&state, actor.to_string(), apply, build).await?;
    if q.dry_run {
        return Ok(axum::Json(Preview {
            dry_run: true,
            changes: result.changes,
        })
        .into_response());
    }
    Ok(axum::Json(result.snapshot.settings.to_doc()).into_response())
}

/// The one path of every settings change, from the API and from the pages: build under the
/// writers' lock, validate whole, store with `actor` in the audit log, serve new certificate
/// bindings from the next handshake, and log what changed.
pub(crate) async fn apply_settings(
    state: &AdminState,
    actor: String,
    apply: crate::settings::Apply,
    build: impl FnOnce(&crate::settings::Settings) -> Result<SettingsDoc, ApiError> + Send + 'static,
) -> Result<crate::settings::Changed, ApiError> {
    let (settings, certs) = (state.settings.clone(), state.certs.clone());
    let who = actor.clone();
    let result = error::blocking(move || {
        let result = settings.change(build, &who, &Argon2Hasher, apply);
        if apply == crate::settings::Apply::Yes {
            certs.rebind();
        }
        result
    })
    .await??;
    if apply == crate::settings::Apply::Yes {
        let summary: Vec<String> = result.changes.iter().map(ToString::to_string).collect();
        let summary = if summary.is_empty() {
            "no change".to_string()
        } else {
            summary.join("; ")
        };
        tracing::info!(target: "postern/admin", "settings changed by {actor} (version {}): {summary}", result.snapshot.version);
    }
    Ok(result)
}

/// Back to the settings before the last change (the previous version kept in the audit log).
async fn rollback(State(state): State<AdminState>) -> Result<axum::Json<SettingsDoc>, ApiError> {
    match put_back(&state, |settings| settings.rollback("api rollback")).await? {
        Some(snapshot) => {
            tracing::info!(target: "postern/admin", "settings rolled back to the previous version (now version {})", snapshot.version);
            Ok(axum::Json(snapshot.settings.to_doc()))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no previous version to roll back to",
            None,
        )),
    }
}

/// A stored version back in force (rollback, restore): off the async workers, then the
/// certificates it binds served from the next handshake. `None`: no such version.
pub(crate) async fn put_back(
    state: &AdminState,
    how: impl FnOnce(&SettingsHandle) -> Result<Option<Arc<crate::settings::Snapshot>>, ReplaceError>
    + Send
    + 'static,
) -> Result<Option<Arc<crate::settings::Snapshot>>, ApiError> {
    let (settings, certs) = (state.settings.clone(), state.certs.clone());
    let result = error::blocking(move || {
        let result = how(&settings);
        certs.rebind();
        result
    })
    .await?;
    result.map_err(replace_error)
}

/// Prometheus text format; the gauges are refreshed for the scrape.
async fn metrics(State(state): State<AdminState>) -> Result<Response, ApiError> {
    crate::metrics::queue_messages(state.spool.len());
    crate::metrics::admin_sessions(state.pages.sessions.len());
    if state.settings.is_shared() {
        crate::metrics::settings_database_up(state.settings.shared_database_down().is_none());
        crate::metrics::settings_refused(state.settings.shared_settings_refused().is_some());
    }
    crate::metrics::damaged_segments(
        state
            .spool
            .damaged()
            .iter()
            .map(|d| d.segment.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    );
    // With the shared database away, the certificate gauges wait for it; the rest is served.
    if let Err(e) = certs::listed(&state).await
        && state.settings.shared_database_down().is_none()
    {
        return Err(e);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct DrainRequest {
    /// The peer's SMTP address, `ip:port`.
    pub peer: String,
}

/// This node as `postern node` shows it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub draining: bool,
    /// Where queued mail is handed while draining.
    pub peer: Option<String>,
    /// Messages in this node's queue now (held ones included).
    pub queued: usize,
    pub held: usize,
}

pub(crate) async fn node_status(State(state): State<AdminState>) -> axum::Json<NodeStatus> {
    let list = state.spool.list();
    let peer = state.engine.as_ref().and_then(|e| e.handing_over());
    axum::Json(NodeStatus {
        draining: peer.is_some(),
        peer: peer.map(|p| p.to_string()),
        queued: list.len(),
        held: list.iter().filter(|e| e.held).count(),
    })
}

/// `postern node drain`: refuse new mail, hand the queue to the peer.
async fn node_drain(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<axum::Json<NodeStatus>, ApiError> {
    let req: DrainRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("peer: {e}"),
            Some("peer".into()),
        )
    })?;
    let peer: std::net::SocketAddr = req.peer.trim().parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "peer: {:?} is not ip:port (the peer node's SMTP listener)",
                req.peer
            ),
            Some("peer".into()),
        )
    })?;
    let Some(engine) = state.engine.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery engine is not running here",
            None,
        ));
    };
    engine.drain_to(peer);
    tracing::warn!(target: "postern/admin", "node drain to {peer} (control API)");
    Ok(node_status(State(state)).await)
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TlsRptRequest {
    /// `YYYY-MM-DD` (UTC); absent: yesterday, the day the daily round sends.
    pub day: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TlsRptSent {
    pub day: String,
    pub reports: Vec<serde_json::Value>,
}

/// Send a day's TLS-RPT reports now, to every address not reached yet (the daily round
/// does the same for yesterday).
async fn send_tls_reports(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<axum::Json<TlsRptSent>, ApiError> {
    let req: TlsRptRequest = if body.is_empty() {
        TlsRptRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("day: {e}"),
                Some("day".into()),
            )
        })?
    };
    let now = crate::fsutil::unix_now();
    let day = match req.day.as_deref() {
        Some(d) => crate::outbound::tls_report::day_start(d)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e, Some("day".into())))?,
        None => now - now % 86_400 - 86_400,
    };
    let Some(engine) = state.engine.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery engine is not running here",
            None,
        ));
    };
    let reports = engine
        .send_tls_reports(day)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e, None))?;
    Ok(axum::Json(TlsRptSent {
        day: crate::outbound::tls_report::day_name(day),
        reports: reports
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect(),
    }))
}

fn parse_doc(body: &[u8]) -> Result<SettingsDoc, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        // The field names the place; serde_json's "at line 1 column 89" in a one-line body
        // says nothing more.
        let inner = e.inner().to_string();
        let inner = match inner.rfind(" at line ") {
            Some(at) if e.inner().line() > 0 => inner[..at].to_string(),
            _ => inner,
        };
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner,
        };
        ApiError::new(StatusCode::BAD_REQUEST, message, field)
    })
}

/// The token in `data/api-token`, generated (0600) at first start.
pub fn ensure_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("api-token");
    if !path.exists() {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        crate::fsutil::write_secret(&path, format!("{token}\n").as_bytes())?;
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_names_the_field() {
        let err = parse_doc(br#"{"inbound": {"tls_mode": "sometimes"}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("inbound.tls_mode"));
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let err = parse_doc(br#"{"relay_domains": [{"domain": "a.example", "nexthop": "x"}]}"#)
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("relay_domains[0].nexthop"));
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
