//! Text from outside (a client's command, a message's header, a next hop's reply) shown to a
//! person, in the log or on a terminal. A character that could recolour or move a terminal's
//! cursor, start a line of its own in the log, or reorder what is read around it (bidi
//! overrides, the trick of CVE-2021-42574) is written as an escape instead; everything else,
//! UTF-8 included, is left as it is. Postfix's `printable()` puts `?` there; an escape says
//! which character it was.
//!
//! One form everywhere (the log and the CLI): Rust's, `\x1b` for an ASCII control character,
//! `\u{2028}` for any other. A tab is kept: it is harmless in a line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is written as an escape.
pub fn needs_escape(c: char) -> bool {
    match c {
        '\t' => false,
        // C0, DEL and C1 (NEL, CSI and the other 8-bit controls).
        c if c.is_control() => true,
        // Line and paragraph separators: a new line to some readers.
        '\u{2028}' | '\u{2029}' => true,
        // Bidi marks, embeddings, overrides and isolates (Unicode Bidirectional Algorithm).
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `text` with every character `needs_escape` names escaped; borrowed when there is none.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs_escape(c) => out.push(c),
            c if c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_separators_and_bidi_are_escaped() {
        assert_eq!(
            escaped("\x1b[31mred\x07\r\nnext\x7f"),
            "\\x1b[31mred\\x07\\x0d\\x0anext\\x7f"
        );
        assert_eq!(escaped("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
        assert_eq!(
            escaped("line\u{2028}para\u{2029}"),
            "line\\u{2028}para\\u{2029}"
        );
        assert_eq!(
            escaped("\u{202e}txt.exe\u{2066}\u{200f}"),
            "\\u{202e}txt.exe\\u{2066}\\u{200f}"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_as_it_is() {
        for text in [
            "Subject:\tplain",
            "Grüße, 日本語 <a@b.example>",
            r"C:\path\x1b",
            "",
        ] {
            assert!(
                matches!(escaped(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }
}
