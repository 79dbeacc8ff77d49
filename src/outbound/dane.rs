//! DANE (RFC 7672) for delivery: the domain's MX records and each MX host's
//! `_25._tcp.<host>` TLSA records, validated in-process under DNSSEC. What it finds is a
//! `DaneFact` for `policy::decide_published`; the matching of a chain is `policy::dane`.

use super::dns::{SecureError, SecureResolver};
use crate::policy::dane::{DaneFact, HostTlsa, TlsaAnswer};

/// At most this many MX hosts get a TLSA lookup: an MX set is rarely larger.
const MAX_HOSTS: usize = 10;

/// Section 2.2: DANE applies only where the MX records are secure; then per host, secured
/// usable TLSA records make it a DANE host. A domain without MX records is its own host
/// (section 2.2.1).
pub async fn lookup(resolver: &dyn SecureResolver, domain: &str) -> DaneFact {
    let hosts = match resolver.mx_secure(domain).await {
        Ok((hosts, true)) => hosts,
        Ok((_, false)) => {
            return DaneFact::Insecure {
                reason: format!("the MX records of {domain} are not DNSSEC-signed"),
            };
        }
        Err(SecureError::NotFound) => vec![(0, domain.to_string())],
        Err(SecureError::Bogus(why)) => return DaneFact::Bogus { reason: why },
        Err(SecureError::Temporary(why)) => {
            return DaneFact::Bogus {
                reason: format!("MX lookup failed: {why}"),
            };
        }
    };
    let mut hosts: Vec<(u16, String)> = hosts;
    hosts.sort();
    hosts.dedup_by(|a, b| a.1 == b.1);
    let mut out = Vec::new();
    for (_, host) in hosts.into_iter().take(MAX_HOSTS) {
        let tlsa = match resolver.tlsa(&format!("_25._tcp.{host}")).await {
            Ok((records, true)) => {
                let usable: Vec<_> = records.into_iter().filter(|r| r.usable()).collect();
                if usable.is_empty() {
                    TlsaAnswer::None
                } else {
                    TlsaAnswer::Records(usable)
                }
            }
            Ok((_, false)) | Err(SecureError::NotFound) => TlsaAnswer::None,
            Err(SecureError::Bogus(why)) => TlsaAnswer::Bogus(why),
            Err(SecureError::Temporary(why)) => TlsaAnswer::Bogus(format!("lookup failed: {why}")),
        };
        out.push(HostTlsa { host, tlsa });
    }
    DaneFact::Secure { hosts: out }
}

/// Hosts DANE rules out (section 2.2): all of them when the MX records failed validation,
/// those whose TLSA answer did, and under `dane-only` those without records. None left is a
/// deferral that says why.
pub(super) fn allowed_hosts(
    demand: Option<&crate::policy::DaneDemand>,
    hosts: Vec<(String, std::net::SocketAddr)>,
) -> Result<Vec<(String, std::net::SocketAddr)>, super::classify::Outcome> {
    use crate::proto::Enhanced;
    let Some(d) = demand else {
        return Ok(hosts);
    };
    let refuse = |why: String| super::classify::Outcome::temporary(Enhanced(4, 7, 5), why);
    if let Some(why) = &d.bogus_mx {
        return Err(refuse(format!(
            "DANE: MX records: {why}: not delivered until they validate (RFC 7672 section 2.1.1)"
        )));
    }
    let mut reasons = Vec::new();
    let kept: Vec<_> = hosts
        .into_iter()
        .filter(|(h, _)| {
            let h = h.to_ascii_lowercase();
            if let Some(why) = d.bogus.get(&h) {
                reasons.push(format!("{h}: TLSA {why}"));
                return false;
            }
            if d.only && !d.tlsa.contains_key(&h) {
                reasons.push(format!(
                    "{h}: no DNSSEC-secured TLSA records (level dane-only)"
                ));
                return false;
            }
            true
        })
        .collect();
    if kept.is_empty() {
        reasons.dedup();
        return Err(
            refuse(format!("DANE: no usable MX host: {}", reasons.join("; ")))
                .tls(super::classify::TlsFailure::Dane),
        );
    }
    Ok(kept)
}
