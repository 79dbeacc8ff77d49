//! Inbound TLS (issue 31): the rows that require TLS, or a verified client certificate, of
//! named senders and clients; search and paging, add / edit with each error under its field
//! and, before anything is saved, the row's impact over the received records (`confirm`);
//! delete after a question; the reply code of a refusal; the Explain of a sender and client.
//! Every action is a call of `admin::inbound` or `admin::sections`, the API's own functions.

mod confirm;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::inbound_impact::{TestRequest, set_reject_code, test_row};
use crate::admin::inbound_tls::{InboundQuery, explain_inbound};
use crate::admin::sections::{ListChange, change_list};
use crate::admin::{AdminState, ApiError};
use crate::levels::InboundLevel;
use crate::settings::{InboundTarget, InboundTlsRow, Settings, inbound_target};

/// Rows per page: a screenful.
const PAGE_SIZE: usize = 50;

/// Each level with its meaning, short enough for a select at 390 px.
const LEVELS: [(&str, &str); 2] = [
    ("encrypt", "encrypt (TLS required)"),
    ("verify", "verify (TLS and a named certificate)"),
];

/// A row as the table shows it.
pub struct RowView {
    pattern: String,
    /// Whom it names: "senders at partner.example", "client 192.0.2.7".
    whom: String,
    level: String,
    names: String,
    min_bits: String,
    note: String,
    /// `pattern=…`, encoded for the edit and delete links.
    query: String,
}

/// One page of the table.
pub struct Listing {
    q: String,
    total: usize,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
    rows: Vec<RowView>,
    prev: Option<String>,
    next: Option<String>,
}

/// The add / edit form as typed.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RowForm {
    /// Set when editing: the row's pattern before the edit.
    #[serde(default)]
    original: String,
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    match_names: String,
    #[serde(default)]
    min_bits: String,
    #[serde(default)]
    note: String,
    /// `yes` once the admin has seen the impact and confirmed.
    #[serde(default)]
    confirmed: String,
}

/// Messages under the form's fields.
#[derive(Debug, Default)]
struct RowErrors {
    pattern: Option<String>,
    level: Option<String>,
    match_names: Option<String>,
    min_bits: Option<String>,
    note: Option<String>,
}

/// The Explain form and its answer.
#[derive(Default)]
struct ExplainView {
    sender: String,
    client: String,
    sender_error: Option<String>,
    client_error: Option<String>,
    /// Each line of the explanation, and whether it is a row that decides.
    lines: Vec<(String, bool)>,
}

#[derive(Template)]
#[template(path = "inbound_tls.html")]
struct InboundPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    listing: Listing,
    /// The delete waiting for its confirmation.
    confirm_delete: Option<RowView>,
    editing: bool,
    form: RowForm,
    errors: RowErrors,
    levels: Vec<(&'static str, &'static str)>,
    reject_code: String,
    reject_code_error: Option<String>,
    explain: ExplainView,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
    /// `edit=1&pattern=…` opens that row in the form.
    #[serde(default)]
    edit: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    /// `change=1` with the form's fields: the form again as typed ("Change it" on the
    /// confirmation, a link: nothing is posted, nothing saved).
    #[serde(default)]
    change: Option<String>,
    #[serde(default)]
    original: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    match_names: String,
    #[serde(default)]
    min_bits: String,
    #[serde(default)]
    note: String,
}

fn encoded(pattern: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("pattern", pattern)
        .finish()
}

/// Whom a row names, in words.
fn whom(pattern: &str) -> String {
    match inbound_target(pattern) {
        Some(InboundTarget::Sender {
            domain,
            subdomains: false,
        }) => format!("senders at {domain}"),
        Some(InboundTarget::Sender { domain, .. }) => {
            format!("senders at {domain} and its subdomains")
        }
        Some(InboundTarget::Client(net)) if net.prefix_len() == net.max_prefix_len() => {
            format!("client {}", net.addr())
        }
        Some(InboundTarget::Client(net)) => format!("clients in {net}"),
        None => pattern.to_string(),
    }
}

fn view(row: &InboundTlsRow) -> RowView {
    RowView {
        pattern: row.pattern.clone(),
        whom: whom(&row.pattern),
        level: row.level.to_string(),
        names: row.match_names.join(", "),
        min_bits: row
            .min_bits
            .map_or_else(|| "any".to_string(), |b| b.to_string()),
        note: row.note.clone(),
        query: encoded(&row.pattern),
    }
}

/// The rows matching `q` (in the pattern or the note, any case), sorted by pattern, and the
/// page asked for.
fn listing(rows: &[InboundTlsRow], q: &str, page: usize) -> Listing {
    let needle = q.trim().to_lowercase();
    let mut found: Vec<&InboundTlsRow> = rows
        .iter()
        .filter(|r| {
            needle.is_empty()
                || r.pattern.contains(&needle)
                || r.note.to_lowercase().contains(&needle)
        })
        .collect();
    found.sort_unstable_by(|a, b| a.pattern.cmp(&b.pattern));
    let total = found.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * PAGE_SIZE;
    let shown: Vec<RowView> = found
        .iter()
        .skip(start)
        .take(PAGE_SIZE)
        .map(|r| view(r))
        .collect();
    let link = |p: usize| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if !q.is_empty() {
            s.append_pair("q", q);
        }
        let query = s.append_pair("page", &p.to_string()).finish();
        format!("/inbound-tls?{query}")
    };
    Listing {
        q: q.to_string(),
        total,
        first: if total == 0 { 0 } else { start + 1 },
        last: start + shown.len(),
        page,
        pages,
        rows: shown,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    }
}

/// The page with the listing of `query` (the state in force), for a handler to fill in.
async fn page_for(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    query: &ListQuery,
) -> InboundPage {
    let snapshot = state.settings.current();
    let settings: &Settings = &snapshot.settings;
    let mut page = InboundPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice: None,
        error: None,
        listing: listing(&settings.inbound_tls, &query.q, query.page.unwrap_or(1)),
        confirm_delete: None,
        editing: false,
        form: RowForm {
            level: "encrypt".into(),
            ..RowForm::default()
        },
        errors: RowErrors::default(),
        levels: LEVELS.to_vec(),
        reject_code: settings.inbound.plaintext_reject_code.to_string(),
        reject_code_error: None,
        explain: ExplainView::default(),
    };
    let wanted = query.pattern.as_ref().filter(|_| query.edit.is_some());
    if let Some(row) = settings
        .inbound_tls
        .iter()
        .find(|r| Some(&r.pattern) == wanted)
    {
        page.editing = true;
        page.form = form_of(row);
    } else if query.change.is_some() {
        page.editing = !query.original.is_empty();
        page.form = RowForm {
            original: query.original.clone(),
            pattern: query.pattern.clone().unwrap_or_default(),
            level: query.level.clone(),
            match_names: query.match_names.clone(),
            min_bits: query.min_bits.clone(),
            note: query.note.clone(),
            confirmed: String::new(),
        };
    }
    page
}

/// The link back to the form as typed (`ListQuery::change`).
fn change_link(form: &RowForm) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("change", "1")
        .append_pair("original", &form.original)
        .append_pair("pattern", &form.pattern)
        .append_pair("level", &form.level)
        .append_pair("match_names", &form.match_names)
        .append_pair("min_bits", &form.min_bits)
        .append_pair("note", &form.note)
        .finish();
    format!("/inbound-tls?{query}#row-form")
}

fn form_of(row: &InboundTlsRow) -> RowForm {
    RowForm {
        original: row.pattern.clone(),
        pattern: row.pattern.clone(),
        level: row.level.to_string(),
        match_names: row.match_names.join(", "),
        min_bits: row.min_bits.map(|b| b.to_string()).unwrap_or_default(),
        note: row.note.clone(),
        confirmed: String::new(),
    }
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(query): Query<ListQuery>,
) -> Response {
    let mut page = page_for(&state, &session, &auth, &query).await;
    page.notice = session.remove::<String>("notice").await.ok().flatten();
    render(page)
}

/// The form read into a row; a field that cannot even be read is said under it.
fn row_of(form: &RowForm) -> Result<InboundTlsRow, Box<RowErrors>> {
    let mut errors = RowErrors::default();
    let level = match form.level.parse::<InboundLevel>() {
        Ok(l) => Some(l),
        Err(_) if form.level.trim().is_empty() => {
            errors.level = Some("required: choose a level".into());
            None
        }
        Err(e) => {
            errors.level = Some(e);
            None
        }
    };
    let min_bits = super::policy::min_bits_of(&form.min_bits)
        .map_err(|e| errors.min_bits = Some(e))
        .ok();
    let (Some(level), Some(min_bits)) = (level, min_bits) else {
        return Err(Box::new(errors));
    };
    Ok(InboundTlsRow {
        pattern: form.pattern.clone(),
        level,
        match_names: form
            .match_names
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect(),
        min_bits,
        note: form.note.trim().to_string(),
    })
}

/// The validator's message under the field it names (`…[3].match_names` → the names).
fn place(e: &ApiError) -> (RowErrors, Option<String>) {
    let mut errors = RowErrors::default();
    let field = e.field.as_deref().unwrap_or("");
    let leaf = field.rsplit_once("].").map_or(field, |(_, f)| f);
    let slot = match leaf.split('[').next().unwrap_or(leaf) {
        "pattern" => &mut errors.pattern,
        "level" => &mut errors.level,
        "match_names" => &mut errors.match_names,
        "min_bits" => &mut errors.min_bits,
        "note" => &mut errors.note,
        _ => return (errors, Some(format!("Not saved: {}", e.words()))),
    };
    *slot = Some(e.message().to_string());
    // On a phone the field may be below the fold: say at the top that nothing was saved.
    (
        errors,
        Some("Not saved: see the message under the field.".into()),
    )
}

/// Back to the form as typed, with the errors, 400.
async fn refused(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    form: RowForm,
    (errors, error): (RowErrors, Option<String>),
) -> Response {
    let mut page = page_for(state, session, auth, &ListQuery::default()).await;
    page.editing = !form.original.is_empty();
    page.form = RowForm {
        confirmed: String::new(),
        ..form
    };
    page.errors = errors;
    page.error = error;
    (StatusCode::BAD_REQUEST, render(page)).into_response()
}

/// Add (no `original`) or edit. First the change is tested as it would be made and its
/// impact shown (`confirm`), nothing saved; confirmed, it is made through the API's path.
pub async fn save(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RowForm>,
) -> Response {
    let row = match row_of(&form) {
        Ok(row) => row,
        Err(errors) => {
            let top = Some("Not saved: see the message under the field.".into());
            return refused(&state, &session, &auth, form, (*errors, top)).await;
        }
    };
    let replacing = (!form.original.is_empty()).then(|| form.original.clone());
    if form.confirmed != "yes" {
        let request = TestRequest { row, replacing };
        return match test_row(&state, request).await {
            Ok(impact) => confirm::ask(&state, &session, &auth, form, impact).await,
            Err(e) => refused(&state, &session, &auth, form, place(&e)).await,
        };
    }
    let (change, done) = match replacing {
        None => (ListChange::Add(row), "Added"),
        Some(key) => (ListChange::Replace { key, item: row }, "Saved"),
    };
    match change_list(&state, auth.actor(), change).await {
        Ok(_) => {
            let notice = format!(
                "{done} the row for {} and applied: it holds from the next MAIL FROM.",
                form.pattern
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            );
            let _ = session.insert("notice", notice).await;
            Redirect::to("/inbound-tls#top").into_response()
        }
        Err(e) => refused(&state, &session, &auth, form, place(&e)).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct PatternForm {
    #[serde(default)]
    pattern: String,
}

/// Delete asks first, saying what the row's mail then gets.
pub async fn confirm_delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<PatternForm>,
) -> Response {
    let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
    let snapshot = state.settings.current();
    let found = snapshot
        .settings
        .inbound_tls
        .iter()
        .find(|r| r.pattern == q.pattern);
    match found {
        Some(row) => page.confirm_delete = Some(view(row)),
        None => page.error = Some(format!("No row for {:?}.", q.pattern)),
    }
    render(page)
}

pub async fn delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<PatternForm>,
) -> Response {
    let change = ListChange::<InboundTlsRow>::Delete(form.pattern.clone());
    match change_list(&state, auth.actor(), change).await {
        Ok(_) => {
            let notice = format!("Deleted the row for {} and applied.", form.pattern);
            let _ = session.insert("notice", notice).await;
            Redirect::to("/inbound-tls#top").into_response()
        }
        Err(e) => {
            let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
            page.error = Some(format!("Not deleted: {}", e.words()));
            (StatusCode::CONFLICT, render(page)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    plaintext_reject_code: String,
}

/// The reply code of a refusal, through the settings' validation.
pub async fn save_code(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<CodeForm>,
) -> Response {
    let typed = form.plaintext_reject_code.trim();
    let result = match typed.parse::<u16>() {
        Ok(code) => set_reject_code(&state, auth.actor(), code)
            .await
            .map_err(|e| e.message().to_string()),
        Err(_) => Err(format!(
            "{typed:?} is not a reply code: 450 (the sender retries) or 550 (the mail is returned)"
        )),
    };
    match result {
        Ok(_) => {
            let notice = format!("Saved: a row now refuses with {typed}.");
            let _ = session.insert("notice", notice).await;
            Redirect::to("/inbound-tls#reject-code").into_response()
        }
        Err(e) => {
            let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
            page.reject_code = typed.to_string();
            page.reject_code_error = Some(e);
            page.error = Some("Not saved: see the message under the field.".into());
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ExplainQuery {
    #[serde(default)]
    sender: String,
    #[serde(default)]
    client: String,
}

/// Which rows decide for a sender and client: the API's explain, the session's decision.
pub async fn explain_page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<ExplainQuery>,
) -> Response {
    let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
    // Nothing asked yet (a link to the form): the form alone.
    if q.sender.trim().is_empty() && q.client.trim().is_empty() {
        return render(page);
    }
    let query = InboundQuery {
        inbound: Some(q.sender.clone()),
        client: Some(q.client.clone()),
    };
    let mut status = StatusCode::OK;
    match explain_inbound(&state, &query) {
        // `policy::inbound` marks the line of each row that decides.
        Ok(answer) => {
            page.explain.lines = answer
                .decision
                .explanation
                .into_iter()
                .map(|l| {
                    let decides = l.ends_with("(decides)");
                    (l, decides)
                })
                .collect();
        }
        Err(e) => {
            status = StatusCode::BAD_REQUEST;
            let words = e.message().to_string();
            match e.field.as_deref() {
                Some("client") => page.explain.client_error = Some(words),
                _ => page.explain.sender_error = Some(words),
            }
        }
    }
    page.explain.sender = q.sender;
    page.explain.client = q.client;
    (status, render(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_read_field_by_field() {
        let form = RowForm {
            pattern: "Partner.example".into(),
            level: "verify".into(),
            min_bits: "128".into(),
            match_names: "a.example, b.example c.example".into(),
            ..RowForm::default()
        };
        let row = row_of(&form).unwrap();
        assert_eq!(row.level, InboundLevel::Verify);
        assert_eq!(row.min_bits, Some(128));
        assert_eq!(row.match_names.len(), 3);
        let bad = RowForm {
            level: String::new(),
            min_bits: "99999".into(),
            ..form
        };
        let e = row_of(&bad).unwrap_err();
        assert_eq!(e.level.as_deref(), Some("required: choose a level"));
        assert_eq!(e.min_bits.as_deref(), Some("99999 is out of range (0–256)"));
    }

    #[test]
    fn rows_say_whom_they_name() {
        assert_eq!(whom("partner.example"), "senders at partner.example");
        assert_eq!(
            whom(".partner.example"),
            "senders at partner.example and its subdomains"
        );
        assert_eq!(whom("192.0.2.7"), "client 192.0.2.7");
        assert_eq!(whom("2001:db8::/32"), "clients in 2001:db8::/32");
    }
}
