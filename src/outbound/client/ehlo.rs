//! EHLO, with HELO when EHLO is refused, and the extensions the server announces.

use super::super::classify::{Class, Outcome, Stage};
use super::conn::Conn;
use crate::proto::Reply;

/// EHLO keywords that matter to us.
#[derive(Debug, Default)]
pub(super) struct Extensions {
    pub(super) esmtp: bool,
    pub(super) starttls: bool,
    pub(super) pipelining: bool,
    pub(super) size: Option<u64>,
    pub(super) eight_bit: bool,
    pub(super) smtputf8: bool,
    pub(super) requiretls: bool,
    /// SASL mechanisms, upper-case.
    pub(super) auth: Vec<String>,
}

pub(super) fn extensions(reply: &Reply) -> Extensions {
    let mut ext = Extensions {
        esmtp: true,
        ..Extensions::default()
    };
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("STARTTLS") => ext.starttls = true,
            Some("PIPELINING") => ext.pipelining = true,
            Some("8BITMIME") => ext.eight_bit = true,
            Some("SMTPUTF8") => ext.smtputf8 = true,
            Some("REQUIRETLS") => ext.requiretls = true,
            Some("SIZE") => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
            Some("AUTH") => ext.auth.extend(words.map(str::to_ascii_uppercase)),
            // The pre-RFC 4954 form some servers still send: `AUTH=LOGIN PLAIN`.
            Some(w) if w.starts_with("AUTH=") => ext.auth.extend(
                std::iter::once(&w[5..])
                    .chain(words)
                    .map(str::to_ascii_uppercase),
            ),
            _ => {}
        }
    }
    ext
}

pub(super) async fn hello(conn: &mut Conn, helo: &str, name: &str) -> Result<Extensions, Outcome> {
    let reply = conn.command(&format!("EHLO {helo}"), "EHLO").await?;
    if Stage::Ehlo.accepts(reply.code) {
        return Ok(extensions(&reply));
    }
    let reply = conn.command(&format!("HELO {helo}"), "HELO").await?;
    let o = Outcome::from_reply(&reply, name, Stage::Helo);
    if o.class == Class::Delivered {
        return Ok(Extensions::default());
    }
    Err(o)
}
