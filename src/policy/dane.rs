//! DANE (RFC 6698, RFC 7672) as data: TLSA records and whether a certificate chain matches
//! one. Pure: `outbound` looks the records up under DNSSEC and says whether the answer was
//! secure; delivery uses the match (issue 18).

use sha2::{Digest, Sha256, Sha512};

/// One TLSA record of `_25._tcp.<mx>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Tlsa {
    /// 2: DANE-TA (a trust anchor in the chain), 3: DANE-EE (the server's own certificate).
    /// 0 and 1 (PKIX-TA, PKIX-EE) are not used for SMTP (RFC 7672 section 3.1.3).
    pub usage: u8,
    /// 0: the whole certificate, 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: the selected bytes, 1: their SHA-256, 2: their SHA-512.
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether the record's parameters are ones RFC 7672 lets an SMTP client use.
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` (DER) is what the record names.
    pub fn names(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert.to_vec(),
            1 => match x509_parser::parse_x509_certificate(cert) {
                Ok((_, c)) => c.tbs_certificate.subject_pki.raw.to_vec(),
                Err(_) => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data,
            1 => Sha256::digest(&selected).as_slice() == self.data,
            2 => Sha512::digest(&selected).as_slice() == self.data,
            _ => false,
        }
    }
}

/// Presentation form (RFC 6698 section 2.2): `3 1 1 <hex>`.
impl std::fmt::Display for Tlsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        self.data.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What delivery found of a domain's DANE (RFC 7672 section 2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DaneFact {
    /// The MX records are not DNSSEC-signed: DANE does not apply (section 2.2).
    Insecure { reason: String },
    /// Signed MX records; per host, what its `_25._tcp` TLSA answer was.
    Secure { hosts: Vec<HostTlsa> },
    /// Validation failed for the MX records: nothing goes until it does (section 2.1.1).
    Bogus { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostTlsa {
    pub host: String,
    pub tlsa: TlsaAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "records", rename_all = "kebab-case")]
pub enum TlsaAnswer {
    /// Secured records, the usable ones (section 3.1).
    Records(Vec<Tlsa>),
    /// No records, none secured, or none usable: this host is not a DANE host.
    None,
    /// Validation failed: this host is not used (section 2.2).
    Bogus(String),
}

/// The usable record that `chain` (leaf first, DER) matches: DANE-EE against the leaf,
/// DANE-TA against a certificate the server sent after it. For DANE-TA the caller still
/// checks that the leaf chains to that anchor and names the MX (RFC 7672 section 3.1.2);
/// DANE-EE needs no name check (section 3.1.1).
pub fn matching<'a>(records: &'a [Tlsa], chain: &[Vec<u8>]) -> Option<&'a Tlsa> {
    let leaf = chain.first()?;
    records
        .iter()
        .filter(|r| r.usable())
        .find(|r| match r.usage {
            3 => r.names(leaf),
            2 => chain[1..].iter().any(|c| r.names(c)),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let cert = rcgen::CertificateParams::new(vec!["mx.example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().to_vec(), spki)
    }

    #[test]
    fn dane_ee_by_certificate_and_by_key() {
        let (leaf, spki) = cert();
        let (other, _) = cert();
        let by_key = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: Sha256::digest(&spki).to_vec(),
        };
        let by_cert = Tlsa {
            usage: 3,
            selector: 0,
            matching: 2,
            data: Sha512::digest(&leaf).to_vec(),
        };
        let exact = Tlsa {
            usage: 3,
            selector: 0,
            matching: 0,
            data: leaf.clone(),
        };
        for r in [&by_key, &by_cert, &exact] {
            assert!(r.names(&leaf), "{r:?}");
            assert!(!r.names(&other), "{r:?}");
        }
        assert_eq!(
            matching(std::slice::from_ref(&by_key), std::slice::from_ref(&leaf)),
            Some(&by_key)
        );
        assert_eq!(matching(std::slice::from_ref(&by_key), &[other]), None);
    }

    #[test]
    fn dane_ta_matches_an_anchor_after_the_leaf_and_pkix_usages_are_not_used() {
        let (leaf, _) = cert();
        let (anchor, _) = cert();
        let ta = Tlsa {
            usage: 2,
            selector: 0,
            matching: 1,
            data: Sha256::digest(&anchor).to_vec(),
        };
        assert_eq!(
            matching(std::slice::from_ref(&ta), &[leaf.clone(), anchor.clone()]),
            Some(&ta)
        );
        assert_eq!(
            matching(std::slice::from_ref(&ta), std::slice::from_ref(&anchor)),
            None,
            "the anchor is not the leaf"
        );
        let pkix_ee = Tlsa {
            usage: 1,
            selector: 0,
            matching: 0,
            data: leaf.clone(),
        };
        assert!(!pkix_ee.usable());
        assert_eq!(matching(&[pkix_ee], &[leaf]), None);
    }
}
