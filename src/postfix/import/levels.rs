//! Postfix's TLS security levels: `smtpd_tls_security_level` and `smtp_tls_security_level`,
//! or the older `_use_tls` and `_enforce_tls` switches, as postern's modes and levels.

use super::Imported;
use crate::levels::Level;
use crate::postfix::conf::MainCf;
use crate::settings::{PolicyRow, TlsMode};

/// The inbound and global outbound modes postern has: the levels without certificate
/// checks.
fn mode(level: &str) -> Option<TlsMode> {
    match level {
        "none" | "" => Some(TlsMode::Disabled),
        "may" => Some(TlsMode::May),
        "encrypt" => Some(TlsMode::Encrypt),
        _ => None,
    }
}

/// `smtpd_tls_security_level` (or its older switches): the inbound TLS mode.
pub(super) fn inbound_mode(cf: &MainCf, out: &mut Imported) {
    if let Some(v) = cf
        .get("smtpd_tls_security_level")
        .or_else(|| legacy(cf, "smtpd", out))
    {
        match mode(&v) {
            Some(m) => {
                out.settings.inbound.tls_mode = m;
                if cf.has("smtpd_tls_security_level") {
                    out.carried(
                        "smtpd_tls_security_level",
                        format!("inbound.tls_mode = {m}"),
                    );
                }
            }
            None => out.dropped(
                "smtpd_tls_security_level",
                format!("{v:?}: postern takes none, may or encrypt"),
                true,
            ),
        }
    } else {
        // Postfix's default: no STARTTLS offered.
        out.settings.inbound.tls_mode = TlsMode::Disabled;
    }
}

/// `smtp_tls_security_level` (or its older switches): the outbound mode, and the level
/// Postfix uses where no policy row applies, which the policy import needs.
pub(super) fn outbound_level(cf: &MainCf, out: &mut Imported) -> Level {
    let level = cf
        .get("smtp_tls_security_level")
        .or_else(|| legacy(cf, "smtp", out))
        .unwrap_or_default();
    let parsed = level_of(if level.is_empty() { "none" } else { &level });
    match (parsed, mode(&level)) {
        (Some(l), Some(m)) => {
            out.settings.outbound.tls_mode = m;
            if cf.has("smtp_tls_security_level") {
                out.carried(
                    "smtp_tls_security_level",
                    format!("outbound.tls_mode = {m}"),
                );
            }
            l
        }
        (Some(l), None) => {
            // verify, secure, fingerprint: the global mode stays may, a `*` row says the rest.
            out.settings.outbound.tls_mode = TlsMode::May;
            out.settings.policy.push(PolicyRow {
                note: "imported: smtp_tls_security_level".into(),
                ..PolicyRow::new("*", l)
            });
            out.carried("smtp_tls_security_level", format!("policy row * {l}"));
            l
        }
        (None, _) => {
            out.dropped(
                "smtp_tls_security_level",
                format!(
                    "{level:?}: not a level postern has (none, may, encrypt, verify, dane, dane-only, secure, fingerprint)"
                ),
                true,
            );
            Level::May
        }
    }
}

/// Postfix's older switches, used when `<side>_tls_security_level` is not set:
/// `<side>_enforce_tls = yes` is encrypt, `<side>_use_tls = yes` is may.
fn legacy(cf: &MainCf, side: &str, out: &mut Imported) -> Option<String> {
    let yes = |name: &str| cf.get(name).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let (enforce, use_tls) = (format!("{side}_enforce_tls"), format!("{side}_use_tls"));
    let level = if yes(&enforce) {
        "encrypt"
    } else if yes(&use_tls) {
        "may"
    } else {
        return None;
    };
    for name in [&enforce, &use_tls] {
        if cf.has(name) {
            let mode = if side == "smtpd" {
                "inbound"
            } else {
                "outbound"
            };
            out.carried(
                name,
                format!("read as {side}_tls_security_level = {level} ({mode}.tls_mode)"),
            );
        }
    }
    Some(level.to_string())
}

/// A Postfix level word as postern's level; the words are the same.
pub(super) fn level_of(word: &str) -> Option<Level> {
    word.parse().ok()
}
