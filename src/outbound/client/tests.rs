//! The SMTP client dialogue against a scripted server over an in-memory stream
//! (`tokio::io::duplex`): the real reply reader, EHLO, transaction and AUTH code, no socket.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::super::classify::{Class, Outcome};
use super::auth::authenticate;
use super::conn::Conn;
use super::ehlo::Extensions;
use super::session::greet;
use super::transaction::transaction;
use super::{Failure, Job};
use crate::policy::Level;
use crate::proto::Enhanced;

const PEER: &str = "mx.example[192.0.2.1]";
const MESSAGE: &[u8] = b"Subject: t\r\n\r\nbody\r\n";

/// What the scripted server does, in order.
enum Step {
    /// Read this many command lines before doing anything else.
    Read(usize),
    /// Read message lines up to and including the lone `.`.
    Body,
    Write(&'static str),
    /// Hang up, whatever the client expects next.
    Close,
}

/// The server side: runs `steps`, then reads whatever else the client sends until it hangs
/// up. Returns every line received, without CRLF.
fn server(steps: Vec<Step>) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        let mut seen = Vec::new();
        for step in steps {
            match step {
                Step::Read(n) => {
                    for _ in 0..n {
                        seen.push(line(&mut r).await.expect("a command line"));
                    }
                }
                Step::Body => loop {
                    let l = line(&mut r).await.expect("a body line");
                    seen.push(l.clone());
                    if l == "." {
                        break;
                    }
                },
                Step::Write(reply) => w.write_all(reply.as_bytes()).await.expect("write"),
                Step::Close => return seen,
            }
        }
        while let Some(l) = line(&mut r).await {
            seen.push(l);
        }
        seen
    });
    (client, task)
}

async fn line(r: &mut BufReader<tokio::io::ReadHalf<DuplexStream>>) -> Option<String> {
    let mut l = String::new();
    match r.read_line(&mut l).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(l.trim_end_matches(['\r', '\n']).to_string()),
    }
}

/// A dialogue that stalls (each side waiting for the other) fails instead of hanging.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the dialogue stalled")
}

fn conn(io: DuplexStream) -> Conn {
    Conn::new(io, Duration::from_secs(5), PEER.to_string())
}

fn job<'a>(recipients: &'a [String]) -> Job<'a> {
    Job {
        queue_id: "4ABC",
        host: "mx.example",
        addr: "192.0.2.1:25".parse().expect("an address"),
        helo: "relay.example",
        level: Level::None,
        sender: "s@ours.example",
        recipients,
        message: MESSAGE,
        smtputf8: false,
        eight_bit: false,
        requiretls: false,
        min_bits: 0,
        bounce_on_failure: false,
        check: None,
        chain_check: None,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        auth: None,
        client_cert: None,
        classical_kx: false,
    }
}

fn rcpts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("r{i}@there.example")).collect()
}

fn esmtp(pipelining: bool) -> Extensions {
    Extensions {
        esmtp: true,
        pipelining,
        ..Extensions::default()
    }
}

fn classes(results: &[Outcome]) -> Vec<(Class, Enhanced)> {
    results.iter().map(|o| (o.class, o.dsn)).collect()
}

#[tokio::test]
async fn greeting_then_ehlo_extensions_parsed() {
    let (io, peer) = server(vec![
        Step::Write("220 mx.example ESMTP\r\n"),
        Step::Read(1),
        Step::Write(
            "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240\r\n250-8BITMIME\r\n\
             250-STARTTLS\r\n250-AUTH=LOGIN\r\n250-AUTH plain cram-md5\r\n250-REQUIRETLS\r\n\
             250 SMTPUTF8\r\n",
        ),
    ]);
    let recipients = rcpts(1);
    let Ok((conn, ext)) = within(greet(conn(io), &job(&recipients))).await else {
        panic!("greeting and EHLO failed");
    };
    drop(conn);
    assert_eq!(within(peer).await.unwrap(), ["EHLO relay.example"]);
    assert!(ext.esmtp && ext.pipelining && ext.eight_bit && ext.starttls);
    assert!(ext.requiretls && ext.smtputf8);
    assert_eq!(ext.size, Some(10240));
    assert_eq!(ext.auth, ["LOGIN", "PLAIN", "CRAM-MD5"]);
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let (io, peer) = server(vec![
        Step::Write("220 old.example\r\n"),
        Step::Read(1),
        Step::Write("502 5.5.2 what?\r\n"),
        Step::Read(1),
        Step::Write("250 old.example\r\n"),
    ]);
    let recipients = rcpts(1);
    let Ok((conn, ext)) = within(greet(conn(io), &job(&recipients))).await else {
        panic!("HELO was not tried");
    };
    drop(conn);
    let seen = within(peer).await.unwrap();
    assert_eq!(seen, ["EHLO relay.example", "HELO relay.example"]);
    assert!(!ext.esmtp && !ext.pipelining && !ext.starttls);
}

#[tokio::test]
async fn refused_greeting_sends_to_the_next_host() {
    let (io, peer) = server(vec![Step::Write("554 5.3.2 mx.example busy\r\n")]);
    let recipients = rcpts(1);
    let Err(Failure::All {
        outcome,
        try_next_host,
        ..
    }) = within(greet(conn(io), &job(&recipients))).await
    else {
        panic!("a 554 greeting was taken");
    };
    // No EHLO after a refused greeting: QUIT, as RFC 5321 section 3.1 asks (issue 35).
    assert_eq!(within(peer).await.unwrap(), ["QUIT"]);
    assert!(try_next_host);
    // A 5xx greeting is retried (Postfix's smtp_skip_5xx_greeting).
    assert_eq!(
        (outcome.class, outcome.dsn),
        (Class::Temporary, Enhanced(4, 3, 2))
    );
    assert_eq!(
        outcome.reason,
        format!("host {PEER} refused to talk to me: 554 5.3.2 mx.example busy")
    );
}

#[tokio::test]
async fn multi_line_reply_read_whole() {
    let (io, peer) = server(vec![
        Step::Read(1),
        Step::Write("250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 third\r\n"),
        Step::Read(1),
        Step::Write("250 2.0.0 next\r\n"),
    ]);
    let mut c = conn(io);
    let reply = within(c.command("NOOP", "NOOP")).await.unwrap();
    assert_eq!(reply.code, 250);
    assert_eq!(reply.enhanced, Some(Enhanced(2, 0, 0)));
    assert_eq!(reply.lines, ["first", "second", "third"]);
    // The next reply starts after the whole first one: nothing was left behind.
    let next = within(c.command("NOOP", "NOOP")).await.unwrap();
    assert_eq!(next.lines, ["next"]);
    assert_eq!(c.replies, 2);
    drop(c);
    assert_eq!(within(peer).await.unwrap(), ["NOOP", "NOOP"]);
}

#[tokio::test]
async fn peer_dropping_mid_reply_is_a_lost_connection() {
    // Two lines of a multi-line reply, then the peer hangs up before the last one.
    let (io, _peer) = server(vec![
        Step::Read(1),
        Step::Write("250-mx.example\r\n250-PIPELINING\r\n"),
        Step::Close,
    ]);
    let mut c = conn(io);
    let Err(o) = within(c.command("EHLO relay.example", "EHLO")).await else {
        panic!("half a reply was taken");
    };
    assert_eq!(o.class, Class::Temporary);
    assert_eq!(o.reason, format!("lost connection with {PEER} while EHLO"));
    assert_eq!(c.replies, 0);
}

#[tokio::test]
async fn peer_dropping_in_the_middle_of_a_line_is_a_lost_connection() {
    // Half a line, no line end, then the hang-up: not a line too long.
    let (io, _peer) = server(vec![
        Step::Read(1),
        Step::Write("250-mx.example\r\n250-PIPE"),
        Step::Close,
    ]);
    let mut c = conn(io);
    let Err(o) = within(c.command("EHLO relay.example", "EHLO")).await else {
        panic!("half a line was taken");
    };
    assert_eq!(o.class, Class::Temporary);
    assert_eq!(o.reason, format!("lost connection with {PEER} while EHLO"));
}

#[tokio::test]
async fn a_reply_line_over_the_limit_is_refused_as_such() {
    // 8,192 bytes and no line end yet, the peer still there: a line too long.
    let long: &'static str = Box::leak(format!("250-{}", "x".repeat(9000)).into_boxed_str());
    let (io, _peer) = server(vec![Step::Read(1), Step::Write(long)]);
    let mut c = conn(io);
    let Err(o) = within(c.command("NOOP", "NOOP")).await else {
        panic!("an endless line was taken");
    };
    assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 5, 0)));
    assert!(
        o.reason.contains("longer than 8192 bytes while NOOP"),
        "{}",
        o.reason
    );
}

#[tokio::test]
async fn malformed_reply_is_refused() {
    let (io, _peer) = server(vec![Step::Read(1), Step::Write("hello there\r\n")]);
    let mut c = conn(io);
    let Err(o) = within(c.command("NOOP", "NOOP")).await else {
        panic!("a malformed reply was taken");
    };
    assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 5, 0)));
    assert!(
        o.reason.contains("sent a malformed reply while NOOP"),
        "{}",
        o.reason
    );
}

#[tokio::test]
async fn one_command_at_a_time_without_pipelining() {
    let (io, peer) = server(vec![
        Step::Read(1),
        Step::Write("250 2.1.0 Ok\r\n"),
        Step::Read(1),
        Step::Write("250 2.1.5 Ok\r\n"),
        Step::Read(1),
        Step::Write("550 5.1.1 <r2@there.example>: Recipient address rejected\r\n"),
        Step::Read(1),
        Step::Write("354 End data with <CR><LF>.<CR><LF>\r\n"),
        Step::Body,
        Step::Write("250 2.0.0 Ok: queued as 9XYZ\r\n"),
    ]);
    let recipients = rcpts(2);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &esmtp(false), PEER))
        .await
        .unwrap();
    drop(c);
    assert_eq!(
        classes(&results),
        [
            (Class::Delivered, Enhanced(2, 0, 0)),
            (Class::Permanent, Enhanced(5, 1, 1))
        ]
    );
    assert!(results[1].reason.ends_with("(in reply to RCPT TO command)"));
    assert_eq!(
        within(peer).await.unwrap(),
        [
            "MAIL FROM:<s@ours.example>",
            "RCPT TO:<r1@there.example>",
            "RCPT TO:<r2@there.example>",
            "DATA",
            "Subject: t",
            "",
            "body",
            ".",
        ]
    );
}

#[tokio::test]
async fn pipelining_sends_the_envelope_in_one_go() {
    // The server reads MAIL, both RCPTs and DATA before it answers anything: a client that
    // waited for the MAIL reply would stall here.
    let (io, peer) = server(vec![
        Step::Read(4),
        Step::Write("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"),
        Step::Body,
        Step::Write("250 2.0.0 Ok: queued\r\n"),
    ]);
    let recipients = rcpts(2);
    let mut ext = esmtp(true);
    ext.size = Some(1_000_000);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &ext, PEER))
        .await
        .unwrap();
    drop(c);
    assert_eq!(
        classes(&results),
        [(Class::Delivered, Enhanced(2, 0, 0)); 2]
    );
    let seen = within(peer).await.unwrap();
    let size = format!("MAIL FROM:<s@ours.example> SIZE={}", MESSAGE.len());
    assert_eq!(
        seen[..4],
        [
            size.as_str(),
            "RCPT TO:<r1@there.example>",
            "RCPT TO:<r2@there.example>",
            "DATA"
        ]
    );
}

#[tokio::test]
async fn mail_refused_with_4xx_defers_everyone_and_sends_no_rcpt() {
    let (io, peer) = server(vec![
        Step::Read(1),
        Step::Write("451 4.3.0 Try again later\r\n"),
    ]);
    let recipients = rcpts(2);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &esmtp(false), PEER))
        .await
        .unwrap();
    drop(c);
    assert_eq!(
        classes(&results),
        [(Class::Temporary, Enhanced(4, 3, 0)); 2]
    );
    assert!(
        results[0]
            .reason
            .ends_with("(in reply to MAIL FROM command)")
    );
    assert_eq!(within(peer).await.unwrap(), ["MAIL FROM:<s@ours.example>"]);
}

#[tokio::test]
async fn data_refused_with_5xx_bounces_the_accepted() {
    let (io, peer) = server(vec![
        Step::Read(1),
        Step::Write("250 2.1.0 Ok\r\n"),
        Step::Read(1),
        Step::Write("250 2.1.5 Ok\r\n"),
        Step::Read(1),
        Step::Write("554 5.3.4 Message too big for system\r\n"),
    ]);
    let recipients = rcpts(1);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &esmtp(false), PEER))
        .await
        .unwrap();
    drop(c);
    assert_eq!(classes(&results), [(Class::Permanent, Enhanced(5, 3, 4))]);
    assert!(results[0].reason.ends_with("(in reply to DATA command)"));
    // No body after a refused DATA.
    assert_eq!(within(peer).await.unwrap().last().unwrap(), "DATA");
}

#[tokio::test]
async fn pipelined_data_without_recipients_is_ended_empty_then_reset() {
    let (io, peer) = server(vec![
        Step::Read(3),
        Step::Write("250 2.1.0 Ok\r\n550 5.1.1 unknown\r\n354 go ahead\r\n"),
        Step::Read(1),
        Step::Write("554 5.5.1 Error: no valid recipients\r\n"),
        Step::Read(1),
        Step::Write("250 2.0.0 Ok\r\n"),
    ]);
    let recipients = rcpts(1);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &esmtp(true), PEER))
        .await
        .unwrap();
    drop(c);
    assert_eq!(classes(&results), [(Class::Permanent, Enhanced(5, 1, 1))]);
    let seen = within(peer).await.unwrap();
    assert_eq!(seen[3..], [".", "RSET"]);
}

#[tokio::test]
async fn end_of_data_4xx_defers() {
    let (io, _peer) = server(vec![
        Step::Read(1),
        Step::Write("250 2.1.0 Ok\r\n"),
        Step::Read(1),
        Step::Write("250 2.1.5 Ok\r\n"),
        Step::Read(1),
        Step::Write("354 go ahead\r\n"),
        Step::Body,
        Step::Write("451 4.7.1 Try again later\r\n"),
    ]);
    let recipients = rcpts(1);
    let mut c = conn(io);
    let results = within(transaction(&mut c, &job(&recipients), &esmtp(false), PEER))
        .await
        .unwrap();
    assert_eq!(classes(&results), [(Class::Temporary, Enhanced(4, 7, 1))]);
    assert!(
        results[0]
            .reason
            .ends_with("(in reply to end of DATA command)")
    );
}

#[tokio::test]
async fn peer_dropping_after_the_body_leaves_the_outcome_open() {
    let (io, _peer) = server(vec![
        Step::Read(1),
        Step::Write("250 2.1.0 Ok\r\n"),
        Step::Read(1),
        Step::Write("250 2.1.5 Ok\r\n"),
        Step::Read(1),
        Step::Write("354 go ahead\r\n"),
        Step::Body,
        Step::Close,
    ]);
    let recipients = rcpts(1);
    let mut c = conn(io);
    let Err(o) = within(transaction(&mut c, &job(&recipients), &esmtp(false), PEER)).await else {
        panic!("a message without a final reply was taken");
    };
    assert_eq!(o.class, Class::Temporary);
    assert_eq!(
        o.reason,
        format!("lost connection with {PEER} while end of DATA")
    );
}

#[tokio::test]
async fn a_250_to_data_ends_the_session_as_a_protocol_error() {
    let (io, _peer) = server(vec![
        Step::Read(3),
        Step::Write("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"),
    ]);
    let recipients = rcpts(1);
    let mut c = conn(io);
    let Err(o) = within(transaction(&mut c, &job(&recipients), &esmtp(true), PEER)).await else {
        panic!("a 250 to DATA was taken for delivery");
    };
    assert!(o.protocol_error);
    assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 5, 0)));
}

#[tokio::test]
async fn auth_plain_inside_tls() {
    let (io, peer) = server(vec![
        Step::Read(1),
        Step::Write("235 2.7.0 Authentication successful\r\n"),
    ]);
    let ext = Extensions {
        auth: vec!["LOGIN".into(), "PLAIN".into()],
        ..esmtp(false)
    };
    let mut c = conn(io);
    within(authenticate(&mut c, &ext, ("u", "p"), true, PEER))
        .await
        .unwrap();
    drop(c);
    // base64("\0u\0p"): PLAIN is preferred when both are offered (RFC 4616).
    assert_eq!(within(peer).await.unwrap(), ["AUTH PLAIN AHUAcA=="]);
}

#[tokio::test]
async fn auth_never_in_plaintext() {
    let (io, peer) = server(vec![]);
    let ext = Extensions {
        auth: vec!["PLAIN".into()],
        ..esmtp(false)
    };
    let mut c = conn(io);
    let Err(o) = within(authenticate(&mut c, &ext, ("u", "p"), false, PEER)).await else {
        panic!("credentials went in plaintext");
    };
    drop(c);
    assert!(within(peer).await.unwrap().is_empty());
    assert_eq!((o.class, o.dsn), (Class::Temporary, Enhanced(4, 7, 0)));
}
