//! Relay control, per RCPT: who may send to which recipient. Pure: the snapshot, the
//! client's standing and the address in, accept or the reply out.

use crate::proto::{Address, Reply, replies};
use crate::settings::Snapshot;

/// Decide one recipient.
///
/// - An authorised client (trusted network, SMTP AUTH) may send anywhere.
/// - Anyone else only to a relay domain, and never with sender-specified routing in the
///   local part (`user%other@ours`, `"a@b"@ours`, `a!b@ours`), to an address literal, or
///   to an address without a domain: those are the forms relay testers use to make a
///   gateway forward to a third party. Postfix's `reject_unauth_destination` behaves so.
pub fn check_recipient(snapshot: &Snapshot, authorised: bool, rcpt: &Address) -> Result<(), Reply> {
    may_relay(snapshot, authorised, rcpt)?;
    // Known at the relay domain, from anyone: an unknown one refused now never bounces
    // later to a sender who may be forged (backscatter).
    if !snapshot.recipient_known(&rcpt.to_string()) {
        return Err(replies::unknown_in_relay_table(&rcpt.to_string()));
    }
    Ok(())
}

/// Whether `rcpt` is one postern relays for only on a client's standing: not a relay
/// domain's, or in one of the forms relay testers use.
pub fn needs_relay(snapshot: &Snapshot, rcpt: &Address) -> bool {
    let ours = match rcpt.domain.as_deref() {
        Some(d) if !rcpt.is_address_literal() => snapshot.relay_domain(d).is_some(),
        _ => false,
    };
    !ours || rcpt.has_sender_routing()
}

fn may_relay(snapshot: &Snapshot, authorised: bool, rcpt: &Address) -> Result<(), Reply> {
    if authorised {
        return match rcpt.domain {
            Some(_) => Ok(()),
            None => Err(replies::bad_address(&format!(
                "<{rcpt}>: a domain is required"
            ))),
        };
    }
    if needs_relay(snapshot, rcpt) {
        Err(replies::relay_denied(&rcpt.to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{RelayDomain, Settings};

    fn snapshot() -> Snapshot {
        let mut s = Settings::default();
        s.relay_domains.push(RelayDomain {
            domain: "ours.example".into(),
            recipients: None,
            verify_recipients: false,
            transport: Some("[10.0.0.5]".into()),
            auth: None,
            client_certificate: None,
        });
        Snapshot::new(s, 0)
    }

    fn rcpt(line: &str) -> Address {
        match crate::proto::parse(line.as_bytes()).unwrap() {
            crate::proto::Command::Rcpt { to } => to,
            _ => unreachable!("test lines are RCPT"),
        }
    }

    #[test]
    fn outsiders_reach_only_relay_domains() {
        let s = snapshot();
        assert!(check_recipient(&s, false, &rcpt("RCPT TO:<a@OURS.example>")).is_ok());
        for trick in [
            "RCPT TO:<a@other.example>",
            "RCPT TO:<a%other.example@ours.example>",
            "RCPT TO:<a!other.example@ours.example>",
            "RCPT TO:<\"a@other.example\"@ours.example>",
            "RCPT TO:<a@other.example@ours.example>",
            "RCPT TO:<@ours.example:a@other.example>",
            "RCPT TO:<a@[192.0.2.1]>",
            "RCPT TO:<a@>",
            "RCPT TO:<a>",
            "RCPT TO:<a@sub.ours.example>",
        ] {
            let err = check_recipient(&s, false, &rcpt(trick)).unwrap_err();
            assert_eq!(err.summary().get(..9), Some("554 5.7.1"), "{trick}");
        }
    }

    #[test]
    fn authorised_clients_relay_anywhere_with_a_domain() {
        let s = snapshot();
        assert!(check_recipient(&s, true, &rcpt("RCPT TO:<a@other.example>")).is_ok());
        assert_eq!(
            check_recipient(&s, true, &rcpt("RCPT TO:<a>"))
                .unwrap_err()
                .code,
            501
        );
    }
}
