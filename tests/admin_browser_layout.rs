//! Issue 28 item 8 in Chromium, against the real binary: the Queue and Logs pages with the
//! long addresses and host names of real mail (no table wider than its box at 1280 px, no
//! word of the queue broken across lines), the message page in the listing's words with
//! its last attempt and next retry, a release counted as what it released, the dashboard's
//! errors with their time, the system certificate's far-away expiry in words, and the
//! password form's refusal that a reload does not send again.

mod common;

use common::browser::*;
use common::dns::{Zone, serve};
use common::process::{Proc, spawn_postern};
use common::sink::{Act, Sink, SinkOptions, Stage};
use fantoccini::{Client, Locator};

const SENDER: &str = "accounts.payable.notifications@finance.inside.example";
const DELIVERED: &str = "quarterly.statements@subsidiaryholdings.example";
const DEFERRED: [&str; 2] = [
    "treasury.operations@greylisting.example",
    "payroll.department@greylisting.example",
];
/// A greylisting server's answer (Postgrey's codes), as long as the real ones.
const GREYLISTED: &str = "450 4.2.0 Greylisted: subsidiaryholdings-com01b.outbound.protection.outlook.example please retry in 300 seconds, postmaster.greylisting.example/greylisting";

/// Each table's box at the window's width: (scrollWidth, clientWidth) of each `div.table`.
async fn table_boxes(c: &Client) -> Vec<(u64, u64)> {
    let got = c
        .execute(
            "return [...document.querySelectorAll('div.table')].map(d => [d.scrollWidth, d.clientWidth]);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(got).unwrap()
}

async fn no_table_wider_than_its_box(c: &Client, page: &str) {
    c.set_window_size(1280, 900).await.unwrap();
    let boxes = table_boxes(c).await;
    assert!(!boxes.is_empty(), "{page}: no table");
    for (scroll, client) in boxes {
        assert!(
            scroll <= client,
            "{page}: a table {scroll} px wide in a box of {client} px at 1280 px"
        );
    }
}

/// The words (runs of letters and digits) of the cells `css` that the browser broke across
/// two lines: a range over each word has rectangles on more than one line.
async fn words_broken(c: &Client, css: &str) -> Vec<String> {
    let got = c
        .execute(
            "const broken = [];
             for (const cell of document.querySelectorAll(arguments[0])) {
               const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
               for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                 for (const m of n.data.matchAll(/[A-Za-z0-9]+/g)) {
                   const r = document.createRange();
                   r.setStart(n, m.index);
                   r.setEnd(n, m.index + m[0].length);
                   const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
                   if (tops.size > 1) broken.push(m[0]);
                 }
               }
             }
             return broken;",
            vec![serde_json::json!(css)],
        )
        .await
        .unwrap();
    serde_json::from_value(got).unwrap()
}

async fn no_word_broken_in_the_queue(c: &Client, width: u32) {
    c.set_window_size(width, 900).await.unwrap();
    let cells =
        "td[data-label='Last error'], td[data-label='Sender'], td[data-label='Recipients to go']";
    assert_eq!(
        c.find_all(Locator::Css(cells)).await.unwrap().len(),
        3 * 2,
        "two messages, each with its sender, recipients and error"
    );
    let broken = words_broken(c, cells).await;
    assert!(
        broken.is_empty(),
        "queue at {width} px: words broken across lines: {broken:?}"
    );
}

/// Lines of postern's log with `needle`, once there are at least `at_least` (by a deadline).
async fn lines_with(proc: &Proc, needle: &str, at_least: usize) -> usize {
    let start = std::time::Instant::now();
    loop {
        let n = proc
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        if n >= at_least || start.elapsed().as_secs() >= 20 {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `2026-12-07 19:35:26 (…)` as UNIX seconds: the page's UTC time at the start of `text`.
fn unix_at_start(text: &str) -> i64 {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let stamp = text
        .get(..19)
        .unwrap_or_else(|| panic!("no time in {text:?}"));
    time::PrimitiveDateTime::parse(stamp, format)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .assume_utc()
        .unix_timestamp()
}

struct Gateway {
    proc: Proc,
    _sinks: (Sink, Sink),
    dir: tempfile::TempDir,
    base: String,
}

/// postern with a DNS server: subsidiaryholdings.example's MX takes mail over TLS,
/// greylisting.example's answers every MAIL FROM with `GREYLISTED`; retries an hour apart.
async fn gateway() -> Gateway {
    let ok = Sink::start_on(
        "127.0.0.61:0".parse().unwrap(),
        SinkOptions {
            starttls: true,
            ..SinkOptions::default()
        },
    )
    .await;
    let port = ok.addr.port();
    let grey = Sink::start_on(
        format!("127.0.0.62:{port}").parse().unwrap(),
        SinkOptions::default(),
    )
    .await;
    grey.act(Stage::Mail, Act::Reply(GREYLISTED.into()));
    let mx = "subsidiaryholdings-com01b.mail.protection.outlook.example";
    let dns = serve(
        Zone::default()
            .mx("subsidiaryholdings.example", 10, mx)
            .a(mx, "127.0.0.61".parse().unwrap())
            .mx(
                "greylisting.example",
                10,
                "mx-greylist-01.greylisting.example",
            )
            .a(
                "mx-greylist-01.greylisting.example",
                "127.0.0.62".parse().unwrap(),
            ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!("[outbound]\nport = {port}\nnameservers = [\"{dns}\"]\nfirst_retry_secs = 3600\n"),
    );
    let base = format!("https://{}", proc.api());
    Gateway {
        proc,
        _sinks: (ok, grey),
        dir,
        base,
    }
}

/// One message delivered, two deferred by the greylisting server; their queue IDs.
async fn send_mail(gw: &Gateway) -> Vec<String> {
    let mut smtp = common::SmtpClient::connect(gw.proc.smtp, None, None).await;
    smtp.cmd("HELO client.test.example").await;
    let mut ids = Vec::new();
    for rcpt in [DELIVERED, DEFERRED[0], DEFERRED[1]] {
        let r = smtp
            .send(SENDER, &[rcpt], &common::message("statement", ""))
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        ids.push(common::queue_id(&r));
    }
    let sent = log_line(&gw.proc, &format!("to=<{DELIVERED}>")).await;
    assert!(sent.contains("status=sent"), "{sent}");
    for rcpt in DEFERRED {
        let deferred = log_line(&gw.proc, &format!("to=<{rcpt}>")).await;
        assert!(deferred.contains("status=deferred"), "{deferred}");
    }
    ids
}

#[tokio::test]
async fn queue_and_logs_fit_at_1280_and_say_what_happened_in_chromium() {
    if !common::have("chromium") || !common::have("chromedriver") {
        return;
    }
    let gw = gateway().await;
    let ids = send_mail(&gw).await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    first_sign_in(&c, &gw.base, gw.dir.path()).await;
    let base = &gw.base;

    // Queue: both deferred messages with their long addresses and the server's long answer.
    c.goto(&format!("{base}/queue")).await.unwrap();
    arrived(&c, "table.cards tbody tr").await;
    no_table_wider_than_its_box(&c, "queue").await;
    no_word_broken_in_the_queue(&c, 1280).await;
    check_page_at(&c, "queue-long-addresses", Some("messages")).await;
    no_word_broken_in_the_queue(&c, 390).await;

    message_page_and_release(&c, base, &ids).await;
    logs_and_dashboard(&c, base).await;
    days_left_and_password(&c, &gw).await;
    c.close().await.unwrap();
    assert!(gw.proc.stop().await);
}

/// The message page in the listing's words, with when it was tried and will be; a hold;
/// then a release of both deferred messages, counted as the one it released.
async fn message_page_and_release(c: &Client, base: &str, ids: &[String]) {
    // The message page in the listing's words, with when it was tried and will be.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/queue/{}", ids[2])).await.unwrap();
    arrived(c, "pre.message").await;
    assert_eq!(text_of(c, "#state").await, "deferred (waiting for a retry)");
    let last = text_of(c, "#last-attempt").await;
    let next = text_of(c, "#next-retry").await;
    let wait = unix_at_start(&next) - unix_at_start(&last);
    assert!(
        (3599..=3601).contains(&wait),
        "the retry an hour after the attempt: {last} / {next}"
    );
    assert!(
        next.ends_with("(in 59 min)") || next.ends_with("(in 1 h 0 min)"),
        "{next}"
    );
    assert_eq!(
        text_of(c, "ul.recipients li").await,
        format!("{}: deferred", DEFERRED[1])
    );
    check_page(c, "queue-message-next-retry").await;
    click(c, "button[value=hold]").await;
    arrived(c, "p.ok").await;
    assert_eq!(text_of(c, "p.ok").await, "Held 1 message.");
    assert_eq!(
        text_of(c, "#next-retry").await,
        "none while it is held: Release sends it"
    );

    // Release both: one was held, one was not; the notice counts the one released.
    c.goto(&format!("{base}/queue")).await.unwrap();
    arrived(c, "table.cards tbody tr").await;
    for id in &ids[1..] {
        c.find(Locator::Id(&format!("tick-{id}")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    click(c, "button[value=release]").await;
    arrived(c, "p.ok").await;
    assert_eq!(
        text_of(c, "p.ok").await,
        "Released 1 message. 1 was not on hold."
    );
    check_page_at(c, "queue-released", Some("messages")).await;
}

/// Logs fit their box with the relay's long name; the dashboard's errors say when.
async fn logs_and_dashboard(c: &Client, base: &str) {
    c.goto(&format!("{base}/logs")).await.unwrap();
    arrived(c, "#results").await;
    // The records are written by a thread of their own: all three by a deadline.
    let start = std::time::Instant::now();
    while c.find_all(Locator::Css("pre.lines")).await.unwrap().len() < 3 {
        assert!(start.elapsed().as_secs() < 20, "the records never showed");
        c.refresh().await.unwrap();
        arrived(c, "#results").await;
    }
    no_table_wider_than_its_box(c, "logs").await;
    check_page_at(c, "logs-long-names", Some("results")).await;

    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    arrived(c, "ul.errors li").await;
    let errors = c.find_all(Locator::Css("ul.errors li")).await.unwrap();
    assert!(errors.len() >= 2, "the deferrals");
    for e in errors {
        let text = e.text().await.unwrap();
        let when = unix_at_start(&text);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now - 600..=now).contains(&when), "{text}");
        assert!(text.contains("status=deferred"), "{text}");
    }
    check_page_at(c, "dashboard-errors", Some("last-errors")).await;
}

/// The system certificate's expiry in words; the password form's refusal not sent again
/// by a reload, and the change itself followed by a page of its own.
async fn days_left_and_password(c: &Client, gw: &Gateway) {
    let base = &gw.base;
    c.goto(&format!("{base}/certificates")).await.unwrap();
    arrived(c, "td[data-label='Days left']").await;
    assert_eq!(
        text_of(c, "td[data-label='Days left']").await,
        "more than 10 years"
    );
    check_page(c, "certificates-days-left").await;

    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/password")).await.unwrap();
    arrived(c, "#current").await;
    fill(c, "current", "not-the-password").await;
    fill(c, "new", "staple-orbit-lantern").await;
    fill(c, "confirm", "staple-orbit-lantern").await;
    submit(c).await;
    arrived(c, "p.error").await;
    assert_eq!(
        text_of(c, "p.error").await,
        "The current password is wrong."
    );
    check_page(c, "password-refused").await;
    mark(c).await;
    c.refresh().await.unwrap();
    loaded(c).await;
    // The change after it: its line comes after any line a resent refusal would write.
    fill(c, "current", "correct-horse-battery").await;
    fill(c, "new", "staple-orbit-lantern").await;
    fill(c, "confirm", "staple-orbit-lantern").await;
    submit(c).await;
    arrived(c, "p.ok").await;
    assert_eq!(text_of(c, "p.ok").await, "Password changed.");
    let changed = "admin password of admin changed";
    assert_eq!(lines_with(&gw.proc, changed, 2).await, 2);
    let refused = "admin password change failed";
    assert_eq!(
        lines_with(&gw.proc, refused, 1).await,
        1,
        "the reload sent the refused form again"
    );
    mark(c).await;
    c.refresh().await.unwrap();
    loaded(c).await;
    assert!(c.current_url().await.unwrap().path() == "/");
    assert!(
        c.find(Locator::Css("p.ok")).await.is_err(),
        "the notice is shown once"
    );
    assert_eq!(lines_with(&gw.proc, changed, 2).await, 2);
}
