//! `postern settings import` as an admin runs it against a live server: a file replaces only
//! the sections it has, `--replace` the whole document, `--dry-run` nothing; what changes is
//! printed first.

mod common;

use common::process::{Proc, spawn_postern};

const GATEWAY: &str = r#"
trusted_networks = ["127.0.0.0/8", "192.0.2.0/24"]

[inbound]
tls_mode = "may"

[[relay_domains]]
domain = "example.com"
transport = "[mail.example.com]:25"

[[policy]]
pattern = "partner.example"
level = "verify"
"#;

const ONLY_INBOUND: &str = "[inbound]\ntls_mode = \"encrypt\"\n";

fn export(proc: &Proc) -> toml::Table {
    let out = proc.cli(&["settings", "export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn import(proc: &Proc, name: &str, text: &str, flags: &[&str]) -> String {
    let file = proc.config.with_file_name(name);
    std::fs::write(&file, text).unwrap();
    let mut args = vec!["settings", "import", file.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = proc.cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn gateway_sections_of(doc: &toml::Table) -> [Option<&toml::Value>; 3] {
    [
        doc.get("trusted_networks"),
        doc.get("relay_domains"),
        doc.get("policy"),
    ]
}

#[test]
fn a_file_replaces_only_its_sections_replace_clears_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let err = import(&proc, "gateway.toml", GATEWAY, &[]);
    assert!(err.contains("trusted_networks: 1 added"), "{err}");
    assert!(err.contains("relay_domains: 1 added"), "{err}");
    assert!(err.contains("policy: 1 added"), "{err}");
    let before = export(&proc);
    let kept = gateway_sections_of(&before).map(|v| v.cloned());
    assert!(kept.iter().all(Option::is_some), "{before:?}");

    // --dry-run: the change is printed, nothing is applied.
    let err = import(&proc, "inbound.toml", ONLY_INBOUND, &["--dry-run"]);
    assert!(err.contains("inbound.toml: inbound: 1 changed"), "{err}");
    assert!(err.contains("--dry-run: nothing applied"), "{err}");
    assert!(!err.contains("settings from"), "{err}");
    assert_eq!(export(&proc), before);

    // Only [inbound]: the other sections are named as kept, and kept.
    let err = import(&proc, "inbound.toml", ONLY_INBOUND, &[]);
    assert!(
        err.contains("kept as they are (not in the file; --replace to reset them): outbound, admin, trusted_networks, relay_domains, smtp_auth_users, policy, rule_data, rules"),
        "{err}"
    );
    assert!(err.contains("inbound.toml: inbound: 1 changed"), "{err}");
    assert!(err.contains("settings from"), "{err}");
    let after = export(&proc);
    assert_eq!(after["inbound"]["tls_mode"].as_str(), Some("encrypt"));
    assert_eq!(gateway_sections_of(&after).map(|v| v.cloned()), kept);

    // The same file a second time: nothing to do.
    let err = import(&proc, "inbound.toml", ONLY_INBOUND, &[]);
    assert!(err.contains("inbound.toml: no change"), "{err}");

    // --replace --dry-run: the wipe is shown, and not done.
    let err = import(
        &proc,
        "inbound.toml",
        ONLY_INBOUND,
        &["--replace", "--dry-run"],
    );
    assert!(err.contains("trusted_networks: 2 removed"), "{err}");
    assert_eq!(export(&proc), after);

    // --replace: what the file lacks goes back to its default (empty).
    let err = import(&proc, "inbound.toml", ONLY_INBOUND, &["--replace"]);
    assert!(err.contains("trusted_networks: 2 removed"), "{err}");
    assert!(err.contains("relay_domains: 1 removed"), "{err}");
    assert!(err.contains("policy: 1 removed"), "{err}");
    let replaced = export(&proc);
    assert_eq!(replaced["inbound"]["tls_mode"].as_str(), Some("encrypt"));
    for section in gateway_sections_of(&replaced) {
        assert!(
            section.is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)),
            "{replaced:?}"
        );
    }
    assert!(proc.terminate());
}

/// A section the document does not have is refused by name, and nothing changes.
#[test]
fn an_unknown_section_is_named_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let before = export(&proc);
    let file = proc.config.with_file_name("bad.toml");
    std::fs::write(&file, "[inbond]\ntls_mode = \"encrypt\"\n").unwrap();
    let out = proc.cli(&["settings", "import", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml") && err.contains("inbond"), "{err}");
    assert_eq!(export(&proc), before);
    assert!(proc.terminate());
}

/// A CLI command against a data directory that does not exist says so once, with the file.
#[test]
fn a_missing_data_directory_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    let data = dir.path().join("no-such-data");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["settings", "export", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "postern: fatal: {}/api-token: No such file or directory (run this in the directory `postern serve` runs in, or pass the same --config; `postern serve` creates server.data_dir at first start)",
            data.display()
        )
    );
}

/// In a container: the host name from POSTERN_HOSTNAME when the config leaves it empty, and
/// every CLI command finding the config through POSTERN_CONFIG (as the Dockerfile sets them).
#[tokio::test]
async fn hostname_and_config_from_the_environment() {
    use common::process::Keys;
    let dir = tempfile::tempdir().unwrap();
    let proc = common::process::spawn_postern_with(
        dir.path(),
        Some("export POSTERN_HOSTNAME=gw.env.example"),
        Keys {
            hostname: Some(""),
            ..Keys::default()
        },
        "",
    );
    let mut c = common::SmtpClient::connect(proc.smtp, None, None).await;
    let ehlo = c.cmd("EHLO client.test.example").await;
    assert_eq!(ehlo.lines[0], "gw.env.example", "{ehlo:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .env("POSTERN_CONFIG", &proc.config)
        .args(["settings", "export", "--api", &proc.api().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[inbound]"));
    assert!(proc.stop().await);
}
