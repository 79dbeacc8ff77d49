//! Audit: every change, newest first, who (user or api), when, the sections that changed and
//! each field before and after; "Restore this version" after a confirmation, itself recorded
//! as a change. The same `admin::audit` functions as the API.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, check_csrf, chrome, render};
use crate::admin::AdminState;
use crate::admin::audit::{LISTED, Version, restore_version, versions};

struct Entry {
    version: u64,
    when: String,
    actor: String,
    sections: String,
    fields: Vec<(String, String, String)>,
    /// The newest version is the one in force: nothing to restore.
    current: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    entries: Vec<Entry>,
    confirm: Option<Entry>,
}

fn entry(v: Version, current: bool) -> Entry {
    let sections: Vec<String> = v.changes.iter().map(ToString::to_string).collect();
    let absent = || "(none)".to_string();
    Entry {
        version: v.version,
        when: super::queue::when(v.unix_time),
        actor: v.actor,
        sections: if sections.is_empty() {
            "first version".into()
        } else {
            sections.join("; ")
        },
        fields: v
            .fields
            .into_iter()
            .map(|f| {
                (
                    f.path,
                    f.before.unwrap_or_else(absent),
                    f.after.unwrap_or_else(absent),
                )
            })
            .collect(),
        current,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Ask to restore this version (the confirmation).
    #[serde(default)]
    restore: Option<u64>,
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let (entries, error) = match versions(&state, LISTED).await {
        Ok(list) => (list, None),
        Err(e) => (Vec::new(), Some(e.error)),
    };
    let newest = entries.first().map(|v| v.version);
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .map(|v| {
            let current = Some(v.version) == newest;
            entry(v, current)
        })
        .collect();
    let confirm = q
        .restore
        .and_then(|n| entries.iter().position(|e| e.version == n && !e.current))
        .map(|i| entries.remove(i));
    render(AuditPage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        error,
        entries,
        confirm,
    })
}

#[derive(Debug, Deserialize)]
pub struct RestoreForm {
    #[serde(default)]
    csrf: String,
    version: u64,
}

pub async fn restore(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RestoreForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let actor = auth.actor();
    match restore_version(&state, form.version, actor).await {
        Ok(snapshot) => {
            let notice = format!(
                "Restored version {} and applied (now version {}).",
                form.version, snapshot.version
            );
            let _ = session.insert("notice", notice).await;
            Redirect::to("/audit").into_response()
        }
        Err(e) => {
            let mut page = AuditPage {
                chrome: chrome(&state, &session, Some(&auth)).await,
                notice: None,
                error: Some(format!("Not restored: {}", e.error)),
                entries: Vec::new(),
                confirm: None,
            };
            if let Ok(list) = versions(&state, LISTED).await {
                let newest = list.first().map(|v| v.version);
                page.entries = list
                    .into_iter()
                    .map(|v| {
                        let current = Some(v.version) == newest;
                        entry(v, current)
                    })
                    .collect();
            }
            (StatusCode::CONFLICT, render(page)).into_response()
        }
    }
}
