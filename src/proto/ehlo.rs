//! The EHLO reply: which extensions we offer, decided by the session's state
//! (RFC 5321 section 4.1.1.1, RFC 3207 for STARTTLS, RFC 4954 section 4 for AUTH).

use super::reply::Reply;

#[derive(Debug, Clone)]
pub struct Capabilities {
    pub max_size: usize,
    /// STARTTLS offered: the inbound mode is not `disabled` and TLS is not yet active.
    pub starttls: bool,
    /// AUTH offered: only once TLS is active, so passwords never cross in plaintext.
    pub auth: bool,
    /// REQUIRETLS offered (RFC 8689): only once TLS is active.
    pub requiretls: bool,
}

pub fn ehlo_reply(hostname: &str, caps: &Capabilities) -> Reply {
    let mut lines = vec![
        hostname.to_string(),
        "PIPELINING".to_string(),
        format!("SIZE {}", caps.max_size),
    ];
    if caps.starttls {
        lines.push("STARTTLS".into());
    }
    if caps.auth {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    lines.extend(
        ["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "CHUNKING"]
            .iter()
            .map(|s| s.to_string()),
    );
    if caps.requiretls {
        lines.push("REQUIRETLS".into());
    }
    Reply::multiline(250, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttls_and_auth_follow_the_flags() {
        let plain = ehlo_reply(
            "mx",
            &Capabilities {
                max_size: 10,
                starttls: true,
                auth: false,
                requiretls: false,
            },
        );
        let text = String::from_utf8(plain.to_wire()).unwrap();
        assert!(text.starts_with("250-mx\r\n"));
        assert!(text.contains("250-STARTTLS\r\n"));
        assert!(text.contains("250-SIZE 10\r\n"));
        assert!(!text.contains("AUTH") && !text.contains("REQUIRETLS"));
        assert!(text.ends_with("250 CHUNKING\r\n"));

        let tls = ehlo_reply(
            "mx",
            &Capabilities {
                max_size: 10,
                starttls: false,
                auth: true,
                requiretls: true,
            },
        );
        let text = String::from_utf8(tls.to_wire()).unwrap();
        assert!(!text.contains("STARTTLS"));
        assert!(text.contains("250-AUTH PLAIN LOGIN\r\n"));
        assert!(text.ends_with("250 REQUIRETLS\r\n"));
    }
}
