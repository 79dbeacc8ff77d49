//! SMTP TLS Settings (Hermes' page): two cards, each a form that saves only what it owns
//! through the same change path as the API. The inbound card holds the inbound STARTTLS mode
//! and the certificate SMTP serves, and Hermes' binding rules (a blank certificate while
//! Opportunistic or Mandatory is refused there); the outbound card holds the outbound mode,
//! MTA-STS and DANE, and saves with no certificate imported. Turning outbound to Mandatory
//! asks first, with what it stops: the outbound domains that took mail without TLS in the
//! delivery records (`admin::reach`, as a rule for every recipient asks).

use askama::Template;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::reach::{Reach, every_recipient};
use crate::admin::{AdminState, ApiError, apply_settings};
use crate::levels::StsSwitch;
use crate::settings::{Apply, Direction, Settings, SettingsDoc, TlsMode};

/// The modes as the selects offer them: the form's value, and the words every page uses.
const MODES: [(&str, TlsMode); 3] = [
    ("disabled", TlsMode::Disabled),
    ("may", TlsMode::May),
    ("encrypt", TlsMode::Encrypt),
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
    shown: Shown,
    certificates: Vec<Choice>,
    /// The facts of the certificate named in the field, when it is one of the store's.
    bound: Option<Choice>,
    /// The same for the ECDSA certificate served beside it.
    bound_ec: Option<Choice>,
    /// Outbound Mandatory asked for and not yet confirmed: what it would stop.
    mandatory: Option<Mandatory>,
}

/// The question before outbound Mandatory: the reach, or why it could not be counted.
struct Mandatory {
    reach: Reach,
    error: Option<String>,
}

/// The inbound card's fields: absent when the form posted is the outbound card.
#[derive(Deserialize)]
pub struct TlsForm {
    #[serde(default)]
    inbound_mode: Option<String>,
    #[serde(default)]
    inbound_certificate: Option<String>,
    /// The ECDSA certificate beside it; absent (an older form): unchanged.
    #[serde(default)]
    inbound_ec_certificate: Option<String>,
    /// The outbound card's fields: absent when the form posted is the inbound card.
    #[serde(default)]
    outbound_mode: Option<String>,
    /// `enforce`, `monitor` or `off`; absent (an older form): unchanged.
    #[serde(default)]
    outbound_mta_sts: Option<String>,
    /// The DANE checkbox, read when the form has the MTA-STS field.
    #[serde(default)]
    outbound_dane: Option<String>,
    /// `yes` once the admin has seen what outbound Mandatory stops.
    #[serde(default)]
    confirmed: Option<String>,
}

fn parse_mode(s: &str) -> Option<TlsMode> {
    MODES.iter().find(|(v, _)| *v == s).map(|(_, m)| *m)
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

/// What the cards show: the settings in force, or what was typed into the card refused.
struct Shown {
    inbound_mode: String,
    inbound_certificate: String,
    inbound_ec_certificate: String,
    outbound_mode: String,
    mta_sts: String,
    dane: bool,
    /// Under the certificate field.
    certificate_error: Option<String>,
    /// Under the ECDSA certificate field.
    ec_certificate_error: Option<String>,
}

impl Shown {
    fn of(s: &Settings) -> Shown {
        Shown {
            inbound_mode: s.inbound.tls_mode.to_string(),
            inbound_certificate: s.inbound.certificate.clone().unwrap_or_default(),
            inbound_ec_certificate: s.inbound.ec_certificate.clone().unwrap_or_default(),
            outbound_mode: s.outbound.tls_mode.to_string(),
            mta_sts: s.outbound.mta_sts.to_string(),
            dane: s.outbound.dane,
            certificate_error: None,
            ec_certificate_error: None,
        }
    }
}

async fn show(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    (shown, notice, error): (Shown, Option<String>, Option<String>),
    status: StatusCode,
) -> Response {
    show_asking(state, session, auth, (shown, notice, error), (status, None)).await
}

async fn show_asking(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    (shown, notice, error): (Shown, Option<String>, Option<String>),
    (status, mandatory): (StatusCode, Option<Mandatory>),
) -> Response {
    let certificates = choices(state).await;
    let facts = |name: &str| {
        certificates
            .iter()
            .find(|c| c.name == name)
            .map(|c| Choice {
                name: c.name.clone(),
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.clone(),
                kind: c.kind.clone(),
            })
    };
    let bound = facts(&shown.inbound_certificate);
    let bound_ec = facts(&shown.inbound_ec_certificate);
    let page = TlsPage {
        chrome: chrome(state, session, Some(auth)).await,
        notice,
        error,
        modes: MODES.iter().map(|(v, m)| (*v, m.words())).collect(),
        shown,
        certificates,
        bound,
        bound_ec,
        mandatory,
    };
    (status, render(page)).into_response()
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let shown = Shown::of(&state.settings.current().settings);
    let notice = session.remove::<String>("notice").await.ok().flatten();
    show(
        &state,
        &session,
        &auth,
        (shown, notice, None),
        StatusCode::OK,
    )
    .await
}

/// What a card changes, read from the fields it posted.
struct Change {
    /// The inbound card: its mode, the certificate bound (`None`: nothing bound), and the
    /// ECDSA one beside it when the form has the field (blank: none).
    inbound: Option<(TlsMode, Option<String>, Option<String>)>,
    /// The outbound card: its mode, and MTA-STS with DANE when the form has them.
    outbound: Option<(TlsMode, Option<(StsSwitch, bool)>)>,
}

fn read(form: &TlsForm) -> Result<Change, String> {
    let mode = |m: &str| parse_mode(m).ok_or_else(|| format!("unknown TLS mode {m:?}"));
    let inbound = match form.inbound_mode.as_deref() {
        None => None,
        Some(m) => {
            let mode = mode(m)?;
            let certificate = form.inbound_certificate.as_deref().unwrap_or("").trim();
            // Blank while disabled: nothing bound. Blank otherwise is Hermes' error 1, said by
            // the same binding check as the API's.
            let binding = match (mode, certificate.is_empty()) {
                (TlsMode::Disabled, true) => None,
                _ => Some(certificate.to_string()),
            };
            let ec = form
                .inbound_ec_certificate
                .as_deref()
                .map(|c| c.trim().to_string());
            Some((mode, binding, ec))
        }
    };
    let outbound = match form.outbound_mode.as_deref() {
        None => None,
        Some(m) => {
            let published = match form.outbound_mta_sts.as_deref() {
                None => None,
                Some(s) => Some((s.parse::<StsSwitch>()?, form.outbound_dane.is_some())),
            };
            Some((mode(m)?, published))
        }
    };
    if inbound.is_none() && outbound.is_none() {
        return Err("the form names neither inbound_mode nor outbound_mode".into());
    }
    Ok(Change { inbound, outbound })
}

/// What the notice says was saved, and from when it applies.
fn saved(change: &Change) -> &'static str {
    match (change.inbound.is_some(), change.outbound.is_some()) {
        (true, false) => {
            "Saved and applied: inbound STARTTLS and its certificate, from the next SMTP session (sessions in flight keep theirs)."
        }
        (false, _) => {
            "Saved and applied: outbound STARTTLS, MTA-STS and DANE, from the next delivery attempt."
        }
        (true, true) => {
            "Saved and applied: the next SMTP session and delivery attempt use it; sessions in flight keep theirs."
        }
    }
}

/// `doc` with what a card changes.
fn edited(mut doc: SettingsDoc, change: Change) -> SettingsDoc {
    if let Some((mode, certificate, ec)) = change.inbound {
        doc.inbound.tls_mode = mode;
        doc.inbound.certificate = certificate;
        if let Some(ec) = ec {
            doc.inbound.ec_certificate = Some(ec).filter(|c| !c.is_empty());
        }
    }
    if let Some((mode, published)) = change.outbound {
        doc.outbound.tls_mode = mode;
        if let Some((mta_sts, dane)) = published {
            doc.outbound.mta_sts = mta_sts;
            doc.outbound.dane = dane;
        }
    }
    doc
}

pub async fn save(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
    Form(form): Form<TlsForm>,
) -> Response {
    let change = match read(&form) {
        Ok(change) => change,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let current = state.settings.current().settings.outbound.tls_mode;
    let to_mandatory = matches!(change.outbound, Some((TlsMode::Encrypt, _)));
    if to_mandatory && current != TlsMode::Encrypt && form.confirmed.as_deref() != Some("yes") {
        return ask_mandatory(&state, &session, &auth, &form).await;
    }
    let notice = saved(&change);
    let (inbound, outbound) = (change.inbound.clone(), change.outbound);
    let result = apply_settings(&state, auth.actor(), Apply::Yes, move |current| {
        Ok(edited(current.to_doc(), Change { inbound, outbound }))
    })
    .await;
    match result {
        Ok(_) => {
            let _ = session.insert("notice", notice).await;
            Redirect::to("/tls").into_response()
        }
        Err(e) => {
            // The card posted shows what was typed; the other one what is in force.
            let mut shown = Shown::of(&state.settings.current().settings);
            if let Some(mode) = form.inbound_mode {
                shown.inbound_mode = mode;
                let (certificate, ec) =
                    change.inbound.map(|(_, c, ec)| (c, ec)).unwrap_or_default();
                shown.inbound_certificate = certificate.unwrap_or_default();
                shown.inbound_ec_certificate = ec.unwrap_or_default();
            }
            if let Some(mode) = form.outbound_mode {
                shown.outbound_mode = mode;
                shown.mta_sts = form.outbound_mta_sts.unwrap_or(shown.mta_sts);
                shown.dane = form.outbound_dane.is_some();
            }
            let (error, under) = field_message(&e);
            match e.field.as_deref() {
                Some("inbound.ec_certificate") => shown.ec_certificate_error = under,
                _ => shown.certificate_error = under,
            }
            let page = (shown, None, error);
            show(&state, &session, &auth, page, StatusCode::BAD_REQUEST).await
        }
    }
}

/// Outbound Mandatory stops mail to every server without STARTTLS: the page says how much of
/// the last days' mail that was before anything changes, and asks again.
async fn ask_mandatory(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    form: &TlsForm,
) -> Response {
    let (reach, error) = match every_recipient(state, Direction::Outbound).await {
        Ok(r) => (r, None),
        Err(e) => (Reach::default(), Some(e.error)),
    };
    let mut shown = Shown::of(&state.settings.current().settings);
    shown.outbound_mode = "encrypt".into();
    shown.mta_sts = form.outbound_mta_sts.clone().unwrap_or(shown.mta_sts);
    shown.dane = form.outbound_dane.is_some();
    let page = (shown, None, None);
    let asking = (StatusCode::OK, Some(Mandatory { reach, error }));
    show_asking(state, session, auth, page, asking).await
}

/// The message under the certificate field when it concerns it, else at the top.
fn field_message(e: &ApiError) -> (Option<String>, Option<String>) {
    match e.field.as_deref() {
        Some(field @ ("inbound.certificate" | "inbound.ec_certificate")) => {
            let text = e.message();
            let which = match field {
                "inbound.certificate" => "certificate",
                _ => "ECDSA certificate",
            };
            // On a phone the field is below the fold: say at the top that nothing was saved.
            let summary = format!("Not saved: see the message under the {which} field.");
            (Some(summary), Some(text.to_string()))
        }
        _ => (Some(format!("Not saved: {}", e.words())), None),
    }
}
