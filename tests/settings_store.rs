//! The settings store at start-up, with the real binary: a store that existed and is now
//! missing, empty or damaged stops start-up with a message naming the file (never defaults
//! in silence, never a panic); `--reset-settings` and `--restore-settings` start on purpose.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// `postern serve ARGS` on `dir`: Ok(its log up to "daemon started", then stopped) or
/// Err(everything it printed before exiting).
fn serve(dir: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let config = dir.join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test.example\"\ndata_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("daemon started") {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
            return Ok(log);
        }
    }
    assert!(!child.wait().unwrap().success());
    Err(log)
}

#[tokio::test]
async fn a_vanished_store_refuses_to_start_and_can_be_restored() {
    // A gateway with settings of its own.
    let server = TestServer::start().await;
    server
        .set(serde_json::json!({"trusted_networks": ["192.0.2.0/24"]}))
        .await;
    let (_, dir) = server.stop().await;
    let store = dir.path().join("postern.redb");
    let last_good = dir.path().join("postern.redb.last-good.json");
    assert!(
        std::fs::read_to_string(&last_good)
            .unwrap()
            .contains("192.0.2.0/24")
    );

    // Removed: refused, naming the file and the ways out.
    std::fs::remove_file(&store).unwrap();
    let err = serve(dir.path(), &[]).unwrap_err();
    assert!(
        err.contains(&format!(
            "{}: the settings store is missing or empty",
            store.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("--restore-settings") && err.contains("--reset-settings"),
        "{err}"
    );
    assert!(
        !store.exists() || std::fs::metadata(&store).unwrap().len() == 0 || err.contains("missing")
    );

    // Empty (a file of zero bytes): the same.
    std::fs::write(&store, b"").unwrap();
    let err = serve(dir.path(), &[]).unwrap_err();
    assert!(
        err.contains("the settings store is missing or empty"),
        "{err}"
    );

    // Restored from the copy kept outside the store: the settings are back.
    std::fs::remove_file(&store).unwrap();
    serve(
        dir.path(),
        &["--restore-settings", last_good.to_str().unwrap()],
    )
    .unwrap();
    let restored = postern::settings::SettingsHandle::open(&store).unwrap();
    let networks = format!("{:?}", restored.current().settings.trusted_networks);
    assert!(networks.contains("192.0.2.0/24"), "{networks}");
    drop(restored);

    // Garbage in the store: a clean fatal naming the file and the copy, no panic.
    std::fs::write(&store, vec![0x5a; 64 * 1024]).unwrap();
    let err = serve(dir.path(), &[]).unwrap_err();
    assert!(
        err.contains(&format!(
            "{}: the settings store is damaged",
            store.display()
        )),
        "{err}"
    );
    assert!(err.contains(&last_good.display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Reset on purpose: starts on the defaults.
    std::fs::remove_file(&store).unwrap();
    let log = serve(dir.path(), &["--reset-settings"]).unwrap();
    assert!(log.contains("settings reset to the defaults"), "{log}");
}

/// A write that fails for want of space (a file size limit standing in for a full disk):
/// that change gets an error, and the next one is stored, without a restart.
#[tokio::test]
async fn the_store_is_reopened_after_a_write_error() {
    let dir = tempfile::tempdir().unwrap();
    let proc = common::process::spawn_postern(dir.path(), Some("trap '' XFSZ; ulimit -f 256"), "");
    let api = proc.api();
    let client = postern::admin::client::ApiClient::new(api, &dir.path().join("data")).unwrap();
    let put = |doc: serde_json::Value| {
        let body = serde_json::to_vec(&doc).unwrap();
        let client = &client;
        async move {
            let (status, body) = client
                .request(hyper::Method::PUT, "/api/v1/settings", Some(body))
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // ~234 KB of recipients, stored as the current settings and in the audit entry: past
    // the 256 KiB file limit.
    let many: Vec<String> = (0..9_000)
        .map(|n| format!("user{n:06}@ours.example"))
        .collect();
    let (status, body) = put(serde_json::json!({
        "relay_domains": [{"domain": "ours.example", "recipients": many}],
    }))
    .await;
    assert_eq!(status, hyper::StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status, body) = put(serde_json::json!({"trusted_networks": ["192.0.2.0/24"]})).await;
    assert_eq!(
        status,
        hyper::StatusCode::OK,
        "the store stayed broken: {body}"
    );
    let (status, body) = client
        .request(hyper::Method::GET, "/api/v1/settings", None)
        .await
        .unwrap();
    assert_eq!(status, hyper::StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("192.0.2.0/24"));
    assert!(proc.stop().await);
}

/// Issue 27: a crash between the store's commit and the copy's rename leaves
/// `last-good.json` a version behind; the next start makes it the settings in force.
#[tokio::test]
async fn a_stale_last_good_copy_is_rewritten_at_start_up() {
    let server = TestServer::start().await;
    server
        .set(serde_json::json!({"trusted_networks": ["192.0.2.0/24"]}))
        .await;
    let last_good = server.data_dir().join("postern.redb.last-good.json");
    let older = std::fs::read(&last_good).unwrap();
    server
        .set(serde_json::json!({"trusted_networks": ["198.51.100.0/24"]}))
        .await;
    let (_, dir) = server.stop().await;
    std::fs::write(&last_good, &older).unwrap();

    let log = serve(dir.path(), &[]).unwrap();
    assert!(
        log.contains(&format!(
            "{}: the copy of the settings differed from the store; rewritten",
            last_good.display()
        )),
        "{log}"
    );
    let copy: postern::settings::Settings =
        serde_json::from_slice(&std::fs::read(&last_good).unwrap()).unwrap();
    let store = postern::settings::SettingsHandle::open(&dir.path().join("postern.redb")).unwrap();
    assert_eq!(copy, store.current().settings);
    let networks = format!("{:?}", copy.trusted_networks);
    assert!(networks.contains("198.51.100.0/24"), "{networks}");
    drop(store);

    // In step: left alone, and nothing said.
    let log = serve(dir.path(), &[]).unwrap();
    assert!(!log.contains("copy of the settings"), "{log}");
}
