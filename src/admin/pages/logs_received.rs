//! Logs, Received view: every message accepted, with the client, how it was trusted, its TLS
//! and client certificate, searched by sender (an address, a domain or a `.domain`), client
//! address or network, queue ID, time range, plaintext only; nothing given, the newest. A
//! queue ID links to its deliveries (the Deliveries view links back). The same
//! `admin::received` functions as `/api/v1/logs/received`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::logs::unix_of;
use super::words::breakable;
use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::admin::received::{ReceivedQuery, search_received};
use crate::events::received::Received;

#[derive(Debug, Default, Deserialize)]
pub struct ReceivedForm {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    queue_id: String,
    /// `YYYY-MM-DDTHH:MM`, UTC (a datetime-local field).
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// The checkbox: present when ticked.
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    before: Option<u64>,
}

struct Row {
    time: String,
    node: String,
    queue_id: String,
    /// The Deliveries view of its queue ID.
    deliveries: String,
    client: String,
    helo: Vec<String>,
    sender: Vec<String>,
    trust: String,
    protocol: String,
    bits: String,
    key_exchange: String,
    certificate: Vec<String>,
    /// The lines Postfix would log for it (`Received::lines`).
    lines: String,
}

#[derive(Template)]
#[template(path = "logs_received.html")]
struct ReceivedPage {
    chrome: Chrome,
    form: ReceivedForm,
    plaintext: bool,
    newest: bool,
    refused: bool,
    error: Option<String>,
    sender_error: Option<String>,
    client_error: Option<String>,
    from_error: Option<String>,
    to_error: Option<String>,
    rows: Vec<Row>,
    several: bool,
    note: Option<String>,
    older: Option<String>,
}

fn row(r: &Received) -> Row {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("queue_id", &r.queue_id)
        .finish();
    let certificate = match &r.client_cert {
        None => "none".to_string(),
        Some(c) => format!(
            "{} ({}), issuer {}",
            c.subject,
            if c.verified {
                "verified"
            } else {
                "not verified"
            },
            c.issuer
        ),
    };
    Row {
        time: crate::proto::utc_at(r.unix_time),
        node: r.node.clone().unwrap_or_default(),
        queue_id: r.queue_id.clone(),
        deliveries: format!("/logs?{query}#results"),
        client: r.client(),
        helo: breakable(&r.helo),
        sender: breakable(if r.sender.is_empty() { "<>" } else { &r.sender }),
        trust: r.trust.describe(),
        protocol: r.tls.as_ref().map_or("none".into(), |t| t.protocol.clone()),
        bits: r.tls.as_ref().map_or("0".into(), |t| t.bits.to_string()),
        key_exchange: r
            .tls
            .as_ref()
            .and_then(|t| t.key_exchange.clone())
            .unwrap_or_else(|| "-".into()),
        certificate: breakable(&certificate),
        lines: r.lines().join("\n"),
    }
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(form): Query<ReceivedForm>,
) -> Response {
    let mut page = ReceivedPage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        plaintext: form.plaintext.is_some(),
        newest: false,
        refused: false,
        error: None,
        sender_error: None,
        client_error: None,
        from_error: None,
        to_error: None,
        rows: Vec::new(),
        several: state.cluster.is_some(),
        note: None,
        older: None,
        form,
    };
    let status = match search(&state, &mut page).await {
        Ok(()) => StatusCode::OK,
        Err(s) => s,
    };
    (status, render(page)).into_response()
}

/// The search the form asks for (nothing given: the newest records); the status to answer
/// with if it failed.
async fn search(state: &AdminState, page: &mut ReceivedPage) -> Result<(), StatusCode> {
    let f = &page.form;
    page.newest = [&f.sender, &f.client, &f.queue_id, &f.from, &f.to]
        .iter()
        .all(|v| v.trim().is_empty())
        && !page.plaintext;
    let since = unix_of("from", &f.from).map_err(|e| page.from_error = Some(e));
    let until = unix_of("to", &f.to)
        .map(|t| t.map(|t| t + 59))
        .map_err(|e| page.to_error = Some(e));
    let q = ReceivedQuery {
        sender: Some(f.sender.clone()),
        client: Some(f.client.clone()),
        queue_id: Some(f.queue_id.clone()),
        since: since.ok().flatten(),
        until: until.ok().flatten(),
        before: f.before,
        limit: None,
        plaintext: page.plaintext,
    };
    let search = q.search().map_err(|e| match e.field.as_deref() {
        Some("sender") => page.sender_error = Some(e.message().to_string()),
        Some("client") => page.client_error = Some(e.message().to_string()),
        _ => page.error = Some(e.error),
    });
    let (Ok(_), Ok(_), Ok(search)) = (since, until, search) else {
        page.refused = true;
        return Err(StatusCode::BAD_REQUEST);
    };
    let found = match search_received(state, search).await {
        Ok(found) => found,
        Err(e) => {
            page.error = Some(e.error);
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    page.rows = found.records.iter().map(|s| row(&s.record)).collect();
    if found.stopped_early {
        page.note = Some(format!(
            "Looked at the newest {} records without filling a page: narrow the time range or give a sender, client or queue ID.",
            found.scanned
        ));
    }
    page.older = found.next.map(|before| older_link(page, before));
    Ok(())
}

/// The same search, one page older.
fn older_link(page: &ReceivedPage, before: u64) -> String {
    let f = &page.form;
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("sender", &f.sender),
        ("client", &f.client),
        ("queue_id", &f.queue_id),
        ("from", &f.from),
        ("to", &f.to),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    if page.plaintext {
        s.append_pair("plaintext", "on");
    }
    format!(
        "/logs/received?{}",
        s.append_pair("before", &before.to_string()).finish()
    )
}
