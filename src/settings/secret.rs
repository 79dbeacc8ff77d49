//! A secret the settings keep (a relay password, a private key): never shown, never logged.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret the store keeps and the wire needs, never shown: its `Debug` is redacted, so a
/// logged settings value cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
