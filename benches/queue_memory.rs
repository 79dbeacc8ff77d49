//! Memory of the delivery engine with a long queue: 100,000 messages of 4 KiB filled through
//! the spool's own API, then delivered to a fast sink on loopback with the default limits
//! (100 in all, 20 per destination, over 1,000 destination domains). Prints the process's
//! RSS after the fill and its peak during delivery, and the most message bodies in memory
//! at once, for BENCHMARKS.md. `cargo bench --bench queue_memory` (not a criterion bench:
//! one run, one set of figures).

#[path = "../tests/common/sink.rs"]
#[allow(dead_code)]
mod sink;

use std::sync::Arc;
use std::time::Instant;

use postern::config::OutboundConfig;
use postern::spool::{Envelope, Spool};

const MESSAGES: usize = 100_000;
const DOMAINS: usize = 1_000;

/// (VmRSS, VmHWM) of this process in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // Under target/ so it is on the project's disk, not a tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-queue");
    let _ = std::fs::remove_dir_all(&base);
    let (before, _) = rss();
    let (spool, _) = Spool::open(&base.join("spool"), 64 << 20).unwrap();
    let started = Instant::now();
    let mut fill = tokio::task::JoinSet::new();
    for session in 0..200 {
        let spool = spool.clone();
        fill.spawn(async move {
            let body = vec![b'x'; 4096];
            for n in (session..MESSAGES).step_by(200) {
                let id = spool.next_id();
                let envelope = Envelope {
                    sender: "sender@inside.example".into(),
                    recipients: vec![format!("rcpt{n}@d{}.example", n % DOMAINS)],
                    client_ip: "192.0.2.1".into(),
                    helo: "client.inside.example".into(),
                    ..Envelope::default()
                };
                spool.commit(id, envelope, &body).await.unwrap();
            }
        });
    }
    while fill.join_next().await.is_some() {}
    let filled = started.elapsed();
    let (queued, _) = rss();
    println!(
        "queue_memory: filled {MESSAGES} messages in {:.1} s; RSS {before:.1} MiB before, {queued:.1} MiB with {} queued ({:.0} bytes per queued message)",
        filled.as_secs_f64(),
        spool.len(),
        (queued - before) * 1024.0 * 1024.0 / MESSAGES as f64
    );

    let mut sink = sink::Sink::start(sink::SinkOptions::default()).await;
    let cfg = OutboundConfig {
        relayhost: Some(format!("[127.0.0.1]:{}", sink.addr.port())),
        ..OutboundConfig::default()
    };
    let settings = postern::settings::SettingsHandle::open(&base.join("s.redb")).unwrap();
    let events = postern::events::EventLog::open(&base, 1 << 30).unwrap();
    let engine = Arc::new(postern::outbound::Engine::new(
        spool.clone(),
        settings,
        cfg,
        "mx.bench.example".into(),
        events,
        None,
        Arc::new(rustls::RootCertStore::empty()),
    ));
    let (tx, incoming) = tokio::sync::mpsc::unbounded_channel();
    spool.subscribe(tx);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(postern::outbound::run(engine.clone(), incoming, stopped));
    let started = Instant::now();
    let mut peak_rss: f64 = 0.0;
    for n in 0..MESSAGES {
        sink.next(60).await.expect("the sink stopped receiving");
        if n % 1000 == 0 {
            peak_rss = peak_rss.max(rss().0);
        }
    }
    let delivered = started.elapsed();
    let (_, hwm) = rss();
    let (_, peak_bodies) = engine.bodies();
    println!(
        "queue_memory: delivered {MESSAGES} in {:.1} s ({:.0} msgs/s); RSS peak while delivering {peak_rss:.1} MiB (VmHWM {hwm:.1} MiB); at most {peak_bodies} bodies in memory at once ({} attempts allowed)",
        delivered.as_secs_f64(),
        MESSAGES as f64 / delivered.as_secs_f64(),
        engine.max_attempts()
    );
    let _ = stop.send(true);
    let _ = run.await;
    spool.shutdown();
    let _ = std::fs::remove_dir_all(&base);
}
