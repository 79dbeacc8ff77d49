//! fail2ban, the real one (`fail2ban-regex`), reads postern's log of failed credentials: the
//! shipped filter config/fail2ban/postern-admin.conf finds every failed and refused admin
//! sign-in, and fail2ban's own Postfix filter (with postern's identifiers, as
//! config/fail2ban/postern.jail.conf sets it) every failed and refused SMTP AUTH, each with
//! the client's address (issue 27).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::page::Browser;
use common::process::{Keys, spawn_postern_with};
use common::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// `fail2ban-regex LOG FILTER`: the addresses of the lines it matched.
fn matched_hosts(log: &std::path::Path, filter: &str) -> Vec<String> {
    let out = std::process::Command::new("fail2ban-regex")
        .args(["--print-all-matched", "--raw"])
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: usize = text
        .split("Failregex: ")
        .nth(1)
        .and_then(|r| r.split(" total").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let hosts: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("|  ") && l.contains("postern/"))
        .filter_map(|l| {
            l.split(['[', ' ', ']'])
                .find(|w| w.starts_with("127.0.0."))
                .map(|w| w.trim_end_matches(':').to_string())
        })
        .collect();
    assert_eq!(hosts.len(), total, "{text}");
    hosts
}

#[tokio::test]
async fn fail2ban_finds_every_failed_sign_in_and_auth_with_its_address() {
    if !have("fail2ban-regex") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern_with(
        dir.path(),
        None,
        Keys {
            server: "log_format = \"syslog\"",
            smtp: "auth_failure_limit = 3\nauth_failure_delay_ms = 1",
            hostname: None,
        },
        "",
    );
    proc.import_settings(
        "[[smtp_auth_users]]\nusername = \"scanner\"\npassword = \"the scanner's password\"\n",
    );
    // Six wrong sign-ins from 127.0.0.2: five checked, the sixth refused unchecked.
    let mut stranger = Browser::at(proc.api(), Some("127.0.0.2".parse().unwrap()));
    for n in 0..6 {
        stranger.sign_in("admin", &format!("guess {n}")).await;
    }
    // Four wrong AUTHs from 127.0.0.3: three checked, the fourth refused unchecked.
    let pem = std::fs::read(dir.path().join("data/tls/system.crt")).unwrap();
    let cert = CertificateDer::from_pem_slice(&pem).unwrap();
    for n in 0..4 {
        let mut c = SmtpClient::connect(
            proc.smtp,
            Some("127.0.0.3".parse().unwrap()),
            Some(cert.clone()),
        )
        .await;
        c.ehlo().await;
        c.starttls().await;
        c.ehlo().await;
        let plain = STANDARD.encode(format!("\0scanner\0guess {n}"));
        c.cmd(&format!("AUTH PLAIN {plain}")).await;
    }
    let refused = "SASL PLAIN authentication failed: too many failed attempts";
    let log = loop {
        let lines = proc.log.lock().unwrap().clone();
        if lines.iter().any(|l| l.contains(refused)) {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let file = dir.path().join("maillog");
    std::fs::write(&file, log.join("\n")).unwrap();
    // The shipped filter beside fail2ban's common.conf, as /etc/fail2ban/filter.d holds them.
    let filters = dir.path().join("filter.d");
    std::fs::create_dir(&filters).unwrap();
    std::fs::copy(
        "/etc/fail2ban/filter.d/common.conf",
        filters.join("common.conf"),
    )
    .unwrap();
    let admin = filters.join("postern-admin.conf");
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/fail2ban/postern-admin.conf"
    );
    std::fs::copy(shipped, &admin).unwrap();
    assert_eq!(
        matched_hosts(&file, admin.to_str().unwrap()),
        vec!["127.0.0.2"; 6]
    );
    let sasl = r#"postfix[mode=auth, _daemon="postern/\w+"]"#;
    assert_eq!(matched_hosts(&file, sasl), vec!["127.0.0.3"; 4]);
    assert!(proc.stop().await);
}
