//! TLS Policy Domains (Hermes' table, GlobalCerts' partner list): search and paging over the
//! rows, add / edit / delete with each error under its field, a bulk box, and the Test of a
//! row against the hosts its mail goes to before it is saved. Every action is a call of
//! `admin::policy`, the API's own functions.

mod bulk;

pub use bulk::bulk;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::policy::{PolicyTest, RowChange, TestRequest, change_rows, test_row};
use crate::admin::{AdminState, ApiError};
use crate::levels::{Level, OnFailure};
use crate::settings::{Apply, PolicyRow};

/// Rows per page: a screenful, and a page that renders in well under a millisecond.
const PAGE_SIZE: usize = 50;

/// Each level with its meaning in words short enough for a select at 390 px.
const LEVELS: [(&str, &str); 8] = [
    ("encrypt", "encrypt (TLS required)"),
    ("verify", "verify (certificate for the MX name)"),
    ("dane", "dane (DNSSEC TLSA, else may)"),
    ("dane-only", "dane-only (TLSA required)"),
    ("secure", "secure (certificate for the domain)"),
    ("fingerprint", "fingerprint (TLS, pinned certificate)"),
    ("may", "may (TLS if offered)"),
    ("none", "none (never TLS)"),
];

/// A row as the table shows it.
pub struct RowView {
    pattern: String,
    level: String,
    min_bits: String,
    on_failure: String,
    subdomains: bool,
    note: String,
    /// The relay domain that manages the row: no edit or delete here.
    managed_by: Option<String>,
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
    /// The outbound STARTTLS mode the rows refine, in its words.
    outbound_mode: &'static str,
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
    min_bits: String,
    #[serde(default)]
    on_failure: String,
    #[serde(default)]
    include_subdomains: Option<String>,
    #[serde(default)]
    note: String,
    #[serde(default)]
    match_names: String,
    #[serde(default)]
    fingerprints: String,
    /// `` (the global setting), `enforce`, `monitor` or `off`.
    #[serde(default)]
    mta_sts: String,
    /// Checked: classical key exchange only.
    #[serde(default)]
    classical_kx: Option<String>,
}

/// Messages under the form's fields.
#[derive(Debug, Default)]
struct RowErrors {
    pattern: Option<String>,
    level: Option<String>,
    min_bits: Option<String>,
    on_failure: Option<String>,
    mta_sts: Option<String>,
    match_names: Option<String>,
    fingerprints: Option<String>,
}

/// The Test's result as the page shows it.
struct TestView {
    domain: String,
    level: String,
    min_bits: u16,
    recipient: String,
    source: String,
    row_decides: bool,
    /// The row in the table the Test used the typed one in place of, and its edit link.
    replaces: Option<(String, String)>,
    passes: bool,
    hosts: Vec<HostView>,
    published: Vec<String>,
    history_days: u64,
}

struct HostView {
    host: String,
    /// `ip port N`
    address: String,
    starttls: String,
    tls: String,
    certificate: String,
    passes: bool,
    verdict: String,
    history: String,
}

#[derive(Template)]
#[template(path = "policy.html")]
pub struct PolicyPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    listing: Listing,
    /// The delete waiting for its confirmation.
    confirm_delete: Option<RowView>,
    editing: bool,
    form: RowForm,
    subdomains_checked: bool,
    errors: RowErrors,
    levels: Vec<(&'static str, &'static str)>,
    test: Option<TestView>,
    test_error: Option<String>,
    bulk: String,
    bulk_level: String,
    bulk_note: String,
    bulk_error: Option<String>,
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
    /// `add=partner.example` fills the add form's domain (the Logs page links here).
    #[serde(default)]
    add: Option<String>,
}

fn encoded(pattern: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("pattern", pattern)
        .finish()
}

fn view(row: &PolicyRow) -> RowView {
    let min_bits = match row.min_bits {
        Some(b) => b.to_string(),
        None if row.level >= Level::Encrypt => {
            format!("{} (default)", crate::policy::DEFAULT_MIN_BITS)
        }
        None => "0".into(),
    };
    RowView {
        pattern: row.pattern.clone(),
        level: row.level.to_string(),
        min_bits,
        on_failure: row.on_failure.to_string(),
        subdomains: row.include_subdomains || row.pattern.starts_with('.'),
        note: row.note.clone(),
        managed_by: row.managed_by.clone(),
        query: encoded(&row.pattern),
    }
}

/// The rows matching `q` (in the pattern or the note, any case), sorted by pattern, and the
/// page asked for.
pub fn listing(rows: &[&PolicyRow], q: &str, page: usize) -> Listing {
    let needle = q.trim().to_lowercase();
    let mut found: Vec<&PolicyRow> = rows
        .iter()
        .copied()
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
        format!("/policy?{}", s.append_pair("page", &p.to_string()).finish())
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
        outbound_mode: crate::settings::TlsMode::default().words(),
    }
}

/// The listing of every row the table holds: stored ones and those relay domains manage.
pub fn listing_of(settings: &crate::settings::Settings, q: &str, page: usize) -> Listing {
    let managed = settings.managed_rows();
    let mut rows: Vec<&PolicyRow> = settings.policy.iter().collect();
    rows.extend(managed.iter());
    Listing {
        outbound_mode: settings.outbound.tls_mode.words(),
        ..listing(&rows, q, page)
    }
}

/// The page as the handler renders it for a search and page, with an empty form (also what
/// the benchmark times: `cargo bench --bench admin_page`).
pub fn page_html(
    chrome: Chrome,
    settings: &crate::settings::Settings,
    q: &str,
    page: usize,
) -> String {
    let page = base_page(chrome, listing_of(settings, q, page));
    page.render().unwrap_or_else(|e| e.to_string())
}

fn base_page(chrome: Chrome, listing: Listing) -> PolicyPage {
    PolicyPage {
        chrome,
        notice: None,
        error: None,
        listing,
        confirm_delete: None,
        editing: false,
        form: RowForm {
            level: "encrypt".into(),
            on_failure: "defer".into(),
            ..RowForm::default()
        },
        subdomains_checked: false,
        errors: RowErrors::default(),
        levels: LEVELS.to_vec(),
        test: None,
        test_error: None,
        bulk: String::new(),
        bulk_level: "encrypt".into(),
        bulk_note: String::new(),
        bulk_error: None,
    }
}

/// The page with the listing of `query` (the state in force), for a handler to fill in.
async fn page_for(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    query: &ListQuery,
) -> PolicyPage {
    let snapshot = state.settings.current();
    let listing = listing_of(&snapshot.settings, &query.q, query.page.unwrap_or(1));
    let mut page = base_page(chrome(state, session, Some(auth)).await, listing);
    // Managed rows are not in `policy`: they cannot be opened for editing.
    let wanted = query.pattern.as_ref().filter(|_| query.edit.is_some());
    if let Some(row) = snapshot
        .settings
        .policy
        .iter()
        .find(|r| Some(&r.pattern) == wanted)
    {
        page.editing = true;
        page.subdomains_checked = row.include_subdomains;
        page.form = form_of(row);
    } else if let Some(pattern) = &query.add {
        page.form.pattern = pattern.trim().to_string();
    }
    page
}

fn form_of(row: &PolicyRow) -> RowForm {
    RowForm {
        original: row.pattern.clone(),
        pattern: row.pattern.clone(),
        level: row.level.to_string(),
        min_bits: row.min_bits.map(|b| b.to_string()).unwrap_or_default(),
        on_failure: row.on_failure.to_string(),
        include_subdomains: row.include_subdomains.then(|| "on".into()),
        note: row.note.clone(),
        match_names: row.match_names.join(", "),
        fingerprints: row.fingerprints.join(", "),
        mta_sts: row.mta_sts.map(|m| m.to_string()).unwrap_or_default(),
        classical_kx: (row.key_exchange == crate::levels::KeyExchange::Classical)
            .then(|| "on".into()),
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
fn row_of(form: &RowForm) -> Result<PolicyRow, Box<RowErrors>> {
    let mut errors = RowErrors::default();
    let level = match form.level.parse::<Level>() {
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
    let on_failure = match form.on_failure.trim() {
        "" => Some(OnFailure::Defer),
        s => s
            .parse::<OnFailure>()
            .map_err(|e| errors.on_failure = Some(e))
            .ok(),
    };
    let min_bits = min_bits_of(&form.min_bits)
        .map_err(|e| errors.min_bits = Some(e))
        .ok();
    let mta_sts = match form.mta_sts.trim() {
        "" => Some(None),
        s => s
            .parse::<crate::levels::StsSwitch>()
            .map(Some)
            .map_err(|e| errors.mta_sts = Some(e))
            .ok(),
    };
    let (Some(level), Some(on_failure), Some(min_bits), Some(mta_sts)) =
        (level, on_failure, min_bits, mta_sts)
    else {
        return Err(Box::new(errors));
    };
    let list = |s: &str| -> Vec<String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(PolicyRow {
        pattern: form.pattern.clone(),
        level,
        include_subdomains: form.include_subdomains.is_some(),
        min_bits,
        on_failure,
        note: form.note.trim().to_string(),
        match_names: list(&form.match_names),
        fingerprints: list(&form.fingerprints),
        managed_by: None,
        mta_sts,
        key_exchange: match form.classical_kx {
            Some(_) => crate::levels::KeyExchange::Classical,
            None => crate::levels::KeyExchange::PostQuantum,
        },
    })
}

/// Blank is the level's default; a number a `u16` cannot hold gets the validator's words.
pub(super) fn min_bits_of(s: &str) -> Result<Option<u16>, String> {
    match s.trim() {
        "" => Ok(None),
        s => {
            let b = s
                .parse::<i64>()
                .map_err(|_| format!("{s:?} is not a whole number of bits"))?;
            u16::try_from(b)
                .map(Some)
                .map_err(|_| crate::settings::min_bits_out_of_range(b))
        }
    }
}

/// The validator's message under the field it names (`policy[3].min_bits` → min bits).
fn place(e: &ApiError) -> (RowErrors, Option<String>) {
    let mut errors = RowErrors::default();
    let field = e.field.as_deref().unwrap_or("");
    let leaf = field.rsplit_once("].").map_or(field, |(_, f)| f);
    let text = e.message().to_string();
    let slot = match leaf.split('[').next().unwrap_or(leaf) {
        "pattern" => &mut errors.pattern,
        "min_bits" => &mut errors.min_bits,
        "match_names" => &mut errors.match_names,
        "fingerprints" => &mut errors.fingerprints,
        _ => return (errors, Some(format!("Not saved: {}", e.words()))),
    };
    *slot = Some(text);
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
    page.subdomains_checked = form.include_subdomains.is_some();
    page.form = form;
    page.errors = errors;
    page.error = error;
    (StatusCode::BAD_REQUEST, render(page)).into_response()
}

/// Add (no `original`) or edit: one change through the API's path, then back to the table.
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
    let (change, done) = if form.original.is_empty() {
        (RowChange::Add(vec![row]), "Added")
    } else {
        let original = form.original.clone();
        (RowChange::Replace { original, row }, "Saved")
    };
    match change_rows(&state, auth.actor(), Apply::Yes, change).await {
        Ok(_) => {
            let notice = format!(
                "{done} {} and applied: the next delivery uses it.",
                form.pattern.trim().to_ascii_lowercase()
            );
            let _ = session.insert("notice", notice).await;
            Redirect::to("/policy#top").into_response()
        }
        Err(e) => refused(&state, &session, &auth, form, place(&e)).await,
    }
}

/// The Test button of the form: nothing is saved; the form comes back as typed with what
/// each host offers and whether the row would pass.
pub async fn test(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RowForm>,
) -> Response {
    let row = match row_of(&form) {
        Ok(row) => row,
        Err(errors) => return refused(&state, &session, &auth, form, (*errors, None)).await,
    };
    let replacing = (!form.original.is_empty()).then(|| form.original.clone());
    let result = test_row(&state, TestRequest { row, replacing }).await;
    let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
    page.editing = !form.original.is_empty();
    page.subdomains_checked = form.include_subdomains.is_some();
    page.form = form;
    match result {
        Ok(t) => page.test = Some(test_view(t)),
        Err(e) if e.field.is_some() => {
            let (errors, _) = place(&e);
            page.errors = errors;
            page.test_error = Some("Not tested: see the message under the field.".into());
        }
        Err(e) => page.test_error = Some(format!("Not tested: {}", e.words())),
    }
    render(page)
}

fn test_view(t: PolicyTest) -> TestView {
    let hosts = t
        .test
        .hosts
        .iter()
        .map(|h| {
            let r = &h.report;
            let (host, address) = r.relay.split_once('[').unwrap_or((&r.relay, ""));
            let address = address.replace("]:", " port ");
            let seen = t.history.iter().find(|s| s.host == host);
            HostView {
                host: host.to_string(),
                address,
                starttls: match (r.greeting.is_empty(), r.starttls_offered) {
                    (true, _) => "not reached".into(),
                    (false, true) => "offered".into(),
                    (false, false) => "NOT offered".into(),
                },
                tls: match (&r.tls, &r.tls_error) {
                    (Some(tls), _) => tls.describe_session(),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "none".into(),
                },
                certificate: match (&r.certificate, &r.verification) {
                    (Some(c), Some(v)) => {
                        let v = match v.strip_prefix("no: ") {
                            Some(why) => format!("not verified for {host}: {why}"),
                            None => v.clone(),
                        };
                        format!("{}, issued by {}; {v}", c.subject, c.issuer)
                    }
                    (Some(c), None) => c.subject.clone(),
                    _ => "none shown".into(),
                },
                passes: h.passes,
                verdict: h.verdict.clone(),
                history: seen.cloned().unwrap_or_default().describe(t.history_days),
            }
        })
        .collect();
    TestView {
        domain: t.test.domain,
        level: t.test.level.to_string(),
        min_bits: t.test.min_bits,
        recipient: t.recipient,
        source: t.source,
        row_decides: t.row_decides,
        replaces: t.replaces.map(|p| {
            let link = format!("/policy?edit=1&{}#row-form", encoded(&p));
            (p, link)
        }),
        passes: t.test.passes,
        hosts,
        published: t.published,
        history_days: t.history_days,
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    pattern: String,
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    pattern: String,
}

/// Delete asks first: the row's mail then follows the global level.
pub async fn confirm_delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
    let snapshot = state.settings.current();
    match snapshot
        .settings
        .policy
        .iter()
        .find(|r| r.pattern == q.pattern)
    {
        Some(row) => page.confirm_delete = Some(view(row)),
        None => page.error = Some(format!("No row for {:?}.", q.pattern)),
    }
    render(page)
}

pub async fn delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let change = RowChange::Delete(form.pattern.clone());
    match change_rows(&state, auth.actor(), Apply::Yes, change).await {
        Ok(_) => {
            let notice = format!("Deleted {} and applied.", form.pattern);
            let _ = session.insert("notice", notice).await;
            Redirect::to("/policy#top").into_response()
        }
        Err(e) => {
            let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
            page.error = Some(format!("Not deleted: {}", e.words()));
            (StatusCode::CONFLICT, render(page)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<PolicyRow> {
        (0..n)
            .map(|i| PolicyRow::new(format!("d{i:05}.example"), Level::Encrypt))
            .collect()
    }

    #[test]
    fn pages_of_fifty_sorted_with_links_that_keep_the_search() {
        let all = rows(120);
        let refs: Vec<&PolicyRow> = all.iter().rev().collect();
        let l = listing(&refs, "", 3);
        assert_eq!(
            (l.total, l.pages, l.page, l.first, l.last),
            (120, 3, 3, 101, 120)
        );
        assert_eq!(l.rows[0].pattern, "d00100.example");
        assert_eq!(l.prev.as_deref(), Some("/policy?page=2"));
        assert!(l.next.is_none());
        let l = listing(&refs, "D0001", 1);
        assert_eq!(l.total, 10, "d00010..d00019, any case");
        assert_eq!(l.next, None);
        let l = listing(&refs, "", 99);
        assert_eq!(l.page, 3, "a page past the end shows the last");
        let none = listing(&refs, "nothing", 1);
        assert_eq!(
            (none.total, none.first, none.last, none.pages),
            (0, 0, 0, 1)
        );
    }

    #[test]
    fn the_form_is_read_field_by_field() {
        let form = RowForm {
            pattern: "Partner.example".into(),
            level: "verify".into(),
            min_bits: "128".into(),
            on_failure: "bounce".into(),
            match_names: "a.example, b.example c.example".into(),
            ..RowForm::default()
        };
        let row = row_of(&form).unwrap();
        assert_eq!(row.level, Level::Verify);
        assert_eq!(row.min_bits, Some(128));
        assert_eq!(row.on_failure, OnFailure::Bounce);
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
}
