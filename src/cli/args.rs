//! The command line's top level: global options and the subcommands (each subcommand's
//! own arguments live in its file). Doc comments here are `postern --help`'s text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "A gateway mail relay that owns the TLS policy of every hop"
)]
pub struct Cli {
    /// Configuration file; without it (and without POSTERN_CONFIG), /etc/postern/postern.toml
    /// when it exists (the package's), else the embedded defaults (config/postern.toml).
    #[arg(long, global = true, env = "POSTERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control API address (host:port) of the running postern; default: admin.listen.
    #[arg(long, global = true)]
    pub api: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        action: super::policy::PolicyAction,
    },
    /// The certificate store of the running server.
    Cert {
        #[command(subcommand)]
        action: super::cert::CertAction,
    },
    /// The mail queue of the running server (like postqueue and postsuper).
    Queue {
        #[command(subcommand)]
        action: super::queue::QueueAction,
    },
    /// Read or replace the running server's settings document.
    Settings {
        #[command(subcommand)]
        action: super::settings::SettingsAction,
    },
    /// TLS-RPT (RFC 8460) aggregate reports of the running server.
    TlsRpt {
        #[command(subcommand)]
        action: super::tls_rpt::TlsRptAction,
    },
    /// Admin page users: `postern admin reset-password USER`.
    Admin {
        #[command(subcommand)]
        action: super::admin::AdminAction,
    },
    /// This node of a cluster: its state, and draining it for maintenance.
    Node {
        #[command(subcommand)]
        action: super::node::NodeAction,
    },
}
