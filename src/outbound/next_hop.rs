//! Next hops: where mail for a domain goes (a static route, the relay domain's transport,
//! the relayhost, else its MX hosts), as addresses in the order to try.

use std::net::{IpAddr, SocketAddr};

use super::classify::Outcome;
use super::dns::{self, dns_outcome, mx_hosts};
use crate::config::OutboundConfig;
use crate::proto::Enhanced;
use crate::settings::{NextHop, Snapshot};

/// Where mail for `domain` goes, in the order to try: a static route from the config, else
/// the relay domain's transport, else the relayhost, else its MX hosts (RFC 5321 5.1).
pub(super) async fn next_hops(
    cfg: &OutboundConfig,
    resolver: Option<&dyn dns::Resolver>,
    snapshot: &Snapshot,
    domain: &str,
) -> Result<Vec<(String, SocketAddr)>, Outcome> {
    let (name, port, mx) = configured_hop(cfg, snapshot, domain)?;
    let port = cfg.port.unwrap_or(port);
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![(name, SocketAddr::new(ip, port))]);
    }
    if name == "localhost" {
        return Ok(vec![(name, SocketAddr::from(([127, 0, 0, 1], port)))]);
    }
    let Some(resolver) = resolver else {
        return Err(Outcome::temporary(
            Enhanced(4, 4, 3),
            format!("cannot look up {name}: no DNS nameservers configured (outbound.nameservers)"),
        ));
    };
    let hosts = if mx {
        mx_hosts(resolver, &name).await?
    } else {
        vec![name.clone()]
    };
    let mut out = Vec::new();
    let mut last_error = None;
    for host in hosts {
        match resolver.ips(&host).await {
            Ok(ips) => out.extend(
                ips.into_iter()
                    .map(|ip| (host.clone(), SocketAddr::new(ip, port))),
            ),
            Err(e) => last_error = Some(dns_outcome(&host, "A", e)),
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| {
            Outcome::temporary(Enhanced(4, 4, 4), format!("Host or domain name not found. Name service error for name={name}: no address records"))
        }));
    }
    Ok(out)
}

/// The next hop an admin set, in this order: a static route, the relay domain's transport,
/// the relayhost; else the recipient domain itself, by MX. (name, port, MX lookup or not).
pub(super) fn configured_hop(
    cfg: &OutboundConfig,
    snapshot: &Snapshot,
    domain: &str,
) -> Result<(String, u16, bool), Outcome> {
    let hop = cfg
        .routes
        .get(domain)
        .cloned()
        .or_else(|| {
            snapshot
                .relay_domain(domain)
                .and_then(|d| d.transport.clone())
        })
        .or_else(|| cfg.relayhost.clone());
    match &hop {
        Some(hop) => {
            let hop = NextHop::parse(hop).map_err(|e| {
                Outcome::temporary(Enhanced(4, 3, 5), format!("bad next hop for {domain}: {e}"))
            })?;
            Ok((hop.host, hop.port, hop.mx_lookup))
        }
        None => Ok((domain.to_string(), 25, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::Class;
    use super::*;

    fn engine_cfg() -> OutboundConfig {
        OutboundConfig {
            first_retry_secs: 300,
            max_retry_secs: 3600,
            ..OutboundConfig::default()
        }
    }

    #[tokio::test]
    async fn routes_prefer_config_then_transport() {
        let mut cfg = engine_cfg();
        cfg.routes
            .insert("lab.example".into(), "[127.0.0.1]:2526".into());
        cfg.port = None;
        let mut s = crate::settings::Settings::default();
        s.relay_domains.push(crate::settings::RelayDomain {
            domain: "ours.example".into(),
            recipients: None,
            verify_recipients: false,
            transport: Some("[127.0.0.2]:2600".into()),
            auth: None,
            client_certificate: None,
        });
        let snap = Snapshot::new(s, 0);
        assert_eq!(
            next_hops(&cfg, None, &snap, "lab.example").await.unwrap()[0].1,
            "127.0.0.1:2526".parse().unwrap()
        );
        assert_eq!(
            next_hops(&cfg, None, &snap, "ours.example").await.unwrap()[0].1,
            "127.0.0.2:2600".parse().unwrap()
        );
        let err = next_hops(&cfg, None, &snap, "elsewhere.example")
            .await
            .unwrap_err();
        assert!(
            err.reason.contains("no DNS nameservers configured"),
            "{}",
            err.reason
        );
        assert_eq!((err.class, err.dsn), (Class::Temporary, Enhanced(4, 4, 3)));
        cfg.relayhost = Some("[127.0.0.3]:2700".into());
        let hops = next_hops(&cfg, None, &snap, "elsewhere.example")
            .await
            .unwrap();
        assert_eq!(hops[0].1, "127.0.0.3:2700".parse().unwrap());
        // A transport still wins over the relayhost.
        let hops = next_hops(&cfg, None, &snap, "ours.example").await.unwrap();
        assert_eq!(hops[0].1, "127.0.0.2:2600".parse().unwrap());
    }
}
