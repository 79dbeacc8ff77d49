//! postern: a gateway mail relay that owns the TLS policy of every hop.
//!
//! The modules are the architecture (README's "Layout"): `proto` (SMTP wire format, no
//! I/O), `inbound` (listener and sessions), `spool` (durable queue), `outbound` (delivery),
//! `policy` (the TLS level of each recipient), `settings` (runtime settings and the live
//! snapshot), `certs` (the certificate store), `tls` (rustls configs), `admin` (control
//! API), `logging` (Postfix-style lines), `printable` (outside text made safe to show),
//! `server` (binding, accepting and the stop signal every listener shares).

pub mod admin;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod events;
pub mod fsutil;
pub mod inbound;
pub mod levels;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod next_hop;
pub mod outbound;
pub mod policy;
pub mod postfix;
pub mod printable;
pub mod proto;
pub mod recipient;
pub mod server;
pub mod settings;
pub mod spool;
pub mod tls;

mod start;

pub use server::Listeners;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use config::Config;

/// Run postern on `listeners` until `shutdown` completes, then stop accepting, let sessions
/// finish within the grace period, and stop the spool after its last batch is on disk.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    prepare(config)?.run(listeners, shutdown).await
}

/// Everything opened and generated before serving: settings store, recovered spool,
/// certificates, API token.
pub struct Server {
    config: Config,
    settings: settings::SettingsHandle,
    spool: spool::Spool,
    ctx: Arc<inbound::Context>,
    admin_tls: Arc<rustls::ServerConfig>,
    certs: Arc<certs::Certs>,
    token: String,
    engine: Arc<outbound::Engine>,
    /// New message IDs for the delivery engine; subscribed before SMTP accepts anything.
    incoming: tokio::sync::mpsc::UnboundedReceiver<spool::QueueId>,
    /// The node list, when the settings are shared.
    cluster: Option<Arc<cluster::Cluster>>,
}

/// Open the data directory (creating what a first start needs). Blocking; errors name the
/// file or config key at fault.
pub fn prepare(config: Config) -> anyhow::Result<Server> {
    tls::install_provider();
    metrics::handle();
    let fds = config.ensure_fd_budget().map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(target: "postern/master", "open file limit {fds}, limits need {}", config.fd_budget());
    let data = &config.server.data_dir;
    fsutil::private_dir(data).with_context(|| format!("server.data_dir = {}", data.display()))?;
    let settings = match start::shared_settings(&config)? {
        Some(shared) => shared,
        None => start::local_settings(&config, &data.join("postern.redb"))?,
    };
    let cluster = start::cluster(&config)?;
    let spool = start::spool(&config)?;
    let token = start::admin_access(&config, &settings)?;
    let (certs, smtp_tls, admin_tls) = start::certificates(&config, &settings)?;
    let (engine, roots) = start::delivery(&config, &spool, &settings, &certs)?;
    let ctx = Arc::new(start::inbound_context(
        &config,
        (&settings, &spool),
        smtp_tls,
        roots,
        &engine,
    ));
    let (new_tx, incoming) = tokio::sync::mpsc::unbounded_channel();
    spool.subscribe(new_tx);
    Ok(Server {
        config,
        settings,
        spool,
        ctx,
        admin_tls,
        certs,
        token,
        engine,
        incoming,
        cluster,
    })
}

impl Server {
    pub fn settings(&self) -> &settings::SettingsHandle {
        &self.settings
    }

    pub fn spool(&self) -> &spool::Spool {
        &self.spool
    }

    pub fn certs(&self) -> &Arc<certs::Certs> {
        &self.certs
    }

    /// Delivery records as they happen.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<events::Delivery> {
        self.engine.events().subscribe()
    }

    /// Serve until `shutdown` completes.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tracing::info!(
            target: "postern/master",
            "daemon started -- version {}, smtp on {}, control API on https://{}",
            env!("CARGO_PKG_VERSION"),
            listeners.smtp_addr(),
            listeners.admin_addr()
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let (grace, engine, spool) = (
            self.config.smtp.shutdown_grace_secs,
            self.engine.clone(),
            self.spool.clone(),
        );
        let status = format!(
            "smtp on {}, control API on https://{}",
            listeners.smtp_addr(),
            listeners.admin_addr()
        );
        let tasks = self.spawn(listeners, stop_rx);
        // systemd (Type=notify): ready once every listener is bound and served, so units
        // ordered after postern find it accepting; nothing happens outside systemd.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        shutdown.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(target: "postern/master", "terminating: no new connections; sessions have {grace}s to finish");
        let _ = stop_tx.send(true);
        // In the order they were started: SMTP and the API first, delivery after them.
        for task in tasks {
            let _ = task.await;
        }
        // Delivery has stopped: its last records are made durable and the store let go.
        tokio::task::spawn_blocking(move || engine.events().close()).await?;
        tokio::task::spawn_blocking(move || spool.shutdown()).await?;
        tracing::info!(target: "postern/master", "stopped");
        Ok(())
    }

    /// Start every listener and background task; each ends when `stop` turns true.
    fn spawn(self, listeners: Listeners, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let Server {
            config,
            settings,
            spool,
            ctx,
            admin_tls,
            certs,
            token,
            engine,
            incoming,
            cluster,
        } = self;
        let mut settings_rx = settings.subscribe();
        // Bindings changed here are rebound by the change itself; what comes from now on.
        settings_rx.mark_unchanged();
        let admin_addr = listeners.admin_addr();
        let smtp = task(inbound::run(listeners.smtp, ctx, stop.clone()));
        let admin_state = start::admin_state(&config, (settings, spool), &certs, token)
            .with_engine(engine.clone())
            .with_cluster(cluster.clone());
        let api = task(admin::run(
            listeners.admin,
            TlsAcceptor::from(admin_tls),
            admin_state,
            config.admin.clone(),
            stop.clone(),
        ));
        let mut tasks = vec![
            smtp,
            api,
            task(outbound::run(engine.clone(), incoming, stop.clone())),
            task(outbound::tls_report::run(engine, stop.clone())),
            task(certs.clone().watch_acme(
                std::time::Duration::from_secs(config.tls.acme_watch_secs.max(1)),
                stop.clone(),
            )),
            task(certs.clone().warn_daily(stop.clone())),
            task(start::follow_bindings(settings_rx, certs, stop.clone())),
        ];
        if let Some(c) = cluster {
            tasks.push(task(start::heartbeat(&config, c, admin_addr, stop)));
        }
        tasks
    }
}

/// A spawned task whose result is not needed (each logs its own errors).
fn task<F>(fut: F) -> JoinHandle<()>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(async move {
        let _ = fut.await;
    })
}
