//! Password guessing over SMTP AUTH: each failure is answered later than the last, and past
//! the limit the client is locked out (even the right password gets 454) until the lockout
//! ends; then the right password works.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;

#[tokio::test]
async fn a_locked_out_client_waits_then_the_right_password_works() {
    let server = TestServer::start_with(
        "[smtp]\nauth_failure_limit = 3\nauth_lockout_secs = 2\nauth_failure_delay_ms = 100\n",
    )
    .await;
    server
        .set(serde_json::json!({
            "smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}],
        }))
        .await;
    let mut c = server.connect().await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    let wrong = STANDARD.encode("\0alice\0wrong");
    let right = STANDARD.encode("\0alice\0correct horse battery");
    for _ in 0..3 {
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {wrong}")).await.first(),
            "535 5.7.8 Error: authentication failed"
        );
    }
    let locked =
        "454 4.7.0 Temporary authentication failure: too many failed attempts, try again later";
    assert_eq!(c.cmd(&format!("AUTH PLAIN {right}")).await.first(), locked);
    // Another session from the same address is locked out too.
    let mut other = server.connect().await;
    other.ehlo().await;
    other.starttls().await;
    other.ehlo().await;
    assert_eq!(
        other.cmd(&format!("AUTH PLAIN {right}")).await.first(),
        locked
    );
    // The configured lockout passes; then the right password is accepted.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {right}")).await.code, 235);
}
