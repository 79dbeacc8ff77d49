//! Name resolution for delivery, behind a trait so tests can point it at a DNS server of
//! their own on loopback. The real one is hickory-resolver with the nameservers of the config
//! (`outbound.nameservers`); with none configured, nothing is ever asked.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// (preference, exchange host) as published.
    Hosts(Vec<(u16, String)>),
    /// The name exists but has no MX: deliver to its address (RFC 5321 section 5.1).
    NoMx,
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    NullMx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist; final.
    NotFound,
    /// SERVFAIL, timeout, refused: try again later.
    Temporary(String),
}

pub trait Resolver: Send + Sync {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>>;
    /// A and AAAA; empty when the name exists without addresses.
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// TXT records, each one's strings joined (RFC 7208 section 3.3's rule, which MTA-STS
    /// and TLS-RPT records follow); empty when the name has none.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

pub struct Hickory {
    inner: hickory_resolver::Resolver<TokioRuntimeProvider>,
}

impl Hickory {
    /// Nameservers as `ip:port` (UDP, then TCP for truncated answers); `system` alone means
    /// /etc/resolv.conf.
    pub fn new(nameservers: &[String]) -> Result<Hickory, String> {
        let mut builder = if nameservers.len() == 1 && nameservers[0] == "system" {
            hickory_resolver::Resolver::builder_tokio()
                .map_err(|e| format!("system resolver: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|s| {
                    let addr: SocketAddr = s
                        .parse()
                        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| format!("{s:?} is not an ip:port nameserver address"))?;
                    let conn = |protocol| {
                        let mut c = ConnectionConfig::new(protocol);
                        c.port = addr.port();
                        c
                    };
                    Ok(NameServerConfig::new(
                        addr.ip(),
                        true,
                        vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let config = ResolverConfig::from_parts(None, vec![], servers);
            hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        // Mail routing comes from the DNS only, not from /etc/hosts.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Hickory { inner })
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn classify(e: hickory_resolver::net::NetError) -> Result<(), DnsError> {
    if e.is_nx_domain() {
        Err(DnsError::NotFound)
    } else if e.is_no_records_found() {
        Ok(())
    } else {
        Err(DnsError::Temporary(e.to_string()))
    }
}

impl Resolver for Hickory {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        Box::pin(async move {
            let lookup = match self.inner.mx_lookup(fqdn(domain)).await {
                Ok(l) => l,
                Err(e) => return classify(e).map(|()| MxAnswer::NoMx),
            };
            let mut hosts = Vec::new();
            for record in lookup.answers() {
                if let RData::MX(mx) = &record.data {
                    let exchange = mx.exchange.to_utf8();
                    hosts.push((mx.preference, exchange.trim_end_matches('.').to_string()));
                }
            }
            if hosts.len() == 1 && hosts[0].1.is_empty() {
                return Ok(MxAnswer::NullMx);
            }
            Ok(if hosts.is_empty() {
                MxAnswer::NoMx
            } else {
                MxAnswer::Hosts(hosts)
            })
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            match self.inner.lookup_ip(fqdn(host)).await {
                Ok(l) => Ok(l.iter().collect()),
                Err(e) => classify(e).map(|()| Vec::new()),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let lookup = match self.inner.txt_lookup(fqdn(name)).await {
                Ok(l) => l,
                Err(e) => return classify(e).map(|()| Vec::new()),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }
}
