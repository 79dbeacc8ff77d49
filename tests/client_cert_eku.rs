//! The Microsoft 365 connector's certificate whatever its extended key usage (issue 31),
//! over loopback against the real binary: an rcgen CA trusted through `[tls] extra_roots`
//! issues `mail.protection.outlook.com` with clientAuth only, serverAuth only, both, or no
//! EKU, and each is the connector (the mail relays); one for S/MIME only is refused at RCPT,
//! the reply and the log saying it is the EKU.

mod common;

use std::sync::Arc;

use common::process::{Proc, spawn_postern};
use common::sink::{Sink, SinkOptions, TestCa};
use common::{Resp, SmtpClient};
use rcgen::ExtendedKeyUsagePurpose as Eku;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CONNECTOR: &str = "mail.protection.outlook.com";

struct Setup {
    proc: Proc,
    sink: Sink,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

/// postern with the connector on and no trusted network; `outside.example` goes to the sink.
async fn setup() -> Setup {
    let sink = Sink::start(SinkOptions::default()).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[tls]\nextra_roots = [\"{}\"]\n[outbound.routes]\n\"outside.example\" = \"[127.0.0.1]:{}\"\n",
            ca_file.display(),
            sink.addr.port()
        ),
    );
    proc.import_settings(&format!(
        "trusted_networks = []\n[m365]\nenabled = true\ntenants = [\"{TENANT}\"]\n"
    ));
    Setup {
        proc,
        sink,
        ca,
        _dir: dir,
    }
}

/// A TLS client config presenting the connector's certificate with `usages` as its EKU.
fn presenting(ca: &TestCa, usages: &[Eku]) -> Arc<rustls::ClientConfig> {
    postern::tls::install_provider();
    let leaf = ca.leaf_with(&[CONNECTOR], |p| p.extended_key_usages = usages.to_vec());
    let key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
            leaf.1.clone().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![leaf.0.clone().into()], key);
    postern::tls::unauthenticated_client_config_with(Arc::new(certified))
}

/// STARTTLS with that certificate, then a message for outside.example: the RCPT reply, and
/// the end of DATA's when RCPT took it.
async fn send(s: &Setup, usages: &[Eku]) -> (Resp, Option<Resp>) {
    let mut c = SmtpClient::connect(s.proc.smtp, None, None).await;
    c.cmd(&format!("EHLO {CONNECTOR}")).await;
    c.starttls_with(presenting(&s.ca, usages)).await;
    c.cmd(&format!("EHLO {CONNECTOR}")).await;
    assert_eq!(c.cmd("MAIL FROM:<alice@contoso.example>").await.code, 250);
    let rcpt = c.cmd("RCPT TO:<bob@outside.example>").await;
    if rcpt.code != 250 {
        return (rcpt, None);
    }
    let msg = format!("X-MS-Exchange-CrossTenant-Id: {TENANT}\r\nSubject: t\r\n\r\nhello\r\n");
    let end = c.data(msg.as_bytes()).await;
    (rcpt, Some(end))
}

/// The first log line with `needle`, polled until a deadline.
async fn line(proc: &Proc, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no log line with {needle:?}");
}

/// The certificate is the connector's: RCPT and DATA taken, the message relayed, the
/// handshake line naming the connector.
async fn relays_as_the_connector(usages: &[Eku]) {
    let mut s = setup().await;
    let (rcpt, end) = send(&s, usages).await;
    assert_eq!(rcpt.code, 250, "{usages:?}: {rcpt:?}");
    let end = end.unwrap();
    assert_eq!(end.code, 250, "{usages:?}: {end:?}");
    s.sink.next(20).await.expect("relayed to outside.example");
    let tls = line(&s.proc, "TLS connection established from").await;
    assert!(
        tls.contains("Trusted TLS connection established from")
            && tls.ends_with(&format!("Microsoft 365 connector ({CONNECTOR})")),
        "{tls}"
    );
    assert!(
        line(&s.proc, "to=<bob@outside.example>")
            .await
            .contains("status=sent")
    );
    assert!(s.proc.stop().await);
}

#[tokio::test]
async fn a_client_auth_only_certificate_is_the_connector() {
    relays_as_the_connector(&[Eku::ClientAuth]).await;
}

#[tokio::test]
async fn a_server_auth_only_certificate_is_the_connector() {
    relays_as_the_connector(&[Eku::ServerAuth]).await;
}

#[tokio::test]
async fn a_certificate_for_both_roles_is_the_connector() {
    relays_as_the_connector(&[Eku::ServerAuth, Eku::ClientAuth]).await;
}

#[tokio::test]
async fn a_certificate_without_eku_is_the_connector() {
    relays_as_the_connector(&[]).await;
}

#[tokio::test]
async fn an_email_protection_only_certificate_is_refused_naming_the_eku() {
    let s = setup().await;
    let (rcpt, end) = send(&s, &[Eku::EmailProtection]).await;
    assert!(end.is_none());
    let words = "client certificate is not for TLS clients or servers (extended key usage: emailProtection)";
    assert_eq!(rcpt.code, 450, "{rcpt:?}");
    assert_eq!(
        rcpt.first(),
        format!("450 4.7.1 <bob@outside.example>: Relay access denied: {words}"),
    );
    let reject = line(&s.proc, "NOQUEUE: reject: RCPT from").await;
    assert!(
        reject.contains(&format!(
            "450 4.7.1 <bob@outside.example>: Relay access denied: {words}"
        )),
        "{reject}"
    );
    let tls = line(&s.proc, "TLS connection established from").await;
    assert!(
        tls.contains("Untrusted TLS connection established from")
            && tls.ends_with(
            "not the Microsoft 365 connector: certificate is not for TLS clients or servers (extended key usage: emailProtection)"
            ),
        "{tls}"
    );
    assert!(s.proc.stop().await);
}
