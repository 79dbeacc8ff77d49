//! Queue: counts by state, filters (sender, recipient, domain, state, age), paging, one
//! message's envelope, headers (the body only when asked), per-recipient state, attempts
//! and last error; retry / hold / release / delete for one message or every one ticked,
//! delete after a confirmation. The same `admin::queue` functions as `/api/v1/queue`.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::words::{breakable, count};
use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::admin::cluster::{NodeAnswer, act_on_all, listing, message};
use crate::admin::queue::{Counts, Filter, QueueItem};

const PAGE_SIZE: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    state: String,
    /// Only messages at least this many hours old.
    #[serde(default)]
    age_hours: String,
    #[serde(default)]
    page: Option<usize>,
}

struct Row {
    id: String,
    /// The ID the forms and links use: `ID@node` when several nodes are listed.
    key: String,
    /// The node that holds it; empty on a node on its own.
    node: String,
    arrival: String,
    age: String,
    size: usize,
    /// In pieces a line may break after (`words::breakable`).
    sender: Vec<String>,
    recipients: Vec<String>,
    state: &'static str,
    attempts: u32,
    last_error: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    query: QueueQuery,
    age_error: Option<String>,
    counts: Counts,
    matching: usize,
    first: usize,
    last: usize,
    rows: Vec<Row>,
    /// Several nodes listed: the Node column is shown.
    several: bool,
    /// Nodes that did not answer, each with why: their messages are not in the list.
    silent: Vec<String>,
    /// Why the node list is the one read last.
    registry_error: Option<String>,
    prev: Option<String>,
    next: Option<String>,
    /// The back link after an action: this very listing.
    here: String,
}

/// UNIX seconds as `2026-12-01 14:02:03` (UTC), as every page shows a time.
pub fn when(unix: u64) -> String {
    crate::proto::utc_at(unix)
}

/// "3 h 12 min", "2 d 4 h": how long a message has waited.
fn age(secs: u64) -> String {
    match secs {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What the page says of a node that did not answer.
fn silence(n: &NodeAnswer) -> Option<String> {
    let why = n.error.as_deref()?;
    let at = n
        .api
        .as_deref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    // A node that said it stopped has said when; another, when it was last heard of.
    let beat = n
        .heartbeat_age_secs
        .filter(|_| !why.starts_with("stopped"))
        .map(|s| format!("; last heartbeat {} ago", crate::admin::cluster::age(s)))
        .unwrap_or_default();
    Some(format!(
        "Node {}{at} did not answer: {why}{beat}. Its messages are not in this list.",
        n.name
    ))
}

/// The ID as the forms and links use it: with its node when several nodes are listed.
fn key(item: &QueueItem, several: bool) -> String {
    match (&item.node, several) {
        (Some(n), true) => format!("{}@{n}", item.id),
        _ => item.id.clone(),
    }
}

fn row(item: &QueueItem, now: u64, several: bool) -> Row {
    let pending: Vec<&str> = item
        .recipients
        .iter()
        .filter(|r| r.state == "pending")
        .map(|r| r.address.as_str())
        .collect();
    let recipients = match pending.len() {
        0..=2 => pending.join(", "),
        n => format!("{}, {} and {} more", pending[0], pending[1], n - 2),
    };
    Row {
        id: item.id.clone(),
        key: key(item, several),
        node: item.node.clone().unwrap_or_default(),
        arrival: when(item.arrival_unix),
        age: age(now.saturating_sub(item.arrival_unix)),
        size: item.size,
        sender: breakable(if item.sender.is_empty() {
            "<>"
        } else {
            &item.sender
        }),
        recipients: breakable(&recipients),
        state: item.state(),
        attempts: item.attempts,
        last_error: item.last_error.clone().unwrap_or_default(),
    }
}

fn link(q: &QueueQuery, page: usize) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("sender", &q.sender),
        ("recipient", &q.recipient),
        ("domain", &q.domain),
        ("state", &q.state),
        ("age_hours", &q.age_hours),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    format!(
        "/queue?{}",
        s.append_pair("page", &page.to_string()).finish()
    )
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(query): Query<QueueQuery>,
) -> Response {
    let notice = session.remove::<String>("notice").await.ok().flatten();
    let error = session.remove::<String>("queue_error").await.ok().flatten();
    let age = query.age_hours.trim();
    let (min_age_secs, age_error) = match age.parse::<u64>() {
        _ if age.is_empty() => (None, None),
        Ok(h) => (Some(h.saturating_mul(3600)), None),
        Err(_) => (
            None,
            Some(format!("{age:?} is not a whole number of hours")),
        ),
    };
    let page = query.page.unwrap_or(1).max(1);
    let filter = Filter {
        sender: Some(query.sender.clone()),
        recipient: Some(query.recipient.clone()),
        domain: Some(query.domain.clone()),
        held: None,
        state: Some(query.state.clone()),
        min_age_secs,
        offset: Some((page - 1) * PAGE_SIZE),
        limit: Some(PAGE_SIZE),
    };
    let found = listing(&state, &filter).await;
    let several = found.several();
    let now = crate::fsutil::unix_now();
    let first = (page - 1) * PAGE_SIZE;
    let status = if age_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let view = QueuePage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        notice,
        error,
        age_error,
        counts: found.counts,
        matching: found.matching,
        first: if found.items.is_empty() { 0 } else { first + 1 },
        last: first + found.items.len(),
        rows: found.items.iter().map(|i| row(i, now, several)).collect(),
        several,
        silent: found.nodes.iter().filter_map(silence).collect(),
        registry_error: found.registry_error.clone(),
        prev: (page > 1).then(|| link(&query, page - 1)),
        next: (first + found.items.len() < found.matching).then(|| link(&query, page + 1)),
        here: link(&query, page),
        query,
    };
    (status, render(view)).into_response()
}

#[derive(Template)]
#[template(path = "queue_message.html")]
struct MessagePage {
    chrome: Chrome,
    notice: Option<String>,
    item: QueueItem,
    /// The ID the forms and links use (`ID@node` in a cluster).
    key: String,
    arrival: String,
    /// `deferred (waiting for a retry)`: the listing's word, and what it means.
    state: String,
    attempts: String,
    last_attempt: String,
    next_retry: String,
    /// The sender and each recipient in pieces a line may break after (`breakable`), each
    /// recipient with its state: the message's (active, deferred, held) while it is still
    /// to go, else delivered, bounced or deleted.
    sender: Vec<String>,
    recipients: Vec<(Vec<String>, String)>,
    show_body: bool,
}

/// The listing's word for a state, and what it means (the words of its State filter).
fn state_words(state: &str) -> String {
    let means = match state {
        "active" => "not tried yet",
        "deferred" => "waiting for a retry",
        _ => "on hold: not delivered until released",
    };
    format!("{state} ({means})")
}

/// (last attempt, next retry) as the message page says them, at `now`.
fn timing(item: &QueueItem, now: u64) -> (String, String) {
    let last = match item.last_attempt_unix {
        Some(t) => format!("{} ({} ago)", when(t), age(now.saturating_sub(t))),
        None => "none since start-up".into(),
    };
    let next = match (item.state(), item.next_attempt_unix) {
        ("held", _) => "none while it is held: Release sends it".into(),
        ("active", _) => "now: it has not been tried yet".into(),
        (_, Some(t)) if t > now => format!("{} (in {})", when(t), age(t - now)),
        (_, Some(_)) => "now: the retry is due".into(),
        (_, None) => "not known yet".into(),
    };
    (last, next)
}

fn message_view(
    chrome: Chrome,
    notice: Option<String>,
    key: String,
    item: QueueItem,
) -> MessagePage {
    let (last_attempt, next_retry) = timing(&item, crate::fsutil::unix_now());
    let recipients = item
        .recipients
        .iter()
        .map(|r| {
            let state = if r.state == "pending" {
                item.state()
            } else {
                r.state.as_str()
            };
            (breakable(&r.address), state.to_string())
        })
        .collect();
    MessagePage {
        chrome,
        notice,
        arrival: when(item.arrival_unix),
        key,
        state: state_words(item.state()),
        attempts: format!(
            "{} since start-up",
            count(item.attempts as usize, "attempt", "attempts")
        ),
        last_attempt,
        next_retry,
        sender: breakable(&item.sender),
        recipients,
        show_body: false,
        item,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageQuery {
    #[serde(default)]
    body: Option<String>,
}

pub async fn message_page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Path(id): Path<String>,
    Query(q): Query<MessageQuery>,
) -> Response {
    let show_body = q.body.is_some();
    match message(&state, &id, show_body).await {
        Ok(item) => {
            let chrome = chrome(&state, &session, Some(&auth)).await;
            let notice = session.remove::<String>("notice").await.ok().flatten();
            let key = key(&item, state.cluster.is_some());
            render(MessagePage {
                show_body,
                ..message_view(chrome, notice, key, item)
            })
        }
        Err(e) => {
            let _ = session.insert("queue_error", e.error.clone()).await;
            Redirect::to("/queue").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "queue_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    /// "1 message", "3 messages".
    what: String,
    ids: Vec<String>,
    back: String,
}

/// The action form: `id` repeated (the ticked messages), `action`, `back`, and for delete
/// `confirm=yes` from the confirmation page.
struct ActForm {
    ids: Vec<String>,
    action: String,
    back: String,
    confirmed: bool,
}

fn act_form(body: &[u8]) -> ActForm {
    let mut f = ActForm {
        ids: Vec::new(),
        action: String::new(),
        back: "/queue".into(),
        confirmed: false,
    };
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "id" => f.ids.push(v.into_owned()),
            "action" => f.action = v.into_owned(),
            // Only back to a queue page of postern's own: never an open redirect.
            "back" if v.starts_with("/queue") => f.back = v.into_owned(),
            "confirm" => f.confirmed = v == "yes",
            _ => {}
        }
    }
    f
}

pub async fn act(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    body: Bytes,
) -> Response {
    let form = act_form(&body);
    if form.ids.is_empty() {
        let _ = session
            .insert("queue_error", "Nothing done: tick at least one message.")
            .await;
        return Redirect::to(&form.back).into_response();
    }
    if form.action == "delete" && !form.confirmed {
        return render(ConfirmPage {
            chrome: chrome(&state, &session, Some(&auth)).await,
            what: count(form.ids.len(), "message", "messages"),
            ids: form.ids,
            back: form.back,
        });
    }
    let by = format!("admin page by {}", auth.user);
    let result = act_on_all(&state, &form.ids, &form.action, &by).await;
    let _ = session
        .insert("notice", done_notice(&form.action, &result))
        .await;
    // A deleted message has no page left to go back to.
    let back = if form.action == "delete" && form.back.starts_with("/queue/") {
        "/queue".to_string()
    } else {
        form.back
    };
    Redirect::to(&back).into_response()
}

/// "Released 1 message. 1 was not on hold.": the messages the action changed, those it
/// found already so, and why each of the others failed.
fn done_notice(action: &str, result: &crate::admin::queue::BulkResult) -> String {
    let (verb, unchanged) = match action {
        "retry" => ("Retrying", "on hold: release it to send it"),
        "hold" => ("Held", "already on hold"),
        "release" => ("Released", "not on hold"),
        "delete" => ("Deleted", ""),
        _ => ("Done:", ""),
    };
    let changed = result.done.iter().filter(|d| d.changed).count();
    let mut notice = format!("{verb} {}.", count(changed, "message", "messages"));
    let left = result.done.len() - changed;
    if left > 0 {
        let was = if left == 1 { "was" } else { "were" };
        notice.push_str(&format!(" {left} {was} {unchanged}."));
    }
    for e in &result.failed {
        notice.push_str(&format!(" {}", e.error));
    }
    notice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_an_admin_says_them() {
        assert_eq!(age(125), "2 min");
        assert_eq!(age(3 * 3600 + 720), "3 h 12 min");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2 d 4 h");
    }

    #[test]
    fn the_notice_counts_only_what_the_action_changed() {
        use crate::admin::queue::{BulkResult, Done};
        let done = |id: &str, changed| Done {
            id: id.into(),
            action: "release".into(),
            changed,
        };
        let result = BulkResult {
            done: vec![done("A1", true), done("B2", false)],
            failed: Vec::new(),
        };
        assert_eq!(
            done_notice("release", &result),
            "Released 1 message. 1 was not on hold."
        );
        let result = BulkResult {
            done: vec![done("A1", true), done("B2", true)],
            failed: Vec::new(),
        };
        assert_eq!(done_notice("hold", &result), "Held 2 messages.");
        let result = BulkResult {
            done: vec![done("A1", false)],
            failed: Vec::new(),
        };
        assert_eq!(
            done_notice("retry", &result),
            "Retrying 0 messages. 1 was on hold: release it to send it."
        );
    }

    #[test]
    fn the_message_page_says_when_it_was_tried_and_will_be() {
        let mut item = QueueItem {
            id: "A1".into(),
            node: None,
            arrival_unix: 1_000,
            size: 1,
            sender: String::new(),
            recipients: Vec::new(),
            client_ip: String::new(),
            helo: String::new(),
            held: false,
            attempts: 1,
            last_error: Some("421 busy".into()),
            last_attempt_unix: Some(1_000),
            next_attempt_unix: Some(4_600),
            headers: None,
            body: None,
        };
        assert_eq!(
            timing(&item, 1_060),
            (
                "1970-01-01 00:16:40 (1 min ago)".to_string(),
                "1970-01-01 01:16:40 (in 59 min)".to_string()
            )
        );
        assert_eq!(timing(&item, 5_000).1, "now: the retry is due");
        item.held = true;
        assert_eq!(
            timing(&item, 1_060).1,
            "none while it is held: Release sends it"
        );
        assert_eq!(
            state_words(item.state()),
            "held (on hold: not delivered until released)"
        );
    }

    #[test]
    fn the_action_form_keeps_every_ticked_id_and_only_local_back_links() {
        let f = act_form(b"csrf=t&id=A1&id=B2&action=hold&back=https%3A%2F%2Fevil.example");
        assert_eq!(f.ids, ["A1", "B2"]);
        assert_eq!(f.back, "/queue");
        assert!(!f.confirmed);
        let f = act_form(b"id=A1&action=delete&confirm=yes&back=%2Fqueue%3Fstate%3Dheld");
        assert!(f.confirmed);
        assert_eq!(f.back, "/queue?state=held");
    }
}
