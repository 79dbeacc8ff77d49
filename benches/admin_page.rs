//! The TLS Policy Domains page with 10,000 rows, as its handler renders it (rows gathered,
//! searched, sorted, one page of fifty rendered by askama): `cargo bench --bench admin_page`.
//! Target (issue 14): under 20 ms per page.

use criterion::{Criterion, criterion_group, criterion_main};
use postern::admin::pages::Chrome;
use postern::admin::pages::policy::page_html;
use postern::policy::Level;
use postern::settings::{PolicyRow, Settings};
use std::hint::black_box;

fn settings() -> Settings {
    let mut s = Settings::default();
    for i in 0..10_000 {
        let pattern = match i % 3 {
            0 => format!("partner{i:05}.example"),
            1 => format!(".group{i:05}.example"),
            _ => format!("user{i}@corp{i:05}.example"),
        };
        let mut row = PolicyRow::new(
            pattern,
            if i % 2 == 0 {
                Level::Encrypt
            } else {
                Level::Verify
            },
        );
        row.note = format!("contract {i}, renewed yearly");
        s.policy.push(row);
    }
    s
}

fn chrome() -> Chrome {
    Chrome {
        hostname: "mx.bench.example".into(),
        user: Some("admin".into()),
        csrf: "0".repeat(64),
        database_down: None,
        settings_refused: None,
        node: None,
    }
}

fn bench(c: &mut Criterion) {
    let s = settings();
    let first = page_html(chrome(), &s, "", 1);
    assert!(
        first.contains("Rows 1–50 of 10000"),
        "the page lists the table"
    );
    c.bench_function("policy page, 10,000 rows, page 1", |b| {
        b.iter(|| black_box(page_html(chrome(), black_box(&s), "", 1)))
    });
    c.bench_function("policy page, 10,000 rows, last page", |b| {
        b.iter(|| black_box(page_html(chrome(), black_box(&s), "", 200)))
    });
    c.bench_function("policy page, 10,000 rows, search in notes", |b| {
        b.iter(|| black_box(page_html(chrome(), black_box(&s), "contract 42", 1)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
