//! What stands between SMTP AUTH and a password-guessing client: password checks run in a
//! small pool (argon2 takes memory; an unbounded number at once took gigabytes), and every
//! attempt goes through the client-address throttle of `throttle.rs` (Postfix's anvil and
//! smtpd_client_auth_rate_limit play this part there).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::throttle::{Attempt, Failure, Throttle, ThrottleLimits, Turn};

#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Attempts from one address within `lockout` before it is refused for `lockout`.
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
    throttle: Throttle,
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
            throttle: Throttle::new(ThrottleLimits {
                failure_limit: limits.failure_limit,
                window: limits.lockout,
                step: limits.failure_delay,
                max_delay: MAX_DELAY,
            }),
        }
    }

    /// Wait for `ip`'s turn: one attempt from an address at a time.
    pub async fn turn(&self, ip: IpAddr) -> Turn {
        self.throttle.turn(ip).await
    }

    /// An attempt from `ip` for `user`, in its turn: counted before its password is checked.
    pub fn arrive(&self, ip: IpAddr, user: &str) -> Attempt {
        self.throttle.arrive(ip, user)
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

    /// A failed check: how long to hold the reply, and whether the address is now out of
    /// attempts (logged once, here).
    pub fn failed(&self, ip: IpAddr, user: &str, client: &str) -> Duration {
        let Failure { delay, locks } = self.throttle.failed(ip, user);
        if locks {
            tracing::warn!(target: "postern/smtpd", "warning: {client}: SASL authentication locked out for {}s after {} failures", self.lockout_secs(), self.failure_limit());
        }
        delay
    }

    fn lockout_secs(&self) -> u64 {
        self.throttle.limits().window.as_secs()
    }

    fn failure_limit(&self) -> u32 {
        self.throttle.limits().failure_limit
    }

    /// A success clears the client address's count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.throttle.succeeded(ip);
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

    #[tokio::test]
    async fn the_pool_checks_and_an_unknown_user_fails() {
        use crate::settings::PasswordHasher;
        let g = AuthGuard::new(AuthLimits {
            failure_limit: 3,
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(500),
        });
        let hash = crate::settings::Argon2Hasher
            .hash("right one here")
            .unwrap();
        assert!(g.verify("right one here".into(), Some(hash.clone())).await);
        assert!(!g.verify("wrong".into(), Some(hash)).await);
        assert!(!g.verify("anything".into(), None).await);
    }
}
