//! Issue 28 in Chromium, against the real binary: the seeds' own workflow (Hermes' "TLS
//! Encryption Policies") on the Logs and TLS Policy Domains pages — a test message to a
//! sink offering STARTTLS, its delivery line found by recipient domain, `Host offered
//! STARTTLS: [host]` found by the text search, the domain added as a policy row and Tested;
//! the Test of a row already in the table, in words that say it was a probe; and the
//! Microsoft 365 checklist refusing a private CA's certificate and a single-label host name.

mod common;

use common::browser::*;
use common::process::{Keys, spawn_postern, spawn_postern_with};
use common::sink::{Sink, SinkOptions, TestCa};
use fantoccini::{Client, Locator};

/// No page shows a settings path such as `policy[0].pattern` (the API and the CLI keep
/// them; an admin on the page has no document to find it in).
async fn no_settings_path(c: &Client, page: &str) {
    let found = c
        .execute(
            "return (document.body.innerText.match(/[A-Za-z_]+\\[\\d+\\]\\.[A-Za-z_]+/) || [''])[0];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, serde_json::json!(""), "{page} shows a settings path");
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Search the Logs page with `fields` (id, text) filled in and the others emptied.
async fn search_logs(c: &Client, fields: &[(&str, &str)]) {
    for id in ["recipient", "sender", "queue_id", "host", "text"] {
        let text = fields.iter().find(|(f, _)| *f == id).map_or("", |(_, t)| t);
        fill(c, id, text).await;
    }
    submit_form(c, "form.grid").await;
    arrived(c, "#results").await;
}

#[tokio::test]
async fn the_seeds_workflow_on_the_logs_and_policy_pages_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let mut tls_sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut plain_sink =
        Sink::start_on("127.0.0.2:0".parse().unwrap(), SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // No nameservers: the routes are the only next hops (and the Test of another domain
    // says how to configure DNS).
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound.routes]\n\"partner.example\" = \"[127.0.0.1]:{}\"\n\"other.example\" = \"[127.0.0.2]:{}\"\n",
            tls_sink.addr.port(),
            plain_sink.addr.port()
        ),
    );
    // The test messages.
    let mut smtp = common::SmtpClient::connect(proc.smtp, None, None).await;
    smtp.cmd("HELO client.test.example").await;
    for rcpt in ["ceo@partner.example", "bob@other.example"] {
        let r = smtp
            .send("app@inside.example", &[rcpt], &common::message("test", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert!(tls_sink.next(20).await.expect("delivered to partner").tls);
    assert!(!plain_sink.next(20).await.expect("delivered to other").tls);
    let sent = log_line(&proc, "to=<ceo@partner.example>").await;
    assert!(sent.contains("status=sent"), "{sent}");
    log_line(&proc, "to=<bob@other.example>").await;

    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;

    // Nothing asked: the newest records, each with its Postfix lines.
    c.goto(&format!("{base}/logs")).await.unwrap();
    arrived(&c, "#results").await;
    assert_eq!(text_of(&c, "#results").await, "Newest records");
    // Both records are stored by the time the page is asked (the store follows the log).
    let start = std::time::Instant::now();
    while count(&c, "pre.lines").await < 2 {
        assert!(start.elapsed().as_secs() < 10, "the records never showed");
        c.refresh().await.unwrap();
        arrived(&c, "#results").await;
    }
    check_page(&c, "logs-newest").await;
    no_settings_path(&c, "logs").await;

    // Step 1 of the workflow: the delivery line, found by the recipient's domain.
    for domain in ["partner.example", ".partner.example"] {
        search_logs(&c, &[("recipient", domain)]).await;
        assert_eq!(count(&c, "pre.lines").await, 1, "{domain}");
        let lines = text_of(&c, "pre.lines").await;
        assert!(
            lines.contains("to=<ceo@partner.example>, relay=127.0.0.1[127.0.0.1]:")
                && lines.contains("status=sent (250"),
            "{lines}"
        );
    }
    check_page(&c, "logs-recipient-domain").await;

    // Step 2: did the server offer STARTTLS? The text search reads the lines.
    search_logs(&c, &[("text", "Host offered STARTTLS: [127.0.0.1]")]).await;
    assert_eq!(count(&c, "pre.lines").await, 1);
    let lines = text_of(&c, "pre.lines").await;
    assert!(
        lines.contains(": Host offered STARTTLS: [127.0.0.1]\n"),
        "{lines}"
    );
    check_page(&c, "logs-host-offered-starttls").await;
    search_logs(&c, &[("text", "Host offered STARTTLS: [127.0.0.2]")]).await;
    assert_eq!(text_of(&c, "p.count").await, "No delivery record matches.");
    // A JSON field name is no text of the record.
    search_logs(&c, &[("text", "unix_time")]).await;
    assert_eq!(text_of(&c, "p.count").await, "No delivery record matches.");
    search_logs(&c, &[("recipient", "partner example")]).await;
    assert_eq!(
        text_of(&c, "#recipient + .field-error").await,
        "\"partner example\" is not an address, a domain or a .domain"
    );
    assert_eq!(
        text_of(&c, "#results + p").await,
        "Not searched: see the message under the field."
    );
    check_page(&c, "logs-recipient-error").await;

    // Step 3: add the domain, from the search by the recipient's address (as the workflow
    // searched first), and Test it first.
    search_logs(&c, &[("recipient", "ceo@partner.example")]).await;
    click(&c, "#policy-row a").await;
    arrived(&c, "#pattern").await;
    let typed = c
        .find(Locator::Id("pattern"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(typed.as_deref(), Some("partner.example"));
    choose(&c, "level", "encrypt").await;
    click(&c, "#test-row").await;
    arrived(&c, "section.test").await;
    let verdict = text_of(&c, "section.test td[data-label='This row']").await;
    assert!(
        verdict.starts_with("passes: the probe got TLSv1.3 with cipher")
            && verdict.ends_with("mail would go over TLS"),
        "{verdict}"
    );
    let test = text_of(&c, "section.test").await;
    assert!(test.contains("No mail was sent"), "{test}");
    assert!(!test.contains("delivered over"), "{test}");
    check_page(&c, "policy-test-probe").await;
    add_row(&c).await;
    arrived(&c, "p.ok").await;
    assert_eq!(
        text_of(&c, "p.ok").await,
        "Added partner.example and applied: the next delivery uses it."
    );

    // The Test of a row in the table tests it (in place of the stored one), not "duplicate".
    fill(&c, "pattern", "partner.example").await;
    choose(&c, "level", "verify").await;
    click(&c, "#test-row").await;
    arrived(&c, "section.test").await;
    assert!(
        c.find(Locator::Css("#pattern + .field-error"))
            .await
            .is_err(),
        "no duplicate-row error"
    );
    assert!(text_of(&c, "#replaces").await.starts_with(
        "The row for partner.example is in the table: this Test used what you typed in its place."
    ),);
    assert!(
        text_of(&c, "section.test h2")
            .await
            .starts_with("Test of partner.example at level verify"),
    );
    let verdict = text_of(&c, "section.test td[data-label='This row']").await;
    assert!(verdict.starts_with("would fail: "), "{verdict}");
    check_page(&c, "policy-test-existing-row").await;
    no_settings_path(&c, "policy").await;

    // Without DNS, the Test says how to configure it.
    fill(&c, "pattern", "nodns.example").await;
    click(&c, "#test-row").await;
    arrived(&c, "p.error#test").await;
    let error = text_of(&c, "p.error#test").await;
    assert!(
        error.starts_with("Not tested: cannot look up nodns.example")
            && error.contains("under [outbound], write nameservers = [\"system\"]")
            && error.contains("Then restart postern"),
        "{error}"
    );
    check_page(&c, "policy-test-no-dns").await;
    no_settings_path(&c, "policy").await;
    c.close().await.unwrap();
    assert!(proc.stop().await);
}

#[tokio::test]
async fn the_m365_checklist_refuses_a_private_ca_and_a_single_label_name_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The private CA is one this gateway trusts (extra_roots): Exchange Online does not.
    let ca = TestCa::new();
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            hostname: Some("vm"),
            ..Keys::default()
        },
        &format!("[tls]\nextra_roots = [\"{}\"]\n", ca_file.display()),
    );
    let leaf = ca.leaf(&["vm"]);
    let (cert, key) = (dir.path().join("vm.crt"), dir.path().join("vm.key"));
    std::fs::write(&cert, postern::certs::check::pem("CERTIFICATE", &leaf.0)).unwrap();
    std::fs::write(&key, postern::certs::check::pem("PRIVATE KEY", &leaf.1)).unwrap();
    let out = proc.cli(&[
        "cert",
        "import",
        "--name",
        "gw",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--chain",
        ca_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proc.import_settings("[inbound]\ntls_mode = \"may\"\ncertificate = \"gw\"\n");

    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;
    c.goto(&format!("{base}/m365")).await.unwrap();
    arrived(&c, "ol.checklist").await;
    let step = text_of(&c, "ol.checklist > li:first-child").await;
    assert!(step.contains("✗ to do"), "{step}");
    assert!(
        step.contains("gw is bound, but Exchange Online would refuse it (2 problems):"),
        "{step}"
    );
    let problems: Vec<String> = {
        let mut out = Vec::new();
        for li in c
            .find_all(Locator::Css("ol.checklist > li:first-child ul.problems li"))
            .await
            .unwrap()
        {
            out.push(li.text().await.unwrap());
        }
        out
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("vm is not a fully qualified host name")
            && problems[0].contains("the config file's [server] hostname"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("gw does not chain to the public trust roots (issued by ")
            && problems[1].contains("postern test CA")
            && problems[1].contains("[tls] extra_roots"),
        "{problems:?}"
    );
    let steps = text_of(&c, "ol.checklist").await;
    assert!(!steps.contains("-SmartHosts \"vm\""), "{steps}");
    assert!(
        steps.contains("-SmartHosts \"<this gateway's full host name>\""),
        "{steps}"
    );
    check_page_at(&c, "m365-refused", Some("checklist")).await;
    no_settings_path(&c, "m365").await;
    c.close().await.unwrap();
    assert!(proc.stop().await);
}
