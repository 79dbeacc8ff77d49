//! Who a client certificate proves the client is: the Microsoft 365 connector and inbound
//! `verify` rows ask the same question, "does this chain to our roots, in date, for one of
//! these names?". The answer ignores which TLS role the certificate was issued for: public
//! CAs stop putting clientAuth in TLS certificates during 2026 (the CA/Browser Forum's
//! server-only hierarchies), private PKIs issue clientAuth-only ones, and both prove a name
//! equally well. A certificate issued for something else (S/MIME, code signing) proves
//! nothing about a mail server, and is refused naming its extended key usage.

use std::cell::Cell;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, KeyUsage};

/// Why a client certificate proves no identity here. `Display` is the admin's words, to
/// follow "client " in a reply or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityProblem {
    /// The chain leads to no trusted root, or is broken: why.
    Untrusted(String),
    /// The certificate (or one above it) expired at `not_after`.
    Expired { not_after: UnixTime },
    /// The certificate (or one above it) is valid only from `not_before`.
    NotYetValid { not_before: UnixTime },
    /// Trusted and in date, but valid for none of `wanted`; `names` are the ones it has.
    WrongName {
        wanted: Vec<String>,
        names: Vec<String>,
    },
    /// The extended key usage allows neither TLS client nor server authentication: which
    /// usages it lists, and whose they are when not the certificate's own.
    Usage(String),
}

impl std::fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityProblem::Untrusted(why) => write!(f, "certificate issuer not trusted: {why}"),
            IdentityProblem::Expired { not_after } => {
                write!(
                    f,
                    "certificate expired on {}",
                    super::words::day(*not_after)
                )
            }
            IdentityProblem::NotYetValid { not_before } => write!(
                f,
                "certificate not valid before {}",
                super::words::day(*not_before)
            ),
            IdentityProblem::WrongName { wanted, names } => {
                let wanted = match wanted.is_empty() {
                    true => "the names required (none is configured)".to_string(),
                    false => wanted.join(" or "),
                };
                let names = match names.is_empty() {
                    true => "no names".to_string(),
                    false => names.join(", "),
                };
                write!(
                    f,
                    "certificate is not valid for {wanted} (it names {names})"
                )
            }
            IdentityProblem::Usage(eku) => {
                write!(f, "certificate is not for TLS clients or servers ({eku})")
            }
        }
    }
}

/// Chain to `roots` (Mozilla + extra_roots), dates, and one of `names` (DNS names, as a
/// server name is matched: SAN dNSName, wildcards in the certificate, never the CN). EKU:
/// clientAuth, serverAuth, both or none are accepted, on the leaf and on every issuer
/// above it; anything else is `Usage`, naming the EKU(s). `Ok` is the name matched.
pub fn verify_client_identity(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &Arc<rustls::RootCertStore>,
    names: &[String],
    now: UnixTime,
) -> Result<String, IdentityProblem> {
    let cert = EndEntityCert::try_from(leaf)
        .map_err(|_| IdentityProblem::Untrusted("the certificate cannot be parsed".into()))?;
    let usage = TlsEitherRole::default();
    let provider = super::provider();
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &roots.roots,
        intermediates,
        now,
        &usage,
        None,
        None,
    )
    .map_err(|e| chain_problem(&e, usage.leaf_refused.get()))?;
    for name in names {
        // A configured name that is no DNS name (or IP address) can match nothing.
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            continue;
        };
        if cert.verify_is_valid_for_subject_name(&server_name).is_ok() {
            return Ok(name.clone());
        }
    }
    Err(IdentityProblem::WrongName {
        wanted: names.to_vec(),
        names: names_of(&cert),
    })
}

/// The names a certificate is valid for (SAN DNS names and IP addresses), as webpki lists
/// them when a name does not match: asked for one no certificate may hold.
fn names_of(cert: &EndEntityCert<'_>) -> Vec<String> {
    let probe = ServerName::try_from("name-check.invalid").expect("a literal valid DNS name");
    match cert.verify_is_valid_for_subject_name(&probe) {
        Err(webpki::Error::CertNotValidForName(context)) => context
            .presented
            .iter()
            .filter(|n| n.starts_with("DnsName(") || n.starts_with("IpAddress("))
            .map(|n| super::words::presented_name(n).to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// The EKU rule, applied by webpki to each certificate of a candidate chain, leaf first:
/// none listed, or one that allows TLS client or server authentication (RFC 5280 section
/// 4.2.1.12). Applied alike to issuers, so neither a server-only intermediate above a
/// clientAuth-only leaf nor the reverse refuses a chain that proves a TLS name.
#[derive(Default)]
struct TlsEitherRole {
    /// Certificates judged so far: the first one is the leaf.
    seen: Cell<usize>,
    /// The leaf's own EKU was refused (not an issuer's).
    leaf_refused: Cell<bool>,
}

impl ExtendedKeyUsageValidator for TlsEitherRole {
    fn validate(&self, usages: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let is_leaf = self.seen.get() == 0;
        self.seen.set(self.seen.get() + 1);
        let mut present = Vec::new();
        for usage in usages {
            let oid = usage?.to_decoded_oid();
            if oid == KeyUsage::SERVER_AUTH_REPR || oid == KeyUsage::CLIENT_AUTH_REPR {
                return Ok(());
            }
            present.push(oid);
        }
        if present.is_empty() {
            return Ok(());
        }
        self.leaf_refused.set(is_leaf);
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: KeyUsage::client_auth(),
                present,
            },
        ))
    }
}

/// A failed chain check in the admin's words.
fn chain_problem(e: &webpki::Error, leaf_usage: bool) -> IdentityProblem {
    use webpki::Error as E;
    let whose = if leaf_usage { "" } else { "its issuer's " };
    let untrusted = |why: &str| IdentityProblem::Untrusted(why.to_string());
    match e {
        E::CertExpired { not_after, .. } => IdentityProblem::Expired {
            not_after: *not_after,
        },
        E::CertNotValidYet { not_before, .. } => IdentityProblem::NotYetValid {
            not_before: *not_before,
        },
        E::RequiredEkuNotFoundContext(context) => IdentityProblem::Usage(format!(
            "{whose}extended key usage: {}",
            context
                .present
                .iter()
                .map(|oid| usage_name(oid))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        E::EmptyEkuExtension => {
            IdentityProblem::Usage("extended key usage present but empty".into())
        }
        E::UnknownIssuer => untrusted("the chain does not lead to a trusted root"),
        E::CaUsedAsEndEntity => untrusted("the client presented a CA certificate as its own"),
        E::EndEntityUsedAsCa => untrusted("the chain uses an end-entity certificate as a CA"),
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => {
            untrusted("a signature in the chain is invalid")
        }
        E::CertDistrusted => untrusted("a certificate in the chain is distrusted"),
        E::BadDer | E::BadDerTime => untrusted("a certificate in the chain cannot be parsed"),
        other => IdentityProblem::Untrusted(format!("certificate refused: {}", words_of(other))),
    }
}

/// `UnsupportedCriticalExtension` -> `unsupported critical extension`.
fn words_of(e: &webpki::Error) -> String {
    let debug = format!("{e:?}");
    let name = debug.split(['(', ' ', '{']).next().unwrap_or(&debug);
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// RFC 5280 section 4.2.1.12's names of the key purposes, as `openssl x509 -text` and the
/// certificate's issuer call them; any other by its dotted OID.
fn usage_name(oid: &[usize]) -> String {
    const KP: [usize; 8] = [1, 3, 6, 1, 5, 5, 7, 3];
    let known = match oid.split_at_checked(KP.len()) {
        Some((prefix, [n])) if prefix == KP => match n {
            1 => Some("serverAuth"),
            2 => Some("clientAuth"),
            3 => Some("codeSigning"),
            4 => Some("emailProtection"),
            8 => Some("timeStamping"),
            9 => Some("OCSPSigning"),
            _ => None,
        },
        _ if oid == [2, 5, 29, 37, 0] => Some("anyExtendedKeyUsage"),
        _ => None,
    };
    known.map(str::to_string).unwrap_or_else(|| {
        oid.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(".")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    use time::macros::datetime;

    /// 2026-06-01, the time every check here runs at.
    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_780_272_000))
    }

    struct Ca {
        der: CertificateDer<'static>,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    /// A CA, self-signed when `above` is `None`, else an intermediate signed by it.
    fn ca(name: &str, usages: &[Eku], above: Option<&Ca>) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = usages.to_vec();
        let cert = match above {
            Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        Ca {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf_with(
        ca: &Ca,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        edit(&mut params);
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn leaf(ca: &Ca, names: &[&str], usages: &[Eku]) -> CertificateDer<'static> {
        leaf_with(ca, names, |p| p.extended_key_usages = usages.to_vec())
    }

    fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        Arc::new(roots)
    }

    fn check(
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        root: &Ca,
        names: &[&str],
    ) -> Result<String, IdentityProblem> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        verify_client_identity(leaf, chain, &roots(root), &names, now())
    }

    #[test]
    fn any_tls_usage_or_none_proves_the_name() {
        let root = ca("root", &[], None);
        for usages in [
            vec![Eku::ClientAuth],
            vec![Eku::ServerAuth],
            vec![Eku::ServerAuth, Eku::ClientAuth],
            vec![],
            vec![Eku::EmailProtection, Eku::ClientAuth],
        ] {
            let cert = leaf(&root, &["partner.example"], &usages);
            assert_eq!(
                check(&cert, &[], &root, &["partner.example"]),
                Ok("partner.example".to_string()),
                "{usages:?}"
            );
        }
    }

    #[test]
    fn a_usage_for_something_else_is_named() {
        let root = ca("root", &[], None);
        let cert = leaf(&root, &["partner.example"], &[Eku::EmailProtection]);
        let problem = check(&cert, &[], &root, &["partner.example"]).unwrap_err();
        assert_eq!(
            problem.to_string(),
            "certificate is not for TLS clients or servers (extended key usage: emailProtection)"
        );
        let cert = leaf(
            &root,
            &["partner.example"],
            &[Eku::CodeSigning, Eku::Other(vec![1, 2, 3, 4])],
        );
        assert_eq!(
            check(&cert, &[], &root, &["partner.example"]),
            Err(IdentityProblem::Usage(
                "extended key usage: codeSigning, 1.2.3.4".into()
            ))
        );
        assert_eq!(usage_name(&[2, 5, 29, 37, 0]), "anyExtendedKeyUsage");
    }

    #[test]
    fn an_intermediates_usage_refuses_only_when_it_allows_no_tls() {
        let root = ca("root", &[], None);
        // A server-only intermediate (a 2026 public CA's) above a clientAuth-only leaf, and
        // a clientAuth-only intermediate above a serverAuth-only leaf: both prove the name.
        for (above, below) in [
            (Eku::ServerAuth, Eku::ClientAuth),
            (Eku::ClientAuth, Eku::ServerAuth),
        ] {
            let mid = ca("intermediate", std::slice::from_ref(&above), Some(&root));
            let cert = leaf(&mid, &["partner.example"], std::slice::from_ref(&below));
            assert_eq!(
                check(
                    &cert,
                    std::slice::from_ref(&mid.der),
                    &root,
                    &["partner.example"]
                ),
                Ok("partner.example".to_string()),
                "{above:?} above {below:?}"
            );
        }
        let smime = ca("S/MIME CA", &[Eku::EmailProtection], Some(&root));
        let cert = leaf(&smime, &["partner.example"], &[]);
        assert_eq!(
            check(
                &cert,
                std::slice::from_ref(&smime.der),
                &root,
                &["partner.example"]
            )
            .unwrap_err()
            .to_string(),
            "certificate is not for TLS clients or servers (its issuer's extended key usage: emailProtection)"
        );
    }

    #[test]
    fn dates_are_checked_and_said() {
        let root = ca("root", &[], None);
        let expired = leaf_with(&root, &["partner.example"], |p| {
            p.not_before = datetime!(2025-01-01 0:00 UTC);
            p.not_after = datetime!(2026-01-31 12:00 UTC);
        });
        let problem = check(&expired, &[], &root, &["partner.example"]).unwrap_err();
        assert!(
            matches!(problem, IdentityProblem::Expired { .. }),
            "{problem:?}"
        );
        assert_eq!(problem.to_string(), "certificate expired on 2026-01-31");
        let early = leaf_with(&root, &["partner.example"], |p| {
            p.not_before = datetime!(2026-07-01 0:00 UTC);
        });
        let problem = check(&early, &[], &root, &["partner.example"]).unwrap_err();
        assert!(
            matches!(problem, IdentityProblem::NotYetValid { .. }),
            "{problem:?}"
        );
        assert_eq!(
            problem.to_string(),
            "certificate not valid before 2026-07-01"
        );
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let root = ca("root", &[], None);
        let stranger = ca("stranger", &[], None);
        let cert = leaf(&stranger, &["partner.example"], &[Eku::ClientAuth]);
        assert_eq!(
            check(&cert, &[], &root, &["partner.example"])
                .unwrap_err()
                .to_string(),
            "certificate issuer not trusted: the chain does not lead to a trusted root"
        );
        // The chain is checked before the name: a stranger's certificate with the wrong
        // name is said to be untrusted, not misnamed.
        assert!(matches!(
            check(&cert, &[], &root, &["other.example"]),
            Err(IdentityProblem::Untrusted(_))
        ));
    }

    #[test]
    fn names_match_as_a_servers_do_wildcards_included() {
        let root = ca("root", &[], None);
        let cert = leaf(&root, &["relay.other.example", "192.0.2.7"], &[]);
        let problem = check(
            &cert,
            &[],
            &root,
            &["partner.example", "mx.partner.example"],
        );
        assert_eq!(
            problem,
            Err(IdentityProblem::WrongName {
                wanted: vec!["partner.example".into(), "mx.partner.example".into()],
                names: vec!["relay.other.example".into(), "192.0.2.7".into()],
            })
        );
        assert_eq!(
            problem.unwrap_err().to_string(),
            "certificate is not valid for partner.example or mx.partner.example (it names relay.other.example, 192.0.2.7)"
        );
        let wild = leaf(&root, &["*.partner.example"], &[Eku::ServerAuth]);
        // The first configured name the certificate is valid for is the one matched.
        assert_eq!(
            check(
                &wild,
                &[],
                &root,
                &["partner.example", "MX.partner.example"]
            ),
            Ok("MX.partner.example".to_string())
        );
        // A wildcard covers one label, not the domain itself nor two labels.
        for name in ["partner.example", "a.b.partner.example"] {
            assert!(
                matches!(
                    check(&wild, &[], &root, &[name]),
                    Err(IdentityProblem::WrongName { .. })
                ),
                "{name}"
            );
        }
        // Wildcards in the configured names are no wildcards: they match nothing.
        assert!(check(&cert, &[], &root, &["*.other.example"]).is_err());
    }
}
