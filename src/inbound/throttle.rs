//! Password-guessing throttle shared by SMTP AUTH and the admin sign-in (and its password
//! change). Modelled on Postfix's anvil, which rate-limits per client address and never
//! locks an account for everyone (OWASP's advice against hard lock-outs says the same):
//!
//! - Attempts from one address take **turns** (`turn`): one is checked at a time, so a
//!   client cannot fit more guesses into a window by sending them at once, and a client
//!   that logs in on many connections at once waits a little instead of being refused.
//! - An attempt is counted when its turn comes, **before** its password is checked (Postfix's
//!   anvil counts on arrival); a success clears the address's count.
//! - Past `failure_limit` attempts in `window`, the **address** is refused until the window
//!   ends; a success from it clears its count.
//! - Failures for a **user name** slow only addresses that have failed themselves (a delay
//!   before the check that grows with the user's failures): a stranger's guesses never stop
//!   the right password from an address that has not failed.
//! - Each failure is answered later than the last from that address (`step` more, at most
//!   `max_delay`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One address's turn: while it is held, no other attempt from that address is counted or
/// checked. Dropping it ends the turn.
pub struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

#[derive(Debug, Clone)]
pub struct ThrottleLimits {
    /// Attempts from one address within `window` before it is refused.
    pub failure_limit: u32,
    pub window: Duration,
    /// Added to the delay with each failure, up to `max_delay`.
    pub step: Duration,
    pub max_delay: Duration,
}

/// What an arriving attempt may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Check the password, after `delay` (the user's failures, for an address that failed).
    Check { delay: Duration },
    /// The address is over its limit: refuse without a check, for `retry_after` more.
    Refused { retry_after: Duration },
}

/// What a failed check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Hold the reply this long.
    pub delay: Duration,
    /// This failure used the address's last attempt: log the lock-out once.
    pub locks: bool,
}

struct Run {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Run {
    fn new(now: Instant) -> Run {
        Run {
            count: 0,
            first: now,
            locked_until: None,
        }
    }

    /// A run older than the window (and no lock in force) starts again.
    fn refresh(&mut self, now: Instant, window: Duration) {
        if now.duration_since(self.first) >= window && self.locked_until.is_none_or(|t| t <= now) {
            *self = Run::new(now);
        }
    }
}

#[derive(Default)]
struct State {
    addrs: HashMap<IpAddr, Run>,
    users: HashMap<String, Run>,
}

/// Entries kept before old ones are swept: a bound on memory whatever a client sends.
const MAX_ENTRIES: usize = 100_000;

pub struct Throttle {
    limits: ThrottleLimits,
    state: Mutex<State>,
    turns: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            limits,
            state: Mutex::new(State::default()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &ThrottleLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters only: a poisoned map is still a usable map.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for `ip`'s turn: attempts from one address are counted and checked one at a time.
    pub async fn turn(&self, ip: IpAddr) -> Turn {
        let gate = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            if turns.len() >= MAX_ENTRIES {
                // Only the map holds an idle gate.
                turns.retain(|_, g| Arc::strong_count(g) > 1);
            }
            turns.entry(ip).or_default().clone()
        };
        Turn {
            _guard: gate.lock_owned().await,
        }
    }

    /// An attempt for `user` from `ip`, in its turn: counted now, whatever its password.
    pub fn arrive(&self, ip: IpAddr, user: &str) -> Attempt {
        self.arrive_at(ip, user, Instant::now())
    }

    fn arrive_at(&self, ip: IpAddr, user: &str, now: Instant) -> Attempt {
        let limits = &self.limits;
        let mut state = self.lock();
        state.sweep(now, limits.window);
        let addr = state.addrs.entry(ip).or_insert_with(|| Run::new(now));
        addr.refresh(now, limits.window);
        addr.count = addr.count.saturating_add(1);
        if let Some(until) = addr.locked_until.filter(|t| *t > now) {
            return Attempt::Refused {
                retry_after: until - now,
            };
        }
        if addr.count > limits.failure_limit {
            addr.locked_until = Some(now + limits.window);
            return Attempt::Refused {
                retry_after: limits.window,
            };
        }
        let failed_before = addr.count > 1;
        let user_failures = match state.users.get_mut(user) {
            Some(u) => {
                u.refresh(now, limits.window);
                u.count
            }
            None => 0,
        };
        let delay = if failed_before {
            self.delay(user_failures)
        } else {
            Duration::ZERO
        };
        Attempt::Check { delay }
    }

    /// The check failed: the address's arrival stays counted, the user's failures grow.
    pub fn failed(&self, ip: IpAddr, user: &str) -> Failure {
        let now = Instant::now();
        let limits = &self.limits;
        let mut state = self.lock();
        let user_run = state
            .users
            .entry(user.to_string())
            .or_insert_with(|| Run::new(now));
        user_run.refresh(now, limits.window);
        user_run.count = user_run.count.saturating_add(1);
        let count = state.addrs.get(&ip).map_or(1, |a| a.count);
        Failure {
            delay: self.delay(count),
            locks: count == limits.failure_limit,
        }
    }

    /// The right password: the address starts afresh. The user's failures stay; they slow
    /// only addresses that fail.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().addrs.remove(&ip);
    }

    /// Forget every count (`postern admin reset-password`).
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    fn delay(&self, failures: u32) -> Duration {
        (self.limits.step * failures).min(self.limits.max_delay)
    }
}

impl State {
    fn sweep(&mut self, now: Instant, window: Duration) {
        let live = |r: &Run| {
            now.duration_since(r.first) < window || r.locked_until.is_some_and(|t| t > now)
        };
        if self.addrs.len() >= MAX_ENTRIES {
            self.addrs.retain(|_, r| live(r));
        }
        if self.users.len() >= MAX_ENTRIES {
            self.users.retain(|_, r| live(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(limit: u32) -> Throttle {
        Throttle::new(ThrottleLimits {
            failure_limit: limit,
            window: Duration::from_secs(60),
            step: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn attempts_count_on_arrival_so_concurrency_gains_nothing() {
        let t = throttle(5);
        // 60 attempts arrive before any check ends: five are checked, 55 refused.
        let checked = (0..60)
            .filter(|_| matches!(t.arrive(ip(1), "admin"), Attempt::Check { .. }))
            .count();
        assert_eq!(checked, 5);
    }

    #[test]
    fn a_strangers_failures_never_refuse_another_address() {
        let t = throttle(5);
        for _ in 0..5 {
            assert!(matches!(t.arrive(ip(1), "admin"), Attempt::Check { .. }));
            t.failed(ip(1), "admin");
        }
        assert!(matches!(t.arrive(ip(1), "admin"), Attempt::Refused { .. }));
        // The real admin, from an address that has not failed: no delay, no refusal.
        assert_eq!(
            t.arrive(ip(2), "admin"),
            Attempt::Check {
                delay: Duration::ZERO
            }
        );
        t.succeeded(ip(2));
        // An address that failed once is slowed by the user's failures.
        t.arrive(ip(3), "admin");
        t.failed(ip(3), "admin");
        assert_eq!(
            t.arrive(ip(3), "admin"),
            Attempt::Check {
                delay: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn delays_grow_and_stay_bounded_and_the_window_ends_the_lock() {
        let t = throttle(20);
        let start = Instant::now();
        let mut last = Duration::ZERO;
        for n in 1..=20 {
            t.arrive_at(ip(1), "u", start);
            let f = t.failed(ip(1), "u");
            assert!(f.delay >= last && f.delay <= Duration::from_secs(5));
            assert_eq!(f.locks, n == 20);
            last = f.delay;
        }
        assert!(matches!(
            t.arrive_at(ip(1), "u", start),
            Attempt::Refused { .. }
        ));
        let later = start + Duration::from_secs(61);
        assert!(matches!(
            t.arrive_at(ip(1), "u", later),
            Attempt::Check { .. }
        ));
    }

    #[test]
    fn success_clears_the_address() {
        let t = throttle(3);
        for _ in 0..2 {
            t.arrive(ip(1), "alice");
            t.failed(ip(1), "alice");
        }
        t.arrive(ip(1), "alice");
        t.succeeded(ip(1));
        for _ in 0..3 {
            assert!(matches!(t.arrive(ip(1), "alice"), Attempt::Check { .. }));
        }
    }
}
