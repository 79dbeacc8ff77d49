//! 50 clients looping wrong SMTP AUTH passwords inside TLS: password checks run a few at a
//! time, so the process's memory stays under a fixed bound (it once grew by gigabytes). One
//! test in this file: the figure is this process's own RSS.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;

/// Growth of this process's peak RSS allowed during the attack. Each argon2 check takes
/// 8 MiB, kept per password-check thread (one per core); unbounded, 50 at once took 400 MiB.
const BOUND_MIB: f64 = 64.0;

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_in_a_loop_keep_memory_bounded() {
    let server = TestServer::start_with(
        "[smtp]\nauth_failure_limit = 1000000\nauth_failure_delay_ms = 0\nmax_errors = 1000\n",
    )
    .await;
    server
        .set(serde_json::json!({
            "smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}],
        }))
        .await;
    let before = status_mib("VmRSS:");
    let peak_before = status_mib("VmHWM:");
    let clients: Vec<_> = (0..50)
        .map(|n| {
            let (addr, cert) = (server.smtp, server.system_cert());
            tokio::spawn(async move {
                let mut c = SmtpClient::connect(addr, None, Some(cert)).await;
                c.ehlo().await;
                c.starttls().await;
                c.ehlo().await;
                let wrong = STANDARD.encode(format!("\0alice\0guess {n}"));
                for _ in 0..10 {
                    let r = c.cmd(&format!("AUTH PLAIN {wrong}")).await;
                    assert_eq!(r.first(), "535 5.7.8 Error: authentication failed");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let grown = status_mib("VmHWM:") - peak_before.max(before);
    assert!(
        grown < BOUND_MIB,
        "peak RSS grew by {grown:.1} MiB under 500 wrong passwords from 50 clients (bound {BOUND_MIB} MiB)"
    );
    // The right password still works.
    let mut c = server.connect().await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    let right = STANDARD.encode("\0alice\0correct horse battery");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {right}")).await.code, 235);
}
