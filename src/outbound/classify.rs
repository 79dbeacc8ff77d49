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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub class: Class,
    pub dsn: Enhanced,
    /// For the log's `(...)` and the DSN's Diagnostic-Code: the remote reply, or our words.
    pub reason: String,
    /// The remote server's reply, when it decided (`Diagnostic-Code: smtp; ...` in a DSN).
    pub remote_reply: Option<String>,
}

impl Outcome {
    /// Any SMTP reply: 2xx delivered, 4xx temporary, 5xx permanent (RFC 5321 section 4.2.1).
    pub fn from_reply(reply: &Reply, host: &str, stage: &str) -> Outcome {
        let class = match reply.code {
            200..=399 => Class::Delivered,
            400..=499 => Class::Temporary,
            _ => Class::Permanent,
        };
        let reason = match class {
            Class::Delivered => reply.summary(),
            _ => format!(
                "host {host} said: {} (in reply to {stage})",
                reply.summary()
            ),
        };
        Outcome {
            class,
            dsn: reply.dsn(),
            reason,
            remote_reply: Some(reply.summary()),
        }
    }

    pub fn temporary(dsn: Enhanced, reason: impl Into<String>) -> Outcome {
        Outcome {
            class: Class::Temporary,
            dsn,
            reason: reason.into(),
            remote_reply: None,
        }
    }

    pub fn permanent(dsn: Enhanced, reason: impl Into<String>) -> Outcome {
        Outcome {
            class: Class::Permanent,
            dsn,
            reason: reason.into(),
            remote_reply: None,
        }
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
            None => format!("X-Postern; {}", self.reason),
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

    #[test]
    fn reply_classes() {
        let r = Reply::from_lines(250, vec!["2.0.0 Ok: queued as X".into()]);
        assert_eq!(
            Outcome::from_reply(&r, "h", "end of DATA").class,
            Class::Delivered
        );
        let r = Reply::from_lines(451, vec!["4.3.0 try later".into()]);
        let o = Outcome::from_reply(&r, "mx[192.0.2.1]", "RCPT TO");
        assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 3, 0)));
        assert_eq!(
            o.reason,
            "host mx[192.0.2.1] said: 451 4.3.0 try later (in reply to RCPT TO)"
        );
        let r = Reply::from_lines(550, vec!["no such user".into()]);
        let o = Outcome::from_reply(&r, "h", "RCPT TO");
        assert_eq!((o.class, o.dsn), (Class::Permanent, Enhanced(5, 0, 0)));
        assert_eq!(o.status(), "bounced");
    }
}
