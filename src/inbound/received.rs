//! What a session tells the event log: the record of each message it accepted (after the
//! spool's sync decided its 250), and the refusals before a message. Pure but for the chain
//! check of a client certificate.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::events::received::CertFacts;

/// A client certificate as the received record keeps it: its subject, issuer and DNS names,
/// and whether it verifies (chain to `roots`, dates, an extended key usage for TLS client or
/// server authentication, or none). `None` without a certificate.
pub fn cert_facts(
    chain: &[CertificateDer<'static>],
    roots: &Arc<rustls::RootCertStore>,
) -> Option<CertFacts> {
    let (leaf, intermediates) = chain.split_first()?;
    let facts = crate::certs::check::describe(leaf.as_ref());
    let (subject, issuer, names) = match facts {
        Some(f) => (f.subject, f.issuer, f.sans),
        None => ("unknown".into(), "unknown".into(), Vec::new()),
    };
    Some(CertFacts {
        subject,
        issuer,
        names,
        verified: verifies(leaf, intermediates, roots),
    })
}

/// webpki checks the chain and dates either way; its client verifier takes a certificate
/// whose EKU allows client authentication or that has none, the server check (without a
/// name, `tls::chain_trusted`) one whose EKU allows server authentication. Either will do:
/// public CAs stop issuing clientAuth in 2026, private PKIs issue clientAuth alone.
fn verifies(
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    roots: &Arc<rustls::RootCertStore>,
) -> bool {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let as_client =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .is_ok_and(|v| {
                v.verify_client_cert(leaf, intermediates, UnixTime::now())
                    .is_ok()
            });
    as_client
        || crate::tls::chain_verifier(roots.clone()).is_some_and(|v| {
            let chain: Vec<CertificateDer<'_>> = std::iter::once(leaf.clone())
                .chain(intermediates.iter().cloned())
                .collect();
            crate::tls::chain_trusted(&v, &chain)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::ExtendedKeyUsagePurpose as Eku;

    /// A leaf for `mx.partner.example` with `usages` (valid in 2020 only when `expired`),
    /// and the roots of the CA that issued it.
    fn chain(
        usages: &[Eku],
        expired: bool,
    ) -> (Vec<CertificateDer<'static>>, Arc<rustls::RootCertStore>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["mx.partner.example".into()]).unwrap();
        leaf.extended_key_usages = usages.to_vec();
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (vec![cert.der().clone()], Arc::new(roots))
    }

    #[test]
    fn a_certificate_for_tls_in_either_role_verifies_and_says_who_it_is() {
        crate::tls::install_provider();
        for usages in [
            vec![Eku::ClientAuth],
            vec![Eku::ServerAuth],
            vec![Eku::ServerAuth, Eku::ClientAuth],
            vec![],
        ] {
            let (leaf, roots) = chain(&usages, false);
            let facts = cert_facts(&leaf, &roots).unwrap();
            assert!(facts.verified, "{usages:?}");
            assert_eq!(facts.names, ["mx.partner.example"]);
            assert!(facts.issuer.contains("test CA"), "{}", facts.issuer);
        }
        let (leaf, roots) = chain(&[Eku::EmailProtection], false);
        assert!(!cert_facts(&leaf, &roots).unwrap().verified, "S/MIME only");
        let (leaf, roots) = chain(&[Eku::ClientAuth], true);
        assert!(!cert_facts(&leaf, &roots).unwrap().verified, "expired");
        let (leaf, _) = chain(&[Eku::ClientAuth], false);
        let (_, other_roots) = chain(&[], false);
        assert!(
            !cert_facts(&leaf, &other_roots).unwrap().verified,
            "another CA"
        );
        assert!(cert_facts(&[], &other_roots).is_none());
    }
}
