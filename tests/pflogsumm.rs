//! pflogsumm, the report admins run on Postfix's maillog, run on postern's log (written with
//! `server.log_format = "syslog"`, read with `pflogsumm --syslog-name=postern`): it counts the
//! same delivered, deferred and bounced messages as the delivery records say. The same holds
//! for the systemd journal (`log_format = "journal"`, what postern writes under systemd): the
//! entries it sends over the journal's native protocol, captured on a socket it is pointed at,
//! carry Postfix's identifiers per service and, printed as `journalctl` prints them, are
//! counted alike. pflogsumm is installed by .ci/run; without it the tests say so and pass only
//! outside CI.

mod common;

use common::process::{Keys, Proc, spawn_postern_with};
use common::sink::{Sink, SinkOptions};
use common::*;

/// pflogsumm lives in /usr/sbin, which a user's PATH may lack.
fn pflogsumm() -> Option<&'static str> {
    if std::path::Path::new("/usr/sbin/pflogsumm").exists() {
        Some("/usr/sbin/pflogsumm")
    } else if have("pflogsumm") {
        Some("pflogsumm")
    } else {
        None
    }
}

/// `      3   delivered` in pflogsumm's Grand Totals.
fn total(report: &str, what: &str) -> usize {
    report
        .lines()
        .map(str::trim)
        .find_map(|l| {
            let (n, rest) = l.split_once(char::is_whitespace)?;
            rest.trim_start()
                .starts_with(what)
                .then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {what:?} total in\n{report}"))
}

/// Three transactions through postern at `smtp`: a and b delivered in one, nobody@ bounced by
/// the sink, x@ deferred (its next hop refuses connections). Returns the delivery records
/// once all five are written.
async fn traffic(
    smtp: std::net::SocketAddr,
    sink: &mut Sink,
    data: &std::path::Path,
) -> Vec<serde_json::Value> {
    let mut c = SmtpClient::connect(smtp, None, None).await;
    c.cmd("EHLO client.test.example").await;
    for rcpts in [
        &["a@good.example", "b@good.example"][..],
        &["nobody@good.example"],
        &["x@dead.example"],
    ] {
        queue_id(
            &c.send("app@good.example", rcpts, &message("summary", ""))
                .await,
        );
    }
    c.cmd("QUIT").await;
    // a and b (one transaction), then the bounce's notification arrive; nobody bounces; x
    // is deferred.
    for _ in 0..2 {
        sink.next(20).await.expect("delivered");
    }
    let records_path = data.join("log/delivery.jsonl");
    loop {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(&records_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= 5 {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The sink, the routes to it and to a port nobody listens on.
async fn next_hops() -> (Sink, String) {
    let sink = Sink::start(SinkOptions {
        reject: vec!["nobody@good.example".into()],
        ..SinkOptions::default()
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let routes = format!(
        "[outbound.routes]\n\"good.example\" = \"[127.0.0.1]:{}\"\n\"dead.example\" = \"[127.0.0.1]:{dead}\"\n",
        sink.addr.port()
    );
    (sink, routes)
}

/// pflogsumm's report on `lines`, checked against the records' counts.
fn assert_counts(
    pflogsumm: &str,
    dir: &std::path::Path,
    lines: &[String],
    records: &[serde_json::Value],
) {
    let count = |status: &str| records.iter().filter(|r| r["status"] == status).count();
    assert_eq!(
        (count("sent"), count("deferred"), count("bounced")),
        (3, 1, 1),
        "{records:#?}"
    );
    let maillog = dir.join("maillog");
    std::fs::write(&maillog, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(pflogsumm)
        .arg("--syslog-name=postern")
        .arg(&maillog)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(total(&report, "received"), 3, "{report}");
    assert_eq!(total(&report, "delivered"), count("sent"), "{report}");
    assert_eq!(total(&report, "deferred"), count("deferred"), "{report}");
    assert_eq!(total(&report, "bounced"), count("bounced"), "{report}");
}

#[tokio::test]
async fn pflogsumm_counts_what_the_delivery_records_say() {
    let Some(pflogsumm) = pflogsumm() else {
        return;
    };
    let (mut sink, routes) = next_hops().await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            server: "log_format = \"syslog\"",
            ..Keys::default()
        },
        &routes,
    );
    let records = traffic(proc.smtp, &mut sink, &dir.path().join("data")).await;
    let log = proc.log.clone();
    assert!(proc.stop().await);
    let lines = log.lock().unwrap().clone();
    assert_counts(pflogsumm, dir.path(), &lines, &records);
}

/// What arrived on the journal socket: when, and the entry as sent.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(time::OffsetDateTime, String)>>>;

/// `postern serve` with `log_format = "journal"`, pointed at a journal socket of ours
/// (`POSTERN_JOURNAL_SOCKET`); started once its "daemon started" entry has come.
fn spawn_journal(
    dir: &std::path::Path,
    routes: &str,
) -> (Proc, std::process::ChildStderr, Received) {
    let socket_path = dir.join("journal.socket");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let received = Received::default();
    let into = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = socket.recv(&mut buf) {
            let entry = String::from_utf8_lossy(&buf[..n]).into_owned();
            into.lock()
                .unwrap()
                .push((time::OffsetDateTime::now_utc(), entry));
        }
    });
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test.example\"\ndata_dir = \"{}\"\nlog_format = \"journal\"\n[smtp]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n[admin]\nlisten = \"127.0.0.1:0\"\n{routes}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("POSTERN_JOURNAL_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let smtp = loop {
        let started = received.lock().unwrap().iter().find_map(|(_, e)| {
            let rest = field(e, "MESSAGE")?.split("smtp on ").nth(1)?;
            rest.split(',').next()?.parse().ok()
        });
        if let Some(addr) = started {
            break addr;
        }
        assert!(std::time::Instant::now() < deadline, "no start entry");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let proc = Proc {
        child,
        config,
        smtp,
        log,
    };
    (proc, stderr, received)
}

/// A field of a native journal entry (`NAME=value` lines).
fn field<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// An entry as `journalctl` prints it by default (`-o short`): `Dec 07 17:12:00 host
/// postern/smtp[812]: message`.
fn journalctl_short(at: time::OffsetDateTime, entry: &str) -> String {
    let format =
        time::macros::format_description!("[month repr:short] [day] [hour]:[minute]:[second]");
    format!(
        "{} mx.test.example {}[{}]: {}",
        at.format(&format).unwrap(),
        field(entry, "SYSLOG_IDENTIFIER").unwrap(),
        field(entry, "SYSLOG_PID").unwrap(),
        field(entry, "MESSAGE").unwrap()
    )
}

#[tokio::test]
async fn journal_entries_carry_postfix_identifiers_and_pflogsumm_counts_them() {
    use std::io::Read as _;
    let (mut sink, routes) = next_hops().await;
    let dir = tempfile::tempdir().unwrap();
    let (proc, mut stderr, received) = spawn_journal(dir.path(), &routes);
    let pid = proc.child.id().to_string();
    let records = traffic(proc.smtp, &mut sink, &dir.path().join("data")).await;
    assert!(proc.stop().await);
    // Every line went to the journal: none fell back to stderr.
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");

    let entries = received.lock().unwrap().clone();
    for (_, e) in &entries {
        assert_eq!(field(e, "SYSLOG_PID"), Some(pid.as_str()), "{e}");
        assert_eq!(field(e, "SYSLOG_FACILITY"), Some("2"), "{e}");
        assert!(matches!(field(e, "PRIORITY"), Some("3" | "4" | "6")), "{e}");
        assert!(
            e.ends_with('\n'),
            "journald drops a last field without its newline"
        );
    }
    let identifiers: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter_map(|(_, e)| field(e, "SYSLOG_IDENTIFIER"))
        .collect();
    for want in [
        "postern/master",
        "postern/smtpd",
        "postern/qmgr",
        "postern/smtp",
    ] {
        assert!(identifiers.contains(want), "{want} not in {identifiers:?}");
    }
    // `journalctl -t postern/smtp`: the delivery lines, one per recipient and attempt.
    let smtp: Vec<&str> = entries
        .iter()
        .filter(|(_, e)| field(e, "SYSLOG_IDENTIFIER") == Some("postern/smtp"))
        .filter_map(|(_, e)| field(e, "MESSAGE"))
        .collect();
    let sent = smtp.iter().filter(|m| m.contains(" status=sent ")).count();
    let sent_records = records.iter().filter(|r| r["status"] == "sent").count();
    assert_eq!(sent, sent_records, "{smtp:#?}");

    let Some(pflogsumm) = pflogsumm() else {
        return;
    };
    let lines: Vec<String> = entries
        .iter()
        .map(|(at, e)| journalctl_short(*at, e))
        .collect();
    assert_counts(pflogsumm, dir.path(), &lines, &records);
}
