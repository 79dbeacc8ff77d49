//! Memory per SMTP session, measured on the real binary (`postern serve`, release build) from
//! /proc/<pid>/status: 1,000 idle connections, then 20 sessions each inside DATA with a
//! 10 MB message not yet ended, then the same messages ended and committed.
//! `cargo bench --bench session_memory` prints the figures for BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut last = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            last = line;
            break;
        }
        last.push_str(&line);
    }
    last
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-session");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.bench.example\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1100\nmax_connections_per_client = 1100\n[admin]\nlisten = \"127.0.0.1:0\"\n[outbound]\nmax_concurrency = 10\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let smtp: std::net::SocketAddr = loop {
        let line = lines.next().expect("postern exited").unwrap();
        if let Some(rest) = line.split("smtp on ").nth(1) {
            break rest.split(',').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let base = rss_mib(pid, "VmRSS:");

    let mut idle = Vec::new();
    for _ in 0..1000 {
        let c = TcpStream::connect(smtp).unwrap();
        let mut r = BufReader::new(c);
        assert!(reply(&mut r).starts_with("220"));
        idle.push(r);
    }
    let with_idle = rss_mib(pid, "VmRSS:");
    println!(
        "session_memory: RSS {base:.1} MiB at start, {with_idle:.1} MiB with 1000 idle sessions: {:.1} KiB per idle session",
        (with_idle - base) * 1024.0 / 1000.0
    );
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let before_data = rss_mib(pid, "VmRSS:");
    let line = vec![b'x'; 998];
    let mut sessions = Vec::new();
    for n in 0..20 {
        let c = TcpStream::connect(smtp).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        reply(&mut r);
        for cmd in [
            "EHLO bench.example".to_string(),
            "MAIL FROM:<s@bench.example>".into(),
            format!("RCPT TO:<r{n}@other.example>"),
            "DATA".into(),
        ] {
            w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
            reply(&mut r);
        }
        w.write_all(b"Subject: 10 MB\r\n\r\n").unwrap();
        for _ in 0..10_000 {
            w.write_all(&line).unwrap();
            w.write_all(b"\r\n").unwrap();
        }
        sessions.push((r, w));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let in_data = rss_mib(pid, "VmRSS:");
    for (_, w) in sessions.iter_mut() {
        w.write_all(b".\r\n").unwrap();
    }
    for (r, _) in sessions.iter_mut() {
        assert!(reply(r).starts_with("250"));
    }
    let hwm = rss_mib(pid, "VmHWM:");
    println!(
        "session_memory: 20 sessions in DATA with 10 MB each: RSS {in_data:.1} MiB ({:.1} MiB per session); peak {hwm:.1} MiB once all 20 were committed ({:.1} MiB per session at the peak)",
        (in_data - before_data) / 20.0,
        (hwm - before_data) / 20.0
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    let mut sink = String::new();
    let _ = std::io::stdin().take(0).read_to_string(&mut sink);
    let _ = std::fs::remove_dir_all(&dir);
}
