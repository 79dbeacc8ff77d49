//! SMTP AUTH (RFC 4954) towards a next hop that requires it.

use super::super::classify::{Class, Outcome, Stage};
use super::conn::Conn;
use super::ehlo::Extensions;
use crate::proto::Enhanced;

/// SASL PLAIN (RFC 4616) or LOGIN, PLAIN preferred, and only inside TLS: credentials never
/// cross in plaintext, whatever the policy said. Failures read as Postfix's.
pub(super) async fn authenticate(
    conn: &mut Conn,
    ext: &Extensions,
    (user, password): (&str, &str),
    tls: bool,
    name: &str,
) -> Result<(), Outcome> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let refused = |why: String| Outcome::temporary(Enhanced(4, 7, 0), why);
    if !tls {
        return Err(refused(format!(
            "SASL authentication to {name} requires TLS: credentials are not sent in plaintext"
        )));
    }
    let offers = |m: &str| ext.auth.iter().any(|a| a == m);
    let reply = if offers("PLAIN") {
        let token = STANDARD.encode(format!("\0{user}\0{password}"));
        conn.command(&format!("AUTH PLAIN {token}"), "sending AUTH")
            .await?
    } else if offers("LOGIN") {
        let mut reply = conn.command("AUTH LOGIN", "sending AUTH").await?;
        for step in [user, password] {
            if reply.code != 334 {
                break;
            }
            reply = conn.command(&STANDARD.encode(step), "sending AUTH").await?;
        }
        reply
    } else {
        return Err(refused(format!(
            "SASL authentication failed; server {name} offered no compatible authentication mechanisms for this type of connection security"
        )));
    };
    let o = Outcome::from_reply(&reply, name, Stage::Auth);
    if o.class == Class::Delivered {
        Ok(())
    } else {
        Err(refused(format!(
            "SASL authentication failed; server {name} said: {}",
            reply.summary()
        )))
    }
}
