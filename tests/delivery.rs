//! Outbound delivery end to end over loopback: client -> postern -> test sink, with STARTTLS,
//! retries, per-recipient results, expiry, and the delivery records (log line and JSON).

mod common;

use common::sink::{Sink, SinkOptions};
use common::*;
use serde_json::{Value, json};

/// A postern whose route for `other.example` is the sink, with `extra` config.
async fn relay_to(sink: &Sink, extra: &str) -> TestServer {
    let port = sink.addr.port();
    let config = format!(
        "[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n{extra}\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n\"inside.example\" = \"[127.0.0.1]:{port}\"\n"
    );
    TestServer::start_with(&config).await
}

fn records(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("log/delivery.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn delivered_over_starttls_byte_identical_with_tls_facts() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let server = relay_to(&sink, "").await;
    let original = message("outbound", "X-Extra: kept\r\n");
    let id = server
        .submit("app@inside.example", &["partner@other.example"], &original)
        .await;

    let got = sink.next(20).await.expect("the sink received nothing");
    assert!(
        got.tls,
        "delivered without TLS under may with STARTTLS offered"
    );
    assert_eq!(got.sender, "app@inside.example");
    assert_eq!(got.recipients, vec!["partner@other.example"]);
    // Byte-identical apart from the Received header postern added in front.
    assert!(got.data.starts_with(b"Received: from client.test.example"));
    assert!(got.data.ends_with(&original));
    let received_len = got.data.len() - original.len();
    assert!(
        !got.data[..received_len]
            .windows(4)
            .any(|w| w == b"\r\n\r\n")
    );

    let (spool, dir) = server.stop().await;
    assert!(spool.is_empty(), "delivered message still queued");
    let recs = records(dir.path());
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["queue_id"], id);
    assert_eq!(r["status"], "sent");
    assert_eq!(r["dsn"], "2.0.0");
    assert_eq!(
        r["relay"],
        format!("127.0.0.1[127.0.0.1]:{}", sink.addr.port())
    );
    assert_eq!(r["starttls_offered"], true);
    assert_eq!(r["tls"]["protocol"], "TLSv1.3");
    assert!(r["tls"]["cipher"].as_str().unwrap().starts_with("TLS_"));
    assert!(r["tls"]["bits"].as_u64().unwrap() >= 128);
    assert_eq!(r["policy_level"], "may");
    assert_eq!(r["policy_source"], "global");
    assert_eq!(r["reply"], "250 2.0.0 Ok: queued as SINK");
}

#[tokio::test]
async fn swaks_through_postern_to_the_sink() {
    if !have("swaks") {
        return;
    }
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let server = relay_to(&sink, "").await;
    let out = tokio::process::Command::new("swaks")
        .args(["--server", &server.smtp.to_string(), "--tls"])
        .args([
            "--from",
            "admin@inside.example",
            "--to",
            "partner@other.example",
        ])
        .args(["--header", "Subject: swaks to the sink"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = sink.next(20).await.expect("the sink received nothing");
    let text = String::from_utf8_lossy(&got.data);
    assert!(text.contains("Subject: swaks to the sink"), "{text}");
    assert!(text.contains("X-Mailer: swaks"), "{text}");
    assert!(
        text.contains("(using TLSv1.3 with cipher"),
        "inbound TLS not recorded: {text}"
    );
    assert!(got.tls);
}

#[tokio::test]
async fn temporary_failure_then_success_after_backoff() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        defer_first: 1,
        ..SinkOptions::default()
    })
    .await;
    let server = relay_to(&sink, "").await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("retry", ""),
        )
        .await;
    // first_retry_secs = 1: the second attempt comes a second later.
    let got = sink.next(20).await.expect("not delivered on retry");
    assert!(got.data.ends_with(&message("retry", "")));
    let (spool, dir) = server.stop().await;
    assert!(spool.is_empty());
    let statuses: Vec<String> = records(dir.path())
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["deferred", "sent"]);
    let first = &records(dir.path())[0];
    assert_eq!(first["dsn"], "4.3.0");
    assert!(
        first["reply"]
            .as_str()
            .unwrap()
            .contains("451 4.3.0 try again later (in reply to MAIL FROM command)"),
        "{first}"
    );
}

#[tokio::test]
async fn one_refused_recipient_of_three_bounces_alone() {
    let mut sink = Sink::start(SinkOptions {
        reject: vec!["nobody@other.example".into()],
        ..SinkOptions::default()
    })
    .await;
    let server = relay_to(&sink, "").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let rcpts = ["a@other.example", "nobody@other.example", "b@other.example"];
    queue_id(
        &c.send("app@inside.example", &rcpts, &message("three", ""))
            .await,
    );
    let got = sink.next(20).await.unwrap();
    assert_eq!(got.recipients, vec!["a@other.example", "b@other.example"]);
    // The DSN reaches the sender's domain through the same engine, with the null sender.
    let dsn = sink.next(20).await.expect("no DSN delivered");
    assert_eq!(dsn.sender, "");
    assert_eq!(dsn.recipients, vec!["app@inside.example"]);
    check_dsn(&dsn.data);
    let (spool, dir) = server.stop().await;
    assert!(
        spool.is_empty(),
        "bounced + delivered recipients are all final"
    );
    let recs = records(dir.path());
    let by_rcpt = |r: &str| recs.iter().find(|x| x["recipient"] == r).unwrap().clone();
    assert_eq!(by_rcpt("a@other.example")["status"], "sent");
    assert_eq!(by_rcpt("b@other.example")["status"], "sent");
    let bounced = by_rcpt("nobody@other.example");
    assert_eq!(bounced["status"], "bounced");
    assert_eq!(bounced["dsn"], "5.1.1");
    assert!(sink.try_next().is_none(), "delivered twice");
}

#[tokio::test]
async fn encrypt_never_delivers_in_plaintext() {
    let mut sink = Sink::start(SinkOptions::default()).await; // no STARTTLS
    let mut server = relay_to(&sink, "").await;
    server
        .set(json!({"outbound": {"tls_mode": "encrypt"}, "trusted_networks": ["127.0.0.0/8"]}))
        .await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("secret", ""),
        )
        .await;
    assert_eq!(server.next_event(20).await.status, "deferred");
    let (spool, dir) = server.stop().await;
    assert!(
        sink.try_next().is_none(),
        "delivered in plaintext under encrypt"
    );
    assert_eq!(spool.len(), 1, "a deferred message must stay queued");
    let r = &records(dir.path())[0];
    assert_eq!(r["status"], "deferred");
    assert_eq!(r["dsn"], "4.7.4");
    assert_eq!(r["policy_level"], "encrypt");
    assert!(
        r["reply"]
            .as_str()
            .unwrap()
            .contains("(TLS is required, but was not offered by host 127.0.0.1[127.0.0.1])"),
        "{r}"
    );
}

#[tokio::test]
async fn may_goes_plaintext_when_not_offered_and_none_never_uses_tls() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let server = relay_to(&sink, "").await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("plain", ""),
        )
        .await;
    let got = sink.next(20).await.unwrap();
    assert!(!got.tls);
    drop(server);

    let mut tls_sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let server = relay_to(&tls_sink, "").await;
    server
        .set(json!({"outbound": {"tls_mode": "disabled"}, "trusted_networks": ["127.0.0.0/8"]}))
        .await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("none", ""),
        )
        .await;
    let got = tls_sink.next(20).await.unwrap();
    assert!(!got.tls, "level none used TLS");
    let (_, dir) = server.stop().await;
    let r = &records(dir.path())[0];
    assert_eq!(r["starttls_offered"], true);
    assert_eq!(r["policy_level"], "none");
    assert!(r["tls"].is_null());
}

#[tokio::test]
async fn expired_message_bounces_with_last_reason() {
    // A closed port: every attempt fails to connect; a lifetime of 0 makes the first final.
    // The sender's domain goes to the sink, which receives the non-delivery notice.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut sink = Sink::start(SinkOptions::default()).await;
    let mut server = TestServer::start_with(&format!(
        "[outbound]\nqueue_lifetime_secs = 0\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n\"inside.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("expire", ""),
        )
        .await;
    let dsn = sink.next(20).await.expect("no non-delivery notice");
    assert_eq!(dsn.sender, "");
    assert_eq!(dsn.recipients, vec!["app@inside.example"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("Status: 5.4.7\r\n"), "{text}");
    assert!(
        text.contains("Diagnostic-Code: X-Postern; 5.4.7 message expired after"),
        "{text}"
    );
    // Two records, in either order: the bounce, and the notice's delivery.
    let mut statuses = [server.next_event(20).await, server.next_event(20).await];
    statuses.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    assert_eq!(statuses[0].recipient, "app@inside.example");
    assert_eq!(statuses[0].status, "sent");
    let (_, dir) = server.stop().await;
    let r = records(dir.path())
        .into_iter()
        .find(|r| r["recipient"] == "partner@other.example")
        .expect("no record of the bounce");
    assert_eq!(r["status"], "bounced");
    assert_eq!(r["dsn"], "5.4.7");
    assert!(
        r["reply"]
            .as_str()
            .unwrap()
            .contains("message expired after"),
        "{r}"
    );
    assert!(
        r["reply"].as_str().unwrap().contains("Connection refused"),
        "{r}"
    );
}

/// The DSN parses as RFC 3464 inside RFC 6522's multipart/report.
fn check_dsn(data: &[u8]) {
    use mail_parser::{MessageParser, MimeHeaders};
    let msg = MessageParser::default().parse(data).expect("DSN parses");
    let ct = msg.content_type().expect("DSN has a Content-Type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
    let parts: Vec<(String, String)> = msg
        .parts
        .iter()
        .filter_map(|p| {
            let ct = p.content_type()?;
            let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
            Some((kind, String::from_utf8_lossy(p.contents()).into_owned()))
        })
        .collect();
    let part = |kind: &str| {
        parts
            .iter()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind} part in {parts:?}"))
            .1
            .clone()
    };
    let notice = part("text/plain");
    assert!(
        // Postfix's bounce words: the host, its reply, and the command it answered.
        notice.contains("<nobody@other.example>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@other.example>: Recipient address rejected: User unknown (in reply to RCPT TO command)\r\n"),
        "{notice}"
    );
    let status = part("message/delivery-status");
    for field in [
        "Reporting-MTA: dns; mx.test.example",
        "Final-Recipient: rfc822; nobody@other.example",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; 127.0.0.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@other.example>: Recipient address rejected: User unknown",
    ] {
        assert!(status.contains(field), "missing {field:?} in\n{status}");
    }
    assert!(
        !status.contains("a@other.example"),
        "delivered recipients must not be reported"
    );
    let headers = part("text/rfc822-headers");
    assert!(headers.contains("Subject: three"), "{headers}");
    assert!(!headers.contains("Body of three"), "{headers}");
}

#[tokio::test]
async fn no_bounce_for_a_bounce() {
    let mut sink = Sink::start(SinkOptions {
        reject: vec!["nobody@other.example".into()],
        ..SinkOptions::default()
    })
    .await;
    let mut server = relay_to(&sink, "").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<>").await;
    assert_eq!(r.code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@other.example>").await.code, 250);
    assert_eq!(c.data(&message("a bounce", "")).await.code, 250);
    assert_eq!(server.next_event(20).await.status, "bounced");
    let (spool, _) = server.stop().await;
    assert!(spool.is_empty(), "the bounced bounce must not stay queued");
    assert!(sink.try_next().is_none(), "a DSN was sent for a bounce");
}

/// One message through the session `c`: what the sink received (checked to end with the
/// message as sent) and its delivery record.
async fn relay_one(
    c: &mut SmtpClient,
    sink: &mut Sink,
    server: &mut TestServer,
    subject: &str,
) -> (common::sink::Received, postern::events::Delivery) {
    let sent = message(subject, "");
    c.send("app@inside.example", &["partner@other.example"], &sent)
        .await;
    let got = sink.next(20).await.expect("not delivered");
    assert!(got.data.ends_with(&sent), "{subject}: altered");
    (got, server.next_event(20).await)
}

#[tokio::test]
async fn messages_to_one_host_share_a_tls_session() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = relay_to(&sink, "connection_cache_secs = 30").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    for n in 0..5 {
        let (got, event) = relay_one(&mut c, &mut sink, &mut server, &format!("reuse {n}")).await;
        assert!(got.tls, "message {n} went without TLS");
        assert_eq!(event.status, "sent");
    }
    let sessions = sink.sessions.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sessions, 1, "5 messages took {sessions} connections");
}

/// No RSET before a reused session's MAIL (RFC 5321 section 4.1.1.5: none is needed after
/// a completed transaction). A cached session the server dropped as the next MAIL went out
/// (no reply at all) cannot have taken the message: it goes over a new session at once,
/// not into the queue for a retry.
#[tokio::test]
async fn a_reused_session_dropped_at_mail_is_retried_on_a_new_one() {
    let mut sink = Sink::start(SinkOptions {
        drop_second_mail: true,
        ..SinkOptions::default()
    })
    .await;
    let mut server = relay_to(&sink, "connection_cache_secs = 30").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    for n in 0..2 {
        let (_, event) = relay_one(&mut c, &mut sink, &mut server, &format!("dropped {n}")).await;
        assert_eq!(event.status, "sent", "message {n}: {event:?}");
    }
    let sessions = sink.sessions.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sessions, 2, "the second message needed a second session");
}

#[tokio::test]
async fn reuse_off_opens_one_connection_per_message() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let mut server = relay_to(&sink, "connection_cache_secs = 0").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    for n in 0..3 {
        c.send(
            "app@inside.example",
            &["partner@other.example"],
            &message(&format!("one {n}"), ""),
        )
        .await;
        sink.next(20).await.expect("not delivered");
        server.next_event(20).await;
    }
    assert_eq!(sink.sessions.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn delivers_over_ipv6() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        assert!(std::env::var_os("CI").is_none(), "no IPv6 loopback in CI");
        return;
    };
    drop(probe);
    let mut sink = Sink::start_on(
        "[::1]:0".parse().unwrap(),
        SinkOptions {
            starttls: true,
            ..SinkOptions::default()
        },
    )
    .await;
    let mut server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"v6.example\" = \"[::1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    server
        .submit(
            "app@inside.example",
            &["partner@v6.example"],
            &message("over v6", ""),
        )
        .await;
    let got = sink.next(20).await.expect("nothing over IPv6");
    assert!(got.tls);
    let event = server.next_event(20).await;
    assert_eq!(event.status.as_ref(), "sent");
    assert_eq!(event.relay, format!("::1[::1]:{}", sink.addr.port()));
}

#[tokio::test]
async fn endless_reply_line_is_refused_not_buffered() {
    use tokio::io::AsyncWriteExt;
    // A next hop that starts its greeting and never ends the line.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 4096];
                let _ = s.write_all(b"220 ").await;
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let mut server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message("endless", ""),
        )
        .await;
    let event = server.next_event(20).await;
    assert_eq!(event.status.as_ref(), "deferred");
    assert!(
        event.reply.contains("reply line longer than 8192 bytes"),
        "{}",
        event.reply
    );
}

/// A transaction refused inside an encrypted session is recorded with that session's TLS:
/// the Logs page and the dashboard say how it crossed, not "plaintext".
#[tokio::test]
async fn a_deferral_inside_tls_keeps_the_sessions_tls_on_its_record() {
    use common::sink::{Act, Stage};
    let sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    // 421: the server closes the session, so the next host is tried (none here).
    sink.act(
        Stage::Mail,
        Act::Reply("421 4.3.2 Service busy, closing".into()),
    );
    let mut server = TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 3600\n[outbound.routes]\n\"tls.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    server
        .submit(
            "a@inside.example",
            &["b@tls.example"],
            b"Subject: s\r\n\r\nx\r\n",
        )
        .await;
    let event = server.next_event_for("b@tls.example", 20).await;
    assert_eq!(event.status, "deferred", "{event:?}");
    assert!(event.starttls_offered);
    assert_eq!(
        event.tls.as_ref().map(|t| t.protocol.as_str()),
        Some("TLSv1.3"),
        "{event:?}"
    );
}
