//! `postern policy explain`: the TLS level the running server would use for a recipient,
//! and every source that applied (the same `decide()` the delivery engine asks); with
//! `--inbound SENDER --client IP`, the inbound TLS rows that hold for mail from that sender
//! and client (the same `decide_inbound()` an SMTP session asks at MAIL FROM).

use std::net::SocketAddr;

use hyper::Method;
use postern::config::Config;

use super::{api_client, parse_response, url_escape};

#[derive(clap::Subcommand)]
pub enum PolicyAction {
    /// The effective TLS level for RECIPIENT and every source that applied; or, with
    /// --inbound and --client, which inbound TLS row decides for mail received from them.
    #[command(
        override_usage = "postern policy explain [--header H] [--sender S] [--json] <RECIPIENT>\n       postern policy explain --inbound <SENDER> --client <IP> [--json]"
    )]
    Explain {
        /// The recipient (outbound policy).
        recipient: Option<String>,
        /// Inbound TLS rows: the envelope sender, an address or a domain ('<>' for the
        /// null sender).
        #[arg(long, value_name = "SENDER", requires = "client", conflicts_with_all = ["recipient", "header", "sender"])]
        inbound: Option<String>,
        /// Inbound TLS rows: the client's IP address.
        #[arg(long, value_name = "IP", conflicts_with_all = ["recipient", "header", "sender"])]
        client: Option<String>,
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
        inbound,
        client: from,
        header,
        sender,
        json,
    } = action;
    let path = match (&recipient, &from) {
        (_, Some(ip)) => format!(
            "/api/v1/policy/explain?inbound={}&client={}",
            url_escape(inbound.as_deref().unwrap_or("")),
            url_escape(ip)
        ),
        (Some(recipient), None) => {
            let mut path = format!("/api/v1/policy/explain?recipient={}", url_escape(recipient));
            if let Some(h) = &header {
                path.push_str(&format!("&header={}", url_escape(h)));
            }
            if let Some(s) = &sender {
                path.push_str(&format!("&sender={}", url_escape(s)));
            }
            path
        }
        (None, None) => anyhow::bail!(
            "policy explain: give a RECIPIENT (outbound), or --inbound SENDER --client IP (inbound TLS rows)"
        ),
    };
    let (status, body) = client.request(Method::GET, &path, None).await?;
    let decision: serde_json::Value = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else if let Some(recipient) = &recipient {
        print!("{}", explain_text(recipient, &decision));
    } else {
        print!("{}", inbound_text(&decision));
    }
    Ok(())
}

/// The inbound decision as the admin reads it: sender and client, the row of each kind that
/// holds, then why, one line each.
fn inbound_text(decision: &serde_json::Value) -> String {
    let row = |kind: &str| match &decision[kind] {
        serde_json::Value::Null => "none".to_string(),
        r => format!(
            "{} ({})",
            r["pattern"].as_str().unwrap_or(""),
            r["level"].as_str().unwrap_or("")
        ),
    };
    let mut out = format!(
        "sender:     {}
client:     {}
sender row: {}
client row: {}
",
        decision["sender_domain"].as_str().unwrap_or("<>"),
        decision["client"].as_str().unwrap_or(""),
        row("sender_row"),
        row("client_row")
    );
    for line in decision["explanation"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", line.as_str().unwrap_or("")));
    }
    out
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

    /// The inbound text reads the fields the API's inbound explain has.
    #[test]
    fn inbound_explain_reads_what_the_api_sends() {
        use postern::settings::{InboundLevel, InboundTlsRow};
        let s = Settings {
            inbound_tls: vec![InboundTlsRow::new("192.0.2.0/24", InboundLevel::Encrypt)],
            ..Settings::default()
        };
        let e = postern::admin::inbound_tls::explain_with(&s, None, "192.0.2.7".parse().unwrap());
        let text = inbound_text(&serde_json::to_value(&e).unwrap());
        let mut expected = "sender:     <>\nclient:     192.0.2.7\nsender row: none\nclient row: 192.0.2.0/24 (encrypt)\n".to_string();
        for line in &e.decision.explanation {
            expected.push_str(&format!("  - {line}\n"));
        }
        assert_eq!(text, expected);
        assert!(
            expected.contains("client row 192.0.2.0/24 names client 192.0.2.7: encrypt (decides)")
        );
    }

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
