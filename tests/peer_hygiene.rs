//! What real peers and the public SMTP-smuggling scanners see (issue 35): NUL in message
//! content refused in DATA and BDAT and never relayed.

mod common;

use common::sink::{Sink, SinkOptions};
use common::*;

const SENDER: &str = "app@inside.example";

async fn relay_to(sink: &Sink) -> TestServer {
    let port = sink.addr.port();
    TestServer::start_with(&format!(
        "[outbound]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await
}

/// The scanners' probes: `<CR><LF><NUL>.<CR><LF>` (a receiver that drops NULs would end the
/// data there and read a second, smuggled message) and a NUL inside a line.
const NUL_BODIES: [&[u8]; 2] = [
    b"Subject: a\r\n\r\nhello\r\n\x00.\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@other.example>\r\nDATA\r\n\r\nsmuggled\r\n",
    b"Subject: a\r\n\r\nhel\x00lo\r\n",
];

const REFUSED: &str = "550 5.6.0 Error: message contains NUL characters (RFC 5322 section 2.3)";

#[tokio::test]
async fn nul_is_refused_in_data_and_bdat_and_never_relayed() {
    let mut sink = Sink::start(SinkOptions::default()).await;
    let server = relay_to(&sink).await;
    for body in NUL_BODIES {
        let mut c = server.connect().await;
        c.ehlo().await;
        let r = c.send(SENDER, &["r@other.example"], body).await;
        assert_eq!(r.first(), REFUSED, "DATA {body:?}");
        // The session goes on: a clean message in the same session is taken.
        let r = c
            .send(SENDER, &["r@other.example"], &message("after DATA", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");

        c.cmd(&format!("MAIL FROM:<{SENDER}>")).await;
        c.cmd("RCPT TO:<r@other.example>").await;
        c.write(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
            .await;
        c.write(body).await;
        assert_eq!(c.read().await.first(), REFUSED, "BDAT {body:?}");
        let r = c
            .send(SENDER, &["r@other.example"], &message("after BDAT", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    // Exactly the four clean messages arrive; nothing with a NUL, nothing smuggled.
    for n in 0..4 {
        let got = sink.next(20).await.unwrap_or_else(|| panic!("message {n}"));
        assert!(!got.data.contains(&0), "a NUL was relayed: {got:?}");
        assert_eq!(got.recipients, ["r@other.example"]);
        assert!(!String::from_utf8_lossy(&got.data).contains("smuggled"));
    }
    assert!(
        sink.next(2).await.is_none(),
        "more than the clean messages arrived"
    );
}
