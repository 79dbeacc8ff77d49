//! The Microsoft 365 checklist (`GET /api/v1/m365/checklist`, and the Microsoft 365 page):
//! the Exchange Online PowerShell for both connectors, filled in with this gateway's values,
//! and a status beside each step postern can check itself. The certificate step is done
//! only when Exchange Online would accept what STARTTLS serves: a certificate in date, for
//! this gateway's fully qualified name, chaining to the public trust roots (not `[tls]
//! extra_roots`); each of these that fails is said.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AdminState;
use crate::certs::CertInfo;
use crate::settings::{M365Settings, RelayDomain};

#[derive(Debug, Serialize)]
pub struct Step {
    pub title: String,
    /// What to run or do; PowerShell where Exchange Online is concerned.
    pub command: Option<String>,
    pub explanation: String,
    /// `ok`, `missing` or `unknown` (postern cannot see it), and what was seen.
    pub status: &'static str,
    pub seen: String,
    /// Each reason the step is not done, when there are several to fix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Stands in for the gateway's name in the PowerShell while `server.hostname` is not a
/// fully qualified name: Exchange Online refuses such a smart host, and a command that
/// names this is refused at once rather than making a connector that cannot work.
const FULL_NAME_WANTED: &str = "<this gateway's full host name>";

#[derive(Debug, Serialize)]
pub struct Checklist {
    pub hostname: String,
    pub steps: Vec<Step>,
}

/// The one checklist of the API and the page.
pub(crate) async fn checklist(state: &AdminState) -> Checklist {
    let snapshot = state.settings.current();
    let s = &snapshot.settings;
    let gateway = state.pages.hostname.clone();
    let list = crate::admin::certs::listed(state).await.unwrap_or_default();
    // Of a pair, Exchange Online offers ECDSA signatures and is served the ECDSA one.
    let served = (s.inbound.ec_certificate.as_deref()).or(s.inbound.certificate.as_deref());
    let bound = bound_certificate(state, served, &list).await;
    let cert_status = certificate_status(&gateway, bound);
    let host = if crate::next_hop::is_domain_name(&gateway) {
        gateway.clone()
    } else {
        FULL_NAME_WANTED.to_string()
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
    let steps = vec![
        certificate_step(&host, cert_status),
        outbound_connector_step(&host, &s.m365, seen),
        tenants_step(&s.m365.tenants),
        inbound_connector_step(
            &host,
            &sender_name,
            tenant_transport,
            client_cert.as_deref(),
        ),
        filtering_step(&host),
    ];
    Checklist {
        hostname: gateway,
        steps,
    }
}

/// Step 1: the certificate Exchange Online checks (DomainValidation).
fn certificate_step(
    host: &str,
    (status, seen, problems): (&'static str, String, Vec<String>),
) -> Step {
    Step {
        title: "A certificate for this gateway's name, bound to SMTP".into(),
        // Done on this page's neighbours, not on a command line (issue 28).
        command: None,
        explanation: format!(
            "Exchange Online's outbound connector checks that the smart host's certificate is valid for {} (DomainValidation) and issued by a public certificate authority. Import it on System Certificates, then pick it as the SMTP TLS certificate on SMTP TLS Settings.",
            if host == FULL_NAME_WANTED {
                "the gateway's full host name"
            } else {
                host
            }
        ),
        status,
        seen,
        problems,
    }
}

/// Step 2: the tenant's outbound connector, seen when its mail arrived lately.
fn outbound_connector_step(host: &str, m365: &M365Settings, seen: Option<String>) -> Step {
    let names = m365.certificate_names.join(", ");
    Step {
        title: "Exchange Online: the outbound connector to this gateway".into(),
        command: Some(format!(
            "New-OutboundConnector -Name \"postern {host}\" -ConnectorType Partner -RecipientDomains \"*\" -UseMXRecord $false -SmartHosts \"{host}\" -TlsSettings DomainValidation -TlsDomain \"{host}\""
        )),
        explanation: format!(
            "Exchange Online then presents its certificate ({names}) at STARTTLS; postern lets it relay only the tenants below."
        ),
        status: if !m365.enabled {
            "missing"
        } else if seen.is_some() {
            "ok"
        } else {
            "unknown"
        },
        problems: Vec::new(),
        seen: match (&seen, m365.enabled) {
            (_, false) => "the connector profile is off (Enabled, below)".into(),
            (Some(t), true) => {
                format!("the connector relayed mail in the last 24 hours (tenant {t})")
            }
            (None, true) => "no mail from the connector in the last 24 hours".into(),
        },
    }
}

/// Step 3: the tenants allowed to relay.
fn tenants_step(tenants: &[String]) -> Step {
    Step {
        title: "The tenants whose mail may relay".into(),
        command: Some("Get-OrganizationConfig | Format-List Guid".into()),
        explanation: "The tenant ID (the organisation's Guid) goes in Allowed tenant IDs below; mail naming any other tenant is refused with 550 5.7.1.".into(),
        problems: Vec::new(),
        status: if tenants.is_empty() { "missing" } else { "ok" },
        seen: if tenants.is_empty() {
            "none set".into()
        } else {
            tenants.join(", ")
        },
    }
}

/// Step 4: the tenant's inbound connector, which knows the gateway by its client certificate.
fn inbound_connector_step(
    host: &str,
    sender_name: &str,
    tenant_transport: Option<&RelayDomain>,
    client_cert: Option<&str>,
) -> Step {
    Step {
        title: "Inbound mail to the tenant, with this gateway's client certificate".into(),
        command: Some(format!(
            "New-InboundConnector -Name \"postern {host}\" -ConnectorType Partner -SenderDomains \"*\" -RequireTls $true -RestrictDomainsToCertificate $true -TlsSenderCertificateName \"{sender_name}\""
        )),
        explanation: "On Relay Domains, the organisation's domains go to <tenant>.mail.protection.outlook.com (level verify by default) and present the gateway's certificate, which the inbound connector recognises by name.".into(),
        problems: Vec::new(),
        status: match (tenant_transport, client_cert) {
            (Some(_), Some(_)) => "ok",
            _ => "missing",
        },
        seen: match (tenant_transport, client_cert) {
            (Some(d), Some(c)) => format!("{} goes to {} presenting {c}", d.domain, d.transport.as_deref().unwrap_or("")),
            (Some(d), None) => format!("{} goes to its tenant without a client certificate", d.domain),
            (None, _) => "no relay domain goes to *.mail.protection.outlook.com".into(),
        },
    }
}

/// Step 5: Enhanced Filtering, which postern cannot see.
fn filtering_step(host: &str) -> Step {
    Step {
        title: "Enhanced Filtering for the inbound connector".into(),
        command: Some(format!("Set-InboundConnector -Identity \"postern {host}\" -EFSkipLastIP $true")),
        explanation: "Mail from the Internet reaches the tenant through this gateway: without Enhanced Filtering for Connectors, Exchange Online Protection sees every message as coming from the gateway's address and judges SPF and reputation on it.".into(),
        status: "unknown",
        seen: "set in Exchange Online; postern cannot see it".into(),
        problems: Vec::new(),
    }
}

/// The certificate bound to SMTP (`name`), and whether it chains to the public roots.
async fn bound_certificate<'l>(
    state: &AdminState,
    name: Option<&str>,
    list: &'l [CertInfo],
) -> Option<(&'l CertInfo, Result<bool, String>)> {
    let c = list.iter().find(|c| Some(c.name.as_str()) == name)?;
    let (certs, name) = (state.certs.clone(), c.name.clone());
    let public = tokio::task::spawn_blocking(move || certs.publicly_trusted(&name))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    Some((c, public))
}

/// The certificate step: done only when Exchange Online would accept the certificate bound
/// to SMTP for `host` (`public`: whether its chain leads to the public trust roots); else
/// each reason, so the admin knows which to fix.
fn certificate_status(
    host: &str,
    bound: Option<(&CertInfo, Result<bool, String>)>,
) -> (&'static str, String, Vec<String>) {
    let Some((c, public)) = bound else {
        let seen = "no certificate bound to SMTP: STARTTLS serves the system self-signed one, which Exchange Online refuses";
        return ("missing", seen.into(), Vec::new());
    };
    let mut problems = Vec::new();
    if !crate::next_hop::is_domain_name(host) {
        problems.push(format!("{host} is not a fully qualified host name: Exchange Online's smart host must be the gateway's full name (such as mx.example.com). Set it as the config file's [server] hostname (or POSTERN_HOSTNAME) and restart postern, with a certificate for that name"));
    }
    if c.days_left <= 0 {
        problems.push(format!("{} has expired", c.name));
    } else if !c.facts.sans.iter().any(|n| names_host(n, host)) {
        problems.push(format!(
            "{} does not name {host} (it names {})",
            c.name,
            c.facts.sans.join(", ")
        ));
    }
    match public {
        Ok(true) => {}
        Ok(false) => problems.push(format!("{} does not chain to the public trust roots (issued by {}): Exchange Online accepts only a certificate from a public certificate authority, whatever the config file's [tls] extra_roots trusts here. Import one from a public CA (an ACME certificate such as Let's Encrypt's) and bind it", c.name, c.facts.issuer)),
        Err(e) => problems.push(format!("{}: its chain could not be checked: {e}", c.name)),
    }
    match problems.len() {
        0 => {
            let seen = format!(
                "{} is bound, valid for {host}, chains to the public trust roots, {} days left",
                c.name, c.days_left
            );
            ("ok", seen, Vec::new())
        }
        1 => ("missing", problems.remove(0), Vec::new()),
        n => {
            let seen = format!(
                "{} is bound, but Exchange Online would refuse it ({n} problems):",
                c.name
            );
            ("missing", seen, problems)
        }
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
    use super::*;

    fn cert(names: &[&str], days_left: i64) -> CertInfo {
        CertInfo {
            name: "gw".into(),
            kind: crate::certs::Kind::Imported,
            system: false,
            facts: crate::certs::Facts {
                subject: "CN=gw".into(),
                issuer: "CN=Private CA".into(),
                serial: "01".into(),
                sans: names.iter().map(|n| n.to_string()).collect(),
                not_before: String::new(),
                not_after: String::new(),
                not_after_unix: 0,
                sha256: String::new(),
                chain_length: 1,
            },
            days_left,
            bound_to: vec!["SMTP STARTTLS".into()],
            used_for: vec!["SMTP STARTTLS (inbound)".into()],
            renewed: false,
            warnings: Vec::new(),
            directory: None,
        }
    }

    #[test]
    fn the_certificate_step_is_done_only_when_exchange_online_would_accept_it() {
        let c = cert(&["mx.example.net"], 80);
        let (status, seen, problems) = certificate_status("mx.example.net", Some((&c, Ok(true))));
        assert_eq!((status, problems.len()), ("ok", 0), "{seen}");
        // A private CA: said, alone.
        let (status, seen, _) = certificate_status("mx.example.net", Some((&c, Ok(false))));
        assert_eq!(status, "missing");
        assert!(
            seen.starts_with(
                "gw does not chain to the public trust roots (issued by CN=Private CA)"
            ),
            "{seen}"
        );
        // A single-label host name, and a private CA: both said.
        let vm = cert(&["vm"], 80);
        let (status, seen, problems) = certificate_status("vm", Some((&vm, Ok(false))));
        assert_eq!(status, "missing");
        assert_eq!(
            seen,
            "gw is bound, but Exchange Online would refuse it (2 problems):"
        );
        assert!(
            problems[0].starts_with("vm is not a fully qualified host name"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("gw does not chain to the public trust roots"));
        // A publicly trusted one for a single-label name is refused all the same.
        let (status, seen, _) = certificate_status("vm", Some((&vm, Ok(true))));
        assert_eq!(status, "missing");
        assert!(seen.contains("config file's [server] hostname"), "{seen}");
        let (status, seen, _) = certificate_status(
            "mx.example.net",
            Some((&cert(&["other.example"], 80), Ok(true))),
        );
        assert_eq!(
            (status, seen.as_str()),
            (
                "missing",
                "gw does not name mx.example.net (it names other.example)"
            )
        );
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(super::names_host("*.example.net", "mx.example.net"));
        assert!(!super::names_host("*.example.net", "a.mx.example.net"));
        assert!(super::names_host("MX.example.net", "mx.example.net"));
    }
}
