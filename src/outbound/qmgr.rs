//! The queue manager (Postfix's qmgr): when each message is due, how many attempts run at
//! once overall and per destination, and the retry schedule after a failure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::Engine;
use super::attempt::attempt;
use super::grouping::destination_domains;
use crate::spool::QueueId;

impl Engine {
    /// Permits for `domain`'s deliveries: at most `destination_concurrency` at once.
    pub(super) fn destination_slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_destination
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A gateway sees many domains over months: forget the idle ones (nobody holds their
        // semaphore) rather than keep one per domain ever seen.
        if map.len() >= 4096 {
            map.retain(|_, slots| Arc::strong_count(slots) > 1);
        }
        map.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.destination_concurrency)))
            .clone()
    }

    /// Delay before attempt number `n + 1` after `n` failed ones: first_retry, doubling,
    /// capped at max_retry.
    fn backoff(&self, failed: u32) -> Duration {
        let first = self.cfg.first_retry_secs.max(1);
        let secs = first.saturating_mul(1u64 << failed.saturating_sub(1).min(20));
        Duration::from_secs(secs.min(self.cfg.max_retry_secs.max(first)))
    }
}

/// The scheduler's state: when each message is due, which attempts run, and per destination
/// domain how many attempts hold or wait for its slots.
struct Scheduler {
    engine: Arc<Engine>,
    due: BinaryHeap<Reverse<(Instant, QueueId)>>,
    failures: HashMap<QueueId, u32>,
    /// Attempts running, with the destination domains each counts against.
    in_flight: HashMap<QueueId, Vec<String>>,
    per_domain: HashMap<String, usize>,
    /// Due messages whose every destination is at its concurrency, oldest first: they start
    /// as a slot of that destination frees, so a busy destination's backlog never takes the
    /// attempts an idle destination needs.
    parked: HashMap<String, VecDeque<QueueId>>,
    running: JoinSet<(QueueId, bool)>,
}

impl Scheduler {
    /// Start due messages while attempts are below their bound.
    fn start_due(&mut self) {
        let now = Instant::now();
        while self.running.len() < self.engine.max_attempts {
            let Some(Reverse((at, id))) = self.due.peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop();
            self.start(id);
        }
    }

    fn start(&mut self, id: QueueId) {
        if self.in_flight.contains_key(&id) {
            return; // its result reschedules it
        }
        let Some(entry) = self.engine.spool.get(id) else {
            return; // final, or deleted
        };
        if entry.held {
            return; // out of the schedule until released (release pokes it back in)
        }
        let domains = destination_domains(&entry);
        let limit = self.engine.cfg.destination_concurrency.max(1);
        let busy = |d: &String| self.per_domain.get(d).copied().unwrap_or(0) >= limit;
        if domains.iter().all(busy) {
            if let Some(first) = domains.first() {
                self.parked.entry(first.clone()).or_default().push_back(id);
            }
            return;
        }
        for d in &domains {
            *self.per_domain.entry(d.clone()).or_insert(0) += 1;
        }
        self.in_flight.insert(id, domains);
        self.running.spawn(attempt(self.engine.clone(), entry));
    }

    /// An attempt ended: free its destinations (waking what was parked on them) and
    /// schedule the retry if recipients remain.
    fn finish(&mut self, id: QueueId, still_pending: bool) {
        for d in self.in_flight.remove(&id).unwrap_or_default() {
            if let Some(n) = self.per_domain.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    self.per_domain.remove(&d);
                }
            }
            if let Some(queue) = self.parked.get_mut(&d) {
                if let Some(next) = queue.pop_front() {
                    self.due.push(Reverse((Instant::now(), next)));
                }
                if queue.is_empty() {
                    self.parked.remove(&d);
                }
            }
        }
        if still_pending {
            let n = self.failures.entry(id).or_insert(0);
            *n += 1;
            let wait = self.engine.backoff(*n);
            self.due.push(Reverse((Instant::now() + wait, id)));
            // The queue page says when (`postqueue -p` does not; admins ask it anyway).
            let at = crate::fsutil::unix_now().saturating_add(wait.as_secs());
            self.engine.spool.note_next_attempt(id, at);
        } else {
            self.failures.remove(&id);
        }
    }

    /// When the scheduler must next look at the heap by itself (attempts ending wake it
    /// anyway, so nothing while they are at their bound).
    fn next_due(&self) -> Option<Instant> {
        if self.running.len() >= self.engine.max_attempts {
            return None;
        }
        self.due.peek().map(|Reverse((at, _))| *at)
    }
}

/// Run until `shutdown`: every message in the spool is due now, new ones as they arrive.
pub async fn run(
    engine: Arc<Engine>,
    mut incoming: mpsc::UnboundedReceiver<QueueId>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(engine.pool.max_idle.max(Duration::from_secs(1)));
    let mut s = Scheduler {
        due: engine
            .spool
            .ids()
            .into_iter()
            .map(|id| Reverse((Instant::now(), id)))
            .collect(),
        engine: engine.clone(),
        failures: HashMap::new(),
        in_flight: HashMap::new(),
        per_domain: HashMap::new(),
        parked: HashMap::new(),
        running: JoinSet::new(),
    };
    loop {
        s.start_due();
        let next_due = s.next_due();
        tokio::select! {
            Some(id) = incoming.recv() => s.due.push(Reverse((Instant::now(), id))),
            Some(done) = s.running.join_next(), if !s.running.is_empty() => {
                if let Ok((id, still_pending)) = done {
                    s.finish(id, still_pending);
                }
            }
            _ = sleep_until(next_due) => {}
            // Never awaited here: a QUIT that is not answered must not hold up scheduling.
            _ = sweep.tick() => engine.pool.sweep(),
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
    // Attempts in flight finish their transaction or are cut; one cut after the peer's 250
    // and before our outcome record is the only case that can deliver twice.
    if tokio::time::timeout(Duration::from_secs(10), async {
        while s.running.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        s.running.shutdown().await;
    }
    // Close cached sessions with QUIT rather than leave them to the peer's timeout.
    engine.pool.close_all().await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Engine;
    use crate::config::OutboundConfig;
    use crate::events::EventLog;
    use crate::settings::SettingsHandle;
    use crate::spool::Spool;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
        let settings = SettingsHandle::open(&dir.path().join("s.redb")).unwrap();
        let events = EventLog::open(dir.path(), 1 << 20).unwrap();
        let roots = Arc::new(rustls::RootCertStore::empty());
        let e = Engine::new(
            spool,
            settings,
            OutboundConfig {
                first_retry_secs: 300,
                max_retry_secs: 3600,
                ..OutboundConfig::default()
            },
            "h".into(),
            events,
            None,
            roots,
        );
        let secs: Vec<u64> = (1..=6).map(|n| e.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![300, 600, 1200, 2400, 3600, 3600]);
    }
}
