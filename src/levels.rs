//! The vocabulary the settings, the policy, the spool and delivery share: how much TLS a hop
//! must have, what happens when it does not, and the level a message rule set at receipt (a
//! fact of the envelope, kept in the spool, which knows no policy). A leaf: it depends on
//! nothing of postern's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Levels, weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No TLS, even if offered.
    None,
    /// TLS if offered; plaintext otherwise (opportunistic).
    May,
    /// STARTTLS required; certificate not checked.
    Encrypt,
    /// Chain to the trust roots, and a name that matches the MX host.
    Verify,
    /// DANE (RFC 7672, Postfix's `dane`): where the MX host has DNSSEC-secured TLSA
    /// records, TLS authenticated by them; elsewhere `may`.
    Dane,
    /// DANE required (Postfix's `dane-only`): without secured TLSA records, no delivery.
    #[serde(rename = "dane-only")]
    DaneOnly,
    /// Chain, and a name that matches the recipient domain (or the row's match list), so a
    /// spoofed MX record does not help.
    Secure,
    /// The certificate or its public key has a pinned SHA-256 fingerprint.
    Fingerprint,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
            Level::Dane => "dane",
            Level::DaneOnly => "dane-only",
            Level::Secure => "secure",
            Level::Fingerprint => "fingerprint",
        })
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    /// The names `Display` writes (and the settings document uses), any case.
    fn from_str(s: &str) -> Result<Level, String> {
        const ALL: [Level; 8] = [
            Level::None,
            Level::May,
            Level::Encrypt,
            Level::Verify,
            Level::Dane,
            Level::DaneOnly,
            Level::Secure,
            Level::Fingerprint,
        ];
        ALL.into_iter()
            .find(|l| l.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a level: none, may, encrypt, verify, dane, dane-only, secure or fingerprint"
                )
            })
    }
}

/// What a policy row does when its level cannot be met.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Retry later (4.7.x), until the queue lifetime.
    #[default]
    Defer,
    /// Return to the sender now (5.7.x), GlobalCerts' behaviour.
    Bounce,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Defer => "defer",
            OnFailure::Bounce => "bounce",
        })
    }
}

impl std::str::FromStr for OnFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<OnFailure, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "defer" => Ok(OnFailure::Defer),
            "bounce" => Ok(OnFailure::Bounce),
            _ => Err(format!("{s:?} is not a failure action: defer or bounce")),
        }
    }
}

/// How postern treats a domain's published MTA-STS policy (RFC 8461): globally, and per
/// policy row. `monitor` takes an `enforce` policy as `testing` (FortiMail's monitor mode):
/// delivered anyway, the failure counted for TLS-RPT and logged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum StsSwitch {
    #[default]
    Enforce,
    Monitor,
    Off,
}

impl fmt::Display for StsSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StsSwitch::Enforce => "enforce",
            StsSwitch::Monitor => "monitor",
            StsSwitch::Off => "off",
        })
    }
}

impl std::str::FromStr for StsSwitch {
    type Err = String;

    fn from_str(s: &str) -> Result<StsSwitch, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enforce" => Ok(StsSwitch::Enforce),
            "monitor" => Ok(StsSwitch::Monitor),
            "off" => Ok(StsSwitch::Off),
            _ => Err(format!(
                "{s:?} is not an MTA-STS setting: enforce, monitor or off"
            )),
        }
    }
}

/// The key exchange a policy row lets delivery offer: `post-quantum` (the default:
/// X25519MLKEM768 first, then X25519 and the NIST curves) or `classical` (those alone: a
/// ClientHello of a few hundred bytes, for a partner whose server or firewall drops the
/// 1.5 KB one the post-quantum share makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyExchange {
    #[default]
    PostQuantum,
    Classical,
}

impl KeyExchange {
    pub fn is_default(&self) -> bool {
        *self == KeyExchange::default()
    }
}

impl fmt::Display for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyExchange::PostQuantum => "post-quantum",
            KeyExchange::Classical => "classical",
        })
    }
}

/// What an inbound TLS row asks of the mail it names (Proxmox's `tls_inbound_domains`,
/// Postfix's `reject_plaintext_session` and `check_ccert_access` for named senders and
/// clients), weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundLevel {
    /// The session must be TLS by MAIL FROM.
    Encrypt,
    /// TLS with a client certificate that chains to the trust roots and carries one of the
    /// row's names.
    Verify,
}

impl fmt::Display for InboundLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InboundLevel::Encrypt => "encrypt",
            InboundLevel::Verify => "verify",
        })
    }
}

impl std::str::FromStr for InboundLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<InboundLevel, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "encrypt" => Ok(InboundLevel::Encrypt),
            "verify" => Ok(InboundLevel::Verify),
            _ => Err(format!("{s:?} is not an inbound level: encrypt or verify")),
        }
    }
}

/// A message rule's result for one recipient, decided at receipt (`policy::rule_for`) and
/// kept with the recipient in the spool's envelope, so delivery applies the rule that held
/// when the message was accepted. Serde names are the stored format: never rename them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleLevel {
    pub level: Level,
    /// The rule's name, for the log and `policy explain`.
    pub rule: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_written() {
        for l in [
            "none",
            "may",
            "encrypt",
            "verify",
            "dane",
            "dane-only",
            "secure",
            "fingerprint",
        ] {
            assert_eq!(l.parse::<Level>().unwrap().to_string(), l);
        }
        assert_eq!(" Encrypt ".parse::<Level>(), Ok(Level::Encrypt));
        assert!(
            "require"
                .parse::<Level>()
                .unwrap_err()
                .contains("not a level")
        );
        assert_eq!("BOUNCE".parse::<OnFailure>(), Ok(OnFailure::Bounce));
        assert_eq!(OnFailure::Defer.to_string(), "defer");
        assert!("retry".parse::<OnFailure>().is_err());
        assert_eq!(" Verify".parse::<InboundLevel>(), Ok(InboundLevel::Verify));
        assert_eq!(InboundLevel::Encrypt.to_string(), "encrypt");
        assert!("may".parse::<InboundLevel>().is_err());
    }
}
