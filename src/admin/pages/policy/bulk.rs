//! The Policy Domains page's bulk box (GlobalCerts'): many rows at one level in one change.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::super::{SignedIn, render};
use super::{ListQuery, page_for};
use crate::admin::policy::{RowChange, change_rows};
use crate::admin::{AdminState, ApiError};
use crate::levels::Level;
use crate::settings::{Apply, PolicyRow};

#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    entries: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    note: String,
}

/// GlobalCerts' box: one `domain`, `.domain` or `user@domain` per line, all at one level,
/// added in one change (all or nothing); a bad line is named by its number.
pub async fn bulk(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<BulkForm>,
) -> Response {
    let result = bulk_rows(&form);
    let result = match result {
        Ok((rows, lines)) => {
            let n = rows.len();
            // The document's rows are the stored ones, then the managed ones, then these.
            let current = state.settings.current();
            let before = current.settings.policy.len() + current.settings.managed_rows().len();
            change_rows(&state, auth.actor(), Apply::Yes, RowChange::Add(rows))
                .await
                .map(|_| n)
                .map_err(|e| bulk_error(&e, before, &lines))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => {
            let notice = format!("Added {n} rows and applied.");
            let _ = session.insert("notice", notice).await;
            Redirect::to("/policy#top").into_response()
        }
        Err(error) => {
            let mut page = page_for(&state, &session, &auth, &ListQuery::default()).await;
            page.bulk = form.entries;
            page.bulk_level = form.level;
            page.bulk_note = form.note;
            page.bulk_error = Some(error);
            page.error = Some("Nothing added: see the message under the box.".into());
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}

/// The rows of the box, and for each the line it came from (1-based).
fn bulk_rows(form: &BulkForm) -> Result<(Vec<PolicyRow>, Vec<usize>), String> {
    let level = form.level.parse::<Level>()?;
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in form.entries.lines().enumerate() {
        let entry = line.trim();
        if entry.is_empty() {
            continue;
        }
        let mut row = PolicyRow::new(entry, level);
        row.note = form.note.trim().to_string();
        rows.push(row);
        lines.push(n + 1);
    }
    if rows.is_empty() {
        return Err("required: one domain, .domain or user@domain per line".into());
    }
    Ok((rows, lines))
}

/// `policy[i]` of the new document is line `lines[i - before]` of the box.
fn bulk_error(e: &ApiError, before: usize, lines: &[usize]) -> String {
    let index = e
        .field
        .as_deref()
        .and_then(|f| f.strip_prefix("policy["))
        .and_then(|f| f.split(']').next())
        .and_then(|i| i.parse::<usize>().ok());
    let text = e.message();
    match index
        .and_then(|i| i.checked_sub(before))
        .and_then(|k| lines.get(k))
    {
        Some(line) => format!("line {line}: {text}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_error_names_the_line_of_the_box() {
        let form = BulkForm {
            entries: "a.example\n\n  not a domain!\n".into(),
            level: "encrypt".into(),
            note: String::new(),
        };
        let (rows, lines) = bulk_rows(&form).unwrap();
        assert_eq!(rows.len(), 2);
        let e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "policy[7].pattern: \"not a domain!\" is not a valid domain",
            Some("policy[7].pattern".into()),
        );
        assert_eq!(
            bulk_error(&e, 6, &lines),
            "line 3: \"not a domain!\" is not a valid domain"
        );
    }
}
