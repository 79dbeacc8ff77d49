//! System Certificates (Hermes' page): the list with where each is used, import with every
//! check of the certificate store shown under the field it concerns, delete asked first and
//! refused where bound (the confirmation names the bindings). The same `Certs` calls as
//! `/api/v1/certificates`.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;
use crate::certs::{CertError, ImportRequest, StoreOpError};
use crate::settings::Secret;
use crate::settings::certificates::Binding;

/// A row of the list.
struct Row {
    name: String,
    kind: String,
    system: bool,
    subject: String,
    issuer: String,
    serial: String,
    not_after: String,
    days_left: i64,
    /// `words::days_left`: "12 days", "more than 10 years", "no expiry".
    left: String,
    used_for: String,
}

/// Messages under the import form's fields.
#[derive(Default)]
struct FieldErrors {
    name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    chain: Option<String>,
    /// Under the ACME form's name field.
    acme: Option<String>,
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct CertificatesPage {
    chrome: Chrome,
    notice: Option<String>,
    warnings: Vec<String>,
    error: Option<String>,
    certificates: Vec<Row>,
    field_errors: FieldErrors,
    form_name: String,
    form_cert: String,
    form_chain: String,
    form_acme: String,
    /// A refused import of pasted PEM: the key field is empty, and says why.
    key_dropped: bool,
    acme_dir: String,
    confirm_delete: Option<ConfirmDelete>,
}

/// The delete waiting for its confirmation: the certificate and what uses it.
struct ConfirmDelete {
    name: String,
    subject: String,
    not_after: String,
    /// (what it is for, the page where another can be bound)
    bound: Vec<(String, Option<String>)>,
}

/// What the page shows besides the list.
#[derive(Default)]
struct Shown {
    notice: Option<String>,
    warnings: Vec<String>,
    error: Option<String>,
    field_errors: FieldErrors,
    form_name: String,
    form_cert: String,
    form_chain: String,
    form_acme: String,
    /// A refused import of pasted PEM: its key is not sent back, so the field is empty.
    key_dropped: bool,
    confirm_delete: Option<ConfirmDelete>,
}

async fn rows(state: &AdminState) -> Vec<Row> {
    let list = crate::admin::certs::listed(state).await.unwrap_or_default();
    list.into_iter()
        .map(|c| Row {
            kind: format!("{:?}", c.kind),
            system: c.system,
            subject: c.facts.subject,
            issuer: c.facts.issuer,
            serial: c.facts.serial,
            left: super::words::days_left(c.days_left, c.facts.not_after_unix),
            not_after: c.facts.not_after,
            days_left: c.days_left,
            used_for: c.used_for.join("; "),
            name: c.name,
        })
        .collect()
}

async fn show(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    shown: Shown,
    status: StatusCode,
) -> Response {
    let page = CertificatesPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice: shown.notice,
        warnings: shown.warnings,
        error: shown.error,
        certificates: rows(state).await,
        field_errors: shown.field_errors,
        form_name: shown.form_name,
        form_cert: shown.form_cert,
        form_chain: shown.form_chain,
        form_acme: shown.form_acme,
        key_dropped: shown.key_dropped,
        acme_dir: state.certs.acme_dir().display().to_string(),
        confirm_delete: shown.confirm_delete,
    };
    (status, render(page)).into_response()
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let shown = Shown {
        notice: session.remove::<String>("notice").await.ok().flatten(),
        warnings: session
            .remove::<Vec<String>>("warnings")
            .await
            .ok()
            .flatten()
            .unwrap_or_default(),
        ..Shown::default()
    };
    show(&state, &session, &auth, shown, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ImportForm {
    name: String,
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    chain: String,
    #[serde(default)]
    replace: Option<String>,
    /// The ACME form: read `<acme_live_dir>/<name>/` instead of pasted PEM.
    #[serde(default)]
    acme: Option<String>,
}

/// The store's request for what the form posted: PEM text, or the ACME form's name. The key
/// is taken out of the form, not copied: the request's `Secret` is its one holder.
fn request(form: &mut ImportForm) -> ImportRequest {
    let acme = form.acme.is_some();
    let key = std::mem::take(&mut form.key);
    let text = |t: &str| (!acme).then(|| t.to_string());
    ImportRequest {
        name: form.name.clone(),
        cert: text(&form.cert),
        key: (!acme).then(|| Secret::new(key)),
        chain: text(&form.chain).filter(|c| !c.trim().is_empty()),
        acme,
        replace: form.replace.is_some(),
    }
}

/// The form as typed, shown again with the refusal (never the key).
fn typed(form: ImportForm) -> Shown {
    if form.acme.is_some() {
        Shown {
            form_acme: form.name,
            ..Shown::default()
        }
    } else {
        Shown {
            form_name: form.name,
            form_cert: form.cert,
            form_chain: form.chain,
            key_dropped: true,
            ..Shown::default()
        }
    }
}

/// The notice after an import: what README promises the reply shows (names, Not After,
/// SHA-256 fingerprint); a renewal says so, and from when it is served.
fn imported(info: &crate::certs::CertInfo) -> String {
    let f = &info.facts;
    let facts = format!(
        "{}; names {}; valid until {}; SHA-256 {}",
        f.subject,
        if f.sans.is_empty() {
            "none".to_string()
        } else {
            f.sans.join(", ")
        },
        f.not_after,
        f.sha256
    );
    if info.renewed {
        format!(
            "Renewed {} ({facts}): served from the next handshake wherever it is bound.",
            info.name
        )
    } else {
        format!("Imported {} ({facts}).", info.name)
    }
}

pub async fn import(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(mut form): Form<ImportForm>,
) -> Response {
    let acme = form.acme.is_some();
    let req = request(&mut form);
    let actor = auth.actor();
    let result = crate::admin::certs::import_certificate(&state, req, &actor, &actor).await;
    let mut shown = typed(form);
    match result {
        Ok(Ok(info)) => {
            let _ = session.insert("notice", imported(&info)).await;
            let _ = session.insert("warnings", &info.warnings).await;
            Redirect::to("/certificates").into_response()
        }
        Ok(Err(CertError::Invalid { field, error })) => {
            let slot = match field.as_str() {
                // The ACME form has one field: every message about it goes there.
                _ if acme => &mut shown.field_errors.acme,
                "name" => &mut shown.field_errors.name,
                "cert" => &mut shown.field_errors.cert,
                "key" => &mut shown.field_errors.key,
                "chain" => &mut shown.field_errors.chain,
                _ => &mut shown.error,
            };
            *slot = Some(error);
            shown
                .error
                .get_or_insert_with(|| "Not imported: see the messages under the fields.".into());
            show(&state, &session, &auth, shown, StatusCode::BAD_REQUEST).await
        }
        Ok(Err(CertError::Store(e))) => {
            shown.error = Some(format!("Not imported: {}", store_words(e)));
            show(&state, &session, &auth, shown, StatusCode::CONFLICT).await
        }
        Err(e) => {
            shown.error = Some(format!("Not imported: {}", e.error));
            show(&state, &session, &auth, shown, e.status).await
        }
    }
}

/// The store's refusal as the page says it: what to do on this page, where the API's words
/// name a field of its request (`"replace": true`) and the CLI's its option (`--replace`).
fn store_words(e: StoreOpError) -> String {
    const REPLACE: &str = "“Replace the certificate of that name”";
    match e {
        StoreOpError::Exists(name) => format!(
            "a certificate named {name} exists: to renew it, tick {REPLACE} and import again"
        ),
        StoreOpError::NameTaken { name, existing } => format!(
            "a certificate named {existing} exists (names are unique without regard to case): choose another name than {name}, or name it {existing} and tick {REPLACE} to renew it"
        ),
        e => e.to_string(),
    }
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    name: String,
}

/// Delete asks first, and says what binds the certificate: bound, it cannot go, and the
/// confirmation says where to bind another instead of offering the delete.
pub async fn confirm_delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let listed = crate::admin::certs::listed(&state)
        .await
        .unwrap_or_default();
    let mut shown = Shown::default();
    match listed.into_iter().find(|c| c.name == q.name && !c.system) {
        Some(c) => {
            let settings = &state.settings.current().settings;
            let bound = crate::settings::certificates::bindings(settings, &c.name)
                .into_iter()
                .map(|b| {
                    let fix = match &b {
                        Binding::Inbound | Binding::InboundEc => Some("/tls".to_string()),
                        Binding::Admin | Binding::AdminEc => None,
                        Binding::RelayClient { domain, .. } => Some(format!(
                            "/relay?{}#domain-form",
                            form_urlencoded::Serializer::new(String::new())
                                .append_pair("edit", domain)
                                .finish()
                        )),
                    };
                    (b.words(), fix)
                })
                .collect();
            shown.confirm_delete = Some(ConfirmDelete {
                name: c.name,
                subject: c.facts.subject,
                not_after: c.facts.not_after,
                bound,
            });
        }
        None => shown.error = Some(format!("No certificate {:?} to delete.", q.name)),
    }
    show(&state, &session, &auth, shown, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct DeleteForm {
    name: String,
}

pub async fn delete(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let actor = auth.actor();
    let deleted =
        crate::admin::certs::delete_certificate(&state, form.name.clone(), &actor, &actor);
    match deleted.await {
        Ok(Ok(())) => {
            let _ = session
                .insert("notice", format!("Deleted {}.", form.name))
                .await;
            Redirect::to("/certificates").into_response()
        }
        Ok(Err(e)) => {
            let why = match e {
                CertError::Invalid { error, .. } => error,
                // Said by what the bindings are for, not by their settings paths.
                CertError::Store(StoreOpError::InUse { name, .. }) => {
                    let settings = &state.settings.current().settings;
                    let bound: Vec<String> =
                        crate::settings::certificates::bindings(settings, &name)
                            .iter()
                            .map(Binding::words)
                            .collect();
                    format!(
                        "{name} is in use ({}): bind another certificate there first",
                        bound.join("; ")
                    )
                }
                CertError::Store(e) => store_words(e),
            };
            let shown = Shown {
                error: Some(format!("Not deleted: {why}")),
                ..Shown::default()
            };
            show(&state, &session, &auth, shown, StatusCode::CONFLICT).await
        }
        Err(e) => e.into_page(),
    }
}
