//! The explain of inbound TLS rows (`GET /api/v1/policy/explain?inbound=SENDER&client=IP`,
//! `postern policy explain --inbound`, the admin page's Explain): which rows name a sender
//! and a client, which decides, and what a session must have by MAIL FROM, from the same
//! `policy::inbound::decide_inbound` the SMTP session asks, on the settings in force. The
//! rows themselves are edited through the generic list routes (`/api/v1/inbound-tls`).

use std::net::IpAddr;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::policy::inbound::{InboundDecision, decide_inbound};
use crate::settings::{Settings, TlsMode, is_domain_name};

/// The explain's answer: the decision (with its lines), and the inbound settings it meets.
#[derive(Debug, Clone, Serialize)]
pub struct InboundExplain {
    #[serde(flatten)]
    pub decision: InboundDecision,
    /// Inbound STARTTLS: what every client gets before any row.
    pub tls_mode: TlsMode,
    /// The code a row's refusal answers with.
    pub plaintext_reject_code: u16,
}

/// The query of an inbound explain.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InboundQuery {
    /// The envelope sender: an address or a domain; empty or `<>`: the null sender.
    pub inbound: Option<String>,
    /// The client's IP address.
    pub client: Option<String>,
}

/// The explain of `query` on the settings in force now; the bad field named otherwise.
pub fn explain_inbound(
    state: &AdminState,
    query: &InboundQuery,
) -> Result<InboundExplain, ApiError> {
    let sender = sender_of(query.inbound.as_deref().unwrap_or(""))?;
    let client = client_of(query.client.as_deref())?;
    let snapshot = state.settings.current();
    Ok(explain_with(&snapshot.settings, sender.as_deref(), client))
}

/// The sender as given, `None` for the null sender; an address or a domain, else 400.
fn sender_of(raw: &str) -> Result<Option<String>, ApiError> {
    let s = raw.trim();
    if s.is_empty() || s == "<>" {
        return Ok(None);
    }
    let domain = s
        .trim_start_matches('<')
        .trim_end_matches('>')
        .rsplit_once('@')
        .map_or(s, |(_, d)| d)
        .trim_end_matches('.');
    if !is_domain_name(domain) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("inbound: {raw:?} is not a sender address or domain"),
            Some("inbound".into()),
        ));
    }
    Ok(Some(s.to_string()))
}

fn client_of(raw: Option<&str>) -> Result<IpAddr, ApiError> {
    let raw = raw.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "client: required for an inbound explain: the client's IP address (client rows name addresses and networks)",
            Some("client".into()),
        ));
    }
    raw.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("client: {raw:?} is not an IP address"),
                Some("client".into()),
            )
        })
}

/// The decision on `settings`, with what the inbound settings add to it in words.
pub fn explain_with(settings: &Settings, sender: Option<&str>, client: IpAddr) -> InboundExplain {
    let mut decision = decide_inbound(&settings.inbound_tls, sender, client);
    let inbound = &settings.inbound;
    let code = inbound.plaintext_reject_code;
    let any_row = decision.sender_row.is_some() || decision.client_row.is_some();
    let lines = &mut decision.explanation;
    match inbound.tls_mode {
        TlsMode::Encrypt => lines.push(format!(
            "inbound STARTTLS {}: every client must start TLS before MAIL (530 5.7.0), rows or not",
            inbound.tls_mode.words()
        )),
        TlsMode::Disabled if any_row => lines.push(format!(
            "inbound STARTTLS {}: STARTTLS is not offered, so this mail is always refused",
            inbound.tls_mode.words()
        )),
        _ => {}
    }
    if any_row {
        let class = if code >= 500 { 5 } else { 4 };
        lines.push(format!(
            "without TLS, MAIL FROM gets {code} {class}.7.1 Session encryption is required"
        ));
    }
    InboundExplain {
        decision,
        tls_mode: inbound.tls_mode,
        plaintext_reject_code: code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{InboundLevel, InboundTlsRow};

    #[test]
    fn the_explain_says_the_mode_and_the_refusal_it_leads_to() {
        let mut s = Settings {
            inbound_tls: vec![InboundTlsRow::new("partner.example", InboundLevel::Encrypt)],
            ..Settings::default()
        };
        s.inbound.plaintext_reject_code = 550;
        s.inbound.tls_mode = TlsMode::Disabled;
        let e = explain_with(&s, Some("a@partner.example"), "192.0.2.7".parse().unwrap());
        let lines = e.decision.explanation.join("\n");
        assert!(
            lines.contains("STARTTLS is not offered, so this mail is always refused"),
            "{lines}"
        );
        assert!(
            lines.ends_with("without TLS, MAIL FROM gets 550 5.7.1 Session encryption is required"),
            "{lines}"
        );
        let e = explain_with(&s, Some("a@other.example"), "192.0.2.7".parse().unwrap());
        assert!(!e.decision.explanation.join("\n").contains("refused"));
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(sender_of("<>").unwrap(), None);
        assert_eq!(
            sender_of("bad domain").unwrap_err().field.as_deref(),
            Some("inbound")
        );
        assert_eq!(
            client_of(None).unwrap_err().field.as_deref(),
            Some("client")
        );
        assert!(client_of(Some("[2001:db8::1]")).is_ok());
        assert!(client_of(Some("mx.example")).is_err());
    }
}
