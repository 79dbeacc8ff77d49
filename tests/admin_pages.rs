//! The admin page over real HTTPS against the real binary: sign-in with the generated
//! password and the forced change, sessions and their cookie, CSRF, throttling, headers, and
//! no secret in any page.

mod common;

use common::page::{Browser, initial_password, location, request_with, urlencode};
use common::process::{Proc, spawn_postern};

#[tokio::test]
async fn first_sign_in_forces_a_new_password_and_csrf_guards_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    assert!(
        proc.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l
                .contains("first start: admin page user \"admin\" created; its password is in")),
        "the start-up log names the password file"
    );
    let generated = initial_password(dir.path());
    let mut b = Browser::new(&proc);

    // Headers and the cookie's flags on the first page.
    let page = b.go("GET", "/sign-in", "").await;
    assert_eq!(page.status, 200);
    for (h, v) in [
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(page.headers.get(h).map(String::as_str), Some(v), "{h}");
    }
    assert!(
        page.headers
            .get("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age=")),
        "HSTS"
    );
    // Before sign-in only the form's nonce cookie: no session is stored for a stranger.
    assert_eq!(page.cookies.len(), 1, "{:?}", page.cookies);
    let cookie = &page.cookies[0];
    assert!(cookie.starts_with("postern_sign_in="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/sign-in"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(
        page.body.contains("initial-admin-password"),
        "first start is explained"
    );

    // Without a session: every page and action goes to the sign-in form, nothing changes.
    let mut stranger = Browser::new(&proc);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/password"),
        ("POST", "/password"),
        ("POST", "/sign-out"),
        ("GET", "/tls"),
        ("POST", "/tls"),
        ("GET", "/certificates"),
        ("POST", "/certificates"),
        ("GET", "/certificates/delete"),
        ("POST", "/certificates/delete"),
        ("GET", "/explain"),
        ("GET", "/policy"),
        ("POST", "/policy/add"),
        ("POST", "/policy/edit"),
        ("POST", "/policy/test"),
        ("POST", "/policy/bulk"),
        ("GET", "/policy/delete"),
        ("POST", "/policy/delete"),
        ("GET", "/relay"),
        ("GET", "/logs"),
        ("GET", "/queue"),
        ("POST", "/queue/act"),
        ("GET", "/queue/0123456789ABC"),
        ("GET", "/audit"),
        ("POST", "/audit/restore"),
        ("GET", "/rules"),
        ("POST", "/rules/save"),
        ("POST", "/rules/rule"),
        ("POST", "/rules/list"),
        ("POST", "/relay/save"),
        ("POST", "/relay/delete"),
        ("POST", "/relay/networks"),
        ("POST", "/relay/users"),
        ("GET", "/m365"),
        ("POST", "/m365"),
    ] {
        let page = stranger
            .go(method, path, "csrf=x&current=a&new=b&confirm=b")
            .await;
        assert_eq!(
            (page.status, location(&page)),
            (303, "/sign-in"),
            "{method} {path}"
        );
    }
    // A sign-in without the form's token: 403, not signed in.
    let page = b
        .go(
            "POST",
            "/sign-in",
            &format!("user=admin&password={generated}"),
        )
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(location(&b.go("GET", "/", "").await), "/sign-in");

    // A second browser signed in too: the password change below ends its session.
    let mut other = Browser::new(&proc);
    assert_eq!(
        location(&other.sign_in("admin", &generated).await),
        "/password"
    );
    // The generated password signs in, and every page then asks for a new one.
    let page = b.sign_in("admin", &generated).await;
    assert_eq!((page.status, location(&page)), (303, "/password"));
    let cookie = page
        .cookies
        .iter()
        .find(|c| c.starts_with("postern_session="))
        .expect("a session at sign-in");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert_eq!(location(&b.go("GET", "/", "").await), "/password");
    // A change with a wrong token changes nothing.
    let form = format!(
        "csrf=wrong&current={generated}&new=correct-horse-battery&confirm=correct-horse-battery"
    );
    assert_eq!(b.go("POST", "/password", &form).await.status, 403);
    let csrf = b.csrf("/password").await;
    let short = format!("csrf={csrf}&current={generated}&new=short&confirm=short");
    assert!(
        b.submit("/password", &short)
            .await
            .body
            .contains("at least 12 characters")
    );
    let form = format!(
        "csrf={csrf}&current={generated}&new=correct-horse-battery&confirm=correct-horse-battery"
    );
    let page = b.go("POST", "/password", &form).await;
    assert_eq!((page.status, location(&page)), (303, "/"));
    assert!(
        !dir.path().join("data/initial-admin-password").exists(),
        "the file goes"
    );
    // The dashboard is the landing page.
    let home = b.go("GET", "/", "").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Password changed."), "{}", home.body);

    // No page carries the API token or a hash.
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    for path in [
        "/tls",
        "/password",
        "/sign-in",
        "/certificates",
        "/policy",
        "/relay",
        "/explain?recipient=a%40b.example",
        "/",
        "/logs",
        "/queue",
        "/audit",
        "/rules",
    ] {
        let body = b.go("GET", path, "").await.body;
        assert!(
            !body.contains(token.trim()) && !body.contains("$argon2"),
            "{path}"
        );
    }

    // Sign-out needs the token too, then the session is gone.
    assert_eq!(b.go("POST", "/sign-out", "csrf=wrong").await.status, 403);
    let csrf = b.csrf("/tls").await;
    assert_eq!(
        location(&b.go("POST", "/sign-out", &format!("csrf={csrf}")).await),
        "/sign-in"
    );
    assert_eq!(location(&b.go("GET", "/", "").await), "/sign-in");
    // The old password is gone, the new one works.
    assert!(
        b.sign_in("admin", &generated)
            .await
            .body
            .contains("Wrong user name or password.")
    );
    assert_eq!(
        location(&b.sign_in("admin", "correct-horse-battery").await),
        "/"
    );
    assert!(proc.stop().await);
}

#[tokio::test]
async fn five_failures_lock_sign_in_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let generated = initial_password(dir.path());
    let mut b = Browser::new(&proc);
    for _ in 0..5 {
        let page = b.sign_in("admin", "not-the-password").await;
        assert!(page.body.contains("Wrong user name or password."));
    }
    // Locked for this address: even the right password is refused now, and the page says why.
    let page = b.sign_in("admin", &generated).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Too many failed attempts from your address: try again in 15 minute(s)."),
        "{}",
        page.body
    );
    assert_eq!(location(&b.go("GET", "/", "").await), "/sign-in");
    // The log pipe is read by a thread of the test: wait for the line to be through it.
    let locked =
        "warning: admin sign-in refused from 127.0.0.1 for 15 minutes after 5 failed attempts";
    let refused = "warning: admin sign-in failed for user \"admin\" from 127.0.0.1: too many failed attempts from this address";
    let log = loop {
        let log = proc.log.lock().unwrap().join("\n");
        if log.contains(locked) && log.contains(refused) {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Five wrong passwords and the refused right one: one line each, for fail2ban.
    assert_eq!(
        log.matches("warning: admin sign-in failed for user \"admin\" from 127.0.0.1")
            .count(),
        6,
        "{log}"
    );
    assert!(proc.stop().await);
}

/// A browser signed in as `admin` with its own password (the first start done).
async fn admin_browser(proc: &Proc, dir: &std::path::Path) -> Browser {
    let generated = initial_password(dir);
    let mut b = Browser::new(proc);
    b.sign_in("admin", &generated).await;
    let csrf = b.csrf("/password").await;
    let form = format!(
        "csrf={csrf}&current={generated}&new=correct-horse-battery&confirm=correct-horse-battery"
    );
    assert_eq!(location(&b.go("POST", "/password", &form).await), "/");
    b
}

/// SMTP TLS Settings: Hermes' message for a blank certificate next to the field; a
/// certificate imported with the CLI picked by name; saved, it is what the next SMTP
/// session's STARTTLS presents, `settings export` shows it, and the audit log names the user.
#[tokio::test]
async fn tls_page_saves_through_the_same_checks_and_applies_to_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut b = admin_browser(&proc, dir.path()).await;

    let csrf = b.csrf("/tls").await;
    let blank = format!("csrf={csrf}&inbound_mode=may&inbound_certificate=&outbound_mode=may");
    let page = b.go("POST", "/tls", &blank).await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("<p class=\"field-error\" role=\"alert\">SMTP TLS Certificate cannot be blank when TLS Mode is set to Opportunistic or Mandatory</p>"),
        "{}",
        page.body
    );

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("mx.crt"), dir.path().join("mx.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let out = proc.cli(&[
        "cert",
        "import",
        "--name",
        "gateway-mx-2026",
        "--cert",
        cert_file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let page = b.go("GET", "/tls", "").await;
    assert!(
        page.body.contains("<option value=\"gateway-mx-2026\">"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("<option value=\"system\">"),
        "the system one is not offered"
    );
    let csrf = b.csrf("/tls").await;
    let form = format!(
        "csrf={csrf}&inbound_mode=may&inbound_certificate=gateway-mx-2026&outbound_mode=may"
    );
    let page = b.go("POST", "/tls", &form).await;
    assert_eq!((page.status, location(&page)), (303, "/tls"));
    let page = b.go("GET", "/tls", "").await;
    assert!(page.body.contains("Saved and applied"), "{}", page.body);
    assert!(
        page.body.contains("<dt>Serial</dt>"),
        "the picked certificate's facts"
    );

    // Bound, it cannot be deleted; the page says where it is bound.
    let csrf = b.csrf("/certificates").await;
    let page = b
        .go(
            "POST",
            "/certificates/delete",
            &format!("csrf={csrf}&name=gateway-mx-2026"),
        )
        .await;
    assert_eq!(page.status, 409);
    assert!(
        page.body.contains("Not deleted: gateway-mx-2026 is in use (SMTP STARTTLS (inbound)): bind another certificate there first"),
        "{}",
        page.body
    );
    // The next SMTP session presents exactly that certificate (pinned).
    let mut c = common::SmtpClient::connect(proc.smtp, None, Some(cert.der().clone())).await;
    c.cmd("EHLO client.test.example").await;
    c.starttls().await;
    let out = proc.cli(&["settings", "export"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("certificate = \"gateway-mx-2026\""));
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    let audit = request_with(
        proc.api(),
        "GET",
        "/api/v1/settings/audit?limit=1",
        format!("Authorization: Bearer {}\r\n", token.trim()),
        "",
    )
    .await;
    assert!(
        audit.body.contains("\"actor\":\"admin (admin page)\""),
        "{}",
        audit.body
    );
    assert!(
        audit.body.contains("\"section\":\"inbound\""),
        "{}",
        audit.body
    );
    assert!(proc.stop().await);
}

/// Explain: the same decision as delivery, every source listed, the decider marked, a less
/// specific row shown as overridden; a bad recipient named.
#[tokio::test]
async fn explain_page_lists_every_source_and_marks_the_decider() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    proc.import_settings(
        "[[policy]]\npattern = \"*\"\nlevel = \"may\"\n[[policy]]\npattern = \"partner.example\"\nlevel = \"encrypt\"\nnote = \"contract 42\"\n",
    );
    let mut b = admin_browser(&proc, dir.path()).await;
    let page = b
        .go(
            "GET",
            "/explain?recipient=ceo%40partner.example&header=&sender=",
            "",
        )
        .await;
    assert_eq!(page.status, 200);
    for wanted in [
        "<dt>Level</dt><dd>encrypt</dd>",
        "<dt>Decided by</dt><dd>row:partner.example</dd>",
        "<dt>Minimum bits</dt><dd>112</dd>",
        "<li class=\"decides\">policy row partner.example: encrypt (contract 42) (decides)</li>",
        "<li class=\"overridden\">policy row *: may, overridden by the more specific row partner.example</li>",
    ] {
        assert!(page.body.contains(wanted), "{wanted} in {}", page.body);
    }
    let page = b.go("GET", "/explain?recipient=not+a+domain", "").await;
    assert_eq!(page.status, 400);
    assert!(
        page.body
            .contains("recipient: &#34;not a domain&#34; is not an address or domain"),
        "{}",
        page.body
    );
    assert!(proc.stop().await);
}

/// The settings document's policy rows, through `postern settings export`.
fn exported_policy(proc: &Proc) -> String {
    let out = proc.cli(&["settings", "export"]);
    assert!(out.status.success(), "{out:?}");
    let doc = String::from_utf8_lossy(&out.stdout).into_owned();
    doc.split("[[policy]]")
        .skip(1)
        .collect::<Vec<_>>()
        .join("[[policy]]")
}

/// TLS Policy Domains over HTTPS: every action refused without the form's token; Hermes'
/// errors 4, 5, 6 and 20 under the domain field; add, edit, delete (after a confirmation)
/// and the bulk box each one audited change by the signed-in user; managed rows badged and
/// not editable.
#[tokio::test]
async fn policy_page_adds_edits_and_deletes_rows_through_the_api_checks() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    proc.import_settings(
        "[[relay_domains]]\ndomain = \"smarthost.example\"\ntransport = \"[127.0.0.1]:2525\"\n[relay_domains.auth]\nusername = \"gw\"\npassword = \"relay-secret-1\"\n",
    );
    let mut b = admin_browser(&proc, dir.path()).await;
    let page = b.go("GET", "/policy", "").await;
    assert_eq!(page.status, 200);
    // The managed row: a badge linking to Relay Domains, no edit or delete.
    assert!(
        page.body
            .contains("<td data-label=\"Domain\" class=\"pattern\">smarthost.example</td>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Managed by Relay Domains</a>"));
    assert!(!page.body.contains("Edit smarthost.example"));
    assert!(!page.body.contains("relay-secret-1"));

    for (path, form) in [
        ("/policy/add", "pattern=partner.example&level=encrypt"),
        (
            "/policy/edit",
            "original=smarthost.example&pattern=x.example&level=may",
        ),
        ("/policy/test", "pattern=partner.example&level=encrypt"),
        ("/policy/bulk", "entries=a.example&level=encrypt"),
        ("/policy/delete", "pattern=smarthost.example"),
    ] {
        let page = b.go("POST", path, &format!("csrf=wrong&{form}")).await;
        assert_eq!(page.status, 403, "{path}");
    }
    assert_eq!(
        exported_policy(&proc).matches("pattern =").count(),
        1,
        "only the managed row"
    );

    let csrf = b.csrf("/policy").await;
    let add = |pattern: &str| {
        format!(
            "csrf={csrf}&pattern={}&level=encrypt&min_bits=&on_failure=defer&note=contract+42",
            urlencode(pattern)
        )
    };
    // Error 4: not a domain, under the field; error 20: blank.
    for (pattern, wanted) in [
        (
            "partner..example",
            "&#34;partner..example&#34; is not a valid domain, .domain, user@domain or *",
        ),
        ("", "required: a domain, .domain, user@domain or *"),
    ] {
        let page = b.go("POST", "/policy/add", &add(pattern)).await;
        assert_eq!(page.status, 400, "{pattern}");
        assert!(
            page.body.contains(&format!(
                "<p class=\"field-error\" role=\"alert\">{wanted}</p>"
            )),
            "{wanted} in {}",
            page.body
        );
        assert!(
            page.body
                .contains("Not saved: see the message under the field.")
        );
        assert!(
            page.body.contains(&format!("value=\"{pattern}\"")),
            "the form keeps what was typed"
        );
    }
    let page = b.go("POST", "/policy/add", &add("Partner.example")).await;
    assert_eq!((page.status, location(&page)), (303, "/policy#top"));
    let page = b.go("GET", "/policy", "").await;
    assert!(
        page.body.contains("Added partner.example and applied"),
        "{}",
        page.body
    );
    assert!(exported_policy(&proc).contains("pattern = \"partner.example\"\nlevel = \"encrypt\""));
    // Error 5: duplicate on add.
    let page = b.go("POST", "/policy/add", &add("partner.example")).await;
    assert_eq!(page.status, 400);
    assert!(
        page.body
            .contains("duplicate row: &#34;partner.example&#34; is already in the table"),
        "{}",
        page.body
    );
    // The edit form comes filled; error 6: renaming onto another row.
    b.go("POST", "/policy/add", &add("other.example")).await;
    let page = b
        .go("GET", "/policy?edit=1&pattern=other.example", "")
        .await;
    assert!(page.body.contains("Edit the row for other.example"));
    assert!(
        page.body
            .contains("name=\"original\" value=\"other.example\"")
    );
    let edit = |pattern: &str, level: &str| {
        format!(
            "csrf={csrf}&original=other.example&pattern={pattern}&level={level}&min_bits=128&on_failure=bounce&note="
        )
    };
    let page = b
        .go("POST", "/policy/edit", &edit("partner.example", "verify"))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("duplicate row"), "{}", page.body);
    assert!(page.body.contains("Save row"), "still the edit form");
    let page = b
        .go("POST", "/policy/edit", &edit("other.example", "verify"))
        .await;
    assert_eq!((page.status, location(&page)), (303, "/policy#top"));
    assert!(exported_policy(&proc).contains("pattern = \"other.example\"\nlevel = \"verify\"\ninclude_subdomains = false\nmin_bits = 128\non_failure = \"bounce\""), "{}", exported_policy(&proc));
    // Delete asks first, then goes.
    let page = b
        .go("GET", "/policy/delete?pattern=other.example", "")
        .await;
    assert!(
        page.body
            .contains("Delete the row for <b>other.example</b>"),
        "{}",
        page.body
    );
    assert!(
        exported_policy(&proc).contains("other.example"),
        "asking deletes nothing"
    );
    let page = b
        .go(
            "POST",
            "/policy/delete",
            &format!("csrf={csrf}&pattern=other.example"),
        )
        .await;
    assert_eq!(location(&page), "/policy#top");
    assert!(!exported_policy(&proc).contains("other.example"));
    // The managed row cannot be deleted here, whatever the form says.
    let page = b
        .go(
            "POST",
            "/policy/delete",
            &format!("csrf={csrf}&pattern=smarthost.example"),
        )
        .await;
    assert_eq!(page.status, 409);
    assert!(
        page.body
            .contains("managed by relay domain smarthost.example"),
        "{}",
        page.body
    );
    // The bulk box: a bad line is named and nothing is added; then all at once.
    let bulk = |entries: &str| {
        format!(
            "csrf={csrf}&entries={}&level=encrypt&note=bulk",
            urlencode(entries)
        )
    };
    let page = b
        .go(
            "POST",
            "/policy/bulk",
            &bulk("a.example\n.b.example\nnot a domain\n"),
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.body
            .contains("line 3: &#34;not a domain&#34; is not a valid domain"),
        "{}",
        page.body
    );
    assert!(!exported_policy(&proc).contains("a.example"));
    let page = b
        .go(
            "POST",
            "/policy/bulk",
            &bulk("a.example\n\n.b.example\nceo@c.example\n"),
        )
        .await;
    assert_eq!(location(&page), "/policy#top");
    let policy = exported_policy(&proc);
    for p in ["a.example", ".b.example", "ceo@c.example"] {
        assert!(
            policy.contains(&format!("pattern = \"{p}\"")),
            "{p} in {policy}"
        );
    }
    // Each change is in the audit log with the user's name.
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    let audit = request_with(
        proc.api(),
        "GET",
        "/api/v1/settings/audit?limit=20",
        format!("Authorization: Bearer {}\r\n", token.trim()),
        "",
    )
    .await
    .body;
    // add, add, edit, delete, bulk
    assert_eq!(
        audit.matches("\"actor\":\"admin (admin page)\"").count(),
        5,
        "{audit}"
    );
    assert!(proc.stop().await);
}

/// Ten thousand rows: fifty a page, a search that finds one, paging links that keep it.
#[tokio::test]
async fn policy_page_pages_and_searches_ten_thousand_rows() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut toml = String::new();
    for i in 0..10_000 {
        toml.push_str(&format!(
            "[[policy]]\npattern = \"d{i:05}.example\"\nlevel = \"encrypt\"\nnote = \"row {i}\"\n"
        ));
    }
    proc.import_settings(&toml);
    let mut b = admin_browser(&proc, dir.path()).await;
    let page = b.go("GET", "/policy", "").await;
    assert!(
        page.body.contains("Rows 1–50 of 10000; page 1 of 200."),
        "{}",
        &page.body[..2000.min(page.body.len())]
    );
    assert_eq!(page.body.matches("<td data-label=\"Domain\"").count(), 50);
    assert!(page.body.contains("href=\"/policy?page=2\" rel=\"next\""));
    let page = b.go("GET", "/policy?page=200", "").await;
    assert!(
        page.body
            .contains("Rows 9951–10000 of 10000; page 200 of 200.")
    );
    assert!(page.body.contains(">d09999.example<"));
    let page = b.go("GET", "/policy?q=row+4242", "").await;
    assert!(
        page.body.contains("Rows 1–1 of 1 matching “row 4242”"),
        "a note matches"
    );
    assert!(page.body.contains(">d04242.example<"));
    let page = b.go("GET", "/policy?q=D012", "").await;
    assert!(page.body.contains("of 100 matching"), "any case");
    assert!(
        page.body
            .contains("href=\"/policy?q=D012&#38;page=2\" rel=\"next\""),
        "paging keeps the search: {}",
        page.body.split("<nav class=\"pages\"").nth(1).unwrap_or("")
    );
    assert!(proc.stop().await);
}

/// A row added on the page decides the very next delivery, with no restart: mail to a
/// domain whose host offers no STARTTLS goes out in plaintext before, and is deferred after.
#[tokio::test]
async fn a_row_added_on_the_page_applies_to_the_next_delivery() {
    use common::sink::{Sink, SinkOptions};
    let mut sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound.routes]\n\"plain.example\" = \"[127.0.0.1]:{}\"\n",
            sink.addr.port()
        ),
    );
    let send = |rcpt: &'static str| {
        let smtp = proc.smtp;
        async move {
            let mut c = common::SmtpClient::connect(smtp, None, None).await;
            c.cmd("HELO client.test.example").await;
            let r = c
                .send("app@inside.example", &[rcpt], b"Subject: t\r\n\r\nhi\r\n")
                .await;
            assert!(r.first().starts_with("250"), "{}", r.text());
        }
    };
    send("before@plain.example").await;
    assert!(!sink.next(20).await.expect("delivered in plaintext").tls);

    let mut b = admin_browser(&proc, dir.path()).await;
    let csrf = b.csrf("/policy").await;
    let page = b
        .go(
            "POST",
            "/policy/add",
            &format!(
                "csrf={csrf}&pattern=plain.example&level=encrypt&min_bits=&on_failure=defer&note="
            ),
        )
        .await;
    assert_eq!(location(&page), "/policy#top");
    send("after@plain.example").await;
    let line = wait_for_line(&proc, "to=<after@plain.example>").await;
    assert!(line.contains("status=deferred"), "{line}");
    assert!(
        line.contains("TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"),
        "{line}"
    );
    assert!(
        line.ends_with("policy=encrypt source=row:plain.example"),
        "{line}"
    );
    assert!(proc.stop().await);
}

/// The first log line with `needle` (the process writes it when the delivery is recorded).
async fn wait_for_line(proc: &Proc, needle: &str) -> String {
    for _ in 0..400 {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no log line with {needle:?}");
}

/// Part 2's forms: none changes anything without the session's token; passwords typed are
/// never shown again, in a page, the export or the audit diff; bad lines are named.
#[tokio::test]
async fn part_two_forms_need_the_token_and_never_show_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut b = admin_browser(&proc, dir.path()).await;
    let export = || String::from_utf8_lossy(&proc.cli(&["settings", "export"]).stdout).into_owned();
    let before = export();
    for (path, form) in [
        ("/relay/save", "domain=x.example"),
        ("/relay/delete", "key=x.example"),
        ("/relay/networks", "networks=10.0.0.0%2F8"),
        (
            "/relay/users",
            "action=add&username=u&password=long-enough-1",
        ),
        ("/rules/save", "name=r&direction=any&tls_level=require"),
        ("/rules/rule", "name=r&action=delete"),
        ("/rules/list", "name=l&domains=a.example&action=save"),
        ("/queue/act", "id=0123456789ABC&action=delete&confirm=yes"),
        ("/audit/restore", "version=1"),
        (
            "/m365",
            "enabled=on&tenants=72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
    ] {
        let page = b.go("POST", path, &format!("csrf=wrong&{form}")).await;
        assert_eq!(page.status, 403, "{path}");
    }
    assert_eq!(export(), before, "nothing changed");

    let csrf = b.csrf("/relay").await;
    let page = b
        .go(
            "POST",
            "/relay/save",
            &format!("csrf={csrf}&domain=smarthost.example&transport=%5B127.0.0.1%5D%3A2525&auth_username=gw&auth_password=relay-secret-1&recipients="),
        )
        .await;
    assert_eq!(location(&page), "/relay?saved=smarthost.example#top");
    let page = b.go("GET", "/relay?saved=smarthost.example", "").await;
    assert!(
        page.body
            .contains("the managed <code>encrypt</code> row for smarthost.example")
    );
    // A bad transport is said under its field, the password typed not sent back.
    let page = b
        .go(
            "POST",
            "/relay/save",
            &format!("csrf={csrf}&original=smarthost.example&domain=smarthost.example&transport=%5Bbad&auth_username=gw&auth_password=another-secret-2"),
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.body
            .contains("<p class=\"field-error\" role=\"alert\">"),
        "{}",
        page.body
    );
    assert!(page.body.contains("(leave blank to keep)"));
    assert!(!page.body.contains("another-secret-2"));
    let page = b
        .go(
            "POST",
            "/relay/networks",
            &format!("csrf={csrf}&networks=10.0.0.0%2F8%0A%0Anot-a-network"),
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("line 3: "), "{}", page.body);
    let page = b
        .go(
            "POST",
            "/relay/users",
            &format!("csrf={csrf}&action=add&username=alice&password=long-enough-1"),
        )
        .await;
    assert_eq!(location(&page), "/relay#top");
    let page = b
        .go(
            "POST",
            "/relay/users",
            &format!("csrf={csrf}&action=reset&username=alice&password="),
        )
        .await;
    assert!(page.body.contains("alice: type the new password to set it"));
    let page = b
        .go(
            "POST",
            "/relay/users",
            &format!("csrf={csrf}&action=add&username=bob&password=short"),
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("must be at least 8 characters"),
        "{}",
        page.body
    );
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    for path in ["/relay", "/audit", "/policy", "/"] {
        let body = b.go("GET", path, "").await.body;
        for secret in ["relay-secret-1", "long-enough-1", "$argon2", token.trim()] {
            assert!(!body.contains(secret), "{secret} on {path}");
        }
    }
    let exported = export();
    assert!(!exported.contains("relay-secret-1") && !exported.contains("long-enough-1"));
    assert!(proc.stop().await);
}
