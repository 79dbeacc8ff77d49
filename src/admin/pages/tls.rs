//! SMTP TLS Settings (Hermes' page): the inbound and outbound STARTTLS modes and the
//! certificate SMTP serves, saved through the same change path as the API.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, check_csrf, chrome, render};
use crate::admin::{AdminState, ApiError, apply_settings};
use crate::settings::{Apply, TlsMode};

const MODES: [(&str, &str); 3] = [
    ("disabled", "Disabled"),
    ("may", "Opportunistic"),
    ("encrypt", "Mandatory"),
];

/// A certificate as the picker offers it.
struct Choice {
    name: String,
    subject: String,
    issuer: String,
    serial: String,
    kind: String,
}

#[derive(Template)]
#[template(path = "tls.html")]
struct TlsPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    modes: Vec<(&'static str, &'static str)>,
    inbound_mode: String,
    inbound_certificate: String,
    certificate_error: Option<String>,
    certificates: Vec<Choice>,
    /// The facts of the certificate named in the field, when it is one of the store's.
    bound: Option<Choice>,
    outbound_mode: String,
    mta_sts: String,
    dane: bool,
}

#[derive(Deserialize)]
pub struct TlsForm {
    #[serde(default)]
    csrf: String,
    inbound_mode: String,
    #[serde(default)]
    inbound_certificate: String,
    outbound_mode: String,
    /// `enforce`, `monitor` or `off`; absent (an older form): unchanged.
    #[serde(default)]
    outbound_mta_sts: Option<String>,
    /// The DANE checkbox, read when the form has the MTA-STS field (it is one form).
    #[serde(default)]
    outbound_dane: Option<String>,
}

fn mode_name(m: TlsMode) -> String {
    m.to_string()
}

fn parse_mode(s: &str) -> Option<TlsMode> {
    match s {
        "disabled" => Some(TlsMode::Disabled),
        "may" => Some(TlsMode::May),
        "encrypt" => Some(TlsMode::Encrypt),
        _ => None,
    }
}

/// Every certificate SMTP may serve: all but the system one (Hermes' error 3).
async fn choices(state: &AdminState) -> Vec<Choice> {
    let list = crate::admin::certs::listed(state).await.unwrap_or_default();
    list.into_iter()
        .filter(|c| !c.system)
        .map(|c| Choice {
            name: c.name,
            subject: c.facts.subject,
            issuer: c.facts.issuer,
            serial: c.facts.serial,
            kind: format!("{:?}", c.kind),
        })
        .collect()
}

struct Shown {
    inbound_mode: String,
    inbound_certificate: String,
    outbound_mode: String,
    mta_sts: String,
    dane: bool,
    notice: Option<String>,
    error: Option<String>,
    certificate_error: Option<String>,
}

async fn show(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    shown: Shown,
    status: StatusCode,
) -> Response {
    let certificates = choices(state).await;
    let bound = certificates
        .iter()
        .find(|c| c.name == shown.inbound_certificate)
        .map(|c| Choice {
            name: c.name.clone(),
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial: c.serial.clone(),
            kind: c.kind.clone(),
        });
    let page = TlsPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice: shown.notice,
        error: shown.error,
        modes: MODES.to_vec(),
        inbound_mode: shown.inbound_mode,
        inbound_certificate: shown.inbound_certificate,
        certificate_error: shown.certificate_error,
        certificates,
        bound,
        outbound_mode: shown.outbound_mode,
        mta_sts: shown.mta_sts,
        dane: shown.dane,
    };
    (status, render(page)).into_response()
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let snapshot = state.settings.current();
    let s = &snapshot.settings;
    let shown = Shown {
        inbound_mode: mode_name(s.inbound.tls_mode),
        inbound_certificate: s.inbound.certificate.clone().unwrap_or_default(),
        outbound_mode: mode_name(s.outbound.tls_mode),
        mta_sts: s.outbound.mta_sts.to_string(),
        dane: s.outbound.dane,
        notice: session.remove::<String>("notice").await.ok().flatten(),
        error: None,
        certificate_error: None,
    };
    show(&state, &session, &auth, shown, StatusCode::OK).await
}

pub async fn save(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<TlsForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let (Some(inbound), Some(outbound)) = (
        parse_mode(&form.inbound_mode),
        parse_mode(&form.outbound_mode),
    ) else {
        return (StatusCode::BAD_REQUEST, "unknown TLS mode").into_response();
    };
    let published = match form.outbound_mta_sts.as_deref() {
        None => None,
        Some(m) => match m.parse::<crate::levels::StsSwitch>() {
            Ok(m) => Some((m, form.outbound_dane.is_some())),
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        },
    };
    let certificate = form.inbound_certificate.trim().to_string();
    // Blank while disabled: nothing bound. Blank otherwise is Hermes' error 1, said by the
    // same binding check as the API's.
    let binding = match (inbound, certificate.is_empty()) {
        (TlsMode::Disabled, true) => None,
        _ => Some(certificate.clone()),
    };
    let actor = auth.actor();
    let result = apply_settings(&state, actor, Apply::Yes, move |current| {
        let mut doc = current.to_doc();
        doc.inbound.tls_mode = inbound;
        doc.inbound.certificate = binding;
        doc.outbound.tls_mode = outbound;
        if let Some((mta_sts, dane)) = published {
            doc.outbound.mta_sts = mta_sts;
            doc.outbound.dane = dane;
        }
        Ok(doc)
    })
    .await;
    match result {
        Ok(_) => {
            let notice =
                "Saved and applied: the next SMTP session uses it; sessions in flight keep theirs.";
            let _ = session.insert("notice", notice).await;
            Redirect::to("/tls").into_response()
        }
        Err(e) => {
            let (error, certificate_error) = field_message(&e);
            let shown = Shown {
                inbound_mode: form.inbound_mode,
                inbound_certificate: certificate,
                outbound_mode: form.outbound_mode,
                mta_sts: form.outbound_mta_sts.unwrap_or_else(|| "enforce".into()),
                dane: form.outbound_dane.is_some(),
                notice: None,
                error,
                certificate_error,
            };
            show(&state, &session, &auth, shown, StatusCode::BAD_REQUEST).await
        }
    }
}

/// The message under the certificate field when it concerns it, else at the top.
fn field_message(e: &ApiError) -> (Option<String>, Option<String>) {
    match e.field.as_deref() {
        Some("inbound.certificate") => {
            let text = e.message();
            // On a phone the field is below the fold: say at the top that nothing was saved.
            let summary = "Not saved: see the message under the certificate field.";
            (Some(summary.to_string()), Some(text.to_string()))
        }
        _ => (Some(e.error.clone()), None),
    }
}
