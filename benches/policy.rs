//! `policy::decide()` with a 10,000-row table and 100 message rules: `cargo bench --bench policy`.
//! The rule is evaluated as at receipt (`rule_for`), then `decide` as at delivery; the
//! figure is both, per recipient.

use criterion::{Criterion, criterion_group, criterion_main};
use postern::policy::{Level, decide, rule_for};
use postern::settings::{Direction, MessageRule, PolicyRow, RuleData, RuleTls, Settings, Snapshot};
use std::hint::black_box;

fn settings() -> Snapshot {
    let mut s = Settings::default();
    for i in 0..10_000 {
        let pattern = match i % 4 {
            0 => format!("partner{i}.example"),
            1 => format!(".group{i}.example"),
            2 => format!("user{i}@corp{i}.example"),
            _ => format!("sub{i}.example"),
        };
        let level = if i % 2 == 0 {
            Level::Encrypt
        } else {
            Level::May
        };
        let mut row = PolicyRow::new(pattern, level);
        row.include_subdomains = i % 4 == 3;
        s.policy.push(row);
    }
    s.policy.push(PolicyRow::new("*", Level::May));
    for l in 0..100 {
        s.rule_data.push(RuleData {
            name: format!("list{l}"),
            domains: (0..50).map(|d| format!("d{d}.list{l}.example")).collect(),
        });
        s.rules.push(MessageRule {
            name: format!("rule{l}"),
            direction: Direction::Outbound,
            recipient_matches: Some(format!("list{l}")),
            recipient_not_matches: None,
            sender_matches: None,
            sender_not_matches: None,
            every_recipient: false,
            tls_level: RuleTls::Require,
        });
    }
    Snapshot::new(s, 0)
}

fn bench(c: &mut Criterion) {
    let snap = settings();
    let recipients = [
        "a@partner4000.example",     // exact domain row
        "a@x.y.group4001.example",   // parent row, two labels up
        "user4002@corp4002.example", // user@domain row
        "a@nowhere.example",         // every-domain row, no rule (all 100 rules tried)
        "a@d7.list99.example",       // the last rule matches
    ];
    let mut g = c.benchmark_group("policy");
    g.throughput(criterion::Throughput::Elements(recipients.len() as u64));
    g.bench_function("rule_for_and_decide_10k_rows_100_rules", |b| {
        b.iter(|| {
            for r in recipients {
                let rule = rule_for(&snap, "app@inside.example", r);
                black_box(decide(&snap, black_box(r), None, rule.as_ref()));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
