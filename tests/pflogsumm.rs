//! pflogsumm, the report admins run on Postfix's maillog, run on postern's log (written with
//! `server.log_format = "syslog"`, read with `pflogsumm --syslog-name=postern`): it counts the
//! same delivered, deferred and bounced messages as the delivery records say. pflogsumm is
//! installed by .ci/run; without it the test says so and passes only outside CI.

mod common;

use common::process::{Keys, spawn_postern_with};
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

#[tokio::test]
async fn pflogsumm_counts_what_the_delivery_records_say() {
    let Some(pflogsumm) = pflogsumm() else {
        return;
    };
    let mut sink = Sink::start(SinkOptions {
        reject: vec!["nobody@good.example".into()],
        ..SinkOptions::default()
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            server: "log_format = \"syslog\"",
            ..Keys::default()
        },
        &format!(
            "[outbound.routes]\n\"good.example\" = \"[127.0.0.1]:{}\"\n\"dead.example\" = \"[127.0.0.1]:{dead}\"\n",
            sink.addr.port()
        ),
    );
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
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
    let records_path = dir.path().join("data/log/delivery.jsonl");
    let records = loop {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(&records_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= 5 {
            break records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let log = proc.log.clone();
    assert!(proc.stop().await);
    let count = |status: &str| records.iter().filter(|r| r["status"] == status).count();
    assert_eq!(
        (count("sent"), count("deferred"), count("bounced")),
        (3, 1, 1),
        "{records:#?}"
    );

    let maillog = dir.path().join("maillog");
    std::fs::write(&maillog, log.lock().unwrap().join("\n") + "\n").unwrap();
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
