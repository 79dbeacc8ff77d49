//! The Microsoft 365 connector as a relay source, over loopback against the real binary: an
//! rcgen CA stands in for the public roots (`[tls] extra_roots`), a client certificate
//! named `mail.protection.outlook.com` for Exchange Online's. Each way of not being the
//! connector is refused with its own reply and log line; tenant headers from anyone else
//! give no rights and do not travel.

mod common;

use postern::certs::check::pem;

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
    // An SMTP AUTH user relays as always; the header gains nothing either.
    s.proc.import_settings(
        "trusted_networks = [\"127.0.0.9/32\"]\n[[smtp_auth_users]]\nusername = \"scanner\"\npassword = \"long-enough-1\"\n",
    );
    let mut c = SmtpClient::connect(s.proc.smtp, Some("127.0.0.5".parse().unwrap()), None).await;
    c.cmd("EHLO scanner.contoso.example").await;
    c.starttls_with(with_cert(None)).await;
    c.cmd("EHLO scanner.contoso.example").await;
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0scanner\0long-enough-1");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.code, 235);
    let msg = format!("{header}Subject: scan\r\n\r\nx\r\n");
    let r = c
        .send(
            "scanner@contoso.example",
            &["authed@outside.example"],
            msg.as_bytes(),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    s.sink.next(20).await.expect("relayed for the AUTH user");
    line(&s.proc, "to=<authed@outside.example>").await;
    let record = std::fs::read_to_string(s._dir.path().join("data/log/delivery.jsonl")).unwrap();
    let authed = record
        .lines()
        .find(|l| l.contains("authed@outside.example"))
        .unwrap();
    assert!(!authed.contains("\"tenant\""), "{authed}");
    assert!(s.proc.stop().await);
}

/// Inbound mail for an accepted domain goes to the tenant at `verify` (the default for a
/// `*.mail.protection.outlook.com` transport), presenting the gateway's client certificate;
/// the sink stands in for Exchange Online and requires and verifies it.
#[tokio::test]
async fn inbound_mail_goes_to_the_tenant_verified_with_the_gateways_certificate() {
    use common::dns::{Zone, serve};
    use hyper::StatusCode;
    use serde_json::json;
    let microsoft = TestCa::new();
    let ours = TestCa::new();
    let mut tenant = Sink::start_on(
        "127.0.0.51:0".parse().unwrap(),
        SinkOptions {
            starttls: true,
            cert: Some(microsoft.leaf(&[
                "*.mail.protection.outlook.com",
                "mail.protection.outlook.com",
            ])),
            client_ca: Some(ours.pem.clone()),
            ..SinkOptions::default()
        },
    )
    .await;
    let dns = serve(Zone::default().a(
        "contoso-example.mail.protection.outlook.com",
        "127.0.0.51".parse().unwrap(),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("microsoft.pem");
    std::fs::write(&roots, &microsoft.pem).unwrap();
    let mut server = common::TestServer::start_with(&format!(
        "[outbound]\nport = {}\nnameservers = [\"{dns}\"]\n[tls]\nextra_roots = [\"{}\"]\n",
        tenant.addr.port(),
        roots.display()
    ))
    .await;
    let gateway = ours.leaf(&["mx.test.example"]);
    let (status, body) = server
        .api_json(
            hyper::Method::POST,
            "/api/v1/certificates",
            Some(
                &json!({"name": "gateway", "cert": pem("CERTIFICATE", &gateway.0),
                         "key": pem("PRIVATE KEY", &gateway.1), "chain": ours.pem}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server
        .set(json!({"trusted_networks": [], "relay_domains": [{
            "domain": "contoso.example",
            "transport": "[contoso-example.mail.protection.outlook.com]",
            "client_certificate": "gateway",
        }]}))
        .await;
    let (_, decision) = server
        .api_json(
            hyper::Method::GET,
            "/api/v1/policy/explain?recipient=alice%40contoso.example",
            None,
        )
        .await;
    assert_eq!(decision["level"], "verify", "{decision:#}");
    // From the Internet (not a trusted address) to the accepted domain.
    server
        .submit_from(
            "127.0.0.5",
            "sender@internet.example",
            &["alice@contoso.example"],
            b"Subject: in\r\n\r\nhi\r\n",
        )
        .await;
    let got = tenant.next(20).await.expect("delivered to the tenant");
    assert!(got.tls);
    assert_eq!(
        got.client_cert.as_deref(),
        Some(gateway.0.as_slice()),
        "the gateway's certificate"
    );
    let event = server.next_event_for("alice@contoso.example", 20).await;
    assert_eq!(event.status, "sent", "{event:?}");
    assert_eq!(event.policy_level, "verify");
    assert_eq!(event.policy_source, "m365:contoso.example");
    assert_eq!(
        event.verified_name.as_deref(),
        Some("contoso-example.mail.protection.outlook.com")
    );
}

/// TLS 1.2 only, with the client certificate: what Exchange Online's connector offers.
fn tls12_with_cert(leaf: &Leaf) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf.1.clone().into());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![leaf.0.clone().into()], key)
        .unwrap();
    config.enable_sni = true;
    Arc::new(config)
}

/// The connector's side does not check postern's certificate in this test.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let p = rustls::crypto::aws_lc_rs::default_provider();
        rustls::crypto::verify_tls12_signature(m, c, d, &p.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let p = rustls::crypto::aws_lc_rs::default_provider();
        rustls::crypto::verify_tls13_signature(m, c, d, &p.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A session shaped like Exchange Online's: its EHLO name, STARTTLS at TLS 1.2 with its
/// certificate, BDAT in many chunks, a 1 MB message with an 8-bit body and a 2,000-character
/// header line. Accepted, and what reaches the next hop is the message byte for byte under
/// postern's Received header.
#[tokio::test]
async fn an_exchange_online_shaped_session_is_relayed_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let mut s = setup("").await;
    let cert = s.ca.leaf(&["mail.protection.outlook.com"]);
    let mut message = format!(
        "X-MS-Exchange-CrossTenant-Id: {TENANT}\r\nX-MS-Long: {}\r\nFrom: alice@contoso.example\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        "x".repeat(2000)
    )
    .into_bytes();
    while message.len() < 1 << 20 {
        message.extend_from_slice(
            "Grüße aus Zürich, ça va très bien — 8-bit body line\r\n".as_bytes(),
        );
    }
    let mut c = SmtpClient::connect(s.proc.smtp, None, None).await;
    let ehlo = c
        .cmd("EHLO DB8EUR05FT012.mail.protection.outlook.com")
        .await;
    for ext in ["CHUNKING", "8BITMIME", "SMTPUTF8", "STARTTLS"] {
        assert!(
            ehlo.lines.iter().any(|l| l.starts_with(ext)),
            "{ext} in {ehlo:?}"
        );
    }
    c.starttls_with(tls12_with_cert(&cert)).await;
    c.cmd("EHLO DB8EUR05FT012.mail.protection.outlook.com")
        .await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@contoso.example> BODY=8BITMIME SMTPUTF8 SIZE=1100000")
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<bob@outside.example>").await.code, 250);
    let chunks: Vec<&[u8]> = message.chunks(64 * 1024 + 7).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        c.write(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes())
            .await;
        c.write(chunk).await;
        let r = c.read().await;
        assert_eq!(r.code, 250, "chunk {i}: {r:?}");
    }
    let got = s.sink.next(30).await.expect("relayed");
    // Postern's own Received header comes first; after it, the bytes as sent.
    let at = got
        .data
        .windows(4)
        .position(|w| w == b"X-MS")
        .expect("the message after our Received header");
    let head = String::from_utf8_lossy(&got.data[..at]);
    assert!(
        head.starts_with("Received: from DB8EUR05FT012.mail.protection.outlook.com"),
        "{head}"
    );
    assert_eq!(
        Sha256::digest(&got.data[at..]),
        Sha256::digest(&message),
        "delivered byte for byte"
    );
    let tls = line(&s.proc, "TLS connection established from").await;
    assert!(tls.contains("TLSv1.2 with cipher ECDHE-"), "{tls}");
    assert!(s.proc.stop().await);
}
