//! Validation of the settings document, one file per section: each check names the first
//! bad field (`relay_domains[2].transport`) and says what is wrong with it.

pub mod cert_pair;
mod inbound_tls;
mod m365;
mod networks;
mod policy;
mod relay_domains;
mod rules;
mod users;

use std::fmt;

use serde::Serialize;

pub use inbound_tls::{InboundTarget, inbound_target};
pub(super) use inbound_tls::{check_inbound_tls, check_reject_code};
pub(super) use m365::check_m365;
pub(super) use networks::parse_networks;
pub use policy::min_bits_out_of_range;
pub(super) use policy::{check_policy, managed_rows, min_bits_any_integer};
pub(super) use relay_domains::check_relay_domains;
pub(super) use rules::{check_rule_data, check_rules};
pub(super) use users::check_users;

/// A validation failure naming the field, e.g. `relay_domains[2].transport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub error: String,
    /// The field in the admin's words (`SMTP AUTH user alice, password`), for the pages;
    /// set where the document it names is at hand (`SettingsHandle::change`).
    #[serde(skip)]
    pub label: Option<String>,
}

impl FieldError {
    /// The error with its field named in words, items by their names in `names`.
    pub fn labelled(self, names: &super::words::Names<'_>) -> FieldError {
        FieldError {
            label: Some(super::words::field_words(&self.field, names)),
            ..self
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for FieldError {}

pub(crate) fn field_error(field: impl Into<String>, error: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        error: error.into(),
        label: None,
    }
}

/// Hashes a password; a seam so validation stays pure and fast in tests.
pub trait PasswordHasher {
    fn hash(&self, password: &str) -> Result<String, String>;
}

#[cfg(test)]
pub(super) mod support {
    use crate::settings::{PasswordHasher, SettingsDoc};

    pub struct FakeHasher;
    impl PasswordHasher for FakeHasher {
        fn hash(&self, password: &str) -> Result<String, String> {
            Ok(format!("hashed:{password}"))
        }
    }

    pub fn doc(toml_text: &str) -> SettingsDoc {
        toml::from_str(toml_text).unwrap()
    }
}
