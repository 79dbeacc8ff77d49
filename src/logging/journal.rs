//! The systemd journal's native protocol (systemd's "Native Journal Protocol" document): one
//! datagram per entry on `/run/systemd/journal/socket`, each field a `NAME=value` line.
//!
//! Written here rather than taken from a crate: `tracing-journald` gives the whole process
//! one `SYSLOG_IDENTIFIER`, and admins need Postfix's per service (`journalctl -t
//! postern/smtp`, pflogsumm on `journalctl` output). It is a few lines of std.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// syslog's mail facility (RFC 5424 section 6.2.1), as Postfix logs.
const FACILITY_MAIL: u8 = 2;

/// Whether stderr is a journal stream: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the
/// stream it connects, and a child whose stderr was redirected elsewhere must not take the
/// inherited variable for its own (systemd.exec(5), `$JOURNAL_STREAM`).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((Ok(dev), Ok(ino))) = stream
        .split_once(':')
        .map(|(d, i)| (d.parse::<u64>(), i.parse::<u64>()))
    else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The socket entries are sent from, and where to.
pub struct Journal {
    socket: Option<UnixDatagram>,
    path: PathBuf,
}

impl Journal {
    /// `POSTERN_JOURNAL_SOCKET` names another socket (tests capture the entries there).
    pub fn new() -> Journal {
        let path = std::env::var_os("POSTERN_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SOCKET));
        Journal {
            socket: UnixDatagram::unbound().ok(),
            path,
        }
    }

    /// Send each entry in `bytes`. One the journal does not take (not running, an entry
    /// larger than a datagram) is written to stderr as a syslog line instead: never lost.
    pub fn send_all(&self, bytes: &[u8]) {
        for entry in entries(bytes) {
            let sent = self
                .socket
                .as_ref()
                .is_some_and(|s| s.send_to(entry, &self.path).is_ok());
            if !sent {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(fallback_line(entry).as_bytes());
                let _ = err.flush();
            }
        }
    }
}

/// The entries in the buffer, each with its fields' newlines: an entry ends with an empty
/// line, which no field can be (every value is on one line, see `entry`).
pub fn entries(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(2).position(|w| w == b"\n\n") {
        out.push(&bytes[..=end]);
        bytes = &bytes[end + 2..];
    }
    if !bytes.is_empty() {
        out.push(bytes);
    }
    out
}

/// One event's fields, then the empty line that ends it.
pub fn entry(level: tracing::Level, target: &str, pid: u32, text: &str) -> String {
    let priority = match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    };
    let (tag, text) = super::tagged(target, text);
    // Client text escaped as in the other formats (a newline too: a Postfix line is one line,
    // and the simple `NAME=value` form needs no binary length).
    let text = crate::printable::escaped(&text);
    format!(
        "PRIORITY={priority}\nSYSLOG_FACILITY={FACILITY_MAIL}\nSYSLOG_IDENTIFIER={tag}\nSYSLOG_PID={pid}\nMESSAGE={text}\n\n"
    )
}

/// A field of an entry as sent.
pub fn field<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// `postern/smtp[812]: text`, for an entry the journal did not take.
fn fallback_line(entry: &[u8]) -> String {
    let entry = String::from_utf8_lossy(entry);
    format!(
        "{}[{}]: {}\n",
        field(&entry, "SYSLOG_IDENTIFIER").unwrap_or("postern"),
        field(&entry, "SYSLOG_PID").unwrap_or("0"),
        field(&entry, "MESSAGE").unwrap_or("")
    )
}

/// tracing's formatter for the journal: one entry per event.
pub struct Entry {
    pub pid: u32,
}

impl<S, N> FormatEvent<S, N> for Entry
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = super::Fields::default();
        event.record(&mut fields);
        writer.write_str(&entry(*meta.level(), meta.target(), self.pid, &fields.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_carries_the_service_as_identifier_and_stays_one_entry() {
        let e = entry(
            tracing::Level::WARN,
            "postern/smtp",
            812,
            "ABC: to=<a@b>\nsecond line",
        );
        assert_eq!(
            e,
            "PRIORITY=4\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=postern/smtp\nSYSLOG_PID=812\nMESSAGE=ABC: to=<a@b>\\x0asecond line\n\n"
        );
        let lib = entry(tracing::Level::INFO, "rustls::conn", 812, "x");
        assert_eq!(field(&lib, "SYSLOG_IDENTIFIER"), Some("postern"));
        assert_eq!(field(&lib, "MESSAGE"), Some("rustls::conn: x"));
        assert_eq!(field(&lib, "PRIORITY"), Some("6"));
    }

    #[test]
    fn a_buffer_splits_into_its_entries_with_their_last_newline() {
        let a = entry(tracing::Level::INFO, "postern/qmgr", 1, "");
        let b = entry(tracing::Level::ERROR, "postern/smtpd", 1, "fatal");
        let both = format!("{a}{b}");
        let split = entries(both.as_bytes());
        assert_eq!(split.len(), 2);
        // journald ignores a last field without its newline.
        assert_eq!(split[0], &a.as_bytes()[..a.len() - 1]);
        assert_eq!(split[1], &b.as_bytes()[..b.len() - 1]);
        assert_eq!(
            fallback_line(split[1]),
            "postern/smtpd[1]: fatal\n".to_string()
        );
    }
}
