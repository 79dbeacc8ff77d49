//! An ECDSA and an RSA certificate bound at once (`ec_certificate` beside `certificate`,
//! Postfix's `smtpd_tls_eccert_file` beside `smtpd_tls_cert_file`), over real handshakes:
//! a client whose signature_algorithms allow only RSA is served the RSA one, any other the
//! ECDSA one, on SMTP STARTTLS and on the admin listener; rebinding or renewing either is
//! seen by the next handshake; a pair that is not one ECDSA and one RSA is refused, naming
//! the field.

mod common;

use std::sync::{Arc, Mutex};

use common::page::{Browser, initial_password, location, urlencode};
use common::process::{Proc, spawn_postern};
use common::*;
use hyper::StatusCode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

/// A self-signed leaf for mx.test.example with a key of `alg`: (cert PEM, key PEM, DER).
fn leaf(alg: &'static rcgen::SignatureAlgorithm) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// The same, expiring in `days` days.
fn leaf_expiring(alg: &'static rcgen::SignatureAlgorithm, days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mx.test.example".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days) + time::Duration::hours(12);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

const RSA: &rcgen::SignatureAlgorithm = &rcgen::PKCS_RSA_SHA256;
const ECDSA: &rcgen::SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

/// A verifier that records the certificate it was shown and checks the handshake's
/// signature with it; its `supported_verify_schemes` are what the client offers in
/// signature_algorithms.
#[derive(Debug)]
struct Recorder {
    provider: CryptoProvider,
    schemes: Vec<SignatureScheme>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// A client config offering the signature schemes `only` keeps of the provider's, and the
/// verifier that records what it was served.
fn client(only: fn(&SignatureScheme) -> bool) -> (Arc<rustls::ClientConfig>, Arc<Recorder>) {
    let provider = aws_lc_rs::default_provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes()
        .into_iter()
        .filter(only)
        .collect();
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        schemes,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    (Arc::new(config), recorder)
}

fn rsa_only(s: &SignatureScheme) -> bool {
    matches!(
        s,
        SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PSS_SHA512
            | SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512
    )
}

fn any(_: &SignatureScheme) -> bool {
    true
}

/// The certificate SMTP STARTTLS serves a client offering the schemes `only` keeps.
async fn smtp_served(
    server: &TestServer,
    only: fn(&SignatureScheme) -> bool,
) -> CertificateDer<'static> {
    let (config, recorder) = client(only);
    let mut c = SmtpClient::connect(server.smtp, None, None).await;
    c.ehlo().await;
    c.starttls_with(config).await;
    c.ehlo().await;
    let seen = recorder.seen.lock().unwrap().clone();
    seen.expect("a certificate was served")
}

/// The certificate the admin listener serves such a client (a TLS handshake alone).
async fn admin_served(
    server: &TestServer,
    only: fn(&SignatureScheme) -> bool,
) -> CertificateDer<'static> {
    let (config, recorder) = client(only);
    let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let name = ServerName::try_from("mx.test.example").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    seen.expect("a certificate was served")
}

async fn import(server: &TestServer, name: &str, (cert, key): (&str, &str), replace: bool) {
    let body = json!({"name": name, "cert": cert, "key": key, "replace": replace});
    let (status, body) = server
        .api_json(hyper::Method::POST, "/api/v1/certificates", Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn bind(rsa: &str, ec: &str) -> Value {
    json!({
        "inbound": {"tls_mode": "may", "certificate": rsa, "ec_certificate": ec},
        "admin": {"certificate": rsa, "ec_certificate": ec},
    })
}

#[tokio::test]
async fn each_client_gets_the_certificate_its_signature_algorithms_allow() {
    let server = TestServer::start().await;
    let (rsa_pem, rsa_key, rsa_der) = leaf(RSA);
    let (ec_pem, ec_key, ec_der) = leaf(ECDSA);
    import(&server, "mx-rsa", (&rsa_pem, &rsa_key), false).await;
    import(&server, "mx-ec", (&ec_pem, &ec_key), false).await;
    // One certificate bound: every client gets it, as before.
    server
        .set(json!({"inbound": {"tls_mode": "may", "certificate": "mx-rsa"}}))
        .await;
    assert_eq!(smtp_served(&server, any).await, rsa_der);

    server.set(bind("mx-rsa", "mx-ec")).await;
    assert_eq!(
        smtp_served(&server, rsa_only).await,
        rsa_der,
        "SMTP, RSA-only client"
    );
    assert_eq!(
        smtp_served(&server, any).await,
        ec_der,
        "SMTP, default client"
    );
    assert_eq!(
        admin_served(&server, rsa_only).await,
        rsa_der,
        "admin, RSA-only client"
    );
    assert_eq!(
        admin_served(&server, any).await,
        ec_der,
        "admin, default client"
    );
    // The CLI pins what it is served, the ECDSA one: the control API still answers.
    server.get_settings().await;

    // The Microsoft 365 checklist judges what Exchange Online (which offers ECDSA) is served.
    let (status, list) = server
        .api_json(hyper::Method::GET, "/api/v1/m365/checklist", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let step = &list["steps"][0];
    let said = format!("{} {}", step["seen"], step["problems"]);
    assert!(said.contains("mx-ec") && !said.contains("mx-rsa"), "{said}");
}

#[tokio::test]
async fn rotating_either_of_the_pair_is_seen_by_the_next_handshake() {
    let server = TestServer::start().await;
    let (rsa_pem, rsa_key, _) = leaf(RSA);
    let (rsa2_pem, rsa2_key, rsa2_der) = leaf(RSA);
    let (ec_pem, ec_key, ec_der) = leaf(ECDSA);
    import(&server, "mx-rsa", (&rsa_pem, &rsa_key), false).await;
    import(&server, "mx-rsa-2027", (&rsa2_pem, &rsa2_key), false).await;
    import(&server, "mx-ec", (&ec_pem, &ec_key), false).await;
    server.set(bind("mx-rsa", "mx-ec")).await;

    // Rebinding the RSA one to another RSA certificate: no restart.
    server.set(bind("mx-rsa-2027", "mx-ec")).await;
    assert_eq!(smtp_served(&server, rsa_only).await, rsa2_der);
    assert_eq!(admin_served(&server, rsa_only).await, rsa2_der);
    assert_eq!(smtp_served(&server, any).await, ec_der);

    // Renewing the ECDSA one under its name (`replace`): served at once, the RSA one kept.
    let (ec2_pem, ec2_key, ec2_der) = leaf(ECDSA);
    import(&server, "mx-ec", (&ec2_pem, &ec2_key), true).await;
    assert_eq!(smtp_served(&server, any).await, ec2_der);
    assert_eq!(admin_served(&server, any).await, ec2_der);
    assert_eq!(smtp_served(&server, rsa_only).await, rsa2_der);
    server.get_settings().await;
}

#[tokio::test]
async fn a_pair_that_is_not_one_ecdsa_and_one_rsa_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let (rsa_pem, rsa_key, _) = leaf(RSA);
    let (ec_pem, ec_key, _) = leaf(ECDSA);
    let (ec2_pem, ec2_key, _) = leaf(&rcgen::PKCS_ECDSA_P384_SHA384);
    import(&server, "mx-rsa", (&rsa_pem, &rsa_key), false).await;
    import(&server, "mx-ec", (&ec_pem, &ec_key), false).await;
    import(&server, "mx-ec-384", (&ec2_pem, &ec2_key), false).await;
    let inbound = |rsa: &str, ec: &str| json!({"inbound": {"tls_mode": "may", "certificate": rsa, "ec_certificate": ec}});
    let admin = |rsa: &str, ec: &str| json!({"admin": {"certificate": rsa, "ec_certificate": ec}});
    for (doc, field, words) in [
        (
            inbound("mx-ec", "mx-ec-384"),
            "inbound.certificate",
            "must be RSA",
        ),
        (
            inbound("mx-rsa", "nosuch"),
            "inbound.ec_certificate",
            "no certificate named \"nosuch\"",
        ),
        (
            inbound("mx-ec", "mx-rsa"),
            "inbound.ec_certificate",
            "must be ECDSA",
        ),
        (
            inbound("mx-rsa", "system"),
            "inbound.ec_certificate",
            "system self-signed",
        ),
        (
            admin("mx-ec", "mx-ec-384"),
            "admin.certificate",
            "must be RSA",
        ),
        (
            admin("mx-rsa", "nosuch"),
            "admin.ec_certificate",
            "no certificate named",
        ),
    ] {
        let (status, body) = server.put_settings(doc.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}: {body}");
        assert_eq!(body["field"], field, "{doc}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{doc}: {error}");
    }
    // Nothing was changed: the default client still gets the system certificate.
    assert_eq!(smtp_served(&server, any).await, server.system_cert());
}

const PASSWORD: &str = "correct-horse-battery";

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

/// The real binary: the SMTP TLS page binds the pair and says a bad ECDSA binding under its
/// own field; `postern check` then names the ECDSA binding in the expiry warning of the
/// ECDSA certificate, as the log's daily warning does.
#[tokio::test]
async fn the_page_binds_the_pair_and_check_warns_of_either_expiring() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut b = admin(&proc, dir.path()).await;
    let client =
        postern::admin::client::ApiClient::new(proc.api(), &dir.path().join("data")).unwrap();
    let (rsa_pem, rsa_key) = leaf_expiring(RSA, 300);
    let (ec_pem, ec_key) = leaf_expiring(ECDSA, 10);
    for (name, cert, key) in [("mx-rsa", &rsa_pem, &rsa_key), ("mx-ec", &ec_pem, &ec_key)] {
        let body = json!({"name": name, "cert": cert, "key": key});
        let (status, answer) = client
            .request(
                hyper::Method::POST,
                "/api/v1/certificates",
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let form = |ec: &str, csrf: &str| {
        format!(
            "csrf={csrf}&inbound_mode=may&inbound_certificate=mx-rsa&inbound_ec_certificate={ec}"
        )
    };
    let csrf = b.csrf("/tls").await;
    let page = b.go("POST", "/tls", &form("nosuch", &csrf)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body
            .contains("Not saved: see the message under the ECDSA certificate field."),
        "{}",
        page.body
    );
    let field = page.body.find("id=\"inbound_ec_certificate\"").unwrap();
    let error = page
        .body
        .find("import it first")
        .expect("the error is shown");
    assert!(error > field, "the error is under the ECDSA field");

    let csrf = b.csrf("/tls").await;
    let page = b.submit("/tls", &form("mx-ec", &csrf)).await;
    assert!(page.body.contains("Saved and applied"), "{}", page.body);
    assert!(page.body.contains("value=\"mx-ec\""), "{}", page.body);
    assert!(proc.terminate(), "postern stops cleanly");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check", "--config"])
        .arg(dir.path().join("postern.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let warning = said
        .lines()
        .find(|l| l.contains("certificate \"mx-ec\""))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        warning.contains("bound to inbound.ec_certificate (SMTP STARTTLS (inbound), ECDSA)"),
        "{warning}"
    );
    assert!(warning.contains("expires in"), "{warning}");
}

/// An ACME certificate's key is read from its files, not the store: bound as the ECDSA one
/// while its files hold an RSA key, the server keeps serving what it served and says why,
/// and `postern check` names the field.
#[tokio::test]
async fn an_acme_certificate_of_the_wrong_key_is_refused_where_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let (pem, key, _) = leaf(RSA);
    std::fs::create_dir_all(live.join("mail-ec")).unwrap();
    std::fs::write(live.join("mail-ec/fullchain.pem"), &pem).unwrap();
    std::fs::write(live.join("mail-ec/privkey.pem"), &key).unwrap();
    let extra = format!("[tls]\nacme_live_dir = \"{}\"\n", live.display());
    let proc = spawn_postern(dir.path(), None, &extra);
    let client =
        postern::admin::client::ApiClient::new(proc.api(), &dir.path().join("data")).unwrap();
    let (rsa_pem, rsa_key, _) = leaf(RSA);
    let call = |body: Value| {
        let client = &client;
        async move {
            let body = serde_json::to_vec(&body).unwrap();
            let (status, answer) = client
                .request(hyper::Method::POST, "/api/v1/certificates", Some(body))
                .await
                .unwrap();
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    };
    call(json!({"name": "mx-rsa", "cert": rsa_pem, "key": rsa_key})).await;
    call(json!({"name": "mail-ec", "acme": true})).await;
    let doc = json!({"inbound": {"tls_mode": "may", "certificate": "mx-rsa", "ec_certificate": "mail-ec"}});
    let (status, answer) = client
        .request(
            hyper::Method::PUT,
            "/api/v1/settings",
            Some(serde_json::to_vec(&doc).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let said = loop {
        let found = proc
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("SMTP certificate not changed"))
            .cloned();
        if let Some(l) = found {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no log line");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        said.contains("\"mail-ec\"") && said.contains("ECDSA"),
        "{said}"
    );
    assert!(proc.terminate(), "postern stops cleanly");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check", "--config"])
        .arg(dir.path().join("postern.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let error = said
        .lines()
        .find(|l| l.starts_with("postern: error: certificate \"mail-ec\""))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        error
            .contains("inbound.ec_certificate needs an ECDSA key, this certificate has an RSA key"),
        "{error}"
    );
}
