//! Queue operations through `postern queue ...` against a running server: postqueue-style
//! listing with the last error, show, hold/release (kept across restarts is a spool unit
//! test), retry now, delete; the API's 404 and 400.

mod common;

use common::sink::{Sink, SinkOptions};
use common::*;
use hyper::{Method, StatusCode};

/// A server routing other.example to a sink that defers the first transaction, with retries
/// an hour apart unless asked; one message queued and deferred.
async fn deferred_message() -> (Sink, TestServer, SmtpClient, String) {
    let sink = Sink::start(SinkOptions {
        defer_first: 1,
        ..SinkOptions::default()
    })
    .await;
    let mut server = TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 3600\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    let mut c = server.connect().await;
    c.ehlo().await;
    let id = queue_id(
        &c.send(
            "app@inside.example",
            &["partner@other.example"],
            &message("queued", ""),
        )
        .await,
    );
    assert_eq!(server.next_event(20).await.status, "deferred");
    (sink, server, c, id)
}

#[tokio::test]
async fn list_hold_release_retry_delete() {
    let (mut sink, mut server, _client, id) = deferred_message().await;

    let (ok, out, err) = server.cli(&["queue", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("-Queue ID-"), "{out}");
    assert!(out.contains(&format!("{id} ")), "{out}");
    assert!(out.contains("app@inside.example"), "{out}");
    assert!(
        out.contains("(host 127.0.0.1["),
        "last error missing: {out}"
    );
    assert!(out.contains("451 4.3.0 try again later"), "{out}");
    assert!(out.contains("partner@other.example"), "{out}");
    assert!(out.contains("-- 1 Kbytes in 1 Request."), "{out}");

    let (ok, out, _) = server.cli(&["queue", "show", &id]).await;
    assert!(ok);
    assert!(
        out.contains("recipient partner@other.example: pending"),
        "{out}"
    );
    assert!(out.contains("Subject: queued"), "{out}");

    assert!(server.cli(&["queue", "hold", &id]).await.0);
    let (_, out, _) = server.cli(&["queue", "list"]).await;
    assert!(out.contains(&format!("{id}! ")), "hold not shown: {out}");
    // Held: retry does not deliver it, and says so.
    assert!(server.cli(&["queue", "retry", "--all"]).await.0);
    let (ok, _, err) = server.cli(&["queue", "retry", &id]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("{id}: on hold: not retried")),
        "{err}"
    );
    assert!(server.cli(&["queue", "release", &id]).await.0);
    // Release puts it back in the schedule at once; the sink now accepts.
    let got = sink.next(20).await.expect("not delivered after release");
    assert!(got.data.ends_with(&message("queued", "")));
    assert_eq!(server.next_event(20).await.status, "sent");
    let (_, out, _) = server.cli(&["queue", "list"]).await;
    assert_eq!(out, "Mail queue is empty\n");
}

#[tokio::test]
async fn retry_now_and_delete() {
    let (mut sink, server, mut c, first) = deferred_message().await;
    let (ok, _, err) = server.cli(&["queue", "retry", &first]).await;
    assert!(ok, "{err}");
    assert!(sink.next(20).await.is_some(), "retry did not deliver now");

    // A message with no route (deferred), deleted: no delivery, no DSN, gone.
    let second = queue_id(
        &c.send(
            "app@inside.example",
            &["b@unrouted.example"],
            &message("delete me", ""),
        )
        .await,
    );
    let (ok, _, err) = server.cli(&["queue", "delete", &second]).await;
    assert!(ok, "{err}");
    let (_, out, _) = server.cli(&["queue", "list", "--json"]).await;
    let items: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        items.as_array().unwrap().iter().all(|i| i["id"] != second),
        "{out}"
    );

    // Unknown and malformed IDs are precise errors.
    let (ok, _, err) = server.cli(&["queue", "hold", "ABCDEF"]).await;
    assert!(!ok);
    assert!(
        err.contains("404 Not Found: ABCDEF: no such message in the queue"),
        "{err}"
    );
    let (status, body) = server
        .api_client()
        .request(Method::POST, "/api/v1/queue/not-hex/hold", None)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// Issue 27: a header carrying terminal escapes is printed escaped by `queue show` (and
/// nothing of it reaches the terminal raw): ESC, a C1 CSI, BEL, U+2028, an RLO.
#[tokio::test]
async fn queue_show_escapes_control_characters_from_the_message() {
    let sink = Sink::start(SinkOptions {
        defer_first: 1,
        ..SinkOptions::default()
    })
    .await;
    let mut server = TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 3600\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    ))
    .await;
    let subject = "\x1b[31mred\x1b[0m \u{9b}2J bell\x07\u{2028}next \u{202e}fdp.exe";
    let id = server
        .submit(
            "app@inside.example",
            &["partner@other.example"],
            &message(subject, ""),
        )
        .await;
    assert_eq!(server.next_event(20).await.status, "deferred");

    let (ok, out, err) = server.cli(&["queue", "show", &id]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "Subject: \\x1b[31mred\\x1b[0m \\u{9b}2J bell\\x07\\u{2028}next \\u{202e}fdp.exe\n"
        ),
        "{out:?}"
    );
    for raw in ['\x1b', '\u{9b}', '\x07', '\u{2028}', '\u{202e}'] {
        assert!(!out.contains(raw), "{raw:?} printed raw: {out:?}");
    }
    assert!(
        out.contains("\nFrom: <sender@client.test.example>\n"),
        "{out:?}"
    );
}
