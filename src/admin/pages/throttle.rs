//! Sign-in throttling for the admin page: the credential throttle SMTP AUTH uses
//! (`inbound::Throttle`: counted on arrival, keyed on the client address, a user's failures
//! only slow addresses that fail too), with the page's limits. The password change goes
//! through it as well: a stolen session guesses no faster than a stranger.

use std::time::Duration;

use crate::inbound::{Throttle, ThrottleLimits};

/// Attempts from one client address within `WINDOW` before it is refused for `WINDOW`.
pub const LIMIT: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

pub fn admin_throttle() -> Throttle {
    Throttle::new(ThrottleLimits {
        failure_limit: LIMIT,
        window: WINDOW,
        step: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
    })
}

/// The refusal's words, in whole minutes (at least one).
pub fn refusal(retry_after: Duration) -> String {
    let minutes = retry_after.as_secs().div_ceil(60).max(1);
    format!("Too many failed attempts from your address: try again in {minutes} minute(s).")
}
