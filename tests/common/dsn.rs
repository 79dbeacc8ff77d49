//! A delivery status notification as a mail client reads it: parsed with mail-parser.

use mail_parser::{MessageParser, MimeHeaders};

/// The parts of an RFC 3464 report a sender (and their mail client) sees.
pub struct Dsn {
    pub subject: String,
    /// The human-readable first part.
    pub notification: String,
    /// The message/delivery-status part.
    pub delivery_status: String,
}

/// Parse `bytes` as a multipart/report; panics (with the message) when it is not one.
pub fn parse(bytes: &[u8]) -> Dsn {
    let text = String::from_utf8_lossy(bytes);
    let message = MessageParser::default()
        .parse(bytes)
        .unwrap_or_else(|| panic!("mail-parser cannot parse the DSN:\n{text}"));
    let ct = message.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("delivery-status")),
        "{text}"
    );
    let part_of = |ctype: &str, subtype: &str| {
        message
            .parts
            .iter()
            .find(|p| {
                p.content_type()
                    .is_some_and(|c| c.ctype() == ctype && c.subtype() == Some(subtype))
            })
            .and_then(|p| p.text_contents())
            .unwrap_or_else(|| panic!("no {ctype}/{subtype} part in\n{text}"))
            .to_string()
    };
    Dsn {
        subject: message.subject().unwrap_or_default().to_string(),
        notification: part_of("text", "plain"),
        delivery_status: part_of("message", "delivery-status"),
    }
}
