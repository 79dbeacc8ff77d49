//! What real peers and the public SMTP-smuggling scanners see (issue 35): NUL in message
//! content refused in DATA and BDAT and never relayed; one log line per refused probe, in
//! Postfix's words, that the shipped fail2ban filter matches.

mod common;

use common::process::{Keys, spawn_postern_with};
use common::sink::{Sink, SinkOptions};
use common::*;

const SENDER: &str = "app@inside.example";

async fn relay_to(sink: &Sink) -> TestServer {
    let port = sink.addr.port();
    TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await
}

/// The scanners' probes: `<CR><LF><NUL>.<CR><LF>` (a receiver that drops NULs would end the
/// data there and read a second, smuggled message) and a NUL inside a line.
const NUL_BODIES: [&[u8]; 2] = [
    b"Subject: a\r\n\r\nhello\r\n\x00.\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@other.example>\r\nDATA\r\n\r\nsmuggled\r\n",
    b"Subject: a\r\n\r\nhel\x00lo\r\n",
];

const REFUSED: &str = "550 5.6.0 Error: message contains NUL characters (RFC 5322 section 2.3)";

#[tokio::test]
async fn nul_is_refused_in_data_and_bdat_and_never_relayed() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let server = relay_to(&sink).await;
    for body in NUL_BODIES {
        let mut c = server.connect().await;
        c.ehlo().await;
        let r = c.send(SENDER, &["r@other.example"], body).await;
        assert_eq!(r.first(), REFUSED, "DATA {body:?}");
        // The session goes on: a clean message in the same session is taken.
        let r = c
            .send(SENDER, &["r@other.example"], &message("after DATA", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");

        c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
        c.cmd("RCPT TO:<r@other.example>").await;
        c.write(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
            .await;
        c.write(body).await;
        assert_eq!(c.read().await.first(), REFUSED, "BDAT {body:?}");
        let r = c
            .send(SENDER, &["r@other.example"], &message("after BDAT", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    // Exactly the four clean messages arrive; nothing with a NUL, nothing smuggled.
    for n in 0..4 {
        let got = sink.next(20).await.unwrap_or_else(|| panic!("message {n}"));
        assert!(!got.data.contains(&0), "a NUL was relayed: {got:?}");
        assert_eq!(got.recipients, ["r@other.example"]);
        assert!(!String::from_utf8_lossy(&got.data).contains("smuggled"));
    }
    assert!(
        sink.next(2).await.is_none(),
        "more than the clean messages arrived"
    );
}

/// Each refused probe, in DATA and in BDAT, is one line naming the client and the sequence:
/// Postfix's smtpd.c `log_whatsup(state, "reject", "bare <LF> received")`, i.e.
/// `<queueid>: reject: END-OF-MESSAGE from unknown[ip]: bare <LF> received; from=<..> ...`.
#[tokio::test]
async fn every_refused_probe_is_one_line_fail2ban_matches() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys {
        server: "log_format = \"syslog\"",
        ..Keys::default()
    };
    let proc = spawn_postern_with(dir.path(), None, keys, "");
    let probes: [(&[u8], &str); 3] = [
        (
            b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<s@evil.example>\r\n",
            "bare <LF>",
        ),
        (
            b"Subject: a\r\n\r\nx\r.\rMAIL FROM:<s@evil.example>\r\n",
            "bare <CR>",
        ),
        (NUL_BODIES[0], "<NUL>"),
    ];
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.ehlo().await;
    for (body, _) in probes {
        assert_eq!(c.send(SENDER, &["r@other.example"], body).await.code, 550);
        c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
        c.cmd("RCPT TO:<r@other.example>").await;
        c.write(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
            .await;
        c.write(body).await;
        assert_eq!(c.read().await.code, 550, "BDAT {body:?}");
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let log = loop {
        let lines = proc.log.lock().unwrap().clone();
        if lines.iter().any(|l| l.contains("disconnect from")) {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for (_, sequence) in probes {
        let lines: Vec<_> = log
            .iter()
            .filter(|l| l.contains(&format!(": {sequence} received;")))
            .collect();
        assert_eq!(lines.len(), 2, "one line per refused message: {log:#?}");
        for line in lines {
            let (_, tail) = line.split_once("postern/smtpd").expect(line);
            let (id, rest) = tail.split_once(": reject: ").expect(line);
            assert!(!id.ends_with("NOQUEUE"), "the queue ID is named: {line}");
            assert_eq!(
                rest,
                format!(
                    "END-OF-MESSAGE from unknown[127.0.0.1]: {sequence} received; from=<{SENDER}> to=<r@other.example> proto=ESMTP helo=<client.test.example>"
                )
            );
        }
    }
    assert!(proc.stop().await);
    if !have("fail2ban-regex") {
        return;
    }
    let file = dir.path().join("maillog");
    std::fs::write(&file, log.join("\n")).unwrap();
    let filters = dir.path().join("filter.d");
    std::fs::create_dir(&filters).unwrap();
    std::fs::copy(
        "/etc/fail2ban/filter.d/common.conf",
        filters.join("common.conf"),
    )
    .unwrap();
    let filter = filters.join("postern-smtpd.conf");
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/fail2ban/postern-smtpd.conf"
    );
    std::fs::copy(shipped, &filter).unwrap();
    let out = std::process::Command::new("fail2ban-regex")
        .args(["--print-all-matched", "--raw"])
        .arg(&file)
        .arg(&filter)
        .output()
        .expect("fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Failregex: 6 total"),
        "six refused probes, six matches: {text}"
    );
}

/// Under an `encrypt` row, a host without STARTTLS (or refusing it) gets a QUIT before the
/// close, as Postfix's client says goodbye (the remote logs `quit=1`, not `lost connection
/// after EHLO`).
#[tokio::test]
async fn quit_follows_a_policy_refusal() {
    for starttls in [false, true] {
        let sink = Sink::start(SinkOptions {
            starttls,
            ..SinkOptions::default()
        })
        .await;
        if starttls {
            sink.act(
                common::sink::Stage::StartTls,
                common::sink::Act::Reply("454 4.7.0 TLS not available".into()),
            );
        }
        let port = sink.addr.port();
        let mut server = TestServer::start_with(&format!(
            "[outbound]\nconnection_cache_secs = 0\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
        ))
        .await;
        server
            .set(serde_json::json!({"trusted_networks": ["127.0.0.1/32"], "policy": [{"pattern": "other.example", "level": "encrypt", "on_failure": "defer"}]}))
            .await;
        server
            .submit(SENDER, &["partner@other.example"], &message("q", ""))
            .await;
        let event = server.next_event_for("partner@other.example", 20).await;
        assert_eq!(event.status, "deferred", "{event:?}");
        let quits = &sink.quits;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while quits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no QUIT after the refusal (STARTTLS offered: {starttls})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
