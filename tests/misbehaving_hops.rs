//! Next hops that answer the wrong code, stall, never answer QUIT, or drop the connection:
//! nothing is logged `sent` that the next hop did not take with the one reply that means
//! it, and one bad host never holds up mail for another.

mod common;

use std::sync::atomic::Ordering;

use common::sink::{Act, Sink, SinkOptions, Stage};
use common::*;
use hyper::{Method, StatusCode};

/// A postern whose routes send `other.example` to `sink` and `idle.example` to `other`,
/// retrying after a second.
async fn relay(sink: &Sink, other: Option<&Sink>, extra: &str) -> TestServer {
    let mut routes = format!("\"other.example\" = \"[127.0.0.1]:{}\"\n", sink.addr.port());
    if let Some(o) = other {
        routes.push_str(&format!(
            "\"idle.example\" = \"[127.0.0.1]:{}\"\n",
            o.addr.port()
        ));
    }
    TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n{extra}\n[outbound.routes]\n{routes}"
    ))
    .await
}

/// Each wrong reply at each stage: deferred with the reply quoted (4.5.0, protocol error),
/// still queued, nothing received; then the sink behaves and the retry delivers it once.
#[tokio::test]
async fn wrong_success_codes_are_deferred_never_sent() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    // A new connection each time, so STARTTLS is asked every time.
    let mut server = relay(&sink, None, "connection_cache_secs = 0").await;
    let cases = [
        (Stage::Mail, "252 2.1.0 cannot verify, will accept"),
        (Stage::Mail, "251 2.1.0 Ok"),
        (Stage::Rcpt, "354 go ahead"),
        (Stage::Data, "250 2.0.0 Ok"),
        (Stage::EndOfData, "220 sink.test.example ready"),
        (Stage::StartTls, "250 2.0.0 fine, but no handshake"),
    ];
    for (n, (stage, reply)) in cases.into_iter().enumerate() {
        let rcpt = format!("case{n}@other.example");
        sink.act(stage, Act::Reply(reply.into()));
        let id = server
            .submit(
                "app@inside.example",
                &[&rcpt],
                &message(&format!("case {n}"), ""),
            )
            .await;
        let event = server.next_event_for(&rcpt, 30).await;
        assert_eq!(
            (event.status.as_ref(), event.dsn.as_str()),
            ("deferred", "4.5.0"),
            "{stage:?} {reply}: {event:?}"
        );
        assert!(
            event.reply.contains(reply) && event.reply.contains("protocol error"),
            "{stage:?}: the reply is quoted: {}",
            event.reply
        );
        let (status, entry) = server
            .api_json(Method::GET, &format!("/api/v1/queue/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{stage:?}: still queued: {entry}");
        assert!(sink.try_next().is_none(), "{stage:?}: nothing was received");
        sink.behave();
        let event = server.next_event_for(&rcpt, 30).await;
        assert_eq!(event.status.as_ref(), "sent", "{stage:?}: {event:?}");
        let got = sink
            .next(10)
            .await
            .expect("delivered once the sink behaves");
        assert_eq!(got.recipients, vec![rcpt.clone()]);
        assert!(sink.try_next().is_none(), "{stage:?}: delivered once");
    }
}

/// A destination whose transactions never finish takes its own share of the global limit,
/// no more: mail for an idle destination goes straight out. A next hop that never answers
/// QUIT delays nothing either (each idle message is a new connection ending in one).
#[tokio::test]
async fn stalled_destination_and_silent_quit_hold_up_nobody_else() {
    let slow = Sink::start(SinkOptions::default()).await;
    slow.act(Stage::EndOfData, Act::Stall);
    let mut idle = Sink::start(SinkOptions::default()).await;
    idle.act(Stage::Quit, Act::Stall);
    let mut server = relay(
        &slow,
        Some(&idle),
        "max_concurrency = 2\ndestination_concurrency = 1\nconnection_cache_secs = 0",
    )
    .await;
    for n in 0..6 {
        let rcpt = format!("s{n}@other.example");
        server
            .submit("app@inside.example", &[&rcpt], &message("slow", ""))
            .await;
    }
    while slow.bodies.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    for n in 0..3 {
        let rcpt = format!("i{n}@idle.example");
        server
            .submit("app@inside.example", &[&rcpt], &message("idle", ""))
            .await;
        let got = idle.next(10).await.unwrap_or_else(|| {
            panic!("mail for the idle destination waited behind the stalled one ({n})")
        });
        assert_eq!(got.recipients, vec![rcpt.clone()]);
        assert_eq!(server.next_event_for(&rcpt, 10).await.status, "sent");
    }
    assert_eq!(
        slow.bodies.load(Ordering::SeqCst),
        1,
        "one slow transaction at a time"
    );
}

/// A slow destination allowed the whole global limit: an idle destination's message waits
/// for at most one of its transactions, not for its whole backlog.
#[tokio::test]
async fn slow_destination_with_the_whole_limit_delays_others_by_one_transaction() {
    let slow = Sink::start(SinkOptions::default()).await;
    // About 0.7 s per transaction: the 250 after the dot, a byte every 20 ms.
    slow.act(Stage::EndOfData, Act::Trickle(20));
    let mut idle = Sink::start(SinkOptions::default()).await;
    let mut server = relay(
        &slow,
        Some(&idle),
        "max_concurrency = 2\ndestination_concurrency = 2",
    )
    .await;
    for n in 0..8 {
        let rcpt = format!("s{n}@other.example");
        server
            .submit("app@inside.example", &[&rcpt], &message("slow", ""))
            .await;
    }
    while slow.bodies.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    server
        .submit(
            "app@inside.example",
            &["i@idle.example"],
            &message("idle", ""),
        )
        .await;
    idle.next(30).await.expect("the idle destination's message");
    let slow_started = slow.bodies.load(Ordering::SeqCst);
    assert!(
        slow_started <= 3,
        "the idle destination waited for {} slow transactions",
        slow_started - 2
    );
    assert_eq!(
        server.next_event_for("i@idle.example", 10).await.status,
        "sent"
    );
}
