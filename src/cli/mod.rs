//! The subcommands, one file each (DESIGN.md "Layout"); `main.rs` parses and dispatches.
//! Each file holds its subcommand's clap arguments, its work and its text formats; what
//! several share (the API client, error answers, escaping) is here.

pub mod admin;
pub mod args;
pub mod cert;
pub mod check;
pub mod check_tls;
pub mod import_postfix;
pub mod node;
pub mod policy;
pub mod queue;
pub mod serve;
pub mod settings;
pub mod tls_rpt;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hyper::StatusCode;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use postern::admin::client::ApiClient;
use postern::config::Config;

/// The configuration the Debian package and the container image install.
pub const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

/// `--config`, else `POSTERN_CONFIG` (clap reads both into `given`), else the packaged file
/// when it exists, as Postfix's commands read /etc/postfix/main.cf: `postern queue list` on
/// an installed gateway then finds its data directory and API. `None`: the embedded defaults.
pub fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        Path::new(SYSTEM_CONFIG)
            .is_file()
            .then(|| PathBuf::from(SYSTEM_CONFIG))
    })
}

/// The running server's control API: `--api`, else `admin.listen`; its bearer token is read
/// from the data directory.
pub fn api_client(config: &Config, api: Option<SocketAddr>) -> anyhow::Result<ApiClient> {
    postern::tls::install_provider();
    Ok(ApiClient::new(
        api.unwrap_or(config.admin.listen),
        &config.server.data_dir,
    )?)
}

/// What stays as it is in a path segment or a query value: the unreserved characters of
/// RFC 3986 section 2.3 but `~` (escaped as it always was), and `@`, which section 3.3
/// allows in a segment and section 3.4 in a query (queue IDs are `ID@node`).
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'@');

/// `s` as one URL path segment or query value: everything else percent-encoded, UTF-8
/// byte by byte (RFC 3986 section 2.1).
pub fn url_escape(s: &str) -> String {
    utf8_percent_encode(s, KEPT).to_string()
}

/// The API's answer as `T`, or its `{"error": ...}` (else its body) after the status.
pub fn parse_response<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> anyhow::Result<T> {
    if status.is_success() {
        return Ok(serde_json::from_slice(body)?);
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::bail!("{status}: {message}")
}

/// A JSON list of strings, comma-separated (empty for anything else).
pub fn joined(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `postern: fatal: MESSAGE` on stderr, exit 1.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    // The lines logged before it come first.
    postern::logging::flush();
    eprintln!("postern: fatal: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the hand-written escaper kept, and everything else as %XX in capitals.
    #[test]
    fn url_escape_keeps_the_same_bytes_as_before() {
        assert_eq!(url_escape("AZaz09-._@"), "AZaz09-._@");
        assert_eq!(
            url_escape("a b/c?d&e=f+g%h~"),
            "a%20b%2Fc%3Fd%26e%3Df%2Bg%25h%7E"
        );
        assert_eq!(url_escape("x-TLSLevel: Require"), "x-TLSLevel%3A%20Require");
        assert_eq!(url_escape("jörg@ä.example"), "j%C3%B6rg@%C3%A4.example");
        assert_eq!(url_escape(""), "");
    }

    #[test]
    fn an_error_answer_names_the_status_and_the_servers_words() {
        let e = parse_response::<serde_json::Value>(
            StatusCode::NOT_FOUND,
            br#"{"error":"no message 4F2A"}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "404 Not Found: no message 4F2A");
        let e = parse_response::<serde_json::Value>(StatusCode::BAD_GATEWAY, b"plain words")
            .unwrap_err();
        assert_eq!(e.to_string(), "502 Bad Gateway: plain words");
    }
}
