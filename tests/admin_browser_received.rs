//! Issue 31 in Chromium, against the real binary: the Logs page's Received view. Messages
//! from a partner in plaintext and over TLS and one from a trusted network are listed with
//! their client, trust and TLS; the partner's plaintext mail is found by its `.domain` with
//! "Plaintext only" ticked (the question to ask before requiring TLS of it); a queue ID leads
//! to its deliveries and back; a client that is no address is refused under its field; the
//! dashboard shows the share received over TLS per sender domain.

mod common;

use common::browser::*;
use common::process::spawn_postern;
use common::sink::{Sink, SinkOptions};
use fantoccini::{Client, Locator};

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Search the Received view with `fields` (id, text) filled in, the others emptied, and
/// "Plaintext only" as `plaintext` says.
async fn search(c: &Client, fields: &[(&str, &str)], plaintext: bool) {
    for id in ["sender", "client", "queue_id"] {
        let text = fields.iter().find(|(f, _)| *f == id).map_or("", |(_, t)| t);
        fill(c, id, text).await;
    }
    let ticked = c
        .find(Locator::Id("plaintext"))
        .await
        .unwrap()
        .is_selected()
        .await
        .unwrap();
    if ticked != plaintext {
        c.find(Locator::Id("plaintext"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    submit_form(c, "form.grid").await;
    arrived(c, "#results").await;
}

/// Three messages: the partner's in plaintext and over TLS (from 127.0.0.2), and one from
/// the trusted network to the outside. Their queue IDs, in that order.
async fn send(
    smtp: std::net::SocketAddr,
    cert: rustls_pki_types::CertificateDer<'static>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let from = Some("127.0.0.2".parse().unwrap());
    let mut c = common::SmtpClient::connect(smtp, from, Some(cert.clone())).await;
    c.cmd("EHLO mx1.partner.example").await;
    let r = c
        .send(
            "billing@partner.example",
            &["ap@ours.example"],
            &common::message("plain", ""),
        )
        .await;
    ids.push(common::queue_id(&r));
    // Not for a relay domain: refused at RCPT, counted on the dashboard.
    assert_eq!(c.cmd("MAIL FROM:<billing@partner.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.example>").await.code, 554);
    let mut c = common::SmtpClient::connect(smtp, from, Some(cert.clone())).await;
    c.cmd("EHLO mx2.eu.partner.example").await;
    c.starttls().await;
    c.cmd("EHLO mx2.eu.partner.example").await;
    let r = c
        .send(
            "ceo@eu.partner.example",
            &["ap@ours.example"],
            &common::message("tls", ""),
        )
        .await;
    ids.push(common::queue_id(&r));
    let mut c = common::SmtpClient::connect(smtp, None, Some(cert)).await;
    c.cmd("EHLO app.inside.example").await;
    let r = c
        .send(
            "app@inside.example",
            &["bob@outside.example"],
            &common::message("out", ""),
        )
        .await;
    ids.push(common::queue_id(&r));
    ids
}

#[tokio::test]
async fn the_received_view_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let mut sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = sink.addr.port();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!("[outbound.routes]\n\"outside.example\" = \"[127.0.0.1]:{port}\"\n"),
    );
    proc.import_settings(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[[relay_domains]]\ndomain = \"ours.example\"\ntransport = \"[127.0.0.1]:{port}\"\n"
    ));
    let pem = std::fs::read(dir.path().join("data/tls/system.crt")).unwrap();
    let cert = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let ids = send(proc.smtp, cert).await;
    for _ in 0..3 {
        sink.next(20).await.expect("delivered");
    }
    log_line(&proc, "to=<bob@outside.example>").await;

    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;

    // The dashboard: received mail per sender domain, with its share over TLS.
    let start = std::time::Instant::now();
    while count(&c, "#received-by-sender + p + div tbody tr").await < 3 {
        assert!(
            start.elapsed().as_secs() < 10,
            "the dashboard never showed the senders"
        );
        c.refresh().await.unwrap();
        arrived(&c, "figure.chart").await;
    }
    let mut rows = Vec::new();
    for tr in c
        .find_all(Locator::Css("#received-by-sender + p + div tbody tr"))
        .await
        .unwrap()
    {
        let cells: Vec<String> = tr
            .text()
            .await
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        rows.push(cells.join(" "));
    }
    for want in [
        "eu.partner.example 1 100 %",
        "partner.example 1 0 %",
        "inside.example 1 0 %",
    ] {
        assert!(rows.iter().any(|r| r == want), "{want}: {rows:?}");
    }
    check_page_at(
        &c,
        "dashboard-received-by-sender",
        Some("received-by-sender"),
    )
    .await;

    // Nothing asked: the newest received, each with its lines.
    c.goto(&format!("{base}/logs")).await.unwrap();
    arrived(&c, "#results").await;
    click(&c, "nav.views a[href='/logs/received']").await;
    assert_eq!(text_of(&c, "#results").await, "Newest received");
    assert_eq!(count(&c, "pre.lines").await, 3);
    let first = text_of(&c, "table.logs tbody tr").await;
    assert!(
        first.contains("trusted network") && first.contains("unknown[127.0.0.1]"),
        "{first}"
    );
    check_page(&c, "logs-received-newest").await;

    // The partner's plaintext mail: its .domain with "Plaintext only".
    search(&c, &[("sender", ".partner.example")], true).await;
    assert_eq!(count(&c, "pre.lines").await, 1);
    let row = text_of(&c, "table.logs tbody tr").await;
    assert!(
        row.contains(&ids[0]) && row.contains("billing@partner.example") && row.contains("none"),
        "{row}"
    );
    check_page(&c, "logs-received-plaintext").await;
    search(&c, &[("sender", ".partner.example")], false).await;
    assert_eq!(count(&c, "pre.lines").await, 2);
    let lines = text_of(&c, "pre.lines").await;
    assert!(
        lines.starts_with(
            "postern/smtpd: Anonymous TLS connection established from unknown[127.0.0.2]: TLSv1.3"
        ),
        "{lines}"
    );

    // A queue ID leads to its deliveries, and back to its receipt.
    search(&c, &[("queue_id", &ids[2])], false).await;
    click(&c, "table.logs tbody td[data-label='Queue ID'] a").await;
    arrived(&c, "#results").await;
    let delivery = text_of(&c, "pre.lines").await;
    assert!(
        delivery.contains(&format!("{}: to=<bob@outside.example>", ids[2])),
        "{delivery}"
    );
    click(&c, "table.logs tbody td[data-label='Queue ID'] a").await;
    arrived(&c, "#results").await;
    assert_eq!(count(&c, "pre.lines").await, 1);
    assert!(
        text_of(&c, "pre.lines")
            .await
            .contains("from=<app@inside.example>")
    );
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/logs/received",
        "back on the Received view"
    );

    // A client that is no address is refused under its field; nothing is searched.
    search(&c, &[("client", "partner.example")], false).await;
    assert_eq!(
        text_of(&c, "#client + .field-error").await,
        "\"partner.example\" is not an IP address or a network"
    );
    assert_eq!(
        text_of(&c, "#results + p").await,
        "Not searched: see the message under the field."
    );
    check_page(&c, "logs-received-client-error").await;
    assert!(proc.stop().await);
}
