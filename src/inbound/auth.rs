//! SASL PLAIN (RFC 4616) and LOGIN as exchanged inside SMTP AUTH (RFC 4954): decoding only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::proto::{Enhanced, Reply};

/// Where a multi-step AUTH exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

pub struct Credentials {
    pub mechanism: &'static str,
    pub user: String,
    pub password: String,
}

/// Redacts the password: credentials must never reach a log through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

pub fn cannot_decode() -> Reply {
    Reply::new(501, Enhanced(5, 5, 2), "Error: cannot decode response")
}

pub fn decode_b64(text: &str) -> Result<String, Reply> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| cannot_decode())?;
    String::from_utf8(bytes).map_err(|_| cannot_decode())
}

/// `authzid NUL authcid NUL passwd`; an authzid other than the authcid is refused (we do
/// not let one user act as another).
pub fn decode_plain(text: &str) -> Result<Credentials, Reply> {
    let decoded = decode_b64(text)?;
    let mut parts = decoded.split('\0');
    let (Some(authz), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(cannot_decode());
    };
    if !authz.is_empty() && authz != user {
        return Err(crate::proto::replies::auth_failed());
    }
    Ok(Credentials {
        mechanism: "PLAIN",
        user: user.to_string(),
        password: password.to_string(),
    })
}

pub fn challenge(text: &str) -> Reply {
    Reply::plain(334, STANDARD.encode(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decodes() {
        let c = decode_plain(&STANDARD.encode("\0alice\0secret pw")).unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("alice", "secret pw")
        );
        assert_eq!(decode_plain("!!!").unwrap_err().code, 501);
        assert_eq!(
            decode_plain(&STANDARD.encode("alice")).unwrap_err().code,
            501
        );
        assert_eq!(
            decode_plain(&STANDARD.encode("bob\0alice\0pw"))
                .unwrap_err()
                .code,
            535
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = decode_plain(&STANDARD.encode("\0alice\0hunter2hunter2")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn login_challenges() {
        assert_eq!(challenge("Username:").to_wire(), b"334 VXNlcm5hbWU6\r\n");
    }
}
