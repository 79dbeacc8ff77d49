//! The delivery engine with a long queue: message bodies are read only by deliveries that
//! hold their permits, so however many messages are due, the bodies in memory stay within
//! the attempts in flight.

mod common;

use std::sync::Arc;

use common::sink::{Sink, SinkOptions};
use postern::config::OutboundConfig;
use postern::spool::{Envelope, Spool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_memory_stay_within_the_attempts_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = Sink::start(SinkOptions::default()).await;
    // Filled through the spool's own API before the engine starts: all due at once.
    let (spool, _) = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let total = 3000;
    let mut fill = tokio::task::JoinSet::new();
    for n in 0..total {
        let spool = spool.clone();
        fill.spawn(async move {
            let id = spool.next_id();
            let envelope = Envelope {
                sender: "s@inside.example".into(),
                // Many destinations, so per-destination limits are not what bounds them.
                recipients: vec![format!("r{n}@d{}.example", n % 300)],
                ..Envelope::default()
            };
            spool.commit(id, envelope, &[b'x'; 4096]).await.unwrap();
        });
    }
    while fill.join_next().await.transpose().unwrap().is_some() {}
    let cfg = OutboundConfig {
        relayhost: Some(format!("[127.0.0.1]:{}", sink.addr.port())),
        max_concurrency: 4,
        destination_concurrency: 2,
        ..OutboundConfig::default()
    };
    let settings = postern::settings::SettingsHandle::open(&dir.path().join("s.redb")).unwrap();
    let events = postern::events::EventLog::open(dir.path(), 1 << 24).unwrap();
    let engine = Arc::new(postern::outbound::Engine::new(
        spool.clone(),
        settings,
        cfg,
        "mx.test.example".into(),
        events,
        None,
        Arc::new(rustls::RootCertStore::empty()),
    ));
    let (tx, incoming) = tokio::sync::mpsc::unbounded_channel();
    spool.subscribe(tx);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(postern::outbound::run(engine.clone(), incoming, stopped));
    for n in 0..total {
        assert!(
            sink.next(30).await.is_some(),
            "{n} of {total} delivered, then nothing"
        );
    }
    let (now, peak) = engine.bodies();
    assert!(
        peak <= engine.max_attempts(),
        "{peak} bodies in memory at once with {} attempts allowed",
        engine.max_attempts()
    );
    assert!(peak >= 1, "the gauge counted the deliveries");
    let _ = stop.send(true);
    run.await.unwrap();
    assert_eq!(
        engine.bodies().0,
        0,
        "bodies left after the engine stopped ({now} before)"
    );
}
