//! `postern serve`: the server until SIGTERM or SIGINT, then a graceful stop.

use std::path::PathBuf;

use postern::config::Config;
use postern::settings::StartMode;

/// Serve with the settings store started as asked: as it is, reset to the defaults on
/// purpose, or seeded from a saved copy.
pub async fn run(
    mut config: Config,
    reset_settings: bool,
    restore_settings: Option<PathBuf>,
) -> anyhow::Result<()> {
    config.settings_start = match (reset_settings, restore_settings) {
        (true, _) => StartMode::Reset,
        (false, Some(file)) => StartMode::Restore(file),
        (false, None) => StartMode::Normal,
    };
    let stop = anyhow::Context::context(shutdown_signal(), "cannot install the SIGTERM handler")?;
    let listeners = postern::Listeners::bind(&config).await?;
    postern::run(config, listeners, stop).await
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
