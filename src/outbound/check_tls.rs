//! `postern check-tls`: what a remote MTA offers over STARTTLS, as an admin checks before
//! forcing TLS for a partner (Hermes' "verify with an external STARTTLS test").

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use super::client;
use super::dns::Resolver;
use crate::tls::{KxGroups, TlsInfo};

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    /// `host[ip]:port` probed.
    pub relay: String,
    pub greeting: String,
    pub starttls_offered: bool,
    pub tls: Option<TlsInfo>,
    pub tls_error: Option<String>,
    /// The post-quantum ClientHello went unanswered; the probe tried classical groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kx_fallback: Option<String>,
    /// The server's certificate, described as `postern cert list` describes ours.
    pub certificate: Option<crate::certs::Facts>,
    pub chain_length: usize,
    /// `verified for <name>` against the Mozilla roots, or why not.
    pub verification: Option<String>,
    /// What the domain publishes, when the target was a domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<StsStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dane: Option<DaneStatus>,
    /// The chain the server sent (DER), for the DANE match.
    #[serde(skip)]
    pub chain: Vec<Vec<u8>>,
}

/// A domain's DANE as `check-tls` shows it, and whether the probed chain matches its host's
/// TLSA records.
#[derive(Debug, Serialize)]
pub struct DaneStatus {
    #[serde(flatten)]
    pub fact: crate::policy::dane::DaneFact,
    pub chain_matches: Option<bool>,
}

impl DaneStatus {
    fn text(&self) -> String {
        use crate::policy::dane::{DaneFact, TlsaAnswer};
        match &self.fact {
            DaneFact::Insecure { reason } => format!("not in use: {reason}"),
            DaneFact::Bogus { reason } => format!("BOGUS: {reason}: delivery would defer"),
            DaneFact::Secure { hosts } => {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|h| match &h.tlsa {
                        TlsaAnswer::Records(r) => format!(
                            "{} TLSA {}",
                            h.host,
                            r.iter()
                                .map(|t| t.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        TlsaAnswer::None => format!("{} no TLSA", h.host),
                        TlsaAnswer::Bogus(why) => format!("{} TLSA BOGUS ({why})", h.host),
                    })
                    .collect();
                let verdict = match self.chain_matches {
                    Some(true) => "; this host's certificate matches",
                    Some(false) => "; this host's certificate does NOT match",
                    None => "",
                };
                format!("signed MX: {}{verdict}", hosts.join("; "))
            }
        }
    }
}

/// The DANE of `target` when it names a domain; `host` is the MX host probed.
pub async fn dane(
    target: &str,
    host: &str,
    chain: &[Vec<u8>],
    resolver: &dyn super::dns::SecureResolver,
) -> Option<DaneStatus> {
    use crate::policy::dane::{DaneFact, TlsaAnswer};
    let bare = target.trim_end_matches('.');
    if bare.contains(':')
        || bare.parse::<IpAddr>().is_ok()
        || !crate::settings::is_domain_name(bare)
    {
        return None;
    }
    let fact = super::dane::lookup(resolver, bare).await;
    let chain_matches = match &fact {
        DaneFact::Secure { hosts } => hosts
            .iter()
            .find(|h| h.host.eq_ignore_ascii_case(host))
            .and_then(|h| match &h.tlsa {
                TlsaAnswer::Records(r) => Some(crate::policy::dane::matching(r, chain).is_some()),
                _ => None,
            }),
        _ => None,
    };
    Some(DaneStatus {
        fact,
        chain_matches,
    })
}

/// A domain's MTA-STS policy as `check-tls` shows it, and whether the probed host is one
/// of its MX patterns.
#[derive(Debug, Serialize)]
pub struct StsStatus {
    pub domain: String,
    #[serde(flatten)]
    pub fact: crate::policy::mta_sts::StsFact,
    pub host_matches: Option<bool>,
}

impl StsStatus {
    fn text(&self) -> String {
        use crate::policy::mta_sts::StsFact;
        match &self.fact {
            StsFact::NoPolicy => format!("none published by {}", self.domain),
            StsFact::Unavailable { reason, .. } => {
                format!(
                    "{} has a record, but no usable policy: {reason}",
                    self.domain
                )
            }
            StsFact::Policy { id, policy, .. } => format!(
                "mode {} (id {id}, max_age {}), mx: {}; this host {}",
                policy.mode,
                policy.max_age,
                policy.mx.join(", "),
                match self.host_matches {
                    Some(true) => "matches",
                    _ => "does NOT match",
                }
            ),
        }
    }
}

/// The MTA-STS policy of `target` when it names a domain (not a host and port, nor an
/// address), fetched now; `host` is the MX host probed.
pub async fn mta_sts(target: &str, host: &str, sts: &super::sts::Sts) -> Option<StsStatus> {
    let bare = target.trim_end_matches('.');
    let is_domain = !bare.contains(':')
        && !bare.starts_with('[')
        && bare.parse::<IpAddr>().is_err()
        && crate::settings::is_domain_name(bare);
    if !is_domain {
        return None;
    }
    let fact = sts.lookup(bare).await;
    let host_matches = match &fact {
        crate::policy::mta_sts::StsFact::Policy { policy, .. } => Some(policy.names(host)),
        _ => None,
    };
    Some(StsStatus {
        domain: bare.to_ascii_lowercase(),
        fact,
        host_matches,
    })
}

impl Report {
    pub fn negotiated(&self) -> bool {
        self.tls.is_some()
    }

    pub fn text(&self) -> String {
        let mut out = vec![
            format!("target:      {}", self.target),
            format!("relay:       {}", self.relay),
            format!("greeting:    {}", self.greeting),
        ];
        out.push(format!(
            "STARTTLS:    {}",
            if self.starttls_offered {
                "offered"
            } else {
                "NOT offered"
            }
        ));
        if let Some(k) = &self.kx_fallback {
            out.push(format!("key exch.:   {k}"));
        }
        if let Some(t) = &self.tls {
            out.push(format!("TLS:         {}", t.describe_session()));
        }
        if let Some(e) = &self.tls_error {
            out.push(format!("TLS error:   {e}"));
        }
        if let Some(c) = &self.certificate {
            out.push(format!("subject:     {}", c.subject));
            out.push(format!("issuer:      {}", c.issuer));
            out.push(format!("serial:      {}", c.serial));
            out.push(format!("SANs:        {}", c.sans.join(", ")));
            out.push(format!("not after:   {}", c.not_after));
            out.push(format!("chain:       {} certificate(s)", self.chain_length));
        }
        if let Some(v) = &self.verification {
            out.push(format!("verified:    {v}"));
        }
        if let Some(s) = &self.mta_sts {
            out.push(format!("MTA-STS:     {}", s.text()));
        }
        if let Some(d) = &self.dane {
            out.push(format!("DANE:        {}", d.text()));
        }
        out.join("\n")
    }
}

/// `host:port`, `[host]:port`, an IP, or a domain (its first MX, or itself without MX),
/// on `port` when the target names none (`outbound.port`, as delivery uses it), else 25.
/// The certificate is verified against `roots`: the Mozilla set and `[tls] extra_roots`, as
/// delivery at `verify` would.
pub async fn check(
    target: &str,
    (resolver, port): (Option<&dyn Resolver>, Option<u16>),
    helo: &str,
    timeout: Duration,
    roots: &Arc<rustls::RootCertStore>,
) -> Result<Report, String> {
    let (host, mut addr) = resolve(target, resolver).await?;
    let explicit_port = target
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if let Some(port) = port.filter(|_| !explicit_port) {
        addr.set_port(port);
    }
    let probe = client::probe(&host, addr, helo, timeout, KxGroups::PostQuantum).await?;
    let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
    Ok(report(target, relay, probe, roots, &host))
}

fn report(
    target: &str,
    relay: String,
    probe: client::Probe,
    roots: &Arc<rustls::RootCertStore>,
    host: &str,
) -> Report {
    let certificate = probe
        .chain
        .first()
        .and_then(|c| crate::certs::check::describe(c.as_ref()));
    let verification = probe
        .chain
        .first()
        .map(|ee| verify(ee, &probe.chain[1..], host, roots));
    Report {
        target: target.to_string(),
        relay,
        greeting: probe.greeting,
        starttls_offered: probe.starttls_offered,
        tls: probe.tls,
        tls_error: probe.tls_error,
        kx_fallback: probe.kx_fallback,
        certificate,
        chain_length: probe.chain.len(),
        verification,
        mta_sts: None,
        dane: None,
        chain: probe.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
    }
}

impl Report {
    /// A host that could not be reached: nothing seen.
    fn unreachable(target: &str, relay: String) -> Report {
        Report {
            target: target.to_string(),
            relay,
            greeting: String::new(),
            starttls_offered: false,
            tls: None,
            tls_error: None,
            kx_fallback: None,
            certificate: None,
            chain_length: 0,
            verification: None,
            mta_sts: None,
            dane: None,
            chain: Vec::new(),
        }
    }
}

async fn resolve(
    target: &str,
    resolver: Option<&dyn Resolver>,
) -> Result<(String, SocketAddr), String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr));
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok((ip.to_string(), SocketAddr::new(ip, 25)));
    }
    let hop = crate::settings::NextHop::parse(target)?;
    let explicit_port = target
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if let Ok(ip) = hop.host.parse::<IpAddr>() {
        return Ok((hop.host.clone(), SocketAddr::new(ip, hop.port)));
    }
    let resolver = resolver
        .ok_or("no DNS nameservers configured (outbound.nameservers): give an IP address")?;
    let host = if hop.mx_lookup && !explicit_port {
        match resolver
            .mx(&hop.host)
            .await
            .map_err(|e| format!("MX lookup of {}: {e:?}", hop.host))?
        {
            super::dns::MxAnswer::Hosts(mut hosts) => {
                hosts.sort_by_key(|(p, _)| *p);
                hosts[0].1.clone()
            }
            super::dns::MxAnswer::NoMx => hop.host.clone(),
            super::dns::MxAnswer::NullMx => {
                return Err(format!(
                    "{} publishes a null MX: it accepts no mail",
                    hop.host
                ));
            }
        }
    } else {
        hop.host.clone()
    };
    let ips = resolver
        .ips(&host)
        .await
        .map_err(|e| format!("address lookup of {host}: {e:?}"))?;
    let ip = ips
        .first()
        .ok_or_else(|| format!("{host} has no address records"))?;
    Ok((host, SocketAddr::new(*ip, hop.port)))
}

/// Chain and name against the trust roots.
fn verify(
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    host: &str,
    roots: &Arc<rustls::RootCertStore>,
) -> String {
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        crate::tls::provider(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return format!("no: {e}"),
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return format!("no: {host} is not a valid server name");
    };
    match verifier.verify_server_cert(ee, intermediates, &name, &[], UnixTime::now()) {
        Ok(_) => format!("verified for {host}"),
        Err(e) => format!("no: {}", crate::tls::words::rustls_error(&e)),
    }
}

/// One host of a policy Test: what the probe saw, and what delivery under the row would do.
#[derive(Debug, Serialize)]
pub struct HostCheck {
    pub report: Report,
    /// Whether mail would cross this host under the row.
    pub passes: bool,
    pub verdict: String,
}

/// The Test of a policy row before it is saved: every host delivery would try for the
/// domain, probed as `postern check-tls` probes, judged against what the row demands.
#[derive(Debug, Serialize)]
pub struct RowTest {
    pub domain: String,
    pub level: crate::levels::Level,
    pub min_bits: u16,
    pub hosts: Vec<HostCheck>,
    /// Every host passes: the row stops no mail.
    pub passes: bool,
}

/// At most this many hosts are probed: an MX set is rarely larger, and the page waits.
const MAX_TESTED_HOSTS: usize = 10;

impl super::Engine {
    /// Whether DNS nameservers are configured (`[outbound] nameservers` of the config
    /// file): without them no next hop that needs a lookup can be found.
    pub fn asks_dns(&self) -> bool {
        self.resolver.is_some()
    }

    /// Probe the hosts mail for `domain` goes to (the same `next_hops` as delivery: routes,
    /// transports, relayhost, else MX by preference), one address each, in parallel.
    pub async fn test_row(
        &self,
        domain: &str,
        decision: &crate::policy::Decision,
    ) -> Result<RowTest, String> {
        let snapshot = self.settings.current();
        let hops =
            super::next_hop::next_hops(&self.cfg, self.resolver.as_deref(), &snapshot, domain)
                .await
                .map_err(|o| o.reason)?;
        let mut seen = std::collections::HashSet::new();
        let hops: Vec<(String, SocketAddr)> = hops
            .into_iter()
            .filter(|(host, _)| seen.insert(host.clone()))
            .take(MAX_TESTED_HOSTS)
            .collect();
        let timeout = Duration::from_secs(self.cfg.connect_timeout_secs.clamp(1, 30));
        let mut probes = tokio::task::JoinSet::new();
        for (i, (host, addr)) in hops.iter().cloned().enumerate() {
            let helo = self.helo.clone();
            // The groups delivery would offer this host: the row's, or what it remembers.
            let groups = self.tls.groups_for(&host, decision.classical_kx);
            probes.spawn(
                async move { (i, client::probe(&host, addr, &helo, timeout, groups).await) },
            );
        }
        let mut results: Vec<Option<Result<client::Probe, String>>> =
            (0..hops.len()).map(|_| None).collect();
        while let Some(Ok((i, r))) = probes.join_next().await {
            results[i] = Some(r);
        }
        let hosts: Vec<HostCheck> = hops
            .iter()
            .zip(results)
            .map(|((host, addr), probe)| {
                let probe = probe.unwrap_or_else(|| Err("probe did not finish".into()));
                host_check(domain, (host, *addr), probe, decision, &self.roots)
            })
            .collect();
        Ok(RowTest {
            domain: domain.to_string(),
            level: decision.level,
            min_bits: decision.min_bits,
            passes: hosts.iter().all(|h| h.passes),
            hosts,
        })
    }
}

fn host_check(
    domain: &str,
    (host, addr): (&str, SocketAddr),
    probe: Result<client::Probe, String>,
    decision: &crate::policy::Decision,
    roots: &Arc<rustls::RootCertStore>,
) -> HostCheck {
    let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            return HostCheck {
                report: Report::unreachable(domain, relay),
                passes: false,
                verdict: format!("not reached: {e}"),
            };
        }
    };
    let (passes, verdict) = match decision.sts.as_ref().filter(|d| d.enforce) {
        Some(d)
            if !d
                .mx
                .iter()
                .any(|p| crate::policy::mta_sts::mx_matches(p, host)) =>
        {
            (
                false,
                format!(
                    "not in the MTA-STS policy of {} (mx: {}): never used",
                    d.domain,
                    d.mx.join(", ")
                ),
            )
        }
        _ => judge(decision, host, &probe, roots),
    };
    HostCheck {
        report: report(domain, relay, probe, roots, host),
        passes,
        verdict,
    }
}

/// What delivery under `decision` would do with this host, from what the probe saw (a
/// connection, EHLO, STARTTLS and QUIT: no mail is sent), in the words its log would use.
pub fn judge(
    decision: &crate::policy::Decision,
    host: &str,
    probe: &client::Probe,
    roots: &Arc<rustls::RootCertStore>,
) -> (bool, String) {
    use crate::levels::{Level, OnFailure};
    let stopped = match decision.on_failure {
        OnFailure::Defer => "mail would be deferred",
        OnFailure::Bounce => "mail would bounce",
    };
    let (tls, offered) = (probe.tls.as_ref(), probe.starttls_offered);
    let (level, check) = super::tls_choice::tls_for(decision, host);
    match level {
        Level::None => return (true, "no TLS asked for: mail would go in plaintext".into()),
        Level::May => {
            let how = match tls {
                Some(t) => format!("the probe got {}: mail would go over TLS", t.describe_session()),
                None if offered => "the probe's TLS handshake failed: mail would go in plaintext (level may allows it)".into(),
                None => "STARTTLS not offered to the probe: mail would go in plaintext (level may allows it)".into(),
            };
            return (true, how);
        }
        _ => {}
    }
    let Some(t) = tls else {
        let why = match &probe.tls_error {
            Some(e) if offered => e.clone(),
            _ => format!("TLS is required, but was not offered by host {host}"),
        };
        return (false, format!("{why}: {stopped}"));
    };
    if decision.min_bits > 0 && t.bits < decision.min_bits {
        let why = format!(
            "encryption too weak {} less than {}",
            t.bits, decision.min_bits
        );
        return (false, format!("{why}: {stopped}"));
    }
    let Some(check) = check else {
        let how = format!(
            "the probe got {}: mail would go over TLS",
            t.describe_session()
        );
        return (true, how);
    };
    match certificate_passes(check, &probe.chain, roots) {
        Ok(name) => (
            true,
            format!(
                "the probe got {}, certificate verified for {name}: mail would go over TLS",
                t.describe_session()
            ),
        ),
        Err(e) => (false, format!("{e}: {stopped}")),
    }
}

/// The chain through the very verifier delivery builds for the level.
fn certificate_passes(
    check: crate::tls::CertCheck,
    chain: &[CertificateDer<'static>],
    roots: &Arc<rustls::RootCertStore>,
) -> Result<String, String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no certificate shown".into());
    };
    let (_, verifier) = crate::tls::policy_client_config(
        check,
        roots.clone(),
        None,
        crate::tls::KxGroups::PostQuantum,
    )
    .map_err(|e| format!("cannot check certificates: {e}"))?;
    // The names come from the check, not from the connection's SNI (PolicyVerifier).
    let sni = ServerName::try_from("policy-test.invalid").expect("a literal valid DNS name");
    verifier
        .verify_server_cert(leaf, intermediates, &sni, &[], UnixTime::now())
        .map_err(|e| crate::tls::words::rustls_error(&e))?;
    Ok(verifier.verified_name().unwrap_or_default())
}
