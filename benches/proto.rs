//! Command parsing and the DATA reader: `cargo bench --bench proto`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern::proto::{DotReader, dot_stuff, parse};
use std::hint::black_box;

fn commands(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"EHLO client.example.org",
        b"MAIL FROM:<sender@example.org> SIZE=4096 BODY=8BITMIME",
        b"RCPT TO:<recipient@example.net>",
        b"DATA",
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("transaction_commands", |b| {
        b.iter(|| {
            for l in lines {
                black_box(parse(black_box(l)).unwrap());
            }
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let mut message = Vec::new();
    for i in 0..1300 {
        message.extend_from_slice(
            format!("{i:05} the quick brown fox jumps over the lazy dog ...........\r\n")
                .as_bytes(),
        );
        if i % 50 == 0 {
            message.extend_from_slice(b".leading dot\r\n");
        }
    }
    let mut wire = Vec::new();
    dot_stuff(&message, &mut wire);
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("dot_reader_100k", |b| {
        b.iter(|| {
            let mut r = DotReader::new(1 << 20);
            for chunk in wire.chunks(16 * 1024) {
                black_box(r.feed(chunk));
            }
            black_box(r.into_message())
        })
    });
    g.throughput(Throughput::Bytes(message.len() as u64));
    g.bench_function("dot_stuff_100k", |b| {
        let mut out = Vec::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            dot_stuff(black_box(&message), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, commands, data);
criterion_main!(benches);
