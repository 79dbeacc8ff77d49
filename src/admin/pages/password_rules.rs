//! What a new admin password must not be: shorter than 12 characters, only whitespace, one
//! character repeated, the user's own name, or one of the most common leaked passwords
//! (`common_passwords.txt`, embedded). The throttle limits guessing; this limits what a
//! guess can be.

/// A chosen password: long enough that the throttle, not the guessing, is what limits.
pub const MIN_PASSWORD: usize = 12;

const COMMON: &str = include_str!("common_passwords.txt");

/// Why `new` will not do as `user`'s password, in the page's words.
pub fn weak(new: &str, user: &str) -> Option<&'static str> {
    let lower = new.trim().to_lowercase();
    if new.chars().count() < MIN_PASSWORD {
        Some("The new password must have at least 12 characters.")
    } else if lower.is_empty() {
        Some("The new password cannot be only spaces.")
    } else if lower.chars().all(|c| lower.starts_with(c)) {
        Some("The new password cannot be one character repeated.")
    } else if lower.contains(&user.to_lowercase()) && lower.len() < user.len() + MIN_PASSWORD {
        Some("The new password cannot be mostly your user name.")
    } else if common(&lower) {
        Some("The new password is one of the most common passwords: choose another.")
    } else {
        None
    }
}

fn common(lower: &str) -> bool {
    COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.trim() == lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_common_and_short_passwords_are_refused() {
        assert!(weak(&" ".repeat(12), "admin").is_some());
        assert!(weak("\t \u{a0}          ", "admin").is_some());
        assert!(weak("Password1234", "admin").is_some());
        assert!(weak("QWERTYUIOPASDF", "admin").is_some());
        assert!(weak("aaaaaaaaaaaaaaaa", "admin").is_some());
        assert!(weak("admin1234567", "admin").is_some());
        assert!(weak("short", "admin").is_some());
        assert_eq!(weak("violet kettle 42 harbour", "admin"), None);
    }

    #[test]
    fn the_list_has_no_entry_the_length_rule_already_refuses() {
        for l in COMMON.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.chars().count() >= MIN_PASSWORD, "{l}");
            assert_eq!(l, l.to_lowercase());
        }
    }
}
