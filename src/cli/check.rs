//! `postern check`, as `postfix check`: read the configuration and the data directory and say
//! what would stop postern or hurt it, one line per problem naming the file and the key. The
//! packaged systemd unit runs it before every start (`ExecStartPre`), so a bad change is
//! named in `systemctl status` and the journal instead of a server that dies or half-works.
//!
//! Errors (exit 1): the config does not parse (an unknown key, a bad value); the data
//! directory is readable by others, owned by another user, or holds files postern cannot
//! write; a secret file readable by others; a settings store that cannot be opened or read; a
//! bound certificate that is expired, unreadable or does not match its key; a listener that
//! cannot bind; an open-file limit below the limits. Warnings (exit 0): a certificate near
//! expiry or not valid for `server.hostname`, STARTTLS on the self-signed system certificate,
//! a DNS server that does not answer. Notes: what was not checked, and why.
//!
//! Nothing is changed. The settings store is opened only when no postern holds it (redb
//! locks it): with a server running, its certificates and listeners are that server's to
//! report, and check says so.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use postern::config::Config;
use postern::fsutil::os_text;
use postern::settings::certificates::{
    Binding, KeyKind, Kind, StoredCert, bindings, bound_at, leaf_key,
};
use postern::settings::{Settings, Store, StoreError, TlsMode};

/// How long a DNS server has to answer one query.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// Files named one per line before the rest are counted.
const MAX_FILES_NAMED: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Error,
    Warning,
    Note,
}

/// What the checks found, in the order found.
#[derive(Default)]
struct Findings {
    lines: Vec<(Level, String)>,
}

impl Findings {
    fn error(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Error, line.into()));
    }

    fn warning(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Warning, line.into()));
    }

    fn note(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Note, line.into()));
    }

    fn count(&self, level: Level) -> usize {
        self.lines.iter().filter(|(l, _)| *l == level).count()
    }
}

/// `postern check [--config FILE]`: the findings on stderr, one line each, and a summary on
/// stdout; exit 1 when any is an error.
pub fn run(config_path: Option<&Path>) -> ExitCode {
    let mut found = Findings::default();
    let origin = config_path.map_or_else(
        || "the embedded config/postern.toml".to_string(),
        |p| p.display().to_string(),
    );
    match Config::load(config_path) {
        Ok(config) => check_all(&config, config_path, &mut found),
        // Nothing else can be checked without the file's keys.
        Err(e) => found.error(e.to_string()),
    }
    for (level, line) in &found.lines {
        let word = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        };
        eprintln!("postern: {word}: {line}");
    }
    let errors = found.count(Level::Error);
    let warnings = found.count(Level::Warning);
    if errors == 0 {
        println!("postern check: {origin}: ok ({warnings} warning(s))");
        ExitCode::SUCCESS
    } else {
        println!("postern check: {origin}: {errors} error(s), {warnings} warning(s)");
        ExitCode::from(1)
    }
}

fn check_all(config: &Config, path: Option<&Path>, found: &mut Findings) {
    postern::tls::install_provider();
    match path {
        Some(p) => config_file(p, config, found),
        None => found.note(
            "no --config, no POSTERN_CONFIG and no /etc/postern/postern.toml: checking the embedded defaults, which `postern serve` runs on then",
        ),
    }
    data_dir(config, found);
    let running = settings_store(config, found);
    if !running {
        listeners(config, found);
    }
    smtp_pem_files(config, found);
    nameservers(config, found);
    if let Err(e) = config.ensure_fd_budget() {
        found.error(e);
    }
}

/// The config file may hold the settings key: then only its owner (and group) may read it.
fn config_file(path: &Path, config: &Config, found: &mut Findings) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.mode() & 0o7777;
    if !config.settings.key.trim().is_empty() && mode & 0o007 != 0 {
        found.error(format!(
            "{}: settings.key: the file is readable by every user (mode {mode:04o}) and holds the key that seals the shared settings: chmod 0640 {}",
            path.display(),
            path.display()
        ));
    }
}

/// The data directory: 0700, owned by the user postern runs as, and everything in it owned by
/// that user (a file left by `postern serve` run as root stops the next start), secrets 0600.
fn data_dir(config: &Config, found: &mut Findings) {
    let dir = &config.server.data_dir;
    let key = format!("server.data_dir = {}", dir.display());
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            found.note(format!(
                "{key}: does not exist yet: `postern serve` creates it (0700) at first start"
            ));
            return;
        }
        Err(e) => return found.error(format!("{key}: {}", os_text(&e))),
        Ok(m) if !m.is_dir() => return found.error(format!("{key}: not a directory")),
        Ok(m) => m,
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        found.error(format!(
            "{key}: mode {mode:04o}, expected 0700: it holds the API token, private keys and the mail queue (chmod 0700 {})",
            dir.display()
        ));
    }
    let me = effective_uid();
    if me != 0 && meta.uid() != me {
        found.error(format!(
            "{key}: owned by {}, but postern check runs as {}: run it as the user postern serves as",
            user_name(meta.uid()),
            user_name(me)
        ));
    }
    let mut strangers = Vec::new();
    let mut open = Vec::new();
    walk(dir, meta.uid(), 0, &mut strangers, &mut open);
    named(
        found,
        &strangers,
        &format!(
            "owned by another user than {} (the owner of server.data_dir): postern cannot write it (chown {} FILE)",
            user_name(meta.uid()),
            user_name(meta.uid())
        ),
    );
    named(
        found,
        &open,
        "readable by other users: postern writes every file here 0600 (keys, token, mail): chmod 0600 FILE",
    );
}

/// Files (and directories) under `dir` not owned by `owner`, and files readable by others.
fn walk(dir: &Path, owner: u32, depth: usize, strangers: &mut Vec<String>, open: &mut Vec<String>) {
    // The layout is data/, data/tls, data/log, data/spool and data/spool/damaged.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let path = entry.path().display().to_string();
        if meta.uid() != owner {
            strangers.push(path.clone());
        }
        if meta.is_dir() && depth < 3 {
            walk(&entry.path(), owner, depth + 1, strangers, open);
        } else if meta.is_file() && meta.mode() & 0o077 != 0 {
            open.push(path);
        }
    }
}

/// One error line per file, the first few; then how many more.
fn named(found: &mut Findings, files: &[String], why: &str) {
    for f in files.iter().take(MAX_FILES_NAMED) {
        found.error(format!("{f}: {why}"));
    }
    if files.len() > MAX_FILES_NAMED {
        found.error(format!(
            "{} more files: {why}",
            files.len() - MAX_FILES_NAMED
        ));
    }
}

/// The embedded settings store, and the certificates it binds. True when a running postern
/// holds it (its listeners are then in use by it, not a problem).
fn settings_store(config: &Config, found: &mut Findings) -> bool {
    if config.settings.database.is_some() {
        found.note(
            "settings.database: the shared settings and their certificates are not checked here; `postern serve` names the database at start if it cannot reach it",
        );
        return false;
    }
    let path = config.server.data_dir.join("postern.redb");
    let seen = Path::new(&format!("{}.seen", path.display())).exists();
    let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    if empty {
        if seen {
            found.error(format!(
                "{}: the settings store is missing or empty, but postern has run on this data directory before: `postern serve` refuses to start on defaults (README \"Configuration\")",
                path.display()
            ));
        } else {
            found.note(format!(
                "{}: no settings store yet: the first start creates it with the defaults",
                path.display()
            ));
        }
        return false;
    }
    let store = match Store::open(&path) {
        Ok(s) => s,
        Err(StoreError::Db(e)) if e == redb::DatabaseError::DatabaseAlreadyOpen.to_string() => {
            found.note(format!(
                "{}: in use by a running postern{}: its certificates and listeners are that server's (it logs their problems); stop it to check them",
                path.display(),
                holder(&path).map(|p| format!(" (pid {p})")).unwrap_or_default()
            ));
            return true;
        }
        Err(e) => {
            found.error(format!("{}: cannot open: {e}", path.display()));
            return false;
        }
    };
    match (store.load(), store.certificates()) {
        (Ok(Some(settings)), Ok(certs)) => {
            self_signed_smtp(config, &settings, found);
            certificates(config, &settings, &certs, found);
        }
        (Ok(None), _) => found.note(format!(
            "{}: no settings stored yet: the first start stores the defaults",
            path.display()
        )),
        (Err(e), _) | (_, Err(e)) => {
            found.error(format!("{}: cannot be read: {e}", path.display()))
        }
    }
    false
}

/// STARTTLS on the certificate postern generated: senders that verify will not trust it.
fn self_signed_smtp(config: &Config, settings: &Settings, found: &mut Findings) {
    let unbound = settings
        .inbound
        .certificate
        .as_deref()
        .is_none_or(str::is_empty);
    if settings.inbound.tls_mode != TlsMode::Disabled && unbound && config.smtp.tls_cert.is_none() {
        found.warning(
            "inbound.certificate: SMTP STARTTLS serves the self-signed system certificate: senders that verify certificates will not trust it (postern cert import, then bind it as inbound.certificate)",
        );
    }
}

/// The process that has `path` open, from /proc (ours to read for the same user, or root).
fn holder(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).ok()?;
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let fds = std::fs::read_dir(p.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
            .then_some(pid)
    })
}

/// Each bound certificate, as a handshake would load it today: expired, unreadable or not
/// matching its key is an error; near expiry or not valid for this host is a warning.
fn certificates(config: &Config, settings: &Settings, stored: &[StoredCert], found: &mut Findings) {
    let now = postern::fsutil::unix_now() as i64;
    for cert in stored {
        let bound = bound_at(settings, &cert.name);
        if bound.is_empty() {
            continue;
        }
        let label = format!(
            "certificate {:?} (bound to {})",
            cert.name,
            bound.join(", ")
        );
        let (chain, key) = match cert.kind {
            Kind::Acme => {
                let dir = config.tls.acme_live_dir.join(&cert.name);
                let read = |f: &str| {
                    let p = dir.join(f);
                    std::fs::read_to_string(&p).map_err(|e| {
                        format!("{}: {} (tls.acme_live_dir)", p.display(), os_text(&e))
                    })
                };
                match (read("fullchain.pem"), read("privkey.pem")) {
                    (Ok(c), Ok(k)) => (c, k),
                    (Err(e), _) | (_, Err(e)) => {
                        found.error(format!("{label}: {e}"));
                        continue;
                    }
                }
            }
            _ => (
                cert.chain_pem.clone(),
                cert.key_pem
                    .as_ref()
                    .map(|k| k.expose().to_string())
                    .unwrap_or_default(),
            ),
        };
        if let Some(e) = pair_key(settings, &cert.name, &chain) {
            found.error(format!("{label}: {e}"));
            continue;
        }
        // Only what postern serves must carry the host name; a client certificate towards a
        // relay domain is checked by that domain's name rules.
        let serves = bound.iter().any(|b| !b.starts_with("relay_domains["));
        certificate(
            &label,
            (&chain, &key),
            (serves, &config.server.hostname, now),
            found,
        );
    }
}

/// What is wrong with the key of `name`'s leaf where it is bound in a pair: ECDSA as
/// `ec_certificate`, RSA as the certificate beside one. The settings check imported ones;
/// an ACME one's files are read only here and when served.
fn pair_key(settings: &Settings, name: &str, chain: &str) -> Option<String> {
    let key = leaf_key(chain)?;
    let paired = |b: &Binding| match b {
        Binding::Inbound => settings.inbound.ec_certificate.is_some(),
        Binding::Admin => settings.admin.ec_certificate.is_some(),
        _ => false,
    };
    bindings(settings, name).iter().find_map(|b| {
        let want = match b {
            Binding::InboundEc | Binding::AdminEc => KeyKind::Ecdsa,
            b if paired(b) => KeyKind::Rsa,
            _ => return None,
        };
        (key != want).then(|| {
            format!(
                "{} needs {}, this certificate has {}: the pair is one ECDSA and one RSA certificate",
                b.field(),
                want.words(),
                key.words()
            )
        })
    })
}

fn certificate(
    label: &str,
    (chain, key): (&str, &str),
    (serves, hostname, now): (bool, &str, i64),
    found: &mut Findings,
) {
    match postern::certs::check::check(chain, key, None, hostname, now) {
        Err(e) => found.error(format!("{label}: {}", e.error)),
        Ok(checked) => {
            for w in checked.warnings {
                if serves || !w.contains("host name") {
                    found.warning(format!("{label}: {w}"));
                }
            }
        }
    }
}

/// `smtp.tls_cert` and `smtp.tls_key`, served when no certificate is bound for SMTP.
fn smtp_pem_files(config: &Config, found: &mut Findings) {
    let (Some(cert), Some(key)) = (&config.smtp.tls_cert, &config.smtp.tls_key) else {
        return;
    };
    let read = |p: &Path, k: &str| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("smtp.{k} = {}: {}", p.display(), os_text(&e)))
    };
    match (read(cert, "tls_cert"), read(key, "tls_key")) {
        (Ok(c), Ok(k)) => {
            let now = postern::fsutil::unix_now() as i64;
            let label = format!("smtp.tls_cert = {}", cert.display());
            certificate(
                &label,
                (&c, &k),
                (true, &config.server.hostname, now),
                found,
            );
        }
        (Err(e), _) | (_, Err(e)) => found.error(e),
    }
    if let Ok(meta) = std::fs::metadata(key)
        && meta.mode() & 0o007 != 0
    {
        found.error(format!(
            "smtp.tls_key = {}: the private key is readable by every user (mode {:04o}): chmod 0640",
            key.display(),
            meta.mode() & 0o7777
        ));
    }
}

/// Bind each listener as `postern serve` would, then let it go.
fn listeners(config: &Config, found: &mut Findings) {
    let mut held = Vec::new();
    for (key, addr) in [
        ("smtp.listen", config.smtp.listen),
        ("admin.listen", config.admin.listen),
    ] {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => held.push(l),
            Err(e) => found.error(format!(
                "{key} = {addr}: cannot listen: {}",
                bind_advice(&e, addr)
            )),
        }
    }
}

fn bind_advice(e: &std::io::Error, addr: SocketAddr) -> String {
    let text = os_text(e);
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "{text}: a port below 1024 needs CAP_NET_BIND_SERVICE (the packaged unit grants it; by hand: setpriv --ambient-caps +net_bind_service, README \"Install on Debian or Ubuntu\")"
        ),
        std::io::ErrorKind::AddrInUse => format!(
            "{text}: another program listens there (ss -ltnp 'sport = :{}')",
            addr.port()
        ),
        _ => text,
    }
}

/// Each of `outbound.nameservers` must answer a query (any answer, even a refusal, says it is
/// there); `system` means those in /etc/resolv.conf.
fn nameservers(config: &Config, found: &mut Findings) {
    let servers = &config.outbound.nameservers;
    let listed: Vec<String> = if servers.len() == 1 && servers[0] == "system" {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|ip| ip.trim().to_string())
            .collect()
    } else {
        servers.clone()
    };
    for s in &listed {
        let addr = s.parse::<SocketAddr>().or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match addr {
            Err(_) => found.error(format!(
                "outbound.nameservers: {s:?} is not an ip:port nameserver address"
            )),
            Ok(addr) => {
                // A warning: a resolver that starts after postern at boot, or is away for a
                // moment, must not keep port 25 closed; mail waits in the queue meanwhile.
                if let Err(e) = dns_answers(addr) {
                    found.warning(format!("outbound.nameservers: {addr}: {e}"));
                }
            }
        }
    }
}

/// One query (`. IN NS`, RFC 1035 section 4.1) over UDP; Ok when a reply with its ID comes.
fn dns_answers(addr: SocketAddr) -> Result<(), String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("a literal address")
    } else {
        "[::]:0".parse().expect("a literal address")
    };
    let socket = std::net::UdpSocket::bind(local).map_err(|e| os_text(&e))?;
    socket
        .set_read_timeout(Some(DNS_TIMEOUT))
        .map_err(|e| os_text(&e))?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut query = Vec::with_capacity(17);
    query.extend_from_slice(&id.to_be_bytes());
    // RD set; one question: the root (empty name), type NS (2), class IN (1).
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
    socket.send_to(&query, addr).map_err(|e| os_text(&e))?;
    let deadline = std::time::Instant::now() + DNS_TIMEOUT;
    let mut buf = [0u8; 512];
    while std::time::Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == addr && n >= 12 && buf[..2] == id.to_be_bytes() => {
                return Ok(());
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(format!("no answer: {}", os_text(&e))),
        }
    }
    Err(format!(
        "did not answer a DNS query within {} s: mail that needs an MX lookup would wait",
        DNS_TIMEOUT.as_secs()
    ))
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// `postern (uid 998)`, from /etc/passwd; the number alone when it is not there.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| format!("{name} (uid {uid})"))
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}
