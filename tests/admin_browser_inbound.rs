//! Issue 31, acceptance 4, in Chromium against the real binary: with 30 days of received
//! records in the store (`common::inbound_fixture`, written through the store's own API
//! before the binary starts), an admin finds Inbound TLS in the menu, adds
//! `partner.example encrypt`, and before anything is saved sees how much mail from
//! partner.example arrived, how much the row would have refused, and the latest of it;
//! confirms; tightens it to verify (an error under the names field first, then the new
//! figures); asks Explain which row decides; deletes the row after the question. Every page
//! is checked (no sideways scrolling, every field labelled, screenshots).

mod common;

use common::browser::*;
use common::inbound_fixture::{self, partner_plaintext};
use common::process::spawn_postern;
use fantoccini::{Client, Locator};

fn chromium() -> bool {
    common::have("chromium") && common::have("chromedriver")
}

/// The rows of the table `css` (its body).
async fn rows(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for row in c
        .find_all(Locator::Css(&format!("{css} tbody tr")))
        .await
        .unwrap()
    {
        out.push(row.text().await.unwrap());
    }
    out
}

#[tokio::test]
async fn adding_partner_example_encrypt_shows_its_impact_before_it_is_saved() {
    if !chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    inbound_fixture::write(&dir.path().join("data"), postern::fsutil::unix_now());
    let proc = spawn_postern(dir.path(), None, "");
    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;

    // From the menu, where the other TLS pages are.
    click(&c, "nav a[href='/inbound-tls']").await;
    arrived(&c, "#pattern").await;
    check_page(&c, "inbound-tls-empty").await;
    fill(&c, "pattern", "partner.example").await;
    choose(&c, "level", "encrypt").await;
    add_row(&c).await;

    // The impact, nothing saved yet.
    arrived(&c, "#impact-figures").await;
    assert!(
        text_of(&c, "#question")
            .await
            .contains("Nothing is saved yet")
    );
    assert_eq!(text_of(&c, "#arrived").await, "60 messages");
    assert_eq!(text_of(&c, "#refused").await, "15 messages");
    assert_eq!(
        text_of(&c, "#reasons").await,
        "15 messages without TLS (plaintext)"
    );
    let latest = rows(&c, "#latest").await;
    assert_eq!(latest.len(), 10, "{latest:?}");
    for (row, id) in latest.iter().zip(partner_plaintext()) {
        assert!(row.contains(&id), "newest first: {row} should be {id}");
        assert!(
            row.contains("450 4.7.1 Session encryption is required"),
            "{row}"
        );
        assert!(row.contains("none: plaintext"), "{row}");
    }
    assert!(
        latest[0].contains("unknown[192.0.2.10]") && latest[0].contains("user0@partner.example")
    );
    let receipt = c
        .find(Locator::Css("#latest tbody tr a"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    check_page_at(&c, "inbound-tls-impact", Some("impact")).await;
    check_page_at(&c, "inbound-tls-impact-latest", Some("latest")).await;
    let export = String::from_utf8_lossy(&proc.cli(&["settings", "export"]).stdout).into_owned();
    assert!(
        !export.contains("partner.example"),
        "saved before the confirmation"
    );

    click(&c, "#confirm-row").await;
    arrived(&c, "#rows").await;
    assert!(
        text_of(&c, "p.ok")
            .await
            .contains("Added the row for partner.example")
    );
    let table = rows(&c, "#rows").await;
    assert_eq!(table.len(), 1);
    assert!(table[0].contains("senders at partner.example") && table[0].contains("encrypt"));
    check_page(&c, "inbound-tls-added").await;

    // Tighten it to verify: the names are asked for under their field, then the figures.
    click(&c, "a[aria-label='Edit partner.example']").await;
    arrived(&c, "input[name=original]").await;
    choose(&c, "level", "verify").await;
    add_row(&c).await;
    arrived(&c, "p.field-error").await;
    let under = c
        .execute(
            "return document.getElementById('match_names').nextElementSibling.textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        under
            .as_str()
            .unwrap()
            .contains("required for level verify"),
        "{under}"
    );
    check_page_at(&c, "inbound-tls-names-required", Some("match_names")).await;
    fill(&c, "match_names", "mx.partner.example").await;
    add_row(&c).await;
    arrived(&c, "#impact-figures").await;
    assert_eq!(text_of(&c, "#refused").await, "45 messages");
    let reasons = text_of(&c, "#reasons").await;
    assert!(
        reasons.contains("15 messages over TLS without a client certificate")
            && reasons.contains(
                "15 messages with a client certificate that is not verified or not for the names"
            ),
        "{reasons}"
    );
    assert!(
        rows(&c, "#latest").await[2]
            .contains("certificate is not valid for mx.partner.example (it names other.example)")
    );
    check_page_at(&c, "inbound-tls-impact-verify", Some("impact")).await;
    // Changing it brings the form back as typed; nothing was saved.
    click(&c, "#change-row").await;
    arrived(&c, "#match_names").await;
    let kept = c
        .find(Locator::Id("match_names"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("mx.partner.example"));
    assert!(rows(&c, "#rows").await[0].contains("encrypt"));

    // Explain: which row decides for a sender and client.
    fill(&c, "explain_sender", "ceo@partner.example").await;
    fill(&c, "explain_client", "192.0.2.10").await;
    click(&c, "#explain-button").await;
    arrived(&c, "#explanation").await;
    let decides = text_of(&c, "#explanation li.decides").await;
    assert_eq!(
        decides,
        "sender row partner.example names sender domain partner.example: encrypt (decides)"
    );
    check_page_at(&c, "inbound-tls-explain", Some("explanation")).await;

    // A client that is no address is said under its field.
    fill(&c, "explain_client", "mx.partner.example").await;
    click(&c, "#explain-button").await;
    let under = c
        .execute(
            "return document.getElementById('explain_client').nextElementSibling.textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        under.as_str().unwrap().contains("is not an IP address"),
        "{under}"
    );

    // Delete asks first.
    click(&c, "a[aria-label='Delete partner.example']").await;
    arrived(&c, "#delete-question").await;
    assert!(
        text_of(&c, "#delete-question")
            .await
            .contains("Delete the row for partner.example")
    );
    check_page_at(&c, "inbound-tls-delete", Some("delete-question")).await;
    click(&c, "#confirm-delete").await;
    arrived(&c, "p.ok").await;
    assert!(text_of(&c, "p.count").await.starts_with("No rows"));

    // A refused message's queue ID leads to its receipt on the Logs page.
    c.goto(&format!("{base}{receipt}")).await.unwrap();
    arrived(&c, "table.logs").await;
    let found = text_of(&c, "table.logs tbody").await;
    assert!(
        found.contains("P000") && found.contains("user0@partner.example"),
        "{found}"
    );
    assert!(proc.stop().await);
}
