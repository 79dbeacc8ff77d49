//! Microsoft 365: the connector's settings (tenants, certificate names, address ranges,
//! the X-OriginatorOrg fallback) and the setup checklist with this gateway's PowerShell.
//! Saved through the same change path as `PATCH /api/v1/settings` with `{"m365": ...}`.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::m365::{Checklist, checklist};
use crate::admin::{AdminState, ApiError, apply_settings};
use crate::settings::{Apply, M365Settings};

#[derive(Debug, Default, Clone, Deserialize)]
pub struct M365Form {
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    tenants: String,
    #[serde(default)]
    certificate_names: String,
    #[serde(default)]
    ranges: String,
    #[serde(default)]
    originator_domains: String,
}

#[derive(Debug, Default)]
struct Errors {
    tenants: Option<String>,
    certificate_names: Option<String>,
    ranges: Option<String>,
    originator_domains: Option<String>,
}

#[derive(Template)]
#[template(path = "m365.html")]
struct M365Page {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    form: M365Form,
    errors: Errors,
    checklist: Checklist,
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn form_of(m: &M365Settings) -> M365Form {
    M365Form {
        enabled: m.enabled.then(|| "on".into()),
        tenants: m.tenants.join("\n"),
        certificate_names: m.certificate_names.join("\n"),
        ranges: m.ranges.join("\n"),
        originator_domains: m.originator_domains.join("\n"),
    }
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let form = form_of(&state.settings.current().settings.m365);
    render(M365Page {
        chrome: chrome(&state, &session, Some(&auth)).await,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        error: None,
        form,
        errors: Errors::default(),
        checklist: checklist(&state).await,
    })
}

/// `m365.tenants[2]` under the tenants box, as `line N` of what was typed.
fn place(e: &ApiError, form: &M365Form, errors: &mut Errors) -> String {
    let field = e.field.as_deref().unwrap_or("");
    let text = e.message().to_string();
    let rest = field.strip_prefix("m365.").unwrap_or(field);
    let (name, index) = match rest.split_once('[') {
        Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
        None => (rest, None),
    };
    let (slot, typed) = match name {
        "tenants" => (&mut errors.tenants, &form.tenants),
        "certificate_names" => (&mut errors.certificate_names, &form.certificate_names),
        "ranges" => (&mut errors.ranges, &form.ranges),
        "originator_domains" => (&mut errors.originator_domains, &form.originator_domains),
        _ => return format!("Not saved: {}", e.words()),
    };
    // The index counts the non-blank lines; say the line as the admin sees it.
    let line = index.and_then(|i| {
        typed
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .nth(i)
            .map(|(n, _)| n + 1)
    });
    *slot = Some(match line {
        Some(n) => format!("line {n}: {text}"),
        None => text,
    });
    "Not saved: see the message under the field.".into()
}

pub async fn save(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<M365Form>,
) -> Response {
    let m365 = M365Settings {
        enabled: form.enabled.is_some(),
        tenants: lines(&form.tenants),
        certificate_names: lines(&form.certificate_names),
        ranges: lines(&form.ranges),
        originator_domains: lines(&form.originator_domains),
    };
    let actor = auth.actor();
    let result = apply_settings(&state, actor, Apply::Yes, move |current| {
        let mut doc = current.to_doc();
        doc.m365 = m365;
        Ok(doc)
    })
    .await;
    match result {
        Ok(_) => {
            let _ = session
                .insert(
                    "notice",
                    "Saved and applied: the next SMTP session uses it.",
                )
                .await;
            Redirect::to("/m365").into_response()
        }
        Err(e) => {
            let mut errors = Errors::default();
            let error = place(&e, &form, &mut errors);
            let page = M365Page {
                chrome: chrome(&state, &session, Some(&auth)).await,
                notice: None,
                error: Some(error),
                form,
                errors,
                checklist: checklist(&state).await,
            };
            (StatusCode::BAD_REQUEST, render(page)).into_response()
        }
    }
}
