//! The admin side's one error type and its request ids. An error carries public words (JSON
//! for the API, HTML for the pages); an internal one carries a reason too, which only the log
//! gets: the client sees "internal error (request <id>)", the log line the same id, the
//! request's method and path, and the reason (maddy's error funnel). Every admin response
//! carries its id in `x-request-id`.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::settings::ReplaceError;

/// The response header that names the request (the id the log line of its failure has).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the log line of an internal error says about the request it failed.
#[derive(Clone)]
struct RequestFacts {
    id: String,
    method: Method,
    path: String,
}

tokio::task_local! {
    /// The request the handler on this task answers; the error funnel reads it.
    static REQUEST: RequestFacts;
}

/// Middleware around the whole admin router: an id for each request, in scope while its
/// handler runs and in the response's `x-request-id`.
pub async fn request_id(req: Request, next: Next) -> Response {
    let facts = RequestFacts {
        id: new_id(),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
    };
    let id = HeaderValue::from_str(&facts.id);
    let mut response = REQUEST.scope(facts, next.run(req)).await;
    // Hex digits only: always a valid header value.
    if let Ok(id) = id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// `spawn_blocking` for the admin side: the closure runs in the request's scope, so an
/// internal error built on the blocking thread (a settings change converts the store's error
/// there) names the request too; the task failing is itself an internal error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let facts = REQUEST.try_with(RequestFacts::clone).ok();
    tokio::task::spawn_blocking(move || match facts {
        Some(facts) => REQUEST.sync_scope(facts, f),
        None => f(),
    })
    .await
    .map_err(ApiError::internal)
}

/// 48 random bits, hex: short enough to read out, enough to tell a day's requests apart.
fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An API error body: `{"error": "...", "field": "..."}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub(crate) status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The field in the admin's words, when the settings it names were at hand.
    #[serde(skip)]
    pub(crate) label: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, field: Option<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field,
            label: None,
        }
    }

    /// A fault of postern, not of the request: the reason goes to the log (error level, with
    /// the request's id, method and path), the client gets the id alone.
    pub fn internal(reason: impl std::fmt::Display) -> ApiError {
        let facts = REQUEST
            .try_with(RequestFacts::clone)
            .unwrap_or_else(|_| RequestFacts {
                // Outside a request (a test, a task of its own): still an id to match.
                id: new_id(),
                method: Method::default(),
                path: "-".into(),
            });
        let RequestFacts { id, method, path } = facts;
        tracing::error!(target: "postern/admin", "error: request {id}: {method} {path}: {reason}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error (request {id})"),
            None,
        )
    }

    /// The words without the field they name, for a page that shows them under it.
    pub fn message(&self) -> &str {
        match &self.field {
            Some(f) => self
                .error
                .strip_prefix(f.as_str())
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(&self.error),
            None => &self.error,
        }
    }

    /// The error as a page answers it: its status and words in a minimal HTML page.
    pub fn into_page(self) -> Response {
        let words = escape(&self.error);
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body><p>{words}</p></body></html>\n",
            self.status
        );
        (self.status, Html(html)).into_response()
    }
}

/// HTML text escaping of the five characters that can end text or an attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(&self)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"postern\""),
            );
        }
        resp
    }
}

impl From<ReplaceError> for ApiError {
    fn from(e: ReplaceError) -> ApiError {
        replace_error(e)
    }
}

/// A settings change refused: the admin's field, the shared store's state, a conflict, or
/// (the store failing) an internal error.
pub(crate) fn replace_error(e: ReplaceError) -> ApiError {
    match e {
        ReplaceError::Invalid(e) => ApiError {
            label: e.label.clone(),
            ..ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), Some(e.field))
        },
        ReplaceError::Store(
            e @ (crate::settings::StoreError::Unreachable(_)
            | crate::settings::StoreError::Refused(_)),
        ) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
        ReplaceError::Store(e @ crate::settings::StoreError::Conflict(_)) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string(), None)
        }
        e @ ReplaceError::Changed { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string(), None)
        }
        ReplaceError::Store(e) => ApiError::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_internal_error_names_its_request_and_keeps_the_reason_to_the_log() {
        let facts = RequestFacts {
            id: "0123456789ab".into(),
            method: Method::POST,
            path: "/tls".into(),
        };
        let e = REQUEST
            .scope(facts, async { ApiError::internal("disk on fire") })
            .await;
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.error, "internal error (request 0123456789ab)");
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("fire"), "{json}");
        // Outside a request: an id of its own, still hex.
        let e = ApiError::internal("x");
        let id = e.error.trim_start_matches("internal error (request ");
        assert!(
            id.trim_end_matches(')')
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
    }

    #[test]
    fn a_page_error_is_escaped_html() {
        let e = ApiError::new(StatusCode::CONFLICT, "<b>&\"'", None);
        assert_eq!(escape(&e.error), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
