//! The configs our listeners (SMTP and the admin page) accept TLS with: the provider's
//! suites, TLS 1.2 and 1.3, the bound certificate from the resolver.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::resolver::CertResolver;
use super::{provider, signatures};

/// A server config over `resolver`; `alpn` for the admin listener (`http/1.1`).
pub fn server_config(resolver: Arc<CertResolver>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// SMTP's server config: as `server_config`, and every client is asked for a certificate
/// (Postfix's `smtpd_tls_ask_ccert`), never required. What the certificate is worth (the
/// Microsoft 365 connector) is decided after the handshake, against the settings then in
/// force; the handshake only proves the client holds its key.
pub fn smtp_server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_client_cert_verifier(Arc::new(AskClientCert {
            provider: provider(),
        }))
        .with_cert_resolver(Arc::new(NoteSigning(resolver)));
    config.alpn_protocols = Vec::new();
    Arc::new(config)
}

/// Serves what the inner resolver picks, and notes it with the scheme it will sign with
/// for the handshake's log line (`notes`).
#[derive(Debug)]
struct NoteSigning<R>(Arc<R>);

impl<R: rustls::server::ResolvesServerCert> rustls::server::ResolvesServerCert for NoteSigning<R> {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let schemes = super::notes::active().then(|| hello.signature_schemes().to_vec());
        let key = self.0.resolve(hello)?;
        if let Some(schemes) = schemes {
            super::notes::local_key(&key, &schemes, true);
        }
        Some(key)
    }
}

/// Takes any client certificate, or none, checking only the handshake signatures.
#[derive(Debug)]
struct AskClientCert {
    provider: Arc<CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AskClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}
