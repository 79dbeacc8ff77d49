//! Issue 28, the wrong turns of an admin who had only README, in Chromium against the real
//! binary: after a save the page shows its notice (not the empty form); one style of time on
//! the Logs page; the certificate import's notice with what README promises, the emptied key
//! field said, and a way from "not bound" to the binding; selects that fit at 390 px; empty
//! states as sentences; the dashboard's figures without a mouse and its colours as its legend.

mod common;

use common::browser::*;
use common::dns::{Zone, serve};
use common::process::{Proc, spawn_postern};
use common::sink::{Sink, SinkOptions};
use fantoccini::{Client, Locator};
use sha2::Digest;

const MX: &str = "mx.partner.example";

struct Gateway {
    proc: Proc,
    _sink: Sink,
    dir: tempfile::TempDir,
    base: String,
}

/// postern with a DNS server: partner.example's MX offers STARTTLS with a self-signed
/// certificate (encrypted, not verified).
async fn gateway() -> Gateway {
    let sink = Sink::start_on(
        "127.0.0.63:0".parse().unwrap(),
        SinkOptions {
            starttls: true,
            ..SinkOptions::default()
        },
    )
    .await;
    let port = sink.addr.port();
    let dns = serve(
        Zone::default()
            .mx("partner.example", 10, MX)
            .a(MX, "127.0.0.63".parse().unwrap()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!("[outbound]\nport = {port}\nnameservers = [\"{dns}\"]\n"),
    );
    let base = format!("https://{}", proc.api());
    Gateway {
        proc,
        _sink: sink,
        dir,
        base,
    }
}

#[tokio::test]
async fn an_admin_with_only_the_readme_is_not_misled_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let gw = gateway().await;
    let mut smtp = common::SmtpClient::connect(gw.proc.smtp, None, None).await;
    smtp.cmd("HELO client.test.example").await;
    let r = smtp
        .send(
            "billing@inside.example",
            &["ap@partner.example"],
            &common::message("invoice", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let sent = log_line(&gw.proc, "to=<ap@partner.example>").await;
    assert!(sent.contains("status=sent"), "{sent}");

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    first_sign_in(&c, &gw.base, gw.dir.path()).await;
    let base = &gw.base;
    dashboard(&c, base).await;
    logs(&c, base).await;
    policy(&c, base).await;
    relay(&c, base).await;
    rules(&c, base).await;
    certificates(&c, base).await;
    c.close().await.unwrap();
    assert!(gw.proc.stop().await);
}

/// The element `css` is within the window (the admin sees it without scrolling).
async fn in_view(c: &Client, css: &str) -> bool {
    let got = c
        .execute(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();
             return r.top >= 0 && r.bottom <= window.innerHeight;",
            vec![serde_json::json!(css)],
        )
        .await
        .unwrap();
    got == serde_json::json!(true)
}

async fn fragment(c: &Client) -> String {
    c.current_url()
        .await
        .unwrap()
        .fragment()
        .unwrap_or("")
        .to_string()
}

/// The options of the page's selects whose words do not fit the select's box at 390 px
/// (the text as the select's font draws it, against the box less its padding and arrow).
async fn options_cut(c: &Client) -> Vec<String> {
    c.set_window_size(390, 844).await.unwrap();
    let got = c
        .execute(
            "const ctx = document.createElement('canvas').getContext('2d');
             const cut = [];
             for (const s of document.querySelectorAll('main select')) {
               const st = getComputedStyle(s);
               if (st.display === 'none' || s.offsetParent === null) continue;
               ctx.font = st.font;
               const room = s.clientWidth - parseFloat(st.paddingLeft)
                 - parseFloat(st.paddingRight) - 20;
               for (const o of s.options) {
                 if (ctx.measureText(o.text).width > room) cut.push(s.id + ': ' + o.text);
               }
             }
             return cut;",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(got).unwrap()
}

/// The figures of each hour open with a tap; the destinations' TLS share is not painted in
/// the legend's colour for verified (those deliveries were encrypted, not verified).
async fn dashboard(c: &Client, base: &str) {
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    arrived(c, "figure.chart").await;
    c.find(Locator::Css("#hour-by-hour summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let hours = c.find_all(Locator::Css("#hour-by-hour li")).await.unwrap();
    assert_eq!(hours.len(), 24);
    let last = hours[23].text().await.unwrap();
    assert!(
        last.ends_with("UTC: 0 verified, 1 encrypted, 0 plaintext, 0 refused by policy"),
        "the hour shown on a tap: {last:?}"
    );
    let colours = c
        .execute(
            "const share = getComputedStyle(document.querySelector('svg.share rect:last-child')).fill;
             const verified = getComputedStyle(document.querySelector('.legend .verified'), '::before').backgroundColor;
             return [share, verified];",
            vec![],
        )
        .await
        .unwrap();
    let [share, verified]: [String; 2] = serde_json::from_value(colours).unwrap();
    assert_ne!(share, verified, "the TLS share painted as verified");
    check_page_at(c, "dashboard-hour-by-hour", Some("hour-by-hour")).await;
}

/// The STARTTLS answer says its time as the table does.
async fn logs(c: &Client, base: &str) {
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/logs")).await.unwrap();
    arrived(c, "#results").await;
    let start = std::time::Instant::now();
    while c
        .find_all(Locator::Css("td.time"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed().as_secs() < 20, "the record never showed");
        c.refresh().await.unwrap();
        arrived(c, "#results").await;
    }
    let time = text_of(c, "td.time").await;
    fill(c, "starttls_host", MX).await;
    submit_form(c, "form[action='/logs#starttls']").await;
    arrived(c, "#starttls ~ p.ok").await;
    let answer = text_of(c, "#starttls ~ p.ok").await;
    assert_eq!(
        answer,
        format!(
            "{MX}: offered STARTTLS in 1 of 1 deliveries in the last 30 days (last {time} UTC) (its lines)"
        )
    );
    check_page_at(c, "logs-starttls-time", Some("starttls")).await;
}

/// No table header over no rows; an add lands on its notice, a refusal on the form.
async fn policy(c: &Client, base: &str) {
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/policy")).await.unwrap();
    arrived(c, "#pattern").await;
    assert_eq!(text_of(c, "main p.count").await, "No rows.");
    assert!(
        c.find(Locator::Css("main table")).await.is_err(),
        "an empty table"
    );
    check_page(c, "policy-empty").await;
    assert_eq!(options_cut(c).await, Vec::<String>::new());

    c.set_window_size(390, 844).await.unwrap();
    fill(c, "pattern", "not a domain").await;
    add_row(c).await;
    arrived(c, "#pattern + .field-error").await;
    assert_eq!(fragment(c).await, "row-form");
    fill(c, "pattern", "partner.example").await;
    choose(c, "level", "encrypt").await;
    add_row(c).await;
    arrived(c, "p.ok").await;
    assert_eq!(fragment(c).await, "top");
    assert!(in_view(c, "p.ok").await, "the notice scrolled out of view");
    check_page(c, "policy-added").await;
}

/// A relay domain's add lands on its notice.
async fn relay(c: &Client, base: &str) {
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/relay")).await.unwrap();
    arrived(c, "#domain").await;
    fill(c, "domain", "inside.example").await;
    fill(c, "transport", "[127.0.0.1]:2525").await;
    submit_form(c, "form[action^='/relay/save']").await;
    arrived(c, "p.ok").await;
    assert_eq!(fragment(c).await, "top");
    assert!(in_view(c, "p.ok").await, "the notice scrolled out of view");
    check_page(c, "relay-added").await;
}

/// The vertical middle of the text of `css`'s first text, and of the box of `button`.
async fn middles(c: &Client, link: &str, button: &str) -> (f64, f64) {
    let got = c
        .execute(
            "const a = document.querySelector(arguments[0]);
             const r = document.createRange();
             r.selectNodeContents(a);
             const t = r.getBoundingClientRect();
             const b = document.querySelector(arguments[1]).getBoundingClientRect();
             return [(t.top + t.bottom) / 2, (b.top + b.bottom) / 2];",
            vec![serde_json::json!(link), serde_json::json!(button)],
        )
        .await
        .unwrap();
    let [a, b]: [f64; 2] = serde_json::from_value(got).unwrap();
    (a, b)
}

/// No rules said as a sentence, not a numbered item; the Direction select fits; the
/// confirmation's Cancel on its button's line; the TLS page's selects fit.
async fn rules(c: &Client, base: &str) {
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/rules")).await.unwrap();
    arrived(c, "#direction").await;
    assert!(
        c.find(Locator::Css("ol.rules")).await.is_err(),
        "a list of none"
    );
    assert_eq!(
        text_of(c, "p#no-rules").await,
        "No rules: every recipient follows the policy table and the outbound mode."
    );
    assert_eq!(options_cut(c).await, Vec::<String>::new());
    check_page_at(c, "rules-empty", Some("direction")).await;

    fill(c, "rule_name", "try everyone").await;
    choose(c, "tls_level", "try").await;
    c.find(Locator::Id("every_recipient"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit_form(c, "form[action^='/rules/save']").await;
    arrived(c, "#confirm-every").await;
    // At 1280 px both on one line; at 390 px the long button takes the line, Cancel wraps.
    c.set_window_size(1280, 900).await.unwrap();
    let (link, button) = middles(c, "form .buttons a", "#confirm-every").await;
    assert!(
        (link - button).abs() < 3.0,
        "Cancel at {link}, the button at {button}"
    );
    check_page(c, "rules-confirm-every").await;

    c.goto(&format!("{base}/tls")).await.unwrap();
    arrived(c, "#outbound_mta_sts").await;
    assert_eq!(options_cut(c).await, Vec::<String>::new());
    check_page_at(c, "tls-selects", Some("outbound_mta_sts")).await;
}

/// A refused import says the key must be pasted again; the import says the names, the end of
/// validity and the fingerprint; "not bound" leads to where it is bound.
async fn certificates(c: &Client, base: &str) {
    let (cert_pem, key_pem, der) = self_signed("mx.inside.example");
    let (_, other_key, _) = self_signed("other.example");
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/certificates")).await.unwrap();
    arrived(c, "#cert").await;
    fill(c, "name", "mx").await;
    fill(c, "cert", &cert_pem).await;
    fill(c, "key", &other_key).await;
    submit_form(c, "form.wide").await;
    arrived(c, "#key + .field-error").await;
    assert_eq!(
        text_of(c, "#key-again").await,
        "The key is not shown again: paste it again."
    );
    check_page_at(c, "certificates-key-again", Some("key")).await;

    c.set_window_size(1280, 900).await.unwrap();
    fill(c, "key", &key_pem).await;
    submit_form(c, "form.wide").await;
    arrived(c, "p.ok").await;
    let notice = text_of(c, "p.ok").await;
    let sha256: String = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(notice.starts_with("Imported mx ("), "{notice}");
    assert!(
        notice.contains("; names mx.inside.example; valid until "),
        "{notice}"
    );
    assert!(
        notice.ends_with(&format!("; SHA-256 {sha256}).")),
        "{notice}"
    );
    check_page(c, "certificates-imported-facts").await;

    let row = "//tr[td[@data-label='Name'][text()='mx']]/td[@data-label='Used for']";
    let used = c.find(Locator::XPath(row)).await.unwrap();
    assert_eq!(
        used.text().await.unwrap(),
        "not bound: bind it on SMTP TLS Settings"
    );
    mark(c).await;
    used.find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    loaded(c).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/tls");
}
