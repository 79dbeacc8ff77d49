//! `postern check`, the real binary, on a data directory a real `postern serve` made: a good
//! installation exits 0; each problem gives exactly one line naming the file and key, and
//! exit 1. The packaged unit runs it before every start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::spawn_postern;
use postern::settings::certificates::{Kind, StoredCert};
use postern::settings::{Argon2Hasher, Secret, SettingsDoc, SettingsHandle};
use rcgen::{CertificateParams, DnType, KeyPair};

/// A data directory after a first start and a clean stop, and its config file.
fn installed() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let config = proc.config.clone();
    assert!(proc.terminate(), "postern stops cleanly");
    (dir, config)
}

/// Exit code, and the lines on stderr that are errors.
fn check(config: &Path) -> (i32, Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with("postern: error: "))
        .map(str::to_string)
        .collect();
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), errors, all)
}

#[test]
fn a_good_installation_passes() {
    let (_dir, config) = installed();
    let (code, errors, all) = check(&config);
    assert_eq!((code, errors.len()), (0, 0), "{all}");
    assert!(all.contains(": ok (1 warning(s))"), "{all}");
    assert!(
        all.contains("postern: warning: inbound.certificate: SMTP STARTTLS serves the self-signed system certificate"),
        "{all}"
    );
}

#[test]
fn a_data_directory_others_can_read_is_one_error() {
    let (dir, config) = installed();
    let data = dir.path().join("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (code, errors, all) = check(&config);
    assert_eq!((code, errors.len()), (1, 1), "{all}");
    assert_eq!(
        errors[0],
        format!(
            "postern: error: server.data_dir = {}: mode 0750, expected 0700: it holds the API token, private keys and the mail queue (chmod 0700 {})",
            data.display(),
            data.display()
        )
    );
}

#[test]
fn an_unknown_config_key_is_one_error_naming_file_and_key() {
    let (_dir, config) = installed();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[smtp]\n", "[smtp]\nmax_mesage_size = 10485760\n", 1),
    )
    .unwrap();
    let (code, errors, all) = check(&config);
    assert_eq!((code, errors.len()), (1, 1), "{all}");
    let expected = format!(
        "postern: error: {}: smtp.max_mesage_size: unknown field `max_mesage_size`, expected one of `listen`, `max_message_size`",
        config.display()
    );
    assert!(errors[0].starts_with(&expected), "{}", errors[0]);
}

/// A certificate for `host` that expired yesterday: (chain PEM, key PEM).
fn expired(host: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(90);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn an_expired_bound_certificate_is_one_error() {
    let (dir, config) = installed();
    // Imported while valid, bound for SMTP, and expired since: what the store holds then.
    // Import refuses an expired certificate, so it is put in the store directly.
    {
        let store = SettingsHandle::open(&dir.path().join("data/postern.redb")).unwrap();
        let (chain_pem, key_pem) = expired("mx.test.example");
        let cert = StoredCert {
            name: "mx".into(),
            kind: Kind::Imported,
            chain_pem,
            key_pem: Some(Secret::new(key_pem)),
            added_unix: 0,
            id: None,
        };
        store.put_certificate(&cert, false, "test").unwrap();
        let doc: SettingsDoc = serde_json::from_value(serde_json::json!({
            "inbound": {"tls_mode": "may", "certificate": "mx"},
            "trusted_networks": ["127.0.0.0/8"],
        }))
        .unwrap();
        store.replace(&doc, "test", &Argon2Hasher).unwrap();
    }
    let (code, errors, all) = check(&config);
    assert_eq!((code, errors.len()), (1, 1), "{all}");
    assert!(
        errors[0].starts_with(
            "postern: error: certificate \"mx\" (bound to inbound.certificate (SMTP STARTTLS (inbound))): the certificate expired on "
        ),
        "{}",
        errors[0]
    );
}

#[test]
fn a_listener_that_cannot_bind_is_one_error() {
    let (_dir, config) = installed();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    // The first `listen` of the file is [smtp]'s.
    std::fs::write(
        &config,
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{addr}\""),
            1,
        ),
    )
    .unwrap();
    let (code, errors, all) = check(&config);
    assert_eq!((code, errors.len()), (1, 1), "{all}");
    assert_eq!(
        errors[0],
        format!(
            "postern: error: smtp.listen = {addr}: cannot listen: Address already in use: another program listens there (ss -ltnp 'sport = :{}')",
            addr.port()
        )
    );
    drop(taken);
    let (code, _, all) = check(&config);
    assert_eq!(code, 0, "{all}");
}

#[tokio::test]
async fn a_dns_server_that_does_not_answer_is_one_warning_not_an_error() {
    let (_dir, config) = installed();
    let answering = common::dns::serve(common::dns::Zone::default()).await;
    // Bound, so nothing else answers on it, and never read.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().map(|a| (silent, a)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}\n[outbound]\nnameservers = [\"{answering}\", \"{}\"]\n",
            silent.1
        ),
    )
    .unwrap();
    let config2 = config.clone();
    let (code, errors, all) = tokio::task::spawn_blocking(move || check(&config2))
        .await
        .unwrap();
    // A resolver away for a moment must not keep port 25 closed (the unit's ExecStartPre).
    assert_eq!((code, errors.len()), (0, 0), "{all}");
    let warnings: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("postern: warning: outbound.nameservers"))
        .collect();
    assert_eq!(
        warnings,
        [format!(
            "postern: warning: outbound.nameservers: {}: did not answer a DNS query within 3 s: mail that needs an MX lookup would wait",
            silent.1
        )]
    );
}

#[test]
fn a_running_server_is_noted_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let (code, errors, all) = check(&proc.config);
    let pid = proc.child.id();
    assert!(proc.terminate());
    assert_eq!((code, errors.len()), (0, 0), "{all}");
    assert!(
        all.contains(&format!(
            "postern.redb: in use by a running postern (pid {pid}): its certificates and listeners are that server's"
        )),
        "{all}"
    );
}

#[test]
fn the_package_and_container_configurations_parse_with_the_same_layout() {
    let load = |rel: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        postern::config::Config::load(Some(&path)).unwrap()
    };
    let deb = load("debian/postern.toml");
    assert_eq!(deb.smtp.listen.to_string(), "0.0.0.0:25");
    assert_eq!(deb.admin.listen.to_string(), "127.0.0.1:8443");
    let docker = load("docker/postern.toml");
    assert_eq!(docker.smtp.listen.to_string(), "0.0.0.0:2525");
    for c in [&deb, &docker] {
        assert_eq!(c.server.data_dir, Path::new("/var/lib/postern"));
        assert!(
            c.outbound.nameservers.is_empty(),
            "nothing leaves a test machine"
        );
    }
}
