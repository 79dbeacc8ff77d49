//! TLS choice per host: which hosts the published policies and REQUIRETLS leave, and what
//! level and certificate check each host is held to.

use std::net::SocketAddr;

use super::classify::Outcome;
use super::{dane, sts};
use crate::policy::{self, Decision, Level};
use crate::proto::Enhanced;
use crate::spool::QueueEntry;

/// The hosts the published policies and REQUIRETLS leave, or why there are none.
pub(super) fn usable_hosts(
    entry: &QueueEntry,
    decision: &Decision,
    domain: &str,
    hosts: Vec<(String, SocketAddr)>,
) -> Result<Vec<(String, SocketAddr)>, Outcome> {
    let hosts = sts::allowed_hosts(decision.sts.as_ref(), hosts)?;
    let hosts = dane::allowed_hosts(decision.dane.as_ref(), hosts)?;
    if let Some(outcome) = requiretls_unmet(entry, decision, domain) {
        return Err(outcome);
    }
    // Under opportunistic DANE a host without TLSA records gets the other sources' level:
    // a REQUIRETLS message goes there only if that level verifies too.
    let verified = |h: &str| tls_for(decision, h).0 >= Level::Verify;
    if entry.envelope.requiretls && !hosts.iter().any(|(h, _)| verified(h)) {
        return Err(Outcome::permanent(
            Enhanced(5, 7, 30),
            format!(
                "REQUIRETLS support required: no MX host of {domain} is verified under a policy"
            ),
        ));
    }
    Ok(match entry.envelope.requiretls {
        true => hosts.into_iter().filter(|(h, _)| verified(h)).collect(),
        false => hosts,
    })
}

/// RFC 8689 section 4.2.1: a REQUIRETLS message goes only where the certificate is checked
/// under a policy (MTA-STS `enforce`, or a `verify`, `secure` or `fingerprint` row), else
/// it is returned at once: no retry would change the policy.
fn requiretls_unmet(entry: &QueueEntry, decision: &Decision, domain: &str) -> Option<Outcome> {
    (entry.envelope.requiretls && decision.level < Level::Verify).then(|| {
        Outcome::permanent(
            Enhanced(5, 7, 30),
            format!(
                "REQUIRETLS support required: no verified TLS policy for {domain} (level {} from {}; needs MTA-STS enforce or a verify, secure or fingerprint row)",
                decision.level, decision.source
            ),
        )
    })
}

/// The level and certificate check for one host. Under DANE (RFC 7672 section 2.2) a host
/// with secured TLSA records is authenticated by them; the others get the level the other
/// sources decide (`dane-only` hosts without records were left out before).
pub(super) fn tls_for(decision: &Decision, host: &str) -> (Level, Option<crate::tls::CertCheck>) {
    use crate::tls::CertCheck;
    let dane = |records: Vec<policy::dane::Tlsa>| {
        let names = vec![host.to_string()];
        Some(CertCheck::Dane { records, names })
    };
    match &decision.dane {
        Some(d) => match d.tlsa.get(&host.to_ascii_lowercase()) {
            Some(records) => (Level::Dane, dane(records.clone())),
            None if d.only => (Level::DaneOnly, dane(Vec::new())),
            None => (d.otherwise, cert_check(decision, d.otherwise, host)),
        },
        // DANE asked for, but nothing could be looked up: `dane` is opportunistic,
        // `dane-only` fails (no records to authenticate by).
        None if decision.level == Level::Dane => {
            (Level::May, cert_check(decision, Level::May, host))
        }
        None if decision.level == Level::DaneOnly => (Level::DaneOnly, dane(Vec::new())),
        None => (decision.level, cert_check(decision, decision.level, host)),
    }
}

/// What the level demands of the certificate: `verify` the MX host name, `secure` the
/// recipient domain or the row's names, `fingerprint` the row's pins.
fn cert_check(decision: &Decision, level: Level, host: &str) -> Option<crate::tls::CertCheck> {
    use crate::tls::CertCheck;
    match level {
        Level::Verify => Some(CertCheck::Names(vec![host.to_string()])),
        Level::Secure => Some(CertCheck::Names(decision.match_names.clone())),
        Level::Fingerprint => Some(CertCheck::Pins(decision.fingerprints.clone())),
        // An MTA-STS policy in `testing` (or monitored): checked as `verify` would, not
        // enforced, for TLS-RPT (RFC 8461 section 5).
        Level::May | Level::Encrypt if decision.sts.is_some() => {
            Some(CertCheck::Observe(vec![host.to_string()]))
        }
        Level::None | Level::May | Level::Encrypt => None,
        // Handled by `tls_for`, which knows the host's records.
        Level::Dane | Level::DaneOnly => None,
    }
}
