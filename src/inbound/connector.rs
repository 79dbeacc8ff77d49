//! The Microsoft 365 connector as a relay source (docs/m365.md). A session is Exchange
//! Online's outbound connector only when it came over TLS with a client certificate that
//! chains to the trust roots, is in date and is valid for a configured name
//! (`mail.protection.outlook.com`), from a configured range when ranges are set. Its
//! extended key usage may be clientAuth, serverAuth, both or none (that certificate is
//! Microsoft's servers' own, and public CAs drop clientAuth during 2026); one for anything
//! else is refused, saying so (`crate::tls::verify_client_identity`). Even then it relays
//! only mail whose tenant header names an allowed tenant, checked at the end of DATA. Pure:
//! certificates and settings in, verdicts out.

use std::net::IpAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::proto::{Enhanced, Reply};
use crate::settings::M365Settings;
use crate::tls::IdentityProblem;

/// What a session's client certificate is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No TLS, or TLS without a certificate.
    None,
    Presented {
        /// The subject's CN (or the subject) and the issuer's, for the Received header.
        cn: String,
        issuer: String,
        verdict: Verdict,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The connector: verified for this configured name.
    Connector(String),
    /// Chains to the roots, but is valid for none of the configured names.
    WrongName { names: Vec<String> },
    /// Proves no identity: it does not chain to the trust roots, is out of date, or its
    /// extended key usage is for something other than TLS. Why, in the admin's words.
    Untrusted(IdentityProblem),
    /// Right certificate, from an address outside the configured ranges.
    OutsideRanges(IpAddr),
    /// The connector profile is off: a certificate gives no rights.
    Disabled,
}

impl ClientCert {
    pub fn is_connector(&self) -> bool {
        matches!(
            self,
            ClientCert::Presented {
                verdict: Verdict::Connector(_),
                ..
            }
        )
    }

    /// Postfix's words in the Received header: `(Client CN "…", Issuer "…" (verified OK))`.
    pub fn received_note(&self) -> Option<String> {
        let ClientCert::Presented {
            cn,
            issuer,
            verdict,
        } = self
        else {
            return None;
        };
        let verified = match verdict {
            Verdict::Connector(_) | Verdict::OutsideRanges(_) | Verdict::WrongName { .. } => {
                "verified OK"
            }
            Verdict::Untrusted(_) | Verdict::Disabled => "not verified",
        };
        Some(format!(
            "(Client CN \"{cn}\", Issuer \"{issuer}\" ({verified}))"
        ))
    }

    /// The refusal of a recipient postern does not relay for, from a session that is not
    /// the connector. A certificate problem is 4xx: it is usually the gateway's to fix
    /// (a root missing, a name list out of date), and Exchange Online retries for about a
    /// day while the admin does. Without a certificate it is the plain 5xx relay refusal.
    pub fn refusal(&self, rcpt: &str) -> Reply {
        let denied = |why: String| {
            Reply::new(
                450,
                Enhanced(4, 7, 1),
                format!("<{rcpt}>: Relay access denied: {why}"),
            )
        };
        match self {
            ClientCert::None => Reply::new(
                554,
                Enhanced(5, 7, 1),
                format!("<{rcpt}>: Relay access denied (no client certificate)"),
            ),
            ClientCert::Presented { verdict, .. } => match verdict {
                Verdict::WrongName { names } => denied(format!(
                    "client certificate is not valid for the Microsoft 365 connector's name (it names {})",
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                )),
                Verdict::Untrusted(why) => denied(format!("client {why}")),
                Verdict::OutsideRanges(ip) => denied(format!(
                    "client address {ip} is not in the Microsoft 365 connector's ranges"
                )),
                Verdict::Connector(_) | Verdict::Disabled => Reply::new(
                    554,
                    Enhanced(5, 7, 1),
                    format!("<{rcpt}>: Relay access denied"),
                ),
            },
        }
    }
}

/// Judge the chain a client showed, against the settings in force.
pub fn examine(
    chain: &[CertificateDer<'static>],
    roots: &Arc<rustls::RootCertStore>,
    m365: &M365Settings,
    ip: IpAddr,
) -> ClientCert {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return ClientCert::None;
    };
    let facts = crate::certs::check::describe(leaf.as_ref());
    let (cn, issuer) = match &facts {
        Some(f) => (common_name(&f.subject), common_name(&f.issuer)),
        None => ("unknown".into(), "unknown".into()),
    };
    let verdict = if m365.enabled {
        judge(leaf, intermediates, roots, m365, ip)
    } else {
        Verdict::Disabled
    };
    ClientCert::Presented {
        cn,
        issuer,
        verdict,
    }
}

fn judge(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    roots: &Arc<rustls::RootCertStore>,
    m365: &M365Settings,
    ip: IpAddr,
) -> Verdict {
    if m365.certificate_names.is_empty() {
        return Verdict::Untrusted(IdentityProblem::Untrusted(
            "no valid certificate name is configured".into(),
        ));
    }
    // The chain, the validity dates, the name, and an EKU for TLS in either role: the
    // certificate Exchange Online presents is its servers' own.
    let names = &m365.certificate_names;
    match crate::tls::verify_client_identity(leaf, intermediates, roots, names, UnixTime::now()) {
        Ok(name) => in_ranges(m365, ip, &name),
        Err(IdentityProblem::WrongName { names, .. }) => Verdict::WrongName { names },
        Err(problem) => Verdict::Untrusted(problem),
    }
}

fn in_ranges(m365: &M365Settings, ip: IpAddr, name: &str) -> Verdict {
    let ip = ip.to_canonical();
    let inside = m365.ranges.is_empty()
        || m365.ranges.iter().any(|r| match r.parse::<ipnet::IpNet>() {
            Ok(net) => net.contains(&ip),
            Err(_) => r.parse::<IpAddr>() == Ok(ip),
        });
    if inside {
        Verdict::Connector(name.to_string())
    } else {
        Verdict::OutsideRanges(ip)
    }
}

/// `CN=mail.protection.outlook.com, O=Microsoft` → `mail.protection.outlook.com` (also how
/// the impact preview names a stored client certificate).
pub(crate) fn common_name(dn: &str) -> String {
    dn.split(", ")
        .find_map(|part| part.strip_prefix("CN="))
        .unwrap_or(dn)
        .to_string()
}

/// The tenant a connector message is from: `X-MS-Exchange-CrossTenant-Id`, else (when the
/// settings allow) `X-OriginatorOrg` naming an accepted domain. `Err` is the 550: mail that
/// is not an allowed tenant's cannot become so by retrying.
pub fn tenant_of(message: &[u8], m365: &M365Settings) -> Result<String, Reply> {
    use crate::proto::header::first_value;
    let refuse = |why: String| {
        Reply::new(
            550,
            Enhanced(5, 7, 1),
            format!("Relay access denied: {why}"),
        )
    };
    if let Some(id) = first_value(message, "X-MS-Exchange-CrossTenant-Id") {
        let id = id.trim().to_ascii_lowercase();
        return if m365.tenants.contains(&id) {
            Ok(id)
        } else {
            Err(refuse(format!(
                "tenant {id} is not allowed to relay through this gateway"
            )))
        };
    }
    if let Some(org) = first_value(message, "X-OriginatorOrg") {
        let org = org.trim().to_ascii_lowercase();
        if m365.originator_domains.contains(&org) {
            return Ok(format!("originator {org}"));
        }
    }
    Err(refuse(
        "no tenant header (X-MS-Exchange-CrossTenant-Id): only an allowed Microsoft 365 tenant's mail may relay here".into(),
    ))
}

/// Headers by which Exchange Online attributes a message to a tenant: from anyone but the
/// connector they are forged or stale, and must not reach a tenant that would trust them.
pub fn is_tenant_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("x-ms-exchange-crosstenant-")
        || n.starts_with("x-ms-exchange-organization-")
        || n == "x-originatororg"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m365() -> M365Settings {
        M365Settings {
            enabled: true,
            tenants: vec!["72f988bf-86f1-41af-91ab-2d7cd011db47".into()],
            originator_domains: vec!["contoso.example".into()],
            ..M365Settings::default()
        }
    }

    #[test]
    fn the_tenant_header_decides_and_the_fallback_only_when_allowed() {
        let ok = b"X-MS-Exchange-CrossTenant-Id: 72F988BF-86f1-41af-91ab-2d7cd011db47\r\n\r\nx\r\n";
        assert_eq!(
            tenant_of(ok, &m365()).unwrap(),
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        let other = b"X-MS-Exchange-CrossTenant-Id: 00000000-0000-0000-0000-000000000000\r\n\r\n";
        let r = tenant_of(other, &m365()).unwrap_err();
        assert_eq!(r.code, 550);
        assert!(
            r.summary()
                .contains("tenant 00000000-0000-0000-0000-000000000000 is not allowed")
        );
        let org = b"X-OriginatorOrg: Contoso.example\r\n\r\n";
        assert_eq!(
            tenant_of(org, &m365()).unwrap(),
            "originator contoso.example"
        );
        let none = b"Subject: hi\r\n\r\nX-MS-Exchange-CrossTenant-Id: in the body\r\n";
        assert!(
            tenant_of(none, &m365())
                .unwrap_err()
                .summary()
                .contains("no tenant header")
        );
    }

    #[test]
    fn tenant_headers_are_known_by_name() {
        assert!(is_tenant_header("X-MS-Exchange-CrossTenant-Id"));
        assert!(is_tenant_header("x-ms-exchange-organization-authas"));
        assert!(is_tenant_header("X-OriginatorOrg"));
        assert!(!is_tenant_header("X-MS-Has-Attach"));
    }

    #[test]
    fn refusals_say_which_check_failed() {
        let cert = |verdict| ClientCert::Presented {
            cn: "x".into(),
            issuer: "y".into(),
            verdict,
        };
        let r = cert(Verdict::WrongName {
            names: vec!["other.example".into()],
        })
        .refusal("a@b.example");
        assert_eq!(
            (r.code, r.summary().contains("it names other.example")),
            (450, true)
        );
        let r = cert(Verdict::Untrusted(IdentityProblem::Usage(
            "extended key usage: emailProtection".into(),
        )))
        .refusal("a@b.example");
        assert_eq!(
            (r.code, r.summary()),
            (
                450,
                "450 4.7.1 <a@b.example>: Relay access denied: client certificate is not for TLS clients or servers (extended key usage: emailProtection)".to_string()
            )
        );
        let r = ClientCert::None.refusal("a@b.example");
        assert_eq!(r.code, 554);
        assert!(
            r.summary()
                .ends_with("Relay access denied (no client certificate)")
        );
        assert_eq!(
            cert(Verdict::Connector("n".into()))
                .received_note()
                .unwrap(),
            "(Client CN \"x\", Issuer \"y\" (verified OK))"
        );
    }
}
