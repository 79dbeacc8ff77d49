//! SMTP replies as values (RFC 5321 section 4.2) with enhanced status codes (RFC 3463).
//!
//! Handlers build a `Reply`; only `Reply::to_wire` turns it into bytes, so no handler ever
//! writes a byte literal and every reply carries its enhanced code.

use std::fmt;

/// An RFC 3463 enhanced status code: `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced code (absent only for the greeting, the EHLO
/// reply and AUTH challenges, as RFC 2034 section 3 allows) and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (220 greeting, 250 EHLO, 334 challenges).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The first line as a log would show it: `554 5.7.1 <x>: Relay access denied`.
    pub fn summary(&self) -> String {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        match self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, first),
            None => format!("{} {}", self.code, first),
        }
    }

    /// Bytes on the wire: `code-` on every line but the last, which has `code ` (RFC 5321
    /// section 4.2.1); the enhanced code prefixes every line's text (RFC 2034 section 4).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.enhanced {
                Some(e) => format!("{}{}{} {}\r\n", self.code, sep, e, line),
                None => format!("{}{}{}\r\n", self.code, sep, line),
            };
            out.extend_from_slice(text.as_bytes());
        }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_to(&mut out);
        out
    }
}

/// One line of a server's reply, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    /// False on `250-...` lines; true on the last line, `250 ...`.
    pub last: bool,
    pub text: &'a str,
}

impl<'a> ReplyLine<'a> {
    /// Parse `ddd text`, `ddd-text` or a bare `ddd` (RFC 5321 section 4.2), without CRLF.
    pub fn parse(line: &'a str) -> Option<ReplyLine<'a>> {
        let code = line.get(..3)?;
        if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&code.as_bytes()[0])
        {
            return None;
        }
        let (last, text) = match line.as_bytes().get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return None,
        };
        Some(ReplyLine {
            code: code.parse().ok()?,
            last,
            text,
        })
    }
}

impl Reply {
    /// Assemble a received reply from its lines, splitting off an enhanced code (RFC 2034)
    /// when the first line starts with one of the reply's class.
    pub fn from_lines(code: u16, texts: Vec<String>) -> Reply {
        let enhanced = texts.first().and_then(|t| parse_enhanced(t, code));
        let lines = match enhanced {
            Some(_) => texts
                .into_iter()
                .map(|t| match t.split_once(' ') {
                    Some((first, rest)) if parse_enhanced(first, code).is_some() => {
                        rest.to_string()
                    }
                    _ if parse_enhanced(&t, code).is_some() => String::new(),
                    _ => t,
                })
                .collect(),
            None => texts,
        };
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// The enhanced code, or the class default (`4.0.0`, `5.0.0`) for servers without one.
    pub fn dsn(&self) -> Enhanced {
        self.enhanced
            .unwrap_or(Enhanced((self.code / 100) as u8, 0, 0))
    }
}

fn parse_enhanced(text: &str, code: u16) -> Option<Enhanced> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    (parts.next().is_none() && u16::from(class) == code / 100)
        .then_some(Enhanced(class, subject, detail))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The replies postern gives, in one place, with the texts admins know from Postfix.
pub mod replies {
    use super::{Enhanced, Reply};

    pub fn ok() -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), "Ok")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 0), "Ok")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, Enhanced(2, 1, 5), "Ok")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as {id}"))
    }
    pub fn chunk_ok(size: usize) -> Reply {
        Reply::new(
            250,
            Enhanced(2, 0, 0),
            format!("Ok: {size} octets received"),
        )
    }
    pub fn start_data() -> Reply {
        Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
    }
    pub fn bye() -> Reply {
        Reply::new(221, Enhanced(2, 0, 0), "Bye")
    }
    pub fn ready_to_start_tls() -> Reply {
        Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS")
    }
    pub fn vrfy() -> Reply {
        // RFC 5321 section 3.5.3: 252 when we will not verify but will accept the mail.
        Reply::new(
            252,
            Enhanced(2, 0, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Reply {
        Reply::new(
            214,
            Enhanced(2, 0, 0),
            "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, Enhanced(2, 7, 0), "Authentication successful")
    }

    // 4xx
    /// `postern node drain`: this node takes no new mail while its queue goes to a peer;
    /// senders try the next MX (RFC 5321 section 3.8).
    pub fn draining(hostname: &str) -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            format!(
                "{hostname} Service not available: this node is being drained for maintenance, try another MX"
            ),
        )
    }

    pub fn too_many_connections() -> Reply {
        Reply::new(421, Enhanced(4, 7, 0), "Error: too many connections")
    }
    pub fn too_many_connections_from(ip: &str) -> Reply {
        Reply::new(
            421,
            Enhanced(4, 7, 0),
            format!("Error: too many connections from {ip}"),
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, Enhanced(4, 7, 0), "Error: too many errors")
    }
    pub fn timeout() -> Reply {
        Reply::new(421, Enhanced(4, 4, 2), "Error: timeout exceeded")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            "Service shutting down, closing connection",
        )
    }
    pub fn storage_full() -> Reply {
        Reply::new(452, Enhanced(4, 3, 1), "Insufficient system storage")
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, Enhanced(4, 5, 3), "Error: too many recipients")
    }
    pub fn tls_not_available() -> Reply {
        Reply::new(
            454,
            Enhanced(4, 7, 0),
            "TLS not available due to local problem",
        )
    }

    // 5xx
    pub fn unrecognized() -> Reply {
        Reply::new(502, Enhanced(5, 5, 2), "Error: command not recognized")
    }
    pub fn syntax(text: &str) -> Reply {
        Reply::new(501, Enhanced(5, 5, 4), format!("Syntax: {text}"))
    }
    pub fn bad_address(text: &str) -> Reply {
        Reply::new(
            501,
            Enhanced(5, 1, 3),
            format!("Bad address syntax: {text}"),
        )
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, Enhanced(5, 5, 2), "Error: line too long")
    }
    pub fn bad_sequence(text: &str) -> Reply {
        Reply::new(503, Enhanced(5, 5, 1), format!("Error: {text}"))
    }
    pub fn must_starttls() -> Reply {
        Reply::new(
            530,
            Enhanced(5, 7, 0),
            "Must issue a STARTTLS command first",
        )
    }
    pub fn starttls_not_offered() -> Reply {
        Reply::new(502, Enhanced(5, 5, 1), "Error: command not implemented")
    }
    pub fn auth_not_enabled() -> Reply {
        Reply::new(503, Enhanced(5, 5, 1), "Error: authentication not enabled")
    }
    pub fn auth_mechanism_unknown() -> Reply {
        Reply::new(
            504,
            Enhanced(5, 5, 4),
            "Unrecognized authentication mechanism",
        )
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, Enhanced(5, 7, 8), "Error: authentication failed")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, Enhanced(5, 7, 0), "Authentication aborted")
    }
    pub fn relay_denied(rcpt: &str) -> Reply {
        Reply::new(
            554,
            Enhanced(5, 7, 1),
            format!("<{rcpt}>: Relay access denied"),
        )
    }
    pub fn message_too_big() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Error: message file too big")
    }
    pub fn size_exceeds_limit() -> Reply {
        Reply::new(552, Enhanced(5, 3, 4), "Message size exceeds fixed limit")
    }
    /// Postfix's words for a relay domain's recipient that is not in its table.
    pub fn unknown_in_relay_table(rcpt: &str) -> Reply {
        Reply::new(
            550,
            Enhanced(5, 1, 1),
            format!("<{rcpt}>: Recipient address rejected: User unknown in relay recipient table"),
        )
    }

    /// Postfix's reject_unverified_recipient words: the next hop refused the address.
    pub fn undeliverable_address(rcpt: &str, why: &str) -> Reply {
        Reply::new(
            550,
            Enhanced(5, 1, 1),
            format!("<{rcpt}>: Recipient address rejected: undeliverable address: {why}"),
        )
    }

    /// The same when the next hop could not be asked, or deferred: the client retries.
    pub fn unverified_address(rcpt: &str, why: &str) -> Reply {
        Reply::new(
            450,
            Enhanced(4, 1, 1),
            format!("<{rcpt}>: Recipient address rejected: unverified address: {why}"),
        )
    }

    /// Too many failed AUTH attempts from this client or for this user: try later.
    pub fn auth_locked_out() -> Reply {
        Reply::new(
            454,
            Enhanced(4, 7, 0),
            "Temporary authentication failure: too many failed attempts, try again later",
        )
    }

    pub fn bare_lf() -> Reply {
        // The SMTP smuggling defence (Postfix's smtpd_forbid_bare_newline): only <CR><LF>
        // ends a line, RFC 5321 section 2.3.8.
        Reply::new(
            550,
            Enhanced(5, 5, 2),
            "Error: bare <LF> received (RFC 5321 section 2.3.8)",
        )
    }

    /// The same for a CR without its LF: a next hop that ends lines (or DATA) on a bare CR
    /// could otherwise be smuggled through us.
    pub fn bare_cr() -> Reply {
        Reply::new(
            550,
            Enhanced(5, 5, 2),
            "Error: bare <CR> received (RFC 5321 section 2.3.8)",
        )
    }

    /// A NUL in message content: text lines carry none (RFC 5322 section 2.3; RFC 5321
    /// section 4.1.1.4 advises against control characters). Refused whole rather than
    /// cleaned: removing it changes what the sender signed (DKIM) and hides the probe, and
    /// no real mail carries one (BINARYMIME, the only way to send it, is not offered).
    /// The words are Cyrus lmtpd's ("Message contains NUL characters").
    pub fn nul_in_message() -> Reply {
        Reply::new(
            550,
            Enhanced(5, 6, 0),
            "Error: message contains NUL characters (RFC 5322 section 2.3)",
        )
    }
    pub fn smtputf8_required() -> Reply {
        Reply::new(
            553,
            Enhanced(5, 6, 7),
            "Error: non-ASCII address requires SMTPUTF8",
        )
    }
    /// RFC 8689 section 2: REQUIRETLS is offered, and taken, only inside TLS.
    pub fn requiretls_without_tls() -> Reply {
        Reply::new(
            530,
            Enhanced(5, 7, 10),
            "REQUIRETLS needs a TLS session: issue STARTTLS first",
        )
    }

    pub fn param_unrecognized(param: &str) -> Reply {
        Reply::new(
            555,
            Enhanced(5, 5, 4),
            format!("Unsupported option: {param}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = replies::relay_denied("a@b.example");
        assert_eq!(
            r.to_wire(),
            b"554 5.7.1 <a@b.example>: Relay access denied\r\n"
        );
    }

    #[test]
    fn multiline_uses_dash_on_all_but_last() {
        let r = Reply::multiline(
            250,
            vec!["host".into(), "PIPELINING".into(), "8BITMIME".into()],
        );
        assert_eq!(
            r.to_wire(),
            b"250-host\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
    }

    #[test]
    fn parses_server_lines() {
        assert_eq!(
            ReplyLine::parse("250-PIPELINING"),
            Some(ReplyLine {
                code: 250,
                last: false,
                text: "PIPELINING"
            })
        );
        assert_eq!(
            ReplyLine::parse("221"),
            Some(ReplyLine {
                code: 221,
                last: true,
                text: ""
            })
        );
        assert_eq!(ReplyLine::parse("2x0 no"), None);
        assert_eq!(ReplyLine::parse("250_x"), None);
        assert_eq!(ReplyLine::parse("650 x"), None);
    }

    #[test]
    fn splits_enhanced_code_of_the_right_class() {
        let r = Reply::from_lines(550, vec!["5.1.1 <a@b>: User unknown".into()]);
        assert_eq!(r.enhanced, Some(Enhanced(5, 1, 1)));
        assert_eq!(r.summary(), "550 5.1.1 <a@b>: User unknown");
        let r = Reply::from_lines(451, vec!["5.1.1 mismatched class".into()]);
        assert_eq!(r.enhanced, None);
        assert_eq!(r.dsn(), Enhanced(4, 0, 0));
    }

    #[test]
    fn empty_reply_still_terminates() {
        let r = Reply::multiline(250, vec![]);
        assert_eq!(r.to_wire(), b"250 \r\n");
    }
}
