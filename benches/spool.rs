//! Spool group commit: 20 sessions commit a 4 KiB message each at the same moment, on the
//! real filesystem with fdatasync. `cargo bench --bench spool`. Prints messages/s and syncs
//! per message for BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern::spool::{Envelope, Spool};

const SESSIONS: usize = 20;

fn commit_batch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Under target/ so it is on the project's disk, not a tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-spool");
    let _ = std::fs::remove_dir_all(&base);
    let (spool, _) = Spool::open(&base, 64 << 20).unwrap();
    let message = vec![b'x'; 4096];
    let envelope = Envelope {
        sender: "a@example.org".into(),
        recipients: vec!["b@example.net".into()],
        ..Envelope::default()
    };
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements(SESSIONS as u64));
    g.bench_function("commit_20_concurrent_4k", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..SESSIONS)
                    .map(|_| {
                        let (spool, env, msg) = (spool.clone(), envelope.clone(), message.clone());
                        tokio::spawn(async move {
                            let id = spool.next_id();
                            spool.commit(id, env, &msg).await.unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();
    let (records, syncs) = spool.stats();
    println!(
        "spool: {records} messages in {syncs} fdatasyncs = {:.3} syncs per message",
        syncs as f64 / records.max(1) as f64
    );
    spool.shutdown();
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group!(benches, commit_batch);
criterion_main!(benches);
