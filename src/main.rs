//! The command line: parse (clap), then call the subcommand's file in cli/.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use postern::config::Config;

mod cli;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let mut args = Cli::parse();
    args.config = cli::config_path(args.config.take());
    // Before the config is loaded: reporting what is wrong with it is check's job.
    if let Command::Check = args.command {
        return cli::check::run(args.config.as_deref());
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return cli::fail(e),
    };
    postern::logging::init(config.server.log_format, &config.server.hostname);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return cli::fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(dispatch(config, args.api, args.command));
    postern::logging::flush();
    code
}

/// The subcommand's own exit code (check-tls, import-postfix), else 0, or 1 with
/// `postern: fatal: ...` on stderr.
async fn dispatch(config: Config, api: Option<SocketAddr>, command: Command) -> ExitCode {
    let result = match command {
        Command::CheckTls { target, json } => {
            return cli::check_tls::run(&config, &target, json).await;
        }
        Command::ImportPostfix { dir, out, apply } => {
            return cli::import_postfix::run(&config, api, (&dir, &out), apply).await;
        }
        Command::Serve {
            reset_settings,
            restore_settings,
        } => cli::serve::run(config, reset_settings, restore_settings).await,
        Command::Settings { action } => cli::settings::run(config, api, action).await,
        Command::Queue { action } => cli::queue::run(config, api, action).await,
        Command::Cert { action } => cli::cert::run(config, api, action).await,
        Command::Policy { action } => cli::policy::run(config, api, action).await,
        Command::TlsRpt { action } => cli::tls_rpt::run(config, api, action).await,
        Command::Node { action } => cli::node::run(config, api, action).await,
        Command::Admin { action } => cli::admin::run(config, api, action).await,
        Command::Check => unreachable!("check runs before the config is loaded, in main"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(format!("{e:#}")),
    }
}
