//! Restart during delivery: SIGKILL while postern delivers to a sink, restart, and every
//! message arrives; a message arrives twice only if its transaction was in flight at the kill
//! (the sink said 250 before postern recorded it), so duplicates are bounded by the
//! destination concurrency.

mod common;

use std::collections::HashMap;

use common::process::spawn_postern;
use common::sink::{Sink, SinkOptions};
use common::*;

const MESSAGES: usize = 60;
const DESTINATION_CONCURRENCY: usize = 5;

fn big_message(n: usize) -> Vec<u8> {
    let mut m =
        format!("Subject: restart {n}\r\nMessage-ID: <restart.{n}@test>\r\n\r\n").into_bytes();
    for line in 0..800 {
        m.extend_from_slice(
            format!("message {n} line {line:04} .....................................\r\n")
                .as_bytes(),
        );
    }
    m
}

fn id_of(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let rest = text
        .split("Message-ID: <restart.")
        .nth(1)
        .expect("our Message-ID");
    rest.split('@').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_nothing() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\ndestination_concurrency = {DESTINATION_CONCURRENCY}\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{}\"\n",
        sink.addr.port()
    );
    let mut proc = spawn_postern(dir.path(), None, &extra);

    // Queue everything first, over one session.
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("HELO restart.test").await;
    for n in 0..MESSAGES {
        let r = c
            .send("s@restart.test", &["r@other.example"], &big_message(n))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.cmd("QUIT").await;

    let mut seen: HashMap<usize, usize> = HashMap::new();
    while seen.values().sum::<usize>() < 15 {
        let got = sink
            .next(30)
            .await
            .expect("delivery stalled before the kill");
        *seen.entry(id_of(&got.data)).or_default() += 1;
    }
    proc.child.kill().unwrap(); // SIGKILL, deliveries in flight
    proc.child.wait().unwrap();
    let before_restart = seen.len();

    let proc = spawn_postern(dir.path(), None, &extra);
    while seen.len() < MESSAGES {
        let got = sink
            .next(30)
            .await
            .unwrap_or_else(|| panic!("only {} of {MESSAGES} arrived after restart", seen.len()));
        let n = id_of(&got.data);
        assert!(
            got.data.ends_with(&big_message(n)),
            "message {n} arrived altered"
        );
        *seen.entry(n).or_default() += 1;
    }
    assert!(proc.stop().await, "postern did not stop cleanly");
    while let Some(extra) = sink.try_next() {
        *seen.entry(id_of(&extra.data)).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    assert!(
        duplicates <= DESTINATION_CONCURRENCY,
        "{duplicates} duplicates, more than the {DESTINATION_CONCURRENCY} transactions that can be in flight"
    );
    eprintln!(
        "delivered {MESSAGES} ({before_restart} before the kill), {duplicates} duplicate(s) from transactions in flight"
    );
    let (spool, _) = postern::spool::Spool::open(&dir.path().join("data/spool"), 1 << 26).unwrap();
    assert!(
        spool.is_empty(),
        "{} message(s) left in the queue",
        spool.len()
    );
}
