//! Explain: recipient, optional `x-TLSLevel` and sender in; the effective level, minimum
//! bits, failure action and every source out. The same `decide()` as delivery, the API's
//! `/api/v1/policy/explain` and `postern policy explain`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;

struct Line {
    text: String,
    decides: bool,
    counts: bool,
}

struct Shown {
    level: String,
    source: String,
    min_bits: u16,
    on_failure: String,
    lines: Vec<Line>,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    chrome: Chrome,
    error: Option<String>,
    recipient: String,
    header: String,
    sender: String,
    decision: Option<Shown>,
}

#[derive(Deserialize, Default)]
pub struct ExplainForm {
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    header: String,
    #[serde(default)]
    sender: String,
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(form): Query<ExplainForm>,
) -> Response {
    let recipient = form.recipient.trim();
    let (decision, error) = if recipient.is_empty() {
        (None, None)
    } else {
        match crate::admin::explain_decision(&state, recipient, &form.header, &form.sender).await {
            Ok(d) => (Some(shown(d)), None),
            Err(e) => (None, Some(e.error)),
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = ExplainPage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        error,
        recipient: form.recipient.clone(),
        header: form.header.clone(),
        sender: form.sender.clone(),
        decision,
    };
    (status, render(page)).into_response()
}

fn shown(d: crate::policy::Decision) -> Shown {
    let lines = d
        .explanation
        .iter()
        .zip(d.considered.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(text, c)| Line {
            text: text.clone(),
            decides: c.is_some_and(|c| c.decides),
            counts: c.is_none_or(|c| c.counts),
        })
        .collect();
    Shown {
        level: d.level.to_string(),
        source: d.source.to_string(),
        min_bits: d.min_bits,
        on_failure: d.on_failure.to_string(),
        lines,
    }
}
