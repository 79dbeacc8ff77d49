//! rustls configuration: one crypto provider (aws-lc-rs), TLS 1.2 and 1.3 with ECDHE suites
//! only, a certificate resolver that can be swapped at run time, the system self-signed
//! certificate, and the TLS facts that log lines and Received headers report.

pub mod words;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ProtocolVersion, ServerConfig};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Install aws-lc-rs as the process-wide provider (the one provider we build with).
/// Idempotent: a second call finds it installed.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// aws-lc-rs restricted to forward-secret AEAD suites: TLS 1.3's three, and TLS 1.2's
/// ECDHE with AES-GCM or ChaCha20-Poly1305. No RSA key exchange, no CBC.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and key from PEM text. `what` names the source in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let pem_err = |message: String| TlsError::Pem {
        what: what.to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err(format!("private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(certified)
}

/// The certificate postern generates at first start (`data/tls/system.crt` and `.key`,
/// 0600): served for STARTTLS and the admin page until the admin binds another.
pub fn system_certificate(data_dir: &Path, hostname: &str) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("system.crt"), dir.join("system.key"));
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Io { path, source }
    };
    if !cert_path.exists() {
        crate::fsutil::private_dir(&dir).map_err(io(&dir))?;
        let mut params = rcgen::CertificateParams::new(vec![
            hostname.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hostname);
        params.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            "postern system self-signed",
        );
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        crate::fsutil::write_secret(&key_path, key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        crate::fsutil::write_secret(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
        tracing::info!(target: "postern/tls", "generated the system self-signed certificate for {hostname} in {}", cert_path.display());
    }
    let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
    let key = std::fs::read(&key_path).map_err(io(&key_path))?;
    Ok((cert, key))
}

/// Serves whichever certificate is bound now; `swap` rebinds for the next handshake while
/// handshakes already done keep theirs.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: ArcSwap::from_pointee(key),
        })
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn swap_arc(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

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
        .with_cert_resolver(resolver);
    config.alpn_protocols = Vec::new();
    Arc::new(config)
}

/// Handshake signatures, checked the same way by every verifier of ours (whatever each
/// decides about the certificate, the peer must hold its key).
mod signatures {
    use super::*;

    pub fn tls12(
        provider: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    pub fn tls13(
        provider: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    pub fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
        provider
            .signature_verification_algorithms
            .supported_schemes()
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

/// What was negotiated, in the words Postfix logs use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// OpenSSL's name, as Postfix logs it: `TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: String,
    /// Symmetric key bits (Postfix's `(256/256 bits)`); the minimum-strength policy compares these.
    pub bits: u16,
}

impl TlsInfo {
    pub fn from_connection(conn: &rustls::CommonState) -> Option<TlsInfo> {
        let protocol = match conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let suite = conn.negotiated_cipher_suite()?.suite();
        let (cipher, bits) = openssl_name(suite);
        Some(TlsInfo {
            protocol: protocol.to_string(),
            cipher,
            bits,
        })
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`
    pub fn describe(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        )
    }
}

fn openssl_name(suite: CipherSuite) -> (String, u16) {
    let (name, bits) = match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

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
    build_client_config(Arc::new(PolicyVerifier::new(check, None)), versions, None)
}

fn build_client_config(
    verifier: Arc<PolicyVerifier>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_cert: Option<Arc<CertifiedKey>>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
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
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What the client demands of a server's certificate. Whatever the check, handshake
/// signatures are verified, so the peer holds the key of the certificate it showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertCheck {
    /// Any certificate: outbound `may`/`encrypt` (encryption without authentication) and the
    /// check-tls probe, which reports what it was shown.
    Any,
    /// Exactly this certificate: the CLI talking to its own admin listener, tests.
    Pinned(CertificateDer<'static>),
    /// `verify` and `secure`: a chain to the trust roots and one of these names.
    Names(Vec<String>),
    /// `fingerprint`: SHA-256 of the certificate or its public key (lower-case hex).
    Pins(Vec<String>),
    /// Any certificate is accepted, but it is checked as `Names` would check it and the
    /// result kept: MTA-STS `testing` (and `monitor`) deliver anyway and report what
    /// `enforce` would have stopped (RFC 8461 section 5).
    Observe(Vec<String>),
    /// DANE (RFC 7672 section 3): the chain matches one of these DNSSEC-secured TLSA
    /// records. DANE-EE: the leaf itself, no name or date check (section 3.1.1); DANE-TA: the
    /// leaf chains to the named anchor and names one of `names` (section 3.1.2).
    Dane {
        records: Vec<crate::policy::dane::Tlsa>,
        names: Vec<String>,
    },
}

/// Why a certificate check failed, in the kinds TLS-RPT reports (RFC 8460 section 4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertProblem {
    /// The chain is good but no name matched.
    HostMismatch,
    Expired,
    /// The chain does not lead to a trusted root.
    NotTrusted,
    /// Anything else (bad signature, wrong purpose, unparsable).
    Other,
}

impl CertProblem {
    pub fn of(e: &rustls::Error) -> CertProblem {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::NotValidForName | C::NotValidForNameContext { .. } => CertProblem::HostMismatch,
                C::Expired | C::ExpiredContext { .. } => CertProblem::Expired,
                C::UnknownIssuer => CertProblem::NotTrusted,
                _ => CertProblem::Other,
            },
            _ => CertProblem::Other,
        }
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
) -> Result<(Arc<rustls::ClientConfig>, Arc<PolicyVerifier>), TlsError> {
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(PolicyVerifier::new(check, Some(webpki)));
    Ok((
        build_client_config(verifier.clone(), rustls::DEFAULT_VERSIONS, client_cert),
        verifier,
    ))
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
    build_client_config(
        Arc::new(PolicyVerifier::new(CertCheck::Any, None)),
        rustls::DEFAULT_VERSIONS,
        Some(client_cert),
    )
}

#[derive(Debug)]
pub struct PolicyVerifier {
    check: CertCheck,
    /// Chain validation against the trust roots, for `Names`.
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    verified: std::sync::Mutex<Option<String>>,
    /// Why the last check failed (or, at `Observe`, would have).
    problem: std::sync::Mutex<Option<CertProblem>>,
}

impl PolicyVerifier {
    fn new(
        check: CertCheck,
        webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    ) -> PolicyVerifier {
        PolicyVerifier {
            check,
            webpki,
            provider: provider(),
            verified: std::sync::Mutex::new(None),
            problem: std::sync::Mutex::new(None),
        }
    }

    /// Why the certificate failed the check (at `Observe`: would have failed it).
    pub fn problem(&self) -> Option<CertProblem> {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_problem(&self, e: &rustls::Error) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(CertProblem::of(e));
    }

    fn check_dane(
        &self,
        records: &[crate::policy::dane::Tlsa],
        names: &[String],
        (leaf, intermediates): (&CertificateDer<'_>, &[CertificateDer<'_>]),
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(leaf)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        let Some(record) = crate::policy::dane::matching(records, &chain) else {
            *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(CertProblem::Other);
            let shown = match records.first() {
                Some(r) => format!("TLSA {r}"),
                None => "no DNSSEC-secured TLSA records".into(),
            };
            return Err(rustls::Error::General(format!(
                "Server certificate not verified by DANE: the chain matches none of {} record(s) ({shown})",
                records.len()
            )));
        };
        if record.usage == 3 {
            return self.accept(format!("DANE-EE TLSA {record}"));
        }
        // DANE-TA: the matching certificate is the anchor; the leaf must chain to it and
        // carry the MX host's name.
        let anchor_at = chain[1..]
            .iter()
            .position(|c| record.names(c))
            .map_or(0, |i| i + 1);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(chain[anchor_at].clone()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let below: Vec<CertificateDer<'_>> = intermediates[..anchor_at.saturating_sub(1)].to_vec();
        let mut last = None;
        for name in names {
            let Ok(server_name) = ServerName::try_from(name.clone()) else {
                continue;
            };
            match webpki.verify_server_cert(leaf, &below, &server_name, &[], now) {
                Ok(_) => return self.accept(format!("DANE-TA TLSA {record} for {name}")),
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| rustls::Error::General("no valid name to check".into()));
        self.note_problem(&e);
        Err(rustls::Error::General(format!(
            "Server certificate not verified by DANE-TA for {}: {}",
            names.join(", "),
            words::rustls_error(&e)
        )))
    }

    /// A chain to the roots and one of `names`: the name it was verified for, or the error
    /// of the last name tried.
    fn check_names(
        &self,
        names: &[String],
        (end_entity, intermediates): (&CertificateDer<'_>, &[CertificateDer<'_>]),
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<String, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::General(
                "no trust roots to verify against".into(),
            ));
        };
        let mut last = None;
        for name in names {
            let Ok(server_name) = ServerName::try_from(name.clone()) else {
                continue;
            };
            match webpki.verify_server_cert(end_entity, intermediates, &server_name, ocsp, now) {
                Ok(_) => return Ok(name.clone()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| rustls::Error::General("no valid name to check".into())))
    }

    pub fn verified_name(&self) -> Option<String> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn accept(&self, what: String) -> Result<ServerCertVerified, rustls::Error> {
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
        Ok(ServerCertVerified::assertion())
    }
}

/// SHA-256 of the certificate and of its SubjectPublicKeyInfo, lower-case hex.
pub fn fingerprints(cert: &CertificateDer<'_>) -> (String, Option<String>) {
    use sha2::{Digest, Sha256};
    let hex = |b: &[u8]| {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let spki = x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .map(|(_, c)| hex(c.public_key().raw));
    (hex(cert.as_ref()), spki)
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            CertCheck::Any => Ok(ServerCertVerified::assertion()),
            CertCheck::Pinned(cert) if cert.as_ref() == end_entity.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            CertCheck::Pinned(_) => Err(rustls::Error::General(
                "the server's certificate is not the pinned one".into(),
            )),
            CertCheck::Names(names) => {
                // The names come from the policy, not from the connection's SNI: for `secure`
                // that is the recipient domain, whatever MX host we reached.
                match self.check_names(names, (end_entity, intermediates), ocsp, now) {
                    Ok(name) => self.accept(name),
                    Err(e) => {
                        self.note_problem(&e);
                        Err(rustls::Error::General(format!(
                            "Server certificate not verified for {}: {}",
                            names.join(", "),
                            words::rustls_error(&e)
                        )))
                    }
                }
            }
            CertCheck::Dane { records, names } => {
                self.check_dane(records, names, (end_entity, intermediates), now)
            }
            CertCheck::Observe(names) => {
                match self.check_names(names, (end_entity, intermediates), ocsp, now) {
                    Ok(name) => return self.accept(name),
                    Err(e) => self.note_problem(&e),
                }
                Ok(ServerCertVerified::assertion())
            }
            CertCheck::Pins(pins) => {
                let (cert, spki) = fingerprints(end_entity);
                if pins.contains(&cert) || spki.as_ref().is_some_and(|s| pins.contains(s)) {
                    self.accept(format!(
                        "fingerprint {}",
                        if pins.contains(&cert) {
                            &cert
                        } else {
                            spki.as_deref().unwrap_or("")
                        }
                    ))
                } else {
                    Err(rustls::Error::General(format!(
                        "Server certificate not verified: fingerprint {cert} matches no pin"
                    )))
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_certificate_is_generated_once_with_private_key_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (cert1, key1) = system_certificate(dir.path(), "mx.example").unwrap();
        let (cert2, key2) = system_certificate(dir.path(), "other.example").unwrap();
        assert_eq!((cert1.clone(), key1.clone()), (cert2, key2));
        certified_key_from_pem(&cert1, &key1, "system").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/system.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn pem_errors_name_the_part() {
        let err = certified_key_from_pem(b"junk", b"junk", "smtp.tls_cert").unwrap_err();
        assert!(err.to_string().starts_with("smtp.tls_cert: "), "{err}");
    }

    /// RFC 7672 section 3.1: DANE-TA needs the chain to reach the named anchor and the MX
    /// name on the leaf; DANE-EE takes the leaf as it is, expired or not.
    #[test]
    fn dane_ta_and_ee_checks() {
        use crate::policy::dane::Tlsa;
        use sha2::{Digest, Sha256};
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mx.ta.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let stranger = rcgen::generate_simple_self_signed(vec!["mx.ta.example".into()]).unwrap();
        let (leaf, ca) = (leaf.der().clone(), ca.der().clone());
        let check = |records: Vec<Tlsa>,
                     name: &str,
                     chain: (&CertificateDer<'_>, &[CertificateDer<'_>])| {
            let v = PolicyVerifier::new(
                CertCheck::Dane {
                    records,
                    names: vec![name.to_string()],
                },
                None,
            );
            let sni = ServerName::try_from("mx.ta.example").unwrap();
            v.verify_server_cert(chain.0, chain.1, &sni, &[], UnixTime::now())
                .map(|_| v.verified_name().unwrap_or_default())
                .map_err(|e| e.to_string())
        };
        let ta = |selector: u8, bytes: &[u8]| Tlsa {
            usage: 2,
            selector,
            matching: 1,
            data: Sha256::digest(bytes).to_vec(),
        };
        let ca_spki = x509_parser::parse_x509_certificate(&ca)
            .unwrap()
            .1
            .public_key()
            .raw
            .to_vec();
        for record in [ta(0, &ca), ta(1, &ca_spki)] {
            let ok = check(
                vec![record.clone()],
                "mx.ta.example",
                (&leaf, std::slice::from_ref(&ca)),
            );
            assert!(
                ok.as_deref()
                    .is_ok_and(|n| n.starts_with("DANE-TA TLSA 2 ")),
                "{ok:?}"
            );
            let wrong = check(
                vec![record.clone()],
                "other.example",
                (&leaf, std::slice::from_ref(&ca)),
            );
            assert!(
                wrong
                    .unwrap_err()
                    .contains("not verified by DANE-TA for other.example")
            );
            // The anchor is in the chain, but the leaf is not signed by it.
            let forged = check(
                vec![record],
                "mx.ta.example",
                (stranger.cert.der(), std::slice::from_ref(&ca)),
            );
            assert!(forged.is_err());
        }
        // DANE-EE: the leaf's own key, no name or issuer asked.
        let mut params =
            rcgen::CertificateParams::new(vec!["anything.example".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let expired = params.self_signed(&key).unwrap();
        let spki = x509_parser::parse_x509_certificate(expired.der())
            .unwrap()
            .1
            .public_key()
            .raw
            .to_vec();
        let ee = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: Sha256::digest(&spki).to_vec(),
        };
        let ok = check(vec![ee.clone()], "mx.ta.example", (expired.der(), &[]));
        assert!(
            ok.as_deref()
                .is_ok_and(|n| n.starts_with("DANE-EE TLSA 3 1 1 ")),
            "{ok:?}"
        );
        assert!(check(vec![ee], "mx.ta.example", (&leaf, &[])).is_err());
        assert!(
            check(Vec::new(), "mx.ta.example", (&leaf, &[]))
                .unwrap_err()
                .contains("no DNSSEC-secured TLSA records")
        );
    }

    #[test]
    fn only_forward_secret_aead_suites() {
        for s in provider().cipher_suites.iter() {
            let name = format!("{:?}", s.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(!name.contains("CBC"), "{name}");
        }
    }
}
