//! The Microsoft 365 connector as a relay source, over loopback against the real binary: an
//! rcgen CA stands in for the public roots (`[tls] extra_roots`), a client certificate
//! named `mail.protection.outlook.com` for Exchange Online's. Each way of not being the
//! connector is refused with its own reply and log line; tenant headers from anyone else
//! give no rights and do not travel.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::process::{Proc, spawn_postern};
use common::sink::{Sink, SinkOptions, TestCa};
use common::{Resp, SmtpClient};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// A certificate and its key (DER), as `TestCa::leaf` makes them.
type Leaf = Arc<(Vec<u8>, Vec<u8>)>;

struct Setup {
    proc: Proc,
    sink: Sink,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

/// postern with the connector on, nothing trusted by address; `outside.example` routed to
/// the sink, `contoso.example` a relay domain delivered there too.
async fn setup(ranges: &str) -> Setup {
    let sink = Sink::start(SinkOptions::default()).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let port = sink.addr.port();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[tls]\nextra_roots = [\"{}\"]\n[outbound.routes]\n\"outside.example\" = \"[127.0.0.1]:{port}\"\n",
            ca_file.display()
        ),
    );
    proc.import_settings(&format!(
        "trusted_networks = [\"127.0.0.9/32\"]\n[[relay_domains]]\ndomain = \"contoso.example\"\ntransport = \"[127.0.0.1]:{port}\"\n[m365]\nenabled = true\ntenants = [\"{TENANT}\"]\nranges = [{ranges}]\n"
    ));
    Setup {
        proc,
        sink,
        ca,
        _dir: dir,
    }
}

/// A TLS client config presenting `leaf` (any server certificate accepted: the test is
/// about the client's).
fn with_cert(leaf: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    postern::tls::install_provider();
    match leaf {
        None => postern::tls::unauthenticated_client_config(),
        Some(leaf) => {
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            let key = provider
                .key_provider
                .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
                    leaf.1.clone().into(),
                ))
                .unwrap();
            let certified = rustls::sign::CertifiedKey::new(vec![leaf.0.clone().into()], key);
            postern::tls::unauthenticated_client_config_with(Arc::new(certified))
        }
    }
}

/// EHLO, STARTTLS (presenting `leaf`), EHLO, MAIL and one RCPT; then DATA if RCPT took it.
/// (RCPT reply, final reply).
async fn attempt(
    s: &Setup,
    from: Option<IpAddr>,
    leaf: Option<&Leaf>,
    rcpt: &str,
    headers: &str,
) -> (Resp, Option<Resp>) {
    let mut c = SmtpClient::connect(s.proc.smtp, from, None).await;
    c.cmd("EHLO mail.protection.outlook.com").await;
    c.starttls_with(with_cert(leaf)).await;
    c.cmd("EHLO mail.protection.outlook.com").await;
    assert_eq!(c.cmd("MAIL FROM:<alice@contoso.example>").await.code, 250);
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    if r.code != 250 {
        return (r, None);
    }
    let msg = format!("{headers}From: alice@contoso.example\r\nSubject: t\r\n\r\nhello\r\n");
    let end = c.data(msg.as_bytes()).await;
    (r, Some(end))
}

/// The first log line with `needle`, once it is there.
async fn line(proc: &Proc, needle: &str) -> String {
    for _ in 0..400 {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no log line with {needle:?}");
}

fn tenant_header() -> String {
    format!("X-MS-Exchange-CrossTenant-Id: {TENANT}\r\n")
}

#[tokio::test]
async fn the_connector_relays_an_allowed_tenants_mail_and_nothing_else() {
    let mut s = setup("").await;
    let good = s.ca.leaf(&[
        "mail.protection.outlook.com",
        "*.mail.protection.outlook.com",
    ]);

    // Allowed tenant: relayed to the outside domain, tenant on the record.
    let (rcpt, end) = attempt(
        &s,
        None,
        Some(&good),
        "bob@outside.example",
        &tenant_header(),
    )
    .await;
    assert_eq!(rcpt.code, 250, "{rcpt:?}");
    let end = end.unwrap();
    assert_eq!(end.code, 250, "{end:?}");
    let got = s.sink.next(20).await.expect("relayed");
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        // rcgen's leaf has its default subject; Exchange Online's CN is its host name.
        text.contains(
            "\t(Client CN \"rcgen self signed cert\", Issuer \"postern test CA\" (verified OK))\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&tenant_header()),
        "the connector's own header stays"
    );
    let tls = line(&s.proc, "TLS connection established from").await;
    assert!(
        tls.contains("Trusted TLS connection established from")
            && tls.ends_with("Microsoft 365 connector (mail.protection.outlook.com)"),
        "{tls}"
    );
    let sent = line(&s.proc, "to=<bob@outside.example>").await;
    assert!(sent.contains("status=sent"), "{sent}");
    let record = std::fs::read_to_string(s._dir.path().join("data/log/delivery.jsonl")).unwrap();
    assert!(
        record.contains(&format!("\"tenant\":\"{TENANT}\"")),
        "{record}"
    );

    // Another tenant, and no tenant header: 550 at the end of DATA, each its own words.
    let other = "X-MS-Exchange-CrossTenant-Id: 00000000-1111-2222-3333-444444444444\r\n";
    for (headers, words) in [
        (
            other,
            "tenant 00000000-1111-2222-3333-444444444444 is not allowed to relay through this gateway",
        ),
        ("", "no tenant header (X-MS-Exchange-CrossTenant-Id)"),
    ] {
        let (rcpt, end) = attempt(&s, None, Some(&good), "carol@outside.example", headers).await;
        assert_eq!(rcpt.code, 250);
        let end = end.unwrap();
        assert_eq!(end.code, 550, "{end:?}");
        assert!(
            end.first().starts_with("550 5.7.1 Relay access denied: "),
            "{end:?}"
        );
        assert!(end.text().contains(words), "{end:?}");
        let reject = line(&s.proc, words).await;
        assert!(
            reject.contains("NOQUEUE: reject: END-OF-MESSAGE from unknown[127.0.0.1]: 550 5.7.1"),
            "{reject}"
        );
    }
    assert!(s.proc.stop().await);
}

#[tokio::test]
async fn each_way_of_not_being_the_connector_is_said_at_rcpt() {
    let s = setup("\"127.0.0.0/29\"").await;
    let good = s.ca.leaf(&["mail.protection.outlook.com"]);
    let wrong_name = s.ca.leaf(&["relay.other.example"]);
    let stranger_ca = TestCa::new();
    let untrusted = stranger_ca.leaf(&["mail.protection.outlook.com"]);
    let header = tenant_header();
    let cases: [(Option<IpAddr>, Option<&Leaf>, u16, &str); 4] = [
        (
            None,
            None,
            554,
            "<x@outside.example>: Relay access denied (no client certificate)",
        ),
        (
            None,
            Some(&wrong_name),
            450,
            "<x@outside.example>: Relay access denied: client certificate is not valid for the Microsoft 365 connector's name (it names relay.other.example)",
        ),
        (
            None,
            Some(&untrusted),
            450,
            "<x@outside.example>: Relay access denied: client certificate issuer not trusted",
        ),
        (
            Some("127.0.0.20".parse().unwrap()),
            Some(&good),
            450,
            "<x@outside.example>: Relay access denied: client address 127.0.0.20 is not in the Microsoft 365 connector's ranges",
        ),
    ];
    for (from, leaf, code, words) in cases {
        let (rcpt, end) = attempt(&s, from, leaf, "x@outside.example", &header).await;
        assert!(end.is_none());
        assert_eq!(rcpt.code, code, "{rcpt:?}");
        assert!(rcpt.text().contains(words), "{words} in {rcpt:?}");
        let reject = line(&s.proc, words).await;
        assert!(
            reject.contains("NOQUEUE: reject: RCPT from unknown["),
            "{reject}"
        );
    }
    // Inside the ranges, the same certificate is the connector.
    let (rcpt, _) = attempt(
        &s,
        Some("127.0.0.3".parse().unwrap()),
        Some(&good),
        "x@outside.example",
        &header,
    )
    .await;
    assert_eq!(rcpt.code, 250, "{rcpt:?}");
    assert!(s.proc.stop().await);
}

#[tokio::test]
async fn tenant_headers_from_anyone_else_give_nothing_and_do_not_travel() {
    let mut s = setup("").await;
    let header = tenant_header();
    // No certificate, an allowed tenant's header: still no relay.
    let (rcpt, _) = attempt(
        &s,
        Some("127.0.0.5".parse().unwrap()),
        None,
        "x@outside.example",
        &header,
    )
    .await;
    assert_eq!(rcpt.code, 554, "{rcpt:?}");
    // Mail for our relay domain from the Internet is taken, without the forged headers.
    let forged = format!(
        "{header}X-MS-Exchange-Organization-AuthAs: Internal\r\nX-OriginatorOrg: contoso.example\r\n"
    );
    let (rcpt, end) = attempt(
        &s,
        Some("127.0.0.5".parse().unwrap()),
        None,
        "alice@contoso.example",
        &forged,
    )
    .await;
    assert_eq!((rcpt.code, end.unwrap().code), (250, 250));
    let got = s
        .sink
        .next(20)
        .await
        .expect("delivered to the relay domain");
    let text = String::from_utf8_lossy(&got.data).to_ascii_lowercase();
    for h in [
        "x-ms-exchange-crosstenant-id",
        "x-ms-exchange-organization-authas",
        "x-originatororg",
    ] {
        assert!(!text.contains(h), "{h} stripped: {text}");
    }
    line(&s.proc, "removed 3 Microsoft 365 tenant header(s) from client unknown[127.0.0.5], which is not the connector").await;
    // A trusted network keeps its rights; the header gains it nothing (no tenant recorded).
    let (rcpt, end) = attempt(
        &s,
        Some("127.0.0.9".parse().unwrap()),
        None,
        "trusted@outside.example",
        &header,
    )
    .await;
    assert_eq!((rcpt.code, end.unwrap().code), (250, 250));
    s.sink
        .next(20)
        .await
        .expect("relayed for the trusted network");
    line(&s.proc, "to=<trusted@outside.example>").await;
    let record = std::fs::read_to_string(s._dir.path().join("data/log/delivery.jsonl")).unwrap();
    let trusted = record
        .lines()
        .find(|l| l.contains("trusted@outside.example"))
        .unwrap();
    assert!(!trusted.contains("\"tenant\""), "{trusted}");
    assert!(s.proc.stop().await);
}
