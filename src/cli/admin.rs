//! `postern admin reset-password USER`: a new generated password for an admin page user,
//! through the control API of the running server (its bearer token in `data/api-token`
//! proves the operator). The password is printed here, once, and must be changed at the
//! next sign-in; it never travels back in a response nor reaches a log.

use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use postern::admin::admins::PasswordReset;
use postern::admin::client::ApiClient;
use postern::config::Config;

#[derive(clap::Subcommand)]
pub enum AdminAction {
    /// Give USER a new generated password (printed once; to be changed at the next
    /// sign-in), end their sessions and clear the sign-in throttle.
    ResetPassword { user: String },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: AdminAction,
) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    match action {
        AdminAction::ResetPassword { user } => {
            let password = generated_password();
            let body = serde_json::to_vec(&serde_json::json!({ "password": password }))?;
            let path = format!("/api/v1/admins/{}/password", path_segment(&user));
            let (status, body) = client.request(Method::POST, &path, Some(body)).await?;
            if status != StatusCode::OK {
                let why: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let why = why["error"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                anyhow::bail!("{status}: {why}");
            }
            let reset: PasswordReset = serde_json::from_slice(&body)?;
            println!(
                "New password for {}: {password}\nIt must be changed at the next sign-in; the user's sessions have ended and the sign-in throttle is cleared.",
                reset.user
            );
        }
    }
    Ok(())
}

/// 20 characters of an alphabet without look-alikes (about 115 bits).
fn generated_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// The unreserved characters of RFC 3986 section 2.3; everything else is percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A user name as one URL path segment.
fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_differ_and_pass_the_page_rules() {
        let (a, b) = (generated_password(), generated_password());
        assert_ne!(a, b);
        assert_eq!(a.chars().count(), 20);
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
