//! Relay Domains, read-only for now: the domains postern relays for, where their mail goes,
//! and which need authentication (those manage a TLS policy row). Editing comes with the
//! relay page of part 2; until then `postern settings import` changes them.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use tower_sessions::Session;

use super::{Chrome, SignedIn, chrome, render};
use crate::admin::AdminState;

struct Row {
    domain: String,
    next_hop: String,
    auth_user: Option<String>,
    client_certificate: String,
    recipients: String,
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    chrome: Chrome,
    rows: Vec<Row>,
}

pub async fn page(
    State(state): State<AdminState>,
    session: Session,
    axum::Extension(auth): axum::Extension<SignedIn>,
) -> Response {
    let snapshot = state.settings.current();
    let rows = snapshot
        .settings
        .relay_domains
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
        .collect();
    render(RelayPage {
        chrome: chrome(&state, &session, Some(&auth)).await,
        rows,
    })
}
