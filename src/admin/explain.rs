//! `GET /api/v1/policy/explain`: the outbound policy of a recipient (the same `decide()`
//! delivery asks) or, with `inbound` and `client`, the inbound TLS rows that hold for a
//! sender and a client (the same `decide_inbound()` an SMTP session asks). The admin page's
//! Explain calls the same functions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{AdminState, ApiError, inbound_tls};

#[derive(Debug, serde::Deserialize)]
pub struct ExplainQuery {
    /// Outbound: the recipient (address or domain) whose TLS policy is explained.
    pub recipient: Option<String>,
    /// The `x-TLSLevel` value (or the whole header line) to assume on the message.
    pub header: Option<String>,
    /// The envelope sender to evaluate message rules with (default: none).
    pub sender: Option<String>,
    /// Inbound TLS rows: the envelope sender (address or domain; empty or `<>`: the null
    /// sender), with `client`.
    pub inbound: Option<String>,
    /// Inbound TLS rows: the client's IP address.
    pub client: Option<String>,
}

/// The same `decide()` that delivery uses, on the settings in force now; with `inbound`
/// and `client`, the same `decide_inbound()` an SMTP session asks at MAIL FROM.
pub(super) async fn explain(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<ExplainQuery>,
) -> Result<Response, ApiError> {
    let bad = |field: &str, text: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: {text}"),
            Some(field.into()),
        )
    };
    if q.inbound.is_some() || q.client.is_some() {
        if q.recipient.is_some() {
            return Err(bad(
                "recipient",
                "an explain is of a recipient (outbound) or of inbound and client (inbound TLS rows), not both",
            ));
        }
        let query = inbound_tls::InboundQuery {
            inbound: q.inbound,
            client: q.client,
        };
        let answer = inbound_tls::explain_inbound(&state, &query)?;
        return Ok(axum::Json(answer).into_response());
    }
    let Some(recipient) = q.recipient else {
        return Err(bad(
            "recipient",
            "required (or inbound and client, for inbound TLS rows)",
        ));
    };
    let header = q.header.unwrap_or_default();
    let sender = q.sender.unwrap_or_default();
    explain_decision(&state, &recipient, &header, &sender)
        .await
        .map(|d| axum::Json(d).into_response())
}

/// The one explain of the API and the page: `header` and `sender` may be empty. What the
/// recipient domain publishes (MTA-STS) is looked up as delivery would, through its cache.
pub(crate) async fn explain_decision(
    state: &AdminState,
    recipient: &str,
    header: &str,
    sender: &str,
) -> Result<crate::policy::Decision, ApiError> {
    let recipient = recipient.trim();
    if !recipient.contains('@') && !crate::settings::is_domain_name(recipient) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("recipient: {recipient:?} is not an address or domain"),
            Some("recipient".into()),
        ));
    }
    // `x-TLSLevel: Require` (folded or not) as well as the bare value.
    let header = (!header.trim().is_empty()).then(|| crate::policy::header_argument(header));
    let snapshot = state.settings.current();
    let rule = crate::policy::rule_for(&snapshot, sender, recipient);
    let domain = recipient
        .rsplit_once('@')
        .map_or(recipient, |(_, d)| d)
        .to_ascii_lowercase();
    let published = match &state.engine {
        Some(engine) => engine.published(&snapshot, &domain).await,
        None => crate::policy::Published::default(),
    };
    Ok(crate::policy::decide_published(
        &snapshot,
        recipient,
        header.as_deref(),
        rule.as_ref(),
        &published,
    ))
}
