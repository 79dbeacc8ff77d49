//! What a start opens and builds, in order, before anything listens: the settings store,
//! the spool, the first admin and the API token, the certificates, the delivery engine and
//! the SMTP sessions' context. `prepare` and `Server::run` in lib.rs call these in turn.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, Config};
use crate::{admin, certs, cluster, events, inbound, outbound, server, settings, spool, tls};

/// The durable queue, recovered from its segments.
pub(crate) fn spool(config: &Config) -> anyhow::Result<spool::Spool> {
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
    Ok(spool)
}

/// The first admin user (on a first start) and the API token.
pub(crate) fn admin_access(
    config: &Config,
    settings: &settings::SettingsHandle,
) -> anyhow::Result<String> {
    let data = &config.server.data_dir;
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
    admin::ensure_token(data).with_context(|| {
        format!(
            "{}: cannot write the API token",
            data.join("api-token").display()
        )
    })
}

/// The certificate store, and the SMTP and admin listeners' TLS configs served from it.
pub(crate) fn certificates(
    config: &Config,
    settings: &settings::SettingsHandle,
) -> anyhow::Result<(
    Arc<certs::Certs>,
    Arc<rustls::ServerConfig>,
    Arc<rustls::ServerConfig>,
)> {
    let data = &config.server.data_dir;
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
    Ok((certs, smtp_tls, admin_tls))
}

/// The delivery engine with its records, resolvers and trust roots (the roots are the
/// inbound sessions' too, for client certificates).
pub(crate) fn delivery(
    config: &Config,
    spool: &spool::Spool,
    settings: &settings::SettingsHandle,
    certs: &Arc<certs::Certs>,
) -> anyhow::Result<(Arc<outbound::Engine>, Arc<rustls::RootCertStore>)> {
    let events = delivery_records(config)?;
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
    let engine = outbound::Engine::new(
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
    .with_tls_rpt_if(config.outbound.tls_rpt, tls_reporting(config));
    Ok((Arc::new(engine), roots))
}

/// The delivery log and the records the pages search: shared by the nodes or this node's.
fn delivery_records(config: &Config) -> anyhow::Result<events::EventLog> {
    let data = &config.server.data_dir;
    let retention = events::store::Retention {
        max_age_secs: config.outbound.delivery_records_max_age_days.max(1) * 86_400,
        max_records: config.outbound.delivery_records_max.max(1),
    };
    let max_bytes = config.outbound.delivery_log_max_bytes;
    match shared_records(config, retention) {
        Some(store) => events::EventLog::open_with_store(data, max_bytes, Some(store)),
        None => events::EventLog::open_with(data, max_bytes, Some(retention)),
    }
    .with_context(|| {
        format!(
            "{}: cannot open the delivery log",
            data.join("log").display()
        )
    })
}

/// What every SMTP session shares.
pub(crate) fn inbound_context(
    config: &Config,
    (settings, spool): (&settings::SettingsHandle, &spool::Spool),
    smtp_tls: Arc<rustls::ServerConfig>,
    client_roots: Arc<rustls::RootCertStore>,
    engine: &Arc<outbound::Engine>,
) -> inbound::Context {
    inbound::Context {
        client_roots,
        hostname: config.server.hostname.clone(),
        limits: inbound::Limits::from_config(config),
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
        events: Some(engine.event_log()),
    }
}

/// The admin page's and API's state.
pub(crate) fn admin_state(
    config: &Config,
    (settings, spool): (settings::SettingsHandle, spool::Spool),
    certs: &Arc<certs::Certs>,
    token: String,
) -> admin::AdminState {
    let pages = admin::pages::Pages::new(
        &config.server.hostname,
        config.server.data_dir.clone(),
        std::time::Duration::from_secs(config.admin.session_idle_secs.max(60)),
        std::time::Duration::from_secs(config.admin.session_max_secs.max(60)),
    );
    admin::AdminState::new(settings, spool, certs.clone(), token).with_pages(pages)
}

/// This node's heartbeat in the node list, with the address the others reach its API on.
pub(crate) fn heartbeat(
    config: &Config,
    c: Arc<cluster::Cluster>,
    admin_addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let api = config
        .settings
        .api_address
        .or(Some(admin_addr).filter(|a| !a.ip().is_unspecified()));
    if api.is_none() {
        tracing::warn!(target: "postern/master", "warning: admin.listen is a wildcard address and settings.api_address is not set: the other nodes cannot reach this node's queue");
    }
    cluster::heartbeat(c, api, config.server.data_dir.clone(), stop)
}

/// Certificate bindings follow the settings, wherever they were changed (another node's
/// change reaches this one through the shared store).
pub(crate) async fn follow_bindings(
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
pub(crate) fn local_settings(
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
pub(crate) fn cluster(config: &Config) -> anyhow::Result<Option<Arc<cluster::Cluster>>> {
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
pub(crate) fn shared_settings(config: &Config) -> anyhow::Result<Option<settings::SettingsHandle>> {
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
