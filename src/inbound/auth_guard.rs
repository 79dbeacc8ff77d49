//! What stands between SMTP AUTH and a password-guessing client: password checks run in a
//! small pool (argon2 takes memory; an unbounded number at once took gigabytes), each
//! failure delays the next reply a little more, and past a limit the client address or the
//! user name is locked out for a while, logged once (Postfix's anvil and
//! smtpd_client_auth_rate_limit play this part there).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Failures counted against a client address and against a user name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(IpAddr),
    User(String),
}

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Failures (per address, per user) within `lockout` before the lockout starts.
    pub failure_limit: u32,
    pub lockout: Duration,
    /// Added to the reply delay with each failure, up to `MAX_DELAY`.
    pub failure_delay: Duration,
}

const MAX_DELAY: Duration = Duration::from_secs(5);

/// A password check: the password, the stored hash (none: unknown user), the answer.
type Check = (String, Option<String>, oneshot::Sender<bool>);

pub struct AuthGuard {
    /// Password checks run on one thread per core, no more: a bound on the checks at once
    /// and on the memory they keep (each thread's allocator keeps its last 8 MiB).
    hashing: std::sync::mpsc::Sender<Check>,
    failures: Mutex<HashMap<Key, Failures>>,
    limits: AuthLimits,
}

impl AuthGuard {
    pub fn new(limits: AuthLimits) -> AuthGuard {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (tx, rx) = std::sync::mpsc::channel::<Check>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for n in 0..cores {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("auth-hash-{n}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((password, hash, answer)) = next else {
                            return; // the guard is gone
                        };
                        let _ = answer.send(check(&password, hash.as_deref()));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(target: "postern/smtpd", "error: cannot start a password-check thread: {e}");
            }
        }
        AuthGuard {
            hashing: tx,
            failures: Mutex::new(HashMap::new()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        // Counters only: a poisoned map is still a usable map.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client or the user is locked out now.
    pub fn locked(&self, ip: IpAddr, user: &str) -> bool {
        let now = Instant::now();
        let map = self.lock();
        [Key::Client(ip), Key::User(user.to_string())]
            .iter()
            .any(|k| {
                map.get(k)
                    .and_then(|f| f.locked_until)
                    .is_some_and(|t| t > now)
            })
    }

    /// Check `password` against `hash` (or against a dummy of the same cost when the user
    /// is unknown, so timing does not tell which users exist), in the bounded pool.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let (answer, wait) = oneshot::channel();
        if self.hashing.send((password, hash, answer)).is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }

    /// A failure: how long to hold the reply. Starts a lockout (logged once, here) when
    /// the address or the user reaches the limit.
    pub fn failed(&self, ip: IpAddr, user: &str, client: &str) -> Duration {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= 100_000 {
            map.retain(|_, f| now.duration_since(f.first) < self.limits.lockout);
        }
        let mut worst = 0;
        for key in [Key::Client(ip), Key::User(user.to_string())] {
            let f = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                first: now,
                locked_until: None,
            });
            if now.duration_since(f.first) >= self.limits.lockout
                && f.locked_until.is_none_or(|t| t <= now)
            {
                // An old run of failures: start counting again.
                (f.count, f.first, f.locked_until) = (0, now, None);
            }
            f.count += 1;
            worst = worst.max(f.count);
            if f.count == self.limits.failure_limit {
                f.locked_until = Some(now + self.limits.lockout);
                let what = match &key {
                    Key::Client(_) => format!("client {client}"),
                    Key::User(u) => format!("sasl_username={u}"),
                };
                tracing::warn!(target: "postern/smtpd", "warning: {what}: SASL authentication locked out for {}s after {} failures", self.limits.lockout.as_secs(), f.count);
            }
        }
        (self.limits.failure_delay * worst).min(MAX_DELAY)
    }

    /// A success clears the client's and the user's failures.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        let mut map = self.lock();
        map.remove(&Key::Client(ip));
        map.remove(&Key::User(user.to_string()));
    }
}

fn check(password: &str, hash: Option<&str>) -> bool {
    match hash {
        Some(h) => crate::settings::verify_password(password, h),
        None => {
            let _ = crate::settings::verify_password(password, dummy_hash());
            false
        }
    }
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use crate::settings::PasswordHasher;
        crate::settings::Argon2Hasher
            .hash("postern timing equaliser")
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: u32) -> AuthGuard {
        AuthGuard::new(AuthLimits {
            failure_limit: limit,
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(500),
        })
    }

    #[test]
    fn delay_grows_then_locks_the_address_and_the_user() {
        let g = guard(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!g.locked(ip, "alice"));
        assert_eq!(g.failed(ip, "alice", "c"), Duration::from_millis(500));
        assert_eq!(g.failed(ip, "bob", "c"), Duration::from_millis(1000));
        assert!(!g.locked(ip, "carol"));
        g.failed(ip, "carol", "c");
        // The address reached 3; alice has 1, but the address is locked whatever the user.
        assert!(g.locked(ip, "alice"));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!g.locked(other, "alice"));
        // The user name reaches its limit from several addresses.
        for n in 3..5 {
            g.failed(format!("198.51.100.{n}").parse().unwrap(), "alice", "c");
        }
        assert!(g.locked(other, "alice"));
        // Delays stay bounded.
        for _ in 0..20 {
            assert!(g.failed(other, "dave", "c") <= MAX_DELAY);
        }
    }

    #[test]
    fn success_clears_the_counts() {
        let g = guard(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        g.failed(ip, "alice", "c");
        g.failed(ip, "alice", "c");
        g.succeeded(ip, "alice");
        g.failed(ip, "alice", "c");
        g.failed(ip, "alice", "c");
        assert!(!g.locked(ip, "alice"));
    }
}
