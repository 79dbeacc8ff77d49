//! `inbound_tls` and `inbound.plaintext_reject_code`: the rows that require TLS (or a
//! verified client certificate) from named senders and clients, and the code they refuse with.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::levels::InboundLevel;
use crate::next_hop::is_domain_name;
use crate::settings::InboundTlsRow;

use super::policy::MAX_MIN_BITS;
use super::{FieldError, field_error, min_bits_out_of_range};

/// Postfix's `plaintext_reject_code`: a 4xx (the client's queue retries while it fixes its
/// TLS) or a 5xx (the mail bounces) reply code.
pub fn check_reject_code(code: u16) -> Result<u16, FieldError> {
    if (400..=599).contains(&code) {
        return Ok(code);
    }
    Err(field_error(
        "inbound.plaintext_reject_code",
        format!(
            "{code} is not a refusal code: 4xx (the sender retries, Postfix's default 450) or 5xx (the mail bounces)"
        ),
    ))
}

/// What a row's pattern names, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundTarget {
    /// `partner.example` (`subdomains` false) or `.partner.example` (the domain and all its
    /// subdomains), lower case, without the trailing dot.
    Sender { domain: String, subdomains: bool },
    /// A client address (a /32 or /128) or network.
    Client(IpNet),
}

/// A stored (validated) pattern read back: what `policy::inbound` matches with. `None` for a
/// pattern validation would refuse.
pub fn inbound_target(pattern: &str) -> Option<InboundTarget> {
    let p = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = p.parse::<IpAddr>() {
        return Some(InboundTarget::Client(IpNet::from(ip.to_canonical())));
    }
    if let Ok(net) = p.parse::<IpNet>() {
        return Some(InboundTarget::Client(net));
    }
    let (domain, subdomains) = match p.strip_prefix('.') {
        Some(d) => (d, true),
        None => (p.as_str(), false),
    };
    is_domain_name(domain).then(|| InboundTarget::Sender {
        domain: domain.to_string(),
        subdomains,
    })
}

/// The rows as stored: patterns normalised, names lower case; or the first bad field.
pub fn check_inbound_tls(rows: &[InboundTlsRow]) -> Result<Vec<InboundTlsRow>, FieldError> {
    let mut out: Vec<InboundTlsRow> = Vec::with_capacity(rows.len());
    let mut seen: Vec<InboundTarget> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let (pattern, target) = check_pattern(i, &row.pattern)?;
        if seen.contains(&target) {
            return Err(field_error(
                format!("inbound_tls[{i}].pattern"),
                format!("duplicate row: {pattern:?} is already in the table"),
            ));
        }
        if let Some(b) = row.min_bits.filter(|b| *b > MAX_MIN_BITS) {
            return Err(field_error(
                format!("inbound_tls[{i}].min_bits"),
                min_bits_out_of_range(b.into()),
            ));
        }
        let match_names = check_names(i, row)?;
        seen.push(target);
        out.push(InboundTlsRow {
            pattern,
            match_names,
            note: row.note.trim().to_string(),
            ..row.clone()
        });
    }
    Ok(out)
}

/// Row `i`'s pattern as stored, and what it names.
fn check_pattern(i: usize, raw: &str) -> Result<(String, InboundTarget), FieldError> {
    let field = format!("inbound_tls[{i}].pattern");
    let p = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if p.is_empty() {
        return Err(field_error(
            field,
            "required: a sender domain (partner.example, .partner.example) or a client address or network (192.0.2.7, 192.0.2.0/24)",
        ));
    }
    if p == "*" {
        return Err(field_error(
            field,
            "\"*\" names every client: set inbound STARTTLS to Mandatory (encrypt) instead",
        ));
    }
    if p.contains('@') {
        return Err(field_error(
            field,
            format!("{raw:?} is an address: a row names the sender's domain (partner.example)"),
        ));
    }
    if let Ok(net) = p.parse::<IpNet>()
        && net.trunc() != net
    {
        return Err(field_error(
            field,
            format!("{raw:?} has host bits set: did you mean {}?", net.trunc()),
        ));
    }
    match inbound_target(&p) {
        Some(target) => {
            let stored = match &target {
                InboundTarget::Client(net) if !p.contains('/') => net.addr().to_string(),
                InboundTarget::Client(net) => net.to_string(),
                InboundTarget::Sender { .. } => p,
            };
            Ok((stored, target))
        }
        None => Err(field_error(
            field,
            format!(
                "{raw:?} is not a sender domain (partner.example, .partner.example) nor a client address or network (192.0.2.7, 192.0.2.0/24)"
            ),
        )),
    }
}

/// Row `i`'s certificate names: required at `verify`, and only there (an `encrypt` row
/// checks no certificate, so names there would silently do nothing).
fn check_names(i: usize, row: &InboundTlsRow) -> Result<Vec<String>, FieldError> {
    let field = format!("inbound_tls[{i}].match_names");
    let names: Vec<String> = row
        .match_names
        .iter()
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    match row.level {
        InboundLevel::Verify if names.is_empty() => {
            return Err(field_error(
                field,
                "required for level verify: the names the client certificate must carry (one of them)",
            ));
        }
        InboundLevel::Encrypt if !names.is_empty() => {
            return Err(field_error(
                field,
                "only a verify row checks the client certificate's names: choose verify or remove them",
            ));
        }
        _ => {}
    }
    for (k, n) in names.iter().enumerate() {
        if n.starts_with("*.") {
            return Err(field_error(
                format!("{field}[{k}]"),
                format!(
                    "{n:?} is a pattern: give the name itself; a wildcard in the certificate is matched as a server's is"
                ),
            ));
        }
        if !is_domain_name(n) {
            return Err(field_error(
                format!("{field}[{k}]"),
                format!("{n:?} is not a host name"),
            ));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::super::support::{FakeHasher, doc};
    use super::*;
    use crate::settings::Settings;

    fn refused(text: &str) -> FieldError {
        Settings::default()
            .apply(&doc(text), &FakeHasher)
            .unwrap_err()
    }

    #[test]
    fn rows_are_stored_normalised() {
        let d = doc(
            "[[inbound_tls]]\npattern = \" Partner.Example. \"\nlevel = \"encrypt\"\n\
             [[inbound_tls]]\npattern = \".Sub.Example\"\nlevel = \"verify\"\nmatch_names = [\"MX.Sub.Example\"]\nmin_bits = 128\n\
             [[inbound_tls]]\npattern = \"192.0.2.7\"\nlevel = \"encrypt\"\n\
             [[inbound_tls]]\npattern = \"2001:DB8::/32\"\nlevel = \"encrypt\"\n",
        );
        let s = Settings::default().apply(&d, &FakeHasher).unwrap();
        let patterns: Vec<&str> = s.inbound_tls.iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(
            patterns,
            [
                "partner.example",
                ".sub.example",
                "192.0.2.7",
                "2001:db8::/32"
            ]
        );
        assert_eq!(s.inbound_tls[1].match_names, ["mx.sub.example"]);
        assert_eq!(s.inbound.plaintext_reject_code, 450, "Postfix's default");
        let back = s.apply(&s.to_doc(), &FakeHasher).unwrap();
        assert_eq!(back, s, "the document form applies unchanged");
    }

    #[test]
    fn each_bad_field_is_named() {
        let row = |body: &str| format!("[[inbound_tls]]\n{body}\n");
        let cases = [
            (
                row("pattern = \"\"\nlevel = \"encrypt\""),
                "inbound_tls[0].pattern",
                "required",
            ),
            (
                row("pattern = \"*\"\nlevel = \"encrypt\""),
                "inbound_tls[0].pattern",
                "Mandatory",
            ),
            (
                row("pattern = \"a@partner.example\"\nlevel = \"encrypt\""),
                "inbound_tls[0].pattern",
                "is an address",
            ),
            (
                row("pattern = \"192.0.2.5/24\"\nlevel = \"encrypt\""),
                "inbound_tls[0].pattern",
                "did you mean 192.0.2.0/24",
            ),
            (
                row("pattern = \"not a domain\"\nlevel = \"encrypt\""),
                "inbound_tls[0].pattern",
                "is not a sender domain",
            ),
            (
                row("pattern = \"p.example\"\nlevel = \"verify\""),
                "inbound_tls[0].match_names",
                "required for level verify",
            ),
            (
                row(
                    "pattern = \"p.example\"\nlevel = \"encrypt\"\nmatch_names = [\"mx.p.example\"]",
                ),
                "inbound_tls[0].match_names",
                "only a verify row",
            ),
            (
                row("pattern = \"p.example\"\nlevel = \"verify\"\nmatch_names = [\"*.p.example\"]"),
                "inbound_tls[0].match_names[0]",
                "is a pattern",
            ),
            (
                row("pattern = \"p.example\"\nlevel = \"encrypt\"\nmin_bits = 512"),
                "inbound_tls[0].min_bits",
                "out of range",
            ),
            (
                format!(
                    "{}{}",
                    row("pattern = \"192.0.2.7\"\nlevel = \"encrypt\""),
                    row(
                        "pattern = \"192.0.2.7/32\"\nlevel = \"verify\"\nmatch_names = [\"a.example\"]"
                    )
                ),
                "inbound_tls[1].pattern",
                "duplicate row",
            ),
            (
                "[inbound]\nplaintext_reject_code = 250\n".to_string(),
                "inbound.plaintext_reject_code",
                "not a refusal code",
            ),
        ];
        for (text, field, words) in cases {
            let e = refused(&text);
            assert_eq!(e.field, field, "{text}");
            assert!(e.error.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn targets_are_read_back() {
        assert_eq!(
            inbound_target(".Partner.example"),
            Some(InboundTarget::Sender {
                domain: "partner.example".into(),
                subdomains: true
            })
        );
        assert_eq!(
            inbound_target("::ffff:192.0.2.7"),
            Some(InboundTarget::Client("192.0.2.7/32".parse().unwrap()))
        );
        assert_eq!(inbound_target("bad domain"), None);
    }
}
