//! The checks an imported certificate passes before it is stored: PEM that is what its field
//! says (with the line when it is not), an unencrypted key that matches the certificate, a
//! chain in which each issuer really signed its child, validity now, no weak RSA key; and the
//! warnings an admin should see (expiring soon, host name not among the names). Pure: text
//! and the time in, facts or the first precise error out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

/// Which input was wrong, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Cert,
    Key,
    Chain,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Cert => "cert",
            Field::Key => "key",
            Field::Chain => "chain",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub field: Field,
    pub error: String,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field.name(), self.error)
    }
}

fn err(field: Field, error: impl Into<String>) -> CheckError {
    CheckError {
        field,
        error: error.into(),
    }
}

/// What the admin sees of a certificate (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub not_after_unix: i64,
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub sha256: String,
    /// Certificates in the chain above it that were given.
    pub chain_length: usize,
}

impl Facts {
    pub fn days_left(&self, now_unix: i64) -> i64 {
        (self.not_after_unix - now_unix).div_euclid(86_400)
    }

    /// What the audit log names the certificate by.
    pub fn id(&self) -> crate::settings::certificates::CertId {
        crate::settings::certificates::CertId {
            subject: self.subject.clone(),
            serial: self.serial.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Material that passed every check, in canonical PEM (comments and blank lines dropped).
pub struct Checked {
    pub facts: Facts,
    pub warnings: Vec<String>,
    /// Leaf first, then its issuers.
    pub chain_pem: String,
    pub key_pem: String,
    pub key: CertifiedKey,
}

/// Below this many days before expiry an import succeeds with a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// RSA keys shorter than this are refused.
pub const MIN_RSA_BITS: usize = 2048;

/// Check `cert` (the certificate, optionally followed by its chain), `key` and an optional
/// separate `chain` as of `now_unix`; `hostname` is the server's own name (`myhostname`).
pub fn check(
    cert: &str,
    key: &str,
    chain: Option<&str>,
    hostname: &str,
    now_unix: i64,
) -> Result<Checked, CheckError> {
    let mut ders = certificates(cert, Field::Cert)?;
    let given_chain = match chain.filter(|c| !c.trim().is_empty()) {
        Some(c) => certificates(c, Field::Chain)?,
        None => Vec::new(),
    };
    let in_cert_field = ders.len();
    ders.extend(given_chain);
    let parsed = parse_all(&ders, in_cert_field)?;
    let leaf = &parsed[0];
    check_validity(leaf, now_unix, Field::Cert, "the certificate")?;
    check_key_strength(leaf)?;
    let key_block = key_block(key)?;
    let chain_der: Vec<CertificateDer<'static>> = ders
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let certified = CertifiedKey::from_der(chain_der, key_der(&key_block), &crate::tls::provider())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                err(Field::Key, "the private key does not match the certificate")
            }
            other => err(Field::Key, format!("not a usable private key: {other}")),
        })?;
    check_links(&parsed, in_cert_field, now_unix)?;
    let facts = facts(leaf, &ders[0], ders.len() - 1);
    let warnings = warnings(&facts, hostname, now_unix);
    Ok(Checked {
        facts,
        warnings,
        chain_pem: ders.iter().map(|d| pem("CERTIFICATE", d)).collect(),
        key_pem: pem(&key_block.label, &key_block.der),
        key: certified,
    })
}

/// The facts of a certificate already stored or served (the system one, an ACME file).
pub fn describe(der: &[u8]) -> Option<Facts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(facts(&cert, der, 0))
}

/// One PEM block: its label, the line of its BEGIN, whether its headers say ENCRYPTED, and
/// its bytes.
struct Block {
    label: String,
    line: usize,
    encrypted_header: bool,
    der: Vec<u8>,
}

/// A block whose BEGIN line was read and whose END line was not yet.
struct Open {
    label: String,
    /// The line of its BEGIN, which the errors name.
    start: usize,
    encrypted: bool,
    /// The base64 read so far, without line breaks.
    body: String,
}

/// Every PEM block of `text`, in order; the first fault named by its line.
fn blocks(text: &str, field: Field) -> Result<Vec<Block>, CheckError> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    for (n, raw) in text.lines().enumerate() {
        let (line_no, line) = (n + 1, raw.trim());
        match &mut open {
            None => {
                if let Some(label) = boundary(line, "BEGIN") {
                    open = Some(Open {
                        label: label.to_string(),
                        start: line_no,
                        encrypted: false,
                        body: String::new(),
                    });
                }
                // Text outside blocks (OpenSSL's "subject=" lines, bag attributes) is allowed.
            }
            Some(o) => {
                if let Some(end) = boundary(line, "END") {
                    out.push(close(o, end, line_no, field)?);
                    open = None;
                } else {
                    inside(o, line, line_no, field)?;
                }
            }
        }
    }
    if let Some(Open { label, start, .. }) = open {
        return Err(err(
            field,
            format!("line {start}: -----BEGIN {label}----- has no matching -----END {label}-----"),
        ));
    }
    if out.is_empty() {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(err(
            field,
            format!(
                "not PEM: no -----BEGIN line found (line 1 reads {:?})",
                short(first.trim())
            ),
        ));
    }
    Ok(out)
}

/// The block `open` ends at line `line_no` with `-----END <end>-----`: the labels must
/// agree and the body must decode.
fn close(open: &Open, end: &str, line_no: usize, field: Field) -> Result<Block, CheckError> {
    let Open {
        label,
        start,
        encrypted,
        body,
    } = open;
    if end != label.as_str() {
        return Err(err(
            field,
            format!(
                "line {line_no}: -----END {end}----- does not close -----BEGIN {label}----- of line {start}"
            ),
        ));
    }
    let der = STANDARD.decode(body.as_bytes()).map_err(|_| {
        err(
            field,
            format!("the {label} block of line {start} is not valid base64"),
        )
    })?;
    Ok(Block {
        label: label.clone(),
        line: *start,
        encrypted_header: *encrypted,
        der,
    })
}

/// A line inside `open`: a header, base64, or blank; anything else is refused by its line.
fn inside(open: &mut Open, line: &str, line_no: usize, field: Field) -> Result<(), CheckError> {
    if let Some((name, value)) = line.split_once(':') {
        // RFC 1421 headers of legacy encrypted keys: `Proc-Type: 4,ENCRYPTED`.
        open.encrypted |= name.eq_ignore_ascii_case("proc-type") && value.contains("ENCRYPTED");
    } else if !line.is_empty() {
        if !line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            return Err(err(
                field,
                format!(
                    "line {line_no}: not base64 inside the {} block: {:?}",
                    open.label,
                    short(line)
                ),
            ));
        }
        open.body.push_str(line);
    }
    Ok(())
}

fn boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Every block must be a CERTIFICATE.
fn certificates(text: &str, field: Field) -> Result<Vec<Vec<u8>>, CheckError> {
    blocks(text, field)?
        .into_iter()
        .map(|b| {
            if b.label == "CERTIFICATE" {
                Ok(b.der)
            } else {
                let hint = if b.label.contains("PRIVATE KEY") {
                    " (a key pasted where the certificate goes?)"
                } else {
                    ""
                };
                Err(err(
                    field,
                    format!(
                        "not a certificate: line {} has -----BEGIN {}-----{hint}",
                        b.line, b.label
                    ),
                ))
            }
        })
        .collect()
}

fn parse_all(
    ders: &[Vec<u8>],
    in_cert_field: usize,
) -> Result<Vec<X509Certificate<'_>>, CheckError> {
    ders.iter()
        .enumerate()
        .map(|(i, der)| {
            let field = if i < in_cert_field {
                Field::Cert
            } else {
                Field::Chain
            };
            x509_parser::parse_x509_certificate(der)
                .map(|(_, c)| c)
                .map_err(|e| {
                    err(
                        field,
                        format!(
                            "not a certificate: certificate {} does not parse: {e}",
                            i + 1
                        ),
                    )
                })
        })
        .collect()
}

fn key_der(block: &Block) -> PrivateKeyDer<'static> {
    let der = block.der.clone();
    match block.label.as_str() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(der.into()),
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(der.into()),
        _ => PrivateKeyDer::Sec1(der.into()),
    }
}

/// The one key block: unencrypted PKCS#8, PKCS#1 or SEC1.
fn key_block(text: &str) -> Result<Block, CheckError> {
    let mut found = blocks(text, Field::Key)?;
    let block = found.remove(0);
    if block.label == "ENCRYPTED PRIVATE KEY" || block.encrypted_header {
        return Err(err(
            Field::Key,
            "the private key is encrypted: paste the unencrypted key",
        ));
    }
    if !["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"].contains(&block.label.as_str()) {
        return Err(err(
            Field::Key,
            format!(
                "not a private key: line {} has -----BEGIN {}-----",
                block.line, block.label
            ),
        ));
    }
    if !found.is_empty() {
        return Err(err(
            Field::Key,
            format!(
                "more than one block: expected only the private key (line {} starts another)",
                found[0].line
            ),
        ));
    }
    Ok(block)
}

fn check_validity(
    cert: &X509Certificate<'_>,
    now: i64,
    field: Field,
    what: &str,
) -> Result<(), CheckError> {
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err(err(
            field,
            format!("{what} is not yet valid: valid from {}", v.not_before),
        ));
    }
    if now > v.not_after.timestamp() {
        return Err(err(field, format!("{what} expired on {}", v.not_after)));
    }
    Ok(())
}

fn check_key_strength(cert: &X509Certificate<'_>) -> Result<(), CheckError> {
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(err(
            Field::Cert,
            format!(
                "weak key: RSA {} bits (at least {MIN_RSA_BITS} required)",
                rsa.key_size()
            ),
        ));
    }
    Ok(())
}

/// Each certificate must be issued, and signed, by the next one.
fn check_links(
    parsed: &[X509Certificate<'_>],
    in_cert_field: usize,
    now: i64,
) -> Result<(), CheckError> {
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let field = if i + 1 < in_cert_field {
            Field::Cert
        } else {
            Field::Chain
        };
        let n = i + 2;
        if child.issuer() != parent.subject() {
            return Err(err(
                field,
                format!(
                    "the chain does not link up: certificate {} is issued by {}, but the next one (certificate {n}) is {} (each certificate must be followed by its issuer)",
                    i + 1,
                    child.issuer(),
                    parent.subject()
                ),
            ));
        }
        if child.verify_signature(Some(parent.public_key())).is_err() {
            return Err(err(
                field,
                format!(
                    "the chain does not link up: certificate {n} ({}) did not sign certificate {}",
                    parent.subject(),
                    i + 1
                ),
            ));
        }
        check_validity(
            parent,
            now,
            field,
            &format!("chain certificate {n} ({})", parent.subject()),
        )?;
    }
    Ok(())
}

fn facts(cert: &X509Certificate<'_>, der: &[u8], chain_length: usize) -> Facts {
    Facts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        sans: sans(cert),
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        not_after_unix: cert.validity().not_after.timestamp(),
        sha256: crate::tls::fingerprints(&CertificateDer::from(der)).0,
        chain_length,
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn warnings(facts: &Facts, hostname: &str, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    let days = facts.days_left(now);
    if days < EXPIRY_WARNING_DAYS {
        out.push(format!(
            "the certificate expires in {days} days, on {}",
            facts.not_after
        ));
    }
    let host = hostname.trim_end_matches('.').to_ascii_lowercase();
    if !facts.sans.iter().any(|san| name_matches(san, &host)) {
        out.push(format!(
            "the server's host name {host} is not among the certificate's names ({}): strict STARTTLS verifiers will fail",
            facts.sans.join(", ")
        ));
    }
    out
}

/// A SAN matches a host name exactly or as a wildcard over one left-most label.
fn name_matches(san: &str, host: &str) -> bool {
    match san.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => san == host,
    }
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use time::{Duration, OffsetDateTime};

    const HOST: &str = "mx.test.example";

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    fn ca(
        cn: &str,
        issuer: Option<&Issuer<'static, KeyPair>>,
    ) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = match issuer {
            Some(i) => params.signed_by(&key, i).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), Issuer::new(params, key))
    }

    /// A leaf for `names` valid over [now + from_days, now + to_days], as (cert, key) PEM.
    fn leaf(
        names: &[&str],
        issuer: &Issuer<'static, KeyPair>,
        from_days: i64,
        to_days: i64,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let t = OffsetDateTime::now_utc();
        params.not_before = t + Duration::days(from_days);
        params.not_after = t + Duration::days(to_days);
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn field_err(r: Result<Checked, CheckError>) -> (Field, String) {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => (e.field, e.error),
        }
    }

    #[test]
    fn good_chain_reports_every_fact() {
        let (root_pem, root) = ca("Test Root", None);
        let (mid_pem, mid) = ca("Test Intermediate", Some(&root));
        let (cert, key) = leaf(&[HOST, "*.test.example"], &mid, -1, 365);
        let chain = format!("{mid_pem}{root_pem}");
        let ok = check(&cert, &key, Some(&chain), HOST, now()).unwrap();
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
        let f = &ok.facts;
        assert_eq!(f.subject, format!("CN={HOST}"));
        assert_eq!(f.issuer, "CN=Test Intermediate");
        assert!(!f.serial.is_empty());
        assert_eq!(f.sans, vec![HOST.to_string(), "*.test.example".into()]);
        assert_eq!(f.chain_length, 2);
        assert_eq!(f.sha256.len(), 64);
        assert!(f.days_left(now()) >= 364);
        assert_eq!(ok.chain_pem.matches("BEGIN CERTIFICATE").count(), 3);
        // The chain may also follow the certificate in the same field (fullchain.pem).
        let full = format!("{cert}{mid_pem}");
        assert!(check(&full, &key, None, HOST, now()).is_ok());
        // A wildcard covers one label.
        assert!(
            check(&cert, &key, None, "other.test.example", now())
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn pem_errors_name_the_field_and_line() {
        let (_, root) = ca("Test Root", None);
        let (cert, key) = leaf(&[HOST], &root, -1, 365);
        let (f, e) = field_err(check("hello\nworld\n", &key, None, HOST, now()));
        assert_eq!(
            (f, e.as_str()),
            (
                Field::Cert,
                "not PEM: no -----BEGIN line found (line 1 reads \"hello\")"
            )
        );
        let (f, e) = field_err(check(&key, &key, None, HOST, now()));
        assert_eq!(f, Field::Cert);
        assert!(
            e.starts_with("not a certificate: line 1 has -----BEGIN PRIVATE KEY-----"),
            "{e}"
        );
        let (f, e) = field_err(check(&cert, &cert, None, HOST, now()));
        assert_eq!(
            (f, e.as_str()),
            (
                Field::Key,
                "not a private key: line 1 has -----BEGIN CERTIFICATE-----"
            )
        );
        let (f, e) = field_err(check(&cert, &key, Some("junk"), HOST, now()));
        assert_eq!(f, Field::Chain);
        assert!(e.starts_with("not PEM"), "{e}");
        let broken = cert.replacen("\n", "\n%%%%\n", 1);
        let (f, e) = field_err(check(&broken, &key, None, HOST, now()));
        assert_eq!(
            (f, e.as_str()),
            (
                Field::Cert,
                "line 2: not base64 inside the CERTIFICATE block: \"%%%%\""
            )
        );
        let unterminated = cert.replace("-----END CERTIFICATE-----", "");
        let (_, e) = field_err(check(&unterminated, &key, None, HOST, now()));
        assert!(
            e.contains("has no matching -----END CERTIFICATE-----"),
            "{e}"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let (f, e) = field_err(check(garbage, &key, None, HOST, now()));
        assert_eq!(f, Field::Cert);
        assert!(
            e.starts_with("not a certificate: certificate 1 does not parse"),
            "{e}"
        );
    }

    #[test]
    fn encrypted_and_mismatched_keys_are_refused() {
        let (_, root) = ca("Test Root", None);
        let (cert, _) = leaf(&[HOST], &root, -1, 365);
        let (_, other_key) = leaf(&[HOST], &root, -1, 365);
        let encrypted = [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,74FCE62E5AAD47D7765F0AB74D1EB491\n\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END RSA PRIVATE KEY-----\n",
        ];
        for key in encrypted {
            let (f, e) = field_err(check(&cert, key, None, HOST, now()));
            assert_eq!(
                (f, e.as_str()),
                (
                    Field::Key,
                    "the private key is encrypted: paste the unencrypted key"
                )
            );
        }
        let (f, e) = field_err(check(&cert, &other_key, None, HOST, now()));
        assert_eq!(
            (f, e.as_str()),
            (Field::Key, "the private key does not match the certificate")
        );
    }

    #[test]
    fn chain_must_link_and_sign() {
        let (_, root) = ca("Test Root", None);
        let (cert, key) = leaf(&[HOST], &root, -1, 365);
        let (stranger_pem, _) = ca("Someone Else", None);
        let (f, e) = field_err(check(&cert, &key, Some(&stranger_pem), HOST, now()));
        assert_eq!(f, Field::Chain);
        assert!(e.starts_with("the chain does not link up: certificate 1 is issued by CN=Test Root, but the next one (certificate 2) is CN=Someone Else"), "{e}");
        // Same name, different key: the issuer did not really sign it.
        let (impostor_pem, _) = ca("Test Root", None);
        let (f, e) = field_err(check(&cert, &key, Some(&impostor_pem), HOST, now()));
        assert_eq!(
            (f, e.as_str()),
            (
                Field::Chain,
                "the chain does not link up: certificate 2 (CN=Test Root) did not sign certificate 1"
            )
        );
    }

    #[test]
    fn validity_and_strength() {
        let (_, root) = ca("Test Root", None);
        let (cert, key) = leaf(&[HOST], &root, 2, 365);
        let (_, e) = field_err(check(&cert, &key, None, HOST, now()));
        assert!(
            e.starts_with("the certificate is not yet valid: valid from "),
            "{e}"
        );
        let (cert, key) = leaf(&[HOST], &root, -30, -1);
        let (_, e) = field_err(check(&cert, &key, None, HOST, now()));
        assert!(e.starts_with("the certificate expired on "), "{e}");
        let (cert, key) = leaf(&[HOST], &root, -30, 10);
        let ok = check(&cert, &key, None, HOST, now()).unwrap();
        assert_eq!(ok.warnings.len(), 1);
        assert!(
            ok.warnings[0].starts_with("the certificate expires in 9 days")
                || ok.warnings[0].starts_with("the certificate expires in 10 days"),
            "{:?}",
            ok.warnings
        );
        // Made with `openssl req -x509 -newkey rsa:1024` (throwaway test material).
        let (f, e) = field_err(check(
            include_str!("testdata/rsa1024.crt"),
            include_str!("testdata/rsa1024.key"),
            None,
            "weak.test.example",
            now(),
        ));
        assert_eq!(
            (f, e.as_str()),
            (
                Field::Cert,
                "weak key: RSA 1024 bits (at least 2048 required)"
            )
        );
    }

    #[test]
    fn host_name_not_among_the_names_is_a_warning() {
        let (_, root) = ca("Test Root", None);
        let (cert, key) = leaf(&["other.example"], &root, -1, 365);
        let ok = check(&cert, &key, None, HOST, now()).unwrap();
        assert_eq!(
            ok.warnings,
            vec![format!(
                "the server's host name {HOST} is not among the certificate's names (other.example): strict STARTTLS verifiers will fail"
            )]
        );
    }
}
