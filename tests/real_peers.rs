//! Real peers: swaks (the tool admins use) sends through STARTTLS; openssl s_client sees the
//! certificate we serve. Both are installed by .ci/run; on a machine without them the test
//! says so and passes only outside CI.

mod common;

use common::*;

#[tokio::test]
async fn swaks_sends_over_starttls() {
    if !have("swaks") {
        return;
    }
    let server = TestServer::start().await;
    let out = tokio::process::Command::new("swaks")
        .args(["--server", &server.smtp.to_string(), "--tls"])
        .args([
            "--from",
            "admin@client.test.example",
            "--to",
            "partner@other.example",
        ])
        .args(["--header", "Subject: swaks through postern"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        transcript.contains("<-  220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    assert!(
        transcript.contains("=== TLS started with cipher TLSv1.3:"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<~  250 2.0.0 Ok: queued as "),
        "{transcript}"
    );
    let (spool, _dir) = server.stop().await;
    let stored = spooled(&spool);
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].1);
    assert!(text.contains("Subject: swaks through postern"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher"), "{text}");
}

#[tokio::test]
async fn openssl_s_client_sees_the_served_certificate() {
    if !have("openssl") {
        return;
    }
    let server = TestServer::start().await;
    let text = s_client_starttls(server.smtp, &["-servername", "mx.test.example"]).await;
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
    assert!(
        text.contains("CN = mx.test.example") || text.contains("CN=mx.test.example"),
        "{text}"
    );
}
