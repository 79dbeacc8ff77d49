//! The vocabulary the settings, the policy and delivery share: how much TLS a hop must have,
//! and what happens when it does not. A leaf: it depends on nothing of postern's.

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
            Level::Secure => "secure",
            Level::Fingerprint => "fingerprint",
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
