//! The certificate a listener serves: read from PEM (or generated at first start, the
//! system self-signed one), behind a resolver that swaps it for the next handshake when the
//! admin binds another.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{TlsError, provider};

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

/// What a listener serves: its certificate and, beside it, an ECDSA one for the clients that
/// accept ECDSA signatures (Postfix's `smtpd_tls_eccert_file` beside `smtpd_tls_cert_file`).
#[derive(Debug, Clone)]
pub struct Served {
    pub first: Arc<CertifiedKey>,
    pub ec: Option<Arc<CertifiedKey>>,
}

impl Served {
    /// What a client that accepts ECDSA, as postern's own (the CLI, another node), is served.
    pub fn to_ecdsa_clients(&self) -> &Arc<CertifiedKey> {
        self.ec.as_ref().unwrap_or(&self.first)
    }
}

/// Serves whichever certificates are bound now; `swap` rebinds for the next handshake while
/// handshakes already done keep theirs.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<Served>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: ArcSwap::from_pointee(Served {
                first: Arc::new(key),
                ec: None,
            }),
        })
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.swap_arc(Arc::new(key));
    }

    /// Serve `key` alone.
    pub fn swap_arc(&self, key: Arc<CertifiedKey>) {
        self.swap_served(Served {
            first: key,
            ec: None,
        });
    }

    pub fn swap_served(&self, served: Served) {
        self.current.store(Arc::new(served));
    }

    /// The certificate served to clients that cannot take the ECDSA one (all, without one).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load().first.clone()
    }

    pub fn served(&self) -> Arc<Served> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    /// The ECDSA certificate when its key can sign with a scheme the client offers in
    /// `signature_algorithms` (RFC 8446 section 4.2.3; RFC 5246 section 7.4.1.4.1 for
    /// TLS 1.2), else the other one: a client that offers only RSA schemes gets the RSA one.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.current.load();
        if let Some(ec) = &served.ec
            && ec.key.choose_scheme(hello.signature_schemes()).is_some()
        {
            return Some(ec.clone());
        }
        Some(served.first.clone())
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
}
