//! Session behaviour over loopback: limits with their replies, STARTTLS injection, bare LF,
//! BDAT/CHUNKING, pipelining, idle timeout and graceful shutdown.

mod common;

use common::*;

const SENDER: &str = "s@client.test.example";

#[tokio::test]
async fn input_pipelined_after_starttls_is_discarded() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    // The injection: a command sent in the same packet as STARTTLS, in plaintext.
    c.write(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await;
    assert_eq!(c.read().await.first(), "220 2.0.0 Ready to start TLS");
    c.handshake().await;
    // Had the injected MAIL been run inside TLS, its 250 would arrive before the EHLO reply,
    // and a second MAIL would get "nested MAIL command".
    let ehlo = c.ehlo().await;
    assert_eq!(ehlo.lines[0], "mx.test.example");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{SENDER}>")).await.code, 250);
}

#[tokio::test]
async fn size_limits() {
    let server = TestServer::start_with("[smtp]\nmax_message_size = 2048\n").await;
    let mut c = server.connect().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 2048"), "{ehlo:?}");
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{SENDER}> SIZE=4096"))
            .await
            .first(),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    let big = vec![b'x'; 70]
        .into_iter()
        .chain(*b"\r\n")
        .cycle()
        .take(4096)
        .collect::<Vec<u8>>();
    let r = c.send(SENDER, &["r@other.example"], &big).await;
    assert_eq!(r.first(), "552 5.3.4 Error: message file too big");
    // The session goes on, in sync.
    let r = c
        .send(SENDER, &["r@other.example"], &message("small", ""))
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let (spool, _dir) = server.stop().await;
    assert_eq!(spool.len(), 1);
}

#[tokio::test]
async fn recipient_limit() {
    let server = TestServer::start_with("[smtp]\nmax_recipients = 2\n").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
    assert_eq!(c.cmd("RCPT TO:<a@other.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@other.example>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<c@other.example>").await.first(),
        "452 4.5.3 Error: too many recipients"
    );
}

#[tokio::test]
async fn long_line_then_error_limit_closes() {
    let server = TestServer::start_with("[smtp]\nmax_errors = 3\n").await;
    let mut c = server.connect().await;
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(c.cmd(&long).await.first(), "500 5.5.2 Error: line too long");
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(
        c.cmd("FOO").await.first(),
        "502 5.5.2 Error: command not recognized"
    );
    c.write(b"MAIL FROM:<x@y>\r\n").await;
    assert_eq!(
        c.read().await.first(),
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    assert_eq!(c.read().await.first(), "421 4.7.0 Error: too many errors");
    assert!(
        c.read_or_eof().await.is_none(),
        "connection should be closed"
    );
}

#[tokio::test]
async fn connection_limits() {
    let server =
        TestServer::start_with("[smtp]\nmax_connections = 3\nmax_connections_per_client = 2\n")
            .await;
    let _a = server.connect_from("127.0.0.3").await;
    let _b = server.connect_from("127.0.0.3").await;
    let third = server.connect_from("127.0.0.3").await;
    assert_eq!(
        third.greeting.first(),
        "421 4.7.0 Error: too many connections from 127.0.0.3"
    );
    let _c = server.connect_from("127.0.0.4").await;
    let over = server.connect_from("127.0.0.5").await;
    assert_eq!(
        over.greeting.first(),
        "421 4.7.0 Error: too many connections"
    );
    // A slot frees when a session ends.
    let mut a = _a;
    assert_eq!(a.cmd("QUIT").await.first(), "221 2.0.0 Bye");
    assert!(a.read_or_eof().await.is_none());
    drop(a);
    let mut again = None;
    for _ in 0..100 {
        let c = server.connect_from("127.0.0.6").await;
        if c.greeting.code == 220 {
            again = Some(c);
            break;
        }
        // The server counts the slot free only once its session task has ended.
        tokio::task::yield_now().await;
    }
    assert!(again.is_some(), "slot was not released after QUIT");
}

#[tokio::test]
async fn bare_lf_is_refused_and_nothing_spooled() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
    c.cmd("RCPT TO:<r@other.example>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    // The smuggling shape: a bare-LF "end of data" followed by a second message.
    c.write(b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<smuggled@evil.example>\r\n\r\n.\r\n")
        .await;
    assert_eq!(
        c.read().await.first(),
        "550 5.5.2 Error: bare <LF> received (RFC 5321 section 2.3.8)"
    );
    let (spool, _dir) = server.stop().await;
    assert!(spool.is_empty());
}

/// `<CR>.<CR>` and other bare CRs, in DATA and in BDAT: refused, nothing spooled, so nothing
/// reaches a next hop that would end its DATA on them.
#[tokio::test]
async fn bare_cr_is_refused_in_data_and_bdat() {
    let server = TestServer::start().await;
    let refused = "550 5.5.2 Error: bare <CR> received (RFC 5321 section 2.3.8)";
    for body in [
        &b"Subject: a\r\n\r\nhello\r.\rMAIL FROM:<smuggled@evil.example>\r\n"[..],
        b"Subject: a\r\n\r\nhello\r.\r\nMAIL FROM:<smuggled@evil.example>\r\n",
        b"Subject: a\r\n\r\nx\ry\r\n",
    ] {
        let mut c = server.connect().await;
        c.ehlo().await;
        c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
        c.cmd("RCPT TO:<r@other.example>").await;
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.write(body).await;
        c.write(b"\r\n.\r\n").await;
        assert_eq!(c.read().await.first(), refused, "DATA {body:?}");
        // The session goes on: the next command is read as a command.
        assert_eq!(c.cmd("RSET").await.code, 250);

        let mut c = server.connect().await;
        c.ehlo().await;
        c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
        c.cmd("RCPT TO:<r@other.example>").await;
        c.write(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
            .await;
        c.write(body).await;
        assert_eq!(c.read().await.first(), refused, "BDAT {body:?}");
    }
    let (spool, _dir) = server.stop().await;
    assert!(spool.is_empty(), "a message with a bare CR was spooled");
}

#[tokio::test]
async fn bdat_chunks_pipelined() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"));
    let part1 = b"Subject: chunked\r\n\r\nfirst part\r\n";
    let part2 = b".not stuffed in BDAT\r\n";
    let mut wire = format!(
        "MAIL FROM:<{SENDER}> BODY=8BITMIME\r\nRCPT TO:<r@other.example>\r\nBDAT {}\r\n",
        part1.len()
    )
    .into_bytes();
    wire.extend_from_slice(part1);
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    wire.extend_from_slice(part2);
    c.write(&wire).await;
    assert_eq!(c.read().await.code, 250);
    assert_eq!(c.read().await.code, 250);
    assert_eq!(
        c.read().await.first(),
        format!("250 2.0.0 Ok: {} octets received", part1.len())
    );
    let id = queue_id(&c.read().await);
    // BINARYMIME is not advertised, so it is refused (RFC 3030 section 3).
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{SENDER}> BODY=BINARYMIME"))
            .await
            .first(),
        "555 5.5.4 Unsupported option: BODY=BINARYMIME"
    );
    // BDAT with no transaction: the chunk is consumed, the session stays in sync.
    c.write(b"BDAT 5 LAST\r\nhello").await;
    assert_eq!(c.read().await.first(), "503 5.5.1 Error: need MAIL command");
    assert_eq!(c.cmd("NOOP").await.code, 250);

    let (spool, _dir) = server.stop().await;
    let stored = spool.read_message(id.parse().unwrap()).unwrap();
    let mut expected = part1.to_vec();
    expected.extend_from_slice(part2);
    assert!(stored.ends_with(&expected));
    assert!(stored.starts_with(b"Received: from client.test.example"));
}

#[tokio::test]
async fn pipelined_transaction_with_data() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    c.write(format!("MAIL FROM:<{SENDER}>\r\nRCPT TO:<a@other.example>\r\nRCPT TO:<b@other.example>\r\nDATA\r\n").as_bytes())
        .await;
    for expected in [250, 250, 250, 354] {
        assert_eq!(c.read().await.code, expected);
    }
    c.write(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.read().await.code, 250);
    assert_eq!(c.read().await.code, 221);
    let (spool, _dir) = server.stop().await;
    let entries = spool.list();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].envelope.recipients,
        vec!["a@other.example", "b@other.example"]
    );
    assert_eq!(entries[0].envelope.sender, SENDER);
}

#[tokio::test]
async fn smtputf8_address_needs_the_parameter() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    assert_eq!(
        c.cmd("MAIL FROM:<jöran@client.test.example>").await.first(),
        "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<jöran@client.test.example> SMTPUTF8")
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<ü@other.example>").await.code, 250);
}

#[tokio::test]
async fn idle_session_times_out_with_421() {
    let server = TestServer::start_with("[smtp]\ntimeout_secs = 1\n").await;
    let mut c = server.connect().await;
    c.ehlo().await;
    // Wait for the server's own timeout: its 421 arrives without us sending anything.
    assert_eq!(c.read().await.first(), "421 4.4.2 Error: timeout exceeded");
    assert!(c.read_or_eof().await.is_none());
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_and_keeps_accepted_mail() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let id = queue_id(
        &c.send(SENDER, &["r@other.example"], &message("before stop", ""))
            .await,
    );
    let mut idle = server.connect().await;
    idle.ehlo().await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        idle.read().await.first(),
        "421 4.3.2 Service shutting down, closing connection"
    );
    assert_eq!(c.read().await.code, 421);
    let (spool, _dir) = stopping.await.unwrap();
    assert!(spool.get(id.parse().unwrap()).is_some());
}

/// 1,021 pipelined RCPTs against a limit of 1,000: the 21 extra get 452 without counting as
/// errors (Postfix's smtpd_recipient_overshoot_limit), the transaction goes on, and the
/// message reaches the next hop for the 1,000 accepted.
#[tokio::test]
async fn excess_recipients_get_452_and_the_rest_is_delivered() {
    let mut sink = common::sink::Sink::start(common::sink::SinkOptions::default()).await;
    let server = TestServer::start_with(&format!(
        "[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let mut batch = format!("MAIL FROM:<{SENDER}>\r\n");
    for n in 0..1021 {
        batch.push_str(&format!("RCPT TO:<r{n}@other.example>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.write(batch.as_bytes()).await;
    assert_eq!(c.read().await.code, 250);
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..1021 {
        *codes.entry(c.read().await.first()).or_insert(0) += 1;
    }
    assert_eq!(codes.get("250 2.1.5 Ok"), Some(&1000), "{codes:?}");
    assert_eq!(
        codes.get("452 4.5.3 Error: too many recipients"),
        Some(&21),
        "{codes:?}"
    );
    assert_eq!(c.read().await.code, 354, "DATA goes on");
    let mut wire = Vec::new();
    postern::proto::dot_stuff(&message("many", ""), &mut wire);
    c.write(&wire).await;
    queue_id(&c.read().await);
    let got = sink.next(30).await.expect("delivered");
    assert_eq!(got.recipients.len(), 1000);
    assert_eq!(got.recipients[999], "r999@other.example");
}

/// A client trickling one byte at a time: its command line, and its DATA, each have one
/// deadline however the bytes come, so it is closed while a normal client is served.
#[tokio::test]
async fn trickling_clients_are_closed_at_the_deadline() {
    let server = TestServer::start_with("[smtp]\ntimeout_secs = 2\nmin_data_rate = 500\n").await;
    let trickle = |mut c: SmtpClient, bytes: &'static [u8]| async move {
        // Until the server closes: with a per-read timeout only, that is never.
        for b in bytes.iter().cycle() {
            // Each byte well inside the old per-read timeout.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if !c.try_write(&[*b]).await {
                break;
            }
        }
        c.read_or_eof().await
    };
    // A command that never ends.
    let slow_command = tokio::spawn(trickle(server.connect().await, b"EHLO slow.example"));
    // DATA that never ends.
    let mut c = server.connect().await;
    c.ehlo().await;
    c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
    c.cmd("RCPT TO:<r@other.example>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let slow_data = tokio::spawn(trickle(c, b"Subject: slow\r\n"));
    // Meanwhile a normal client is served.
    server
        .submit(SENDER, &["r@other.example"], &message("normal", ""))
        .await;
    for slow in [slow_command, slow_data] {
        let reply = tokio::time::timeout(std::time::Duration::from_secs(60), slow)
            .await
            .expect("a trickling client kept its connection")
            .unwrap()
            .expect("told why before the close");
        assert_eq!(reply.first(), "421 4.4.2 Error: timeout exceeded");
    }
}

/// More new connections per minute from one (untrusted) address than allowed: refused.
#[tokio::test]
async fn connection_rate_per_client_is_limited_trusted_networks_excepted() {
    let server = TestServer::start_with("[smtp]\nmax_connection_rate_per_client = 3\n").await;
    server
        .set(serde_json::json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    for _ in 0..3 {
        let mut c = server.connect_from("127.0.0.2").await;
        assert_eq!(c.greeting.code, 220);
        c.cmd("QUIT").await;
    }
    let c = server.connect_from("127.0.0.2").await;
    assert_eq!(
        c.greeting.first(),
        "421 4.7.0 Error: too many connections from 127.0.0.2"
    );
    // Another address, and a trusted one, are not affected.
    assert_eq!(server.connect_from("127.0.0.3").await.greeting.code, 220);
    for _ in 0..5 {
        assert_eq!(server.connect().await.greeting.code, 220);
    }
}
