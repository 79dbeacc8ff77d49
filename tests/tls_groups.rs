//! Post-quantum key exchange (issue 32) over real sockets: X25519MLKEM768 preferred in both
//! directions, classical groups for a peer without it, the retry with classical groups when
//! a peer drops the larger ClientHello, a policy row that asks for classical groups; and
//! Postfix's whole TLS line for each, compared byte for byte.
//!
//! Postfix's wording: `src/tls/tls_misc.c` (`tls_log_summary`: `key-exchange %s`,
//! ` server-signature %s (%s)` or `(%d bits)`, ` server-digest %s`, the same with `client-`),
//! `tls_get_signature_params` (Postfix 3.10+ names the group with OpenSSL's
//! `SSL_get0_group_name`: `X25519MLKEM768`, `x25519`; an EC key by its curve,
//! `prime256v1`; an RSA key as `RSA-PSS` with its bits), and `src/smtpd/smtpd.c` for the
//! Received header's folded `(using ...` comment.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::process::{Proc, spawn_postern};
use common::sink::{Sink, SinkOptions};
use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;

const CIPHER: &str = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)";
/// The server signature of postern's system certificate and of the sink's (rcgen's default
/// key: ECDSA on P-256, signed with SHA-256).
const ECDSA: &str = "server-signature ECDSA (prime256v1) server-digest SHA256";
/// A ClientHello with the X25519MLKEM768 share is about 1.5 KB, a classical one a few
/// hundred bytes: the test servers reset any longer than this.
const HELLO_LIMIT: usize = 1000;

/// The lines of `proc`'s log that contain `needle`, once `count` of them have appeared
/// (polled until a deadline).
async fn lines_with(proc: &Proc, needle: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<String> = proc
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            // The line as Postfix's would read, from the program name on (the log's own
            // time and level come before it).
            .map(|l| l[l.find("postern/").unwrap_or(0)..].to_string())
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {count} lines with {needle:?}: {:#?}",
            proc.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A postern relaying `other.example` to `sink`, with `extra` config.
fn relay_to(dir: &std::path::Path, sink: &Sink, extra: &str) -> Proc {
    let port = sink.addr.port();
    let proc = spawn_postern(
        dir,
        None,
        &format!(
            "[outbound]\n{extra}\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
        ),
    );
    proc.import_settings("trusted_networks = [\"127.0.0.1/32\"]\n");
    proc
}

/// One message to `rcpt` in plaintext from 127.0.0.1; its queue ID.
async fn send(proc: &Proc, rcpt: &str) -> String {
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.ehlo().await;
    let id = queue_id(
        &c.send("app@inside.example", &[rcpt], &message("pq", ""))
            .await,
    );
    c.cmd("QUIT").await;
    id
}

/// A rustls client offering X25519MLKEM768 first (then the classical groups, as browsers
/// and OpenSSL 3.5 do) negotiates it; smtpd's line, the Received header and the received
/// record say so; the relay to a sink that has the group too does the same outbound.
#[tokio::test]
async fn a_hybrid_client_gets_x25519mlkem768_in_both_directions() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proc = relay_to(dir.path(), &sink, "");
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.ehlo().await;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        rustls::crypto::aws_lc_rs::kx_group::X25519,
    ];
    let config = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
        .with_no_client_auth();
    c.starttls_with(std::sync::Arc::new(config)).await;
    c.ehlo().await;
    let id = queue_id(
        &c.send(
            "app@inside.example",
            &["a@other.example"],
            &message("pq", ""),
        )
        .await,
    );
    c.cmd("QUIT").await;

    let smtpd = lines_with(&proc, "TLS connection established from", 1).await;
    assert_eq!(
        smtpd[0],
        format!(
            "postern/smtpd: Anonymous TLS connection established from unknown[127.0.0.1]: {CIPHER} key-exchange X25519MLKEM768 {ECDSA}"
        )
    );
    let got = sink.next(20).await.expect("relayed");
    assert_eq!(got.kx_group.as_deref(), Some("X25519MLKEM768"));
    let text = String::from_utf8_lossy(&got.data);
    let using = format!(
        "\t(using {CIPHER}\r\n\t key-exchange X25519MLKEM768 {ECDSA})\r\n\t(Client did not present a certificate)\r\n"
    );
    assert!(text.contains(&using), "{text}");
    let port = sink.addr.port();
    let smtp = lines_with(&proc, "TLS connection established to", 1).await;
    assert_eq!(
        smtp[0],
        format!(
            "postern/smtp: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: {CIPHER} key-exchange X25519MLKEM768 {ECDSA}"
        )
    );
    // The records keep the group and the signature: the received one for smtpd's session,
    // the delivery one for smtp's.
    let received = record(&dir.path().join("data/log/received.jsonl"), &id).await;
    assert_eq!(
        received["tls"]["key_exchange"], "X25519MLKEM768",
        "{received}"
    );
    assert_eq!(received["tls"]["server_signature"], "ECDSA (prime256v1)");
    assert_eq!(received["tls"]["server_digest"], "SHA256");
    let delivered = record(&dir.path().join("data/log/delivery.jsonl"), &id).await;
    assert_eq!(
        delivered["tls"]["key_exchange"], "X25519MLKEM768",
        "{delivered}"
    );
    assert_eq!(delivered["tls"]["server_signature"], "ECDSA (prime256v1)");
    assert!(proc.stop().await);
}

/// The JSON record for queue ID `id` in the JSON-lines file `path`, once written.
async fn record(path: &std::path::Path, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(r) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["queue_id"] == id)
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record of {id} in {}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Any server certificate: the client tests what postern negotiates, not its certificate.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
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
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The machine's OpenSSL offering X25519 alone negotiates X25519; smtpd's line names it as
/// Postfix 3.10+ does with OpenSSL 3 (`x25519`, the TLS group name).
#[tokio::test]
async fn an_x25519_only_openssl_client_gets_x25519() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let out = s_client_starttls(proc.smtp, &["-groups", "X25519"]).await;
    assert!(out.contains("Server Temp Key: X25519"), "{out}");
    let smtpd = lines_with(&proc, "TLS connection established from", 1).await;
    assert_eq!(
        smtpd[0],
        format!(
            "postern/smtpd: Anonymous TLS connection established from unknown[127.0.0.1]: {CIPHER} key-exchange x25519 {ECDSA}"
        )
    );
    assert!(proc.stop().await);
}

/// A client certificate's signature is on the line too, after the server's: here an RSA
/// one, which TLS 1.3 signs with PSS (rustls picks SHA-512 from the schemes postern asks
/// for; Postfix's words are the same whatever the digest).
#[tokio::test]
async fn a_client_certificate_signature_follows_the_server_one() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client.example");
    let cert = params.self_signed(&key).unwrap();
    let certified = rustls::sign::CertifiedKey::from_der(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        &postern::tls::provider(),
    )
    .unwrap();
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.ehlo().await;
    c.starttls_with(postern::tls::unauthenticated_client_config_with(
        std::sync::Arc::new(certified),
    ))
    .await;
    c.ehlo().await;
    c.cmd("QUIT").await;
    let smtpd = lines_with(&proc, "TLS connection established from", 1).await;
    let postfix = format!(
        "postern/smtpd: Untrusted TLS connection established from unknown[127.0.0.1]: {CIPHER} key-exchange X25519MLKEM768 {ECDSA} client-signature RSA-PSS (2048 bits) client-digest SHA512, client CN=\"client.example\""
    );
    assert!(smtpd[0].starts_with(&postfix), "{}", smtpd[0]);
    assert!(proc.stop().await);
}

/// A next hop without the hybrid group: the ClientHello's X25519 share is taken, no round
/// trip lost, and the line says x25519.
#[tokio::test]
async fn outbound_to_a_server_without_the_hybrid_group_works() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        classical_groups: true,
        ..SinkOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proc = relay_to(dir.path(), &sink, "");
    send(&proc, "a@other.example").await;
    let got = sink.next(20).await.expect("delivered");
    assert_eq!(got.kx_group.as_deref(), Some("X25519"));
    let port = sink.addr.port();
    let smtp = lines_with(&proc, "TLS connection established to", 1).await;
    assert_eq!(
        smtp[0],
        format!(
            "postern/smtp: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: {CIPHER} key-exchange x25519 {ECDSA}"
        )
    );
    let log = proc.log.lock().unwrap().join("\n");
    assert!(!log.contains("warning: TLS handshake"), "{log}");
    assert!(proc.stop().await);
}

/// A next hop that resets a ClientHello larger than 1000 bytes: the first handshake dies
/// right after the post-quantum hello, is retried once with classical groups (logged), and
/// the host is remembered: the next connection offers classical groups at once.
#[tokio::test]
async fn a_dropped_large_hello_is_retried_with_classical_groups_and_remembered() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        reset_hello_over: Some(HELLO_LIMIT),
        ..SinkOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // No connection kept between messages: the second message needs a new handshake.
    let proc = relay_to(dir.path(), &sink, "connection_cache_secs = 0");
    let id = send(&proc, "a@other.example").await;
    let got = sink.next(20).await.expect("delivered after the retry");
    assert_eq!(got.kx_group.as_deref(), Some("X25519"));
    assert_eq!(sink.hellos_reset.load(Ordering::SeqCst), 1);
    let port = sink.addr.port();
    let warning = lines_with(&proc, "warning: TLS handshake with", 1).await;
    let (head, tail) = (
        format!(
            "postern/smtp: {id}: warning: TLS handshake with 127.0.0.1[127.0.0.1]:{port} failed right after a "
        ),
        "-byte ClientHello offering X25519MLKEM768 (Connection reset by peer); retrying with classical key exchange only, as for this host for the next 24 hours",
    );
    let size = warning[0]
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix(tail))
        .unwrap_or_else(|| panic!("{}", warning[0]));
    assert!(size.parse::<usize>().unwrap() > HELLO_LIMIT, "{size}");

    send(&proc, "b@other.example").await;
    let got = sink.next(20).await.expect("delivered at once");
    assert_eq!(got.kx_group.as_deref(), Some("X25519"));
    assert_eq!(
        sink.hellos_reset.load(Ordering::SeqCst),
        1,
        "no second reset"
    );
    // The second handshake resumed the first's session: Postfix logs no signature for a
    // resumed one (tls_misc.c: "Resumption makes no use of signature keys or digests").
    let smtp = lines_with(&proc, "TLS connection established to", 2).await;
    let line = format!(
        "postern/smtp: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: {CIPHER} key-exchange x25519"
    );
    assert_eq!(smtp, [format!("{line} {ECDSA}"), line]);
    assert_eq!(
        lines_with(&proc, "warning: TLS handshake with", 1)
            .await
            .len(),
        1
    );
    assert!(proc.stop().await);
}

/// `postern check-tls` shows the group; against a host that resets the large hello, it
/// says so and shows what the classical retry got, as delivery would.
#[tokio::test]
async fn check_tls_shows_the_group_and_the_classical_retry() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let (text, _) = check_tls(dir.path(), "", &plain.addr.to_string(), false).await;
    assert!(
        text.contains(&format!(
            "\nTLS:         {CIPHER} key-exchange X25519MLKEM768 {ECDSA}\n"
        )),
        "{text}"
    );
    let dropping = Sink::start(SinkOptions {
        starttls: true,
        reset_hello_over: Some(HELLO_LIMIT),
        ..SinkOptions::default()
    })
    .await;
    let (text, json) = check_tls(dir.path(), "", &dropping.addr.to_string(), true).await;
    assert_eq!(json["tls"]["key_exchange"], "x25519", "{text}");
    let fallback = json["kx_fallback"].as_str().unwrap();
    assert!(
        fallback.ends_with(
            "-byte ClientHello offering X25519MLKEM768 went unanswered (Connection reset by peer); classical groups tried, as delivery would"
        ),
        "{fallback}"
    );
    assert_eq!(dropping.hellos_reset.load(Ordering::SeqCst), 1);
}

/// A policy row with `key_exchange = classical` offers no hybrid share to its destination:
/// the host that resets large hellos is never sent one; the row's Test probes as delivery
/// would; a row that asks for it without TLS is refused, naming the field.
#[tokio::test]
async fn a_classical_row_sends_no_post_quantum_share() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        reset_hello_over: Some(HELLO_LIMIT),
        ..SinkOptions::default()
    })
    .await;
    let port = sink.addr.port();
    let mut server = TestServer::start_with(&format!(
        "[outbound]\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
    ))
    .await;
    server
        .set(json!({"trusted_networks": ["127.0.0.1/32"]}))
        .await;
    let row = json!({"pattern": "other.example", "level": "encrypt", "key_exchange": "classical"});
    let (status, test) = server
        .api_json(
            Method::POST,
            "/api/v1/policy/test",
            Some(&json!({"row": row})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{test}");
    let probed = &test["test"]["hosts"][0]["report"];
    assert_eq!(probed["tls"]["key_exchange"], "x25519", "{test:#}");
    assert_eq!(probed["kx_fallback"], serde_json::Value::Null, "{test:#}");
    let (status, rows) = server
        .api_json(Method::POST, "/api/v1/policy/rows", Some(&json!([row])))
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows[0]["key_exchange"], "classical");
    let explained = server.explain("a@other.example").await;
    assert!(
        explained.contains(
            "key exchange: classical groups only, no post-quantum share (row other.example)"
        ),
        "{explained}"
    );
    server
        .submit(
            "app@inside.example",
            &["a@other.example"],
            &message("row", ""),
        )
        .await;
    let d = server.next_event_for("a@other.example", 20).await;
    assert_eq!(d.status, "sent", "{d:?}");
    let tls = d.tls.expect("over TLS");
    assert_eq!(tls.key_exchange.as_deref(), Some("x25519"));
    assert_eq!(tls.server_signature.as_deref(), Some("ECDSA (prime256v1)"));
    assert!(sink.next(20).await.is_some());
    assert_eq!(sink.hellos_reset.load(Ordering::SeqCst), 0);

    for (bad, field, words) in [
        (
            json!({"pattern": "plain.example", "level": "none", "key_exchange": "classical"}),
            "policy[1].key_exchange",
            "level none sends mail without TLS",
        ),
        (
            json!({"pattern": "plain.example", "level": "may", "key_exchange": "pq"}),
            "[0].key_exchange",
            "unknown variant `pq`, expected `post-quantum` or `classical`",
        ),
    ] {
        let (status, said) = server
            .api(Method::POST, "/api/v1/policy/rows", Some(&json!([bad])))
            .await;
        assert!(status.is_client_error(), "{status} {said}");
        assert!(said.contains(field) && said.contains(words), "{said}");
    }
}

/// TLS Policy Domains: the checkbox saves `key_exchange = classical`, and the row opened
/// for editing shows it checked; unchecked, the field goes (the default).
#[tokio::test]
async fn the_policy_page_sets_classical_key_exchange() {
    use common::page::{Browser, initial_password, location};
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let mut b = Browser::new(&proc);
    let generated = initial_password(dir.path());
    b.sign_in("admin", &generated).await;
    let csrf = b.csrf("/password").await;
    let form = format!(
        "csrf={csrf}&current={generated}&new=correct-horse-battery&confirm=correct-horse-battery"
    );
    assert_eq!(location(&b.go("POST", "/password", &form).await), "/");
    let csrf = b.csrf("/policy").await;
    let row = "pattern=partner.example&level=encrypt&min_bits=&on_failure=defer&note=";
    let page = b
        .go(
            "POST",
            "/policy/add",
            &format!("csrf={csrf}&{row}&classical_kx=on"),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let exported = || {
        let out = proc.cli(&["settings", "export"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        exported().contains("key_exchange = \"classical\""),
        "{}",
        exported()
    );
    let page = b
        .go("GET", "/policy?edit=1&pattern=partner.example", "")
        .await;
    assert!(
        page.body.contains(
            "<input id=\"classical_kx\" name=\"classical_kx\" type=\"checkbox\" value=\"on\" aria-describedby=\"classical-kx-help\" checked>"
        ),
        "{}",
        page.body
    );
    let page = b
        .go(
            "POST",
            "/policy/edit",
            &format!("csrf={csrf}&original=partner.example&{row}"),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(!exported().contains("key_exchange"), "{}", exported());
    assert!(proc.stop().await);
}
