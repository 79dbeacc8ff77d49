//! Name resolution for delivery, behind a trait so tests can point it at a DNS server of
//! their own on loopback. The real one is hickory-resolver with the nameservers of the config
//! (`outbound.nameservers`); with none configured, nothing is ever asked.
//! The MX hosts of a domain in the order to try, and name service errors in Postfix's words,
//! are here too: what the next hop logic asks of DNS.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::classify::Outcome;
use crate::proto::Enhanced;

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

/// What a DNSSEC-validating lookup found (RFC 4035 section 4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureError {
    /// The answer failed validation: an attack, or a broken zone.
    Bogus(String),
    /// No such name or no such record.
    NotFound,
    Temporary(String),
}

/// An answer and whether it was validated as secure (false: the zone is provably unsigned).
pub type Secured<T> = (T, bool);

/// A validating lookup in flight.
pub type SecureLookup<'a, T> = BoxFuture<'a, Result<Secured<T>, SecureError>>;

/// Lookups whose answers are validated in-process from a trust anchor: the MX and TLSA
/// records DANE relies on (RFC 7672 section 2.1).
pub trait SecureResolver: Send + Sync {
    fn mx_secure<'a>(&'a self, domain: &'a str) -> SecureLookup<'a, Vec<(u16, String)>>;
    fn tlsa<'a>(&'a self, name: &'a str) -> SecureLookup<'a, Vec<crate::policy::dane::Tlsa>>;
}

pub struct Hickory {
    inner: hickory_resolver::Resolver<TokioRuntimeProvider>,
}

impl Hickory {
    /// The same nameservers, with every answer validated from `anchors` (a file of DNSKEY
    /// records; absent, the root zone's published keys).
    pub fn validating(
        nameservers: &[String],
        anchors: Option<&std::path::Path>,
    ) -> Result<Hickory, String> {
        use hickory_resolver::proto::dnssec::TrustAnchors;
        let anchors = match anchors {
            Some(path) => {
                TrustAnchors::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => TrustAnchors::default(),
        };
        let mut builder = Hickory::builder(nameservers)?;
        builder = builder.with_trust_anchor(std::sync::Arc::new(anchors));
        builder.options_mut().validate = true;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Hickory { inner })
    }

    /// Nameservers as `ip:port` (UDP, then TCP for truncated answers); `system` alone means
    /// /etc/resolv.conf.
    pub fn new(nameservers: &[String]) -> Result<Hickory, String> {
        let builder = Hickory::builder(nameservers)?;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Hickory { inner })
    }

    fn builder(
        nameservers: &[String],
    ) -> Result<hickory_resolver::ResolverBuilder<TokioRuntimeProvider>, String> {
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
        Ok(builder)
    }
}

fn secure_error(e: hickory_resolver::net::NetError) -> SecureError {
    use hickory_resolver::net::DnsError as D;
    use hickory_resolver::net::NetError as N;
    match &e {
        N::Dns(D::DnssecBogus) => SecureError::Bogus("DNSSEC validation failed".into()),
        N::Dns(D::Nsec { proof, .. }) if proof.is_bogus() => {
            SecureError::Bogus(format!("DNSSEC validation failed ({proof})"))
        }
        N::Dns(D::Nsec { .. }) | N::Dns(D::NoRecordsFound(_)) => SecureError::NotFound,
        _ => SecureError::Temporary(e.to_string()),
    }
}

/// Secure when every record of the answer (signatures aside) was proven secure.
fn all_secure(records: &[hickory_resolver::proto::rr::Record]) -> bool {
    use hickory_resolver::proto::rr::RecordType;
    let data: Vec<_> = records
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG)
        .collect();
    !data.is_empty() && data.iter().all(|r| r.proof.is_secure())
}

impl SecureResolver for Hickory {
    fn mx_secure<'a>(&'a self, domain: &'a str) -> SecureLookup<'a, Vec<(u16, String)>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::RecordType;
            let lookup = self
                .inner
                .lookup(fqdn(domain), RecordType::MX)
                .await
                .map_err(secure_error)?;
            let hosts = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_utf8().trim_end_matches('.').to_string(),
                    )),
                    _ => None,
                })
                .collect();
            Ok((hosts, all_secure(lookup.answers())))
        })
    }

    fn tlsa<'a>(&'a self, name: &'a str) -> SecureLookup<'a, Vec<crate::policy::dane::Tlsa>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::RecordType;
            let lookup = self
                .inner
                .lookup(fqdn(name), RecordType::TLSA)
                .await
                .map_err(secure_error)?;
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(crate::policy::dane::Tlsa {
                        usage: u8::from(t.cert_usage),
                        selector: u8::from(t.selector),
                        matching: u8::from(t.matching),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Ok((records, all_secure(lookup.answers())))
        })
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

/// MX hosts by preference, equal preferences in random order (RFC 5321 section 5.1); the
/// domain itself when it has no MX; null MX and NXDOMAIN are final.
pub(super) async fn mx_hosts(
    resolver: &dyn Resolver,
    domain: &str,
) -> Result<Vec<String>, Outcome> {
    match resolver.mx(domain).await {
        Ok(MxAnswer::Hosts(mut hosts)) => {
            use rand::seq::SliceRandom;
            hosts.shuffle(&mut rand::thread_rng());
            hosts.sort_by_key(|(pref, _)| *pref); // stable: shuffled order kept within a preference
            Ok(hosts.into_iter().map(|(_, h)| h).collect())
        }
        Ok(MxAnswer::NoMx) => Ok(vec![domain.to_string()]),
        Ok(MxAnswer::NullMx) => Err(Outcome::permanent(
            Enhanced(5, 1, 10),
            format!("Domain {domain} does not accept mail (nullMX)"),
        )),
        Err(e) => Err(dns_outcome(domain, "MX", e)),
    }
}

/// Postfix's wording for name service errors.
pub(super) fn dns_outcome(name: &str, rtype: &str, e: DnsError) -> Outcome {
    match e {
        DnsError::NotFound => Outcome::permanent(
            Enhanced(5, 1, 2),
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found"
            ),
        ),
        DnsError::Temporary(why) => Outcome::temporary(
            Enhanced(4, 4, 3),
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again ({why})"
            ),
        ),
    }
}
