//! Delivery status notifications (RFC 3464, in a multipart/report of RFC 6522), written the
//! way Postfix's bounce daemon words them, sent with the null sender through the same engine.

use super::Engine;
use super::classify::Outcome;
use crate::spool::{Envelope, QueueEntry};

/// One failed recipient as the report states it.
pub struct Failed<'a> {
    pub recipient: &'a str,
    pub status: String,
    /// `host` of the server that refused it, when one did.
    pub remote_mta: Option<&'a str>,
    /// `smtp; 550 5.1.1 ...` for a remote reply, `X-Postern; ...` for our own reason.
    pub diagnostic: String,
    /// The human part's line for it: `host H[ip] said: ...`, or our own reason.
    pub explanation: String,
}

/// The DSN message and its envelope, or `None` for a message that must not get one: a bounce
/// for a bounce (null sender, RFC 5321 section 6.1) would loop.
pub fn build(
    entry: &QueueEntry,
    original: &[u8],
    failed: &[Failed<'_>],
    hostname: &str,
) -> Option<(Envelope, Vec<u8>)> {
    if entry.envelope.sender.is_empty() || failed.is_empty() {
        return None;
    }
    let boundary = format!("{}.{}/{hostname}", entry.id, crate::fsutil::unix_now());
    let mut m = headers(entry, hostname, &boundary);
    m.push_str(&notification(failed, hostname, &boundary));
    m.push_str(&delivery_status(entry, failed, hostname, &boundary));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(header_section(original));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![entry.envelope.sender.clone()],
        client_ip: "127.0.0.1".into(),
        helo: hostname.to_string(),
        authorised: false,
        smtputf8: !entry.envelope.sender.is_ascii(),
        eight_bit: true,
        received_unix: crate::fsutil::unix_now(),
        rule_levels: Vec::new(),
        tls_header: crate::spool::TlsHeader::Absent,
        tenant: None,
        // RFC 8689 section 4.3: the notice of a REQUIRETLS message goes back under
        // REQUIRETLS too (it carries the headers only, as every notice here does).
        requiretls: entry.envelope.requiretls,
        tls_required_no: false,
    };
    Some((envelope, bytes))
}

/// The report's own header section, as Postfix's bounce daemon writes it.
fn headers(entry: &QueueEntry, hostname: &str, boundary: &str) -> String {
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{hostname} (Mail Delivery System)\r\n"
    ));
    m.push_str(&format!("To: {}\r\n", entry.envelope.sender));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {}\r\n", crate::proto::rfc5322_now()));
    m.push_str(&format!("Message-ID: <{}.bounce@{hostname}>\r\n", entry.id));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m
}

/// The human-readable part: one line per failed recipient.
fn notification(failed: &[Failed<'_>], hostname: &str, boundary: &str) -> String {
    let mut m = format!(
        "--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    m.push_str(&format!(
        "This is the mail system at host {hostname}.\r\n\r\n"
    ));
    m.push_str("I'm sorry to have to inform you that your message could not\r\n");
    m.push_str("be delivered to one or more recipients. It's attached below.\r\n\r\n");
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.recipient, f.explanation));
    }
    m.push_str("\r\n");
    m
}

/// The message/delivery-status part (RFC 3464 section 2): per-message fields, then one
/// block per recipient.
fn delivery_status(
    entry: &QueueEntry,
    failed: &[Failed<'_>],
    hostname: &str,
    boundary: &str,
) -> String {
    let mut m = format!(
        "--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
    );
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    m.push_str(&format!("X-Postern-Queue-ID: {}\r\n", entry.id));
    m.push_str(&format!(
        "X-Postern-Sender: rfc822; {}\r\n",
        entry.envelope.sender
    ));
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        crate::proto::rfc5322_at(entry.envelope.received_unix)
    ));
    for f in failed {
        m.push_str("\r\n");
        m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", f.recipient));
        m.push_str(&format!("Original-Recipient: rfc822;{}\r\n", f.recipient));
        m.push_str("Action: failed\r\n");
        m.push_str(&format!("Status: {}\r\n", f.status));
        if let Some(mta) = f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        m.push_str(&format!("Diagnostic-Code: {}\r\n", f.diagnostic));
    }
    m.push_str("\r\n");
    m
}

/// The original's header section, up to and including its last header line.
fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len());
    &message[..end]
}

/// Queue the DSN for `bounced` recipients; false if it could not be queued.
pub(super) async fn queue(
    engine: &Engine,
    entry: &QueueEntry,
    message: &[u8],
    bounced: &[(usize, Outcome, String)],
) -> bool {
    let failed: Vec<Failed<'_>> = bounced
        .iter()
        .map(|(i, outcome, relay)| Failed {
            recipient: &entry.envelope.recipients[*i],
            status: outcome.dsn.to_string(),
            remote_mta: outcome.remote_reply.as_ref().and(relay.split('[').next()),
            diagnostic: outcome.diagnostic(),
            explanation: outcome.explanation(),
        })
        .collect();
    let Some((envelope, bytes)) = build(entry, message, &failed, &engine.helo) else {
        tracing::info!(target: "postern/bounce", "{}: sender is null: no non-delivery notification", entry.id);
        return true;
    };
    let dsn_id = engine.spool.next_id();
    match engine.spool.commit(dsn_id, envelope, &bytes).await {
        Ok(()) => {
            tracing::info!(target: "postern/bounce", "{}: sender non-delivery notification: {dsn_id}", entry.id);
            true
        }
        Err(e) => {
            tracing::error!(target: "postern/bounce", "{}: cannot queue the non-delivery notification, will retry: {e}", entry.id);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Location, QueueId};

    fn entry(sender: &str) -> QueueEntry {
        QueueEntry {
            id: QueueId(0xABC),
            envelope: Envelope {
                sender: sender.into(),
                recipients: vec!["a@x.example".into()],
                ..Envelope::default()
            },
            size: 0,
            location: Location {
                segment: 1,
                offset: 0,
                len: 0,
            },
            done: vec![None],
            held: false,
            attempts: 0,
            last_error: None,
            last_attempt_unix: None,
            next_attempt_unix: None,
        }
    }

    fn failed() -> Vec<Failed<'static>> {
        vec![Failed {
            recipient: "a@x.example",
            status: "5.1.1".into(),
            remote_mta: Some("mx.x.example"),
            diagnostic: "smtp; 550 5.1.1 <a@x.example>: User unknown".into(),
            explanation: "host mx.x.example[192.0.2.1] said: 550 5.1.1 <a@x.example>: User unknown (in reply to RCPT TO command)".into(),
        }]
    }

    #[test]
    fn never_a_bounce_for_a_bounce() {
        assert!(build(&entry(""), b"Subject: x\r\n\r\nbody", &failed(), "mx").is_none());
    }

    #[test]
    fn report_fields_and_original_headers_only() {
        let (env, bytes) = build(
            &entry("s@y.example"),
            b"Subject: x\r\nFrom: s\r\n\r\nsecret body\r\n",
            &failed(),
            "mx.example",
        )
        .unwrap();
        assert_eq!(env.sender, "");
        assert_eq!(env.recipients, vec!["s@y.example"]);
        let text = String::from_utf8(bytes).unwrap();
        for needle in [
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Reporting-MTA: dns; mx.example\r\n",
            "Final-Recipient: rfc822; a@x.example\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.x.example\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 <a@x.example>: User unknown\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: x\r\nFrom: s\r\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("secret body"));
    }
}
