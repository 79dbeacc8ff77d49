//! Issue 28, items 3 and 4, in Chromium against the real binary: the factory SMTP TLS page
//! saves its outbound card with no certificate imported (Hermes' refusal stays with the
//! inbound card, which binds one); a restore shows what it will change, a certificate
//! binding it would undo included, before it applies; a certificate import is on the Audit
//! page with its subject, serial and SHA-256 fingerprint, never its key. Every page is
//! checked (no sideways scrolling, every field labelled, screenshots) and shows no settings
//! path with an index (`x[0].y`).

mod common;

use common::browser::*;
use common::page::request_with;
use common::process::{Proc, spawn_postern};
use fantoccini::{Client, Locator};

fn chromium() -> bool {
    common::have("chromium") && common::have("chromedriver")
}

/// Submit the form that holds the field `id` with its own button, and wait for the page.
async fn submit_form_of(c: &Client, id: &str) {
    mark(c).await;
    let js = format!(
        "document.getElementById('{id}').form.querySelector('button[type=submit]').click(); return true;"
    );
    c.execute(&js, vec![]).await.unwrap();
    loaded(c).await;
}

/// The page's text names no setting by its index (`relay_domains[0].client_certificate`).
async fn no_settings_path(c: &Client, name: &str) {
    let found = c
        .execute(
            "return (document.body.innerText.match(/[a-z_]+\\[\\d+\\]/g) || []);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, serde_json::json!([]), "{name} shows a settings path");
}

async fn export(proc: &Proc) -> String {
    String::from_utf8_lossy(&proc.cli(&["settings", "export"]).stdout).into_owned()
}

/// Import `name` with the CLI (the API), as a second admin would while the page is open.
fn cli_import(proc: &Proc, dir: &std::path::Path, name: &str, cert: &str, key: &str) {
    let (cert_file, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let out = proc.cli(&[
        "cert",
        "import",
        "--name",
        name,
        "--cert",
        cert_file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (subject and serial as the pages write them, SHA-256 of the DER in lower-case hex).
fn identity(der: &[u8]) -> (String, String, String) {
    use sha2::Digest;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let sha: String = sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (cert.subject().to_string(), cert.raw_serial_as_string(), sha)
}

#[tokio::test]
async fn the_factory_smtp_tls_page_saves_its_outbound_card_without_a_certificate() {
    if !chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;

    // As it comes: Opportunistic, no certificate imported, nothing bound.
    c.goto(&format!("{base}/tls")).await.unwrap();
    arrived(&c, "#outbound_mode").await;
    check_page(&c, "tls-factory").await;
    no_settings_path(&c, "tls-factory").await;
    choose(&c, "outbound_mode", "encrypt").await;
    choose(&c, "outbound_mta_sts", "monitor").await;
    c.find(Locator::Id("outbound_dane"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit_form_of(&c, "outbound_mode").await;
    // Mandatory for all outbound mail asks first, with what it stops; nothing saved yet.
    arrived(&c, "#mandatory-question").await;
    let question = text_of(&c, "#mandatory-question").await;
    assert!(
        question.contains("Require TLS for all outbound mail?")
            && question.contains("Nothing is saved yet")
            && question.contains("outbound recipient domain(s)"),
        "{question}"
    );
    check_page_at(&c, "tls-mandatory-question", Some("mandatory-question")).await;
    assert!(!export(&proc).await.contains("tls_mode = \"encrypt\""));
    c.find(Locator::Css("#mandatory-question button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&c, "p.ok").await;
    let notice = text_of(&c, "p.ok").await;
    assert!(notice.contains("outbound STARTTLS"), "{notice}");
    check_page(&c, "tls-outbound-saved").await;
    check_page_at(&c, "tls-outbound-card", Some("outbound")).await;
    let exported = export(&proc).await;
    for want in [
        "tls_mode = \"encrypt\"",
        "mta_sts = \"monitor\"",
        "dane = true",
    ] {
        assert!(exported.contains(want), "{want}: {exported}");
    }
    // The inbound side is as it was: still Opportunistic, still nothing bound.
    assert!(!exported.contains("certificate ="), "{exported}");
    let inbound = c
        .find(Locator::Css("#inbound_mode option:checked"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap();
    assert_eq!(inbound.as_deref(), Some("may"));
    let outbound = c
        .find(Locator::Css("#outbound_mode option:checked"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap();
    assert_eq!(outbound.as_deref(), Some("encrypt"), "shown as saved");

    // Hermes' refusal stays where a certificate is bound: the inbound card, under its field.
    choose(&c, "inbound_mode", "encrypt").await;
    submit_form_of(&c, "inbound_mode").await;
    arrived(&c, ".cert .field-error").await;
    assert_eq!(
        text_of(&c, ".cert .field-error").await,
        "SMTP TLS Certificate cannot be blank when TLS Mode is set to Opportunistic or Mandatory"
    );
    // What the outbound card saved is still shown as saved beside the refusal.
    let outbound = c
        .find(Locator::Css("#outbound_mode option:checked"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap();
    assert_eq!(outbound.as_deref(), Some("encrypt"));
    check_page(&c, "tls-inbound-refused").await;
    no_settings_path(&c, "tls-inbound-refused").await;
    assert!(export(&proc).await.contains("mta_sts = \"monitor\""));
    c.close().await.unwrap();
    assert!(proc.stop().await);
}

#[tokio::test]
async fn a_restore_shows_what_it_changes_before_it_applies() {
    if !chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;
    let (cert, key, der) = self_signed("mx.test.example");
    let (_, serial, sha256) = identity(&der);
    cli_import(&proc, dir.path(), "gateway-mx-2026", &cert, &key);

    // Bound on the inbound card.
    c.goto(&format!("{base}/tls")).await.unwrap();
    arrived(&c, "#inbound_certificate").await;
    fill(&c, "inbound_certificate", "gateway-mx-2026").await;
    submit_form_of(&c, "inbound_mode").await;
    arrived(&c, "p.ok").await;
    assert!(
        export(&proc)
            .await
            .contains("certificate = \"gateway-mx-2026\"")
    );

    // Version 1, the first start, bound nothing: its confirmation says the binding goes.
    c.goto(&format!("{base}/audit")).await.unwrap();
    arrived(&c, "ol.audit").await;
    click(&c, "#v1 a[href*='restore=1']").await;
    arrived(&c, "#restore-confirm").await;
    let confirm = text_of(&c, "#confirm").await;
    assert!(confirm.contains("SMTP TLS certificate"), "{confirm}");
    let after = text_of(&c, "#confirm td[data-label='After the restore']").await;
    assert_eq!(after, "(none)", "{confirm}");
    let undone = text_of(&c, "#confirm .certificates").await;
    assert!(
        undone.contains("gateway-mx-2026")
            && undone.contains("unbound from SMTP STARTTLS")
            && undone.contains(&serial)
            && undone.contains(&sha256),
        "{undone}"
    );
    assert!(
        confirm.contains("no certificate is bound for SMTP STARTTLS"),
        "{confirm}"
    );
    check_page_at(&c, "audit-restore-confirm", Some("confirm")).await;
    no_settings_path(&c, "audit-restore-confirm").await;
    // Shown, not applied.
    assert!(
        export(&proc)
            .await
            .contains("certificate = \"gateway-mx-2026\"")
    );

    click(&c, "#restore-confirm").await;
    arrived(&c, "p.ok").await;
    assert!(text_of(&c, "p.ok").await.starts_with("Restored version 1"));
    assert!(!export(&proc).await.contains("certificate ="));
    // The restore itself is audited with the binding it undid.
    let newest = text_of(&c, "ol.audit > li:first-child").await;
    assert!(
        newest.contains("restore of version 1") && newest.contains("unbound from SMTP STARTTLS"),
        "{newest}"
    );
    check_page(&c, "audit-restored").await;
    no_settings_path(&c, "audit-restored").await;
    c.close().await.unwrap();
    assert!(proc.stop().await);
}

#[tokio::test]
async fn a_certificate_import_is_on_the_audit_page_without_its_key() {
    if !chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_postern(dir.path(), None, "");
    let driver = chromedriver().await;
    let c = browser(&driver, &dir.path().join("chromium")).await;
    let base = format!("https://{}", proc.api());
    first_sign_in(&c, &base, dir.path()).await;
    let (cert, key, der) = self_signed("mx.test.example");
    let (subject, serial, sha256) = identity(&der);

    c.goto(&format!("{base}/certificates")).await.unwrap();
    arrived(&c, "#name").await;
    fill(&c, "name", "gateway-mx-2026").await;
    fill(&c, "cert", &cert).await;
    fill(&c, "key", &key).await;
    submit_form(&c, "form.wide").await;
    arrived(&c, "p.ok").await;

    c.goto(&format!("{base}/audit")).await.unwrap();
    arrived(&c, "ol.audit").await;
    let newest = text_of(&c, "ol.audit > li:first-child").await;
    for want in [
        "admin (admin page)",
        "gateway-mx-2026",
        "imported",
        subject.as_str(),
        serial.as_str(),
        sha256.as_str(),
    ] {
        assert!(newest.contains(want), "{want:?} not in {newest}");
    }
    check_page(&c, "audit-certificate").await;
    no_settings_path(&c, "audit-certificate").await;
    let source = c.source().await.unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(
        !source.contains("PRIVATE KEY") && !source.contains(key_body),
        "the key is on the page"
    );

    // The API's audit log says the same, without the key.
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    let audit = request_with(
        proc.api(),
        "GET",
        "/api/v1/settings/audit?limit=1",
        format!("Authorization: Bearer {}\r\n", token.trim()),
        "",
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let body: serde_json::Value = serde_json::from_str(&audit.body).unwrap();
    let change = &body[0]["certificates"][0];
    assert_eq!(change["action"], "imported", "{body}");
    assert_eq!(change["name"], "gateway-mx-2026", "{body}");
    assert_eq!(change["serial"], serial.as_str(), "{body}");
    assert_eq!(change["sha256"], sha256.as_str(), "{body}");
    assert_eq!(body[0]["actor"], "admin (admin page)", "{body}");
    assert!(
        !audit.body.contains("PRIVATE KEY") && !audit.body.contains(key_body),
        "{}",
        audit.body
    );
    c.close().await.unwrap();
    assert!(proc.stop().await);
}
