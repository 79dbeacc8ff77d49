//! Issue 28, acceptance 3: the admin page speaks the admin's words. Every form of every page
//! is sent bad input over real HTTPS against the real binary, and no page it answers with
//! (nor any page after the changes) shows a field of the settings document such as
//! `smtp_auth_users[0].password` or `inbound.certificate`: the API and the CLI keep those,
//! where they name a field of a document; a page names the field by its label.

mod common;

use common::page::{Browser, initial_password, location, urlencode};
use common::process::{Proc, spawn_postern};

// The top-level sections of the settings document, as the settings name them.
use postern::settings::SECTIONS;

/// The settings paths in `text`: a section followed by `[…]` (`policy[3]`,
/// `relay_domains[partner.example].domain`) or by `.field` (`inbound.certificate`).
fn settings_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for section in SECTIONS {
        for (at, _) in text.match_indices(section) {
            let bytes = text.as_bytes();
            if at > 0 && (word(bytes[at - 1]) || bytes[at - 1] == b'.' || bytes[at - 1] == b'/') {
                continue;
            }
            let rest = &text[at + section.len()..];
            let indexed = rest.starts_with('[') && rest.contains(']');
            let dotted = rest
                .strip_prefix('.')
                .and_then(|r| r.bytes().next())
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
            if indexed || dotted {
                let end = rest
                    .find(|c: char| c.is_whitespace() || "<:\";,)".contains(c))
                    .unwrap_or(rest.len());
                found.push(format!("{section}{}", &rest[..end]));
            }
        }
    }
    found
}

#[test]
fn the_path_finder_finds_paths_and_only_paths() {
    let found = settings_paths(
        "x smtp_auth_users[0].password: y; Field inbound.certificate; policy[a.example].level",
    );
    assert_eq!(
        found,
        [
            "inbound.certificate",
            "smtp_auth_users[0].password",
            "policy[a.example].level"
        ]
    );
    let words = "SMTP AUTH user alice: password; the policy table; rules, in order; \
                 mail.admin.example; /policy/add; href=\"/rules\"; inbound STARTTLS.";
    assert!(
        settings_paths(words).is_empty(),
        "{:?}",
        settings_paths(words)
    );
}

/// Every page an admin read in this test, with what was done to get it.
struct Seen {
    pages: Vec<(String, u16, String)>,
}

impl Seen {
    fn add(&mut self, what: &str, page: &common::page::Page) {
        self.pages
            .push((what.to_string(), page.status, page.body.clone()));
    }

    /// The pages that show a settings path, each with the paths.
    fn offending(&self) -> Vec<String> {
        self.pages
            .iter()
            .filter_map(|(what, status, body)| {
                let paths = settings_paths(body);
                (!paths.is_empty()).then(|| format!("{what} ({status}): {paths:?}"))
            })
            .collect()
    }

    fn body(&self, what: &str) -> &str {
        let found = self.pages.iter().find(|(w, _, _)| w == what);
        found.map_or("", |(_, _, body)| body.as_str())
    }
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

/// A self-signed certificate and key for `host`, PEM.
fn certificate(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// POST `form` (its values URL-encoded here) to `path` with the page's token; the page
/// answered, or the one redirected to.
async fn post(b: &mut Browser, seen: &mut Seen, what: &str, path: &str, form: &[(&str, &str)]) {
    let csrf = b.csrf("/").await;
    let mut body = format!("csrf={csrf}");
    for (k, v) in form {
        body.push_str(&format!("&{k}={}", urlencode(v)));
    }
    let page = b.go("POST", path, &body).await;
    seen.add(what, &page);
    // A browser keeps the fragment to itself: the request names the path only.
    let to = location(&page).split('#').next().unwrap_or("").to_string();
    if !to.is_empty() {
        let page = b.go("GET", &to, "").await;
        seen.add(&format!("{what}, then {to}"), &page);
    }
}

async fn certificates(b: &mut Browser, seen: &mut Seen) {
    let (cert, key) = certificate("mx.test.example");
    let import = |name| {
        [
            ("name", name),
            ("cert", cert.as_str()),
            ("key", key.as_str()),
        ]
    };
    post(b, seen, "import mx", "/certificates", &import("mx")).await;
    post(
        b,
        seen,
        "import without a key",
        "/certificates",
        &[("name", "k"), ("cert", &cert)],
    )
    .await;
    post(b, seen, "import mx again", "/certificates", &import("mx")).await;
    post(b, seen, "import MX", "/certificates", &import("MX")).await;
    let (cert, key) = certificate("mx.test.example");
    let renew = [
        ("name", "mx"),
        ("cert", &cert),
        ("key", &key),
        ("replace", "on"),
    ];
    post(b, seen, "renew mx", "/certificates", &renew).await;
    post(
        b,
        seen,
        "acme nothing",
        "/certificates",
        &[("name", "none"), ("acme", "on")],
    )
    .await;
    let (cert, key) = certificate("partner-client.test.example");
    let import = [("name", "client"), ("cert", &cert), ("key", &key)];
    post(b, seen, "import client", "/certificates", &import).await;
}

async fn tls(b: &mut Browser, seen: &mut Seen) {
    for (what, cert) in [
        ("tls blank", ""),
        ("tls system", "system"),
        ("tls unknown", "nosuch"),
        ("tls mx", "mx"),
    ] {
        let form = [("inbound_mode", "encrypt"), ("inbound_certificate", cert)];
        post(b, seen, what, "/tls", &form).await;
    }
    let form = [("outbound_mode", "maybe"), ("outbound_mta_sts", "enforce")];
    post(b, seen, "tls outbound bad mode", "/tls", &form).await;
    let form = [("outbound_mode", "may"), ("outbound_mta_sts", "sometimes")];
    post(b, seen, "tls outbound bad mta-sts", "/tls", &form).await;
}

/// Forms of one page: (what, path, fields), posted in order.
type Steps = Vec<(
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
)>;

async fn walk(b: &mut Browser, seen: &mut Seen, steps: Steps) {
    for (what, path, form) in steps {
        post(b, seen, what, path, &form).await;
    }
}

fn relay_domains() -> Steps {
    let domain = |d, transport, user, cert, recipients| {
        let form = vec![
            ("domain", d),
            ("transport", transport),
            ("auth_username", user),
        ];
        let rest = [("client_certificate", cert), ("recipients", recipients)];
        ("/relay/save", [form, rest.to_vec()].concat())
    };
    let step = |what, (path, form)| (what, path, form);
    vec![
        step(
            "relay good",
            domain("partner.example", "[127.0.0.1]:2525", "", "client", ""),
        ),
        step("relay bad domain", domain("bad domain", "", "", "", "")),
        step("relay duplicate", domain("partner.example", "", "", "", "")),
        step(
            "relay bad transport",
            domain("b.example", "[bad", "", "", ""),
        ),
        step(
            "relay unknown cert",
            domain("c.example", "", "", "nosuch", ""),
        ),
        step("relay no password", domain("d.example", "", "gw", "", "")),
        step(
            "relay bad recipient",
            domain("e.example", "", "", "", "not an address"),
        ),
        step(
            "relay delete unknown",
            ("/relay/delete", vec![("key", "nosuch.example")]),
        ),
        step(
            "networks bad",
            ("/relay/networks", vec![("networks", "10.0.0.0/8\n\nx")]),
        ),
    ]
}

fn relay_users() -> Steps {
    let user = |what, action, name, password| {
        let form = vec![
            ("action", action),
            ("username", name),
            ("password", password),
        ];
        (what, "/relay/users", form)
    };
    vec![
        user("user alice", "add", "alice", "long-enough-1"),
        user("user short", "add", "bob", "short"),
        user("user twice", "add", "alice", "long-enough-2"),
        user("user spaces", "add", "a b", "long-enough-3"),
        user("user reset short", "reset", "alice", "short"),
        user("user delete unknown", "delete", "nosuch", ""),
    ]
}

fn policy() -> Steps {
    let row = |what, pattern, level, min_bits, names, fingerprints| {
        let form = vec![
            ("pattern", pattern),
            ("level", level),
            ("min_bits", min_bits),
        ];
        let rest = [
            ("on_failure", "defer"),
            ("match_names", names),
            ("fingerprints", fingerprints),
        ];
        (what, "/policy/add", [form, rest.to_vec()].concat())
    };
    vec![
        row("policy good", "a.example", "encrypt", "", "", ""),
        row("policy blank", "", "may", "", "", ""),
        row("policy bad pattern", "bad domain", "may", "", "", ""),
        row("policy duplicate", "a.example", "may", "", "", ""),
        row("policy min bits", "b.example", "encrypt", "9999", "", ""),
        row("policy fingerprint", "c.example", "fingerprint", "", "", ""),
        row(
            "policy bad fingerprint",
            "c.example",
            "fingerprint",
            "",
            "",
            "zz",
        ),
        row("policy bad name", "d.example", "secure", "", "bad name", ""),
        (
            "policy edit unknown",
            "/policy/edit",
            vec![
                ("original", "nosuch.example"),
                ("pattern", "x.example"),
                ("level", "may"),
            ],
        ),
        (
            "policy bulk",
            "/policy/bulk",
            vec![("entries", "e.example\nbad domain"), ("level", "may")],
        ),
        (
            "policy test",
            "/policy/test",
            vec![("pattern", "bad domain"), ("level", "encrypt")],
        ),
        (
            "policy delete unknown",
            "/policy/delete",
            vec![("pattern", "n.example")],
        ),
    ]
}

fn rules() -> Steps {
    let list = |what, name, domains| {
        let form = vec![("action", "save"), ("name", name), ("domains", domains)];
        (what, "/rules/list", form)
    };
    // The box ticked is sent; unticked, not at all.
    let rule = |what, name, recipients, every: bool| {
        let mut form = vec![("name", name), ("direction", "outbound")];
        form.extend([("recipient_matches", recipients), ("tls_level", "require")]);
        if every {
            form.push(("every_recipient", "on"));
        }
        (what, "/rules/save", form)
    };
    let delete_list = vec![
        ("action", "delete"),
        ("original", "partners"),
        ("name", "partners"),
    ];
    vec![
        list("list good", "partners", "partner.example"),
        list("list bad domain", "l2", "ok.example\nbad domain"),
        list("list duplicate", "partners", "b.example"),
        list("list blank name", "", "b.example"),
        rule("rule good", "r", "partners", false),
        rule("rule no condition", "r2", "", false),
        rule("rule both", "r3", "partners", true),
        rule("rule duplicate", "r", "partners", false),
        rule("rule blank name", "", "partners", false),
        rule("rule unknown list", "r4", "nosuch", false),
        ("list in use", "/rules/list", delete_list),
        (
            "rule delete unknown",
            "/rules/rule",
            vec![("action", "delete"), ("name", "nosuch")],
        ),
    ]
}

async fn m365_and_password(b: &mut Browser, seen: &mut Seen) {
    let m365 = |tenants, names, ranges| {
        [
            ("enabled", "on"),
            ("tenants", tenants),
            ("certificate_names", names),
            ("ranges", ranges),
            ("originator_domains", ""),
        ]
    };
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    post(b, seen, "m365 nothing", "/m365", &m365("", "", "")).await;
    post(b, seen, "m365 no names", "/m365", &m365(tenant, "", "")).await;
    post(
        b,
        seen,
        "m365 bad tenant",
        "/m365",
        &m365("not-a-tenant", "x.example", ""),
    )
    .await;
    post(
        b,
        seen,
        "m365 bad range",
        "/m365",
        &m365(tenant, "x.example", "nope"),
    )
    .await;
    let password =
        |current, new, confirm| [("current", current), ("new", new), ("confirm", confirm)];
    let strong = "another-horse-battery";
    post(
        b,
        seen,
        "password wrong",
        "/password",
        &password("nope", strong, strong),
    )
    .await;
    let mismatch = password("correct-horse-battery", strong, "other-horse-battery");
    post(b, seen, "password mismatch", "/password", &mismatch).await;
    let weak = password("correct-horse-battery", "short", "short");
    post(b, seen, "password weak", "/password", &weak).await;
}

/// The version whose settings bind `mx` for SMTP STARTTLS, asked to be restored after `mx`
/// was unbound and deleted: the confirmation, and the restore refused.
async fn audit(b: &mut Browser, seen: &mut Seen) {
    let page = b.go("GET", "/audit", "").await;
    let bound = page
        .body
        .split("<li id=\"v")
        .skip(1)
        .find(|entry| entry.contains("mx bound to"))
        .and_then(|entry| entry.split('"').next())
        .unwrap_or_else(|| panic!("no version binds mx: {}", page.body))
        .to_string();
    let unbind = [("inbound_mode", "disabled"), ("inbound_certificate", "")];
    post(b, seen, "tls unbind", "/tls", &unbind).await;
    let page = b.go("GET", &format!("/audit?restore={bound}"), "").await;
    seen.add("restore asked, mx still stored", &page);
    post(
        b,
        seen,
        "delete mx",
        "/certificates/delete",
        &[("name", "mx")],
    )
    .await;
    let page = b.go("GET", &format!("/audit?restore={bound}"), "").await;
    seen.add("restore asked, mx gone", &page);
    post(
        b,
        seen,
        "restore mx gone",
        "/audit/restore",
        &[("version", &bound)],
    )
    .await;
    post(
        b,
        seen,
        "restore unknown",
        "/audit/restore",
        &[("version", "9999")],
    )
    .await;
    let delete = [("name", "client")];
    post(
        b,
        seen,
        "delete client bound",
        "/certificates/delete",
        &delete,
    )
    .await;
    let page = b.go("GET", "/certificates/delete?name=client", "").await;
    seen.add("delete client asked", &page);
}

#[tokio::test]
async fn no_page_shows_a_settings_path() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut b = admin_browser(&proc, dir.path()).await;
    let mut seen = Seen { pages: Vec::new() };
    certificates(&mut b, &mut seen).await;
    tls(&mut b, &mut seen).await;
    walk(&mut b, &mut seen, relay_domains()).await;
    walk(&mut b, &mut seen, relay_users()).await;
    walk(&mut b, &mut seen, policy()).await;
    walk(&mut b, &mut seen, rules()).await;
    m365_and_password(&mut b, &mut seen).await;
    audit(&mut b, &mut seen).await;
    for path in [
        "/",
        "/tls",
        "/certificates",
        "/policy",
        "/relay",
        "/rules",
        "/audit",
        "/m365",
        "/queue",
        "/explain?recipient=bad%20address",
    ] {
        let page = b.go("GET", path, "").await;
        seen.add(path, &page);
    }
    let offending = seen.offending();
    assert!(offending.is_empty(), "{}", offending.join("\n"));
    words_said(&seen);
    assert!(proc.stop().await);
}

/// What the pages say instead, where this test made it happen.
fn words_said(seen: &Seen) {
    let said = |what: &str, words: &str| {
        let body = seen.body(what);
        assert!(body.contains(words), "{what}: no {words:?} in {body}");
    };
    said("renew mx, then /certificates", "Renewed mx");
    said(
        "import mx again",
        "to renew it, tick “Replace the certificate of that name”",
    );
    said("import MX", "choose another name than MX");
    said(
        "/certificates",
        "client certificate for relay domain partner.example",
    );
    said(
        "user short",
        "SMTP AUTH user bob, password: must be at least 8 characters",
    );
    said("restore asked, mx still stored", "SMTP STARTTLS (inbound)");
    for what in ["/tls", "/policy"] {
        said(what, "Opportunistic (may)");
    }
    // The page can import a certificate itself: no page sends the admin to the CLI for it.
    let api_words = ["&#34;replace&#34;", "--replace", "postern cert"];
    for (what, _, body) in &seen.pages {
        for w in api_words {
            assert!(!body.contains(w), "{what}: {w} on a page: {body}");
        }
    }
}
