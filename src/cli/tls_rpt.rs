//! `postern tls-rpt send`: a day's TLS-RPT (RFC 8460) aggregate reports sent now by the
//! running server, one line per policy domain and outcome.

use std::net::SocketAddr;

use hyper::Method;
use postern::config::Config;

use super::{api_client, joined, parse_response};

#[derive(clap::Subcommand)]
pub enum TlsRptAction {
    /// Send a day's reports now to every address not reached yet (the daily round sends
    /// yesterday's a little after midnight UTC). One line per policy domain.
    Send {
        /// The UTC day, YYYY-MM-DD; default: yesterday.
        #[arg(long)]
        day: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: TlsRptAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    let TlsRptAction::Send { day, json } = action;
    let body = serde_json::to_vec(&serde_json::json!({ "day": day }))?;
    let (status, body) = client
        .request(Method::POST, "/api/v1/tls-rpt/send", Some(body))
        .await?;
    let sent: postern::admin::TlsRptSent = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sent)?);
    } else {
        print!("{}", sent_text(&sent));
    }
    Ok(())
}

/// `DAY DOMAIN: sent to ADDRESSES` (and `already sent to`, `not sent`), or that the day
/// recorded nothing.
fn sent_text(sent: &postern::admin::TlsRptSent) -> String {
    let mut out = String::new();
    if sent.reports.is_empty() {
        out.push_str(&format!("{}: no TLS-RPT outcomes recorded\n", sent.day));
    }
    for r in &sent.reports {
        let domain = r["domain"].as_str().unwrap_or("");
        for (word, key) in [
            ("sent to", "sent"),
            ("already sent to", "already"),
            ("not sent", "failed"),
        ] {
            let l = joined(&r[key]);
            if !l.is_empty() {
                out.push_str(&format!("{} {domain}: {word} {l}\n", sent.day));
            }
        }
    }
    out
}
