//! Issue 30, the admin side, over real HTTPS against the real binary: CSRF by construction
//! (every form the pages show, and paths no form shows, refuse a signed-in session's request
//! without its token, and nothing changes) and the one error funnel (a forced internal error
//! answers generic words with a request id; the log line has the id and the reason).

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use common::page::{Browser, initial_password, location, request_with, urlencode};
use common::process::{Proc, spawn_postern};
use hyper::{Method, StatusCode};

const PASSWORD: &str = "correct-horse-battery";
const REFUSED: &str = "the form's security token is missing or out of date";

/// A browser signed in as `admin` with its own password (the first start done).
async fn admin(proc: &Proc, dir: &std::path::Path) -> Browser {
    let mut b = Browser::new(proc);
    b.sign_in("admin", &initial_password(dir)).await;
    let csrf = b.csrf("/password").await;
    let form = format!(
        "csrf={csrf}&current={}&new={PASSWORD}&confirm={PASSWORD}",
        urlencode(&initial_password(dir))
    );
    assert_eq!(location(&b.go("POST", "/password", &form).await), "/");
    b
}

async fn api(
    proc: &Proc,
    dir: &std::path::Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let client = postern::admin::client::ApiClient::new(proc.api(), &dir.join("data")).unwrap();
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let (status, bytes) = client.request(method, path, body).await.unwrap();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// Something on every page that has a form only then: a policy row, a relay domain (its
/// next hop refuses, so a message to it waits in the queue), an SMTP AUTH user, a list and a
/// rule, an inbound TLS row, a certificate, a deferred message, and the audit entries of all
/// that.
async fn seed(proc: &Proc, dir: &std::path::Path) {
    let sections = serde_json::json!({
        "policy": [{"pattern": "old.example", "level": "encrypt"}],
        "relay_domains": [{"domain": "partner.example", "transport": "[127.0.0.1]:1"}],
        "smtp_auth_users": [{"username": "alice", "password": "correct horse battery"}],
        "rule_data": [{"name": "partners", "domains": ["partner.example"]}],
        "rules": [{"name": "partners", "recipient_matches": "partners", "tls_level": "try"}],
        "inbound_tls": [{"pattern": "partner.example", "level": "encrypt"}],
    });
    api(proc, dir, Method::PATCH, "/api/v1/settings", Some(sections)).await;
    let (cert, key, _) = common::browser::self_signed("mx.test.example");
    let body = serde_json::json!({"name": "mx", "cert": cert, "key": key});
    api(proc, dir, Method::POST, "/api/v1/certificates", Some(body)).await;
    let mut smtp = common::SmtpClient::connect(proc.smtp, None, None).await;
    smtp.cmd("HELO client.test.example").await;
    let r = smtp
        .send(
            "app@inside.example",
            &["ceo@partner.example"],
            &common::message("q", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    logged(proc, |l| {
        l.contains("to=<ceo@partner.example>") && l.contains("status=deferred")
    })
    .await;
}

/// The first log line `wanted` says yes to, waiting for it up to 20 s.
async fn logged(proc: &Proc, wanted: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| wanted(l)) {
            return l.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no such log line"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every value of `attr="..."` in `html`, entities of URLs undone.
fn attributes(html: &str, attr: &str) -> Vec<String> {
    html.split(&format!(" {attr}=\"")[..])
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .map(|v| v.replace("&amp;", "&"))
        .collect()
}

/// The paths a piece of markup posts to: `<form method="post" action>` and `formaction`,
/// fragments cut; a template's `{% if %}/a{% else %}/b{% endif %}` gives both paths.
fn post_actions(html: &str) -> BTreeSet<String> {
    let forms = html
        .split("<form")
        .skip(1)
        .filter_map(|f| f.split('>').next())
        .filter(|tag| tag.contains("method=\"post\""))
        .flat_map(|tag| attributes(tag, "action"));
    forms
        .chain(attributes(html, "formaction"))
        .flat_map(|v| {
            v.split('{')
                .map(|p| p.rsplit('}').next().unwrap_or(p).to_string())
                .collect::<Vec<_>>()
        })
        .filter_map(|p| p.split('#').next().map(str::to_string))
        .filter(|p| p.starts_with('/'))
        .collect()
}

/// Every page a signed-in admin can reach by links from `/` (and the sign-in form), and every
/// form action on them.
async fn crawl(b: &mut Browser) -> (usize, BTreeSet<String>) {
    let starts = ["/".to_string(), "/sign-in".to_string()];
    let mut seen = BTreeSet::from(starts.clone());
    let mut queue = VecDeque::from(starts);
    let mut actions = BTreeSet::new();
    let mut pages = 0;
    while let Some(path) = queue.pop_front() {
        let page = b.go("GET", &path, "").await;
        assert!(
            page.status == 200 || page.status == 303,
            "GET {path}: {}",
            page.status
        );
        pages += 1;
        actions.extend(post_actions(&page.body));
        for link in attributes(&page.body, "href") {
            let link = link.split('#').next().unwrap_or("").to_string();
            let inside = link.starts_with('/') && !link.starts_with("//");
            if inside && !link.starts_with("/assets/") && seen.insert(link.clone()) {
                queue.push_back(link);
            }
        }
        assert!(pages < 400, "the crawl does not end: {seen:?}");
    }
    (pages, actions)
}

/// What a refused request must leave as it was: the settings version, the queue (ids and
/// held), the certificates.
async fn state_of(
    proc: &Proc,
    dir: &std::path::Path,
) -> (serde_json::Value, Vec<(String, bool)>, Vec<String>) {
    let audit = api(
        proc,
        dir,
        Method::GET,
        "/api/v1/settings/audit?limit=1",
        None,
    )
    .await;
    let queue = api(proc, dir, Method::GET, "/api/v1/queue", None).await;
    let certs = api(proc, dir, Method::GET, "/api/v1/certificates", None).await;
    let queue = queue.as_array().unwrap().iter();
    let certs = certs.as_array().unwrap().iter();
    (
        audit[0]["version"].clone(),
        queue
            .map(|m| (m["id"].to_string(), m["held"] == true))
            .collect(),
        certs.map(|c| c["name"].to_string()).collect(),
    )
}

#[tokio::test]
async fn every_post_without_the_session_token_is_refused_before_any_handler() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "[outbound]\nfirst_retry_secs = 3600\n");
    let mut b = admin(&proc, dir.path()).await;
    seed(&proc, dir.path()).await;
    // Another signed-in session's token: real, but not this session's.
    let mut other = Browser::new(&proc);
    assert_eq!(location(&other.sign_in("admin", PASSWORD).await), "/");
    let foreign = other.csrf("/tls").await;

    let (pages, actions) = crawl(&mut b).await;
    // Every form the templates hold was found on some page: the walk covers them all.
    let mut written = BTreeSet::new();
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates")).unwrap() {
        written.extend(post_actions(
            &std::fs::read_to_string(file.unwrap().path()).unwrap(),
        ));
    }
    let missed: Vec<_> = written.difference(&actions).collect();
    assert!(
        missed.is_empty(),
        "forms the crawl of {pages} pages did not reach: {missed:?}"
    );

    let before = state_of(&proc, dir.path()).await;
    // Paths no form shows: made up, under a page, a page that only reads, a wrong method.
    let made_up = [
        "/made-up",
        "/tls/nothing-here",
        "/policy/delete/x",
        "/",
        "/logs",
    ];
    let targets = actions.iter().map(String::as_str).chain(made_up);
    for path in targets {
        for form in ["", "csrf=wrong", &format!("csrf={foreign}"), "csrf="] {
            let page = b.go("POST", path, form).await;
            assert_eq!(page.status, 403, "POST {path} with {form:?}: {}", page.body);
            assert!(page.body.contains(REFUSED), "POST {path}: {}", page.body);
        }
    }
    for method in ["PUT", "PATCH", "DELETE"] {
        let page = b.go(method, "/tls", "").await;
        assert_eq!(page.status, 403, "{method} /tls: {}", page.body);
    }
    assert_eq!(
        state_of(&proc, dir.path()).await,
        before,
        "a refused form changed something"
    );
    // Still signed in (the sign-out was refused), with the same password.
    assert_eq!(b.go("GET", "/", "").await.status, 200);
    assert_eq!(
        location(&Browser::new(&proc).sign_in("admin", PASSWORD).await),
        "/"
    );

    // The right token passes the layer and reaches the handler, its body intact.
    let csrf = b.csrf("/policy").await;
    let form = format!(
        "csrf={csrf}&original=&pattern=new.example&level=encrypt&min_bits=&on_failure=defer&note="
    );
    let page = b.go("POST", "/policy/add", &form).await;
    assert_eq!(
        (page.status, location(&page)),
        (303, "/policy#top"),
        "{}",
        page.body
    );
    assert_ne!(
        state_of(&proc, dir.path()).await.0,
        before.0,
        "the row was added"
    );
    assert!(proc.stop().await);
}

/// A PUT of the control API with a JSON body, answered with its headers.
async fn put_json(
    proc: &Proc,
    dir: &std::path::Path,
    path: &str,
    body: &str,
) -> common::page::Page {
    let token = std::fs::read_to_string(dir.join("data/api-token")).unwrap();
    let extra = format!(
        "Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        token.trim(),
        body.len()
    );
    request_with(proc.api(), "PUT", path, extra, body).await
}

/// The request id an answer names, with the words around it checked.
fn named_id(page: &common::page::Page, body_words: &str) -> String {
    let id = page
        .headers
        .get("x-request-id")
        .expect("x-request-id")
        .clone();
    assert!(
        id.len() >= 8 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        page.body.contains(&format!("{body_words} (request {id})")),
        "{id}: {}",
        page.body
    );
    id
}

/// The store cannot write (a file size limit standing in for a full disk, as in
/// tests/settings_store.rs): the API's and the page's answers say "internal error" and the
/// request id, never the store's words; the log line has the id, the request and the reason.
#[tokio::test]
async fn an_internal_error_is_generic_to_the_client_and_logged_with_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), Some("trap '' XFSZ; ulimit -f 256"), "");
    // ~234 KB of recipients: past the 256 KiB file limit once stored with its audit entry.
    let many: Vec<String> = (0..9_000)
        .map(|n| format!("user{n:06}@ours.example"))
        .collect();
    let doc =
        serde_json::json!({"relay_domains": [{"domain": "ours.example", "recipients": many}]});
    let page = put_json(&proc, dir.path(), "/api/v1/settings", &doc.to_string()).await;
    assert_eq!(
        page.status,
        StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
        "{}",
        page.body
    );
    let id = named_id(&page, "internal error");
    let json: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"error": format!("internal error (request {id})")})
    );
    let line = logged(&proc, |l| l.contains(&id)).await;
    assert!(
        line.contains(&format!(
            "error: request {id}: PUT /api/v1/settings: settings store:"
        )),
        "{line}"
    );
    let reason = line.split("PUT /api/v1/settings: ").nth(1).unwrap();
    assert!(
        !page.body.contains(reason),
        "the reason stays in the log: {}",
        page.body
    );

    // A page's change through the same store and the same funnel.
    let mut b = admin(&proc, dir.path()).await;
    let csrf = b.csrf("/rules").await;
    let domains = (0..9_000)
        .map(|n| format!("d{n:06}.partner.example"))
        .collect::<Vec<_>>()
        .join("\n");
    let form = format!(
        "csrf={csrf}&original=&name=big&domains={}",
        urlencode(&domains)
    );
    let page = b.go("POST", "/rules/list", &form).await;
    let id = named_id(&page, "internal error");
    let line = logged(&proc, |l| l.contains(&id)).await;
    assert!(
        line.contains(&format!(
            "error: request {id}: POST /rules/list: settings store:"
        )),
        "{line}"
    );
    assert!(proc.stop().await);
}
