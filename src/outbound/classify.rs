//! The one classifier: every way an attempt can end (TCP, TLS, SMTP reply, policy, timeout)
//! becomes Delivered, Temporary or Permanent, with an enhanced code and a reason an admin can
//! read in the log line and the DSN.

use std::fmt;

use crate::proto::{Enhanced, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Delivered,
    Temporary,
    Permanent,
}

/// Where in the SMTP dialogue a reply came: what counts as success depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    EndOfData,
}

impl Stage {
    /// The one success reply of each stage (RFC 5321 section 4.3.2; RFC 3207 section 4 for
    /// STARTTLS, RFC 4954 section 6 for AUTH). MAIL is exactly 250: a 251 or 252 there is no
    /// promise that a transaction started.
    pub fn accepts(self, code: u16) -> bool {
        match self {
            Stage::Greeting | Stage::StartTls => code == 220,
            Stage::Ehlo | Stage::Helo | Stage::Mail | Stage::EndOfData => code == 250,
            Stage::Rcpt => code == 250 || code == 251,
            Stage::Data => code == 354,
            Stage::Auth => code == 235,
        }
    }

    /// The command a reply answers, as Postfix names it in `(in reply to ...)`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "initial greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Stage::Greeting | Stage::StartTls => "220",
            Stage::Ehlo | Stage::Helo | Stage::Mail | Stage::EndOfData => "250",
            Stage::Rcpt => "250 or 251",
            Stage::Data => "354",
            Stage::Auth => "235",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub class: Class,
    pub dsn: Enhanced,
    /// For the log's `(...)` and the DSN's Diagnostic-Code: the remote reply, or our words.
    pub reason: String,
    /// The remote server's reply, when it decided (`Diagnostic-Code: smtp; ...` in a DSN).
    pub remote_reply: Option<String>,
    /// The reply was not one the stage allows (neither its success nor a 4xx/5xx): the
    /// session is out of step with the server and must not be used again.
    pub protocol_error: bool,
    /// Set when the failure was the TLS the policy demands: typed, so TLS-RPT's result type
    /// (RFC 8460 section 4.3) does not come from reading `reason`.
    pub tls_failure: Option<TlsFailure>,
}

/// What a TLS policy failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// STARTTLS not offered, or refused.
    NoStarttls,
    /// The certificate failed the level's check.
    Certificate(crate::tls::CertProblem),
    /// The handshake itself failed, or the cipher was too weak.
    Handshake,
    /// The MX host is not one the MTA-STS policy names.
    MxMismatch,
    /// DANE left no host to try (bogus DNSSEC, or no TLSA records under `dane-only`).
    Dane,
}

impl Outcome {
    /// Any SMTP reply at `stage`: its success reply is Delivered (accepted, for the stages
    /// before the end of data), 4xx Temporary, 5xx Permanent (RFC 5321 section 4.2.1), and
    /// any other reply a protocol error, retried: a 252 to MAIL or a 250 to DATA is never
    /// taken for delivery. A 5xx greeting is retried too, and the next host tried (Postfix's
    /// smtp_skip_5xx_greeting).
    pub fn from_reply(reply: &Reply, host: &str, stage: Stage) -> Outcome {
        // Postfix's smtp(8) words: "refused to talk to me" for a greeting, else "said: ...
        // (in reply to X command)".
        let said = match stage {
            Stage::Greeting => format!("host {host} refused to talk to me: {}", reply.summary()),
            _ => format!(
                "host {host} said: {} (in reply to {} command)",
                reply.summary(),
                stage.name()
            ),
        };
        let (class, dsn, reason, protocol_error) = if stage.accepts(reply.code) {
            (Class::Delivered, reply.dsn(), reply.summary(), false)
        } else {
            match reply.code {
                400..=499 => (Class::Temporary, reply.dsn(), said, false),
                500..=599 if stage == Stage::Greeting => {
                    let d = reply.dsn();
                    (Class::Temporary, Enhanced(4, d.1, d.2), said, false)
                }
                500..=599 => (Class::Permanent, reply.dsn(), said, false),
                _ => (
                    Class::Temporary,
                    Enhanced(4, 5, 0),
                    format!("{said}: protocol error, expected {}", stage.expected()),
                    true,
                ),
            }
        };
        Outcome {
            class,
            dsn,
            reason,
            remote_reply: Some(reply.summary()),
            protocol_error,
            tls_failure: None,
        }
    }

    pub fn temporary(dsn: Enhanced, reason: impl Into<String>) -> Outcome {
        Outcome {
            class: Class::Temporary,
            dsn,
            reason: reason.into(),
            remote_reply: None,
            protocol_error: false,
            tls_failure: None,
        }
    }

    pub fn permanent(dsn: Enhanced, reason: impl Into<String>) -> Outcome {
        Outcome {
            class: Class::Permanent,
            dsn,
            reason: reason.into(),
            remote_reply: None,
            protocol_error: false,
            tls_failure: None,
        }
    }

    /// The same, marked as the policy's TLS demand failing.
    pub fn tls(mut self, failure: TlsFailure) -> Outcome {
        self.tls_failure = Some(failure);
        self
    }

    /// A connection-level failure: network errors are never final (RFC 5321 section 4.5.4.1).
    pub fn connection(reason: impl Into<String>) -> Outcome {
        Outcome::temporary(Enhanced(4, 4, 1), reason)
    }

    pub fn timeout(stage: &str, host: &str) -> Outcome {
        Outcome::temporary(
            Enhanced(4, 4, 2),
            format!("conversation with {host} timed out while {stage}"),
        )
    }

    /// RFC 3464 Diagnostic-Code: the remote reply, or our own reason.
    pub fn diagnostic(&self) -> String {
        match &self.remote_reply {
            Some(reply) => format!("smtp; {reply}"),
            None => format!("X-Postern; {}", self.explanation()),
        }
    }

    /// What a bounce tells the sender, Postfix's way: the remote host's words as our reason
    /// quotes them (`host H[ip] said: 550 ...`), or our own reason after its status code
    /// (`5.7.0 encryption too weak 0 less than 112 (...)`), since no reply carries one.
    pub fn explanation(&self) -> String {
        match &self.remote_reply {
            Some(_) => self.reason.clone(),
            None => format!("{} {}", self.dsn, self.reason),
        }
    }

    /// Postfix's status word.
    pub fn status(&self) -> &'static str {
        match self.class {
            Class::Delivered => "sent",
            Class::Temporary => "deferred",
            Class::Permanent => "bounced",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status(), self.dsn, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply::from_lines(code, vec![text.into()])
    }

    #[test]
    fn reply_classes() {
        let r = reply(250, "2.0.0 Ok: queued as X");
        assert_eq!(
            Outcome::from_reply(&r, "h", Stage::EndOfData).class,
            Class::Delivered
        );
        let o = Outcome::from_reply(&reply(451, "4.3.0 try later"), "mx[192.0.2.1]", Stage::Rcpt);
        assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 3, 0)));
        assert_eq!(
            o.reason,
            "host mx[192.0.2.1] said: 451 4.3.0 try later (in reply to RCPT TO command)"
        );
        let o = Outcome::from_reply(&reply(550, "no such user"), "h", Stage::Rcpt);
        assert_eq!((o.class, o.dsn), (Class::Permanent, Enhanced(5, 0, 0)));
        assert_eq!(o.status(), "bounced");
        // A server that will not talk is skipped, not bounced.
        let o = Outcome::from_reply(&reply(554, "5.3.2 go away"), "h", Stage::Greeting);
        assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 3, 2)));
    }

    /// Every reply code class at every stage: only the stage's own success is Delivered; a
    /// success code of another stage is a protocol error (4.5.0, reply quoted), never sent.
    #[test]
    fn success_is_exact_per_stage() {
        use Stage::*;
        let table: &[(Stage, &[u16])] = &[
            (Greeting, &[220]),
            (Ehlo, &[250]),
            (Helo, &[250]),
            (StartTls, &[220]),
            (Auth, &[235]),
            (Mail, &[250]),
            (Rcpt, &[250, 251]),
            (Data, &[354]),
            (EndOfData, &[250]),
        ];
        let codes = [
            200, 211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 399, 100, 199, 600, 999,
        ];
        for &(stage, ok) in table {
            for code in codes {
                let o = Outcome::from_reply(&reply(code, "text"), "h[192.0.2.1]:25", stage);
                if ok.contains(&code) {
                    assert_eq!(o.class, Class::Delivered, "{code} at {stage:?}");
                    assert!(!o.protocol_error);
                } else {
                    assert_eq!(
                        (o.class, o.dsn, o.protocol_error),
                        (Class::Temporary, Enhanced(4, 5, 0), true),
                        "{code} at {stage:?}"
                    );
                    let said = match stage {
                        Greeting => {
                            format!("host h[192.0.2.1]:25 refused to talk to me: {code} text")
                        }
                        _ => format!(
                            "host h[192.0.2.1]:25 said: {code} text (in reply to {} command)",
                            stage.name()
                        ),
                    };
                    assert!(
                        o.reason.starts_with(&format!("{said}: protocol error")),
                        "{}",
                        o.reason
                    );
                    assert_eq!(o.status(), "deferred");
                }
            }
        }
    }
}
