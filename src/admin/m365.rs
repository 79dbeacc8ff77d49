//! The Microsoft 365 checklist (`GET /api/v1/m365/checklist`, and the Microsoft 365 page):
//! the Exchange Online PowerShell for both connectors, filled in with this gateway's values,
//! and a status beside each step postern can check itself.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AdminState;

#[derive(Debug, Serialize)]
pub struct Step {
    pub title: String,
    /// What to run or do; PowerShell where Exchange Online is concerned.
    pub command: Option<String>,
    pub explanation: String,
    /// `ok`, `missing` or `unknown` (postern cannot see it), and what was seen.
    pub status: &'static str,
    pub seen: String,
}

#[derive(Debug, Serialize)]
pub struct Checklist {
    pub hostname: String,
    pub steps: Vec<Step>,
}

/// The one checklist of the API and the page.
pub(crate) async fn checklist(state: &AdminState) -> Checklist {
    let snapshot = state.settings.current();
    let s = &snapshot.settings;
    let host = state.pages.hostname.clone();
    let list = crate::admin::certs::listed(state).await.unwrap_or_default();
    let bound = s
        .inbound
        .certificate
        .as_ref()
        .and_then(|n| list.iter().find(|c| &c.name == n));
    let cert_status = match bound {
        Some(c) if c.days_left > 0 && c.facts.sans.iter().any(|n| names_host(n, &host)) => (
            "ok",
            format!("{} is bound, valid for {host}, {} days left", c.name, c.days_left),
        ),
        Some(c) if c.days_left <= 0 => ("missing", format!("{} has expired", c.name)),
        Some(c) => (
            "missing",
            format!("{} does not name {host} (it names {})", c.name, c.facts.sans.join(", ")),
        ),
        None => ("missing", "no certificate bound to SMTP: STARTTLS serves the system self-signed one, which Exchange Online refuses".into()),
    };
    let tenant_transport = s.relay_domains.iter().find(|d| {
        d.transport.as_deref().is_some_and(|t| {
            t.to_ascii_lowercase()
                .contains(".mail.protection.outlook.com")
        })
    });
    let client_cert = tenant_transport.and_then(|d| d.client_certificate.clone());
    let sender_name = client_cert
        .as_ref()
        .and_then(|n| list.iter().find(|c| &c.name == n))
        .and_then(|c| c.facts.sans.first().cloned())
        .unwrap_or_else(|| host.clone());
    let seen = connector_seen(state).await;
    let names = s.m365.certificate_names.join(", ");
    let steps = vec![
        Step {
            title: "A certificate for this gateway's name, bound to SMTP".into(),
            command: Some(format!("postern cert import --name {host} --cert {host}.crt --key {host}.key --chain chain.pem")),
            explanation: format!("Exchange Online's outbound connector checks that the smart host's certificate is valid for {host} (DomainValidation). Bind it on SMTP TLS Settings."),
            status: cert_status.0,
            seen: cert_status.1,
        },
        Step {
            title: "Exchange Online: the outbound connector to this gateway".into(),
            command: Some(format!(
                "New-OutboundConnector -Name \"postern {host}\" -ConnectorType Partner -RecipientDomains \"*\" -UseMXRecord $false -SmartHosts \"{host}\" -TlsSettings DomainValidation -TlsDomain \"{host}\""
            )),
            explanation: format!("Exchange Online then presents its certificate ({names}) at STARTTLS; postern lets it relay only the tenants below."),
            status: if !s.m365.enabled {
                "missing"
            } else if seen.is_some() {
                "ok"
            } else {
                "unknown"
            },
            seen: match (&seen, s.m365.enabled) {
                (_, false) => "the connector profile is off (Enabled, below)".into(),
                (Some(t), true) => format!("the connector relayed mail in the last 24 hours (tenant {t})"),
                (None, true) => "no mail from the connector in the last 24 hours".into(),
            },
        },
        Step {
            title: "The tenants whose mail may relay".into(),
            command: Some("Get-OrganizationConfig | Format-List Guid".into()),
            explanation: "The tenant ID (the organisation's Guid) goes in Allowed tenant IDs below; mail naming any other tenant is refused with 550 5.7.1.".into(),
            status: if s.m365.tenants.is_empty() { "missing" } else { "ok" },
            seen: if s.m365.tenants.is_empty() {
                "none set".into()
            } else {
                s.m365.tenants.join(", ")
            },
        },
        Step {
            title: "Inbound mail to the tenant, with this gateway's client certificate".into(),
            command: Some(format!(
                "New-InboundConnector -Name \"postern {host}\" -ConnectorType Partner -SenderDomains \"*\" -RequireTls $true -RestrictDomainsToCertificate $true -TlsSenderCertificateName \"{sender_name}\""
            )),
            explanation: "On Relay Domains, the organisation's domains go to <tenant>.mail.protection.outlook.com (level verify by default) and present the gateway's certificate, which the inbound connector recognises by name.".into(),
            status: match (tenant_transport, &client_cert) {
                (Some(_), Some(_)) => "ok",
                _ => "missing",
            },
            seen: match (tenant_transport, &client_cert) {
                (Some(d), Some(c)) => format!("{} goes to {} presenting {c}", d.domain, d.transport.as_deref().unwrap_or("")),
                (Some(d), None) => format!("{} goes to its tenant without a client certificate", d.domain),
                (None, _) => "no relay domain goes to *.mail.protection.outlook.com".into(),
            },
        },
        Step {
            title: "Enhanced Filtering for the inbound connector".into(),
            command: Some(format!("Set-InboundConnector -Identity \"postern {host}\" -EFSkipLastIP $true")),
            explanation: "Mail from the Internet reaches the tenant through this gateway: without Enhanced Filtering for Connectors, Exchange Online Protection sees every message as coming from the gateway's address and judges SPF and reputation on it.".into(),
            status: "unknown",
            seen: "set in Exchange Online; postern cannot see it".into(),
        },
    ];
    Checklist {
        hostname: host,
        steps,
    }
}

/// Whether the certificate name `n` covers `host` (a `*.` wildcard covers one label).
fn names_host(n: &str, host: &str) -> bool {
    let (n, host) = (n.to_ascii_lowercase(), host.to_ascii_lowercase());
    match n.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(_, rest)| rest == parent),
        None => n == host,
    }
}

/// A tenant the connector relayed for in the last 24 hours, from the delivery records.
async fn connector_seen(state: &AdminState) -> Option<String> {
    let store = state.engine.as_ref()?.events().store()?;
    let since = crate::fsutil::unix_now().saturating_sub(86_400);
    tokio::task::spawn_blocking(move || {
        store
            .search(&crate::events::store::Search {
                from_tenant: true,
                since: Some(since),
                limit: 1,
                ..Default::default()
            })
            .ok()?
            .records
            .into_iter()
            .next()?
            .record
            .tenant
    })
    .await
    .ok()
    .flatten()
}

pub async fn show(State(state): State<AdminState>) -> Json<Checklist> {
    Json(checklist(&state).await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcards_cover_one_label() {
        assert!(super::names_host("*.example.net", "mx.example.net"));
        assert!(!super::names_host("*.example.net", "a.mx.example.net"));
        assert!(super::names_host("MX.example.net", "mx.example.net"));
    }
}
