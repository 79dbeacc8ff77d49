//! Audit: every change, newest first, who (user or api), when, the sections that changed,
//! each field before and after, and the certificates imported, renewed, deleted, bound or
//! unbound (subject, serial, SHA-256; never a key). "Restore this version" first shows what
//! the restore would change, bindings it undoes included; confirmed, it is itself recorded
//! as a change. The same `admin::audit` functions as the API.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::admin::audit::{LISTED, RestorePreview, Version, preview, restore_version, versions};
use crate::settings::FieldChange;
use crate::settings::certificates::{Binding, CertAction, CertChange};
use crate::settings::words::{field_words, section_title, value_words};

struct Entry {
    version: u64,
    when: String,
    actor: String,
    sections: String,
    fields: Vec<(String, String, String)>,
    certificates: Vec<CertLine>,
    /// The newest version is the one in force: nothing to restore.
    current: bool,
}

/// A certificate change in words, with what identifies the certificate.
struct CertLine {
    what: String,
    /// (subject, serial, SHA-256); `None` for a record stored before certificates were
    /// audited.
    id: Option<(String, String, String)>,
    /// A renewal: the serial and SHA-256 of the certificate it replaced.
    replaced: Option<(String, String)>,
}

/// The restore asked for, and what it would change.
struct Confirm {
    entry: Entry,
    against: u64,
    /// (field, in force now, after the restore).
    fields: Vec<(String, String, String)>,
    certificates: Vec<CertLine>,
    /// What the bindings it undoes leave behind, in words.
    consequences: Vec<String>,
    /// Certificates it binds that are gone, in words: the restore would be refused.
    missing: Vec<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    entries: Vec<Entry>,
    confirm: Option<Confirm>,
}

fn cert_line(c: CertChange) -> CertLine {
    let what = match (&c.action, &c.place) {
        (CertAction::Bound | CertAction::Unbound, Some(place)) => {
            format!("{} {} {place}", c.name, c.action)
        }
        _ => format!("{} {}", c.name, c.action),
    };
    CertLine {
        what,
        id: c.id.map(|i| (i.subject, i.serial, i.sha256)),
        replaced: c.replaced.map(|i| (i.serial, i.sha256)),
    }
}

/// (field, before, after) as the tables show them: the field by its form label, not its
/// settings path; `(none)` where a value is absent.
fn field_rows(fields: Vec<FieldChange>) -> Vec<(String, String, String)> {
    // The diff names list items by their key, not their index: no names to look up.
    let said = |path: &str, value: Option<String>| {
        value.map_or_else(|| "(none)".to_string(), |v| value_words(path, &v))
    };
    fields
        .into_iter()
        .map(|f| {
            (
                field_words(&f.path, &|_, _| None),
                said(&f.path, f.before),
                said(&f.path, f.after),
            )
        })
        .collect()
}

fn entry(v: Version, current: bool) -> Entry {
    let sections: Vec<String> = v
        .changes
        .iter()
        .map(|c| {
            let counts = c.to_string();
            let counts = counts.strip_prefix(c.section.as_str()).unwrap_or_default();
            format!("{}{counts}", section_title(&c.section))
        })
        .collect();
    let sections = match (v.first, sections.is_empty(), v.certificates.is_empty()) {
        (true, _, _) => "first version".to_string(),
        (false, true, false) => "a certificate change; the settings did not change".to_string(),
        (false, true, true) => "no change".to_string(),
        (false, false, _) => sections.join("; "),
    };
    Entry {
        version: v.version,
        when: super::queue::when(v.unix_time),
        actor: v.actor,
        sections,
        fields: field_rows(v.fields),
        certificates: v.certificates.into_iter().map(cert_line).collect(),
        current,
    }
}

/// What undoing a binding leaves: SMTP STARTTLS with nothing bound serves the default
/// certificate (the TLS page says the same under its field).
fn consequences(changes: &[CertChange]) -> Vec<String> {
    let place = Binding::Inbound.words();
    let smtp = |a: CertAction| {
        changes
            .iter()
            .any(|c| c.action == a && c.place.as_deref() == Some(place.as_str()))
    };
    let mut out = Vec::new();
    if smtp(CertAction::Unbound) && !smtp(CertAction::Bound) {
        out.push("After the restore no certificate is bound for SMTP STARTTLS: it serves the system self-signed certificate, which senders that verify will not trust.".to_string());
    }
    out
}

fn confirm(entry: Entry, p: RestorePreview) -> Confirm {
    Confirm {
        entry,
        against: p.against,
        consequences: consequences(&p.certificates),
        fields: field_rows(p.fields),
        certificates: p.certificates.into_iter().map(cert_line).collect(),
        missing: p
            .missing
            .into_iter()
            .map(|m| format!("{} (was bound to {})", m.name, m.place))
            .collect(),
    }
}

/// The listed versions as entries, the newest marked as in force.
async fn listed(state: &AdminState) -> (Vec<Entry>, Option<String>) {
    match versions(state, LISTED).await {
        Ok(list) => {
            let newest = list.first().map(|v| v.version);
            let entries = list
                .into_iter()
                .map(|v| {
                    let current = Some(v.version) == newest;
                    entry(v, current)
                })
                .collect();
            (entries, None)
        }
        Err(e) => (Vec::new(), Some(e.error)),
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
    let (mut entries, mut error) = listed(&state).await;
    let asked = q
        .restore
        .and_then(|n| entries.iter().position(|e| e.version == n && !e.current))
        .map(|i| entries.remove(i));
    let confirm = match asked {
        Some(e) => match preview(&state, e.version).await {
            Ok(p) => Some(confirm(e, p)),
            Err(why) => {
                error = Some(format!(
                    "Cannot show what the restore changes: {}",
                    why.error
                ));
                None
            }
        },
        None => None,
    };
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
    version: u64,
    /// The version in force when the confirmation was shown.
    #[serde(default)]
    against: Option<u64>,
}

pub async fn restore(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<RestoreForm>,
) -> Response {
    let actor = auth.actor();
    match restore_version(&state, form.version, actor, form.against).await {
        Ok(snapshot) => {
            let notice = format!(
                "Restored version {} and applied (now version {}).",
                form.version, snapshot.version
            );
            let _ = session.insert("notice", notice).await;
            Redirect::to("/audit").into_response()
        }
        Err(e) => {
            let (entries, _) = listed(&state).await;
            // A field of the settings at fault can only be a binding of a certificate deleted
            // since: said in words, without the settings path.
            let why = match e.field.as_deref() {
                Some(f) if f.ends_with("certificate") => format!(
                    "{} (this version binds a certificate that is no longer stored: import it again on System Certificates first)",
                    e.message()
                ),
                _ => e.words(),
            };
            let page = AuditPage {
                chrome: chrome(&state, &session, Some(&auth)).await,
                notice: None,
                error: Some(format!("Not restored: {why}")),
                entries,
                confirm: None,
            };
            (StatusCode::CONFLICT, render(page)).into_response()
        }
    }
}
