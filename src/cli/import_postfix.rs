//! `postern import-postfix DIR --out OUT [--apply]`: a Postfix configuration translated
//! into a settings document and config keys, one report line per main.cf parameter; with
//! `--apply`, its certificates and settings sent to the running server. Exit 0 only when
//! nothing security-relevant was left behind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use postern::config::Config;
use postern::postfix::import::{CertFiles, Imported, Outcome, ReportLine, import, split_chain};

use super::{api_client, fail, parse_response};

pub async fn run(
    config: &Config,
    api: Option<SocketAddr>,
    (dir, out): (&Path, &Path),
    apply: bool,
) -> ExitCode {
    let (left_behind, certificates) = match translate(dir, out) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let applied = if apply {
        apply_import(config, api, out, &certificates).await
    } else {
        Ok(())
    };
    match applied {
        Err(e) => fail(format!("{e:#}")),
        Ok(()) if left_behind => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
    }
}

/// The files and the report; whether something security-relevant was left behind, and the
/// certificates to import.
fn translate(dir: &Path, out: &Path) -> Result<(bool, Vec<CertFiles>), ExitCode> {
    let mut imported = import(dir).map_err(fail)?;
    let settings = toml::to_string_pretty(&imported.settings)
        .map_err(|e| fail(format!("cannot write the settings document: {e}")))?;
    let config = config_table(&imported.config);
    let written = std::fs::create_dir_all(out)
        .and_then(|()| write_private(&out.join("settings.toml"), &settings))
        .and_then(|()| std::fs::write(out.join("postern.toml"), config.to_string()));
    if let Err(e) = written {
        return Err(fail(format!("{}: {e}", out.display())));
    }
    split_chains(&mut imported, out)?;
    print!("{}", report_text(&imported.report));
    print!("{}", next_steps(&imported.certificates, out));
    Ok((imported.dropped_security(), imported.certificates))
}

/// The config keys, section by section (a dotted section is a nested table).
fn config_table(sections: &BTreeMap<String, BTreeMap<String, toml::Value>>) -> toml::Table {
    let mut config = toml::Table::new();
    for (section, keys) in sections {
        let mut at = &mut config;
        for part in section.split('.') {
            at = match at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => unreachable!("sections are only ever tables here"),
            };
        }
        at.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    config
}

/// 0600: the settings document may hold relay passwords (smtp_sasl_password_maps), and a
/// key is a key.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| postern::fsutil::restrict_to_owner(path))
}

/// smtpd_tls_chain_files: split into the certificate chain and the key (0600) in OUT.
fn split_chains(imported: &mut Imported, out: &Path) -> Result<(), ExitCode> {
    for c in imported
        .certificates
        .iter_mut()
        .filter(|c| !c.chain.is_empty())
    {
        let mut pem = String::new();
        for f in &c.chain {
            pem.push_str(
                &std::fs::read_to_string(f).map_err(|e| fail(format!("{}: {e}", f.display())))?,
            );
        }
        let (certs, key) =
            split_chain(&pem).map_err(|e| fail(format!("smtpd_tls_chain_files: {e}")))?;
        (c.cert, c.key) = (out.join(&c.cert), out.join(&c.key));
        std::fs::write(&c.cert, certs)
            .and_then(|()| write_private(&c.key, &key))
            .map_err(|e| fail(format!("{}: {e}", out.display())))?;
    }
    Ok(())
}

/// One line per main.cf parameter: what it became, or why not.
fn report_text(report: &[ReportLine]) -> String {
    let mut out = String::new();
    for line in report {
        let text = match &line.outcome {
            Outcome::Carried(what) => format!("{}: {what}\n", line.parameter),
            Outcome::Dropped { why, security } => format!(
                "{}: not carried over{}: {why}\n",
                line.parameter,
                if *security {
                    " (security-relevant)"
                } else {
                    ""
                }
            ),
        };
        out.push_str(&text);
    }
    out
}

/// The commands that finish the move.
fn next_steps(certificates: &[CertFiles], out: &Path) -> String {
    let mut text = String::new();
    for c in certificates {
        text.push_str(&format!(
            "next: postern cert import --name {} --cert {} --key {}\n",
            c.name,
            c.cert.display(),
            c.key.display()
        ));
    }
    text.push_str(&format!(
        "next: postern settings import {}  (and merge {} into the config file)\n",
        out.join("settings.toml").display(),
        out.join("postern.toml").display()
    ));
    text
}

/// `import-postfix --apply`: the certificates, then the settings document (which binds
/// them), into the running server.
async fn apply_import(
    config: &Config,
    api: Option<SocketAddr>,
    out: &Path,
    certificates: &[CertFiles],
) -> anyhow::Result<()> {
    let client = api_client(config, api)?;
    for c in certificates {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let body = serde_json::json!({
            "name": c.name, "cert": read(&c.cert)?, "key": read(&c.key)?, "chain": null,
            "acme": false, "replace": false,
        });
        let (status, body) = super::cert::post_certificate(&client, &body).await?;
        parse_response::<serde_json::Value>(status, &body)
            .map_err(|e| anyhow::anyhow!("certificate {}: {e:#}", c.name))?;
        eprintln!("postern: imported certificate {}", c.name);
    }
    super::settings::import_settings(&client, &out.join("settings.toml"), false, false).await
}
