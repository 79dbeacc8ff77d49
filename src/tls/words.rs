//! TLS failures in words an admin reads in a delivery line, a bounce or `check-tls`: what is
//! wrong with the certificate and when, never a library's Debug form, its UNIX seconds or
//! its documentation links.

use rustls::CertificateError;
use rustls_pki_types::{ServerName, UnixTime};

/// A handshake error as the delivery line says it.
pub fn handshake_error(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => rustls_error(tls),
        None => crate::fsutil::os_text(e),
    }
}

/// A rustls error without its wrapping ("unexpected error: ", "invalid peer certificate: ").
pub fn rustls_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::General(text) => text.clone(),
        rustls::Error::InvalidCertificate(c) => certificate_error(c),
        rustls::Error::AlertReceived(alert) => {
            format!("the server sent the TLS alert {}", alert_words(*alert))
        }
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".into(),
        rustls::Error::PeerIncompatible(_) => {
            "no TLS version or cipher suite in common with the server".into()
        }
        other => strip_links(&other.to_string()),
    }
}

/// What is wrong with a certificate: `certificate not valid for name mx.example (it names
/// wrong.invalid)`, `certificate expired on 2026-10-01`.
pub fn certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no names".to_string()
            } else {
                presented
                    .iter()
                    .map(|n| presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "certificate not valid for name {} (it names {names})",
                server_name(expected)
            )
        }
        CertificateError::NotValidForName => "certificate not valid for the name checked".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("certificate expired on {}", day(*not_after))
        }
        CertificateError::Expired => "certificate expired".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("certificate not valid before {}", day(*not_before))
        }
        CertificateError::NotValidYet => "certificate not valid yet".into(),
        CertificateError::UnknownIssuer => {
            "certificate issuer unknown: the chain does not lead to a trusted root".into()
        }
        CertificateError::BadSignature => "certificate signature invalid".into(),
        CertificateError::Revoked => "certificate revoked".into(),
        CertificateError::BadEncoding => "certificate cannot be parsed".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not for TLS servers (extended key usage)".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "certificate signed with an unsupported algorithm".into()
        }
        CertificateError::Other(o) => verifier_words(&format!("{o:?}")),
        other => strip_links(&other.to_string()),
    }
}

/// webpki's own refusals reach rustls as `Other(OtherError(CaUsedAsEndEntity))`: the innermost
/// name, in words; the common one (a self-signed certificate made as a CA, which
/// `openssl req -x509` makes by default) said as such.
fn verifier_words(debug: &str) -> String {
    let inner = debug
        .trim_end_matches(')')
        .rsplit('(')
        .next()
        .unwrap_or(debug);
    match inner {
        "CaUsedAsEndEntity" => "the server presented a CA certificate as its own (a self-signed certificate made as a CA): it chains to no trusted root".into(),
        "EndEntityUsedAsCa" => "the chain uses a server certificate as a CA".into(),
        name if name.chars().all(|c| c.is_ascii_alphanumeric()) => {
            let mut words = String::from("certificate refused: ");
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    words.push(' ');
                }
                words.push(c.to_ascii_lowercase());
            }
            words
        }
        _ => format!("certificate refused: {debug}"),
    }
}

/// webpki hands the certificate's names over in their Debug form (`DnsName("x")`,
/// `IpAddress(192.0.2.1)`): the name itself is what the admin needs.
pub(crate) fn presented_name(debug: &str) -> &str {
    match debug.split_once('(') {
        Some((kind, rest)) if kind.chars().all(|c| c.is_ascii_alphabetic()) => {
            rest.strip_suffix(')').unwrap_or(rest).trim_matches('"')
        }
        _ => debug,
    }
}

fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// `2026-10-01`, the day a validity bound falls on (UTC).
pub(crate) fn day(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} seconds after 1970"))
}

fn alert_words(alert: rustls::AlertDescription) -> String {
    // `BadCertificate` -> `bad certificate`, as the RFC 8446 alert names read.
    let debug = format!("{alert:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A library's "see https://..." is no help to an admin reading a bounce.
fn strip_links(text: &str) -> String {
    match text.find(" (see http").or_else(|| text.find("; see http")) {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_refusals_in_words() {
        assert_eq!(
            verifier_words("OtherError(CaUsedAsEndEntity)"),
            "the server presented a CA certificate as its own (a self-signed certificate made as a CA): it chains to no trusted root"
        );
        assert_eq!(
            verifier_words("OtherError(RequiredEkuNotFound)"),
            "certificate refused: required eku not found"
        );
    }

    #[test]
    fn names_and_dates_in_words() {
        let e = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec![
                "DnsName(\"wrong.invalid\")".into(),
                "IpAddress(192.0.2.1)".into(),
            ],
        };
        assert_eq!(
            certificate_error(&e),
            "certificate not valid for name 127.0.0.1 (it names wrong.invalid, 192.0.2.1)"
        );
        let e = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_796_000_000)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_790_812_800)),
        };
        assert_eq!(certificate_error(&e), "certificate expired on 2026-10-01");
        assert_eq!(
            rustls_error(&rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
            )),
            "the server sent the TLS alert bad certificate"
        );
        assert_eq!(strip_links("x (see https://docs.rs/y)"), "x");
    }
}
