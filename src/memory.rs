//! Giving memory back to the system after a crowd of sessions has gone.
//!
//! glibc's allocator keeps freed memory in its per-thread arenas; after 10,000 sessions
//! closed, postern's RSS stayed where it was at the peak (issue 17 measured 15 MiB idle,
//! 100 MiB held, 100 MiB after close). `malloc_trim(0)` returns the free pages of every
//! arena. It is called off the async workers, only once the number of sessions has fallen
//! to half of a peak of at least `MIN_PEAK`, so ordinary traffic never pays for it.

/// Peaks below this are not worth a trim.
const MIN_PEAK: usize = 1024;

#[derive(Default)]
pub struct Trim {
    /// The most sessions since the last trim.
    peak: usize,
    /// A crowd of at least `MIN_PEAK` came since the sessions were last this few: one more
    /// trim when they are almost all gone, for the memory of the last thousand.
    crowd: bool,
}

impl Trim {
    pub fn started(&mut self, sessions: usize) {
        self.peak = self.peak.max(sessions);
        self.crowd |= self.peak >= MIN_PEAK;
    }

    pub fn ended(&mut self, sessions: usize) {
        let halved = self.peak >= MIN_PEAK && sessions <= self.peak / 2;
        let gone = self.crowd && sessions <= MIN_PEAK / 8;
        if halved || gone {
            self.peak = sessions;
            self.crowd = !gone;
            tokio::task::spawn_blocking(release_free_memory);
        }
    }
}

/// Return free heap pages to the system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trims_only_after_a_large_crowd_has_halved() {
        let mut t = Trim::default();
        t.started(MIN_PEAK - 1);
        t.ended(0);
        assert_eq!(t.peak, MIN_PEAK - 1, "a small crowd: no trim, peak kept");
        t.started(4000);
        t.ended(2001);
        assert_eq!(t.peak, 4000);
        t.ended(2000);
        assert_eq!(
            t.peak, 2000,
            "halved: trimmed, the peak starts again from here"
        );
        t.ended(1000);
        assert_eq!(t.peak, 1000);
        t.ended(200);
        assert!(t.crowd, "not yet almost gone");
        t.ended(MIN_PEAK / 8);
        assert!(!t.crowd, "almost gone: the last trim");
        t.ended(0);
        assert_eq!(t.peak, MIN_PEAK / 8, "no trim after it");
    }
}
