//! `postern settings`: export, import (merge or `--replace`, with `--dry-run`), roll back
//! the running server's settings document, and load a relay domain's recipient table from
//! a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper::Method;
use postern::admin::client::ApiClient;
use postern::config::Config;
use postern::settings::SettingsDoc;

use super::{api_client, parse_response};

#[derive(clap::Subcommand)]
pub enum SettingsAction {
    /// Print the settings document as TOML (`postern settings export > settings.toml`).
    Export,
    /// Apply FILE (TOML) to the running server: the sections it has replace the running ones,
    /// the others stay. Prints what changes first; on any error nothing changes.
    Import {
        file: PathBuf,
        /// Replace the whole document: a section the file lacks goes back to its default.
        #[arg(long)]
        replace: bool,
        /// Print what would change and apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Go back to the settings before the last settings change (kept in the audit log; a
    /// certificate imported or deleted since is not undone).
    Rollback,
    /// Replace a relay domain's recipient table with the addresses in FILE, one per line
    /// (`#` comments and blank lines ignored), e.g. exported from the directory.
    Recipients { domain: String, file: PathBuf },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: SettingsAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    match action {
        SettingsAction::Export => {
            let (status, body) = client
                .request(Method::GET, "/api/v1/settings", None)
                .await?;
            let doc: SettingsDoc = parse_response(status, &body)?;
            print!("{}", toml::to_string_pretty(&doc)?);
            Ok(())
        }
        SettingsAction::Rollback => {
            let (status, body) = client
                .request(Method::POST, "/api/v1/settings/rollback", None)
                .await?;
            let _: SettingsDoc = parse_response(status, &body)?;
            eprintln!("postern: settings rolled back to the previous version");
            Ok(())
        }
        SettingsAction::Import {
            file,
            replace,
            dry_run,
        } => import_settings(&client, &file, replace, dry_run).await,
        SettingsAction::Recipients { domain, file } => {
            recipients_from_file(&client, &domain, &file).await
        }
    }
}

/// An error about `file`, on one line.
fn at(file: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {}",
        file.display(),
        e.to_string().trim_end().replace('\n', " ")
    )
}

/// `postern settings import FILE [--replace] [--dry-run]`: the file is checked here first (so
/// a TOML error names its line), then the server validates it as a whole; what changes is
/// printed before anything is applied.
pub async fn import_settings(
    client: &ApiClient,
    file: &Path,
    replace: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (method, body) = request(file, replace)?;
    let (status, answer) = client
        .request(
            method.clone(),
            "/api/v1/settings?dry_run=true",
            Some(body.clone()),
        )
        .await?;
    let preview: postern::admin::Preview =
        parse_response(status, &answer).map_err(|e| at(file, &e))?;
    if preview.changes.is_empty() {
        eprintln!("postern: {}: no change", file.display());
    }
    for change in &preview.changes {
        eprintln!("postern: {}: {change}", file.display());
    }
    if dry_run {
        eprintln!("postern: {}: --dry-run: nothing applied", file.display());
        return Ok(());
    }
    if preview.changes.is_empty() {
        return Ok(());
    }
    let (status, answer) = client
        .request(method, "/api/v1/settings", Some(body))
        .await?;
    let _: SettingsDoc = parse_response(status, &answer).map_err(|e| at(file, &e))?;
    eprintln!("postern: settings from {} applied", file.display());
    Ok(())
}

/// The request FILE makes: the whole document (`PUT`, with `--replace`), else the sections
/// it has (`PATCH`), saying which sections stay as they are.
fn request(file: &Path, replace: bool) -> anyhow::Result<(Method, Vec<u8>)> {
    let text = std::fs::read_to_string(file).map_err(|e| at(file, &e))?;
    let doc: SettingsDoc = toml::from_str(&text).map_err(|e| at(file, &e))?;
    if replace {
        return Ok((Method::PUT, serde_json::to_vec(&doc)?));
    }
    let present: Vec<String> = toml::from_str::<toml::Table>(&text)
        .map_err(|e| at(file, &e))?
        .keys()
        .cloned()
        .collect();
    let serde_json::Value::Object(mut all) = serde_json::to_value(&doc)? else {
        anyhow::bail!("{}: the settings document is not a table", file.display());
    };
    all.retain(|k, _| present.contains(k));
    let kept: Vec<&str> = postern::settings::SECTIONS
        .iter()
        .copied()
        .filter(|s| !present.iter().any(|p| p == s))
        .collect();
    if !kept.is_empty() {
        eprintln!(
            "postern: {}: kept as they are (not in the file; --replace to reset them): {}",
            file.display(),
            kept.join(", ")
        );
    }
    Ok((Method::PATCH, serde_json::to_vec(&all)?))
}

/// `postern settings recipients DOMAIN FILE`: the current document with that relay domain's
/// `recipients` replaced, through the same validation as any change; an address the server
/// refuses is named by its line in FILE.
async fn recipients_from_file(client: &ApiClient, domain: &str, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let lines = address_lines(&text);
    let (status, body) = client
        .request(Method::GET, "/api/v1/settings", None)
        .await?;
    let mut doc: SettingsDoc = parse_response(status, &body)?;
    let wanted = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some((index, relay)) = doc
        .relay_domains
        .iter_mut()
        .enumerate()
        .find(|(_, d)| d.domain == wanted)
    else {
        anyhow::bail!("{domain}: not a relay domain (add it first)");
    };
    relay.recipients = Some(lines.iter().map(|(_, a)| a.clone()).collect());
    let body = serde_json::to_vec(&serde_json::json!({ "relay_domains": doc.relay_domains }))?;
    let (status, body) = client
        .request(Method::PATCH, "/api/v1/settings", Some(body))
        .await?;
    let _: SettingsDoc =
        parse_response(status, &body).map_err(|e| at_line(file, &lines, index, &e.to_string()))?;
    eprintln!(
        "postern: {} recipient(s) of {wanted} from {} applied",
        lines.len(),
        file.display()
    );
    Ok(())
}

/// The addresses of a recipients file with their line numbers: `#` comments and blank
/// lines skipped.
fn address_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The server's refusal of `relay_domains[INDEX].recipients[J]` as `FILE:LINE: ...`, the
/// line J came from; else `FILE: ...`.
fn at_line(file: &Path, lines: &[(usize, String)], index: usize, text: &str) -> anyhow::Error {
    let prefix = format!("relay_domains[{index}].recipients[");
    let line = text
        .split(&prefix)
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|j| j.parse::<usize>().ok())
        .and_then(|j| lines.get(j));
    match line {
        Some((n, _)) => anyhow::anyhow!("{}:{n}: {text}", file.display()),
        None => anyhow::anyhow!("{}: {text}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server names the n-th address it refused; the admin reads the line of the file.
    #[test]
    fn a_refused_recipient_is_named_by_its_line_in_the_file() {
        let lines = address_lines("# exported\n\na@example.com\n  b@@example.com \n");
        assert_eq!(
            lines,
            [
                (3, "a@example.com".to_string()),
                (4, "b@@example.com".to_string())
            ]
        );
        let file = Path::new("users.txt");
        let refused = "400 Bad Request: relay_domains[2].recipients[1]: not an address";
        assert_eq!(
            at_line(file, &lines, 2, refused).to_string(),
            format!("users.txt:4: {refused}")
        );
        assert_eq!(
            at_line(file, &lines, 0, refused).to_string(),
            format!("users.txt: {refused}")
        );
    }
}
