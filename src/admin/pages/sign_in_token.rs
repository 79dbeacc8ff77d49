//! The sign-in form's CSRF token without a stored session: a random nonce in a cookie of its
//! own, and the token in the form is HMAC-SHA256(key, nonce) under a key made at start-up
//! (the "signed double-submit cookie" of OWASP's CSRF cheat sheet). A forged cross-site
//! form cannot read the cookie nor compute the token, so login CSRF fails; and a stranger's
//! `GET /sign-in` stores nothing on the server (a session per request was ~520 bytes kept
//! forever).

use aws_lc_rs::hmac;
use axum::http::{HeaderMap, HeaderValue, header};

const COOKIE: &str = "postern_sign_in";
/// 128 random bits, hex.
const NONCE_HEX: usize = 32;

pub struct SignInTokens {
    key: hmac::Key,
}

/// The browser's nonce, and whether it is new (to be set in a cookie with the page).
pub struct Nonce {
    pub value: String,
    pub new: bool,
}

impl Default for SignInTokens {
    fn default() -> Self {
        SignInTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, super::random_token().as_bytes()),
        }
    }
}

impl SignInTokens {
    /// The nonce the browser sent, or a new one.
    pub fn nonce(headers: &HeaderMap) -> Nonce {
        match cookie(headers) {
            Some(v) => Nonce {
                value: v.to_string(),
                new: false,
            },
            None => Nonce {
                value: super::random_token()[..NONCE_HEX].to_string(),
                new: true,
            },
        }
    }

    /// The form's token for `nonce`.
    pub fn token(&self, nonce: &str) -> String {
        hmac::sign(&self.key, nonce.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The form's token matches the browser's cookie.
    pub fn check(&self, headers: &HeaderMap, given: &str) -> bool {
        let Some(nonce) = cookie(headers) else {
            return false;
        };
        let expected = self.token(nonce);
        crate::admin::constant_time_eq(expected.as_bytes(), given.as_bytes())
    }

    /// `Set-Cookie` for a new nonce: only sent back to the sign-in form, over HTTPS.
    pub fn set_cookie(nonce: &str) -> (header::HeaderName, HeaderValue) {
        let value = format!(
            "{COOKIE}={nonce}; Path=/sign-in; Max-Age=3600; Secure; HttpOnly; SameSite=Strict"
        );
        // Hex and fixed text only: always a valid header value.
        let value = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("postern_sign_in=; Path=/sign-in"));
        (header::SET_COOKIE, value)
    }
}

/// The nonce cookie, if it has the form this module gives it.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|v| v.len() == NONCE_HEX && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_bound_to_the_cookie_and_the_key() {
        let tokens = SignInTokens::default();
        let mut headers = HeaderMap::new();
        let nonce = SignInTokens::nonce(&headers);
        assert!(nonce.new);
        let token = tokens.token(&nonce.value);
        assert!(!tokens.check(&headers, &token), "no cookie, no sign-in");
        let cookie = format!("other=1; {COOKIE}={}", nonce.value);
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert!(!SignInTokens::nonce(&headers).new);
        assert!(tokens.check(&headers, &token));
        assert!(!tokens.check(&headers, &"0".repeat(64)));
        // Another start-up's key: the old token is worth nothing.
        assert!(!SignInTokens::default().check(&headers, &token));
    }
}
