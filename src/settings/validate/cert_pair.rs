//! An ECDSA and an RSA certificate bound at once (`inbound.ec_certificate` beside
//! `inbound.certificate`, the same for `admin`): as Postfix's `smtpd_tls_eccert_file` beside
//! `smtpd_tls_cert_file`, the ECDSA one goes to clients that accept ECDSA signatures, the
//! other to the rest. Two of one kind would leave a client without a certificate it can
//! verify, so the pair is one ECDSA and one RSA.

use super::{FieldError, field_error};
use crate::settings::cert_record::{Kind, SYSTEM, StoredCert};

/// What a certificate's key is, as far as choosing one per handshake cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ecdsa,
    Rsa,
    /// Ed25519 or another: neither of the pair.
    Other,
}

impl KeyKind {
    /// "an ECDSA key", "an RSA key".
    pub fn words(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "an ECDSA key",
            KeyKind::Rsa => "an RSA key",
            KeyKind::Other => "a key neither ECDSA nor RSA",
        }
    }
}

/// The key of the leaf (the first certificate) of `chain_pem`; `None` when unreadable.
pub fn leaf_key(chain_pem: &str) -> Option<KeyKind> {
    use x509_parser::oid_registry as oid;
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let algorithm = &cert.public_key().algorithm.algorithm;
    Some(if *algorithm == oid::OID_KEY_TYPE_EC_PUBLIC_KEY {
        KeyKind::Ecdsa
    } else if *algorithm == oid::OID_PKCS1_RSAENCRYPTION {
        KeyKind::Rsa
    } else {
        KeyKind::Other
    })
}

/// The key of the certificate called `name` as stored: the system one is ECDSA (generated
/// so); an ACME one is read from its files at serving time, unknown here (`None`).
fn stored_key(name: &str, stored: &[StoredCert]) -> Option<KeyKind> {
    if name == SYSTEM {
        return Some(KeyKind::Ecdsa);
    }
    let cert = stored.iter().find(|c| c.name == name)?;
    match cert.kind {
        Kind::Acme => None,
        _ => leaf_key(&cert.chain_pem),
    }
}

/// `section.ec_certificate` beside `section.certificate` (`first`): a stored certificate,
/// not the system one, with an ECDSA key, beside a bound RSA one. The first's own rules
/// (known, not the system one for SMTP) are checked before this.
pub fn check_pair(
    section: &str,
    first: Option<&str>,
    ec: Option<&str>,
    stored: &[StoredCert],
) -> Result<(), FieldError> {
    let Some(ec) = ec.filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    let ec_field = format!("{section}.ec_certificate");
    let error = |field: &str, error: String| Err(field_error(field, error));
    if ec == SYSTEM {
        return error(
            &ec_field,
            "the system self-signed certificate cannot be served beside another: choose an imported ECDSA certificate".into(),
        );
    }
    if !stored.iter().any(|c| c.name == ec) {
        return error(
            &ec_field,
            format!("no certificate named {ec:?}: import it first (postern cert import)"),
        );
    }
    let Some(first) = first.filter(|n| !n.is_empty()) else {
        return error(
            &ec_field,
            "an ECDSA certificate is served beside an RSA one: bind the RSA one as the certificate first".into(),
        );
    };
    if let Some(kind) = stored_key(ec, stored).filter(|k| *k != KeyKind::Ecdsa) {
        return error(
            &ec_field,
            format!(
                "certificate {ec:?} has {}: this one must be ECDSA (as Postfix's smtpd_tls_eccert_file), the RSA one is the certificate",
                kind.words()
            ),
        );
    }
    if let Some(kind) = stored_key(first, stored).filter(|k| *k != KeyKind::Rsa) {
        return error(
            &format!("{section}.certificate"),
            format!(
                "certificate {first:?} has {}: beside the ECDSA certificate {ec:?} this one must be RSA (as Postfix's smtpd_tls_cert_file beside smtpd_tls_eccert_file)",
                kind.words()
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, alg: &'static rcgen::SignatureAlgorithm) -> StoredCert {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        StoredCert {
            name: name.into(),
            kind: Kind::Imported,
            chain_pem: cert.pem(),
            key_pem: None,
            added_unix: 0,
            id: None,
        }
    }

    #[test]
    fn the_pair_is_one_ecdsa_and_one_rsa_and_errors_name_the_field() {
        let store = [
            stored("ec", &rcgen::PKCS_ECDSA_P256_SHA256),
            stored("ec2", &rcgen::PKCS_ECDSA_P384_SHA384),
            stored("rsa", &rcgen::PKCS_RSA_SHA256),
        ];
        assert_eq!(leaf_key(&store[2].chain_pem), Some(KeyKind::Rsa));
        let check = |first: Option<&str>, ec: &str| {
            check_pair("inbound", first, Some(ec), &store).map_err(|e| (e.field, e.error))
        };
        assert_eq!(check(Some("rsa"), "ec"), Ok(()));
        assert_eq!(check_pair("inbound", Some("ec"), None, &store), Ok(()));
        let field = |r: Result<(), (String, String)>| r.unwrap_err().0;
        assert_eq!(field(check(Some("ec"), "ec2")), "inbound.certificate");
        assert_eq!(field(check(Some("ec"), "rsa")), "inbound.ec_certificate");
        assert_eq!(
            field(check(Some("rsa"), "nosuch")),
            "inbound.ec_certificate"
        );
        assert_eq!(
            field(check(Some("rsa"), "system")),
            "inbound.ec_certificate"
        );
        assert_eq!(field(check(None, "ec")), "inbound.ec_certificate");
        let (_, why) = check(Some("ec"), "ec2").unwrap_err();
        assert!(why.contains("must be RSA"), "{why}");
    }
}
