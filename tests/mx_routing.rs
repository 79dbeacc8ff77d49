//! MX routing against a real DNS server on loopback: preference order, the next MX after a
//! 421, A fallback without MX, null MX and NXDOMAIN bouncing at once. The MX hosts are
//! different 127.0.0.x addresses sharing one port (`outbound.port`).

mod common;

use std::net::SocketAddr;

use common::dns::{Zone, serve};
use common::sink::{Sink, SinkOptions};
use common::*;

/// Sinks on 127.0.0.11.. with one port; postern asks `dns` and connects to that port.
async fn setup(zone: Zone, sink_opts: &[SinkOptions]) -> (TestServer, Vec<Sink>) {
    let mut sinks = Vec::new();
    let first = Sink::start_on("127.0.0.11:0".parse().unwrap(), sink_opts[0].clone()).await;
    let port = first.addr.port();
    sinks.push(first);
    for (i, opts) in sink_opts.iter().enumerate().skip(1) {
        let addr: SocketAddr = format!("127.0.0.{}:{port}", 11 + i).parse().unwrap();
        sinks.push(Sink::start_on(addr, opts.clone()).await);
    }
    let dns = serve(zone).await;
    let server = TestServer::start_with(&format!(
        "[outbound]\nport = {port}\nnameservers = [\"{dns}\"]\nfirst_retry_secs = 1\n[outbound.routes]\n\"inside.example\" = \"[127.0.0.14]\"\n"
    ))
    .await;
    (server, sinks)
}

fn mx_zone() -> Zone {
    Zone::default()
        .mx("pref.example", 20, "mx2.pref.example")
        .mx("pref.example", 10, "mx1.pref.example")
        .a("mx1.pref.example", "127.0.0.11".parse().unwrap())
        .a("mx2.pref.example", "127.0.0.12".parse().unwrap())
        .a("nomx.example", "127.0.0.13".parse().unwrap())
        .mx("nullmx.example", 0, ".")
}

async fn submit(server: &TestServer, rcpt: &str) {
    server
        .submit("app@inside.example", &[rcpt], &message(rcpt, ""))
        .await;
}

#[tokio::test]
async fn lowest_preference_first() {
    let opts = SinkOptions::default();
    let (server, mut sinks) = setup(mx_zone(), &[opts.clone(), opts]).await;
    submit(&server, "user@pref.example").await;
    let got = sinks[0]
        .next(20)
        .await
        .expect("mx1 (preference 10) got nothing");
    assert_eq!(got.recipients, vec!["user@pref.example"]);
    assert!(sinks[1].try_next().is_none());
}

#[tokio::test]
async fn next_mx_after_421() {
    let closing = SinkOptions {
        closing: true,
        ..SinkOptions::default()
    };
    let (mut server, mut sinks) = setup(mx_zone(), &[closing, SinkOptions::default()]).await;
    submit(&server, "user@pref.example").await;
    let got = sinks[1]
        .next(20)
        .await
        .expect("mx2 got nothing after mx1's 421");
    assert_eq!(got.recipients, vec!["user@pref.example"]);
    assert_eq!(
        sinks[0].sessions.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "mx1 was not tried first"
    );
    let event = server.next_event(20).await;
    assert_eq!(event.status.as_ref(), "sent");
    assert_eq!(
        event.relay,
        format!("mx2.pref.example[127.0.0.12]:{}", sinks[1].addr.port())
    );
}

#[tokio::test]
async fn address_fallback_without_mx() {
    let opts = SinkOptions::default();
    let (server, mut sinks) = setup(mx_zone(), &[opts.clone(), opts.clone(), opts]).await;
    submit(&server, "user@nomx.example").await;
    let got = sinks[2]
        .next(20)
        .await
        .expect("the A record's host got nothing");
    assert_eq!(got.recipients, vec!["user@nomx.example"]);
}

#[tokio::test]
async fn null_mx_bounces_at_once_with_5_1_10() {
    let opts = SinkOptions::default();
    let (mut server, mut sinks) =
        setup(mx_zone(), &[opts.clone(), opts.clone(), opts.clone(), opts]).await;
    submit(&server, "user@nullmx.example").await;
    let event = server.next_event_for("user@nullmx.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.1.10")
    );
    assert_eq!(
        event.reply,
        "Domain nullmx.example does not accept mail (nullMX)"
    );
    // The DSN reaches the sender's domain (static route to the fourth sink).
    let dsn = sinks[3].next(20).await.expect("no DSN");
    assert_eq!(dsn.sender, "");
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("Status: 5.1.10\r\n"), "{text}");
}

#[tokio::test]
async fn nxdomain_bounces_with_5_1_2() {
    let (mut server, _sinks) = setup(mx_zone(), &[SinkOptions::default()]).await;
    submit(&server, "user@nosuch.example").await;
    let event = server.next_event_for("user@nosuch.example", 20).await;
    assert_eq!(
        (event.status.as_ref(), event.dsn.as_str()),
        ("bounced", "5.1.2")
    );
    assert!(
        event
            .reply
            .contains("Name service error for name=nosuch.example type=MX: Host not found"),
        "{}",
        event.reply
    );
}
