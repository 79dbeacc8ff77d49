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
pub mod server;
pub mod settings;
pub mod spool;
pub mod tls;

pub use server::Listeners;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
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
    let store_path = data.join("postern.redb");
    let settings = match shared_settings(&config)? {
        Some(shared) => shared,
        None => local_settings(&config, &store_path)?,
    };
    let cluster = cluster(&config)?;
    let (spool, recovery) = spool::Spool::open(&config.spool_dir(), config.spool.segment_bytes)
        .with_context(|| format!("{}: cannot open the spool", config.spool_dir().display()))?;
    tracing::info!(
        target: "postern/master",
        "spool: recovered {} message(s) from {} segment(s), {} torn tail(s) skipped, {} damaged region(s)",
        recovery.messages,
        recovery.segments,
        recovery.torn.len(),
        recovery.damaged.len()
    );
    let (system_cert, system_key) = tls::system_certificate(data, &config.server.hostname)?;
    let system = tls::certified_key_from_pem(&system_cert, &system_key, "data/tls/system.crt")?;
    let smtp_key = match (&config.smtp.tls_cert, &config.smtp.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))
            };
            tls::certified_key_from_pem(&read(cert)?, &read(key)?, "smtp.tls_cert/smtp.tls_key")?
        }
        _ => system.clone(),
    };
    let created = match settings.ensure_initial_admin(data, &settings::Argon2Hasher) {
        Ok(created) => created,
        // A shared database away at start: its admin users are there, not lost; sign-in
        // waits for it (the node relays meanwhile). One whose settings row this node refuses
        // takes no write until it holds a version that follows; the node relays meanwhile.
        Err(e @ (settings::StoreError::Unreachable(_) | settings::StoreError::Refused(_))) => {
            tracing::warn!(target: "postern/admin", "warning: admin users not checked: {e}");
            None
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot create the first admin user")),
    };
    if let Some(file) = created {
        tracing::warn!(target: "postern/admin", "first start: admin page user \"{}\" created; its password is in {} (0600): sign in at https://{}/ and choose a new one", settings::FIRST_ADMIN, file.display(), config.admin.listen);
    }
    let token = admin::ensure_token(data).with_context(|| {
        format!(
            "{}: cannot write the API token",
            data.join("api-token").display()
        )
    })?;

    let certs = certs::Certs::new(
        settings.clone(),
        &config.server.hostname,
        system,
        smtp_key,
        config.tls.acme_live_dir.clone(),
        data,
    );
    if settings.current().settings.inbound.tls_mode != settings::TlsMode::Disabled
        && certs.smtp_serves_system()
    {
        // Once, at start-up: where it matters is the first sender that verifies.
        tracing::warn!(target: "postern/tls", "warning: SMTP STARTTLS serves the system self-signed certificate for {}: senders that verify certificates will not trust it; import one (postern cert import) and bind it as inbound.certificate", config.server.hostname);
    }
    let smtp_tls = tls::smtp_server_config(certs.smtp_resolver());
    let admin_tls = tls::server_config(certs.admin_resolver(), &[b"http/1.1"]);
    let retention = events::store::Retention {
        max_age_secs: config.outbound.delivery_records_max_age_days.max(1) * 86_400,
        max_records: config.outbound.delivery_records_max.max(1),
    };
    let events = match shared_records(&config, retention) {
        Some(store) => events::EventLog::open_with_store(
            data,
            config.outbound.delivery_log_max_bytes,
            Some(store),
        ),
        None => events::EventLog::open_with(
            data,
            config.outbound.delivery_log_max_bytes,
            Some(retention),
        ),
    }
    .with_context(|| {
        format!(
            "{}: cannot open the delivery log",
            data.join("log").display()
        )
    })?;
    let resolver: Option<Arc<dyn outbound::dns::Resolver>> =
        if config.outbound.nameservers.is_empty() {
            None
        } else {
            let r = outbound::dns::Hickory::new(&config.outbound.nameservers)
                .map_err(|e| anyhow::anyhow!("outbound.nameservers: {e}"))?;
            Some(Arc::new(r))
        };
    let secure = validating_resolver(&config.outbound)?;
    let roots = tls::trust_roots(&config.tls.extra_roots).context("tls.extra_roots")?;
    let engine = Arc::new(
        outbound::Engine::new(
            spool.clone(),
            settings.clone(),
            config.outbound.clone(),
            config.server.hostname.clone(),
            events,
            resolver,
            roots.clone(),
        )
        .with_certs(certs.clone())
        .with_mta_sts(config.server.data_dir.join("mta-sts.json"))
        .with_dane(secure)
        .with_tls_rpt_if(config.outbound.tls_rpt, tls_reporting(&config)),
    );
    let ctx = Arc::new(inbound::Context {
        client_roots: roots,
        hostname: config.server.hostname.clone(),
        limits: inbound::Limits::from_config(&config),
        settings: settings.clone(),
        spool: spool.clone(),
        tls: TlsAcceptor::from(smtp_tls),
        auth: inbound::AuthGuard::new(inbound::AuthLimits {
            failure_limit: config.smtp.auth_failure_limit.max(1),
            lockout: std::time::Duration::from_secs(config.smtp.auth_lockout_secs),
            failure_delay: std::time::Duration::from_millis(config.smtp.auth_failure_delay_ms),
        }),
        verifier: Some(engine.clone()),
        draining: engine.draining_flag(),
    });
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
        tracing::info!(
            target: "postern/master",
            "daemon started -- version {}, smtp on {}, control API on https://{}",
            env!("CARGO_PKG_VERSION"),
            listeners.smtp_addr(),
            listeners.admin_addr()
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut settings_rx = settings.subscribe();
        // Bindings changed here are rebound by the change itself; what comes from now on.
        settings_rx.mark_unchanged();
        let (admin_addr, smtp_addr) = (listeners.admin_addr(), listeners.smtp_addr());
        let smtp = tokio::spawn(inbound::run(listeners.smtp, ctx, stop_rx.clone()));
        let pages = admin::pages::Pages::new(
            &config.server.hostname,
            config.server.data_dir.clone(),
            std::time::Duration::from_secs(config.admin.session_idle_secs.max(60)),
            std::time::Duration::from_secs(config.admin.session_max_secs.max(60)),
        );
        let admin_state = admin::AdminState::new(settings, spool.clone(), certs.clone(), token)
            .with_pages(pages)
            .with_engine(engine.clone())
            .with_cluster(cluster.clone());
        let heartbeat = cluster.map(|c| {
            let api = config
                .settings
                .api_address
                .or(Some(admin_addr).filter(|a| !a.ip().is_unspecified()));
            if api.is_none() {
                tracing::warn!(target: "postern/master", "warning: admin.listen is a wildcard address and settings.api_address is not set: the other nodes cannot reach this node's queue");
            }
            let data = config.server.data_dir.clone();
            tokio::spawn(cluster::heartbeat(c, api, data, stop_rx.clone()))
        });
        let acme = tokio::spawn(certs.clone().watch_acme(
            std::time::Duration::from_secs(config.tls.acme_watch_secs.max(1)),
            stop_rx.clone(),
        ));
        let bindings = tokio::spawn(follow_bindings(settings_rx, certs.clone(), stop_rx.clone()));
        let expiry = tokio::spawn(certs.warn_daily(stop_rx.clone()));
        let api = tokio::spawn(admin::run(
            listeners.admin,
            TlsAcceptor::from(admin_tls),
            admin_state,
            config.admin.clone(),
            stop_rx.clone(),
        ));
        let reports = tokio::spawn(outbound::tls_report::run(engine.clone(), stop_rx.clone()));
        let delivery = tokio::spawn(outbound::run(engine.clone(), incoming, stop_rx));

        // systemd (Type=notify): ready once every listener is bound and served, so units
        // ordered after postern find it accepting; nothing happens outside systemd.
        let status = format!("smtp on {smtp_addr}, control API on https://{admin_addr}");
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        shutdown.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(target: "postern/master", "terminating: no new connections; sessions have {}s to finish", config.smtp.shutdown_grace_secs);
        let _ = stop_tx.send(true);
        let _ = smtp.await;
        let _ = api.await;
        let _ = delivery.await;
        let _ = reports.await;
        let _ = acme.await;
        let _ = expiry.await;
        let _ = bindings.await;
        if let Some(h) = heartbeat {
            let _ = h.await;
        }
        // Delivery has stopped: its last records are made durable and the store let go.
        tokio::task::spawn_blocking(move || engine.events().close()).await?;
        tokio::task::spawn_blocking(move || spool.shutdown()).await?;
        tracing::info!(target: "postern/master", "stopped");
        Ok(())
    }
}

/// Certificate bindings follow the settings, wherever they were changed (another node's
/// change reaches this one through the shared store).
async fn follow_bindings(
    mut changed: watch::Receiver<u64>,
    certs: Arc<certs::Certs>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            _ = server::stopped(&mut stop) => return,
        }
        let certs = certs.clone();
        let _ = tokio::task::spawn_blocking(move || certs.rebind()).await;
    }
}

/// The embedded store, `data/postern.redb`.
fn local_settings(
    config: &Config,
    store_path: &std::path::Path,
) -> anyhow::Result<settings::SettingsHandle> {
    match settings::SettingsHandle::open_with(
        store_path,
        config.settings_start.clone(),
        config.server.settings_history,
    ) {
        Ok(s) => Ok(s),
        // Missing or damaged: the error names the file and what to do.
        Err(e @ (settings::StoreError::Missing { .. } | settings::StoreError::Damaged { .. })) => {
            Err(e.into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "{}: cannot open the settings store (is another postern running on it?)",
            store_path.display()
        ))),
    }
}

/// Delivery records in the database the nodes share, when there is one; while it cannot be
/// reached they wait on this node's disk and are stored when it is back.
fn shared_records(
    config: &Config,
    retention: events::store::Retention,
) -> Option<Arc<events::store::Store>> {
    let url = config.settings.database.as_deref()?;
    let node = match config.settings.node_name(&config.server.hostname) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(target: "postern/master", "warning: {e}: delivery records stay on this node");
            return None;
        }
    };
    let tls = match database_tls(config) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(target: "postern/master", "warning: {e:#}: delivery records stay on this node");
            return None;
        }
    };
    let store =
        events::shared::SharedRecords::open(url, node, retention, (tls, &config.server.data_dir));
    Some(Arc::new(events::store::Store::Shared(store)))
}

/// TLS to the shared database: verified against the Mozilla roots and `[tls] extra_roots`.
fn database_tls(config: &Config) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = tls::trust_roots(&config.tls.extra_roots).context("tls.extra_roots")?;
    tls::webpki_client_config(roots).map_err(|e| anyhow::anyhow!("settings.database TLS: {e}"))
}

/// The node list in the shared database, when there is one: this node registers itself
/// there, and finds the others.
fn cluster(config: &Config) -> anyhow::Result<Option<Arc<cluster::Cluster>>> {
    let Some(url) = config.settings.database.as_deref() else {
        return Ok(None);
    };
    let me = config
        .settings
        .node_name(&config.server.hostname)
        .map_err(|e| anyhow::anyhow!(e))?;
    let key = config.settings.key_hex().map_err(|e| anyhow::anyhow!(e))?;
    let sealer = settings::postgres::Sealer::from_hex(&key)
        .map_err(|e| anyhow::anyhow!("settings.key: {e}"))?;
    let registry = settings::nodes::Registry::new(url, sealer, me, database_tls(config)?);
    Ok(Some(Arc::new(cluster::Cluster::new(registry))))
}

/// Settings in the PostgreSQL database the nodes share (`settings.database`), when set.
fn shared_settings(config: &Config) -> anyhow::Result<Option<settings::SettingsHandle>> {
    let Some(url) = config.settings.database.as_deref() else {
        return Ok(None);
    };
    let key = config.settings.key_hex().map_err(|e| anyhow::anyhow!(e))?;
    let sealer = settings::postgres::Sealer::from_hex(&key)
        .map_err(|e| anyhow::anyhow!("settings.key: {e}"))?;
    let cache = config.server.data_dir.join("settings.shared-copy.json");
    let (handle, _health) = settings::SettingsHandle::open_postgres(
        url,
        sealer,
        cache,
        (config.server.settings_history, database_tls(config)?),
    )
    .context("settings.database")?;
    Ok(Some(handle))
}

/// The resolver DANE asks: the same nameservers, every answer validated here from the
/// trust anchor (RFC 7672 section 2.1); none without nameservers.
fn validating_resolver(
    cfg: &config::OutboundConfig,
) -> anyhow::Result<Option<Arc<dyn outbound::dns::SecureResolver>>> {
    if cfg.nameservers.is_empty() {
        return Ok(None);
    }
    let r =
        outbound::dns::Hickory::validating(&cfg.nameservers, cfg.dnssec_trust_anchor.as_deref())
            .map_err(|e| anyhow::anyhow!("outbound.dnssec_trust_anchor: {e}"))?;
    Ok(Some(Arc::new(r)))
}

/// Who TLS-RPT reports come from: this host, and `outbound.tls_rpt_contact`.
fn tls_reporting(config: &Config) -> outbound::tls_report::Reporting {
    let host = &config.server.hostname;
    let contact = match config.outbound.tls_rpt_contact.trim() {
        "" => format!("postmaster@{host}"),
        c => c.to_string(),
    };
    outbound::tls_report::Reporting {
        organization: host.clone(),
        contact,
        state: config.server.data_dir.join("tls-rpt.json"),
    }
}
