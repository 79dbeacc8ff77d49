//! Small words the pages share: a count with its noun, an address cut where a line may
//! break, a certificate's time left.

/// "1 message", "2 messages", "0 messages".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An address or host name in pieces after which a line may break (the template puts a
/// `<wbr>` between them): after `.`, `@`, `,`, `:`, `=` and before `[`. A long address in
/// a narrow column then wraps between its labels, never inside a word; without them the
/// browser must either widen the table past its box or break anywhere.
pub fn breakable(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    for c in s.chars() {
        if c == '[' && !piece.is_empty() {
            out.push(std::mem::take(&mut piece));
        }
        piece.push(c);
        if matches!(c, '.' | '@' | ',' | ':' | '=') {
            out.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

/// A certificate's time left as an admin reads it: days while they matter, "more than 10
/// years" past that (a self-signed system certificate runs to the year 4096), and "no
/// expiry" for RFC 5280's 99991231235959Z, "no well-defined expiration date" (§4.1.2.5).
pub fn days_left(days: i64, not_after_unix: i64) -> String {
    const NO_EXPIRY: i64 = 253_402_300_799; // 9999-12-31 23:59:59 UTC
    match days {
        _ if not_after_unix >= NO_EXPIRY => "no expiry".into(),
        d if d > 3650 => "more than 10 years".into(),
        d if d < 0 => format!("expired {} ago", count((-d) as usize, "day", "days")),
        d => count(d as usize, "day", "days"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_and_many() {
        assert_eq!(count(1, "message", "messages"), "1 message");
        assert_eq!(count(2, "message", "messages"), "2 messages");
        assert_eq!(count(0, "message", "messages"), "0 messages");
    }

    #[test]
    fn addresses_break_between_labels_only() {
        assert_eq!(
            breakable("ceo@mx1.partner.example[127.0.0.1]:25"),
            [
                "ceo@", "mx1.", "partner.", "example", "[127.", "0.", "0.", "1]:", "25"
            ]
        );
        assert_eq!(breakable("<>"), ["<>"]);
        assert!(breakable("").is_empty());
        assert_eq!(breakable("a, b").concat(), "a, b");
    }

    #[test]
    fn far_away_expiry_reads_as_words() {
        assert_eq!(days_left(755_711, 67_767_976_233), "more than 10 years");
        assert_eq!(days_left(2_900_000, 253_402_300_799), "no expiry");
        assert_eq!(days_left(3650, 0), "3650 days");
        assert_eq!(days_left(1, 0), "1 day");
        assert_eq!(days_left(-2, 0), "expired 2 days ago");
    }
}
