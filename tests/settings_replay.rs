//! A sealed row written back (issue 27, break 5). Somebody who can write to the shared
//! settings database but has no settings key keeps old sealed rows, and later puts one back:
//! the settings row under a newer sequence number with a `NOTIFY`, or an old admin-user row.
//! Two real nodes on loopback share a real PostgreSQL; the attacker uses his own client. Every
//! node refuses what was put back: it keeps the settings in force, logs the refusal, says so on
//! every admin page and in `postern_settings_refused`, and the old password does not sign in.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::process::{Proc, spawn_postern};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PASSWORD: &str = "replay-test-Qx7v-2Lm9";

struct Node {
    name: &'static str,
    dir: tempfile::TempDir,
    proc: Proc,
}

fn node(pg: &Postgres, name: &'static str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\nnode = \"{name}\"\n",
        pg.url()
    );
    let proc = spawn_postern(dir.path(), None, &settings);
    Node { name, dir, proc }
}

impl Node {
    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (StatusCode, String) {
        let data = self.dir.path().join("data");
        let client = postern::admin::client::ApiClient::new(self.proc.api(), &data).unwrap();
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let (status, bytes) = client.request(method, path, body).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn settings(&self) -> serde_json::Value {
        let (status, text) = self.api(Method::GET, "/api/v1/settings", None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Whether the settings in force have the policy row `pattern` at `level`.
    async fn has_row(&self, pattern: &str, level: &str) -> bool {
        let doc = self.settings().await;
        doc["policy"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["pattern"] == pattern && r["level"] == level)
        })
    }

    async fn refused_in_metrics(&self) -> bool {
        let (_, text) = self.api(Method::GET, "/api/v1/metrics", None).await;
        text.contains("postern_settings_refused 1")
    }

    fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.proc.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn browser(&self) -> Browser {
        Browser {
            addr: self.proc.api(),
            cookie: None,
        }
    }
}

/// The attacker: a plain PostgreSQL client, no key. `statement` with `param` bound as `$1`.
async fn attacker(pg: &Postgres, statement: &'static str, param: Option<Vec<u8>>) -> Vec<Vec<u8>> {
    let url = pg.url();
    tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let rows = match &param {
            Some(p) => db.query(statement, &[p]).unwrap(),
            None => db.query(statement, &[]).unwrap(),
        };
        rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect()
    })
    .await
    .unwrap()
}

/// Wait until `node` reports the refusal in its metrics; with `kept`, fails at once when that
/// policy row (pattern, level) is no longer in force (the node took what was put back).
async fn until_refused(node: &Node, kept: Option<(&str, &str)>) {
    let start = Instant::now();
    loop {
        if let Some((pattern, level)) = kept
            && !node.has_row(pattern, level).await
        {
            panic!(
                "node {}: the old settings applied ({pattern} {level} gone) after {:?}",
                node.name,
                start.elapsed()
            );
        }
        if node.refused_in_metrics().await {
            eprintln!("node {} refused it after {:?}", node.name, start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node {}: no refusal within 10 s",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn policy_row(node: &Node, pattern: &str, level: &str) -> (StatusCode, String) {
    let mut doc = node.settings().await;
    doc["policy"] = serde_json::json!([{"pattern": pattern, "level": level}]);
    node.api(Method::PUT, "/api/v1/settings", Some(&doc)).await
}

#[tokio::test]
async fn a_settings_row_written_back_is_refused_on_every_node() {
    let Some(pg) = Postgres::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    // The admin signs in on A while the database is whole (the first start's password).
    let mut admin = a.browser();
    admin.sign_in_and_choose(&a, PASSWORD).await;

    // What the attacker keeps: the settings as sealed before the bank's row was added.
    let old = attacker(&pg, "SELECT sealed FROM postern_settings_current", None).await;
    let (status, body) = policy_row(&a, "bank.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let start = Instant::now();
    while !b.has_row("bank.example", "encrypt").await {
        assert!(start.elapsed() < Duration::from_secs(5), "not applied on b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Put back under a newer sequence number, and tell every node.
    attacker(
        &pg,
        "UPDATE postern_settings_current SET seq = seq + 1, sealed = $1 RETURNING sealed",
        Some(old[0].clone()),
    )
    .await;
    attacker(
        &pg,
        "SELECT ''::bytea FROM pg_notify('postern_settings', '9')",
        None,
    )
    .await;
    for n in [&b, &a] {
        until_refused(n, Some(("bank.example", "encrypt"))).await;
        assert!(
            n.has_row("bank.example", "encrypt").await,
            "node {}",
            n.name
        );
        let lines = n.log_lines("refused");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("warning: settings database: ") && l.contains("older than")),
            "node {}: {lines:?}",
            n.name
        );
        eprintln!("node {}: {}", n.name, lines[0]);
    }
    // Changes wait, as with the database away.
    let (status, body) = policy_row(&b, "other.example", "encrypt").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("refused"), "{body}");

    // Every page says so: the signed-in admin's pages on A, and B's sign-in page.
    for path in ["/", "/policy", "/audit", "/tls", "/logs"] {
        let page = admin.go("GET", path, "").await;
        assert!(
            page.body.contains("id=\"settings-refused\""),
            "{path}: {}",
            page.body
        );
    }
    let page = b.browser().go("GET", "/sign-in", "").await;
    assert!(
        page.body.contains("id=\"settings-refused\""),
        "{}",
        page.body
    );
    assert!(a.proc.stop().await && b.proc.stop().await);
}

#[tokio::test]
async fn an_admin_row_written_back_does_not_bring_the_old_password_back() {
    let Some(pg) = Postgres::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let generated = std::fs::read_to_string(a.dir.path().join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    // What the attacker keeps: the admin row with the generated password's hash.
    let old = attacker(
        &pg,
        "SELECT sealed FROM postern_admin_users WHERE name = 'admin'",
        None,
    )
    .await;
    a.browser().sign_in_and_choose(&a, PASSWORD).await;

    attacker(
        &pg,
        "UPDATE postern_admin_users SET sealed = $1 WHERE name = 'admin' RETURNING sealed",
        Some(old[0].clone()),
    )
    .await;
    for n in [&a, &b] {
        let page = n.browser().sign_in("admin", &generated).await;
        assert_eq!(
            page.status, 200,
            "node {}: the old password signed in: {:?}",
            n.name, page.headers
        );
        assert!(
            page.body.contains("Wrong user name or password."),
            "{}",
            page.body
        );
        until_refused(n, None).await;
        let lines = n.log_lines("postern_admin_users/admin");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("warning: settings database: ") && l.contains("refused")),
            "node {}: {lines:?}",
            n.name
        );
        eprintln!("node {}: {}", n.name, lines[0]);
        let page = n.browser().go("GET", "/sign-in", "").await;
        assert!(
            page.body.contains("id=\"settings-refused\""),
            "{}",
            page.body
        );
    }
    assert!(a.proc.stop().await && b.proc.stop().await);
}

struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// A browser's cookie jar for one node's admin page; one TLS connection per request.
struct Browser {
    addr: SocketAddr,
    cookie: Option<String>,
}

impl Browser {
    async fn go(&mut self, method: &str, path: &str, form: &str) -> Page {
        postern::tls::install_provider();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let config = postern::tls::unauthenticated_client_config();
        let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        if method == "POST" {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", form.len()));
        }
        req.push_str("\r\n");
        req.push_str(form);
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        for (_, v) in headers.iter().filter(|(k, _)| k == "set-cookie") {
            if v.starts_with("postern_session=") {
                self.cookie = v.split(';').next().map(str::to_string);
            }
        }
        Page {
            status,
            headers,
            body: body.to_string(),
        }
    }

    async fn csrf(&mut self, path: &str) -> String {
        let page = self.go("GET", path, "").await;
        page.body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no csrf field on {path}: {}", page.body))
            .to_string()
    }

    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let csrf = self.csrf("/sign-in").await;
        let form = format!("csrf={csrf}&user={user}&password={}", urlencode(password));
        self.go("POST", "/sign-in", &form).await
    }

    /// The first sign-in on `node` (which made the admin user) and the new password it asks for.
    async fn sign_in_and_choose(&mut self, node: &Node, new: &str) {
        let generated =
            std::fs::read_to_string(node.dir.path().join("data/initial-admin-password")).unwrap();
        let generated = generated.trim();
        let page = self.sign_in("admin", generated).await;
        assert_eq!(page.status, 303, "{}", page.body);
        let csrf = self.csrf("/password").await;
        let form = format!(
            "csrf={csrf}&current={}&new={}&confirm={}",
            urlencode(generated),
            urlencode(new),
            urlencode(new)
        );
        let page = self.go("POST", "/password", &form).await;
        assert_eq!(page.status, 303, "{}", page.body);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
