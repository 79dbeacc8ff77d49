//! `postern cert`: the certificate store of the running server: import (PEM files or an
//! ACME live directory), list in the fields Hermes showed, delete.

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::Method;
use postern::admin::client::ApiClient;
use postern::config::Config;

use super::{api_client, joined, parse_response, url_escape};

#[derive(clap::Subcommand)]
pub enum CertAction {
    /// Check and store a certificate: PEM files, or an ACME live directory (`--acme`).
    Import {
        #[arg(long)]
        name: String,
        /// The certificate (PEM; may be followed by its chain).
        #[arg(long, required_unless_present = "acme")]
        cert: Option<PathBuf>,
        /// The unencrypted private key (PEM).
        #[arg(long, required_unless_present = "acme")]
        key: Option<PathBuf>,
        /// The CA bundle (PEM), each certificate followed by its issuer.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Read <tls.acme_live_dir>/NAME/fullchain.pem and privkey.pem, and watch them.
        #[arg(long, conflicts_with_all = ["cert", "key", "chain"])]
        acme: bool,
        /// Replace the certificate of that name (a renewal); bound, it is served at once.
        #[arg(long)]
        replace: bool,
    },
    /// Name, type, subject, issuer, serial, not after, days left, where bound.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a certificate that nothing binds.
    Delete { name: String },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: CertAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    match action {
        CertAction::Import {
            name,
            cert,
            key,
            chain,
            acme,
            replace,
        } => {
            let files = Files { cert, key, chain };
            import(&client, &name, &files, (acme, replace)).await
        }
        CertAction::List { json } => list(&client, json).await,
        CertAction::Delete { name } => delete(&client, &name).await,
    }
}

/// The PEM files `cert import` was given.
struct Files {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    chain: Option<PathBuf>,
}

impl Files {
    /// The file the server's `field` names, when it names one of ours.
    fn named(&self, field: Option<&str>) -> Option<&PathBuf> {
        match field {
            Some("cert") => self.cert.as_ref(),
            Some("key") => self.key.as_ref(),
            Some("chain") => self.chain.as_ref(),
            _ => None,
        }
    }
}

/// `POST /api/v1/certificates`: `postern cert import` and `import-postfix --apply`.
pub async fn post_certificate(
    client: &ApiClient,
    body: &serde_json::Value,
) -> anyhow::Result<(hyper::StatusCode, Vec<u8>)> {
    Ok(client
        .request(
            Method::POST,
            "/api/v1/certificates",
            Some(serde_json::to_vec(body)?),
        )
        .await?)
}

async fn import(
    client: &ApiClient,
    name: &str,
    files: &Files,
    (acme, replace): (bool, bool),
) -> anyhow::Result<()> {
    let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            })
            .transpose()
    };
    let body = serde_json::json!({
        "name": name, "cert": read(&files.cert)?, "key": read(&files.key)?,
        "chain": read(&files.chain)?, "acme": acme, "replace": replace,
    });
    let (status, body) = post_certificate(client, &body).await?;
    // Name the file the server's field refers to.
    let info: serde_json::Value = parse_response(status, &body).map_err(|e| {
        let answer = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = answer.as_ref().and_then(|v| v["field"].as_str());
        match files.named(field) {
            Some(f) => anyhow::anyhow!("{}: {e}", f.display()),
            None => e,
        }
    })?;
    for w in info["warnings"].as_array().into_iter().flatten() {
        eprintln!("postern: warning: {}", w.as_str().unwrap_or_default());
    }
    print!("{}", cert_text(&info));
    Ok(())
}

async fn list(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let (status, body) = client
        .request(Method::GET, "/api/v1/certificates", None)
        .await?;
    let list: Vec<serde_json::Value> = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", cert_listing(&list));
    }
    Ok(())
}

async fn delete(client: &ApiClient, name: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/certificates/{}", url_escape(name));
    let (status, body) = client.request(Method::DELETE, &path, None).await?;
    if !status.is_success() {
        parse_response::<serde_json::Value>(status, &body)?;
    }
    eprintln!("postern: certificate {name} deleted");
    Ok(())
}

/// `cert list`: each certificate's fields, a blank line after each.
fn cert_listing(list: &[serde_json::Value]) -> String {
    list.iter().map(|c| format!("{}\n", cert_text(c))).collect()
}

/// The fields Hermes shows, one per line.
fn cert_text(c: &serde_json::Value) -> String {
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    let list = |k: &str| joined(&c[k]);
    format!(
        "Name:        {}\nType:        {}\nSubject:     {}\nIssuer:      {}\nSerial:      {}\nSANs:        {}\nNot After:   {} ({} days left)\nSHA-256:     {}\nUsed for:    {}\n",
        s("name"),
        s("type"),
        s("subject"),
        s("issuer"),
        s("serial"),
        list("sans"),
        s("not_after"),
        c["days_left"],
        s("sha256"),
        list("bound_to"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern::certs::{CertInfo, Facts, Kind};

    fn info(name: &str, kind: Kind, bound_to: &[&str]) -> serde_json::Value {
        let c = CertInfo {
            name: name.into(),
            kind,
            system: kind == Kind::System,
            facts: Facts {
                subject: format!("CN={name}.example"),
                issuer: "CN=Example CA".into(),
                serial: "0a:1b".into(),
                sans: vec![format!("{name}.example"), format!("www.{name}.example")],
                not_before: "2025-01-01T00:00:00Z".into(),
                not_after: "2026-01-01T00:00:00Z".into(),
                not_after_unix: 1_767_225_600,
                sha256: "ab".repeat(32),
                chain_length: 1,
            },
            days_left: 42,
            bound_to: bound_to.iter().map(|b| b.to_string()).collect(),
            used_for: Vec::new(),
            renewed: false,
            warnings: Vec::new(),
            directory: None,
        };
        // What the API sends: the listing is read from this JSON, as from the server.
        serde_json::to_value(&c).unwrap()
    }

    #[test]
    fn cert_list_shows_the_fields_hermes_shows() {
        let list = [
            info("mx", Kind::Imported, &["inbound", "admin"]),
            info("system", Kind::System, &[]),
        ];
        let sha = "ab".repeat(32);
        assert_eq!(
            cert_listing(&list),
            format!(
                "Name:        mx\n\
                 Type:        Imported\n\
                 Subject:     CN=mx.example\n\
                 Issuer:      CN=Example CA\n\
                 Serial:      0a:1b\n\
                 SANs:        mx.example, www.mx.example\n\
                 Not After:   2026-01-01T00:00:00Z (42 days left)\n\
                 SHA-256:     {sha}\n\
                 Used for:    inbound, admin\n\
                 \n\
                 Name:        system\n\
                 Type:        System\n\
                 Subject:     CN=system.example\n\
                 Issuer:      CN=Example CA\n\
                 Serial:      0a:1b\n\
                 SANs:        system.example, www.system.example\n\
                 Not After:   2026-01-01T00:00:00Z (42 days left)\n\
                 SHA-256:     {sha}\n\
                 Used for:    \n\
                 \n"
            )
        );
        assert_eq!(cert_listing(&[]), "");
    }

    #[test]
    fn an_error_names_the_file_of_the_field_the_server_refused() {
        let files = Files {
            cert: Some("/tmp/c.pem".into()),
            key: Some("/tmp/k.pem".into()),
            chain: None,
        };
        assert_eq!(files.named(Some("key")), Some(&PathBuf::from("/tmp/k.pem")));
        assert_eq!(files.named(Some("chain")), None);
        assert_eq!(files.named(Some("name")), None);
        assert_eq!(files.named(None), None);
    }
}
