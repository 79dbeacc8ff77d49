//! The command line: parses, then calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyper::{Method, StatusCode};

use postern::admin::client::ApiClient;
use postern::config::Config;
use postern::printable::escaped;
use postern::settings::SettingsDoc;

mod cli;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "A gateway mail relay that owns the TLS policy of every hop"
)]
struct Cli {
    /// Configuration file; without it (and without POSTERN_CONFIG), /etc/postern/postern.toml
    /// when it exists (the package's), else the embedded defaults (config/postern.toml).
    #[arg(long, global = true, env = "POSTERN_CONFIG")]
    config: Option<PathBuf>,
    /// Control API address (host:port) of the running postern; default: admin.listen.
    #[arg(long, global = true)]
    api: Option<SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SMTP and the control API) until SIGTERM or Ctrl-C.
    Serve {
        /// Start from the default settings on purpose (a store that existed and is now
        /// missing or empty is otherwise refused).
        #[arg(long)]
        reset_settings: bool,
        /// Seed an empty or new settings store from this copy (e.g. data/postern.redb.last-good.json).
        #[arg(long, conflicts_with = "reset_settings")]
        restore_settings: Option<PathBuf>,
    },
    /// Check the configuration and the data directory, as `postfix check`: one line per
    /// problem naming the file and key; exit 1 on any error (warnings do not count). The
    /// systemd unit runs it before each start.
    Check,
    /// Probe a remote MTA's STARTTLS: offered?, protocol, cipher, bits, certificate, chain.
    /// Exit code 0 when TLS was negotiated, 1 when not, 2 when the probe failed.
    CheckTls {
        /// `domain` (its first MX), `host[:port]`, `[host]:port` or an IP address.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Translate a Postfix configuration directory (main.cf and the tables it names) into a
    /// settings document (OUT/settings.toml, for `postern settings import`) and config keys
    /// (OUT/postern.toml). Prints one line per main.cf parameter: what it became, or why not.
    /// Exit code 0 only when nothing security-relevant was left behind.
    ImportPostfix {
        /// The Postfix configuration directory.
        #[arg(default_value = "/etc/postfix")]
        dir: PathBuf,
        /// Where to write settings.toml and postern.toml.
        #[arg(long)]
        out: PathBuf,
        /// Then import the certificates and the settings document into the running server
        /// (its API, as `postern cert import` and `postern settings import` do). The config
        /// keys are for the config file: merge them and restart.
        #[arg(long)]
        apply: bool,
    },
    /// The outbound TLS policy of the running server.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// The certificate store of the running server.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// The mail queue of the running server (like postqueue and postsuper).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Read or replace the running server's settings document.
    Settings {
        #[command(subcommand)]
        action: SettingsAction,
    },
    /// TLS-RPT (RFC 8460) aggregate reports of the running server.
    TlsRpt {
        #[command(subcommand)]
        action: TlsRptAction,
    },
    /// Admin page users: `postern admin reset-password USER`.
    Admin {
        #[command(subcommand)]
        action: cli::admin::AdminAction,
    },
    /// This node of a cluster: its state, and draining it for maintenance.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Draining or not, and how many messages are queued here.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Refuse new mail (421) and hand every queued message to the peer node over SMTP, with
    /// its original envelope; each is deleted here only after the peer's 250.
    Drain {
        /// The peer's SMTP listener, ip:port.
        #[arg(long)]
        to: String,
        /// Wait this many seconds for the queue to empty (held messages stay); 0: return now.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Every node in the node list of the shared database: address, last heartbeat, and
    /// whether it answers now.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of the node list (one taken out of service for good).
    Forget { name: String },
}

#[derive(Subcommand)]
enum TlsRptAction {
    /// Send a day's reports now to every address not reached yet (the daily round sends
    /// yesterday's a little after midnight UTC). One line per policy domain.
    Send {
        /// The UTC day, YYYY-MM-DD; default: yesterday.
        #[arg(long)]
        day: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// The effective TLS level for RECIPIENT and every source that applied.
    Explain {
        recipient: String,
        /// Assume this header on the message, e.g. 'x-TLSLevel: Require' (as from an
        /// authorised client).
        #[arg(long)]
        header: Option<String>,
        /// Envelope sender, for message rules with sender conditions.
        #[arg(long)]
        sender: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued messages, like `postqueue -p` (`!` after the ID: on hold).
    List {
        /// Only senders containing this text.
        #[arg(long)]
        sender: Option<String>,
        /// Only messages with a recipient containing this text.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Envelope, per-recipient state, last error and headers of one message.
    Show { id: String },
    /// Try delivery now: one message, or every message not on hold (`--all`, postqueue -f).
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Put a message on hold (postsuper -h): kept, not delivered.
    Hold { id: String },
    /// Release a held message (postsuper -H).
    Release { id: String },
    /// Delete a message without delivery or bounce (postsuper -d).
    Delete { id: String },
    /// Spool segments found damaged at start-up, kept in spool/damaged/, and what was lost.
    Damaged {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CertAction {
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

#[derive(Subcommand)]
enum SettingsAction {
    /// Print the settings document as TOML (`postern settings export > settings.toml`).
    Export,
    /// Apply FILE (TOML) to the running server: the sections it has replace the running ones,
    /// the others stay. Prints what changes first; on any error nothing changes.
    Import {
        file: PathBuf,
        /// Replace the whole document: a section the file lacks goes back to its default.
        #[arg(long)]
        replace: bool,
        /// Print what would change and apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Go back to the settings before the last settings change (kept in the audit log; a
    /// certificate imported or deleted since is not undone).
    Rollback,
    /// Replace a relay domain's recipient table with the addresses in FILE, one per line
    /// (`#` comments and blank lines ignored), e.g. exported from the directory.
    Recipients { domain: String, file: PathBuf },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.config = crate::cli::config_path(cli.config.take());
    if let Command::Check = cli.command {
        return crate::cli::check::run(cli.config.as_deref());
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    postern::logging::init(config.server.log_format, &config.server.hostname);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    if let Command::ImportPostfix { dir, out, apply } = &cli.command {
        let code = match import_postfix(dir, out) {
            Err(code) => code,
            Ok((left_behind, certificates)) => {
                let applied = if *apply {
                    runtime.block_on(apply_import(&config, cli.api, out, &certificates))
                } else {
                    Ok(())
                };
                match applied {
                    Err(e) => fail(format!("{e:#}")),
                    Ok(()) if left_behind => ExitCode::from(1),
                    Ok(()) => ExitCode::SUCCESS,
                }
            }
        };
        postern::logging::flush();
        return code;
    }
    if let Command::CheckTls { target, json } = &cli.command {
        let code = runtime.block_on(check_tls(&config, target, *json));
        postern::logging::flush();
        return code;
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                reset_settings,
                restore_settings,
            } => {
                let mut config = config;
                config.settings_start = match (reset_settings, restore_settings) {
                    (true, _) => postern::settings::StartMode::Reset,
                    (false, Some(file)) => postern::settings::StartMode::Restore(file),
                    (false, None) => postern::settings::StartMode::Normal,
                };
                serve(config).await
            }
            Command::Settings { action } => settings(config, cli.api, action).await,
            Command::Queue { action } => queue(config, cli.api, action).await,
            Command::Cert { action } => cert(config, cli.api, action).await,
            Command::Policy { action } => policy(config, cli.api, action).await,
            Command::TlsRpt { action } => tls_rpt(config, cli.api, action).await,
            Command::Node { action } => node(config, cli.api, action).await,
            Command::Admin { action } => cli::admin::run(config, cli.api, action).await,
            Command::Check | Command::CheckTls { .. } | Command::ImportPostfix { .. } => {
                unreachable!("handled above")
            }
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    };
    postern::logging::flush();
    code
}

/// `postern import-postfix DIR --out OUT`: the files and the report; whether something
/// security-relevant was left behind, and the certificates to import.
fn import_postfix(
    dir: &std::path::Path,
    out: &std::path::Path,
) -> Result<(bool, Vec<postern::postfix::import::CertFiles>), ExitCode> {
    use postern::postfix::import::{Outcome, import};
    let mut imported = import(dir).map_err(fail)?;
    let settings = toml::to_string_pretty(&imported.settings)
        .map_err(|e| fail(format!("cannot write the settings document: {e}")))?;
    let mut config = toml::Table::new();
    for (section, keys) in &imported.config {
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
    // 0600: the document may hold relay passwords (smtp_sasl_password_maps).
    let private = |path: std::path::PathBuf, text: String| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| postern::fsutil::restrict_to_owner(&path))
    };
    let written = std::fs::create_dir_all(out)
        .and_then(|()| private(out.join("settings.toml"), settings))
        .and_then(|()| std::fs::write(out.join("postern.toml"), config.to_string()));
    if let Err(e) = written {
        return Err(fail(format!("{}: {e}", out.display())));
    }
    // smtpd_tls_chain_files: split into the certificate chain and the key (0600) in OUT.
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
        let (certs, key) = postern::postfix::import::split_chain(&pem)
            .map_err(|e| fail(format!("smtpd_tls_chain_files: {e}")))?;
        (c.cert, c.key) = (out.join(&c.cert), out.join(&c.key));
        std::fs::write(&c.cert, certs)
            .and_then(|()| private(c.key.clone(), key))
            .map_err(|e| fail(format!("{}: {e}", out.display())))?;
    }
    for line in &imported.report {
        match &line.outcome {
            Outcome::Carried(what) => println!("{}: {what}", line.parameter),
            Outcome::Dropped { why, security } => println!(
                "{}: not carried over{}: {why}",
                line.parameter,
                if *security {
                    " (security-relevant)"
                } else {
                    ""
                }
            ),
        }
    }
    for c in &imported.certificates {
        println!(
            "next: postern cert import --name {} --cert {} --key {}",
            c.name,
            c.cert.display(),
            c.key.display()
        );
    }
    println!(
        "next: postern settings import {}  (and merge {} into the config file)",
        out.join("settings.toml").display(),
        out.join("postern.toml").display()
    );
    Ok((imported.dropped_security(), imported.certificates))
}

/// `POST /api/v1/certificates`: `postern cert import` and `import-postfix --apply`.
async fn post_certificate(
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

/// `import-postfix --apply`: the certificates, then the settings document (which binds
/// them), into the running server.
async fn apply_import(
    config: &Config,
    api: Option<SocketAddr>,
    out: &std::path::Path,
    certificates: &[postern::postfix::import::CertFiles],
) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    for c in certificates {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let body = serde_json::json!({
            "name": c.name, "cert": read(&c.cert)?, "key": read(&c.key)?, "chain": null,
            "acme": false, "replace": false,
        });
        let (status, body) = post_certificate(&client, &body).await?;
        parse_response::<serde_json::Value>(status, &body)
            .map_err(|e| anyhow::anyhow!("certificate {}: {e:#}", c.name))?;
        eprintln!("postern: imported certificate {}", c.name);
    }
    import_settings(&client, &out.join("settings.toml"), false, false).await
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    // The lines logged before it come first.
    postern::logging::flush();
    eprintln!("postern: fatal: {message}");
    ExitCode::FAILURE
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let stop = anyhow::Context::context(shutdown_signal(), "cannot install the SIGTERM handler")?;
    let listeners = postern::Listeners::bind(&config).await?;
    postern::run(config, listeners, stop).await
}

/// What the target domain publishes, looked up now: MTA-STS (fetched, not cached) and
/// DANE (validated from the trust anchor), beside what its MX showed.
async fn published(
    config: &Config,
    target: &str,
    (resolver, roots): (
        std::sync::Arc<dyn postern::outbound::dns::Resolver>,
        &std::sync::Arc<rustls::RootCertStore>,
    ),
    report: &mut postern::outbound::check_tls::Report,
) {
    use postern::outbound::check_tls;
    let sts = postern::outbound::sts::Sts::uncached(
        resolver,
        roots.clone(),
        config.outbound.policy_hosts.clone(),
    );
    let host = report
        .relay
        .split('[')
        .next()
        .unwrap_or_default()
        .to_string();
    report.mta_sts = check_tls::mta_sts(target, &host, &sts).await;
    let trust_anchor = config.outbound.dnssec_trust_anchor.as_deref();
    if let Ok(secure) =
        postern::outbound::dns::Hickory::validating(&config.outbound.nameservers, trust_anchor)
    {
        let chain = report.chain.clone();
        report.dane = check_tls::dane(target, &host, &chain, &secure).await;
    }
}

async fn check_tls(config: &Config, target: &str, json: bool) -> ExitCode {
    postern::tls::install_provider();
    let resolver = if config.outbound.nameservers.is_empty() {
        None
    } else {
        match postern::outbound::dns::Hickory::new(&config.outbound.nameservers) {
            Ok(r) => {
                Some(std::sync::Arc::new(r) as std::sync::Arc<dyn postern::outbound::dns::Resolver>)
            }
            Err(e) => {
                eprintln!("postern: fatal: outbound.nameservers: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let timeout = std::time::Duration::from_secs(config.outbound.connect_timeout_secs.max(5));
    let roots = match postern::tls::trust_roots(&config.tls.extra_roots) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: fatal: tls.extra_roots: {e}");
            return ExitCode::from(2);
        }
    };
    let helo = &config.server.hostname;
    let checked = postern::outbound::check_tls::check(
        target,
        (resolver.as_deref(), config.outbound.port),
        helo,
        timeout,
        &roots,
    )
    .await;
    match checked {
        Ok(mut report) => {
            if let Some(resolver) = resolver {
                published(config, target, (resolver, &roots), &mut report).await;
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("{}", report.text());
            }
            if report.negotiated() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("postern: check-tls {target}: {e}");
            ExitCode::from(2)
        }
    }
}

/// SIGTERM and SIGINT, handled from the moment this returns: installed before anything
/// listens, so a stop sent right after start-up is a graceful one, never the default action
/// (an async fn would install them only when first polled, after the listeners are up).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn settings(
    config: Config,
    api: Option<SocketAddr>,
    action: SettingsAction,
) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    match action {
        SettingsAction::Export => {
            let (status, body) = client
                .request(Method::GET, "/api/v1/settings", None)
                .await?;
            let doc: SettingsDoc = parse_response(status, &body)?;
            print!("{}", toml::to_string_pretty(&doc)?);
            Ok(())
        }
        SettingsAction::Rollback => {
            let (status, body) = client
                .request(Method::POST, "/api/v1/settings/rollback", None)
                .await?;
            let _: SettingsDoc = parse_response(status, &body)?;
            eprintln!("postern: settings rolled back to the previous version");
            Ok(())
        }
        SettingsAction::Import {
            file,
            replace,
            dry_run,
        } => import_settings(&client, &file, replace, dry_run).await,
        SettingsAction::Recipients { domain, file } => {
            recipients_from_file(&client, &domain, &file).await
        }
    }
}

/// `postern settings import FILE [--replace] [--dry-run]`: the file is checked here first (so
/// a TOML error names its line), then the server validates it as a whole; what changes is
/// printed before anything is applied.
async fn import_settings(
    client: &ApiClient,
    file: &std::path::Path,
    replace: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let at = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{}: {}",
            file.display(),
            e.to_string().trim_end().replace('\n', " ")
        )
    };
    let text = std::fs::read_to_string(file).map_err(|e| at(&e))?;
    let doc: SettingsDoc = toml::from_str(&text).map_err(|e| at(&e))?;
    let present: Vec<String> = toml::from_str::<toml::Table>(&text)
        .map_err(|e| at(&e))?
        .keys()
        .cloned()
        .collect();
    let (method, body) = if replace {
        (Method::PUT, serde_json::to_vec(&doc)?)
    } else {
        let serde_json::Value::Object(mut all) = serde_json::to_value(&doc)? else {
            anyhow::bail!("{}: the settings document is not a table", file.display());
        };
        all.retain(|k, _| present.contains(k));
        let kept: Vec<&str> = postern::settings::SECTIONS
            .iter()
            .copied()
            .filter(|s| !present.iter().any(|p| p == s))
            .collect();
        if !kept.is_empty() {
            eprintln!(
                "postern: {}: kept as they are (not in the file; --replace to reset them): {}",
                file.display(),
                kept.join(", ")
            );
        }
        (Method::PATCH, serde_json::to_vec(&all)?)
    };
    let (status, answer) = client
        .request(
            method.clone(),
            "/api/v1/settings?dry_run=true",
            Some(body.clone()),
        )
        .await?;
    let preview: postern::admin::Preview = parse_response(status, &answer).map_err(|e| at(&e))?;
    if preview.changes.is_empty() {
        eprintln!("postern: {}: no change", file.display());
    }
    for change in &preview.changes {
        eprintln!("postern: {}: {change}", file.display());
    }
    if dry_run {
        eprintln!("postern: {}: --dry-run: nothing applied", file.display());
        return Ok(());
    }
    if preview.changes.is_empty() {
        return Ok(());
    }
    let (status, answer) = client
        .request(method, "/api/v1/settings", Some(body))
        .await?;
    let _: SettingsDoc = parse_response(status, &answer).map_err(|e| at(&e))?;
    eprintln!("postern: settings from {} applied", file.display());
    Ok(())
}

/// `postern settings recipients DOMAIN FILE`: the current document with that relay domain's
/// `recipients` replaced, through the same validation as any change; an address the server
/// refuses is named by its line in FILE.
async fn recipients_from_file(
    client: &ApiClient,
    domain: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let (status, body) = client
        .request(Method::GET, "/api/v1/settings", None)
        .await?;
    let mut doc: SettingsDoc = parse_response(status, &body)?;
    let wanted = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some((index, relay)) = doc
        .relay_domains
        .iter_mut()
        .enumerate()
        .find(|(_, d)| d.domain == wanted)
    else {
        anyhow::bail!("{domain}: not a relay domain (add it first)");
    };
    relay.recipients = Some(lines.iter().map(|(_, a)| a.clone()).collect());
    let body = serde_json::to_vec(&serde_json::json!({ "relay_domains": doc.relay_domains }))?;
    let (status, body) = client
        .request(Method::PATCH, "/api/v1/settings", Some(body))
        .await?;
    let prefix = format!("relay_domains[{index}].recipients[");
    let _: SettingsDoc = parse_response(status, &body).map_err(|e| {
        let text = e.to_string();
        let line = text
            .split(&prefix)
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .and_then(|j| j.parse::<usize>().ok())
            .and_then(|j| lines.get(j));
        match line {
            Some((n, _)) => anyhow::anyhow!("{}:{n}: {text}", file.display()),
            None => anyhow::anyhow!("{}: {text}", file.display()),
        }
    })?;
    eprintln!(
        "postern: {} recipient(s) of {wanted} from {} applied",
        lines.len(),
        file.display()
    );
    Ok(())
}

async fn cert(config: Config, api: Option<SocketAddr>, action: CertAction) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    match action {
        CertAction::Import {
            name,
            cert,
            key,
            chain,
            acme,
            replace,
        } => {
            let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
                p.as_ref()
                    .map(|p| {
                        std::fs::read_to_string(p)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
                    })
                    .transpose()
            };
            let body = serde_json::json!({
                "name": name, "cert": read(&cert)?, "key": read(&key)?, "chain": read(&chain)?,
                "acme": acme, "replace": replace,
            });
            let (status, body) = post_certificate(&client, &body).await?;
            // Name the file the server's field refers to.
            let info: serde_json::Value = parse_response(status, &body).map_err(|e| {
                let file = match serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["field"].as_str().map(str::to_string))
                    .as_deref()
                {
                    Some("cert") => cert.as_ref(),
                    Some("key") => key.as_ref(),
                    Some("chain") => chain.as_ref(),
                    _ => None,
                };
                match file {
                    Some(f) => anyhow::anyhow!("{}: {e}", f.display()),
                    None => e,
                }
            })?;
            for w in info["warnings"].as_array().into_iter().flatten() {
                eprintln!("postern: warning: {}", w.as_str().unwrap_or_default());
            }
            print!("{}", cert_text(&info));
        }
        CertAction::List { json } => {
            let (status, body) = client
                .request(Method::GET, "/api/v1/certificates", None)
                .await?;
            let list: Vec<serde_json::Value> = parse_response(status, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for c in &list {
                    println!("{}", cert_text(c));
                }
            }
        }
        CertAction::Delete { name } => {
            let (status, body) = client
                .request(
                    Method::DELETE,
                    &format!("/api/v1/certificates/{}", url_escape(&name)),
                    None,
                )
                .await?;
            if !status.is_success() {
                parse_response::<serde_json::Value>(status, &body)?;
            }
            eprintln!("postern: certificate {name} deleted");
        }
    }
    Ok(())
}

/// A JSON list of strings, comma-separated (empty for anything else).
fn joined(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
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

async fn node(config: Config, api: Option<SocketAddr>, action: NodeAction) -> anyhow::Result<()> {
    use postern::admin::NodeStatus;
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    let status = || async {
        let (status, body) = client.request(Method::GET, "/api/v1/node", None).await?;
        parse_response::<NodeStatus>(status, &body)
    };
    match action {
        NodeAction::Status { json } => {
            let s = status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let draining = match &s.peer {
                    Some(p) => format!("draining to {p}"),
                    None => "accepting mail".into(),
                };
                println!("{draining}; {} queued ({} on hold)", s.queued, s.held);
            }
        }
        NodeAction::Drain { to, wait } => {
            let body = serde_json::to_vec(&serde_json::json!({ "peer": to }))?;
            let (code, body) = client
                .request(Method::POST, "/api/v1/node/drain", Some(body))
                .await?;
            let s: NodeStatus = parse_response(code, &body)?;
            println!(
                "draining to {to}: new mail refused, {} queued message(s) handed over",
                s.queued - s.held
            );
            let until = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            let mut left = s.queued - s.held;
            while left > 0 && std::time::Instant::now() < until {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let s = status().await?;
                left = s.queued - s.held;
            }
            if wait > 0 {
                anyhow::ensure!(left == 0, "{left} message(s) still queued after {wait}s");
                println!("drained: the queue is empty");
            }
        }
        NodeAction::List { json } => {
            let (code, body) = client
                .request(Method::GET, "/api/v1/cluster/nodes", None)
                .await?;
            let nodes: Vec<postern::admin::cluster::NodeView> = parse_response(code, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print!("{}", node_listing(&nodes));
            }
        }
        NodeAction::Forget { name } => {
            let path = format!("/api/v1/cluster/nodes/{}", url_escape(&name));
            let (code, body) = client.request(Method::DELETE, &path, None).await?;
            let _: serde_json::Value = parse_response(code, &body)?;
            println!("node {name} removed from the node list");
        }
    }
    Ok(())
}

/// One line per node: name, API, heartbeat age, and what it said or why it did not answer.
fn node_listing(nodes: &[postern::admin::cluster::NodeView]) -> String {
    let mut out = String::new();
    for n in nodes {
        let me = if n.this { " (this node)" } else { "" };
        let api = n.api.as_deref().unwrap_or("no API address");
        let state = match (&n.status, &n.error) {
            (Some(s), _) => {
                let mode = match &s.peer {
                    Some(p) => format!("draining to {p}"),
                    None => "accepting mail".into(),
                };
                format!("{mode}; {} queued ({} on hold)", s.queued, s.held)
            }
            (None, Some(e)) => format!("not answering: {e}"),
            (None, None) => "not answering".into(),
        };
        out.push_str(&format!(
            "{}{me}  {api}  heartbeat {}s ago  {state}\n",
            n.name, n.heartbeat_age_secs
        ));
    }
    out
}

async fn tls_rpt(
    config: Config,
    api: Option<SocketAddr>,
    action: TlsRptAction,
) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    let TlsRptAction::Send { day, json } = action;
    let body = serde_json::to_vec(&serde_json::json!({ "day": day }))?;
    let (status, body) = client
        .request(Method::POST, "/api/v1/tls-rpt/send", Some(body))
        .await?;
    let sent: postern::admin::TlsRptSent = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sent)?);
        return Ok(());
    }
    if sent.reports.is_empty() {
        println!("{}: no TLS-RPT outcomes recorded", sent.day);
    }
    for r in &sent.reports {
        let list = |k: &str| joined(&r[k]);
        let domain = r["domain"].as_str().unwrap_or("");
        for (word, key) in [
            ("sent to", "sent"),
            ("already sent to", "already"),
            ("not sent", "failed"),
        ] {
            let l = list(key);
            if !l.is_empty() {
                println!("{} {domain}: {word} {l}", sent.day);
            }
        }
    }
    Ok(())
}

async fn queue(config: Config, api: Option<SocketAddr>, action: QueueAction) -> anyhow::Result<()> {
    use postern::admin::cluster::ClusterListing;
    use postern::admin::queue::{Done, QueueItem};
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    // One message, on whichever node holds it (`ID@node`, or an ID one node has).
    let act = |action: &'static str, id: String| {
        let client = &client;
        async move {
            let path = format!("/api/v1/cluster/queue/{}/{action}", url_escape(&id));
            let (status, body) = client.request(Method::POST, &path, None).await?;
            parse_response::<Done>(status, &body)
        }
    };
    match action {
        QueueAction::List {
            sender,
            recipient,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(s) = sender {
                query.push(format!("sender={}", url_escape(&s)));
            }
            if let Some(r) = recipient {
                query.push(format!("recipient={}", url_escape(&r)));
            }
            // Every node's queue (one node's on its own).
            let path = format!("/api/v1/cluster/queue?{}", query.join("&"));
            let (status, body) = client.request(Method::GET, &path, None).await?;
            let listing: ClusterListing = parse_response(status, &body)?;
            let several = listing.several();
            let mut items = listing.items;
            if several {
                for i in &mut items {
                    i.id = format!("{}@{}", i.id, i.node.as_deref().unwrap_or(""));
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", postqueue_listing(&items));
            }
            silent_nodes(&listing.nodes, listing.registry_error.as_deref())?;
        }
        QueueAction::Show { id } => {
            let (status, body) = client
                .request(Method::GET, &format!("/api/v1/cluster/queue/{id}"), None)
                .await?;
            let item: QueueItem = parse_response(status, &body)?;
            print!("{}", postqueue_listing(std::slice::from_ref(&item)));
            if let Some(node) = &item.node {
                println!("node: {}", escaped(node));
            }
            for r in &item.recipients {
                println!("recipient {}: {}", escaped(&r.address), r.state);
            }
            println!("attempts: {}", item.attempts);
            // The sender's bytes reach a terminal: line by line, escaped (issue 27).
            let headers = item.headers.unwrap_or_default();
            let lines: Vec<_> = headers.trim_end().lines().map(escaped).collect();
            println!("\n{}", lines.join("\n"));
        }
        QueueAction::Retry { all: true, .. } => {
            let (status, body) = client
                .request(Method::POST, "/api/v1/cluster/queue/retry", None)
                .await?;
            let done: serde_json::Value = parse_response(status, &body)?;
            let count = done["done"].as_array().map_or(0, Vec::len);
            eprintln!("postern: {count} message(s) scheduled for delivery now");
            let failed = done["failed"].as_array().cloned().unwrap_or_default();
            for f in &failed {
                eprintln!("postern: {}", f["error"].as_str().unwrap_or(""));
            }
            anyhow::ensure!(failed.is_empty(), "{} node(s) did not answer", failed.len());
        }
        QueueAction::Retry { id: Some(id), .. } => report(act("retry", id).await?),
        QueueAction::Retry {
            id: None,
            all: false,
        } => anyhow::bail!("queue retry: give a queue ID, or --all"),
        QueueAction::Hold { id } => report(act("hold", id).await?),
        QueueAction::Release { id } => report(act("release", id).await?),
        QueueAction::Delete { id } => report(act("delete", id).await?),
        QueueAction::Damaged { json } => {
            let (status, body) = client
                .request(Method::GET, "/api/v1/queue/damaged", None)
                .await?;
            let damage: Vec<postern::spool::Damage> = parse_response(status, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&damage)?);
            } else if damage.is_empty() {
                println!("no damaged spool segments");
            } else {
                for d in &damage {
                    println!(
                        "{}: {} bytes unreadable at offset {} ({})",
                        d.segment, d.bytes, d.offset, d.why
                    );
                }
                println!(
                    "-- kept in {}/damaged/; intact messages in them were recovered",
                    config.spool_dir().display()
                );
            }
        }
    }
    Ok(())
}

async fn policy(
    config: Config,
    api: Option<SocketAddr>,
    action: PolicyAction,
) -> anyhow::Result<()> {
    postern::tls::install_provider();
    let client = ApiClient::new(api.unwrap_or(config.admin.listen), &config.server.data_dir)?;
    let PolicyAction::Explain {
        recipient,
        header,
        sender,
        json,
    } = action;
    let mut path = format!(
        "/api/v1/policy/explain?recipient={}",
        url_escape(&recipient)
    );
    if let Some(h) = &header {
        path.push_str(&format!("&header={}", url_escape(h)));
    }
    if let Some(s) = &sender {
        path.push_str(&format!("&sender={}", url_escape(s)));
    }
    let (status, body) = client.request(Method::GET, &path, None).await?;
    let decision: serde_json::Value = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
        return Ok(());
    }
    println!("recipient: {recipient}");
    println!("level:     {}", decision["level"].as_str().unwrap_or(""));
    println!("min bits:  {}", decision["min_bits"]);
    println!(
        "on failure: {}",
        decision["on_failure"].as_str().unwrap_or("")
    );
    for line in decision["explanation"].as_array().into_iter().flatten() {
        println!("  - {}", line.as_str().unwrap_or(""));
    }
    Ok(())
}

/// Nodes whose messages a listing could not show, said on stderr; an error when any.
fn silent_nodes(
    nodes: &[postern::admin::cluster::NodeAnswer],
    registry_error: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(e) = registry_error {
        eprintln!("postern: the node list cannot be read ({e}): the nodes known before were asked");
    }
    let silent: Vec<_> = nodes.iter().filter(|n| !n.answered).collect();
    for n in &silent {
        let at = n.api.as_deref().unwrap_or("no address");
        eprintln!(
            "postern: node {} ({at}) did not answer: {}; its messages are not listed",
            n.name,
            n.error.as_deref().unwrap_or("")
        );
    }
    anyhow::ensure!(silent.is_empty(), "{} node(s) did not answer", silent.len());
    Ok(())
}

fn report(done: postern::admin::queue::Done) {
    eprintln!("postern: {}: {}", done.id, done.action);
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `postqueue -p`'s layout: ID (with `!` when held), size, arrival, sender; then the last
/// error in parentheses and the pending recipients, indented.
fn postqueue_listing(items: &[postern::admin::queue::QueueItem]) -> String {
    if items.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out =
        String::from("-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0usize;
    for item in items {
        bytes += item.size;
        let arrival = time::OffsetDateTime::from_unix_timestamp(item.arrival_unix as i64)
            .ok()
            .and_then(|t| t.format(time::macros::format_description!("[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second]")).ok())
            .unwrap_or_default();
        let id = format!("{}{}", item.id, if item.held { "!" } else { "" });
        // Addresses and a next hop's words come from outside: escaped for the terminal.
        let sender = if item.sender.is_empty() {
            "MAILER-DAEMON".into()
        } else {
            escaped(&item.sender)
        };
        out.push_str(&format!(
            "{id:<15} {:>8} {arrival:<20} {sender}\n",
            item.size
        ));
        if let Some(e) = &item.last_error {
            out.push_str(&format!("{:42}({})\n", "", escaped(e)));
        }
        for r in item.recipients.iter().filter(|r| r.state == "pending") {
            out.push_str(&format!("{:42}{}\n", "", escaped(&r.address)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "-- {} Kbytes in {} Request{}.\n",
        bytes.div_ceil(1024),
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    ));
    out
}

fn parse_response<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> anyhow::Result<T> {
    if status.is_success() {
        return Ok(serde_json::from_slice(body)?);
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::bail!("{status}: {message}")
}
