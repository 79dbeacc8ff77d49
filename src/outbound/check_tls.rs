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
use crate::tls::TlsInfo;

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    /// `host[ip]:port` probed.
    pub relay: String,
    pub greeting: String,
    pub starttls_offered: bool,
    pub tls: Option<TlsInfo>,
    pub tls_error: Option<String>,
    /// The server's certificate, described as `postern cert list` describes ours.
    pub certificate: Option<crate::certs::Facts>,
    pub chain_length: usize,
    /// `verified for <name>` against the Mozilla roots, or why not.
    pub verification: Option<String>,
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
        if let Some(t) = &self.tls {
            out.push(format!("TLS:         {}", t.describe()));
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
        out.join("\n")
    }
}

/// `host:port`, `[host]:port`, an IP, or a domain (its first MX, or itself without MX).
pub async fn check(
    target: &str,
    resolver: Option<&dyn Resolver>,
    helo: &str,
    timeout: Duration,
) -> Result<Report, String> {
    let (host, addr) = resolve(target, resolver).await?;
    let probe = client::probe(&host, addr, helo, timeout).await?;
    let certificate = probe
        .chain
        .first()
        .and_then(|c| crate::certs::check::describe(c.as_ref()));
    let verification = probe
        .chain
        .first()
        .map(|ee| verify(ee, &probe.chain[1..], &host));
    Ok(Report {
        target: target.to_string(),
        relay: format!("{host}[{}]:{}", addr.ip(), addr.port()),
        greeting: probe.greeting,
        starttls_offered: probe.starttls_offered,
        tls: probe.tls,
        tls_error: probe.tls_error,
        certificate,
        chain_length: probe.chain.len(),
        verification,
    })
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

/// Chain and name against the Mozilla roots shipped with the binary.
fn verify(
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    host: &str,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
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
