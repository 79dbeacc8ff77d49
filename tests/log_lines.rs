//! The lines admins grep for, from the real binary's log: one TLS line per handshake in
//! Postfix's words (Verified when the certificate was checked, Trusted when only its chain
//! was, Untrusted when neither), and
//! `Host offered STARTTLS` for every new connection whose EHLO offered it.
//! Postfix's smtp(8) writes "Untrusted/Trusted/Verified TLS connection established to host[ip]:port:
//! <protocol> with cipher <suite> (<bits>/<bits> bits)" and, for TLS 1.3, Postfix 3.10+'s
//! "key-exchange <group> server-signature <alg> (<curve>) server-digest <digest>"
//! (tls_misc.c, tls_log_summary; tests/tls_groups.rs has the rest), and, with
//! smtp_tls_note_starttls_offer, "QUEUEID: Host offered STARTTLS: [host]".

mod common;

use common::process::{Proc, spawn_postern};
use common::sink::{Sink, SinkOptions, TestCa};
use common::*;

/// Lines of `proc`'s log containing `needle`, once `count` lines contain `until`.
async fn lines_once(proc: &Proc, until: &str, count: usize, needle: &str) -> Vec<String> {
    for _ in 0..200 {
        let log = proc.log.lock().unwrap().clone();
        if log.iter().filter(|l| l.contains(until)).count() >= count {
            return log.into_iter().filter(|l| l.contains(needle)).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {count} lines with {until:?}");
}

async fn send(proc: &Proc, rcpt: &str) -> String {
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("HELO client.test.example").await;
    let id = queue_id(
        &c.send("app@inside.example", &[rcpt], &message("log", ""))
            .await,
    );
    c.cmd("QUIT").await;
    id
}

#[tokio::test]
async fn untrusted_once_per_handshake_and_starttls_offer_per_connection() {
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        ..SinkOptions::default()
    })
    .await;
    let port = sink.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound]\nconnection_cache_secs = 30\n[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n"
        ),
    );
    let first = send(&proc, "a@other.example").await;
    for rcpt in ["b@other.example", "c@other.example"] {
        sink.next(20).await.expect("delivered");
        send(&proc, rcpt).await;
    }
    sink.next(20).await.expect("delivered");
    let tls = lines_once(&proc, "status=sent", 3, "TLS connection established").await;
    assert_eq!(tls.len(), 1, "one handshake, one line: {tls:?}");
    assert!(
        tls[0].ends_with(&format!(
            "postern/smtp: Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256"
        )),
        "{}",
        tls[0]
    );
    let offered = lines_once(&proc, "status=sent", 3, "Host offered STARTTLS").await;
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert!(
        offered[0].ends_with(&format!(
            "postern/smtp: {first}: Host offered STARTTLS: [127.0.0.1]"
        )),
        "{}",
        offered[0]
    );
    assert!(proc.stop().await);
}

#[tokio::test]
async fn verified_when_the_certificate_was_checked() {
    use common::dns::{Zone, serve};
    let ca = TestCa::new();
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        cert: Some(ca.leaf(&["mx.other.example"])),
        ..SinkOptions::default()
    })
    .await;
    let dns = serve(
        Zone::default()
            .mx("other.example", 10, "mx.other.example")
            .a("mx.other.example", "127.0.0.1".parse().unwrap()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound]\nport = {}\nnameservers = [\"{dns}\"]\n[tls]\nextra_roots = [\"{}\"]\n",
            sink.addr.port(),
            ca_file.display()
        ),
    );
    proc.import_settings("trusted_networks = [\"127.0.0.1/32\"]\n[[policy]]\npattern = \"other.example\"\nlevel = \"verify\"\n");
    send(&proc, "partner@other.example").await;
    assert!(sink.next(20).await.expect("delivered").tls);
    let tls = lines_once(&proc, "status=sent", 1, "TLS connection established").await;
    assert_eq!(tls.len(), 1, "{tls:?}");
    assert!(
        tls[0].contains(&format!(
            "postern/smtp: Verified TLS connection established to mx.other.example[127.0.0.1]:{}: TLSv1.3 with cipher",
            sink.addr.port()
        )),
        "{}",
        tls[0]
    );
    assert!(proc.stop().await);
}

/// At `may` no name is checked, but a chain that leads to a trusted root is still said:
/// Postfix's "Trusted TLS connection established to ...".
#[tokio::test]
async fn trusted_when_the_chain_verifies_at_a_level_that_checks_no_name() {
    let ca = TestCa::new();
    let mut sink = Sink::start(SinkOptions {
        starttls: true,
        cert: Some(ca.leaf(&["some-other-name.example"])),
        ..SinkOptions::default()
    })
    .await;
    let port = sink.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!(
            "[outbound.routes]\n\"other.example\" = \"[127.0.0.1]:{port}\"\n[tls]\nextra_roots = [\"{}\"]\n",
            ca_file.display()
        ),
    );
    send(&proc, "partner@other.example").await;
    assert!(sink.next(20).await.expect("delivered").tls);
    let tls = lines_once(&proc, "status=sent", 1, "TLS connection established").await;
    assert_eq!(tls.len(), 1, "{tls:?}");
    assert!(
        tls[0].ends_with(&format!(
            "postern/smtp: Trusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256"
        )),
        "{}",
        tls[0]
    );
    assert!(proc.stop().await);
}

/// Four MX hosts: the first refuses the connection, the second greets with 421, the third
/// drops the connection before its greeting, the fourth takes the message. Each failed host
/// leaves Postfix's line (smtp(8)'s wording, from its smtp_connect.c and smtp_proto.c)
/// before the delivery.
#[tokio::test]
async fn every_failed_host_leaves_a_line_before_the_one_that_worked() {
    use common::dns::{Zone, serve};
    let mut good = Sink::start_on("127.0.0.24:0".parse().unwrap(), SinkOptions::default()).await;
    let port = good.addr.port();
    let busy = Sink::start_on(
        format!("127.0.0.22:{port}").parse().unwrap(),
        SinkOptions::default(),
    )
    .await;
    busy.act(
        common::sink::Stage::Greeting,
        common::sink::Act::Reply("421 4.3.2 busy, try later".into()),
    );
    let dropping = Sink::start_on(
        format!("127.0.0.23:{port}").parse().unwrap(),
        SinkOptions::default(),
    )
    .await;
    dropping.act(common::sink::Stage::Greeting, common::sink::Act::Drop);
    let dns = serve(
        Zone::default()
            .mx("multi.example", 10, "mx1.multi.example")
            .mx("multi.example", 20, "mx2.multi.example")
            .mx("multi.example", 30, "mx3.multi.example")
            .mx("multi.example", 40, "mx4.multi.example")
            .a("mx1.multi.example", "127.0.0.21".parse().unwrap())
            .a("mx2.multi.example", "127.0.0.22".parse().unwrap())
            .a("mx3.multi.example", "127.0.0.23".parse().unwrap())
            .a("mx4.multi.example", "127.0.0.24".parse().unwrap()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(
        dir.path(),
        None,
        &format!("[outbound]\nport = {port}\nnameservers = [\"{dns}\"]\n"),
    );
    let id = send(&proc, "user@multi.example").await;
    good.next(20).await.expect("mx4 took it");
    let lines = lines_once(&proc, "status=sent", 1, "postern/smtp").await;
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.ends_with(needle))
            .unwrap_or_else(|| panic!("no line ending {needle:?} in {lines:#?}"))
    };
    let refused = at(&format!(
        "postern/smtp: connect to mx1.multi.example[127.0.0.21]:{port}: Connection refused"
    ));
    let greeting = at(&format!(
        "postern/smtp: {id}: host mx2.multi.example[127.0.0.22] refused to talk to me: 421 4.3.2 busy, try later"
    ));
    let lost = at(&format!(
        "postern/smtp: {id}: lost connection with mx3.multi.example[127.0.0.23] while receiving the initial server greeting"
    ));
    let sent = lines
        .iter()
        .position(|l| l.contains("status=sent"))
        .unwrap();
    assert!(
        refused < greeting && greeting < lost && lost < sent,
        "{lines:#?}"
    );
    assert!(
        lines[sent].contains("relay=mx4.multi.example[127.0.0.24]"),
        "{}",
        lines[sent]
    );
    // The JSON record lists the four hosts with their outcomes.
    let records = std::fs::read_to_string(dir.path().join("data/log/delivery.jsonl")).unwrap();
    let record: serde_json::Value = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["queue_id"] == id.as_str())
        .expect("the delivery record");
    let hosts: Vec<(String, String)> = record["hosts_tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["relay"].as_str().unwrap().to_string(),
                format!(
                    "{} {}",
                    h["status"].as_str().unwrap(),
                    h["reply"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(hosts.len(), 4, "{hosts:#?}");
    assert_eq!(hosts[0].0, format!("mx1.multi.example[127.0.0.21]:{port}"));
    assert!(hosts[0].1.ends_with("Connection refused"), "{:?}", hosts[0]);
    assert!(
        hosts[1].1.contains("refused to talk to me: 421"),
        "{:?}",
        hosts[1]
    );
    assert_eq!(
        hosts[2].1,
        "deferred lost connection with mx3.multi.example[127.0.0.23] while receiving the initial server greeting"
    );
    assert_eq!(hosts[3].0, format!("mx4.multi.example[127.0.0.24]:{port}"));
    assert!(hosts[3].1.starts_with("sent 250"), "{:?}", hosts[3]);
    assert!(proc.stop().await);
}

/// The client line names the SASL mechanism really used (Postfix: `client=…, sasl_method=LOGIN,
/// sasl_username=…`).
#[tokio::test]
async fn client_line_names_the_sasl_mechanism_used() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    proc.import_settings(
        "[[smtp_auth_users]]\nusername = \"alice\"\npassword = \"correct horse battery\"\n",
    );
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(dir.path().join("data/tls/system.crt")).unwrap();
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let mut c = SmtpClient::connect(proc.smtp, None, Some(cert)).await;
    c.ehlo().await;
    c.starttls().await;
    c.ehlo().await;
    assert_eq!(c.cmd("AUTH LOGIN").await.code, 334);
    assert_eq!(c.cmd(&STANDARD.encode("alice")).await.code, 334);
    assert_eq!(
        c.cmd(&STANDARD.encode("correct horse battery")).await.code,
        235
    );
    let id = queue_id(
        &c.send(
            "alice@inside.example",
            &["r@other.example"],
            &message("sasl", ""),
        )
        .await,
    );
    let lines = lines_once(&proc, "(queue active)", 1, &format!("{id}: client=")).await;
    assert!(
        lines[0].ends_with(&format!(
            "postern/smtpd: {id}: client=unknown[127.0.0.1], sasl_method=LOGIN, sasl_username=alice"
        )),
        "{lines:?}"
    );
    assert!(proc.stop().await);
}

/// At start-up, once: STARTTLS is offered (`may`, the default) with the system self-signed
/// certificate, which a sender that verifies will not trust.
#[tokio::test]
async fn start_up_warns_once_when_smtp_serves_the_system_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let warned: Vec<String> = proc
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("serves the system self-signed certificate"))
        .cloned()
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].ends_with("postern/tls: warning: SMTP STARTTLS serves the system self-signed certificate for mx.test.example: senders that verify certificates will not trust it; import one (postern cert import) and bind it as inbound.certificate"),
        "{}",
        warned[0]
    );
    assert!(proc.stop().await);
}

/// Postfix's smtpd names where a session was when it ended badly: `lost connection after EHLO
/// from ...`, `lost connection after END-OF-MESSAGE ...`, `timeout after MAIL from ...`
/// (smtpd.c: "timeout after %s from %s", "lost connection after %s from %s").
#[tokio::test]
async fn inbound_lost_connections_and_timeouts_name_the_stage() {
    use common::process::{Keys, spawn_postern_with};
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            smtp: "timeout_secs = 1",
            ..Keys::default()
        },
        "",
    );
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("EHLO client.test.example").await;
    drop(c);
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("EHLO client.test.example").await;
    queue_id(
        &c.send(
            "app@inside.example",
            &["a@other.example"],
            &message("x", ""),
        )
        .await,
    );
    drop(c);
    let mut c = SmtpClient::connect(proc.smtp, None, None).await;
    c.cmd("EHLO client.test.example").await;
    c.cmd("MAIL FROM:<app@inside.example>").await;
    // Silence: the command deadline ends it with 421 4.4.2.
    assert_eq!(c.read().await.code, 421);
    let lines = lines_once(&proc, "timeout after", 1, "postern/smtpd: ").await;
    for wanted in [
        "postern/smtpd: lost connection after EHLO from unknown[127.0.0.1]",
        "postern/smtpd: lost connection after END-OF-MESSAGE from unknown[127.0.0.1]",
        "postern/smtpd: timeout after MAIL from unknown[127.0.0.1]",
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(wanted)).count(),
            1,
            "{wanted:?} in {lines:#?}"
        );
    }
    assert!(proc.stop().await);
}

/// Issue 27: what a client puts in its commands is escaped in the log (U+2028, a bidi
/// override, a C1 CSI), so one log line stays one line and reads as it was sent.
#[tokio::test]
async fn client_text_in_a_log_line_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    proc.import_settings("trusted_networks = [\"127.0.0.1/32\"]\n");
    let mut c = SmtpClient::connect(proc.smtp, Some("127.0.0.2".parse().unwrap()), None).await;
    assert_eq!(c.cmd("EHLO evil\u{202e}\u{9b}31mname").await.code, 250);
    let r = c
        .cmd("MAIL FROM:<a\u{2028}fake@client.test.example> SMTPUTF8")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<x@other.example>").await.code, 554);
    let lines = lines_once(&proc, "NOQUEUE: reject", 1, "NOQUEUE: reject").await;
    assert!(
        lines[0].ends_with(
            "from=<a\\u{2028}fake@client.test.example> to=<x@other.example> proto=ESMTP helo=<evil\\u{202e}\\u{9b}31mname>"
        ),
        "{lines:?}"
    );
    assert!(proc.stop().await);
}
