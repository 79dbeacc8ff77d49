//! The STARTTLS certificate main.cf names (`smtpd_tls_cert_file` and `smtpd_tls_key_file`, or
//! `smtpd_tls_chain_files`): the files to import into the certificate store and bind.

use std::path::PathBuf;

use super::Imported;
use crate::postfix::conf::{MainCf, list};

/// A certificate main.cf names, to import into the certificate store and bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `smtpd_tls_chain_files`: the key and its chain in these files (then `cert` and `key`
    /// are where `split_chain`'s two halves are to be written).
    pub chain: Vec<PathBuf>,
}

/// The PEM of `smtpd_tls_chain_files` (one private key, then its certificates, in one or
/// more files) as the certificate chain and the key, each PEM.
pub fn split_chain(pem: &str) -> Result<(String, String), String> {
    let (mut certs, mut keys) = (String::new(), Vec::new());
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let label_end = rest[start + 11..]
            .find("-----")
            .ok_or("a BEGIN line without its end")?;
        let label = &rest[start + 11..start + 11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..]
            .find(&end_marker)
            .ok_or_else(|| format!("no {end_marker}"))?;
        let block = &rest[start..start + end + end_marker.len()];
        if label.contains("PRIVATE KEY") {
            keys.push(format!("{block}\n"));
        } else if label == "CERTIFICATE" {
            certs.push_str(block);
            certs.push('\n');
        }
        rest = &rest[start + end + end_marker.len()..];
    }
    match (keys.len(), certs.is_empty()) {
        (1, false) => Ok((certs, keys.remove(0))),
        (0, _) => Err("no private key".into()),
        (1, true) => Err("no certificate".into()),
        (n, _) => Err(format!(
            "{n} private keys: postern binds one certificate for STARTTLS"
        )),
    }
}

/// `smtpd_tls_cert_file` + `smtpd_tls_key_file`, or `smtpd_tls_chain_files` (which Postfix
/// prefers): a certificate to import and bind.
pub(super) fn certificate(cf: &MainCf, name: &str, out: &mut Imported) {
    const HOW: &str = "certificate postfix-smtpd (import it first: the `next:` line, or --apply), bound as inbound.certificate";
    let chain = cf
        .get("smtpd_tls_chain_files")
        .map(|v| list(&v))
        .unwrap_or_default();
    if !chain.is_empty() {
        if name == "smtpd_tls_chain_files" {
            out.certificates.push(CertFiles {
                name: "postfix-smtpd".into(),
                cert: PathBuf::from("postfix-smtpd.crt"),
                key: PathBuf::from("postfix-smtpd.key"),
                chain: chain.iter().map(PathBuf::from).collect(),
            });
            out.settings.inbound.certificate = Some("postfix-smtpd".into());
            out.carried(name, HOW);
        } else {
            out.carried(
                name,
                "not used: smtpd_tls_chain_files is set, and Postfix prefers it",
            );
        }
        return;
    }
    let (cert, key) = (cf.get("smtpd_tls_cert_file"), cf.get("smtpd_tls_key_file"));
    let (Some(cert), Some(key)) = (
        cert.filter(|c| !c.is_empty()),
        key.filter(|k| !k.is_empty()),
    ) else {
        out.dropped(
            name,
            "needs both smtpd_tls_cert_file and smtpd_tls_key_file",
            true,
        );
        return;
    };
    if !out.certificates.iter().any(|c| c.name == "postfix-smtpd") {
        out.certificates.push(CertFiles {
            name: "postfix-smtpd".into(),
            cert: PathBuf::from(&cert),
            key: PathBuf::from(&key),
            chain: Vec::new(),
        });
        out.settings.inbound.certificate = Some("postfix-smtpd".into());
    }
    out.carried(name, HOW);
}

/// `smtpd_tls_eccert_file` + `smtpd_tls_eckey_file` (whose default is the certificate's
/// file, postconf(5)): the ECDSA certificate Postfix serves beside the other, bound as
/// `inbound.ec_certificate`; alone (no `smtpd_tls_cert_file`), the certificate itself.
pub(super) fn ec_certificate(cf: &MainCf, name: &str, out: &mut Imported) {
    let chain = cf.get("smtpd_tls_chain_files").unwrap_or_default();
    if !chain.trim().is_empty() {
        let why = "not used: smtpd_tls_chain_files is set, and Postfix prefers it";
        return out.carried(name, why);
    }
    let Some(cert) = cf.get("smtpd_tls_eccert_file").filter(|c| !c.is_empty()) else {
        return out.dropped(name, "needs smtpd_tls_eccert_file", true);
    };
    let key = cf
        .get("smtpd_tls_eckey_file")
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| cert.clone());
    let alone = cf.get("smtpd_tls_cert_file").is_none_or(|c| c.is_empty());
    let field = if alone {
        "certificate"
    } else {
        "ec_certificate"
    };
    if !out
        .certificates
        .iter()
        .any(|c| c.name == "postfix-smtpd-ec")
    {
        out.certificates.push(CertFiles {
            name: "postfix-smtpd-ec".into(),
            cert: PathBuf::from(&cert),
            key: PathBuf::from(&key),
            chain: Vec::new(),
        });
        let bound = Some("postfix-smtpd-ec".to_string());
        match alone {
            true => out.settings.inbound.certificate = bound,
            false => out.settings.inbound.ec_certificate = bound,
        }
    }
    out.carried(
        name,
        format!("certificate postfix-smtpd-ec (import it first: the `next:` line, or --apply), bound as inbound.{field}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_files_split_into_key_and_chain() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nLEAFDATA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nROOTDATA\n-----END CERTIFICATE-----\n";
        let (certs, key) = split_chain(pem).unwrap();
        assert!(key.contains("AAA") && !key.contains("LEAFDATA"));
        assert!(
            certs.find("LEAFDATA").unwrap() < certs.find("ROOTDATA").unwrap(),
            "order kept"
        );
        assert!(
            split_chain("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n").is_err()
        );
        let two = format!("{pem}{pem}");
        assert!(split_chain(&two).unwrap_err().contains("2 private keys"));
    }
}

#[cfg(test)]
mod ec_tests {
    use super::*;

    fn imported(main_cf: &str) -> Imported {
        let cf = MainCf::parse(main_cf).unwrap();
        let mut out = Imported::default();
        // main.cf's order, whichever comes first.
        for name in main_cf.lines().filter_map(|l| l.split(' ').next()) {
            if cf.get(name).is_some() {
                match name {
                    "smtpd_tls_cert_file" => certificate(&cf, name, &mut out),
                    "smtpd_tls_eccert_file" => ec_certificate(&cf, name, &mut out),
                    _ => {}
                }
            }
        }
        out
    }

    #[test]
    fn the_ecdsa_certificate_is_bound_beside_the_other_or_alone() {
        let out = imported(
            "smtpd_tls_cert_file = /c/rsa.pem\nsmtpd_tls_key_file = /c/rsa.key\nsmtpd_tls_eccert_file = /c/ec.pem\n",
        );
        let inbound = &out.settings.inbound;
        assert_eq!(inbound.certificate.as_deref(), Some("postfix-smtpd"));
        assert_eq!(inbound.ec_certificate.as_deref(), Some("postfix-smtpd-ec"));
        let ec = &out.certificates[1];
        // smtpd_tls_eckey_file defaults to the certificate's file (postconf(5)).
        assert_eq!(
            (ec.cert.to_str(), ec.key.to_str()),
            (Some("/c/ec.pem"), Some("/c/ec.pem"))
        );

        let first = imported(
            "smtpd_tls_eccert_file = /c/ec.pem\nsmtpd_tls_cert_file = /c/rsa.pem\nsmtpd_tls_key_file = /c/rsa.key\n",
        );
        assert_eq!(
            first.settings.inbound, out.settings.inbound,
            "in either order"
        );

        let out = imported("smtpd_tls_eccert_file = /c/ec.pem\nsmtpd_tls_eckey_file = /c/ec.key\n");
        let inbound = &out.settings.inbound;
        assert_eq!(inbound.certificate.as_deref(), Some("postfix-smtpd-ec"));
        assert_eq!(inbound.ec_certificate, None);
        assert_eq!(out.certificates[0].key.to_str(), Some("/c/ec.key"));
    }
}
