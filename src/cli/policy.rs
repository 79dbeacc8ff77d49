//! `postern policy explain`: the TLS level the running server would use for a recipient,
//! and every source that applied (the same `decide()` the delivery engine asks).

use std::net::SocketAddr;

use hyper::Method;
use postern::config::Config;

use super::{api_client, parse_response, url_escape};

#[derive(clap::Subcommand)]
pub enum PolicyAction {
    /// The effective TLS level for RECIPIENT and every source that applied.
    Explain {
        recipient: String,
        /// Assume this header on the message, e.g. 'x-TLSLevel: Require' (as from an
        /// authorised client).
        #[arg(long)]
        header: Option<String>,
        /// Envelope sender, for message rules with sender conditions.
        #[arg(long)]
        sender: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: PolicyAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    let PolicyAction::Explain {
        recipient,
        header,
        sender,
        json,
    } = action;
    let mut path = format!(
        "/api/v1/policy/explain?recipient={}",
        url_escape(&recipient)
    );
    if let Some(h) = &header {
        path.push_str(&format!("&header={}", url_escape(h)));
    }
    if let Some(s) = &sender {
        path.push_str(&format!("&sender={}", url_escape(s)));
    }
    let (status, body) = client.request(Method::GET, &path, None).await?;
    let decision: serde_json::Value = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        print!("{}", explain_text(&recipient, &decision));
    }
    Ok(())
}

/// The decision as the admin reads it: level, minimum strength, what happens when TLS
/// fails, then why, one source per line.
fn explain_text(recipient: &str, decision: &serde_json::Value) -> String {
    let mut out = format!(
        "recipient: {recipient}\nlevel:     {}\nmin bits:  {}\non failure: {}\n",
        decision["level"].as_str().unwrap_or(""),
        decision["min_bits"],
        decision["on_failure"].as_str().unwrap_or("")
    );
    for line in decision["explanation"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", line.as_str().unwrap_or("")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern::policy::{Level, decide};
    use postern::settings::{PolicyRow, Settings, Snapshot, TlsMode};

    #[test]
    fn policy_explain_text() {
        let decision = serde_json::json!({
            "level": "encrypt",
            "min_bits": 128,
            "on_failure": "bounce",
            "explanation": [
                "x-TLSLevel: Require: encrypt (decides)",
                "policy row .partner.example: encrypt (contract 42)",
                "effective: encrypt (from header)",
            ],
        });
        assert_eq!(
            explain_text("ceo@mail.partner.example", &decision),
            "recipient: ceo@mail.partner.example\n\
             level:     encrypt\n\
             min bits:  128\n\
             on failure: bounce\n  \
             - x-TLSLevel: Require: encrypt (decides)\n  \
             - policy row .partner.example: encrypt (contract 42)\n  \
             - effective: encrypt (from header)\n"
        );
    }

    /// The text reads the fields `decide()`'s answer has, under the names the API gives
    /// them: a renamed field would show as an empty line here.
    #[test]
    fn policy_explain_reads_what_the_api_sends() {
        let mut s = Settings::default();
        s.outbound.tls_mode = TlsMode::May;
        s.policy = vec![PolicyRow::new("partner.example", Level::Verify)];
        let d = decide(&Snapshot::new(s, 0), "a@partner.example", None, None);
        let text = explain_text("a@partner.example", &serde_json::to_value(&d).unwrap());
        let mut expected = format!(
            "recipient: a@partner.example\nlevel:     verify\nmin bits:  {}\non failure: {}\n",
            d.min_bits, d.on_failure
        );
        for line in &d.explanation {
            expected.push_str(&format!("  - {line}\n"));
        }
        assert_eq!(text, expected);
        assert!(d.min_bits > 0 && !d.explanation.is_empty(), "{text}");
    }
}
