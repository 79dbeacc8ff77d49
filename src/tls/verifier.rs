//! The client's check of a server certificate, as a TLS policy demands it: none, a pinned
//! certificate, a chain and a name, pinned fingerprints, DANE, or MTA-STS `testing`'s
//! observation; and why a check failed, in TLS-RPT's kinds.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{provider, signatures, words};

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

/// The verifier inside every delivery client config: checks what `check` demands, and
/// remembers which name (or pin) the certificate passed for, or why it failed.
#[derive(Debug)]
pub struct PolicyVerifier {
    check: CertCheck,
    /// Chain validation against the trust roots, for `Names`.
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// Checks handshake signatures (the config offers the same signature algorithms).
    pub(super) provider: Arc<rustls::crypto::CryptoProvider>,
    verified: std::sync::Mutex<Option<String>>,
    /// Why the last check failed (or, at `Observe`, would have).
    problem: std::sync::Mutex<Option<CertProblem>>,
}

impl PolicyVerifier {
    /// Built by the client configs only (`policy_client_config` and the others): a verifier
    /// is of use inside the config whose handshakes it checks.
    pub(super) fn new(
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
}
