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
