//! MTA-STS (RFC 8461) for delivery: the `_mta-sts` TXT record, the policy fetched over
//! HTTPS, and the cache that keeps policies across restarts (`data/mta-sts.json`). What it
//! finds is a `StsFact` for `policy::decide_published`; the parsing is `policy::mta_sts`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dns::{DnsError, Resolver};
use crate::policy::mta_sts::{self, StsFact, StsPolicy};

/// Section 3.2: senders may refuse larger policies; 64 KiB is the RFC's suggestion.
const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Section 3.3 asks for a timeout; the whole fetch (connect, TLS, request, body) fits in it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A record whose policy could not be fetched is not fetched again for each message.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(300);

/// A policy as fetched: the file's text (parsed again on load), its id and fetch time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cached {
    id: String,
    text: String,
    fetched_unix: u64,
    #[serde(skip)]
    policy: Option<StsPolicy>,
}

impl Cached {
    fn expires_unix(&self) -> u64 {
        self.fetched_unix
            .saturating_add(self.policy.as_ref().map_or(0, |p| p.max_age))
    }

    fn fact(&self, cached: bool) -> Option<StsFact> {
        Some(StsFact::Policy {
            id: self.id.clone(),
            policy: self.policy.clone()?,
            cached,
            expires_unix: self.expires_unix(),
        })
    }
}

/// The MTA-STS lookups of one postern: record, fetch, cache.
pub struct Sts {
    resolver: Arc<dyn Resolver>,
    /// Verifies the policy host's certificate (WebPKI: the Mozilla roots and extra roots).
    roots: Arc<rustls::RootCertStore>,
    /// Labs and tests: where a policy host is (`mta-sts.example.com` → `127.0.0.1:8443`).
    hosts: BTreeMap<String, String>,
    /// Where the cache is kept; `None` for a one-off look (`check-tls`).
    path: Option<PathBuf>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Domain → (record id, when, why) of the last failed fetch.
    failed: Mutex<HashMap<String, (String, Instant, String, bool)>>,
    /// One fetch at a time: a burst of messages to a new domain fetches its policy once.
    fetching: tokio::sync::Mutex<()>,
}

impl Sts {
    /// The cache at `path` as the last run left it; a damaged file is said and set aside
    /// (policies are fetched again), never a reason not to start.
    pub fn open(
        path: PathBuf,
        resolver: Arc<dyn Resolver>,
        roots: Arc<rustls::RootCertStore>,
        hosts: BTreeMap<String, String>,
    ) -> Sts {
        let cache = match std::fs::read(&path) {
            Ok(bytes) => parse_cache(&bytes).unwrap_or_else(|e| {
                tracing::warn!(target: "postern/mta-sts", "warning: {}: {e}; cached MTA-STS policies are fetched again", path.display());
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Sts {
            resolver,
            roots,
            hosts,
            path: Some(path),
            cache: Mutex::new(cache),
            failed: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// For one look at what domains publish now, fetched and not kept (`check-tls`).
    pub fn uncached(
        resolver: Arc<dyn Resolver>,
        roots: Arc<rustls::RootCertStore>,
        hosts: BTreeMap<String, String>,
    ) -> Sts {
        Sts {
            resolver,
            roots,
            hosts,
            path: None,
            cache: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// What `domain` publishes now, following section 5.1: a cached policy with the
    /// record's id holds until it expires; a new id is fetched, and the cached policy kept
    /// if the fetch fails; without a record a cached policy still holds until it expires.
    pub async fn lookup(&self, domain: &str) -> StsFact {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let record = match self.resolver.txt(&format!("_mta-sts.{domain}")).await {
            Ok(txt) => mta_sts::parse_record(&txt),
            Err(DnsError::NotFound) => Ok(None),
            Err(DnsError::Temporary(why)) => Err(format!("TXT lookup failed: {why}")),
        };
        let now = crate::fsutil::unix_now();
        let cached = self.cached(&domain, now);
        match (record, cached) {
            (Ok(Some(r)), Some(c)) if r.id == c.id => c.fact(true).unwrap_or(StsFact::NoPolicy),
            (Ok(Some(r)), cached) => self.refresh(&domain, &r.id, cached).await,
            (_, Some(c)) => c.fact(true).unwrap_or(StsFact::NoPolicy),
            (Ok(None), None) => StsFact::NoPolicy,
            (Err(reason), None) => StsFact::Unavailable {
                reason,
                invalid: true,
            },
        }
    }

    /// The cached policy of `domain` for a TLS-RPT report: its lines, and its `mx` patterns.
    pub fn policy_text(&self, domain: &str) -> Option<(Vec<String>, Vec<String>)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(domain)?;
        let lines = c
            .text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect();
        Some((lines, c.policy.as_ref()?.mx.clone()))
    }

    fn cached(&self, domain: &str, now: u64) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(domain)
            .filter(|c| c.expires_unix() > now)
            .cloned()
    }

    /// Fetch the policy for record `id`; on failure the still valid `cached` one stands.
    async fn refresh(&self, domain: &str, id: &str, cached: Option<Cached>) -> StsFact {
        let _one = self.fetching.lock().await;
        // Another delivery may have fetched it while this one waited.
        if let Some(c) = self.cached(domain, crate::fsutil::unix_now())
            && c.id == id
        {
            return c.fact(true).unwrap_or(StsFact::NoPolicy);
        }
        if let Some((reason, invalid)) = self.recently_failed(domain, id) {
            return fallback(cached, reason, invalid);
        }
        match self.fetch(domain).await {
            Ok((text, policy)) => self.store(domain, id, text, policy),
            Err((reason, invalid)) => {
                tracing::warn!(target: "postern/mta-sts", "warning: MTA-STS policy of {domain} (id {id}) not fetched: {reason}");
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        domain.to_string(),
                        (id.to_string(), Instant::now(), reason.clone(), invalid),
                    );
                fallback(cached, reason, invalid)
            }
        }
    }

    fn recently_failed(&self, domain: &str, id: &str) -> Option<(String, bool)> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .get(domain)
            .filter(|(fid, at, _, _)| fid == id && at.elapsed() < RETRY_FAILED_AFTER)
            .map(|(_, _, reason, invalid)| (reason.clone(), *invalid))
    }

    /// Keep a fetched policy, in memory and on disk (written whole, then renamed).
    fn store(&self, domain: &str, id: &str, text: String, policy: StsPolicy) -> StsFact {
        let entry = Cached {
            id: id.to_string(),
            text,
            fetched_unix: crate::fsutil::unix_now(),
            policy: Some(policy),
        };
        let fact = entry.fact(false).unwrap_or(StsFact::NoPolicy);
        let snapshot = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let now = crate::fsutil::unix_now();
            cache.retain(|_, c| c.expires_unix() > now);
            cache.insert(domain.to_string(), entry);
            serde_json::to_vec_pretty(&*cache)
        };
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(domain);
        if let Some(path) = &self.path {
            let written = snapshot
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::fsutil::replace_file(path, &bytes));
            if let Err(e) = written {
                tracing::warn!(target: "postern/mta-sts", "warning: {}: cannot save the MTA-STS cache: {e}", path.display());
            }
        }
        tracing::info!(target: "postern/mta-sts", "MTA-STS policy of {domain} fetched: id {id}");
        fact
    }

    /// `https://mta-sts.<domain>/.well-known/mta-sts.txt`, section 3.3: the certificate
    /// verified for the policy host, a 200 (redirects are not followed), at most 64 KiB,
    /// all within the timeout. Err: (why, whether the policy was there but invalid).
    async fn fetch(&self, domain: &str) -> Result<(String, StsPolicy), (String, bool)> {
        let host = format!("mta-sts.{domain}");
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.get(&host))
            .await
            .map_err(|_| (format!("https://{host}/ timed out"), false))?
            .map_err(|e| (e, false))?;
        let text = String::from_utf8(fetched)
            .map_err(|_| ("the policy is not UTF-8 text".to_string(), true))?;
        let policy =
            mta_sts::parse_policy(&text).map_err(|e| (format!("policy invalid: {e}"), true))?;
        Ok((text, policy))
    }

    async fn get(&self, host: &str) -> Result<Vec<u8>, String> {
        let addr = super::https::address(&self.hosts, self.resolver.as_ref(), host).await?;
        let req = super::https::Request {
            method: hyper::Method::GET,
            host,
            path: "/.well-known/mta-sts.txt",
            content_type: None,
            body: Vec::new(),
            limit: MAX_POLICY_BYTES,
        };
        let (status, body) = super::https::send(addr, req, &self.roots).await?;
        if status.is_redirection() {
            return Err(format!(
                "https://{host}/ answered {status}: redirects are not followed (RFC 8461 section 3.3)"
            ));
        }
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "https://{host}/.well-known/mta-sts.txt answered {status}"
            ));
        }
        Ok(body)
    }
}

/// A failed refresh: the cached policy while it holds, else none, saying why.
fn fallback(cached: Option<Cached>, reason: String, invalid: bool) -> StsFact {
    cached
        .and_then(|c| c.fact(true))
        .unwrap_or(StsFact::Unavailable { reason, invalid })
}

fn parse_cache(bytes: &[u8]) -> Result<HashMap<String, Cached>, String> {
    let mut cache: HashMap<String, Cached> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    for (domain, c) in cache.iter_mut() {
        c.policy =
            Some(mta_sts::parse_policy(&c.text).map_err(|e| format!("policy of {domain}: {e}"))?);
    }
    Ok(cache)
}

/// Section 4.1: under `enforce` only the MX hosts the policy names get the mail; none left
/// is a deferral that names the hosts and the patterns.
pub(super) fn allowed_hosts(
    demand: Option<&crate::policy::StsDemand>,
    hosts: Vec<(String, SocketAddr)>,
) -> Result<Vec<(String, SocketAddr)>, super::classify::Outcome> {
    let Some(d) = demand.filter(|d| d.enforce) else {
        return Ok(hosts);
    };
    let names = |h: &str| d.mx.iter().any(|p| mta_sts::mx_matches(p, h));
    let (kept, refused): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|(h, _)| names(h));
    for (host, _) in refused.iter().take(1) {
        tracing::info!(target: "postern/smtp", "MX host {host} skipped: not in the MTA-STS policy of {} (mx: {})", d.domain, d.mx.join(", "));
    }
    if kept.is_empty() {
        let mut listed: Vec<&str> = refused.iter().map(|(h, _)| h.as_str()).collect();
        listed.dedup();
        return Err(super::classify::Outcome::temporary(
            crate::proto::Enhanced(4, 7, 5),
            format!(
                "MX host {} does not match the MTA-STS policy of {} (mx: {}): not delivered (RFC 8461 section 4.1)",
                listed.join(", "),
                d.domain,
                d.mx.join(", ")
            ),
        )
        .tls(super::classify::TlsFailure::MxMismatch));
    }
    Ok(kept)
}

/// A TLS failure under an enforced policy says whose demand it failed.
pub(super) fn attribute(
    demand: Option<&crate::policy::StsDemand>,
    outcome: &mut super::classify::Outcome,
) {
    if let Some(d) = demand.filter(|d| d.enforce)
        && outcome
            .tls_failure
            .is_some_and(|f| f != super::classify::TlsFailure::MxMismatch)
    {
        outcome.reason = format!(
            "{} (MTA-STS policy of {}, mode enforce)",
            outcome.reason, d.domain
        );
    }
}

/// What one attempt's session counts for in the domain's TLS-RPT report (RFC 8460 section
/// 4.3): a TLS session under the policy that met it is a success; a failure has its type.
/// Attempts that never reached TLS for other reasons (no address, connection refused) are
/// not sessions and not counted.
pub(super) struct Session<'a> {
    pub relay: &'a str,
    pub outcome: &'a super::classify::Outcome,
    pub tls: bool,
    pub starttls_offered: bool,
    pub cert_problem: Option<crate::tls::CertProblem>,
}

pub(super) fn rpt_outcome(
    domain: &str,
    fact: Option<&StsFact>,
    decision: &crate::policy::Decision,
    s: &Session<'_>,
) -> Option<crate::events::tls_rpt::RptOutcome> {
    use crate::events::tls_rpt::{PolicyType, ResultType, RptOutcome};
    let host = s.relay.split('[').next().filter(|h| *h != "none");
    let ip = s
        .relay
        .split_once('[')
        .and_then(|(_, r)| r.split(']').next());
    let outcome = |kind, policy_domain, result_type| RptOutcome {
        policy_type: kind,
        policy_domain,
        result_type,
        receiving_mx_hostname: host.map(str::to_string),
        receiving_ip: ip.map(str::to_string),
    };
    // A DANE host's session counts for the domain's TLSA policy (RFC 8460 section 4.4).
    if let Some(d) = &decision.dane {
        let dane_host = host.is_some_and(|h| d.tlsa.contains_key(&h.to_ascii_lowercase()));
        if d.bogus_mx.is_some() {
            let r = Some(ResultType::DnssecInvalid);
            return Some(outcome(PolicyType::Tlsa, domain.to_string(), r));
        }
        if dane_host || host.is_none() {
            let r = session_result(None, host, s)?;
            return Some(outcome(PolicyType::Tlsa, domain.to_string(), r));
        }
    }
    let demand = decision.sts.as_ref();
    let (kind, policy_domain) = match (fact?, demand) {
        (_, Some(d)) => (PolicyType::Sts, d.domain.clone()),
        (StsFact::Unavailable { .. }, None) => (PolicyType::Sts, domain.to_string()),
        (_, None) => (PolicyType::NoPolicyFound, domain.to_string()),
    };
    let result = match fact? {
        StsFact::Unavailable { invalid: true, .. } => Some(ResultType::StsPolicyInvalid),
        StsFact::Unavailable { .. } => Some(ResultType::StsPolicyFetchError),
        _ => session_result(demand, host, s)?,
    };
    Some(outcome(kind, policy_domain, result))
}

/// `Some(None)`: a success; `None`: not a TLS session at all.
fn session_result(
    demand: Option<&crate::policy::StsDemand>,
    host: Option<&str>,
    s: &Session<'_>,
) -> Option<Option<crate::events::tls_rpt::ResultType>> {
    use super::classify::TlsFailure;
    use crate::events::tls_rpt::ResultType;
    use crate::tls::CertProblem;
    let cert = |p| match p {
        CertProblem::HostMismatch => ResultType::CertificateHostMismatch,
        CertProblem::Expired => ResultType::CertificateExpired,
        CertProblem::NotTrusted => ResultType::CertificateNotTrusted,
        CertProblem::Other => ResultType::ValidationFailure,
    };
    let failed = match s.outcome.tls_failure {
        Some(TlsFailure::NoStarttls) => Some(ResultType::StarttlsNotSupported),
        Some(TlsFailure::Certificate(p)) => Some(cert(p)),
        Some(TlsFailure::Handshake | TlsFailure::MxMismatch) => Some(ResultType::ValidationFailure),
        Some(TlsFailure::Dane) => Some(ResultType::DaneRequired),
        None => None,
    };
    if failed.is_some() {
        return Some(failed);
    }
    // Delivered or refused inside a session: what it would have failed under `testing`.
    let outside = demand
        .zip(host)
        .is_some_and(|(d, h)| !d.mx.iter().any(|p| mta_sts::mx_matches(p, h)));
    if outside {
        return Some(Some(ResultType::ValidationFailure));
    }
    if !s.tls {
        // Plaintext is a failure only where STARTTLS was not on offer at a reached host.
        let reached = s.outcome.remote_reply.is_some()
            || s.outcome.class == super::classify::Class::Delivered;
        let plaintext = !s.starttls_offered && host.is_some() && reached;
        return plaintext.then_some(Some(ResultType::StarttlsNotSupported));
    }
    Some(s.cert_problem.filter(|_| demand.is_some()).map(cert))
}
