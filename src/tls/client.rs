//! Client configs: for delivery (under a TLS policy's certificate check, with or without
//! our client certificate), for the CLI talking to its own admin listener (a pinned
//! certificate), and for the shared settings database (web PKI); the trust roots they use.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::verifier::{CertCheck, PolicyVerifier};
use super::{KxGroups, TlsError, provider, provider_for};

/// A client config that trusts exactly `cert` (the CLI talking to its own admin listener;
/// tests checking which certificate a listener serves). Signatures are still verified.
pub fn pinned_client_config(cert: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    pinned_client_config_for(cert, rustls::DEFAULT_VERSIONS)
}

/// The same, restricted to `versions`.
pub fn pinned_client_config_for(
    cert: CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    client_config(Some(cert), versions)
}

/// A client config that accepts any certificate: outbound `may` and `encrypt`, which encrypt
/// without authenticating, and the check-tls probe, which reports what it was shown.
pub fn unauthenticated_client_config() -> Arc<rustls::ClientConfig> {
    client_config(None, rustls::DEFAULT_VERSIONS)
}

fn client_config(
    pinned: Option<CertificateDer<'static>>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let check = pinned.map_or(CertCheck::Any, CertCheck::Pinned);
    let verifier = Arc::new(PolicyVerifier::new(check, None));
    build_client_config(verifier, versions, None, KxGroups::PostQuantum)
}

/// The config is built over the provider offering `groups`; the verifier checks signatures
/// with its own (the same suites and signature algorithms, whatever the groups).
fn build_client_config(
    verifier: Arc<PolicyVerifier>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_cert: Option<Arc<CertifiedKey>>,
    groups: KxGroups,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider_for(groups))
        .with_protocol_versions(versions)
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_cert {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The one certificate we present when a next hop asks for a client certificate.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        super::notes::local_key(&self.0, schemes, false);
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The Mozilla roots shipped with the binary, plus the admin's extra roots (PEM files).
pub fn trust_roots(extra: &[std::path::PathBuf]) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra {
        let pem = std::fs::read(path).map_err(|source| TlsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| TlsError::Pem {
                what: path.display().to_string(),
                message: e.to_string(),
            })?;
            roots.add(cert)?;
        }
    }
    Ok(Arc::new(roots))
}

/// A client config that verifies the server for the name connected to, against `roots` (the
/// shared settings database's connection).
pub fn webpki_client_config(
    roots: Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config that enforces `check`; after the handshake, `verified_name()` says which
/// name (or pin) the certificate was accepted for.
pub fn policy_client_config(
    check: CertCheck,
    roots: Arc<rustls::RootCertStore>,
    client_cert: Option<Arc<CertifiedKey>>,
    groups: KxGroups,
) -> Result<(Arc<rustls::ClientConfig>, Arc<PolicyVerifier>), TlsError> {
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(PolicyVerifier::new(check, Some(webpki)));
    let config = build_client_config(
        verifier.clone(),
        rustls::DEFAULT_VERSIONS,
        client_cert,
        groups,
    );
    Ok((config, verifier))
}

/// Whether `chain` (leaf first) leads to a trusted root, whatever names the leaf has:
/// Postfix's "Trusted TLS connection" at levels that check no name. Cheap enough for each new
/// connection: one chain check, no name search.
pub fn chain_trusted(
    verifier: &rustls::client::WebPkiServerVerifier,
    chain: &[CertificateDer<'_>],
) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    // webpki checks the chain before the name (rustls' WebPkiServerVerifier), so a name
    // error for a name no certificate has means the chain itself was good.
    let probe = ServerName::try_from("chain-check.invalid").expect("a literal valid DNS name");
    match verifier.verify_server_cert(leaf, intermediates, &probe, &[], UnixTime::now()) {
        Ok(_) => true,
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => true,
        Err(_) => false,
    }
}

/// The chain verifier for `chain_trusted`; `None` without roots to check against.
pub fn chain_verifier(
    roots: Arc<rustls::RootCertStore>,
) -> Option<Arc<rustls::client::WebPkiServerVerifier>> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .ok()
}

/// `may` and `encrypt` (no certificate check) presenting `client_cert`.
pub fn unauthenticated_client_config_with(
    client_cert: Arc<CertifiedKey>,
) -> Arc<rustls::ClientConfig> {
    unauthenticated_client_config_for(Some(client_cert), KxGroups::PostQuantum)
}

/// `may` and `encrypt` offering `groups`, presenting `client_cert` if there is one.
pub fn unauthenticated_client_config_for(
    client_cert: Option<Arc<CertifiedKey>>,
    groups: KxGroups,
) -> Arc<rustls::ClientConfig> {
    build_client_config(
        Arc::new(PolicyVerifier::new(CertCheck::Any, None)),
        rustls::DEFAULT_VERSIONS,
        client_cert,
        groups,
    )
}
