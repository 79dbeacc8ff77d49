//! The TOML file: what must be known before anything listens. Everything an admin changes
//! at run time lives in `settings` instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `config/postern.toml` is compiled in: `postern serve` with no file runs on it.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../config/postern.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub outbound: OutboundConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub settings: SettingsConfig,
    /// From the command line (`serve --reset-settings`, `--restore-settings`), not the file.
    #[serde(skip)]
    pub settings_start: crate::settings::StartMode,
}

/// Where runtime settings live: the embedded store (one node), or a PostgreSQL database the
/// nodes of a cluster share.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SettingsConfig {
    /// `postgres://user@host:port/db`; absent: `data/postern.redb`.
    pub database: Option<String>,
    /// The key that seals every row in the database (64 hex digits); empty: the
    /// `POSTERN_SETTINGS_KEY` environment variable. Every node needs the same one.
    pub key: String,
    /// This node's name on the delivery records of the shared database; empty:
    /// `server.hostname`. Unique per node.
    pub node: String,
    /// Where the other nodes reach this node's control API (`ip:port`), registered in the
    /// node list for their Queue pages; absent: `admin.listen`, unless that is a wildcard
    /// address.
    pub api_address: Option<std::net::SocketAddr>,
}

impl SettingsConfig {
    /// This node's name in the cluster: `node`, else the host name. Checked at start, as
    /// it is written after a queue ID (`4F2A91C0@gw2`).
    pub fn node_name<'a>(&'a self, hostname: &'a str) -> Result<&'a str, String> {
        let name = match self.node.trim() {
            "" => hostname,
            n => n,
        };
        let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if name.is_empty() || !name.chars().all(fits) {
            return Err(format!(
                "settings.node = {name:?}: a node name is letters, digits, '.', '-' and '_'"
            ));
        }
        Ok(name)
    }

    /// The key, from the file or the environment; an error names both.
    pub fn key_hex(&self) -> Result<String, String> {
        match self.key.trim() {
            "" => std::env::var("POSTERN_SETTINGS_KEY").map_err(|_| {
                "settings.key is empty and POSTERN_SETTINGS_KEY is not set: a shared settings database needs the key that seals its rows".to_string()
            }),
            k => Ok(k.to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files of CA certificates trusted for `verify` and `secure`, besides the Mozilla
    /// roots shipped with the binary (a private CA, a lab's test CA).
    pub extra_roots: Vec<PathBuf>,
    /// Where ACME clients keep `<name>/fullchain.pem` and `privkey.pem` (certbot's layout).
    pub acme_live_dir: PathBuf,
    /// How often the ACME directories are checked for a renewal.
    pub acme_watch_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            extra_roots: Vec::new(),
            acme_live_dir: PathBuf::from("/etc/letsencrypt/live"),
            acme_watch_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Port for every outbound connection (labs and tests); absent: 25, or the route's port.
    pub port: Option<u16>,
    /// DNS servers for MX and address lookups, `ip:port`; `["system"]` for /etc/resolv.conf.
    /// Empty: no lookups at all (mail needing one is deferred, saying so).
    pub nameservers: Vec<String>,
    /// Postfix's `relayhost`: the next hop for every domain without a route or transport
    /// (a smarthost), e.g. `[10.0.0.1]:587`. Absent: MX lookups.
    pub relayhost: Option<String>,
    /// Static routes for labs: recipient domain -> next hop (`[127.0.0.1]:2526`). They come
    /// before relay-domain transports and MX lookups.
    pub routes: std::collections::BTreeMap<String, String>,
    /// Labs and tests: where a domain's MTA-STS policy host is (`"mta-sts.example.com" =
    /// "127.0.0.1:8443"`), as `routes` says where mail goes. Others are looked up and
    /// reached on port 443.
    pub policy_hosts: std::collections::BTreeMap<String, String>,
    /// DNSSEC trust anchor for DANE: a file of DNSKEY records (`. 172800 IN DNSKEY 257 3 8
    /// ...`). Absent: the root zone's keys built into the resolver (labs and tests name their
    /// own signed root).
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// Daily TLS-RPT reports (RFC 8460) to the domains that publish `_smtp._tls` records.
    pub tls_rpt: bool,
    /// The reports' `contact-info`, envelope sender and From; empty: postmaster@hostname.
    pub tls_rpt_contact: String,
    /// Seconds before the first retry of a deferred message; doubles up to `max_retry_secs`.
    pub first_retry_secs: u64,
    pub max_retry_secs: u64,
    /// Seconds a message may stay queued before it is bounced (Postfix: maximal_queue_lifetime).
    pub queue_lifetime_secs: u64,
    /// Deliveries in flight in all, and to one destination domain.
    pub max_concurrency: usize,
    pub destination_concurrency: usize,
    pub connect_timeout_secs: u64,
    /// Seconds an idle outbound session is kept for the next message to the same host and
    /// TLS level (Postfix's smtp_connection_cache_time_limit); 0 turns reuse off.
    pub connection_cache_secs: u64,
    /// Size at which `data/log/delivery.jsonl` is rotated (one previous file is kept).
    pub delivery_log_max_bytes: u64,
    /// Delivery records the Logs page searches (`data/log/records.redb`): kept this many
    /// days, and at most this many records (the oldest go first).
    pub delivery_records_max_age_days: u64,
    pub delivery_records_max: u64,
    /// Seconds to wait for each reply of the next hop.
    pub command_timeout_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            port: None,
            nameservers: Vec::new(),
            relayhost: None,
            routes: Default::default(),
            policy_hosts: Default::default(),
            dnssec_trust_anchor: None,
            tls_rpt: true,
            tls_rpt_contact: String::new(),
            first_retry_secs: 300,
            max_retry_secs: 3600,
            queue_lifetime_secs: 5 * 24 * 3600,
            max_concurrency: 100,
            destination_concurrency: 20,
            connect_timeout_secs: 30,
            connection_cache_secs: 2,
            delivery_log_max_bytes: 64 * 1024 * 1024,
            delivery_records_max_age_days: 30,
            delivery_records_max: 2_000_000,
            command_timeout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Postfix's `myhostname`: the greeting, EHLO, Received headers. Empty: the machine's name.
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Settings changes kept in the audit history (at least 1; older ones are dropped).
    pub settings_history: usize,
    /// `plain` (tracing's line), `syslog` (a maillog line, for pflogsumm) or `journal`
    /// (systemd's journal, Postfix's identifiers).
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    /// Bytes; advertised with EHLO SIZE (Postfix's `message_size_limit`).
    pub max_message_size: usize,
    /// Per transaction (Postfix's `smtpd_recipient_limit`).
    pub max_recipients: usize,
    /// Recipients refused for the limit above that do not count as errors, per session
    /// (Postfix's `smtpd_recipient_overshoot_limit`): a client that sends too many gets 452
    /// for the excess and goes on with the ones accepted.
    pub recipient_overshoot_limit: usize,
    /// Concurrent sessions in all (Postfix's process limit).
    pub max_connections: usize,
    /// Concurrent sessions from one IP (Postfix's `smtpd_client_connection_count_limit`).
    pub max_connections_per_client: usize,
    /// Errors in one session before `421` and close (Postfix's `smtpd_hard_error_limit`).
    pub max_errors: u32,
    /// Seconds a whole command line may take to arrive, and a DATA or BDAT transfer before
    /// its data-rate allowance (Postfix's `smtpd_timeout`).
    pub timeout_secs: u64,
    /// Bytes per second a DATA or BDAT transfer must average: each byte received extends its
    /// deadline by 1/rate seconds (Postfix's `smtpd_min_data_rate`). 0: each read has
    /// `timeout_secs`.
    pub min_data_rate: u64,
    /// New connections per client address per minute, trusted networks excepted (Postfix's
    /// `smtpd_client_connection_rate_limit`). 0: no limit.
    pub max_connection_rate_per_client: u32,
    /// SMTP AUTH attempts from one client address (counted before each check) before that
    /// address is refused for `auth_lockout_secs`; a success clears its count. A user name
    /// is never locked for everyone. Each failure also delays its reply by
    /// `auth_failure_delay_ms` more than the last, up to 5 s.
    pub auth_failure_limit: u32,
    pub auth_lockout_secs: u64,
    pub auth_failure_delay_ms: u64,
    /// Seconds sessions may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// PEM files for STARTTLS; absent: the system self-signed certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Connections to the control API at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Seconds a client has for its TLS handshake and for each request's headers, and may
    /// stay idle between requests.
    pub header_read_timeout_secs: u64,
    /// Seconds a request from someone not signed in may take in all, body included (plus
    /// its length at `min_body_rate`); past it, 408 and the connection closes.
    pub request_timeout_secs: u64,
    /// Bytes per second a request body must average: each byte declared extends the
    /// request's deadline by 1/rate seconds.
    pub min_body_rate: u64,
    /// Connections of `max_connections` kept for the signed-in and the API (bearer token):
    /// a stranger who gets one is answered 503 at once.
    pub reserved_connections: usize,
    /// Admin page sessions end after this many seconds without a request...
    pub session_idle_secs: u64,
    /// ...and this many after sign-in, whatever happens.
    pub session_max_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// A new segment file is started when the current one passes this many bytes.
    pub segment_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: String::new(),
            log_format: crate::logging::LogFormat::Plain,
            data_dir: PathBuf::from("data"),
            settings_history: 200,
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            max_message_size: 36_700_160,
            max_recipients: 1000,
            recipient_overshoot_limit: 1000,
            max_connections: 200,
            max_connections_per_client: 50,
            max_errors: 20,
            min_data_rate: 500,
            max_connection_rate_per_client: 120,
            auth_failure_limit: 10,
            auth_lockout_secs: 300,
            auth_failure_delay_ms: 500,
            timeout_secs: 300,
            shutdown_grace_secs: 30,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            max_connections: 64,
            header_read_timeout_secs: 10,
            request_timeout_secs: 20,
            min_body_rate: 4096,
            reserved_connections: 8,
            session_idle_secs: 1800,
            session_max_secs: 43200,
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: &'static str,
        message: String,
    },
}

impl Config {
    /// The file at `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(EMBEDDED_DEFAULTS, "<embedded config/postern.toml>"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Parse and check; errors name the file and the key (toml's message carries the line).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: parse_message(text, e),
            })?;
        config.check(origin)?;
        if config.server.hostname.is_empty() {
            config.server.hostname = default_hostname();
        }
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message: message.to_string(),
        };
        if self.smtp.tls_cert.is_some() != self.smtp.tls_key.is_some() {
            return Err(invalid(
                "smtp.tls_cert",
                "tls_cert and tls_key must be given together",
            ));
        }
        if self.smtp.max_connections == 0 {
            return Err(invalid("smtp.max_connections", "must be at least 1"));
        }
        if self.smtp.max_connections_per_client == 0 {
            return Err(invalid(
                "smtp.max_connections_per_client",
                "must be at least 1",
            ));
        }
        if self.smtp.max_recipients == 0 {
            return Err(invalid("smtp.max_recipients", "must be at least 1"));
        }
        for (domain, hop) in &self.outbound.routes {
            if let Err(e) = crate::next_hop::NextHop::parse(hop) {
                return Err(ConfigError::Invalid {
                    path: origin.to_string(),
                    key: "outbound.routes",
                    message: format!("{domain}: {e}"),
                });
            }
        }
        if let Some(Err(e)) = self
            .outbound
            .relayhost
            .as_deref()
            .map(crate::next_hop::NextHop::parse)
        {
            return Err(invalid("outbound.relayhost", &e));
        }
        if self.outbound.max_concurrency == 0 || self.outbound.destination_concurrency == 0 {
            return Err(invalid(
                "outbound.max_concurrency",
                "concurrency limits must be at least 1",
            ));
        }
        if self.smtp.max_message_size < 1024 {
            return Err(invalid(
                "smtp.max_message_size",
                "must be at least 1024 bytes",
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.smtp.timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.smtp.shutdown_grace_secs)
    }

    /// File descriptors the configured limits can take at once: SMTP sessions, control-API
    /// connections, outbound connections (in flight and as many again cached or closing),
    /// and a reserve for the spool, logs, the settings store and accept bursts.
    pub fn fd_budget(&self) -> u64 {
        const RESERVE: u64 = 64;
        self.smtp.max_connections as u64
            + self.admin.max_connections as u64
            + 2 * self.outbound.max_concurrency as u64
            + RESERVE
    }

    /// Raise the open-file limit and check that the limits fit in it: otherwise one
    /// listener could use the descriptors another needs (idle API connections once stopped
    /// SMTP from accepting). The error names the keys to change.
    pub fn ensure_fd_budget(&self) -> Result<u64, String> {
        let need = self.fd_budget();
        let have = crate::fsutil::raise_fd_limit()?;
        if have < need {
            return Err(format!(
                "open file limit {have} is below what the limits need ({need}: smtp.max_connections + admin.max_connections + 2 x outbound.max_concurrency + 64): raise it (ulimit -n, LimitNOFILE=) or lower those keys"
            ));
        }
        Ok(have)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.server.data_dir.join("spool")
    }
}

/// `smtp.max_mesage_size: unknown field ..., expected one of ... (line 2)`: the key's whole
/// path first, as admins name it, then toml's message and the line.
fn parse_message(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner
        .span()
        .map(|s| {
            let before = &text.as_bytes()[..s.start.min(text.len())];
            format!(
                " (line {})",
                before.iter().filter(|&&b| b == b'\n').count() + 1
            )
        })
        .unwrap_or_default();
    let message = inner.message().trim_end().replace('\n', " ");
    match path.as_str() {
        "." => format!("{message}{line}"),
        p => format!("{p}: {message}{line}"),
    }
}

/// `server.hostname = ""`: `POSTERN_HOSTNAME` (a container's own name is its ID), else the
/// machine's name.
fn default_hostname() -> String {
    std::env::var("POSTERN_HOSTNAME")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(system_hostname)
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost.localdomain".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.smtp.listen.to_string(), "127.0.0.1:2525");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.server.data_dir, PathBuf::from("data"));
        assert!(!c.server.hostname.is_empty());
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = Config::parse("[smtp]\nmax_mesage_size = 3\n", "x.toml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("x.toml: smtp.max_mesage_size: unknown field `max_mesage_size`"),
            "{text}"
        );
        assert!(text.ends_with("(line 2)"), "{text}");
        let err = Config::parse("[smtp]\nlisten = \"nowhere\"\n", "x.toml").unwrap_err();
        assert!(
            err.to_string().starts_with("x.toml: smtp.listen: "),
            "{err}"
        );
    }

    #[test]
    fn cert_without_key_is_refused() {
        let err = Config::parse("[smtp]\ntls_cert = \"a.pem\"\n", "x.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml: smtp.tls_cert: tls_cert and tls_key must be given together"
        );
    }
}
