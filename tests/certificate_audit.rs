//! Certificate changes in the audit log (issue 28, item 4), over the control API of the real
//! binary: an import, a renewal, a binding and a deletion each a version with who, when and
//! the certificate's subject, serial and SHA-256 (never its key), in the embedded store and in
//! the shared PostgreSQL one, where the certificate row and its audit entry are one write of
//! the chain (an older copy of the row put back is still refused). A restore's dry run says
//! what it would change, the bindings it undoes included, and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::process::{Proc, spawn_postern};
use hyper::{Method, StatusCode};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Node {
    name: &'static str,
    dir: tempfile::TempDir,
    proc: Proc,
}

impl Node {
    fn start(extra: &str, name: &'static str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let proc = spawn_postern(dir.path(), None, extra);
        Node { name, dir, proc }
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let data = self.dir.path().join("data");
        let client = postern::admin::client::ApiClient::new(self.proc.api(), &data).unwrap();
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (status, bytes) = client.request(method, path, body).await.unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "{path}: {text}");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn audit(&self) -> Vec<serde_json::Value> {
        let (status, audit) = self.api(Method::GET, "/api/v1/settings/audit", None).await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        audit.as_array().unwrap().clone()
    }

    /// Until the newest audit entry names a certificate change `action`; that entry.
    async fn until_audited(&self, action: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let audit = self.audit().await;
            if audit[0]["certificates"][0]["action"] == action {
                return audit[0].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {}: no {action} entry: {audit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn import(&self, name: &str, (cert, key): &(String, String), replace: bool) {
        let body = serde_json::json!({"name": name, "cert": cert, "key": key, "replace": replace});
        let (status, info) = self
            .api(Method::POST, "/api/v1/certificates", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{info}");
    }
}

/// (certificate PEM, key PEM) and the facts the audit log names it by.
fn certificate() -> ((String, String), (String, String, String)) {
    use sha2::Digest;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    let sha: String = sha2::Sha256::digest(cert.der())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let facts = (
        parsed.subject().to_string(),
        parsed.raw_serial_as_string(),
        sha,
    );
    ((cert.pem(), key.serialize_pem()), facts)
}

fn assert_names(change: &serde_json::Value, (subject, serial, sha256): &(String, String, String)) {
    assert_eq!(change["subject"], subject.as_str(), "{change}");
    assert_eq!(change["serial"], serial.as_str(), "{change}");
    assert_eq!(change["sha256"], sha256.as_str(), "{change}");
}

#[tokio::test]
async fn certificate_changes_and_a_restore_preview_in_the_embedded_store() {
    let node = Node::start("", "a");
    let (pem, facts) = certificate();
    node.import("mx", &pem, false).await;
    let entry = node.until_audited("imported").await;
    assert_eq!(
        (&entry["version"], &entry["actor"]),
        (&2.into(), &"api".into())
    );
    assert_names(&entry["certificates"][0], &facts);
    assert_eq!(
        entry["changes"],
        serde_json::json!([]),
        "the settings did not change"
    );

    let (pem2, facts2) = certificate();
    node.import("mx", &pem2, true).await;
    let entry = node.until_audited("replaced").await;
    assert_names(&entry["certificates"][0], &facts2);
    assert_eq!(
        entry["certificates"][0]["replaced"]["serial"],
        facts.1.as_str()
    );

    let bind = serde_json::json!({"inbound": {"tls_mode": "may", "certificate": "mx"}});
    let (status, body) = node
        .api(Method::PATCH, "/api/v1/settings", Some(bind))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entry = node.until_audited("bound").await;
    assert_eq!(entry["certificates"][0]["place"], "SMTP STARTTLS (inbound)");
    assert_names(&entry["certificates"][0], &facts2);

    // What restoring the first version would do: said, and nothing done.
    let (status, plan) = node
        .api(
            Method::POST,
            "/api/v1/settings/restore/1?dry_run=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["against"], 4, "{plan}");
    assert_eq!(plan["fields"][0]["path"], "inbound.certificate", "{plan}");
    assert_eq!(plan["certificates"][0]["action"], "unbound", "{plan}");
    assert_eq!(node.audit().await.len(), 4, "a dry run stores nothing");

    let (status, _) = node
        .api(
            Method::PATCH,
            "/api/v1/settings",
            Some(serde_json::json!({"inbound": {"tls_mode": "may"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node.until_audited("unbound").await["version"], 5);
    let (status, _) = node
        .api(Method::DELETE, "/api/v1/certificates/mx", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let entry = node.until_audited("deleted").await;
    assert_names(&entry["certificates"][0], &facts2);
    // Version 4 bound a certificate that is gone: its restore says so before it is tried.
    let (_, plan) = node
        .api(
            Method::POST,
            "/api/v1/settings/restore/4?dry_run=true",
            None,
        )
        .await;
    assert_eq!(
        plan["missing"],
        serde_json::json!([{"name": "mx", "place": "SMTP STARTTLS (inbound)"}])
    );
    assert!(node.proc.stop().await);
}

#[tokio::test]
async fn certificate_changes_are_audited_in_the_shared_database_and_chained() {
    let Some(pg) = Postgres::start() else { return };
    let keys = |name: &str| {
        format!(
            "[settings]\ndatabase = \"{}\"\nkey = \"{KEY}\"\nnode = \"{name}\"\n",
            pg.url()
        )
    };
    let a = Node::start(&keys("a"), "a");
    let b = Node::start(&keys("b"), "b");
    let (pem, facts) = certificate();
    a.import("mx", &pem, false).await;
    // Seen alike from the other node: who, what, and the facts.
    let entry = b.until_audited("imported").await;
    assert_eq!(
        (&entry["version"], &entry["actor"]),
        (&2.into(), &"api".into())
    );
    assert_names(&entry["certificates"][0], &facts);
    let url = pg.url();
    let old_row = tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.query_one(
            "SELECT sealed FROM postern_certificates WHERE name = 'mx'",
            &[],
        )
        .unwrap()
        .get::<_, Vec<u8>>(0)
    })
    .await
    .unwrap();

    let (pem2, facts2) = certificate();
    b.import("mx", &pem2, true).await;
    let entry = a.until_audited("replaced").await;
    assert_names(&entry["certificates"][0], &facts2);
    for node in [&a, &b] {
        let versions: Vec<u64> = node
            .audit()
            .await
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            vec![3, 2, 1],
            "node {}: the whole chain",
            node.name
        );
    }

    // The older copy of the row, put back without the key, is refused: the head that was
    // written with the renewal names the new row.
    let url = pg.url();
    tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.execute(
            "UPDATE postern_certificates SET sealed = $1 WHERE name = 'mx'",
            &[&old_row],
        )
        .unwrap();
    })
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let log = a.proc.log.lock().unwrap().join("\n");
        if log.contains("postern_certificates/mx is not the row") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{log}");
        drop(log);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.proc.stop().await && b.proc.stop().await);
}
