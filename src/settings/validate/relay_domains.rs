//! `relay_domains`: names, next hops, SASL credentials, recipient tables.

use crate::next_hop::{NextHop, is_domain_name};
use crate::settings::{RelayAuth, RelayDomain};

use super::{FieldError, field_error};

pub fn check_relay_domains(
    domains: &[RelayDomain],
    previous: &[RelayDomain],
) -> Result<Vec<RelayDomain>, FieldError> {
    let mut out: Vec<RelayDomain> = Vec::with_capacity(domains.len());
    for (i, d) in domains.iter().enumerate() {
        let domain = d.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = domain.strip_prefix('.').unwrap_or(&domain);
        if !is_domain_name(bare) {
            return Err(field_error(
                format!("relay_domains[{i}].domain"),
                format!("{:?} is not a valid domain name", d.domain),
            ));
        }
        if out.iter().any(|o| o.domain == domain) {
            return Err(field_error(
                format!("relay_domains[{i}].domain"),
                format!("duplicate relay domain {domain:?}"),
            ));
        }
        if let Some(t) = &d.transport {
            NextHop::parse(t)
                .map_err(|e| field_error(format!("relay_domains[{i}].transport"), e))?;
        }
        let auth = match &d.auth {
            Some(a) => Some(check_relay_auth(a, &domain, previous, i)?),
            None => None,
        };
        let recipients = match &d.recipients {
            Some(list) => Some(check_recipient_list(list, i)?),
            None => None,
        };
        out.push(RelayDomain {
            domain,
            transport: d.transport.as_ref().map(|t| t.trim().to_string()),
            recipients,
            verify_recipients: d.verify_recipients,
            auth,
            client_certificate: d
                .client_certificate
                .as_ref()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        });
    }
    Ok(out)
}

/// Each entry `local@domain`, lower-case, with at most one `*` in the local part.
fn check_recipient_list(list: &[String], i: usize) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, entry) in list.iter().enumerate() {
        let entry = entry.trim().to_ascii_lowercase();
        let valid = entry.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.matches('*').count() <= 1
                && !local.contains(['@', ' ', '<', '>'])
                && is_domain_name(domain)
        });
        if !valid {
            return Err(field_error(
                format!("relay_domains[{i}].recipients[{j}]"),
                format!(
                    "{entry:?} is not an address (local@domain, one * allowed in the local part)"
                ),
            ));
        }
        out.push(entry);
    }
    Ok(out)
}

/// A user name and password SASL PLAIN can carry (no NUL, no line breaks); the password is
/// kept from `previous` when omitted for the same domain and user.
fn check_relay_auth(
    auth: &RelayAuth,
    domain: &str,
    previous: &[RelayDomain],
    i: usize,
) -> Result<RelayAuth, FieldError> {
    let field = |name: &str| format!("relay_domains[{i}].auth.{name}");
    let username = auth.username.trim();
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err(field_error(
            field("username"),
            "must be a non-empty name without control characters",
        ));
    }
    let password = match &auth.password {
        Some(p) if p.expose().is_empty() || p.expose().chars().any(char::is_control) => {
            return Err(field_error(
                field("password"),
                "must be non-empty, without control characters",
            ));
        }
        Some(p) => p.clone(),
        None => previous
            .iter()
            .filter(|d| d.domain == domain)
            .filter_map(|d| d.auth.as_ref())
            .find(|a| a.username == username)
            .and_then(|a| a.password.clone())
            .ok_or_else(|| field_error(field("password"), "required for new credentials"))?,
    };
    Ok(RelayAuth {
        username: username.to_string(),
        password: Some(password),
    })
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use crate::settings::*;

    #[test]
    fn relay_domain_checks() {
        let d =
            doc("[[relay_domains]]\ndomain = \"Example.COM.\"\ntransport = \"[10.0.0.5]:2525\"");
        let s = Settings::default().apply(&d, &FakeHasher).unwrap();
        assert_eq!(s.relay_domains[0].domain, "example.com");

        for (text, field) in [
            (
                "[[relay_domains]]\ndomain = \"not a domain\"",
                "relay_domains[0].domain",
            ),
            (
                "[[relay_domains]]\ndomain = \"a.example\"\n[[relay_domains]]\ndomain = \"A.example\"",
                "relay_domains[1].domain",
            ),
            (
                "[[relay_domains]]\ndomain = \"a.example\"\ntransport = \"[mx.example]:99999\"",
                "relay_domains[0].transport",
            ),
        ] {
            let err = Settings::default()
                .apply(&doc(text), &FakeHasher)
                .unwrap_err();
            assert_eq!(err.field, field, "{text}");
        }
    }
}
