//! Dates as mail headers write them (RFC 5322 section 3.3), UTC.

/// Now, with the zone comment Postfix adds: `Tue, 01 Dec 2026 09:30:00 +0000 (UTC)`.
pub fn rfc5322_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let text = now
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    format!("{text} (UTC)")
}

/// A UNIX time, without the comment (a DSN's `Arrival-Date`); empty if out of range.
pub fn rfc5322_at(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default()
}

/// A UNIX time as the admin pages show every time: `2026-12-01 12:03:05`, UTC (the pages
/// say so once); the epoch if out of range.
pub fn utc_at(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(rfc5322_at(1_796_126_585), "Tue, 01 Dec 2026 12:03:05 +0000");
        assert!(rfc5322_now().ends_with(" +0000 (UTC)"));
        assert_eq!(utc_at(1_796_126_585), "2026-12-01 12:03:05");
    }
}
