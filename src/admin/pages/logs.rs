//! Logs (Hermes' Simple Search): recipient or sender (an address, a domain or a
//! `.domain`), queue ID, host, and text in the log lines (`Host offered STARTTLS: [host]`),
//! in a time range, over the delivery records; nothing given, the newest records. Each
//! result is its Postfix lines, with its TLS and policy facts in columns; a search by
//! recipient domain links to adding a TLS policy row for it. And "did host H offer STARTTLS
//! in the last N days?" answered directly. The same `admin::logs` functions as
//! `/api/v1/logs`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::words::breakable;
use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::admin::logs::{LogQuery, search_records, starttls_seen};
use crate::events::Delivery;
use crate::events::search::Party;

#[derive(Debug, Default, Deserialize)]
pub struct LogForm {
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    sender: String,
    #[serde(default)]
    queue_id: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    text: String,
    /// `YYYY-MM-DDTHH:MM`, UTC (a datetime-local field).
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    before: Option<u64>,
    /// The STARTTLS question.
    #[serde(default)]
    starttls_host: String,
    #[serde(default)]
    days: Option<u64>,
}

struct Row {
    time: String,
    /// The node that made the attempt (records shared by several nodes).
    node: String,
    queue_id: String,
    /// The Received view of its queue ID.
    receipt: String,
    /// Addresses and host names in pieces a line may break after (`words::breakable`).
    recipient: Vec<String>,
    status: String,
    relay: Vec<String>,
    protocol: String,
    bits: String,
    verified: Vec<String>,
    policy: String,
    /// The Postfix lines the record stands for (`Delivery::lines`).
    lines: String,
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    chrome: Chrome,
    form: LogForm,
    /// No field given: the newest records.
    newest: bool,
    /// A field could not be read: nothing was searched.
    refused: bool,
    error: Option<String>,
    recipient_error: Option<String>,
    sender_error: Option<String>,
    from_error: Option<String>,
    to_error: Option<String>,
    /// A search by recipient (address or domain): the row to add on TLS Policy Domains, and
    /// its link.
    policy_row: Option<(String, String)>,
    rows: Vec<Row>,
    /// Records of several nodes: the Node column is shown.
    several: bool,
    note: Option<String>,
    older: Option<String>,
    days: u64,
    starttls: Option<String>,
    /// The text search for the host's `Host offered STARTTLS` lines.
    starttls_lines: Option<String>,
    starttls_error: Option<String>,
}

/// A `datetime-local` value read as UTC.
pub(super) fn unix_of(field: &str, value: &str) -> Result<Option<u64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let t = time::PrimitiveDateTime::parse(value, format).map_err(|_| {
        format!("{field}: {value:?} is not a date and time (YYYY-MM-DD HH:MM, UTC)")
    })?;
    Ok(Some(t.assume_utc().unix_timestamp().max(0) as u64))
}

fn row(d: &Delivery) -> Row {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("queue_id", &d.queue_id)
        .finish();
    Row {
        receipt: format!("/logs/received?{query}#results"),
        time: crate::proto::utc_at(d.unix_time),
        node: d.node.clone().unwrap_or_default(),
        queue_id: d.queue_id.clone(),
        recipient: breakable(&d.recipient),
        status: format!("{} ({})", d.status, d.dsn),
        relay: breakable(&d.relay),
        protocol: d.tls.as_ref().map_or("none".into(), |t| t.protocol.clone()),
        bits: d.tls.as_ref().map_or("0".into(), |t| t.bits.to_string()),
        verified: breakable(d.verified_name.as_deref().unwrap_or("not verified")),
        policy: format!("{} ({})", d.policy_level, d.policy_source),
        lines: d.lines().join("\n"),
    }
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(form): Query<LogForm>,
) -> Response {
    let days = form.days.unwrap_or(30);
    let mut page = LogsPage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        newest: false,
        refused: false,
        error: None,
        recipient_error: None,
        sender_error: None,
        from_error: None,
        to_error: None,
        policy_row: None,
        rows: Vec::new(),
        several: state.cluster.is_some(),
        note: None,
        older: None,
        days,
        starttls: None,
        starttls_lines: None,
        starttls_error: None,
        form,
    };
    let mut status = StatusCode::OK;
    if !page.form.starttls_host.trim().is_empty() {
        match starttls_seen(&state, &page.form.starttls_host, days).await {
            Ok(seen) => {
                let text = format!("Host offered STARTTLS: [{}]", seen.host.trim());
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("text", &text)
                    .finish();
                page.starttls_lines = Some(format!("/logs?{query}#results"));
                page.starttls = Some(format!("{}: {}", seen.host, seen.describe(days)));
            }
            Err(e) => {
                page.starttls_error = Some(e.error);
                status = StatusCode::BAD_REQUEST;
            }
        }
    }
    if let Err(s) = search(&state, &mut page).await {
        status = s;
    }
    (status, render(page)).into_response()
}

/// The search the form asks for (nothing given: the newest records); the status to answer
/// with if it failed.
async fn search(state: &AdminState, page: &mut LogsPage) -> Result<(), StatusCode> {
    let f = &page.form;
    page.newest = [
        &f.recipient,
        &f.sender,
        &f.queue_id,
        &f.host,
        &f.text,
        &f.from,
        &f.to,
    ]
    .iter()
    .all(|v| v.trim().is_empty());
    let since = unix_of("from", &f.from).map_err(|e| page.from_error = Some(e));
    let until = unix_of("to", &f.to)
        .map(|t| t.map(|t| t + 59))
        .map_err(|e| page.to_error = Some(e));
    let q = LogQuery {
        recipient: Some(f.recipient.clone()),
        sender: Some(f.sender.clone()),
        queue_id: Some(f.queue_id.clone()),
        host: Some(f.host.clone()),
        text: Some(f.text.clone()),
        since: since.ok().flatten(),
        until: until.ok().flatten(),
        before: f.before,
        limit: None,
    };
    let search = q.search().map_err(|e| match e.field.as_deref() {
        Some("recipient") => page.recipient_error = Some(e.message().to_string()),
        Some("sender") => page.sender_error = Some(e.message().to_string()),
        _ => page.error = Some(e.error),
    });
    let (Ok(_), Ok(_), Ok(search)) = (since, until, search) else {
        page.refused = true;
        return Err(StatusCode::BAD_REQUEST);
    };
    page.policy_row = policy_row(&page.form.recipient);
    let found = match search_records(state, search).await {
        Ok(found) => found,
        Err(e) => {
            page.error = Some(e.error);
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    page.rows = found.records.iter().map(|s| row(&s.record)).collect();
    if found.stopped_early {
        page.note = Some(format!(
            "Looked at the newest {} records without filling a page: narrow the time range or give a recipient, sender, queue ID or host.",
            found.scanned
        ));
    }
    page.older = found.next.map(|before| older_link(&page.form, before));
    Ok(())
}

/// A recipient domain (or `.domain`) searched: the policy row to add for it, and the link
/// that opens TLS Policy Domains' add form with it.
fn policy_row(recipient: &str) -> Option<(String, String)> {
    let pattern = match Party::parse(recipient)? {
        Party::Domain(d) => d,
        Party::Subdomains(d) => format!(".{d}"),
        // Hermes' workflow searches the recipient's address first: its domain is the row.
        Party::Address(a) => a.rsplit_once('@')?.1.to_ascii_lowercase(),
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("add", &pattern)
        .finish();
    Some((pattern, format!("/policy?{query}#row-form")))
}

/// The same search, one page older.
fn older_link(f: &LogForm, before: u64) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("recipient", &f.recipient),
        ("sender", &f.sender),
        ("queue_id", &f.queue_id),
        ("host", &f.host),
        ("text", &f.text),
        ("from", &f.from),
        ("to", &f.to),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    format!(
        "/logs?{}",
        s.append_pair("before", &before.to_string()).finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_fields_are_utc_and_a_bad_one_is_named() {
        assert_eq!(unix_of("from", "").unwrap(), None);
        assert_eq!(
            unix_of("from", "2026-12-01T14:30").unwrap(),
            Some(1_796_135_400)
        );
        assert_eq!(
            unix_of("to", "yesterday").unwrap_err(),
            "to: \"yesterday\" is not a date and time (YYYY-MM-DD HH:MM, UTC)"
        );
    }
}
