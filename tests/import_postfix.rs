//! `postern import-postfix` (issue 19, first piece): a Postfix gateway configured as Hermes
//! is (main.cf, master.cf, tls_policy with `.domain` rows and an "Auto-added" row for an
//! authenticated next hop, transport to the internal hosts) is read, and postern's
//! `decide()` on the imported settings gives every recipient the level Postfix's own lookup
//! gives. The expected table follows Postfix's map semantics (by next hop; `.domain` matches
//! subdomains only); where postmap is installed, its answers on the same file are compared
//! too. Then `--apply` into a running server, and `postern policy explain` there says the
//! same for every recipient.

mod common;

use postern::policy::{Level, decide};
use postern::postfix::import::{Outcome, import};
use postern::settings::{Settings, Snapshot};

const MAIN_CF: &str = "\
compatibility_level = 3.6
myhostname = gateway.example.net
mydomain = example.net
mynetworks = 127.0.0.0/8 [::1]/128 10.1.0.0/16
relay_domains = example.net, corp.example
transport_maps = hash:/etc/postfix/transport
smtpd_tls_security_level = may
smtp_tls_security_level = may
smtp_tls_policy_maps = hash:${config_directory}/tls_policy
smtpd_tls_cert_file = /etc/postfix/certs/gateway.pem
smtpd_tls_key_file = /etc/postfix/certs/gateway.key
smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt
message_size_limit = 52428800
smtpd_recipient_limit = 500
maximal_queue_lifetime = 3d
smtpd_client_connection_count_limit = 30
smtpd_banner = $myhostname ESMTP
smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd
relay_recipient_maps = hash:/etc/postfix/relay_recipients
smtpd_relay_restrictions = permit_mynetworks,
    permit_sasl_authenticated, reject_unauth_destination
";

const TRANSPORT: &str = "\
example.net     smtp:[10.1.0.25]
corp.example    smtp:[exchange.corp.example]:587
.branch.example smtp:[10.2.0.25]
";

const TLS_POLICY: &str = "\
# TLS policy domains
.partner.example            encrypt
partner2.example            encrypt
secure.example              secure match=secure.example:.secure.example
# Auto-added: domain requires authentication
[exchange.corp.example]:587 encrypt
[10.2.0.25]                 encrypt
# Routed by the transport table: Postfix looks up [10.1.0.25], never this row.
example.net                 encrypt
";

/// Recipient → the level Postfix applies (smtp_tls_security_level where no row matches).
const EXPECTED: &[(&str, Level)] = &[
    // `.partner.example` covers subdomains only.
    ("a@partner.example", Level::May),
    ("a@mail.partner.example", Level::Encrypt),
    ("a@partner2.example", Level::Encrypt),
    // `partner2.example` is exact.
    ("a@sub.partner2.example", Level::May),
    ("a@secure.example", Level::Secure),
    // Routed to [exchange.corp.example]:587, whose row decides.
    ("a@corp.example", Level::Encrypt),
    // Routed to [10.1.0.25]: no row (its domain row is not looked up).
    ("a@example.net", Level::May),
    // `.branch.example` routes subdomains to [10.2.0.25]; branch.example itself goes by MX.
    ("a@x.branch.example", Level::Encrypt),
    ("a@branch.example", Level::May),
    ("a@elsewhere.example", Level::May),
];

fn postfix_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("main.cf", MAIN_CF);
    write(
        "master.cf",
        "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n  -o smtpd_tls_security_level=encrypt\n",
    );
    write("transport", TRANSPORT);
    write("tls_policy", TLS_POLICY);
    write(
        "sasl_passwd",
        "[exchange.corp.example]:587 gateway@corp.example:s3cret-pass\n",
    );
    write(
        "relay_recipients",
        "alice@example.net OK\nbob@example.net OK\n@corp.example OK\n",
    );
    dir
}

/// A self-signed certificate for gateway.example.net (PEM, then its key), and `certs/` in
/// `dir` to put them in.
fn gateway_cert(dir: &std::path::Path) -> (String, String) {
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway.example.net".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

struct NoPasswords;
impl postern::settings::PasswordHasher for NoPasswords {
    fn hash(&self, _: &str) -> Result<String, String> {
        Err("no passwords in this import".into())
    }
}

#[test]
fn hermes_shaped_policy_gives_postfixs_levels() {
    let dir = postfix_dir();
    let imported = import(dir.path()).unwrap();
    let settings = Settings::default()
        .apply(&imported.settings, &NoPasswords)
        .unwrap_or_else(|e| panic!("the imported document does not validate: {e}"));
    let snapshot = Snapshot::new(settings, 1);
    for (rcpt, want) in EXPECTED {
        let d = decide(&snapshot, rcpt, None, None);
        assert_eq!(d.level, *want, "{rcpt}: {:#?}", d.explanation);
    }
    let secure = decide(&snapshot, "a@secure.example", None, None);
    // Postfix's `.secure.example` (any subdomain) has no postern form: the name is kept.
    assert_eq!(secure.match_names, ["secure.example"]);
}

/// The import of a directory holding only this main.cf.
fn import_main_cf(text: &str) -> postern::postfix::import::Imported {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.cf"), text).unwrap();
    import(dir.path()).unwrap()
}

/// Postfix's older switches count where the security level is not set.
#[test]
fn legacy_tls_switches_are_read() {
    let imported =
        import_main_cf("smtpd_use_tls = yes\nsmtp_enforce_tls = yes\nsmtp_use_tls = yes\n");
    assert_eq!(
        imported.settings.inbound.tls_mode,
        postern::settings::TlsMode::May
    );
    assert_eq!(
        imported.settings.outbound.tls_mode,
        postern::settings::TlsMode::Encrypt
    );
    assert!(!imported.dropped_security(), "{:#?}", imported.report);
    assert_eq!(imported.report.len(), 3, "{:#?}", imported.report);
}

/// Restrictions beyond postern's relay control are named, and the exit code says so.
#[test]
fn other_restrictions_are_left_behind_and_named() {
    let imported = import_main_cf(
        "smtpd_recipient_restrictions = permit_mynetworks, check_client_access hash:/etc/postfix/access, reject_unauth_destination\n",
    );
    assert!(imported.dropped_security());
    let Outcome::Dropped { why, .. } = &imported.report[0].outcome else {
        panic!("{:#?}", imported.report)
    };
    assert!(
        why.starts_with("check_client_access, hash:/etc/postfix/access:"),
        "{why}"
    );
}

#[test]
fn every_parameter_is_in_the_report() {
    let dir = postfix_dir();
    let imported = import(dir.path()).unwrap();
    let cf = postern::postfix::conf::MainCf::parse(MAIN_CF).unwrap();
    for p in &cf.parameters {
        assert!(
            imported.report.iter().any(|l| l.parameter == p.name),
            "{} is not in the report",
            p.name
        );
    }
    let line = |name: &str| {
        imported
            .report
            .iter()
            .find(|l| l.parameter == name)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(
        line("smtpd_banner"),
        Outcome::Dropped {
            security: false,
            ..
        }
    ));
    assert!(matches!(
        line("smtpd_relay_restrictions"),
        Outcome::Carried(_)
    ));
    assert!(
        imported.dropped_security(),
        "master.cf's encrypt override is security-relevant"
    );
    let smtp = &imported.config["smtp"];
    assert_eq!(smtp["max_message_size"].as_integer(), Some(52_428_800));
    assert_eq!(smtp["max_recipients"].as_integer(), Some(500));
    assert_eq!(smtp["max_connections_per_client"].as_integer(), Some(30));
    assert_eq!(
        imported.config["outbound"]["queue_lifetime_secs"].as_integer(),
        Some(3 * 86_400)
    );
    assert_eq!(
        imported.settings.inbound.certificate.as_deref(),
        Some("postfix-smtpd")
    );
    // /etc/postfix/certs/gateway.pem, found in the copied directory.
    assert_eq!(
        imported.certificates[0].cert,
        dir.path().join("certs/gateway.pem")
    );
    let corp = imported
        .settings
        .relay_domains
        .iter()
        .find(|d| d.domain == "corp.example")
        .unwrap();
    assert_eq!(
        corp.transport.as_deref(),
        Some("[exchange.corp.example]:587")
    );
}

/// Postfix's own lookup (postmap -q on the same source, next hop first, then `.parent`
/// keys) against the table the test expects, where Postfix is installed.
#[test]
fn postmap_agrees_with_the_expected_table() {
    if std::process::Command::new("postmap")
        .arg("-h")
        .output()
        .is_err()
    {
        // The issue asks for this comparison where Postfix is installed; .ci/run does not
        // install it (its package starts a daemon on port 25); the other tests hold the table.
        eprintln!("postmap not installed: Postfix's own lookup not compared");
        return;
    }
    let dir = postfix_dir();
    let table = dir.path().join("tls_policy");
    let config = dir.path().display().to_string();
    let built = std::process::Command::new("postmap")
        .args(["-c", &config])
        .arg(format!("hash:{}", table.display()))
        .status()
        .unwrap();
    assert!(built.success());
    let query = |key: &str| {
        let out = std::process::Command::new("postmap")
            .args([
                "-c",
                &config,
                "-q",
                key,
                &format!("hash:{}", table.display()),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (rcpt, want) in EXPECTED {
        let domain = rcpt.split('@').nth(1).unwrap();
        // The transport lookup: the domain, then `.parent` keys.
        let mut transport_keys = vec![domain.to_string()];
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            transport_keys.push(format!(".{parent}"));
            rest = parent;
        }
        let hop = transport_keys
            .iter()
            .find_map(|key| {
                TRANSPORT.lines().find_map(|l| {
                    let (k, v) = l.split_once(char::is_whitespace)?;
                    (k == key).then(|| v.trim().trim_start_matches("smtp:").to_string())
                })
            })
            .unwrap_or_else(|| domain.to_string());
        let mut keys = vec![hop.clone()];
        if !hop.starts_with('[') {
            let mut rest = hop.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                keys.push(format!(".{parent}"));
                rest = parent;
            }
        }
        let found = keys.iter().map(|k| query(k)).find(|v| !v.is_empty());
        let level = found
            .map(|v| {
                v.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<Level>()
                    .unwrap()
            })
            .unwrap_or(Level::May);
        assert_eq!(level, *want, "{rcpt}: postmap looked up {keys:?}");
    }
}

/// The command: files a newcomer can use as they are (the settings document parses and
/// validates, the config keys load), the report on stdout, exit 1 for what is left behind.
#[test]
fn the_command_writes_the_files_and_the_report() {
    let dir = postfix_dir();
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("import-postfix")
        .arg(dir.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{report}");
    assert!(
        report.contains(
            "master.cf submission -o smtpd_tls_security_level: not carried over (security-relevant)"
        ),
        "{report}"
    );
    assert!(
        report.contains("smtp_tls_policy_maps: 7 policy row(s)"),
        "{report}"
    );
    assert!(
        report.contains("next: postern cert import --name postfix-smtpd"),
        "{report}"
    );
    assert!(!report.contains("s3cret-pass"), "{report}");
    let settings_file = out.path().join("settings.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&settings_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "settings.toml holds relay passwords");
    let doc: postern::settings::SettingsDoc =
        toml::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    Settings::default().apply(&doc, &NoPasswords).unwrap();
    let config = postern::config::Config::load(Some(&out.path().join("postern.toml"))).unwrap();
    assert_eq!(config.smtp.max_message_size, 52_428_800);
    assert_eq!(config.outbound.queue_lifetime_secs, 3 * 86_400);
    assert_eq!(config.server.hostname, "gateway.example.net");
}

#[test]
fn applied_to_a_running_server_policy_explain_gives_postfixs_levels() {
    let pf = postfix_dir();
    let (cert, key) = gateway_cert(pf.path());
    std::fs::write(pf.path().join("certs/gateway.pem"), cert).unwrap();
    std::fs::write(pf.path().join("certs/gateway.key"), key).unwrap();
    let data = tempfile::tempdir().unwrap();
    let proc = common::process::spawn_postern(data.path(), None, "");
    let out = data.path().join("imported");
    let run = proc.cli(&[
        "import-postfix",
        pf.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--apply",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "left behind: exit 1; {stderr}");
    assert!(
        stderr.contains("imported certificate postfix-smtpd"),
        "{stderr}"
    );
    for (rcpt, want) in EXPECTED {
        let explain = proc.cli(&["policy", "explain", rcpt, "--json"]);
        assert!(
            explain.status.success(),
            "{}",
            String::from_utf8_lossy(&explain.stderr)
        );
        let d: serde_json::Value = serde_json::from_slice(&explain.stdout).unwrap();
        assert_eq!(d["level"], want.to_string(), "{rcpt}: {d:#}");
    }
    let exported = proc.cli(&["settings", "export"]);
    let doc: toml::Table = toml::from_str(&String::from_utf8_lossy(&exported.stdout)).unwrap();
    assert_eq!(
        doc["inbound"]["certificate"].as_str(),
        Some("postfix-smtpd")
    );
}

/// `smtpd_tls_chain_files` (the key, then its chain, in one file; Postfix prefers it to
/// cert_file/key_file): split into OUT/postfix-smtpd.crt and .key (0600), bound.
#[test]
fn chain_files_become_a_certificate_to_import() {
    let pf = tempfile::tempdir().unwrap();
    let (cert, key) = gateway_cert(pf.path());
    std::fs::write(pf.path().join("certs/chain.pem"), format!("{key}{cert}")).unwrap();
    std::fs::write(
        pf.path().join("main.cf"),
        "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = ${config_directory}/certs/chain.pem\nsmtpd_tls_cert_file = /old/cert.pem\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["import-postfix", pf.path().to_str().unwrap(), "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        report.contains("smtpd_tls_cert_file: not used: smtpd_tls_chain_files is set"),
        "{report}"
    );
    let crt = std::fs::read_to_string(out.path().join("postfix-smtpd.crt")).unwrap();
    let key_file = out.path().join("postfix-smtpd.key");
    assert_eq!(crt.trim(), cert.trim());
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        key.trim()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        report.contains(&format!(
            "next: postern cert import --name postfix-smtpd --cert {}",
            out.path().join("postfix-smtpd.crt").display()
        )),
        "{report}"
    );
}

/// Issue 31: TLS required of named senders and clients (`reject_plaintext_session` as the
/// action of `check_sender_access` and `check_client_access` maps, directly or through a
/// restriction class) becomes inbound `encrypt` rows that name what Postfix's lookup
/// matched; certificates Postfix knows by fingerprint are named as left behind, saying what
/// to add instead; `plaintext_reject_code` is carried.
#[test]
fn tls_required_of_named_senders_and_clients_becomes_inbound_rows() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "main.cf",
        "smtpd_restriction_classes = tls_only, cert_only\n\
         tls_only = reject_plaintext_session\n\
         cert_only = permit_tls_clientcerts, reject\n\
         relay_clientcerts = hash:/etc/postfix/relay_clientcerts\n\
         plaintext_reject_code = 554\n\
         smtpd_tls_ask_ccert = yes\n\
         smtpd_sender_restrictions = check_sender_access hash:/etc/postfix/tls_senders\n\
         smtpd_client_restrictions = permit_mynetworks,\n    check_client_access cidr:/etc/postfix/tls_clients\n\
         smtpd_recipient_restrictions = check_ccert_access hash:/etc/postfix/ccerts, reject_unauth_destination\n",
    );
    write(
        "tls_senders",
        "partner.example   reject_plaintext_session\nbank.example  tls_only\nceo@other.example reject_plaintext_session\ncerts.example cert_only\n",
    );
    write(
        "tls_clients",
        "192.0.2.0/24   reject_plaintext_session\n198.51.100.7   tls_only\n",
    );
    let imported = import(dir.path()).unwrap();
    let rows: Vec<(&str, &str)> = imported
        .settings
        .inbound_tls
        .iter()
        .map(|r| (r.pattern.as_str(), r.note.as_str()))
        .collect();
    // In the order of the restriction lists: smtpd_client_restrictions first.
    assert_eq!(
        rows,
        [
            (
                "192.0.2.0/24",
                "imported: check_client_access cidr:/etc/postfix/tls_clients line 1"
            ),
            (
                "198.51.100.7",
                "imported: check_client_access cidr:/etc/postfix/tls_clients line 2"
            ),
            (
                ".partner.example",
                "imported: check_sender_access hash:/etc/postfix/tls_senders line 1"
            ),
            (
                ".bank.example",
                "imported: check_sender_access hash:/etc/postfix/tls_senders line 2"
            ),
        ]
    );
    assert_eq!(imported.settings.inbound.plaintext_reject_code, 554);
    let line = |name: &str| -> Vec<Outcome> {
        imported
            .report
            .iter()
            .filter(|l| l.parameter == name)
            .map(|l| l.outcome.clone())
            .collect()
    };
    let senders = line("check_sender_access hash:/etc/postfix/tls_senders");
    assert_eq!(
        senders[0],
        Outcome::Carried(
            "inbound TLS rows: .partner.example encrypt, .bank.example encrypt".into()
        )
    );
    let Outcome::Dropped {
        why,
        security: true,
    } = &senders[1]
    else {
        panic!("{senders:#?}")
    };
    assert!(
        why.contains("ceo@other.example reject_plaintext_session (line 3): an address"),
        "{why}"
    );
    assert!(
        why.contains("certs.example cert_only (line 4): cert_only = permit_tls_clientcerts, reject: a client certificate Postfix matches by fingerprint; add a verify row"),
        "{why}"
    );
    // The client map is carried whole: its restriction list is then all carried.
    let Outcome::Carried(said) = &line("smtpd_client_restrictions")[0] else {
        panic!("{:#?}", imported.report)
    };
    assert!(
        said.contains("check_client_access cidr:/etc/postfix/tls_clients: inbound TLS rows"),
        "{said}"
    );
    for left in [
        "relay_clientcerts",
        "check_ccert_access hash:/etc/postfix/ccerts",
    ] {
        assert!(
            matches!(&line(left)[..], [Outcome::Dropped { security: true, why }] if why.contains("by name")),
            "{left}: {:#?}",
            imported.report
        );
    }
    assert!(matches!(
        &line("smtpd_tls_ask_ccert")[..],
        [Outcome::Carried(_)]
    ));

    // The document validates, and each row names what Postfix's lookup matched.
    let settings = Settings::default()
        .apply(&imported.settings, &NoPasswords)
        .unwrap_or_else(|e| panic!("the imported document does not validate: {e}"));
    let decide = |sender: &str, ip: &str| {
        let d = postern::policy::inbound::decide_inbound(
            &settings.inbound_tls,
            Some(sender),
            ip.parse().unwrap(),
        );
        (
            d.sender_row.map(|r| r.row.pattern),
            d.client_row.map(|r| r.row.pattern),
        )
    };
    assert_eq!(
        decide("a@mail.partner.example", "192.0.2.9"),
        (Some(".partner.example".into()), Some("192.0.2.0/24".into()))
    );
    assert_eq!(
        decide("a@partner.example", "198.51.100.8"),
        (Some(".partner.example".into()), None)
    );
    assert_eq!(
        decide("a@other.example", "198.51.100.7"),
        (None, Some("198.51.100.7".into()))
    );
}
