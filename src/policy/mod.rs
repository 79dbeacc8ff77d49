//! Outbound TLS policy: for each recipient, the level its next hop must meet and why.
//!
//! This is the one seam the delivery engine asks. Today it knows the global outbound mode;
//! the policy table, `x-TLSLevel`, message rules and minimum strength join here (issue 5),
//! and `decide()` stays the single function behind delivery and `postern policy explain`.

use std::fmt;

use crate::settings::{Snapshot, TlsMode};

/// Levels, weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No TLS, even if offered.
    None,
    /// TLS if offered; plaintext otherwise (opportunistic).
    May,
    /// STARTTLS required; certificate not checked.
    Encrypt,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
        })
    }
}

/// What decided the level, as delivery records show it (`source=global`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    Global,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Global => f.write_str("global"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub level: Level,
    pub source: Source,
    /// One line per source that applied, for logs and `policy explain`.
    pub explanation: Vec<String>,
}

/// The effective policy for `recipient`.
pub fn decide(snapshot: &Snapshot, recipient: &str) -> Decision {
    let mode = snapshot.settings.outbound.tls_mode;
    let level = match mode {
        TlsMode::Disabled => Level::None,
        TlsMode::May => Level::May,
        TlsMode::Encrypt => Level::Encrypt,
    };
    Decision {
        level,
        source: Source::Global,
        explanation: vec![format!(
            "global outbound mode {mode} -> {level} for {recipient}"
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn global_mode_maps_to_level_with_explanation() {
        for (mode, level) in [
            (TlsMode::Disabled, Level::None),
            (TlsMode::May, Level::May),
            (TlsMode::Encrypt, Level::Encrypt),
        ] {
            let mut s = Settings::default();
            s.outbound.tls_mode = mode;
            let d = decide(&Snapshot::new(s, 0), "a@b.example");
            assert_eq!(d.level, level);
            assert_eq!(d.source, Source::Global);
            assert!(d.explanation[0].contains(&mode.to_string()));
        }
    }
}
