//! Message Rules and Rule Data (the "Email Security" reference): named domain lists edited
//! one domain per line; ordered rules, each with its direction, recipient and sender
//! conditions and its action (`x-TLSLevel: Require` or `Try`), moved up and down; a warning
//! where two rules can both match one recipient with different levels. A rule needs a
//! condition, or "every recipient" ticked and confirmed with what it reaches
//! (`confirm.rs`); every delete asks first and says what depends on the thing (the rules
//! that use a list). The same `admin::sections` functions as the API.

mod confirm;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::sections::{ListChange, Section, change_list, rules_using};
use crate::admin::{AdminState, ApiError};
use crate::settings::{Direction, MessageRule, RuleData, RuleTls};

struct ListView {
    name: String,
    domains: String,
    count: usize,
    /// The names of the rules that use it.
    used_by: Vec<String>,
}

/// A list's delete waiting for its confirmation; refused while rules use it.
struct ListDelete {
    name: String,
    count: usize,
    /// (rule, the condition that names the list)
    used_by: Vec<(String, &'static str)>,
}

pub(super) struct RuleView {
    pub(super) name: String,
    pub(super) direction: &'static str,
    pub(super) conditions: Vec<String>,
    pub(super) action: &'static str,
    pub(super) first: bool,
    pub(super) last: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    pub(super) original: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) direction: String,
    #[serde(default)]
    pub(super) recipient_matches: String,
    #[serde(default)]
    pub(super) recipient_not_matches: String,
    #[serde(default)]
    pub(super) sender_matches: String,
    #[serde(default)]
    pub(super) sender_not_matches: String,
    /// The "every recipient" box: a rule without conditions, chosen.
    #[serde(default)]
    pub(super) every_recipient: Option<String>,
    #[serde(default)]
    pub(super) tls_level: String,
    /// `yes` once the admin has seen what an every-recipient rule reaches.
    #[serde(default)]
    pub(super) confirmed: String,
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
    /// The rule form's error, in the admin's words, under the form.
    rule_error: Option<String>,
    confirm_rule_delete: Option<RuleView>,
    confirm_list_delete: Option<ListDelete>,
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

pub(super) fn view(r: &MessageRule, i: usize, n: usize) -> RuleView {
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
        every_recipient: r.every_recipient.then(|| "on".into()),
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
                used_by: {
                    // A rule naming the list in two conditions is one user of it.
                    let mut names: Vec<String> = rules_using(&s.rules, &l.name)
                        .iter()
                        .map(|(r, _)| r.name.clone())
                        .collect();
                    names.dedup();
                    names
                },
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
        rule_error: None,
        confirm_rule_delete: None,
        confirm_list_delete: None,
        list_form_name: String::new(),
        list_form_domains: String::new(),
        list_error: None,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RulesQuery {
    #[serde(default)]
    edit: Option<String>,
    /// A rule to delete, once confirmed.
    #[serde(default)]
    delete: Option<String>,
    /// A rule data list to delete, once confirmed.
    #[serde(default)]
    delete_list: Option<String>,
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
    confirm_deletes(&mut page, &snapshot.settings, &q);
    render(page)
}

/// Delete asks first: the rule, or the list and the rules that use it.
fn confirm_deletes(page: &mut RulesPage, s: &crate::settings::Settings, q: &RulesQuery) {
    if let Some(name) = &q.delete {
        match s.rules.iter().position(|r| &r.name == name) {
            Some(i) => page.confirm_rule_delete = Some(view(&s.rules[i], i, s.rules.len())),
            None => page.error = Some(format!("No rule {name:?} to delete.")),
        }
    }
    if let Some(name) = &q.delete_list {
        match s.rule_data.iter().find(|l| &l.name == name) {
            Some(l) => {
                page.confirm_list_delete = Some(ListDelete {
                    name: l.name.clone(),
                    count: l.domains.len(),
                    used_by: rules_using(&s.rules, &l.name)
                        .into_iter()
                        .map(|(r, condition)| (r.name.clone(), condition))
                        .collect(),
                })
            }
            None => page.error = Some(format!("No list {name:?} to delete.")),
        }
    }
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
            Redirect::to("/rules#top").into_response()
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
        every_recipient: f.every_recipient.is_some(),
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
    let rule = match rule_of(&form) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, e, None);
            return form_again(&state, &session, &auth, form, None, &e).await;
        }
    };
    let change = if form.original.is_empty() {
        ListChange::Add(rule.clone())
    } else {
        ListChange::Replace {
            key: form.original.clone(),
            item: rule.clone(),
        }
    };
    // Every recipient is applied only once the admin has seen what it reaches.
    if rule.every_recipient && form.confirmed != "yes" {
        return match crate::admin::sections::check_list(&state, auth.actor(), change).await {
            Ok(()) => confirm::ask(&state, &session, &auth, form, &rule).await,
            Err(e) => form_again(&state, &session, &auth, form, Some(&rule), &e).await,
        };
    }
    let notice = format!(
        "Saved rule {:?} and applied: it counts for mail received from now on.",
        rule.name
    );
    match change_list(&state, auth.actor(), change).await {
        Ok(_) => {
            let _ = session.insert("notice", notice).await;
            Redirect::to("/rules#top").into_response()
        }
        Err(e) => form_again(&state, &session, &auth, form, Some(&rule), &e).await,
    }
}

/// The rule form again, as typed, with the validator's message under it in the page's words.
async fn form_again(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    form: RuleForm,
    rule: Option<&MessageRule>,
    e: &ApiError,
) -> Response {
    let mut page = base(state, session, auth).await;
    page.error = Some("Rule not saved: see the message at the rule form.".into());
    page.rule_error = Some(rule_words(e, rule));
    page.editing = !form.original.is_empty();
    page.form = RuleForm {
        confirmed: String::new(),
        ..form
    };
    (StatusCode::BAD_REQUEST, render(page)).into_response()
}

/// The validator names a field of the document (`rules[2].every_recipient`); the page says
/// which part of the form it is about instead.
fn rule_words(e: &ApiError, rule: Option<&MessageRule>) -> String {
    let leaf = e
        .field
        .as_deref()
        .and_then(|f| f.split_once("]."))
        .map(|(_, leaf)| leaf);
    let said = text(e);
    let label = match leaf {
        Some("every_recipient") if rule.is_some_and(MessageRule::has_condition) => {
            return "“No condition: every recipient” is ticked and conditions are chosen: \
                    untick it to apply the rule only where the conditions hold, or set each \
                    condition to “(no condition)”."
                .into();
        }
        Some("every_recipient") => {
            return "A rule needs a condition: choose a list for at least one of the four \
                    conditions, or tick “No condition: every recipient” to apply it to all \
                    mail of its direction (you are shown what that reaches before it is saved)."
                .into();
        }
        Some("name") => "Name",
        Some("recipient_matches") => "Recipient matches",
        Some("recipient_not_matches") => "Recipient does not match",
        Some("sender_matches") => "Sender matches",
        Some("sender_not_matches") => "Sender does not match",
        _ => return e.words(),
    };
    format!("{label}: {said}")
}

#[derive(Debug, Deserialize)]
pub struct RuleAction {
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
    let failed = if form.action == "delete" {
        "Not deleted"
    } else {
        "Not moved"
    };
    finish(&state, &session, &auth, change, notice, |page, e| {
        page.error = Some(format!("{failed}: {}", text(e)));
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
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
    if form.action == "delete" {
        return finish(&state, &session, &auth, change, notice, |page, e| {
            page.error = Some(format!("List not deleted: {}", text(e)));
        })
        .await;
    }
    let (name, domains) = (form.name.clone(), form.domains.clone());
    finish(&state, &session, &auth, change, notice, move |page, e| {
        page.list_error = Some(list_words(e, &lines));
        page.list_form_name = name;
        page.list_form_domains = domains;
        page.error = Some("List not saved: see the message under its box.".into());
    })
    .await
}

/// The validator's message about a list, said by the line of the box or the name it is about
/// (`rule_data[i].domains[k]` is line `lines[k]` of the box).
fn list_words(e: &ApiError, lines: &[(usize, String)]) -> String {
    let line = e
        .field
        .as_deref()
        .and_then(|f| f.split_once("domains["))
        .and_then(|(_, r)| r.split(']').next())
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| lines.get(k));
    let about_name = e.field.as_deref().is_some_and(|f| f.ends_with("].name"));
    match line {
        Some((n, _)) => format!("line {n}: {}", text(e)),
        None if about_name => format!("Name: {}", text(e)),
        None => text(e),
    }
}
