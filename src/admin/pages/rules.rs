//! Message Rules and Rule Data (the "Email Security" reference): named domain lists edited
//! one domain per line; ordered rules, each with its direction, recipient and sender
//! conditions and its action (`x-TLSLevel: Require` or `Try`), moved up and down; a warning
//! where two rules can both match one recipient with different levels. The same
//! `admin::sections` functions as the API.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, check_csrf, chrome, render};
use crate::admin::sections::{ListChange, Section, change_list};
use crate::admin::{AdminState, ApiError};
use crate::settings::{Direction, MessageRule, RuleData, RuleTls};

struct ListView {
    name: String,
    domains: String,
    count: usize,
}

struct RuleView {
    name: String,
    direction: &'static str,
    conditions: Vec<String>,
    action: &'static str,
    first: bool,
    last: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    original: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    recipient_matches: String,
    #[serde(default)]
    recipient_not_matches: String,
    #[serde(default)]
    sender_matches: String,
    #[serde(default)]
    sender_not_matches: String,
    #[serde(default)]
    tls_level: String,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    warnings: Vec<String>,
    lists: Vec<ListView>,
    list_names: Vec<String>,
    rules: Vec<RuleView>,
    editing: bool,
    form: RuleForm,
    list_form_name: String,
    list_form_domains: String,
    list_error: Option<String>,
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Any => "any",
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

fn view(r: &MessageRule, i: usize, n: usize) -> RuleView {
    let mut conditions = Vec::new();
    for (what, list) in [
        ("recipient matches", &r.recipient_matches),
        ("recipient does not match", &r.recipient_not_matches),
        ("sender matches", &r.sender_matches),
        ("sender does not match", &r.sender_not_matches),
    ] {
        if let Some(l) = list {
            conditions.push(format!("{what} {l}"));
        }
    }
    RuleView {
        name: r.name.clone(),
        direction: direction_name(r.direction),
        conditions,
        action: match r.tls_level {
            RuleTls::Require => "x-TLSLevel: Require",
            RuleTls::Try => "x-TLSLevel: Try",
        },
        first: i == 0,
        last: i + 1 == n,
    }
}

fn form_of(r: &MessageRule) -> RuleForm {
    RuleForm {
        original: r.name.clone(),
        name: r.name.clone(),
        direction: direction_name(r.direction).into(),
        recipient_matches: r.recipient_matches.clone().unwrap_or_default(),
        recipient_not_matches: r.recipient_not_matches.clone().unwrap_or_default(),
        sender_matches: r.sender_matches.clone().unwrap_or_default(),
        sender_not_matches: r.sender_not_matches.clone().unwrap_or_default(),
        tls_level: match r.tls_level {
            RuleTls::Require => "require".into(),
            RuleTls::Try => "try".into(),
        },
        ..RuleForm::default()
    }
}

async fn base(state: &AdminState, session: &Session, auth: &SignedIn) -> RulesPage {
    let snapshot = state.settings.current();
    let s = &snapshot.settings;
    let n = s.rules.len();
    RulesPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        error: None,
        warnings: crate::policy::overlap::overlaps(s)
            .iter()
            .map(|o| o.describe(s))
            .collect(),
        lists: s
            .rule_data
            .iter()
            .map(|l| ListView {
                name: l.name.clone(),
                domains: l.domains.join("\n"),
                count: l.domains.len(),
            })
            .collect(),
        list_names: s.rule_data.iter().map(|l| l.name.clone()).collect(),
        rules: s
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| view(r, i, n))
            .collect(),
        editing: false,
        form: RuleForm {
            direction: "outbound".into(),
            tls_level: "require".into(),
            ..RuleForm::default()
        },
        list_form_name: String::new(),
        list_form_domains: String::new(),
        list_error: None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RulesQuery {
    #[serde(default)]
    edit: Option<String>,
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<RulesQuery>,
) -> Response {
    let mut page = base(&state, &session, &auth).await;
    let snapshot = state.settings.current();
    if let Some(r) = q
        .edit
        .as_ref()
        .and_then(|n| snapshot.settings.rules.iter().find(|r| &r.name == n))
    {
        page.editing = true;
        page.form = form_of(r);
    }
    render(page)
}

/// A change and where its error goes: back to the page with a notice, or the page again.
async fn finish<T: Section>(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    change: ListChange<T>,
    notice: String,
    on_error: impl FnOnce(&mut RulesPage, &ApiError),
) -> Response {
    match change_list(state, auth.actor(), change).await {
        Ok(_) => {
            let _ = session.insert("notice", notice).await;
            Redirect::to("/rules").into_response()
        }
        Err(e) => {
            let mut page = base(state, session, auth).await;
            on_error(&mut page, &e);
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

/// The validator's words without the field they name (said by its place on the page).
fn text(e: &ApiError) -> String {
    e.message().to_string()
}

fn rule_of(f: &RuleForm) -> Result<MessageRule, String> {
    let list = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(MessageRule {
        name: f.name.trim().to_string(),
        direction: match f.direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            "any" | "" => Direction::Any,
            other => {
                return Err(format!(
                    "direction: {other:?}: expected any, inbound or outbound"
                ));
            }
        },
        recipient_matches: list(&f.recipient_matches),
        recipient_not_matches: list(&f.recipient_not_matches),
        sender_matches: list(&f.sender_matches),
        sender_not_matches: list(&f.sender_not_matches),
        tls_level: match f.tls_level.as_str() {
            "try" => RuleTls::Try,
            "require" => RuleTls::Require,
            other => return Err(format!("action: {other:?}: expected require or try")),
        },
    })
}

pub async fn save_rule(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RuleForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let editing = !form.original.is_empty();
    let on_error = {
        let form = form.clone();
        move |page: &mut RulesPage, e: &ApiError| {
            page.error = Some(format!("Rule not saved: {}", text(e)));
            page.editing = editing;
            page.form = form;
        }
    };
    let rule = match rule_of(&form) {
        Ok(r) => r,
        Err(e) => {
            let mut page = base(&state, &session, &auth).await;
            on_error(&mut page, &ApiError::new(StatusCode::BAD_REQUEST, e, None));
            return (StatusCode::BAD_REQUEST, render(page)).into_response();
        }
    };
    let name = rule.name.clone();
    let change = if editing {
        ListChange::Replace {
            key: form.original.clone(),
            item: rule,
        }
    } else {
        ListChange::Add(rule)
    };
    let notice =
        format!("Saved rule {name:?} and applied: it counts for mail received from now on.");
    finish(&state, &session, &auth, change, notice, on_error).await
}

#[derive(Debug, Deserialize)]
pub struct RuleAction {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// `up`, `down` or `delete`.
    #[serde(default)]
    action: String,
}

pub async fn rule_action(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RuleAction>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let name = form.name.clone();
    let (change, notice) = match form.action.as_str() {
        "delete" => (
            ListChange::Delete(name.clone()),
            format!("Deleted rule {name:?}."),
        ),
        "up" | "down" => (
            ListChange::<MessageRule>::Move {
                key: name.clone(),
                up: form.action == "up",
            },
            format!("Moved rule {name:?} {}.", form.action),
        ),
        other => {
            return (StatusCode::BAD_REQUEST, format!("unknown action {other:?}")).into_response();
        }
    };
    finish(&state, &session, &auth, change, notice, |page, e| {
        page.error = Some(format!("Not done: {}", text(e)));
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    #[serde(default)]
    csrf: String,
    /// Set when editing an existing list.
    #[serde(default)]
    original: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    domains: String,
    /// `save` or `delete`.
    #[serde(default)]
    action: String,
}

pub async fn save_list(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<ListForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let lines: Vec<(usize, String)> = form
        .domains
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let list = RuleData {
        name: form.name.trim().to_string(),
        domains: lines.iter().map(|(_, d)| d.clone()).collect(),
    };
    let (change, notice) = if form.action == "delete" {
        let key = form.original.clone();
        (
            ListChange::Delete(key.clone()),
            format!("Deleted list {key:?}."),
        )
    } else if form.original.is_empty() {
        (
            ListChange::Add(list),
            format!("Added list {:?}.", form.name.trim()),
        )
    } else {
        let key = form.original.clone();
        let notice = format!("Saved list {:?} and applied.", form.name.trim());
        (ListChange::Replace { key, item: list }, notice)
    };
    let (name, domains) = (form.name.clone(), form.domains.clone());
    finish(&state, &session, &auth, change, notice, move |page, e| {
        // `rule_data[i].domains[k]` is line `lines[k]` of the box.
        let line = e
            .field
            .as_deref()
            .and_then(|f| f.split_once("domains["))
            .and_then(|(_, r)| r.split(']').next())
            .and_then(|k| k.parse::<usize>().ok())
            .and_then(|k| lines.get(k));
        page.list_error = Some(match line {
            Some((n, _)) => format!("line {n}: {}", text(e)),
            None => text(e),
        });
        page.list_form_name = name;
        page.list_form_domains = domains;
        page.error = Some("List not saved: see the message under its box.".into());
    })
    .await
}
