//! Inbound TLS rows (issue 31, acceptance 1, the `verify` half of 2, and 5), over loopback
//! against the real binary with real TLS: a sender row and a client row `encrypt` refuse
//! plaintext at MAIL FROM with the configured code and Postfix's words and accept the same
//! mail over STARTTLS; a `verify` row accepts a certificate from the test CA (trusted through
//! `[tls] extra_roots`) with a listed name, whatever its TLS EKU, and refuses each other
//! certificate with its own reply and log line; rows change through the API without a
//! restart and apply to the next MAIL of a session already open; pflogsumm counts the
//! refusals.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::process::{Keys, Proc, spawn_postern_with};
use common::sink::{Sink, SinkOptions, TestCa};
use common::{Resp, SmtpClient, message};
use hyper::{Method, StatusCode};
use rcgen::ExtendedKeyUsagePurpose as Eku;

/// A certificate and its key (DER), as `TestCa::leaf` makes them.
type Leaf = Arc<(Vec<u8>, Vec<u8>)>;

const PARTNER_MX: &str = "mx.partner.example";

struct Setup {
    proc: Proc,
    sink: Sink,
    ca: TestCa,
    dir: tempfile::TempDir,
}

/// postern (Postfix-style syslog lines) trusting the test CA, nobody trusted by address,
/// `example.com` ours and delivered to the sink; `settings` added to that document.
async fn setup(settings: &str) -> Setup {
    let sink = Sink::start(SinkOptions::default()).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            server: "log_format = \"syslog\"",
            ..Keys::default()
        },
        &format!("[tls]\nextra_roots = [\"{}\"]\n", ca_file.display()),
    );
    proc.import_settings(&format!(
        "trusted_networks = []\n[[relay_domains]]\ndomain = \"example.com\"\ntransport = \"[127.0.0.1]:{}\"\n{settings}",
        sink.addr.port()
    ));
    Setup {
        proc,
        sink,
        ca,
        dir,
    }
}

/// A TLS client config presenting `leaf`, or no certificate (any server certificate
/// accepted: the test is about the client's).
fn presenting(leaf: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    postern::tls::install_provider();
    let Some(leaf) = leaf else {
        return postern::tls::unauthenticated_client_config();
    };
    let key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
            leaf.1.clone().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![leaf.0.clone().into()], key);
    postern::tls::unauthenticated_client_config_with(Arc::new(certified))
}

/// How a session is opened.
enum Tls<'a> {
    Plain,
    /// STARTTLS, presenting this certificate (or none).
    Start(Option<&'a Leaf>),
    /// STARTTLS offering AES-128 only (128 key bits), no certificate.
    Aes128,
}

/// A client offering TLS 1.3 with AES-128-GCM only.
fn aes128_only() -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    Arc::new(config)
}

/// The client side does not check postern's certificate in these tests.
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

/// Connected (from `from`, default 127.0.0.1), EHLO, and STARTTLS + EHLO if asked.
async fn open(s: &Setup, from: Option<&str>, tls: Tls<'_>) -> SmtpClient {
    let from: Option<IpAddr> = from.map(|f| f.parse().unwrap());
    let mut c = SmtpClient::connect(s.proc.smtp, from, None).await;
    c.ehlo().await;
    let config = match tls {
        Tls::Plain => return c,
        Tls::Start(leaf) => presenting(leaf),
        Tls::Aes128 => aes128_only(),
    };
    c.starttls_with(config).await;
    c.ehlo().await;
    c
}

async fn mail(c: &mut SmtpClient, sender: &str) -> Resp {
    c.cmd(&format!("MAIL FROM:<{sender}>")).await
}

/// A whole message from `sender` to bob@example.com, accepted, and its arrival at the sink.
async fn delivered(s: &mut Setup, c: &mut SmtpClient, sender: &str) {
    let end = c
        .send(sender, &["bob@example.com"], &message("rows", ""))
        .await;
    assert_eq!(end.code, 250, "{end:?}");
    let got = s.sink.next(20).await.expect("relayed to the sink");
    assert_eq!(got.sender, sender);
}

/// The first log line with `needle`, once it is there (polled, with a deadline).
async fn line(proc: &Proc, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(l) = proc.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "no log line with {needle:?} in\n{}",
        proc.log.lock().unwrap().join("\n")
    );
}

fn noqueue(client: &str, reply: &str, from: &str, decided: &str) -> String {
    format!(
        "NOQUEUE: reject: MAIL from unknown[{client}]: {reply}; from=<{from}> proto=ESMTP helo=<client.test.example> {decided}"
    )
}

#[tokio::test]
async fn a_sender_row_refuses_plaintext_at_mail_and_takes_the_mail_over_starttls() {
    let mut s = setup(
        "[[inbound_tls]]\npattern = \"partner.example\"\nlevel = \"encrypt\"\nnote = \"contract 42\"\n",
    )
    .await;
    let mut c = open(&s, None, Tls::Plain).await;
    let r = mail(&mut c, "alice@partner.example").await;
    assert_eq!(r.first(), "450 4.7.1 Session encryption is required");
    line(
        &s.proc,
        &noqueue(
            "127.0.0.1",
            "450 4.7.1 Session encryption is required",
            "alice@partner.example",
            "policy=encrypt source=sender-row:partner.example",
        ),
    )
    .await;
    // Other senders are untouched, in the same plaintext session; so is a subdomain, which
    // a plain `partner.example` row does not name.
    delivered(&mut s, &mut c, "carol@other.example").await;
    delivered(&mut s, &mut c, "dave@mx.partner.example").await;
    // The configured code, in force for the next MAIL of this open session.
    s.proc
        .import_settings("[inbound]\ntls_mode = \"may\"\nplaintext_reject_code = 554\n");
    let r = mail(&mut c, "alice@Partner.Example").await;
    assert_eq!(r.first(), "554 5.7.1 Session encryption is required");
    assert_eq!(
        c.cmd("QUIT").await.code,
        221,
        "the session was never dropped"
    );

    // Over STARTTLS the partner's mail is taken.
    let mut c = open(&s, None, Tls::Start(None)).await;
    delivered(&mut s, &mut c, "alice@partner.example").await;
}

#[tokio::test]
async fn a_client_network_row_refuses_plaintext_from_its_addresses_only() {
    let mut s = setup(
        "[[inbound_tls]]\npattern = \"127.0.0.64/26\"\nlevel = \"encrypt\"\n[[inbound_tls]]\npattern = \"127.0.0.70\"\nlevel = \"encrypt\"\nmin_bits = 256\n",
    )
    .await;
    let mut c = open(&s, Some("127.0.0.65"), Tls::Plain).await;
    let r = mail(&mut c, "anyone@anywhere.example").await;
    assert_eq!(r.first(), "450 4.7.1 Session encryption is required");
    line(
        &s.proc,
        &noqueue(
            "127.0.0.65",
            "450 4.7.1 Session encryption is required",
            "anyone@anywhere.example",
            "policy=encrypt source=client-row:127.0.0.64/26",
        ),
    )
    .await;
    // The null sender is judged by the client row all the same.
    assert_eq!(mail(&mut c, "").await.code, 450);
    let mut c = open(&s, Some("127.0.0.1"), Tls::Plain).await;
    delivered(&mut s, &mut c, "anyone@anywhere.example").await;
    let mut c = open(&s, Some("127.0.0.65"), Tls::Start(None)).await;
    delivered(&mut s, &mut c, "anyone@anywhere.example").await;
    // The longest prefix decides: this address's row wants 256 bits, which AES-128 lacks
    // (the minimum strength's words) and AES-256, a rustls client's first choice, has.
    let mut c = open(&s, Some("127.0.0.70"), Tls::Aes128).await;
    let r = mail(&mut c, "anyone@anywhere.example").await;
    assert_eq!(r.first(), "450 4.7.0 encryption too weak 128 less than 256");
    line(
        &s.proc,
        &noqueue(
            "127.0.0.70",
            "450 4.7.0 encryption too weak 128 less than 256",
            "anyone@anywhere.example",
            "policy=encrypt source=client-row:127.0.0.70",
        ),
    )
    .await;
    let mut c = open(&s, Some("127.0.0.70"), Tls::Start(None)).await;
    delivered(&mut s, &mut c, "anyone@anywhere.example").await;
}

/// A leaf of the test CA for `names` with `edit` applied, its CN the first name.
fn leaf(ca: &TestCa, names: &[&str], edit: impl FnOnce(&mut rcgen::CertificateParams)) -> Leaf {
    let cn = names[0].to_string();
    ca.leaf_with(names, move |p| {
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.clone());
        edit(p);
    })
}

/// A `verify` row's refusal of `leaf` (plaintext when `None` is not even STARTTLS'd): the
/// reply, checked against `reply`, and its log line.
async fn refused(s: &Setup, tls: Tls<'_>, reply: &str) {
    let mut c = open(s, None, tls).await;
    let r = mail(&mut c, "alice@partner.example").await;
    assert!(r.first().starts_with(reply), "{r:?} should be {reply}");
    line(
        &s.proc,
        &noqueue(
            "127.0.0.1",
            &r.first(),
            "alice@partner.example",
            "policy=verify source=sender-row:partner.example",
        ),
    )
    .await;
}

const VERIFY_ROW: &str = "[[inbound_tls]]\npattern = \"partner.example\"\nlevel = \"verify\"\nmatch_names = [\"mx.partner.example\"]\n";

#[tokio::test]
async fn a_verify_row_takes_a_listed_name_and_refuses_every_other_certificate_in_its_words() {
    let mut s = setup(VERIFY_ROW).await;
    let good = leaf(&s.ca, &[PARTNER_MX], |_| {});
    let mut c = open(&s, None, Tls::Start(Some(&good))).await;
    delivered(&mut s, &mut c, "alice@partner.example").await;

    refused(&s, Tls::Plain, "450 4.7.1 Session encryption is required").await;
    refused(
        &s,
        Tls::Start(None),
        "450 4.7.1 <unknown[127.0.0.1]>: Client certificate rejected: no client certificate presented",
    )
    .await;
    let other = leaf(&s.ca, &["other.example"], |_| {});
    refused(
        &s,
        Tls::Start(Some(&other)),
        "450 4.7.1 <other.example>: Client certificate rejected: certificate is not valid for mx.partner.example (it names other.example)",
    )
    .await;
    let stranger = TestCa::new();
    let untrusted = leaf(&stranger, &[PARTNER_MX], |_| {});
    refused(
        &s,
        Tls::Start(Some(&untrusted)),
        "450 4.7.1 <mx.partner.example>: Client certificate rejected: certificate issuer not trusted",
    )
    .await;
    let expired = leaf(&s.ca, &[PARTNER_MX], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    refused(
        &s,
        Tls::Start(Some(&expired)),
        "450 4.7.1 <mx.partner.example>: Client certificate rejected: certificate expired on 2021-01-01",
    )
    .await;
}

#[tokio::test]
async fn a_verify_row_takes_any_tls_eku_and_refuses_one_for_email_naming_it() {
    let mut s = setup(VERIFY_ROW).await;
    for usages in [
        vec![Eku::ClientAuth],
        vec![Eku::ServerAuth],
        vec![Eku::ServerAuth, Eku::ClientAuth],
        vec![],
    ] {
        let cert = leaf(&s.ca, &[PARTNER_MX], |p| {
            p.extended_key_usages = usages.clone()
        });
        let mut c = open(&s, None, Tls::Start(Some(&cert))).await;
        let r = mail(&mut c, "alice@partner.example").await;
        assert_eq!(r.code, 250, "EKU {usages:?}: {r:?}");
        assert_eq!(c.cmd("RSET").await.code, 250);
        delivered(&mut s, &mut c, "alice@partner.example").await;
    }
    let email = leaf(&s.ca, &[PARTNER_MX], |p| {
        p.extended_key_usages = vec![Eku::EmailProtection]
    });
    refused(
        &s,
        Tls::Start(Some(&email)),
        "450 4.7.1 <mx.partner.example>: Client certificate rejected: certificate is not for TLS clients or servers (extended key usage: emailProtection)",
    )
    .await;
}

/// The control API of `s`.
fn api(s: &Setup) -> postern::admin::client::ApiClient {
    postern::admin::client::ApiClient::new(s.proc.api(), &s.dir.path().join("data")).unwrap()
}

async fn call(
    s: &Setup,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let body = (!body.is_null()).then(|| serde_json::to_vec(&body).unwrap());
    let (status, bytes) = api(s).request(method, path, body).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn rows_change_through_the_api_and_apply_to_the_next_mail_of_an_open_session() {
    let mut s = setup("").await;
    let mut c = open(&s, None, Tls::Plain).await;
    assert_eq!(mail(&mut c, "alice@partner.example").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);

    // Added: the same open session's next MAIL is refused.
    let row = serde_json::json!({"pattern": "Partner.Example", "level": "encrypt"});
    let (status, rows) = call(&s, Method::POST, "/api/v1/inbound-tls", row).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows[0]["pattern"], "partner.example");
    assert_eq!(mail(&mut c, "alice@partner.example").await.code, 450);

    // A bad row is refused naming its field; nothing changes.
    let bad = serde_json::json!({"pattern": "192.0.2.0/24", "level": "verify"});
    let (status, err) = call(&s, Method::POST, "/api/v1/inbound-tls", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "inbound_tls[1].match_names", "{err}");

    // Changed to a client row for another network: partner mail passes again.
    let moved = serde_json::json!({"pattern": "127.0.0.64/26", "level": "encrypt"});
    let path = "/api/v1/inbound-tls/partner.example";
    let (status, rows) = call(&s, Method::PUT, path, moved).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    delivered(&mut s, &mut c, "alice@partner.example").await;
    let mut near = open(&s, Some("127.0.0.66"), Tls::Plain).await;
    assert_eq!(mail(&mut near, "alice@partner.example").await.code, 450);

    // Deleted by its network (the slash escaped in the path): the near client passes too.
    let path = "/api/v1/inbound-tls/127.0.0.64%2F26";
    let (status, _) = call(&s, Method::DELETE, path, serde_json::Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    delivered(&mut s, &mut near, "alice@partner.example").await;
    assert_eq!(c.cmd("QUIT").await.code, 221, "the first session lived on");
}

/// pflogsumm lives in /usr/sbin, which a user's PATH may lack.
fn pflogsumm() -> Option<&'static str> {
    ["/usr/sbin/pflogsumm", "/usr/bin/pflogsumm"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test]
async fn pflogsumm_counts_the_refusals_as_rejects() {
    let Some(pflogsumm) = pflogsumm() else {
        eprintln!("pflogsumm is not installed: nothing to check here");
        return;
    };
    let mut s = setup(VERIFY_ROW).await;
    let mut c = open(&s, None, Tls::Plain).await;
    assert_eq!(mail(&mut c, "alice@partner.example").await.code, 450);
    delivered(&mut s, &mut c, "carol@other.example").await;
    let mut c = open(&s, None, Tls::Start(None)).await;
    assert_eq!(mail(&mut c, "bob@partner.example").await.code, 450);
    line(&s.proc, "from=<bob@partner.example>").await;
    line(&s.proc, "status=sent").await;
    let lines = s.proc.log.lock().unwrap().clone();
    let maillog = s.dir.path().join("maillog");
    std::fs::write(&maillog, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(pflogsumm)
        .arg("--syslog-name=postern")
        .arg(&maillog)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let total = |what: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|l| {
                let (n, rest) = l.split_once(char::is_whitespace)?;
                rest.trim_start()
                    .starts_with(what)
                    .then(|| n.parse::<usize>().ok())?
            })
            .unwrap_or_else(|| panic!("no {what:?} total in\n{report}"))
    };
    assert_eq!(total("rejected"), 2, "{report}");
    assert_eq!(total("received"), 1, "{report}");
    assert_eq!(total("delivered"), 1, "{report}");
    // Under MAIL, by reason: pflogsumm cuts a check_ccert_access-style reply at its first
    // colon, as it does Postfix's own (`4.7.1 <CN>`).
    let detail = report
        .split("message reject detail")
        .nth(1)
        .expect("a reject detail");
    assert!(
        detail.contains("MAIL")
            && detail.contains("4.7.1 Session encryption is required (total: 1)")
            && detail.contains("4.7.1 <unknown[127.0.0.1]> (total: 1)"),
        "{report}"
    );
}

#[tokio::test]
async fn explain_says_which_row_decides_on_the_api_and_the_command_line() {
    let s = setup(
        "[[inbound_tls]]\npattern = \".partner.example\"\nlevel = \"encrypt\"\n[[inbound_tls]]\npattern = \"mx.partner.example\"\nlevel = \"verify\"\nmatch_names = [\"mx.partner.example\"]\nnote = \"contract 42\"\n[[inbound_tls]]\npattern = \"127.0.0.64/26\"\nlevel = \"encrypt\"\n",
    )
    .await;
    let out = s.proc.cli(&[
        "policy",
        "explain",
        "--inbound",
        "alice@mx.partner.example",
        "--client",
        "127.0.0.65",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "sender row: mx.partner.example (verify)",
        "client row: 127.0.0.64/26 (encrypt)",
        "  - sender row mx.partner.example names sender domain mx.partner.example: verify (a certificate from the trust roots naming mx.partner.example); contract 42 (decides)",
        "  - sender row .partner.example: encrypt, overridden by the more specific mx.partner.example",
        "  - client row 127.0.0.64/26 names client 127.0.0.65: encrypt (decides)",
        "  - required by MAIL FROM: both rows hold: TLS with a verified client certificate (sender row mx.partner.example) and TLS (client row 127.0.0.64/26)",
        "  - without TLS, MAIL FROM gets 450 4.7.1 Session encryption is required",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }

    let path = "/api/v1/policy/explain?inbound=bob%40partner.example&client=127.0.0.1";
    let (status, d) = call(&s, Method::GET, path, serde_json::Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["sender_row"]["pattern"], ".partner.example");
    assert_eq!(d["client_row"], serde_json::Value::Null);
    let path = "/api/v1/policy/explain?inbound=bob%40partner.example&client=mx.example";
    let (status, e) = call(&s, Method::GET, path, serde_json::Value::Null).await;
    assert_eq!(
        (status, &e["field"]),
        (StatusCode::BAD_REQUEST, &serde_json::json!("client"))
    );
}
