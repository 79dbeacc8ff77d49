//! The log as admins read it: Postfix's lines on stderr, either as tracing prints them
//! (`plain`, for a terminal) or as a syslog file holds them (`syslog`:
//! `2026-12-01T09:30:00.123456+00:00 mx.example.com postern/smtp[812]: ...`), the form
//! pflogsumm and the grep recipes written for Postfix's maillog expect; or straight into the
//! systemd journal (`journal`, and `plain` when stderr is the journal), one entry per line
//! with Postfix's identifiers (`journalctl -t postern/smtp`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::printable::escaped;

/// `server.log_format` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// tracing's own line: time, level, target, message.
    #[default]
    Plain,
    /// A syslog file's line (RFC 3339 time, host, `postern/<service>[pid]:`), for pflogsumm.
    Syslog,
    /// Entries sent to the systemd journal, each with its own `SYSLOG_IDENTIFIER`
    /// (`postern/smtpd`, `postern/smtp`, `postern/qmgr`, ...).
    Journal,
}

/// Install the global subscriber; `POSTERN_LOG` filters as `RUST_LOG` would (default `info`).
/// `plain` becomes `journal` when stderr is the journal (systemd says so in `JOURNAL_STREAM`):
/// a line on that stream would carry the unit's one identifier, not Postfix's per service.
pub fn init(format: LogFormat, hostname: &str) {
    let format = match format {
        LogFormat::Plain if journal::stderr_is_journal() => LogFormat::Journal,
        f => f,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG")
        // tower-sessions wraps each request in an info-level span of its own; the lines are
        // Postfix's, without it.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,tower_sessions=warn,tower_sessions_core=warn")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .fmt_fields(EscapedFields)
        .with_writer(|| Batched);
    // A second init (tests that run the CLI in-process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Syslog => builder
            .event_format(SyslogLine {
                hostname: hostname.to_string(),
                pid: std::process::id(),
            })
            .try_init(),
        LogFormat::Journal => {
            let _ = JOURNAL.set(journal::Journal::new());
            builder
                .event_format(journal::Entry {
                    pid: std::process::id(),
                })
                .try_init()
        }
    };
    start_flusher();
}

/// Lines wait at most this long in the buffer before they are written.
const LINGER: Duration = Duration::from_millis(10);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 64 * 1024;

/// The lines formatted but not yet written to stderr. Every event used to be one `write(2)`
/// (seven per relayed message); they are now gathered for up to `LINGER` and written
/// together by one thread, which sleeps while nothing is logged.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static WAKE: Condvar = Condvar::new();

/// tracing's writer: appends the formatted event to `PENDING`.
struct Batched;

impl std::io::Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = lock_pending();
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        // One wake-up per batch: the flusher is asleep only when the buffer is empty.
        if was_empty || pending.len() >= FLUSH_AT {
            WAKE.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<u8>> {
    // A panic while holding it cannot leave the bytes half-appended in a harmful way.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write whatever is pending now (before the process exits, on a panic, after a fatal error).
pub fn flush() {
    let bytes = std::mem::take(&mut *lock_pending());
    write_out(&bytes);
}

/// Set when the lines go to the journal: the pending bytes are then entries, not lines.
static JOURNAL: std::sync::OnceLock<journal::Journal> = std::sync::OnceLock::new();

fn write_out(bytes: &[u8]) {
    if let Some(journal) = JOURNAL.get() {
        journal.send_all(bytes);
    } else if !bytes.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }
}

fn start_flusher() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(flusher);
        if spawned.is_err() {
            eprintln!("postern: warning: cannot start the log writer thread; log lines are written at exit only");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    });
}

fn flusher() {
    let mut spare = Vec::new();
    loop {
        {
            let mut pending = lock_pending();
            while pending.is_empty() {
                pending = WAKE.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            if pending.len() < FLUSH_AT {
                // Gather the lines the next few milliseconds bring.
                pending = WAKE
                    .wait_timeout(pending, LINGER)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut *pending, &mut spare);
        }
        write_out(&spare);
        spare.clear();
        if spare.capacity() > 4 * FLUSH_AT {
            spare = Vec::new();
        }
    }
}

/// One event as a syslog line.
pub struct SyslogLine {
    hostname: String,
    pid: u32,
}

impl<S, N> FormatEvent<S, N> for SyslogLine
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{} {} {}",
            rfc3339_now(),
            self.hostname,
            line(meta.target(), self.pid, &escaped(&fields.text))
        )
    }
}

/// The fields of an event (or span) as tracing writes them, then escaped: a line of the log
/// is one line, whatever a client put in its command (tracing's own escaping covers ESC and
/// the C1 controls only, and not U+2028, bidi overrides or a line feed).
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut text = String::new();
        tracing_subscriber::fmt::format::DefaultFields::new()
            .format_fields(Writer::new(&mut text), fields)?;
        writer.write_str(&escaped(&text))
    }
}

/// `postern/smtp[812]: text`; an event of a library (target `rustls::...`) is named in the
/// text under postern's own name, so every line still has the form syslog readers parse.
fn line(target: &str, pid: u32, text: &str) -> String {
    let (tag, text) = tagged(target, text);
    format!("{tag}[{pid}]: {text}")
}

/// The syslog tag of an event and its text: `postern/smtp` for postern's own targets,
/// `postern` with the target before the text for a library's.
fn tagged<'a>(target: &'a str, text: &str) -> (&'a str, String) {
    if target.starts_with("postern/") {
        (target, text.to_string())
    } else {
        ("postern", format!("{target}: {text}"))
    }
}

/// The message, then any other fields as `key=value`.
#[derive(Default)]
struct Fields {
    text: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

/// Microseconds, UTC: what rsyslog's RSYSLOG_FileFormat writes (pflogsumm reads it).
fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    now.format(&format).unwrap_or_default()
}

mod journal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postern_targets_are_the_syslog_tag_others_are_named() {
        assert_eq!(
            line("postern/smtp", 812, "ABC: to=<a@b>"),
            "postern/smtp[812]: ABC: to=<a@b>"
        );
        assert_eq!(
            line("rustls::conn", 812, "x"),
            "postern[812]: rustls::conn: x"
        );
        let t = rfc3339_now();
        assert_eq!((t.len(), &t[10..11], &t[26..]), (32, "T", "+00:00"), "{t}");
    }

    /// What one event comes out as, in either format.
    fn logged(format: LogFormat, text: &str) -> String {
        let out = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let make = move || Capture(sink.clone());
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .with_writer(make);
        let emit = || tracing::info!(target: "postern/smtpd", "helo=<{text}>");
        match format {
            LogFormat::Plain => tracing::subscriber::with_default(builder.finish(), emit),
            LogFormat::Syslog => {
                let syslog = builder.event_format(SyslogLine {
                    hostname: "mx.example".into(),
                    pid: 1,
                });
                tracing::subscriber::with_default(syslog.finish(), emit)
            }
            LogFormat::Journal => {
                let journal = builder.event_format(journal::Entry { pid: 1 });
                tracing::subscriber::with_default(journal.finish(), emit)
            }
        }
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_text_is_escaped_in_both_formats() {
        let evil = "a\u{2028}b\u{202e}c\x1b[31md\r\nfake: line\u{9b}";
        let want = "helo=<a\\u{2028}b\\u{202e}c\\x1b[31md\\x0d\\x0afake: line\\u{9b}>\n";
        for format in [LogFormat::Plain, LogFormat::Syslog] {
            let line = logged(format, evil);
            assert!(line.ends_with(want), "{format:?}: {line:?}");
            assert_eq!(line.lines().count(), 1, "{line:?}");
        }
        // A journal entry is several FIELD=value lines; its MESSAGE is escaped the same way.
        let entry = logged(LogFormat::Journal, evil);
        assert!(entry.contains(want.trim_end()), "{entry:?}");
        assert!(
            !entry.contains(['\u{2028}', '\u{202e}', '\x1b', '\u{9b}']),
            "{entry:?}"
        );
    }
}
