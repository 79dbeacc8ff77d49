//! The header section of a message (RFC 5322 section 2.2), no I/O: its fields with their
//! folded continuation lines, and a field's value unfolded (section 2.2.3). The one reader
//! of header fields: receipt, delivery and `policy explain` (a field's value) all go through
//! it, so they cannot disagree on a header.
//!
//! Two readings. The strict one (`fields`) ends the section at the first line that is not a
//! field, as Postfix's cleanup does; what postern honours is read so. The lenient one
//! (`lenient_fields`) goes on to the first empty line, as a next hop that skips a malformed
//! line would: what receipt removes from outsiders is found so, since the earliest a next
//! hop can end the header section is never later than that empty line (issue 27).

/// Byte ranges of each header field, continuation lines included, in order.
pub fn fields(message: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let end = section_end(message);
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let field = at..field_end(message, at, end);
        at = field.end;
        Some(field)
    })
}

/// Offset of the blank line that ends the header section (or of the first line that is not a
/// header field, or the end of the message).
pub fn section_end(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let line_end = next_line(message, at);
        let line = &message[at..line_end];
        let is_field =
            line.first().is_some_and(|b| *b == b' ' || *b == b'\t') || is_field_start(line);
        if line == b"\r\n" || line == b"\n" || !is_field {
            return at;
        }
        at = line_end;
    }
    message.len()
}

/// Whether `field` is named `name`, case-insensitively. The obsolete `name :` form (RFC 5322
/// section 4.5.8) counts: mail parsers accept it, so a header must not hide behind it.
pub fn is_named(field: &[u8], name: &str) -> bool {
    field.iter().position(|&b| b == b':').is_some_and(|colon| {
        field[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(name.as_bytes())
    })
}

/// The value of a field, unfolded: line breaks removed, each run of spaces and tabs one
/// space, trimmed. `x-TLSLevel:\r\n\tRequire` gives `Require`.
pub fn unfolded_value(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    let text = String::from_utf8_lossy(&field[colon..]);
    text.split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The unfolded value of the first field named `name` in the header section.
pub fn first_value(message: &[u8], name: &str) -> Option<String> {
    fields(message)
        .map(|r| &message[r])
        .find(|f| is_named(f, name))
        .map(unfolded_value)
}

/// The header Email Security's message rules set to ask delivery for TLS (`Require`,
/// `Try`): receipt keeps it from authorised clients, strips it from others.
pub const TLS_LEVEL: &str = "x-TLSLevel";

/// The first `x-TLSLevel` header's value in a message's header section, unfolded. Only the
/// first field counts: receipt records it in the envelope, and delivery and `policy
/// explain` read the same value.
pub fn first_tls_level_header(message: &[u8]) -> Option<String> {
    first_value(message, TLS_LEVEL)
}

/// Offset of the first empty line (or the end of the message): RFC 5322 section 2.1 ends
/// the header section there, and no reader, however lenient, reads a field past it.
pub fn first_empty_line(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let line_end = next_line(message, at);
        if matches!(&message[at..line_end], b"\r\n" | b"\n") {
            return at;
        }
        at = line_end;
    }
    message.len()
}

/// Byte ranges of everything a lenient reader could take for a header field, in order, up to
/// the first empty line: each line the strict reader would stop at (no colon, an empty or
/// 8-bit name) is a piece of its own, and so is a folded line that follows one (a reader that
/// skipped the line before may trim it and read a field). A field start takes its folded
/// continuation lines with it, as in `fields`.
pub fn lenient_fields(message: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let end = first_empty_line(message);
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let line_end = next_line(message, at);
        let field = match is_field_start(message[at..line_end].trim_ascii_start()) {
            true => at..field_end(message, at, end),
            false => at..line_end,
        };
        at = field.end;
        Some(field)
    })
}

/// The name a lenient reader sees in a piece `lenient_fields` gave: what comes before the
/// first colon of its first line, without the spaces and tabs around it (`X-TLSLevel :`
/// and a folded ` x-TLSLevel:` both give `X-TLSLevel`). `None` without a colon.
pub fn lenient_name(field: &[u8]) -> Option<&[u8]> {
    let line = &field[..next_line(field, 0)];
    let colon = line.iter().position(|&b| b == b':')?;
    Some(line[..colon].trim_ascii())
}

fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    !name.is_empty() && name.iter().all(u8::is_ascii_graphic)
}

fn next_line(message: &[u8], at: usize) -> usize {
    message[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i + 1)
        .unwrap_or(message.len())
}

/// End of the field starting at `at`: its first line and every folded continuation.
fn field_end(message: &[u8], at: usize, limit: usize) -> usize {
    let mut end = next_line(message, at);
    while end < limit && matches!(message[end], b' ' | b'\t') {
        end = next_line(message, end);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_case_and_whitespace_variants_give_one_value() {
        for m in [
            &b"From: a\r\nx-TLSLevel: Require\r\n\r\nbody"[..],
            b"From: a\r\nx-TLSLevel:\r\n Require\r\n\r\nbody",
            b"From: a\r\nX-TLSLEVEL :Require\r\n\r\nbody",
            b"From: a\r\nx-tlslevel:\tRequire\t\r\n\r\nbody",
            b"x-TLSLevel:\r\n\t\r\n  Require\r\nSubject: s\r\n\r\n",
            b"x-TLSLevel:\n Require\n\n",
        ] {
            assert_eq!(
                first_value(m, "x-tlslevel").as_deref(),
                Some("Require"),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn only_the_header_section_and_the_first_field() {
        let m = b"From: a\r\nX-TLSLevel: Try\r\nx-tlslevel: Require\r\n\r\nx-TLSLevel: body\r\n";
        assert_eq!(first_value(m, "x-TLSLevel").as_deref(), Some("Try"));
        assert_eq!(
            first_value(b"From: a\r\n\r\nx-TLSLevel: Require\r\n", "x-TLSLevel"),
            None
        );
        assert_eq!(
            first_value(b"not a header\r\nx-TLSLevel: Require\r\n", "x-TLSLevel"),
            None
        );
        // A longer name is another field.
        assert_eq!(
            first_value(b"x-TLSLevels: Require\r\n\r\n", "x-TLSLevel"),
            None
        );
    }

    /// The pieces of `m` as text, with their lenient names.
    fn lenient(m: &[u8]) -> Vec<(String, Option<String>)> {
        lenient_fields(m)
            .map(|r| {
                let piece = &m[r];
                let name = lenient_name(piece).map(|n| String::from_utf8_lossy(n).into_owned());
                (String::from_utf8_lossy(piece).into_owned(), name)
            })
            .collect()
    }

    #[test]
    fn lenient_reading_goes_past_malformed_lines_to_the_first_empty_line() {
        let m = "From: a\r\n folded\r\nno colon\r\nSübject: s\r\n: x\r\n x-TLSLevel :\r\n\tRequire\r\nX-TLSLevel: Try\r\n\r\nx-TLSLevel: body\r\n";
        let pieces = lenient(m.as_bytes());
        let name = |s: &str| Some(s.to_string());
        assert_eq!(
            pieces,
            vec![
                ("From: a\r\n folded\r\n".into(), name("From")),
                ("no colon\r\n".into(), None),
                ("Sübject: s\r\n".into(), name("Sübject")),
                (": x\r\n".into(), name("")),
                (" x-TLSLevel :\r\n\tRequire\r\n".into(), name("x-TLSLevel")),
                ("X-TLSLevel: Try\r\n".into(), name("X-TLSLevel")),
            ]
        );
        // The strict reader stops at the line without a colon; neither goes past the empty line.
        assert_eq!(first_value(m.as_bytes(), "x-TLSLevel"), None);
        assert_eq!(
            first_empty_line(m.as_bytes()),
            m.find("\r\n\r\n").unwrap() + 2
        );
    }

    #[test]
    fn lenient_reading_without_an_empty_line_reads_to_the_end() {
        let m = b"no header at all\r\nx-TLSLevel: Require";
        assert_eq!(first_empty_line(m), m.len());
        assert_eq!(lenient(m).len(), 2);
        assert_eq!(lenient(b"\r\nx-TLSLevel: Require\r\n"), vec![]);
        // A folded line under a real field is its value, never a field of its own.
        assert_eq!(lenient(b"Subject: a\r\n x-TLSLevel: b\r\n\r\n").len(), 1);
    }
}
