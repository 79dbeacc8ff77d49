//! The step before an inbound TLS row is added or changed: the row as it would be stored,
//! and its impact over the received records of the last 30 days (how much mail from that
//! sender or client arrived, how much of it the row would now refuse and why, the latest of
//! those messages), with the button that saves it. Nothing is saved before that button.

use askama::Template;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::super::words::{breakable, count};
use super::super::{Chrome, SignedIn, chrome, render};
use super::{RowForm, RowView, change_link, view};
use crate::admin::AdminState;
use crate::admin::inbound_impact::{Impact, WouldRefuse};
use crate::levels::InboundLevel;

/// A message the row would refuse, as the table shows it.
struct Latest {
    time: String,
    queue_id: String,
    /// The Logs page's Received view of that queue ID.
    link: String,
    /// The client and sender in pieces a line may break after (`words::breakable`).
    client: Vec<String>,
    sender: Vec<String>,
    tls: String,
    certificate: String,
    reply: String,
}

#[derive(Template)]
#[template(path = "inbound_tls_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    row: RowView,
    /// The form as typed, sent again with the confirmation.
    form: RowForm,
    /// Back to the form as typed.
    change: String,
    editing: bool,
    /// The stored row this one replaces, when its pattern changes.
    renamed_from: Option<String>,
    verify: bool,
    reject_code: u16,
    /// What a plaintext session from it would hear.
    plaintext_reply: String,
    days: u64,
    /// Why there are no figures (this node keeps no records).
    unavailable: Option<String>,
    arrived: String,
    arrived_n: u64,
    refused_n: u64,
    refused: String,
    reasons: Vec<String>,
    others: Option<String>,
    partial: bool,
    latest: Vec<Latest>,
}

fn latest(w: WouldRefuse) -> Latest {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("queue_id", &w.queue_id)
        .finish();
    Latest {
        time: w.time,
        link: format!("/logs/received?{query}#results"),
        queue_id: w.queue_id,
        client: breakable(&w.client),
        sender: breakable(if w.sender.is_empty() { "<>" } else { &w.sender }),
        tls: w.tls.unwrap_or_else(|| "none: plaintext".into()),
        certificate: w.certificate.unwrap_or_else(|| "none".into()),
        reply: w.reply,
    }
}

/// The refusals by why, in words, the largest first.
fn reasons(impact: &Impact) -> Vec<String> {
    let r = &impact.reasons;
    let mut out = vec![
        (r.plaintext, "without TLS (plaintext)"),
        (r.too_weak, "over TLS weaker than the minimum bits"),
        (r.no_certificate, "over TLS without a client certificate"),
        (
            r.certificate,
            "with a client certificate that is not verified or not for the names",
        ),
    ];
    out.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    out.into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{} {why}", count(n as usize, "message", "messages")))
        .collect()
}

/// Ask: the page with the impact and the form to confirm.
pub(super) async fn ask(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    form: RowForm,
    impact: Impact,
) -> Response {
    let row = view(&impact.row);
    let others = (impact.decided_by_other_rows > 0).then(|| {
        format!(
            "{} of them {} decided by a more specific row, which stays in force.",
            impact.decided_by_other_rows,
            if impact.decided_by_other_rows == 1 {
                "is"
            } else {
                "are"
            }
        )
    });
    let page = ConfirmPage {
        chrome: chrome(state, session, Some(auth)).await,
        editing: !form.original.is_empty(),
        renamed_from: impact.replaces.clone().filter(|o| *o != impact.row.pattern),
        verify: impact.row.level == InboundLevel::Verify,
        reject_code: impact.reject_code,
        plaintext_reply: impact.plaintext_reply.clone(),
        days: impact.days,
        unavailable: impact.unavailable.clone(),
        arrived: count(impact.arrived as usize, "message", "messages"),
        arrived_n: impact.arrived,
        refused_n: impact.refused,
        refused: count(impact.refused as usize, "message", "messages"),
        reasons: reasons(&impact),
        others,
        partial: impact.partial,
        latest: impact.latest.into_iter().map(latest).collect(),
        row,
        change: change_link(&form),
        form,
    };
    render(page).into_response()
}
