//! The certificate store through the control API: checked imports (each bad input its own
//! error, nothing stored), Hermes' binding rules, the in-use guard, a hot swap seen over real
//! handshakes while a session in flight finishes, ACME live directories renewed by symlink
//! swap, and openssl s_client seeing the bound certificate.

mod common;

use std::path::Path;

use common::*;
use hyper::{Method, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for `cn` (also its SAN) signed by `ca`: (cert PEM, key PEM, cert DER).
fn leaf(ca: &Ca, cn: &str) -> (String, String, CertificateDer<'static>) {
    leaf_for_days(ca, cn, 365)
}

fn leaf_for_days(ca: &Ca, cn: &str, days: i64) -> (String, String, CertificateDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![cn.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    // Half a day past the whole days: `days_left`, read twice a moment apart (the gauge and
    // the listing), cannot cross a day boundary between the reads.
    params.not_after = now + time::Duration::days(days) + time::Duration::hours(12);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

async fn post(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let (status, text) = server
        .api(Method::POST, "/api/v1/certificates", Some(&body))
        .await;
    // No line of the key's base64 comes back, whatever the outcome.
    for line in body["key"].as_str().unwrap_or("").lines() {
        if !line.starts_with("-----") && line.len() > 16 {
            assert!(!text.contains(line), "key material in a response: {text}");
        }
    }
    (status, serde_json::from_str(&text).unwrap_or_default())
}

async fn list(server: &TestServer) -> Vec<Value> {
    let (status, text) = server.api(Method::GET, "/api/v1/certificates", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains("PRIVATE KEY"));
    serde_json::from_str(&text).unwrap()
}

async fn delete(server: &TestServer, name: &str) -> (StatusCode, Value) {
    server
        .api_json(
            Method::DELETE,
            &format!("/api/v1/certificates/{name}"),
            None,
        )
        .await
}

/// STARTTLS that succeeds only if the server presents exactly `cert`.
async fn handshake_expecting(server: &TestServer, cert: &CertificateDer<'static>) -> SmtpClient {
    let mut c = SmtpClient::connect(server.smtp, None, Some(cert.clone())).await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    c
}

#[tokio::test]
async fn import_checks_each_input_and_stores_nothing_on_failure() {
    let server = TestServer::start().await;
    let ca = new_ca("postern import CA");
    let (cert, key, _) = leaf(&ca, "mx.test.example");
    let (_, other_key, _) = leaf(&ca, "mx.test.example");
    let bad: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "x", "cert": "hello", "key": key}),
            "cert",
            "not PEM",
        ),
        (
            json!({"name": "x", "cert": key, "key": key}),
            "cert",
            "not a certificate: line 1",
        ),
        (
            json!({"name": "x", "cert": cert, "key": cert}),
            "key",
            "not a private key: line 1",
        ),
        (
            json!({"name": "x", "cert": cert, "key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n"}),
            "key",
            "the private key is encrypted: paste the unencrypted key",
        ),
        (
            json!({"name": "x", "cert": cert, "key": other_key}),
            "key",
            "the private key does not match the certificate",
        ),
        (
            json!({"name": "x", "cert": cert, "key": key, "chain": new_ca("another CA").pem}),
            "chain",
            "the chain does not link up",
        ),
        (
            json!({"name": "bad name!", "cert": cert, "key": key}),
            "name",
            "must be",
        ),
        (json!({"name": "x", "key": key}), "cert", "required"),
        (
            json!({"name": "..", "acme": true}),
            "name",
            "starting with a letter or digit",
        ),
        (
            json!({"name": "nothere", "acme": true}),
            "name",
            "No such file or directory",
        ),
    ];
    for (body, field, text) in bad {
        let (status, resp) = post(&server, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        assert_eq!(resp["field"], field, "{resp}");
        assert!(resp["error"].as_str().unwrap().contains(text), "{resp}");
    }
    // Nothing was stored: only the system certificate is listed, and where it is served.
    let all = list(&server).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0]["bound_to"],
        json!([
            "SMTP STARTTLS (inbound), while no other is bound",
            "admin page, while no other is bound"
        ])
    );
    assert_eq!(
        (&all[0]["name"], &all[0]["type"], &all[0]["system"]),
        (&json!("system"), &json!("System"), &json!(true))
    );

    let (status, info) = post(
        &server,
        json!({"name": "mx", "cert": cert, "key": key, "chain": ca.pem}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["type"], "Imported");
    assert_eq!(info["subject"], "CN=mx.test.example");
    assert_eq!(info["issuer"], "CN=postern import CA");
    assert_eq!(info["sans"], json!(["mx.test.example"]));
    assert_eq!(info["chain_length"], 1);
    for f in ["serial", "not_after", "sha256"] {
        assert!(!info[f].as_str().unwrap().is_empty(), "{f}: {info}");
    }
    assert!(info.get("warnings").is_none(), "{info}");
    // The same name again is a conflict; the system name is reserved.
    let (status, _) = post(&server, json!({"name": "mx", "cert": cert, "key": key})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = post(&server, json!({"name": "system", "cert": cert, "key": key})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Names are unique without regard to case, even with replace.
    let (status, body) = post(
        &server,
        json!({"name": "MX", "cert": cert, "key": key, "replace": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("a certificate named \"mx\" exists: names are unique without regard to case"),
        "{body}"
    );
    let (status, _) = post(&server, json!({"name": "System", "cert": cert, "key": key})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // A certificate for another name is stored with the warning strict verifiers deserve.
    let (c2, k2, _) = leaf(&ca, "elsewhere.example");
    let (status, info) = post(&server, json!({"name": "other", "cert": c2, "key": k2})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        info["warnings"][0]
            .as_str()
            .unwrap()
            .contains("mx.test.example is not among the certificate's names"),
        "{info}"
    );
    // Expiring soon: stored with a warning, and the daily check logs it (under 21 days).
    let (c3, k3, _) = leaf_for_days(&ca, "mx.test.example", 10);
    let (status, info) = post(&server, json!({"name": "soon", "cert": c3, "key": k3})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        info["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("the certificate expires in"),
        "{info}"
    );
    let logged = server.certs.expiry_warnings();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].starts_with("warning: certificate soon expires in "),
        "{logged:?}"
    );
    // `postern cert import` names the file the server's field refers to.
    let key_file = server.dir.path().join("mx.key");
    std::fs::write(&key_file, &key).unwrap();
    let k = key_file.to_str().unwrap();
    let (ok, _, err) = server
        .cli(&["cert", "import", "--name", "x", "--cert", k, "--key", k])
        .await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{k}: 400 Bad Request: cert: not a certificate: line 1"
        )),
        "{err}"
    );
    // `postern cert list` shows the fields Hermes shows.
    let (ok, out, err) = server.cli(&["cert", "list"]).await;
    assert!(ok, "{err}");
    for needle in [
        "Name:        mx",
        "Type:        Imported",
        "Subject:     CN=mx.test.example",
        "Issuer:      CN=postern import CA",
        "Type:        System",
    ] {
        assert!(out.contains(needle), "{needle} missing: {out}");
    }
    assert!(!out.contains("PRIVATE KEY"));
    // Days left per certificate, for Prometheus.
    let (status, text) = server.api(Method::GET, "/api/v1/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let line = text
        .lines()
        .find(|l| l.starts_with("postern_certificate_days_left{") && l.contains("name=\"mx\""))
        .unwrap_or_else(|| panic!("no gauge for mx: {text}"));
    let days: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let listed = list(&server).await;
    let mx = listed.iter().find(|c| c["name"] == "mx").unwrap();
    assert_eq!(days, mx["days_left"].as_f64().unwrap(), "{line}");
    assert!(line.contains("type=\"Imported\""), "{line}");
}

#[tokio::test]
async fn binding_rules_and_the_in_use_guard() {
    let server = TestServer::start().await;
    let ca = new_ca("postern binding CA");
    let (cert, key, _) = leaf(&ca, "mx.test.example");
    assert_eq!(
        post(&server, json!({"name": "mx", "cert": cert, "key": key}))
            .await
            .0,
        StatusCode::CREATED
    );
    let bind = |mode: &str, cert: &str| json!({"inbound": {"tls_mode": mode, "certificate": cert}});
    for (doc, error) in [
        (
            bind("may", ""),
            "SMTP TLS Certificate cannot be blank when TLS Mode is set to Opportunistic or Mandatory",
        ),
        (
            bind("encrypt", "nosuch"),
            "The SMTP TLS Certificate you entered is not valid",
        ),
        (
            bind("encrypt", "system"),
            "You cannot select the system-self-signed Certificate for SMTP TLS",
        ),
    ] {
        let (status, body) = server.put_settings(doc).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], "inbound.certificate");
        assert_eq!(body["error"], format!("inbound.certificate: {error}"));
    }
    server.set(bind("encrypt", "mx")).await;
    let (status, body) = delete(&server, "mx").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["error"],
        "certificate \"mx\" is in use: bound to inbound.certificate (SMTP STARTTLS (inbound))"
    );
    // The admin listener may bind it too (or the system one); the CLI pins what it serves.
    let (status, body) = server
        .put_settings(json!({"inbound": {"tls_mode": "encrypt", "certificate": "mx"}, "admin": {"certificate": "nosuch"}}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("admin.certificate"))
    );
    server
        .set(json!({"inbound": {"tls_mode": "encrypt", "certificate": "mx"}, "admin": {"certificate": "mx"}}))
        .await;
    let (ok, out, err) = server.cli(&["cert", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "Used for:    inbound.certificate (SMTP STARTTLS (inbound)), admin.certificate (admin page)"
        ),
        "{out}"
    );
    server.set(bind("encrypt", "mx")).await;
    let (status, _) = delete(&server, "system").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = delete(&server, "nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.set(json!({"inbound": {"tls_mode": "may"}})).await;
    let (ok, _, err) = server.cli(&["cert", "delete", "mx"]).await;
    assert!(ok, "{err}");
    assert_eq!(list(&server).await.len(), 1);
}

#[tokio::test]
async fn rebinding_swaps_for_the_next_handshake_while_a_session_finishes() {
    let server = TestServer::start().await;
    let ca = new_ca("postern swap CA");
    let (a_pem, a_key, a_der) = leaf(&ca, "mx.test.example");
    let (b_pem, b_key, b_der) = leaf(&ca, "mx.test.example");
    for (name, cert, key) in [("a", &a_pem, &a_key), ("b", &b_pem, &b_key)] {
        let (status, body) = post(&server, json!({"name": name, "cert": cert, "key": key})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let bind = |name: &str| json!({"inbound": {"tls_mode": "may", "certificate": name}, "trusted_networks": ["127.0.0.1/32"]});
    server.set(bind("a")).await;
    let mut first = handshake_expecting(&server, &a_der).await;
    assert_eq!(first.cmd("MAIL FROM:<app@inside.example>").await.code, 250);
    assert_eq!(first.cmd("RCPT TO:<partner@other.example>").await.code, 250);

    server.set(bind("b")).await;
    // The next handshake is served the new certificate (pinned: only b's passes) ...
    let mut second = handshake_expecting(&server, &b_der).await;
    assert_eq!(second.cmd("NOOP").await.code, 250);
    // ... while the session opened before completes its message on the old one.
    let r = first.data(&message("across the swap", "")).await;
    assert_eq!(r.code, 250, "{r:?}");

    // A renewal under the same name (`--replace`) is served at once where it is bound.
    let (c_pem, c_key, c_der) = leaf(&ca, "mx.test.example");
    let (status, _) = post(&server, json!({"name": "b", "cert": c_pem, "key": c_key})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a name is not replaced by accident"
    );
    let (status, body) = post(
        &server,
        json!({"name": "b", "cert": c_pem, "key": c_key, "replace": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    handshake_expecting(&server, &c_der).await;
}

/// certbot's layout: live/NAME/{fullchain,privkey}.pem are symlinks into archive/NAME/.
fn certbot_write(root: &Path, name: &str, n: u32, chain: &str, key: &str) {
    let (archive, live) = (
        root.join("archive").join(name),
        root.join("live").join(name),
    );
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    for (file, text) in [("fullchain", chain), ("privkey", key)] {
        std::fs::write(archive.join(format!("{file}{n}.pem")), text).unwrap();
        // A new symlink renamed over the old one: the switch is atomic, as certbot's is.
        let tmp = live.join(format!("{file}.pem.new"));
        std::os::unix::fs::symlink(format!("../../archive/{name}/{file}{n}.pem"), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(format!("{file}.pem"))).unwrap();
    }
}

#[tokio::test]
async fn acme_directory_renewal_is_swapped_in_and_a_bad_pair_is_refused() {
    let acme = tempfile::tempdir().unwrap();
    let ca = new_ca("postern ACME CA");
    let (c1, k1, d1) = leaf(&ca, "mx.test.example");
    certbot_write(acme.path(), "mail", 1, &format!("{c1}{}", ca.pem), &k1);
    let server = TestServer::start_with(&format!(
        "[tls]\nacme_live_dir = \"{}\"\nacme_watch_secs = 1\n",
        acme.path().join("live").display()
    ))
    .await;
    let mut renewals = server.certs.subscribe_renewals();
    let (status, info) = post(&server, json!({"name": "mail", "acme": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["type"], "Acme");
    assert_eq!(info["chain_length"], 1);
    server
        .set(json!({"inbound": {"tls_mode": "may", "certificate": "mail"}}))
        .await;
    handshake_expecting(&server, &d1).await;

    // Renewal: new files, symlinks switched; the watcher swaps it in.
    let (c2, k2, d2) = leaf(&ca, "mx.test.example");
    certbot_write(acme.path(), "mail", 2, &format!("{c2}{}", ca.pem), &k2);
    let line = next_renewal(&mut renewals).await;
    assert!(line.starts_with("certificate mail renewed from "), "{line}");
    handshake_expecting(&server, &d2).await;

    // A mismatched pair (a new certificate with the old key) is refused; the renewed one
    // stays served.
    let (c3, _, _) = leaf(&ca, "mx.test.example");
    certbot_write(acme.path(), "mail", 3, &c3, &k2);
    let line = next_renewal(&mut renewals).await;
    assert!(
        line.contains("renewed files refused, keeping the current certificate")
            && line.contains("the private key does not match the certificate"),
        "{line}"
    );
    handshake_expecting(&server, &d2).await;
}

async fn next_renewal(rx: &mut tokio::sync::watch::Receiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.changed())
        .await
        .expect("the ACME watcher saw no change within 20 s")
        .unwrap();
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn openssl_s_client_sees_the_bound_certificate() {
    if !have("openssl") {
        return;
    }
    let server = TestServer::start().await;
    let ca = new_ca("postern s_client CA");
    let (cert, key, _) = leaf(&ca, "bound.test.example");
    let (status, _) = post(&server, json!({"name": "bound", "cert": cert, "key": key})).await;
    assert_eq!(status, StatusCode::CREATED);
    server
        .set(json!({"inbound": {"tls_mode": "may", "certificate": "bound"}}))
        .await;
    for version in ["-tls1_2", "-tls1_3"] {
        let text = s_client_starttls(server.smtp, &[version]).await;
        let want = if version == "-tls1_2" {
            "Protocol version: TLSv1.2"
        } else {
            "Protocol version: TLSv1.3"
        };
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("CN = bound.test.example") || text.contains("CN=bound.test.example"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn relay_domain_presents_its_client_certificate() {
    use common::sink::{Sink, SinkOptions};
    let ca = new_ca("postern connector CA");
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        client_ca: Some(ca.pem.clone()),
        ..SinkOptions::default()
    })
    .await;
    let mut server = TestServer::start().await;
    let (cert, key, der) = leaf(&ca, "mx.test.example");
    let (status, _) = post(
        &server,
        json!({"name": "gateway", "cert": cert, "key": key}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let domain = |cert: &str| {
        json!({"trusted_networks": ["127.0.0.1/32"], "relay_domains": [{
            "domain": "tenant.example",
            "transport": format!("[127.0.0.1]:{}", sink.addr.port()),
            "client_certificate": cert,
        }]})
    };
    let (status, body) = server.put_settings(domain("nosuch")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "relay_domains[0].client_certificate");
    server.set(domain("gateway")).await;

    server
        .submit(
            "app@inside.example",
            &["user@tenant.example"],
            &message("to the tenant", ""),
        )
        .await;
    let got = sink.next(20).await.expect("not delivered");
    assert_eq!(got.client_cert.as_deref(), Some(der.as_ref()));
    assert_eq!(
        server
            .next_event_for("user@tenant.example", 20)
            .await
            .status,
        "sent"
    );
    // In use: not deletable, and the error says where.
    let (status, body) = delete(&server, "gateway").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains(
            "relay_domains[0].client_certificate (client certificate for relay domain tenant.example)"
        ),
        "{body}"
    );
}
