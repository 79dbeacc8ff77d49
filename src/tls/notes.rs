//! What a handshake signed with, noted while it runs. rustls tells which protocol, suite
//! and key-exchange group were negotiated, but not which signature schemes: Postfix's
//! `server-signature … server-digest …` and `client-signature … client-digest …`. So the
//! verifiers note the scheme the peer signed with, and the certificate resolvers the one
//! we sign with, into the notes of the handshake in progress: a task-local scope that
//! `noting` puts around the handshake future (every verifier and resolver call rustls makes
//! for it runs inside a poll of that future). Outside a scope nothing is noted.

use std::future::Future;
use std::sync::{Arc, Mutex};

use rustls::SignatureScheme;
use rustls::sign::CertifiedKey;

tokio::task_local! {
    static NOTES: Arc<Mutex<Noted>>;
}

/// The signatures of one handshake.
#[derive(Debug, Clone, Default)]
pub struct Noted {
    /// Ours: the certificate we presented and the scheme we signed with.
    pub local: Option<(Arc<CertifiedKey>, SignatureScheme)>,
    /// The peer's scheme (its key is the first of `peer_certificates()`).
    pub peer: Option<SignatureScheme>,
}

/// Run the handshake `fut`, noting its signatures.
pub async fn noting<F: Future>(fut: F) -> (F::Output, Noted) {
    let notes = Arc::new(Mutex::new(Noted::default()));
    let out = NOTES.scope(notes.clone(), fut).await;
    let noted = notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (out, noted)
}

/// Whether a handshake in this task is being noted.
pub(super) fn active() -> bool {
    NOTES.try_with(|_| ()).is_ok()
}

fn note(f: impl FnOnce(&mut Noted)) {
    let _ = NOTES.try_with(|n| f(&mut n.lock().unwrap_or_else(|e| e.into_inner())));
}

/// The peer signed the handshake with `scheme` (its CertificateVerify, checked).
pub(super) fn peer_signed(scheme: SignatureScheme) {
    note(|n| n.peer = Some(scheme));
}

/// We present `key`, offered `schemes` by the peer; the scheme is the one rustls will pick
/// with them: `choose_scheme` over the same list (a client: as rustls's client auth does;
/// a server: as its TLS 1.3 CertificateVerify does, after dropping what TLS 1.3 forbids.
/// TLS 1.2's choice is not logged, as Postfix logs none).
pub(super) fn local_key(key: &Arc<CertifiedKey>, schemes: &[SignatureScheme], server: bool) {
    if !active() {
        return;
    }
    let offered: Vec<SignatureScheme> = match server {
        true => schemes
            .iter()
            .copied()
            .filter(|s| allowed_in_tls13(*s))
            .collect(),
        false => schemes.to_vec(),
    };
    if let Some(signer) = key.key.choose_scheme(&offered) {
        let scheme = signer.scheme();
        note(|n| n.local = Some((key.clone(), scheme)));
    }
}

/// RFC 8446 section 4.2.3: no hash older than SHA-256 and no RSASSA-PKCS1-v1_5 or DSA in
/// TLS 1.3's CertificateVerify, by the scheme's hash and signature bytes (rustls drops the
/// same from the client's list before it signs).
fn allowed_in_tls13(scheme: SignatureScheme) -> bool {
    let [hash, sign] = u16::from(scheme).to_be_bytes();
    !matches!(hash, 0..=3) && !matches!(sign, 0..=2)
}

/// A signature in Postfix's words (`tls_misc.c`, `tls_get_signature_params`): the key's
/// algorithm, `ECDSA` with its curve in OpenSSL 3's name (`EVP_PKEY_get_group_name`:
/// `prime256v1`, `secp384r1`), `RSA-PSS` with its modulus bits (TLS 1.3 signs RSA with
/// PSS only), `ED25519`/`ED448` bare; and the digest the scheme hashes with (none for
/// EdDSA, which hashes nothing first).
pub fn signature_words(
    cert: &rustls_pki_types::CertificateDer<'_>,
    scheme: SignatureScheme,
) -> Option<(String, Option<String>)> {
    use x509_parser::oid_registry as oid;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.public_key();
    let algorithm = &spki.algorithm.algorithm;
    let name = if *algorithm == oid::OID_PKCS1_RSAENCRYPTION {
        match spki.parsed().ok()? {
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                format!("RSA-PSS ({} bits)", modulus_bits(rsa.modulus))
            }
            _ => return None,
        }
    } else if *algorithm == oid::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        let curve = match curve {
            c if c == oid::OID_EC_P256 => "prime256v1",
            c if c == oid::OID_NIST_EC_P384 => "secp384r1",
            c if c == oid::OID_NIST_EC_P521 => "secp521r1",
            _ => return Some(("ECDSA".into(), digest(scheme))),
        };
        format!("ECDSA ({curve})")
    } else if *algorithm == oid::OID_SIG_ED25519 {
        "ED25519".into()
    } else if *algorithm == oid::OID_SIG_ED448 {
        "ED448".into()
    } else if *algorithm == oid::OID_PKCS1_RSASSAPSS {
        // OpenSSL's short name for an RSA-PSS-only key; Postfix gives no bits for it.
        "RSASSA-PSS".into()
    } else {
        return None;
    };
    Some((name, digest(scheme)))
}

/// Bits of an RSA modulus (big-endian, maybe with leading zero bytes): OpenSSL's
/// `EVP_PKEY_bits`.
fn modulus_bits(modulus: &[u8]) -> usize {
    let start = modulus
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(modulus.len());
    match modulus.get(start) {
        Some(first) => (modulus.len() - start) * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// The digest in OpenSSL's short names (`OBJ_nid2sn`), as Postfix logs it.
fn digest(scheme: SignatureScheme) -> Option<String> {
    use SignatureScheme as S;
    let name = match scheme {
        S::ECDSA_NISTP256_SHA256 | S::RSA_PSS_SHA256 | S::RSA_PKCS1_SHA256 => "SHA256",
        S::ECDSA_NISTP384_SHA384 | S::RSA_PSS_SHA384 | S::RSA_PKCS1_SHA384 => "SHA384",
        S::ECDSA_NISTP521_SHA512 | S::RSA_PSS_SHA512 | S::RSA_PKCS1_SHA512 => "SHA512",
        S::ECDSA_SHA1_Legacy | S::RSA_PKCS1_SHA1 => "SHA1",
        _ => return None,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls13_drops_pkcs1_and_sha1() {
        use SignatureScheme as S;
        for s in [S::RSA_PSS_SHA256, S::ECDSA_NISTP256_SHA256, S::ED25519] {
            assert!(allowed_in_tls13(s), "{s:?}");
        }
        for s in [S::RSA_PKCS1_SHA256, S::RSA_PKCS1_SHA1, S::ECDSA_SHA1_Legacy] {
            assert!(!allowed_in_tls13(s), "{s:?}");
        }
    }

    #[test]
    fn rsa_modulus_bits_as_openssl_counts_them() {
        assert_eq!(modulus_bits(&[0x00, 0xc0, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x7f, 0]), 15);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        let mut m = vec![0u8];
        m.extend([0xff; 256]);
        assert_eq!(modulus_bits(&m), 2048);
    }

    #[test]
    fn keys_in_postfix_words() {
        let ecdsa = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        assert_eq!(
            signature_words(ecdsa.cert.der(), SignatureScheme::ECDSA_NISTP256_SHA256),
            Some(("ECDSA (prime256v1)".into(), Some("SHA256".into())))
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            signature_words(ed.der(), SignatureScheme::ED25519),
            Some(("ED25519".into(), None))
        );
    }
}
