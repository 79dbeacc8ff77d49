//! `postern check-tls TARGET`: probe a remote MTA's STARTTLS as delivery would, and what
//! its domain publishes (MTA-STS, DANE). Exit 0 when TLS was negotiated, 1 when not, 2 when
//! the probe failed.

use std::process::ExitCode;
use std::sync::Arc;

use postern::config::Config;
use postern::outbound::check_tls::{self, Report};
use postern::outbound::dns::{Hickory, Resolver};

pub async fn run(config: &Config, target: &str, json: bool) -> ExitCode {
    postern::tls::install_provider();
    let resolver = match resolver(config) {
        Ok(r) => r,
        Err(code) => return code,
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
    let checked = check_tls::check(
        target,
        (resolver.as_deref(), config.outbound.port),
        helo,
        timeout,
        &roots,
    )
    .await;
    let mut report = match checked {
        Ok(report) => report,
        Err(e) => {
            eprintln!("postern: check-tls {target}: {e}");
            return ExitCode::from(2);
        }
    };
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

/// The configured nameservers' resolver; none without nameservers (the system's then).
fn resolver(config: &Config) -> Result<Option<Arc<dyn Resolver>>, ExitCode> {
    if config.outbound.nameservers.is_empty() {
        return Ok(None);
    }
    match Hickory::new(&config.outbound.nameservers) {
        Ok(r) => Ok(Some(Arc::new(r) as Arc<dyn Resolver>)),
        Err(e) => {
            eprintln!("postern: fatal: outbound.nameservers: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// What the target domain publishes, looked up now: MTA-STS (fetched, not cached) and
/// DANE (validated from the trust anchor), beside what its MX showed.
async fn published(
    config: &Config,
    target: &str,
    (resolver, roots): (Arc<dyn Resolver>, &Arc<rustls::RootCertStore>),
    report: &mut Report,
) {
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
    if let Ok(secure) = Hickory::validating(&config.outbound.nameservers, trust_anchor) {
        let chain = report.chain.clone();
        report.dane = check_tls::dane(target, &host, &chain, &secure).await;
    }
}
