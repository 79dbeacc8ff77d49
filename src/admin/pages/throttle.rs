//! Sign-in throttling: after `LIMIT` failures for one user name or one client address within
//! `WINDOW`, both are refused for `WINDOW`, with a message saying so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const LIMIT: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: HashMap<Key, Vec<Instant>>,
    locked: HashMap<Key, Instant>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

impl Throttle {
    /// Minutes left when `user` or `addr` is locked out.
    pub fn locked(&self, user: &str, addr: IpAddr) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.locked.retain(|_, until| *until > now);
        [Key::User(user.to_string()), Key::Addr(addr)]
            .iter()
            .filter_map(|k| state.locked.get(k))
            .max()
            .map(|until| until.duration_since(now).as_secs().div_ceil(60).max(1))
    }

    /// Count a failure; true when it locks the user or the address out.
    pub fn failed(&self, user: &str, addr: IpAddr) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut locks = false;
        for key in [Key::User(user.to_string()), Key::Addr(addr)] {
            let list = state.failures.entry(key.clone()).or_default();
            list.retain(|t| now.duration_since(*t) < WINDOW);
            list.push(now);
            if list.len() >= LIMIT {
                list.clear();
                state.locked.insert(key, now + WINDOW);
                locks = true;
            }
        }
        // Bounded: entries older than the window are dropped as they are met.
        if state.failures.len() > 100_000 {
            state
                .failures
                .retain(|_, l| l.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        locks
    }

    pub fn succeeded(&self, user: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failures.remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_user_and_the_address() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..LIMIT - 1 {
            assert!(!t.failed("admin", a));
        }
        assert_eq!(t.locked("admin", a), None);
        assert!(t.failed("admin", a));
        assert_eq!(t.locked("admin", b), Some(15), "the user, from anywhere");
        assert_eq!(t.locked("other", a), Some(15), "the address, for any user");
        assert_eq!(t.locked("other", b), None);
    }
}
