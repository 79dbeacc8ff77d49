//! The confirmation of a rule for every recipient: before it is saved, what it reaches in
//! the delivery records of the last 30 days (the recipient domains of its direction, and
//! those of them that took mail without TLS, which a `Require` rule would stop).

use askama::Template;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::super::{Chrome, SignedIn, chrome, render};
use super::{RuleForm, RuleView, view};
use crate::admin::AdminState;
use crate::admin::reach::{Reach, every_recipient};
use crate::settings::{Direction, MessageRule, RuleTls};

#[derive(Template)]
#[template(path = "rules_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    rule: RuleView,
    /// The form as typed, sent again with the confirmation.
    form: RuleForm,
    editing: bool,
    /// Whom it applies to: "outbound recipient", ...
    whom: &'static str,
    /// The domains counted: "outbound recipient domain(s)", ...
    domains: &'static str,
    require: bool,
    reach: Reach,
    /// Why there are no figures, when counting failed.
    reach_error: Option<String>,
}

/// Ask: the page with the figures and the form to confirm.
pub(super) async fn ask(
    state: &AdminState,
    session: &Session,
    auth: &SignedIn,
    form: RuleForm,
    rule: &MessageRule,
) -> Response {
    let (reach, reach_error) = match every_recipient(state, rule.direction).await {
        Ok(r) => (r, None),
        Err(e) => (Reach::default(), Some(e.error)),
    };
    let page = ConfirmPage {
        chrome: chrome(state, session, Some(auth)).await,
        rule: view(rule, 0, 1),
        editing: !form.original.is_empty(),
        form,
        whom: match rule.direction {
            Direction::Outbound => "outbound recipient",
            Direction::Inbound => "recipient in our relay domains",
            Direction::Any => "recipient",
        },
        domains: match rule.direction {
            Direction::Outbound => "outbound recipient domain(s)",
            Direction::Inbound => "relay domain(s)",
            Direction::Any => "recipient domain(s)",
        },
        require: rule.tls_level == RuleTls::Require,
        reach,
        reach_error,
    };
    render(page).into_response()
}
