//! Issue 28, items 1 and 5, in Chromium against the real binary: a message rule without a
//! condition is refused unless "every recipient" is chosen, and then applied only once the
//! admin has seen what it reaches in the delivery records (recipient domains of the last 30
//! days, and those delivered without TLS); every delete (certificate, rule, rule data list,
//! SMTP AUTH user) asks first and says what depends on the thing, refusing while something
//! uses it. And the API: a rule without a condition or `every_recipient` is a 400 naming the
//! field, a list a rule uses cannot be deleted.

mod common;

use std::time::Duration;

use common::browser::*;
use common::process::spawn_postern;
use common::sink::{Sink, SinkOptions};
use fantoccini::{Client, Locator};
use hyper::{Method, StatusCode};
use serde_json::json;

/// What `css` shows has no settings path such as `rules[0].every_recipient`: it says the
/// field in the admin's words.
async fn no_settings_path(c: &Client, css: &str) {
    let text = text_of(c, css).await;
    let b = text.as_bytes();
    for i in 0..b.len().saturating_sub(3) {
        if b[i] == b'[' && b[i + 1].is_ascii_digit() {
            let close = b[i + 1..]
                .iter()
                .position(|&x| !x.is_ascii_digit())
                .unwrap()
                + i
                + 1;
            assert!(
                !(b[close] == b']' && b.get(close + 1) == Some(&b'.')),
                "{css} shows a settings path: {text}"
            );
        }
    }
}

#[tokio::test]
async fn the_api_refuses_a_rule_without_a_condition_unless_every_recipient_is_chosen() {
    let s = common::TestServer::start().await;
    let conditionless = json!({"name": "all", "direction": "outbound", "tls_level": "require"});
    let (status, e) = s
        .api_json(Method::POST, "/api/v1/rules", Some(&conditionless))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["field"], "rules[0].every_recipient", "{e}");
    let said = e["error"].as_str().unwrap();
    assert!(
        said.contains("rule \"all\" has no condition, so it would apply to every recipient")
            && said.contains("or set every_recipient to true"),
        "{said}"
    );
    assert_eq!(s.get_settings().await["rules"], json!([]), "nothing saved");

    let mut chosen = conditionless.clone();
    chosen["every_recipient"] = json!(true);
    let (status, rules) = s
        .api_json(Method::POST, "/api/v1/rules", Some(&chosen))
        .await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    assert_eq!(rules[0]["every_recipient"], true);

    // A list a rule uses cannot go: 409 naming the rule and its condition.
    let (status, _) = s
        .api_json(
            Method::POST,
            "/api/v1/rule-data",
            Some(&json!({"name": "partners", "domains": ["partner.example"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rule = json!({"name": "partners", "recipient_matches": "partners", "tls_level": "require"});
    let (status, e) = s.api_json(Method::POST, "/api/v1/rules", Some(&rule)).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (status, e) = s
        .api_json(Method::DELETE, "/api/v1/rule-data/partners", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert_eq!(
        e["error"],
        "rule data list \"partners\" is in use by rule \"partners\" (recipient matches): change or delete it first"
    );
    assert_eq!(s.get_settings().await["rule_data"][0]["name"], "partners");
    s.stop().await;
}

/// Messages to a domain whose host offers STARTTLS and to one whose host does not, through
/// the real binary; the rule for every outbound recipient is refused without the box ticked,
/// and with it, shows 2 domains, 1 of them without TLS, before it is saved.
#[tokio::test]
async fn a_rule_without_a_condition_asks_with_what_it_reaches_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let mut tls_sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let mut plain_sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound.routes]\n\"tls.example\" = \"[127.0.0.1]:{}\"\n\"plain.example\" = \"[127.0.0.1]:{}\"\n",
            tls_sink.addr.port(),
            plain_sink.addr.port()
        ),
    );
    for rcpt in ["ceo@tls.example", "ceo@plain.example"] {
        let mut smtp = common::SmtpClient::connect(proc.smtp, None, None).await;
        smtp.cmd("HELO client.test.example").await;
        let r = smtp
            .send("app@inside.example", &[rcpt], &common::message("t", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert!(tls_sink.next(20).await.expect("delivered").tls);
    assert!(!plain_sink.next(20).await.expect("delivered").tls);

    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;
    // The records are written by a thread of their own: the dashboard counts both first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(&format!("{base}/")).await.unwrap();
        let html = c.source().await.unwrap();
        if html.contains("plain.example") && html.contains("tls.example") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    c.goto(&format!("{base}/rules")).await.unwrap();
    arrived(&c, "#rule_name").await;
    // The lists come before the rule form that chooses them, and an empty choice says so.
    let lists_first = c
        .execute(
            "return !!(document.getElementById('lists').compareDocumentPosition(document.getElementById('rule-form')) & Node.DOCUMENT_POSITION_FOLLOWING);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(lists_first, json!(true));
    assert!(
        text_of(&c, "form[action^='/rules/save'] .hint")
            .await
            .contains("There are no lists to choose yet: make one under Rule data above.")
    );
    check_page(&c, "rules-first-visit").await;

    // No condition and the box not ticked: refused, in the page's words; nothing saved.
    fill(&c, "rule_name", "require everyone").await;
    choose(&c, "tls_level", "require").await;
    submit_form(&c, "form[action^='/rules/save']").await;
    arrived(&c, "#rule-error").await;
    assert_eq!(
        text_of(&c, "#rule-error").await,
        "A rule needs a condition: choose a list for at least one of the four conditions, or tick “No condition: every recipient” to apply it to all mail of its direction (you are shown what that reaches before it is saved)."
    );
    no_settings_path(&c, "main").await;
    assert_eq!(
        text_of(&c, "#no-rules").await,
        "No rules: every recipient follows the policy table and the outbound mode."
    );
    check_page_at(&c, "rules-no-condition", Some("rule-error")).await;

    // Ticked: the confirmation with the delivery records' figures, still nothing saved.
    c.find(Locator::Id("every_recipient"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    check_page_at(&c, "rules-every-recipient-ticked", Some("every_recipient")).await;
    submit_form(&c, "form[action^='/rules/save']").await;
    arrived(&c, "#confirm-every").await;
    assert_eq!(
        text_of(&c, "h1").await,
        "Apply “require everyone” to every outbound recipient?"
    );
    assert_eq!(
        text_of(&c, "p.reach").await,
        "In the last 30 days, mail went to 2 outbound recipient domain(s); 1 of them took some of it without TLS: with this rule, their mail stops until they offer TLS."
    );
    assert_eq!(text_of(&c, "ul.examples").await, "plain.example");
    let export = || String::from_utf8_lossy(&proc.cli(&["settings", "export"]).stdout).into_owned();
    assert!(!export().contains("require everyone"), "not saved yet");
    check_page(&c, "rules-every-recipient-confirm").await;

    click(&c, "#confirm-every").await;
    arrived(&c, "p.ok").await;
    assert_eq!(
        text_of(&c, "p.ok").await,
        "Saved rule \"require everyone\" and applied: it counts for mail received from now on."
    );
    assert_eq!(
        text_of(&c, "ol.rules li:first-child p").await,
        "require everyone · outbound · every recipient → x-TLSLevel: Require"
    );
    assert!(export().contains("every_recipient = true"));
    c.close().await.unwrap();
    assert!(proc.stop().await);
}

/// Certificate, rule, list and SMTP AUTH user: each Delete leads to a question that says
/// what depends on the thing; a bound certificate and a list in use cannot be deleted.
#[tokio::test]
async fn every_delete_asks_and_says_what_depends_on_it_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;

    // Two certificates, one bound as a relay domain's client certificate.
    for name in ["relay-client", "spare"] {
        let (cert, key, _) = self_signed("mx.test.example");
        c.goto(&format!("{base}/certificates")).await.unwrap();
        arrived(&c, "#cert").await;
        fill(&c, "name", name).await;
        fill(&c, "cert", &cert).await;
        fill(&c, "key", &key).await;
        submit_form(&c, "form.wide").await;
        arrived(&c, "p.ok").await;
    }
    c.goto(&format!("{base}/relay")).await.unwrap();
    arrived(&c, "#domain").await;
    fill(&c, "domain", "smarthost.example").await;
    fill(&c, "client_certificate", "relay-client").await;
    submit_form(&c, "form[action^='/relay/save']").await;
    arrived(&c, "p.ok").await;

    c.goto(&format!("{base}/certificates")).await.unwrap();
    click(&c, "[aria-label='Delete relay-client']").await;
    arrived(&c, "#confirm").await;
    let said = text_of(&c, "#confirm").await;
    assert!(
        said.starts_with("relay-client (")
            && said.contains(") cannot be deleted: it is in use.")
            && said.contains("client certificate for relay domain smarthost.example: change it"),
        "{said}"
    );
    assert!(
        c.find(Locator::Css("#confirm button")).await.is_err(),
        "no delete offered while bound"
    );
    no_settings_path(&c, "#confirm").await;
    check_page_at(&c, "certificates-delete-bound", Some("confirm")).await;

    c.goto(&format!("{base}/certificates")).await.unwrap();
    click(&c, "[aria-label='Delete spare']").await;
    arrived(&c, "#confirm").await;
    assert!(text_of(&c, "#confirm").await.contains("Nothing uses it."));
    check_page_at(&c, "certificates-delete-confirm", Some("confirm")).await;
    click(&c, "#confirm button.danger").await;
    arrived(&c, "p.ok").await;
    assert_eq!(text_of(&c, "p.ok").await, "Deleted spare.");

    // A list and a rule that uses it.
    c.goto(&format!("{base}/rules")).await.unwrap();
    arrived(&c, "#list_name").await;
    fill(&c, "list_name", "partners").await;
    fill(&c, "list_domains", "partner.example\n").await;
    submit_form(&c, "#lists > form:last-of-type").await;
    arrived(&c, "p.ok").await;
    fill(&c, "rule_name", "require partners").await;
    choose(&c, "recipient_matches", "partners").await;
    submit_form(&c, "form[action^='/rules/save']").await;
    arrived(&c, "p.ok").await;
    assert!(
        text_of(&c, "details.list summary")
            .await
            .contains("used by require partners")
    );

    c.find(Locator::Css("details.list summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(&c, "[aria-label='Delete list partners']").await;
    arrived(&c, "#confirm").await;
    assert_eq!(
        text_of(&c, "#confirm ul.uses").await,
        "require partners (recipient matches partners)"
    );
    assert!(c.find(Locator::Css("#confirm button")).await.is_err());
    check_page_at(&c, "rules-delete-list-in-use", Some("confirm")).await;

    click(&c, "[aria-label='Delete require partners']").await;
    arrived(&c, "#confirm").await;
    assert!(
        text_of(&c, "#confirm p")
            .await
            .starts_with("Delete the rule require partners (outbound · recipient matches partners → x-TLSLevel: Require)?")
    );
    check_page_at(&c, "rules-delete-rule", Some("confirm")).await;
    click(&c, "#confirm button.danger").await;
    arrived(&c, "p.ok").await;
    assert_eq!(
        text_of(&c, "p.ok").await,
        "Deleted rule \"require partners\"."
    );

    c.goto(&format!("{base}/rules?delete_list=partners"))
        .await
        .unwrap();
    arrived(&c, "#confirm").await;
    assert!(
        text_of(&c, "#confirm")
            .await
            .contains("Delete the list partners (1 domain)? No rule uses it.")
    );
    click(&c, "#confirm button.danger").await;
    arrived(&c, "p.ok").await;
    assert_eq!(text_of(&c, "p.ok").await, "Deleted list \"partners\".");

    // An SMTP AUTH user.
    c.goto(&format!("{base}/relay")).await.unwrap();
    arrived(&c, "#new_username").await;
    fill(&c, "new_username", "app1").await;
    fill(&c, "new_password", "long-enough-1").await;
    submit_form(&c, "form[action^='/relay/users']:last-of-type").await;
    arrived(&c, "p.ok").await;
    click(&c, "[aria-label='Delete app1']").await;
    arrived(&c, "#confirm-user").await;
    assert!(text_of(&c, "#confirm-user").await.starts_with(
        "Delete the SMTP AUTH user app1? Clients that sign in as app1 are refused (535 5.7.8)"
    ));
    check_page_at(&c, "relay-delete-user", Some("confirm-user")).await;
    click(&c, "#confirm-user button.danger").await;
    arrived(&c, "p.ok").await;
    assert_eq!(text_of(&c, "p.ok").await, "Deleted app1.");
    assert_eq!(text_of(&c, "ul.users").await, "None.");
    c.close().await.unwrap();
    assert!(proc.stop().await);
}
