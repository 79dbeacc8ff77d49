//! Recipient verification by call-ahead: the recipient's next hops are asked (as Postfix's
//! address verification does) and their answer kept for a while.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::classify::{self, Class, Outcome};
use super::grouping::recipient_domain;
use super::next_hop::next_hops;
use super::{Engine, client};
use crate::recipient::Verdict;

/// How long call-ahead answers are kept: a mailbox that exists stays for a week, one that
/// does not is asked again after an hour (a new employee is not refused for days; Postfix
/// keeps negatives 3 days but refreshes them after 3 hours). Deferrals are not kept.
const VERIFIED_FOR: Duration = Duration::from_secs(7 * 86_400);
const REFUSED_FOR: Duration = Duration::from_secs(3_600);

impl Engine {
    /// Ask the recipient's next hops (as delivery would find them) whether they take it,
    /// unless an answer kept from an earlier question still holds.
    async fn call_ahead(&self, rcpt: &str) -> Verdict {
        let key = rcpt.to_ascii_lowercase();
        let now = Instant::now();
        if let Some((verdict, until)) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && *until > now
        {
            return verdict.clone();
        }
        let snapshot = self.settings.current();
        let domain = recipient_domain(rcpt);
        let hosts = match next_hops(&self.cfg, self.resolver.as_deref(), &snapshot, &domain).await {
            Ok(h) => h,
            // No next hop to ask: unverified, neither kept nor logged.
            Err(outcome) => return Verdict::Unverified(outcome.reason),
        };
        let verdict = self.ask(rcpt, &domain, &hosts).await;
        self.keep(key, &verdict, now);
        tracing::info!(target: "postern/verify", "<{rcpt}>: {}", match &verdict {
            Verdict::Exists => "deliverable".to_string(),
            Verdict::Unknown(why) => format!("undeliverable: {why}"),
            Verdict::Unverified(why) => format!("unverified: {why}"),
        });
        verdict
    }

    /// The next hops in order, until one answers for the recipient: only trouble (no
    /// connection, a deferral) sends the question to the next host.
    async fn ask(&self, rcpt: &str, domain: &str, hosts: &[(String, SocketAddr)]) -> Verdict {
        let timeout = Duration::from_secs(self.cfg.connect_timeout_secs.min(30));
        let mut verdict = Verdict::Unverified(format!("no next hop for {domain}"));
        for (host, addr) in hosts {
            let name = format!("{host}[{}]", addr.ip());
            verdict =
                match client::probe_recipient(host, *addr, &self.helo, rcpt, timeout, &self.tls)
                    .await
                {
                    Err(why) => Verdict::Unverified(why),
                    Ok(reply) => {
                        let o = Outcome::from_reply(&reply, &name, classify::Stage::Rcpt);
                        match o.class {
                            Class::Delivered => Verdict::Exists,
                            Class::Permanent => Verdict::Unknown(o.reason),
                            Class::Temporary => Verdict::Unverified(o.reason),
                        }
                    }
                };
            if !matches!(verdict, Verdict::Unverified(_)) {
                break; // an answer; only trouble sends us to the next host
            }
        }
        verdict
    }

    /// Keep an answer for as long as it holds (deferrals not at all); the cache is bounded
    /// by forgetting expired answers when it is full.
    fn keep(&self, key: String, verdict: &Verdict, now: Instant) {
        let keep = match verdict {
            Verdict::Exists => VERIFIED_FOR,
            Verdict::Unknown(_) => REFUSED_FOR,
            Verdict::Unverified(_) => return,
        };
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 100_000 {
            cache.retain(|_, (_, until)| *until > now);
        }
        cache.insert(key, (verdict.clone(), now + keep));
    }
}

impl crate::recipient::RecipientVerifier for Engine {
    fn verify<'a>(
        &'a self,
        rcpt: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send + 'a>> {
        Box::pin(self.call_ahead(rcpt))
    }
}
