//! Relay Domains, Trusted Networks and SMTP AUTH users: who may relay through postern and
//! where mail for the relay domains goes. A relay domain with credentials for its next hop
//! manages an `encrypt` row of TLS Policy Domains (its password never crosses in plaintext);
//! passwords are write-only everywhere ("leave blank to keep"). The same
//! `admin::sections` functions as the API.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::sections::{ListChange, change_list};
use crate::admin::{AdminState, ApiError, apply_settings};
use crate::settings::{Apply, AuthUserDoc, RelayAuth, RelayDomain, Secret};

struct Row {
    domain: String,
    next_hop: String,
    auth_user: Option<String>,
    client_certificate: String,
    recipients: String,
}

/// The relay domain form as typed (never a password: it is write-only).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DomainForm {
    #[serde(default)]
    original: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    auth_username: String,
    #[serde(default, skip_serializing)]
    auth_password: String,
    #[serde(default)]
    client_certificate: String,
    #[serde(default)]
    verify_recipients: Option<String>,
    #[serde(default)]
    recipients: String,
}

#[derive(Debug, Default)]
struct DomainErrors {
    domain: Option<String>,
    transport: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<String>,
    client_certificate: Option<String>,
    recipients: Option<String>,
}

struct User {
    name: String,
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    chrome: Chrome,
    notice: Option<String>,
    /// After saving credentials: the managed row, linked.
    managed_row: Option<String>,
    error: Option<String>,
    rows: Vec<Row>,
    editing: bool,
    form: DomainForm,
    errors: DomainErrors,
    has_password: bool,
    confirm_delete: Option<String>,
    /// The domain waiting for its delete has credentials: its managed row goes with it.
    delete_drops_row: bool,
    /// The SMTP AUTH user waiting for its delete.
    confirm_user_delete: Option<String>,
    certificates: Vec<String>,
    networks: String,
    networks_error: Option<String>,
    users: Vec<User>,
    user_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RelayQuery {
    #[serde(default)]
    edit: Option<String>,
    #[serde(default)]
    delete: Option<String>,
    #[serde(default)]
    delete_user: Option<String>,
    #[serde(default)]
    saved: Option<String>,
}

fn rows(domains: &[RelayDomain]) -> Vec<Row> {
    domains
        .iter()
        .map(|d| Row {
            domain: d.domain.clone(),
            next_hop: d
                .transport
                .clone()
                .unwrap_or_else(|| "MX of the recipient domain".into()),
            // The user name only: the password is write-only everywhere.
            auth_user: d.auth.as_ref().map(|a| a.username.clone()),
            client_certificate: d.client_certificate.clone().unwrap_or_default(),
            recipients: match (&d.recipients, d.verify_recipients) {
                (Some(list), _) => format!("{} listed", list.len()),
                (None, true) => "verified at the next hop".into(),
                (None, false) => "any".into(),
            },
        })
        .collect()
}

fn form_of(d: &RelayDomain) -> DomainForm {
    DomainForm {
        original: d.domain.clone(),
        domain: d.domain.clone(),
        transport: d.transport.clone().unwrap_or_default(),
        auth_username: d
            .auth
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_default(),
        client_certificate: d.client_certificate.clone().unwrap_or_default(),
        verify_recipients: d.verify_recipients.then(|| "on".into()),
        recipients: d.recipients.as_deref().unwrap_or_default().join("\n"),
        ..DomainForm::default()
    }
}

async fn base(state: &AdminState, session: &Session, auth: &SignedIn) -> RelayPage {
    let snapshot = state.settings.current();
    let s = &snapshot.settings;
    let certificates = crate::admin::certs::listed(state)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.system)
        .map(|c| c.name)
        .collect();
    RelayPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        managed_row: None,
        error: None,
        rows: rows(&s.relay_domains),
        editing: false,
        form: DomainForm::default(),
        errors: DomainErrors::default(),
        has_password: false,
        confirm_delete: None,
        delete_drops_row: false,
        confirm_user_delete: None,
        certificates,
        networks: s
            .trusted_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        networks_error: None,
        users: s
            .smtp_auth_users
            .iter()
            .map(|u| User {
                name: u.username.clone(),
            })
            .collect(),
        user_error: None,
    }
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<RelayQuery>,
) -> Response {
    let mut page = base(&state, &session, &auth).await;
    let snapshot = state.settings.current();
    let find = |d: &Option<String>| {
        d.as_ref().and_then(|d| {
            snapshot
                .settings
                .relay_domains
                .iter()
                .find(|r| r.domain.eq_ignore_ascii_case(d))
        })
    };
    if let Some(d) = find(&q.edit) {
        page.editing = true;
        page.has_password = d.auth.is_some();
        page.form = form_of(d);
    }
    page.confirm_delete = find(&q.delete).map(|d| d.domain.clone());
    page.delete_drops_row = find(&q.delete).is_some_and(|d| d.auth.is_some());
    // Delete asks first for a user too: clients signing in as it lose relaying.
    if let Some(name) = &q.delete_user {
        match snapshot
            .settings
            .smtp_auth_users
            .iter()
            .find(|u| &u.username == name)
        {
            Some(u) => page.confirm_user_delete = Some(u.username.clone()),
            None => page.user_error = Some(format!("No SMTP AUTH user {name:?} to delete.")),
        }
    }
    // Saved with credentials: the row it manages, to follow.
    page.managed_row = find(&q.saved)
        .filter(|d| d.auth.is_some())
        .map(|d| d.domain.clone());
    render(page)
}

/// The form read into a relay domain; the password only when typed.
fn domain_of(f: &DomainForm) -> RelayDomain {
    let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let recipients: Vec<String> = f
        .recipients
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    RelayDomain {
        domain: f.domain.trim().to_string(),
        transport: given(&f.transport),
        auth: given(&f.auth_username).map(|username| RelayAuth {
            username,
            password: given(&f.auth_password).map(Secret::new),
        }),
        client_certificate: given(&f.client_certificate),
        recipients: (!recipients.is_empty()).then_some(recipients),
        verify_recipients: f.verify_recipients.is_some(),
    }
}

/// The validator's message under its field (`relay_domains[2].auth.password` → password).
fn place(e: &ApiError, errors: &mut DomainErrors) -> Option<String> {
    let field = e.field.as_deref().unwrap_or("");
    let text = e.message().to_string();
    let leaf = field.split_once("].").map_or("", |(_, f)| f);
    let slot = match leaf.split('[').next().unwrap_or("") {
        "domain" => &mut errors.domain,
        "transport" => &mut errors.transport,
        "auth.username" => &mut errors.auth_username,
        "auth.password" => &mut errors.auth_password,
        "client_certificate" => &mut errors.client_certificate,
        "recipients" => &mut errors.recipients,
        _ => return Some(format!("Not saved: {}", e.words())),
    };
    *slot = Some(text);
    Some("Not saved: see the message under the field.".into())
}

pub async fn save(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<DomainForm>,
) -> Response {
    let item = domain_of(&form);
    let change = if form.original.is_empty() {
        ListChange::Add(item)
    } else {
        ListChange::Replace {
            key: form.original.clone(),
            item,
        }
    };
    match change_list(&state, auth.actor(), change).await {
        Ok(_) => {
            let domain = form.domain.trim().to_ascii_lowercase();
            let _ = session
                .insert("notice", format!("Saved {domain} and applied."))
                .await;
            let saved = form_urlencoded::Serializer::new(String::new())
                .append_pair("saved", &domain)
                .finish();
            Redirect::to(&format!("/relay?{saved}#top")).into_response()
        }
        Err(e) => {
            let mut page = base(&state, &session, &auth).await;
            page.error = place(&e, &mut page.errors);
            page.editing = !form.original.is_empty();
            page.has_password = page.editing && !form.auth_username.trim().is_empty();
            // Never sent back: a password typed is not put in the page again.
            page.form = DomainForm {
                auth_password: String::new(),
                ..form
            };
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    key: String,
}

pub async fn delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<KeyForm>,
) -> Response {
    let change = ListChange::<RelayDomain>::Delete(form.key.clone());
    done_or_error(
        &state,
        &session,
        &auth,
        change,
        format!("Deleted {}.", form.key),
    )
    .await
}

/// A change from a small form: back to the page with a notice, or the page with the error.
async fn done_or_error<T: crate::admin::sections::Section>(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    change: ListChange<T>,
    notice: String,
) -> Response {
    match change_list(state, auth.actor(), change).await {
        Ok(_) => {
            let _ = session.insert("notice", notice).await;
            Redirect::to("/relay#top").into_response()
        }
        Err(e) => {
            let mut page = base(state, session, auth).await;
            if T::WHAT == "SMTP AUTH user" {
                page.user_error = Some(e.words());
                page.error = Some("Not saved: see the message under SMTP AUTH users.".into());
            } else {
                page.error = Some(format!("Not saved: {}", e.words()));
            }
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NetworksForm {
    #[serde(default)]
    networks: String,
}

/// One CIDR block per line; a bad one is named by its line.
pub async fn networks(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<NetworksForm>,
) -> Response {
    let lines: Vec<(usize, String)> = form
        .networks
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let list: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
    let result = apply_settings(&state, auth.actor(), Apply::Yes, move |current| {
        let mut doc = current.to_doc();
        doc.trusted_networks = list;
        Ok(doc)
    })
    .await;
    match result {
        Ok(_) => {
            let _ = session
                .insert("notice", "Trusted networks saved and applied.")
                .await;
            Redirect::to("/relay#top").into_response()
        }
        Err(e) => {
            let mut page = base(&state, &session, &auth).await;
            let index = e
                .field
                .as_deref()
                .and_then(|f| f.strip_prefix("trusted_networks["))
                .and_then(|f| f.split(']').next())
                .and_then(|i| i.parse::<usize>().ok());
            let text = e.message();
            page.networks_error = Some(match index.and_then(|i| lines.get(i)) {
                Some((n, _)) => format!("line {n}: {text}"),
                None => text.to_string(),
            });
            page.networks = form.networks;
            page.error = Some("Not saved: see the message under Trusted networks.".into());
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// `add`, `reset` or `delete`.
    #[serde(default)]
    action: String,
}

pub async fn user(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<UserForm>,
) -> Response {
    let name = form.username.trim().to_string();
    let doc = AuthUserDoc {
        username: name.clone(),
        password: Some(form.password.clone()).filter(|p| !p.is_empty()),
    };
    if form.action == "reset" && form.password.is_empty() {
        // A reset without a password would keep the old one: say so rather than "set".
        let mut page = base(&state, &session, &auth).await;
        page.user_error = Some(format!("{name}: type the new password to set it"));
        return (StatusCode::BAD_REQUEST, render(page)).into_response();
    }
    let (change, notice) = match form.action.as_str() {
        "reset" => (
            ListChange::Replace {
                key: name.clone(),
                item: doc,
            },
            format!("New password set for {name}."),
        ),
        "delete" => (ListChange::Delete(name.clone()), format!("Deleted {name}.")),
        _ => (ListChange::Add(doc), format!("Added {name}.")),
    };
    done_or_error(&state, &session, &auth, change, notice).await
}
