//! A sealed row written back (issue 27, break 5). Somebody who can write to the shared
//! settings database but has no settings key keeps old sealed rows, and later puts one back:
//! the settings row under a newer sequence number with a `NOTIFY`, or an old admin-user row.
//! Two real nodes on loopback share a real PostgreSQL; the attacker uses his own client. Every
//! node refuses what was put back: it keeps the settings in force, logs the refusal, says so on
//! every admin page and in `postern_settings_refused`, and the old password does not sign in.

mod common;

use std::time::{Duration, Instant};

use common::page::{Browser, urlencode};
use common::postgres::Postgres;
use common::process::{Proc, spawn_postern};
use hyper::{Method, StatusCode};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PASSWORD: &str = "replay-test-Qx7v-2Lm9";

struct Node {
    name: &'static str,
    dir: tempfile::TempDir,
    proc: Proc,
}

fn settings_keys(pg: &Postgres, name: &str) -> String {
    format!(
        "[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\nnode = \"{name}\"\n",
        pg.url()
    )
}

fn node(pg: &Postgres, name: &'static str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, &settings_keys(pg, name));
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

    /// Stop, and start again on the same data directory (so on its own copy of the settings).
    async fn restart(self, pg: &Postgres) -> Node {
        let (name, dir) = self.stop().await;
        let proc = spawn_postern(dir.path(), None, &settings_keys(pg, name));
        Node { name, dir, proc }
    }

    async fn stop(self) -> (&'static str, tempfile::TempDir) {
        assert!(self.proc.stop().await);
        (self.name, self.dir)
    }

    fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.proc.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.proc)
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

/// Wait until `node`'s metrics say it refuses something (`refused`) or no longer does; with
/// `kept`, fails at once when that policy row (pattern, level) is no longer in force (the node
/// took what was put back).
async fn until_refusal(node: &Node, refused: bool, kept: Option<(&str, &str)>) {
    let gauge = format!("postern_settings_refused {}", u8::from(refused));
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
        let (_, metrics) = node.api(Method::GET, "/api/v1/metrics", None).await;
        if metrics.contains(&gauge) {
            eprintln!("node {}: {gauge} after {:?}", node.name, start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node {}: no {gauge} within 10 s",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until `node` has the policy row (pattern, level) in force.
async fn until_row(node: &Node, pattern: &str, level: &str) {
    let start = Instant::now();
    while !node.has_row(pattern, level).await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "node {}: {pattern} {level} not applied",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The attacker's write: `sealed` as the settings row, under a newer sequence number, and a
/// notification to every node.
async fn put_back(pg: &Postgres, sealed: &[u8]) {
    attacker(
        pg,
        "UPDATE postern_settings_current SET seq = seq + 1, sealed = $1 RETURNING sealed",
        Some(sealed.to_vec()),
    )
    .await;
    attacker(
        pg,
        "SELECT ''::bytea FROM pg_notify('postern_settings', '9')",
        None,
    )
    .await;
}

/// The refusal's warning is in `node`'s log, with `what` (within 5 s: the log is written in
/// batches).
async fn assert_logged(node: &Node, what: &str) {
    let start = Instant::now();
    loop {
        let lines = node.log_lines("warning: settings database: ");
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains(what) && l.contains(": refused ("))
        {
            eprintln!("node {}: {line}", node.name);
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "node {}: no refusal of {what:?}: {lines:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The page at `path` says at its top what the node refuses.
async fn assert_banner(browser: &mut Browser, path: &str) {
    let page = browser.go("GET", path, "").await;
    assert!(
        page.body
            .contains("<p class=\"error\" role=\"alert\" id=\"settings-refused\">"),
        "{path}: {}",
        page.body
    );
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
    sign_in_and_choose(&mut admin, &a, PASSWORD).await;

    // What the attacker keeps: the settings as sealed before the bank's row was added.
    let old = attacker(&pg, "SELECT sealed FROM postern_settings_current", None).await;
    let (status, body) = policy_row(&a, "bank.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_row(&b, "bank.example", "encrypt").await;
    let genuine = attacker(&pg, "SELECT sealed FROM postern_settings_current", None).await;

    put_back(&pg, &old[0]).await;
    for n in [&b, &a] {
        until_refusal(n, true, Some(("bank.example", "encrypt"))).await;
        assert!(
            n.has_row("bank.example", "encrypt").await,
            "node {}",
            n.name
        );
        assert_logged(n, "older than").await;
    }
    // Changes wait, as with the database away.
    let (status, body) = policy_row(&b, "other.example", "encrypt").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("refused"), "{body}");

    // Every page says so: the signed-in admin's pages on A, and B's sign-in page.
    for path in ["/", "/policy", "/audit", "/tls", "/logs"] {
        assert_banner(&mut admin, path).await;
    }
    assert_banner(&mut b.browser(), "/sign-in").await;

    // A restart does not forget the version B held: it starts on it, and refuses again.
    let b = b.restart(&pg).await;
    assert!(b.has_row("bank.example", "encrypt").await);
    until_refusal(&b, true, None).await;
    // The database holds what the nodes hold again (restored from a backup taken before the
    // write): the refusal ends and changes are taken again.
    put_back(&pg, &genuine[0]).await;
    until_refusal(&a, false, None).await;
    until_refusal(&b, false, None).await;
    let (status, body) = policy_row(&b, "other.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_row(&a, "other.example", "encrypt").await;
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
    sign_in_and_choose(&mut a.browser(), &a, PASSWORD).await;

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
        until_refusal(n, true, None).await;
        assert_logged(n, "postern_admin_users/admin is not the row").await;
        assert_banner(&mut n.browser(), "/sign-in").await;
    }

    // No admin user left that the nodes accept: a restarted node makes `admin` anew, with a
    // generated password on its own disk, and every node takes the new row.
    let a = a.restart(&pg).await;
    let fresh = std::fs::read_to_string(a.dir.path().join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(fresh, generated);
    for n in [&a, &b] {
        until_refusal(n, false, None).await;
        let page = n.browser().sign_in("admin", &fresh).await;
        assert_eq!(page.status, 303, "node {}: {}", n.name, page.body);
    }
    assert!(a.proc.stop().await && b.proc.stop().await);
}

/// As an older postern sealed it (the test holds the key): the settings row is the bare
/// document under `settings`, and audit entries do not name the one before. Returns the head.
fn unchain(url: &str) -> serde_json::Value {
    let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    let row = db
        .query_one("SELECT sealed FROM postern_settings_current", &[])
        .unwrap();
    let head: serde_json::Value =
        serde_json::from_slice(&sealing::open("settings-head", row.get(0))).unwrap();
    let old = sealing::seal("settings", &serde_json::to_vec(&head["settings"]).unwrap());
    let version = head["version"].as_u64().unwrap() as i64;
    db.execute(
        "UPDATE postern_settings_current SET seq = $1, sealed = $2",
        &[&version, &old],
    )
    .unwrap();
    for r in db
        .query("SELECT seq, sealed FROM postern_settings_audit", &[])
        .unwrap()
    {
        let what = format!("audit/{}", r.get::<_, i64>(0));
        let mut entry: serde_json::Value =
            serde_json::from_slice(&sealing::open(&what, r.get(1))).unwrap();
        assert!(entry.as_object_mut().unwrap().remove("chain").is_some());
        let old = sealing::seal(&what, &serde_json::to_vec(&entry).unwrap());
        db.execute(
            "UPDATE postern_settings_audit SET sealed = $2 WHERE seq = $1",
            &[&r.get::<_, i64>(0), &old],
        )
        .unwrap();
    }
    head
}

#[tokio::test]
async fn a_database_sealed_before_the_chain_is_resealed_once_and_then_protected() {
    let Some(pg) = Postgres::start() else { return };
    let a = node(&pg, "a");
    let generated = std::fs::read_to_string(a.dir.path().join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let (status, body) = policy_row(&a, "bank.example", "encrypt").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (name, dir) = a.stop().await;
    let url = pg.url();
    let head = tokio::task::spawn_blocking(move || unchain(&url))
        .await
        .unwrap();
    // And the node's copy as an older postern wrote it: no head held.
    let copy = serde_json::json!({"version": head["version"], "settings": head["settings"]});
    let copy_path = dir.path().join("data/settings.shared-copy.json");
    std::fs::write(&copy_path, serde_json::to_vec(&copy).unwrap()).unwrap();

    let proc = spawn_postern(dir.path(), None, &settings_keys(&pg, name));
    let a = Node { name, dir, proc };
    let lines = a.log_lines("re-sealed in chained form");
    assert_eq!(lines.len(), 1, "{:?}", a.proc.log.lock().unwrap());
    eprintln!("{}", lines[0]);
    assert!(a.has_row("bank.example", "encrypt").await);
    let (status, audit) = a.api(Method::GET, "/api/v1/settings/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let versions: Vec<u64> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![2, 1], "{audit}");
    let page = a.browser().sign_in("admin", &generated).await;
    assert_eq!(page.status, 303, "{}", page.body);

    // From then on, what is put back is refused.
    let old = attacker(&pg, "SELECT sealed FROM postern_settings_current", None).await;
    let (status, body) = policy_row(&a, "bank.example", "may").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    put_back(&pg, &old[0]).await;
    until_refusal(&a, true, Some(("bank.example", "may"))).await;
    // The audit log hangs from the head too: its newest entry deleted, none is shown.
    let sql = "DELETE FROM postern_settings_audit WHERE seq = 3 RETURNING sealed";
    assert_eq!(attacker(&pg, sql, None).await.len(), 1);
    let (status, audit) = a.api(Method::GET, "/api/v1/settings/audit", None).await;
    assert_eq!((status, audit.as_str()), (StatusCode::OK, "[]"));
    assert_logged(&a, "audit version 3 is missing").await;
    assert!(a.proc.stop().await);
}

/// AES-256-GCM under the test's key, as postern seals: nonce, then ciphertext and tag, with
/// the row's name as associated data.
mod sealing {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

    fn key() -> LessSafeKey {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&super::KEY[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).unwrap())
    }

    pub fn open(what: &str, sealed: &[u8]) -> Vec<u8> {
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
        let mut data = data.to_vec();
        key()
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut data)
            .unwrap()
            .to_vec()
    }

    pub fn seal(what: &str, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut data = plain.to_vec();
        key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut data,
            )
            .unwrap();
        [nonce.to_vec(), data].concat()
    }
}

/// The first sign-in on `node` (which made the admin user) and the new password it asks for.
async fn sign_in_and_choose(browser: &mut Browser, node: &Node, new: &str) {
    let generated =
        std::fs::read_to_string(node.dir.path().join("data/initial-admin-password")).unwrap();
    let generated = generated.trim();
    let page = browser.sign_in("admin", generated).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let csrf = browser.csrf("/password").await;
    let form = format!(
        "csrf={csrf}&current={}&new={}&confirm={}",
        urlencode(generated),
        urlencode(new),
        urlencode(new)
    );
    let page = browser.go("POST", "/password", &form).await;
    assert_eq!(page.status, 303, "{}", page.body);
}
