//! The delivery engine: takes each queued message to its next hop, as Postfix's qmgr and
//! smtp do. A scheduler keeps the retry times; each attempt groups the pending recipients by
//! destination and TLS level, connects, enforces the level, and records every result:
//! final ones durably in the spool (so they are never retried), each one as a delivery event.

pub mod check_tls;
pub mod classify;
pub mod client;
pub mod dane;
pub mod dns;
pub mod dsn;
pub mod https;
pub mod sts;
pub mod tls_report;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::config::OutboundConfig;
use crate::events::{Delivery, EventLog, HostTried};
use crate::policy::{self, Decision, Level};
use crate::proto::Enhanced;
use crate::settings::{NextHop, SettingsHandle, Snapshot};
use crate::spool::{Final, QueueEntry, QueueId, Spool, TlsHeader};
use classify::{Class, Outcome};

pub struct Engine {
    resolver: Option<Arc<dyn dns::Resolver>>,
    /// Mozilla roots plus `[tls] extra_roots`, for `verify` and `secure`.
    roots: Arc<rustls::RootCertStore>,
    /// The same roots as a chain verifier, for the Trusted/Untrusted line at `may`/`encrypt`.
    chain_check: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    spool: Spool,
    settings: SettingsHandle,
    cfg: OutboundConfig,
    helo: String,
    tls: Arc<rustls::ClientConfig>,
    /// Idle sessions kept for the next message to the same host and level.
    pool: client::Pool,
    events: EventLog,
    total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Client certificates for relay domains that name one.
    certs: Option<Arc<crate::certs::Certs>>,
    /// Attempts in flight at most (each holds at most one message body).
    max_attempts: usize,
    bodies: Arc<BodyGauge>,
    /// Call-ahead answers: address -> (verdict, until when it holds).
    verified: Mutex<HashMap<String, (crate::inbound::verify::Verdict, Instant)>>,
    /// MTA-STS lookups and their cache; none without DNS.
    sts: Option<Arc<sts::Sts>>,
    /// The DNSSEC-validating resolver DANE asks; none without DNS.
    dane: Option<Arc<dyn dns::SecureResolver>>,
    /// Who TLS-RPT reports come from; none when they are off.
    tls_rpt: Option<tls_report::Reporting>,
    /// One round of reports at a time (the daily one, one asked for through the API).
    tls_rpt_round: tokio::sync::Mutex<()>,
    /// `postern node drain`: every queued message goes to this peer, with its envelope.
    handover: arc_swap::ArcSwapOption<SocketAddr>,
    /// Set while draining: SMTP refuses new mail (the inbound side reads it).
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Attempts in flight: twice the global limit, so the next transactions are ready as slots
/// free, and no more (each may hold a message body).
fn cfg_max_attempts(cfg: &OutboundConfig) -> usize {
    cfg.max_concurrency.max(1) * 2
}

impl Engine {
    pub fn new(
        spool: Spool,
        settings: SettingsHandle,
        cfg: OutboundConfig,
        helo: String,
        events: EventLog,
        resolver: Option<Arc<dyn dns::Resolver>>,
        roots: Arc<rustls::RootCertStore>,
    ) -> Engine {
        Engine {
            max_attempts: cfg_max_attempts(&cfg),
            verified: Mutex::new(HashMap::new()),
            resolver,
            chain_check: crate::tls::chain_verifier(roots.clone()),
            roots,
            total: Arc::new(Semaphore::new(cfg.max_concurrency)),
            pool: client::Pool::new(Duration::from_secs(cfg.connection_cache_secs)),
            spool,
            settings,
            cfg,
            helo,
            tls: client::unauthenticated_tls_config(),
            events,
            per_destination: Mutex::new(HashMap::new()),
            certs: None,
            bodies: Arc::default(),
            sts: None,
            dane: None,
            tls_rpt: None,
            tls_rpt_round: tokio::sync::Mutex::new(()),
            handover: arc_swap::ArcSwapOption::empty(),
            draining: Arc::default(),
        }
    }

    /// `postern node drain`: from now on SMTP refuses new mail, and every queued message not
    /// on hold is handed to `peer` over SMTP with its original envelope; each is recorded as
    /// delivered only after the peer's 250, as any delivery (so a crash in between sends it
    /// twice, never loses it). Returns how many messages were queued.
    pub fn drain_to(&self, peer: SocketAddr) -> usize {
        self.handover.store(Some(Arc::new(peer)));
        self.draining.store(true, Ordering::SeqCst);
        let queued: Vec<_> = self.spool.list().into_iter().filter(|e| !e.held).collect();
        for e in &queued {
            self.spool.poke(e.id);
        }
        tracing::warn!(target: "postern/qmgr", "draining: new mail refused; {} queued message(s) handed over to [{}]:{}", queued.len(), peer.ip(), peer.port());
        queued.len()
    }

    /// The peer queued mail is handed to, while draining.
    pub fn handing_over(&self) -> Option<SocketAddr> {
        self.handover.load_full().map(|a| *a)
    }

    /// Shared with the SMTP side: true while draining.
    pub fn draining_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }

    /// DANE (RFC 7672) through `resolver`, which validates DNSSEC itself.
    pub fn with_dane(mut self, resolver: Option<Arc<dyn dns::SecureResolver>>) -> Engine {
        self.dane = resolver;
        self
    }

    /// TLS-RPT reports (RFC 8460), sent daily as `reporting` says, when `on`.
    pub fn with_tls_rpt_if(mut self, on: bool, reporting: tls_report::Reporting) -> Engine {
        self.tls_rpt = on.then_some(reporting);
        self
    }

    /// MTA-STS (RFC 8461), its policies cached at `cache` across restarts: for every
    /// domain delivered to by its MX records, when there is DNS to ask.
    pub fn with_mta_sts(mut self, cache: std::path::PathBuf) -> Engine {
        self.sts = self.resolver.clone().map(|resolver| {
            Arc::new(sts::Sts::open(
                cache,
                resolver,
                self.roots.clone(),
                self.cfg.policy_hosts.clone(),
            ))
        });
        self
    }

    /// What `domain` publishes, as delivery to it would find it now: looked up only for a
    /// domain reached by its own MX records (a next hop the admin set is the admin's
    /// policy), and not when MTA-STS is off everywhere.
    pub async fn published(&self, snapshot: &Snapshot, domain: &str) -> policy::Published {
        use crate::levels::StsSwitch;
        let Some(sts) = &self.sts else {
            return policy::Published::default();
        };
        let by_mx = matches!(configured_hop(&self.cfg, snapshot, domain), Ok((ref n, _, true)) if n == domain);
        let settings = &snapshot.settings;
        let dane_wanted = settings.outbound.dane
            || settings
                .policy
                .iter()
                .any(|r| matches!(r.level, Level::Dane | Level::DaneOnly));
        let dane = match (&self.dane, by_mx && dane_wanted) {
            (Some(resolver), true) => Some(dane::lookup(resolver.as_ref(), domain).await),
            _ => None,
        };
        let wanted = settings.outbound.mta_sts != StsSwitch::Off
            || settings
                .policy
                .iter()
                .any(|r| r.mta_sts.is_some_and(|m| m != StsSwitch::Off));
        let sts = match by_mx && wanted {
            true => Some(sts.lookup(domain).await),
            false => None,
        };
        policy::Published {
            sts,
            tls_required_no: false,
            dane,
        }
    }

    /// Message bodies in memory now and at most since start (see `BodyGauge`).
    pub fn bodies(&self) -> (usize, usize) {
        self.bodies.get()
    }

    /// The bound on attempts in flight.
    pub fn max_attempts(&self) -> usize {
        self.max_attempts
    }

    /// Where relay domains' client certificates come from.
    pub fn with_certs(mut self, certs: Arc<crate::certs::Certs>) -> Engine {
        self.certs = Some(certs);
        self
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    fn destination_slots(&self, domain: &str) -> Arc<Semaphore> {
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

/// Message bodies held by deliveries: now, and the most at once since start. A body is read
/// only once its delivery holds its permits, so this stays within the attempts in flight
/// however long the queue is.
#[derive(Debug, Default)]
pub struct BodyGauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl BodyGauge {
    /// (bodies in memory now, the most at once)
    pub fn get(&self) -> (usize, usize) {
        (
            self.now.load(Ordering::SeqCst),
            self.peak.load(Ordering::SeqCst),
        )
    }
}

/// A message body read for a delivery, counted while it lives.
struct Body {
    bytes: Vec<u8>,
    gauge: Arc<BodyGauge>,
}

impl Body {
    async fn load(engine: &Engine, id: QueueId) -> std::io::Result<Body> {
        let bytes = engine.spool.load_message(id).await?;
        let now = engine.bodies.now.fetch_add(1, Ordering::SeqCst) + 1;
        engine.bodies.peak.fetch_max(now, Ordering::SeqCst);
        Ok(Body {
            bytes,
            gauge: engine.bodies.clone(),
        })
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.gauge.now.fetch_sub(1, Ordering::SeqCst);
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

/// The pending recipients' domains, each once, lower-case.
fn destination_domains(entry: &QueueEntry) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in entry.pending() {
        let d = recipient_domain(&entry.envelope.recipients[i]);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn recipient_domain(rcpt: &str) -> String {
    rcpt.rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// How long call-ahead answers are kept: a mailbox that exists stays for a week, one that
/// does not is asked again after an hour (a new employee is not refused for days; Postfix
/// keeps negatives 3 days but refreshes them after 3 hours). Deferrals are not kept.
const VERIFIED_FOR: Duration = Duration::from_secs(7 * 86_400);
const REFUSED_FOR: Duration = Duration::from_secs(3_600);

impl Engine {
    /// Ask the recipient's next hops (as delivery would find them) whether they take it.
    async fn call_ahead(&self, rcpt: &str) -> crate::inbound::verify::Verdict {
        use crate::inbound::verify::Verdict;
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
            Err(outcome) => return Verdict::Unverified(outcome.reason),
        };
        let timeout = Duration::from_secs(self.cfg.connect_timeout_secs.min(30));
        let mut verdict = Verdict::Unverified(format!("no next hop for {domain}"));
        for (host, addr) in &hosts {
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
        let keep = match verdict {
            Verdict::Exists => Some(VERIFIED_FOR),
            Verdict::Unknown(_) => Some(REFUSED_FOR),
            Verdict::Unverified(_) => None,
        };
        if let Some(keep) = keep {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= 100_000 {
                cache.retain(|_, (_, until)| *until > now);
            }
            cache.insert(key, (verdict.clone(), now + keep));
        }
        tracing::info!(target: "postern/verify", "<{rcpt}>: {}", match &verdict {
            Verdict::Exists => "deliverable".to_string(),
            Verdict::Unknown(why) => format!("undeliverable: {why}"),
            Verdict::Unverified(why) => format!("unverified: {why}"),
        });
        verdict
    }
}

impl crate::inbound::verify::RecipientVerifier for Engine {
    fn verify<'a>(
        &'a self,
        rcpt: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = crate::inbound::verify::Verdict> + Send + 'a>,
    > {
        Box::pin(self.call_ahead(rcpt))
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
            _ = crate::stopped(&mut shutdown) => break,
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

/// The `x-TLSLevel` value that counts for `entry`: only from authorised clients (the others
/// had it removed at receipt), as read at receipt; a record from before that reads the body.
async fn tls_header(
    engine: &Engine,
    entry: &QueueEntry,
    body: &mut Option<Body>,
) -> std::io::Result<Option<String>> {
    if !entry.envelope.authorised {
        return Ok(None);
    }
    let value = match &entry.envelope.tls_header {
        TlsHeader::Absent => None,
        TlsHeader::Value(v) => Some(v.clone()),
        TlsHeader::NotRead => {
            let loaded = Body::load(engine, entry.id).await?;
            let v = policy::first_tls_level_header(&loaded.bytes);
            *body = Some(loaded);
            v
        }
    };
    if let Some(h) = value.as_deref()
        && policy::header_level(h).is_none()
    {
        tracing::warn!(target: "postern/smtp", "{}: warning: unknown x-TLSLevel value {h:?} ignored (expected Require or Try)", entry.id);
    }
    Ok(value)
}

/// The body, read now if this attempt has not read it yet.
async fn body<'a>(
    engine: &Engine,
    id: QueueId,
    body: &'a mut Option<Body>,
) -> std::io::Result<&'a [u8]> {
    if body.is_none() {
        *body = Some(Body::load(engine, id).await?);
    }
    Ok(&body.as_ref().expect("loaded just above").bytes)
}

/// What one attempt decided, recipient by recipient, until it is recorded.
#[derive(Default)]
struct Tally {
    finals: Vec<(u32, Final)>,
    /// Index, outcome and relay of each bounced recipient, for the notification.
    bounced: Vec<(usize, Outcome, String)>,
    last_problem: Option<String>,
    still_pending: bool,
    /// Published once the queue reflects them: whoever sees `status=sent` (the log, the
    /// feed) finds the recipient gone from the queue, and a deferral's reason in `queue list`.
    records: Vec<Delivery>,
}

impl Tally {
    fn add(
        &mut self,
        index: usize,
        result: RcptResult,
        entry: &QueueEntry,
        (decision, fact): (&Decision, Option<&policy::mta_sts::StsFact>),
    ) {
        self.records
            .push(result.event(entry, index, decision, fact));
        match result.outcome.class {
            Class::Delivered => self.finals.push((index as u32, Final::Delivered)),
            Class::Permanent => {
                self.finals.push((index as u32, Final::Bounced));
                self.bounced.push((index, result.outcome, result.relay));
            }
            Class::Temporary => {
                self.still_pending = true;
                self.last_problem = Some(result.outcome.reason);
            }
        }
    }
}

/// One attempt at every pending recipient of a message. Returns whether any remain pending.
async fn attempt(engine: Arc<Engine>, entry: QueueEntry) -> (QueueId, bool) {
    let id = entry.id;
    let mut loaded: Option<Body> = None;
    let header = match tls_header(&engine, &entry, &mut loaded).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(target: "postern/qmgr", "{id}: cannot read message from the spool: {e}");
            return (id, true);
        }
    };
    // Read once: a settings change applies to the next attempt.
    let snapshot = engine.settings.current();
    let started = Instant::now();
    let mut tally = Tally::default();
    let handover = engine.handing_over();
    let (published, groups) = plan(&engine, &entry, &snapshot, header.as_deref(), handover).await;
    for ((domain, ..), group) in groups {
        // The destination first, then the global limit: waiting for a busy destination
        // never holds a slot another destination could use.
        let slots = engine.destination_slots(&domain);
        let _dest = slots.acquire().await;
        let _total = engine.total.acquire().await;
        let message = match body(&engine, id, &mut loaded).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(target: "postern/qmgr", "{id}: cannot read message from the spool: {e}");
                tally.still_pending = true;
                break;
            }
        };
        let decision = &group[0].1;
        let rcpts: Vec<String> = group
            .iter()
            .map(|(i, _)| entry.envelope.recipients[*i].clone())
            .collect();
        let hop = Hop {
            engine: &engine,
            entry: &entry,
            message,
            snapshot: &snapshot,
            started,
            handover,
        };
        let results = deliver_group(&hop, &domain, decision, &rcpts).await;
        let fact = published.get(&domain).and_then(|p| p.sts.as_ref());
        for ((index, _), mut result) in group.iter().zip(results) {
            sts::attribute(decision.sts.as_ref(), &mut result.outcome);
            expire_if_too_old(&engine.cfg, &entry, &mut result.outcome);
            tally.add(*index, result, &entry, (decision, fact));
        }
    }
    queue_bounce_notice(&engine, &entry, &mut loaded, &mut tally).await;
    drop(loaded);
    record(&engine, id, tally).await
}

/// The attempt's transactions: while draining, one to the peer; else one per destination
/// and policy, with what each destination publishes.
async fn plan(
    engine: &Engine,
    entry: &QueueEntry,
    snapshot: &Snapshot,
    header: Option<&str>,
    handover: Option<SocketAddr>,
) -> (
    HashMap<String, policy::Published>,
    BTreeMap<GroupKey, Group>,
) {
    if let Some(peer) = handover {
        return (HashMap::new(), handover_group(entry, peer));
    }
    let published = published_for(engine, entry, snapshot).await;
    let groups = group_recipients(entry, snapshot, header, &published);
    (published, groups)
}

/// What each destination domain of `entry` publishes, looked up once per attempt; nothing
/// for a message that says `TLS-Required: No` and may.
async fn published_for(
    engine: &Engine,
    entry: &QueueEntry,
    snapshot: &Snapshot,
) -> HashMap<String, policy::Published> {
    let mut published = HashMap::new();
    for domain in destination_domains(entry) {
        let facts = match entry.envelope.tls_required_no {
            true => policy::Published {
                tls_required_no: true,
                ..policy::Published::default()
            },
            false => engine.published(snapshot, &domain).await,
        };
        published.insert(domain, facts);
    }
    published
}

/// The notice is queued before the bounce is recorded: a crash in between sends it twice
/// rather than never. Not queued, the bounces stay pending and are tried again.
async fn queue_bounce_notice(
    engine: &Engine,
    entry: &QueueEntry,
    loaded: &mut Option<Body>,
    tally: &mut Tally,
) {
    if tally.bounced.is_empty() {
        return;
    }
    let queued = match body(engine, entry.id, loaded).await {
        Ok(message) => send_dsn(engine, entry, message, &tally.bounced).await,
        Err(e) => {
            tracing::error!(target: "postern/bounce", "{}: cannot read message from the spool for its notification, will retry: {e}", entry.id);
            false
        }
    };
    if !queued {
        tally.finals.retain(|(_, state)| *state != Final::Bounced);
        tally.still_pending = true;
    }
}

/// Outcomes into the spool, then the records out; returns whether any remain pending.
async fn record(engine: &Engine, id: QueueId, mut tally: Tally) -> (QueueId, bool) {
    if let Err(e) = engine
        .spool
        .record_delivery_outcomes(id, &tally.finals)
        .await
    {
        // Not recorded means retried: at-least-once, never lost.
        tracing::error!(target: "postern/qmgr", "{id}: cannot record delivery outcomes, will retry them: {e}");
        tally.still_pending = true;
    }
    if tally.still_pending {
        engine.spool.note_attempt(id, tally.last_problem.take());
    }
    for record in &tally.records {
        engine.events.record(record).await;
    }
    if !tally.still_pending {
        tracing::info!(target: "postern/qmgr", "{id}: removed");
    }
    (id, tally.still_pending)
}

/// Queue the DSN for `bounced` recipients; false if it could not be queued.
async fn send_dsn(
    engine: &Engine,
    entry: &QueueEntry,
    message: &[u8],
    bounced: &[(usize, Outcome, String)],
) -> bool {
    let failed: Vec<dsn::Failed<'_>> = bounced
        .iter()
        .map(|(i, outcome, relay)| dsn::Failed {
            recipient: &entry.envelope.recipients[*i],
            status: outcome.dsn.to_string(),
            remote_mta: outcome.remote_reply.as_ref().and(relay.split('[').next()),
            diagnostic: outcome.diagnostic(),
            explanation: outcome.explanation(),
        })
        .collect();
    let Some((envelope, bytes)) = dsn::build(entry, message, &failed, &engine.helo) else {
        tracing::info!(target: "postern/bounce", "{}: sender is null: no non-delivery notification", entry.id);
        return true;
    };
    let dsn_id = engine.spool.next_id();
    match engine.spool.commit(dsn_id, envelope, &bytes).await {
        Ok(()) => {
            tracing::info!(target: "postern/bounce", "{}: sender non-delivery notification: {dsn_id}", entry.id);
            true
        }
        Err(e) => {
            tracing::error!(target: "postern/bounce", "{}: cannot queue the non-delivery notification, will retry: {e}", entry.id);
            false
        }
    }
}

type Group = Vec<(usize, Decision)>;

/// Pending recipients by (destination domain, TLS level): one SMTP transaction each.
/// Recipients that can share one transaction: same domain, same policy demands.
type GroupKey = (
    String,
    Level,
    u16,
    crate::settings::OnFailure,
    Option<policy::StsDemand>,
);

fn group_recipients(
    entry: &QueueEntry,
    snapshot: &Snapshot,
    header: Option<&str>,
    published: &HashMap<String, policy::Published>,
) -> BTreeMap<GroupKey, Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let none = policy::Published::default();
    for i in entry.pending() {
        let rcpt = &entry.envelope.recipients[i];
        let domain = recipient_domain(rcpt);
        let rule = entry.envelope.rule_levels.get(i).and_then(Option::as_ref);
        let facts = published.get(&domain).unwrap_or(&none);
        let decision = policy::decide_published(snapshot, rcpt, header, rule, facts);
        groups
            .entry((
                domain,
                decision.level,
                decision.min_bits,
                decision.on_failure,
                decision.sts.clone(),
            ))
            .or_default()
            .push((i, decision));
    }
    groups
}

/// The result for one recipient, with the facts of the session that produced it.
struct RcptResult {
    outcome: Outcome,
    relay: String,
    /// Hosts given up before `relay` in this attempt.
    earlier: Vec<HostTried>,
    starttls_offered: bool,
    tls: Option<crate::tls::TlsInfo>,
    verified_name: Option<String>,
    cert_problem: Option<crate::tls::CertProblem>,
    delays: [f64; 4],
}

impl RcptResult {
    /// The earlier hosts, then this one (none when no host was reached at all).
    fn hosts_tried(&self) -> Vec<HostTried> {
        let mut hosts = self.earlier.clone();
        if self.relay != "none" {
            hosts.push(HostTried::of(&self.relay, &self.outcome));
        }
        hosts
    }

    fn event(
        &self,
        entry: &QueueEntry,
        index: usize,
        decision: &Decision,
        fact: Option<&policy::mta_sts::StsFact>,
    ) -> Delivery {
        let now = crate::fsutil::unix_now();
        let recipient = &entry.envelope.recipients[index];
        let session = sts::Session {
            relay: &self.relay,
            outcome: &self.outcome,
            tls: self.tls.is_some(),
            starttls_offered: self.starttls_offered,
            cert_problem: self.cert_problem,
        };
        let domain = recipient_domain(recipient);
        let tls_rpt = sts::rpt_outcome(&domain, fact, decision, &session);
        Delivery {
            unix_time: now,
            queue_id: entry.id.to_string(),
            sender: entry.envelope.sender.clone(),
            recipient: entry.envelope.recipients[index].clone(),
            relay: self.relay.clone(),
            delay: self.delays.iter().sum(),
            delays: self.delays,
            dsn: self.outcome.dsn.to_string(),
            status: self.outcome.status().into(),
            reply: self.outcome.reason.clone(),
            starttls_offered: self.starttls_offered,
            tls: self.tls.clone(),
            verified_name: self.verified_name.clone(),
            policy_level: decision.level.to_string(),
            policy_source: decision.source.to_string(),
            rule: decision.rule.clone(),
            tenant: entry.envelope.tenant.clone(),
            hosts_tried: self.hosts_tried(),
            tls_rpt,
            node: None,
        }
    }
}

/// Past the queue lifetime, a temporary failure becomes the final one (RFC 3463 X.4.7).
fn expire_if_too_old(cfg: &OutboundConfig, entry: &QueueEntry, outcome: &mut Outcome) {
    let age = crate::fsutil::unix_now().saturating_sub(entry.envelope.received_unix);
    if outcome.class == Class::Temporary && age >= cfg.queue_lifetime_secs {
        *outcome = Outcome::permanent(
            Enhanced(5, 4, 7),
            format!(
                "message expired after {age}s in the queue; last problem: {}",
                outcome.reason
            ),
        );
    }
}

/// What every host of an attempt is tried with: the message and the settings it started on.
struct Hop<'a> {
    engine: &'a Engine,
    entry: &'a QueueEntry,
    message: &'a [u8],
    snapshot: &'a Snapshot,
    started: Instant,
    /// Draining: the peer every recipient goes to, whatever its domain.
    handover: Option<SocketAddr>,
}

/// What a relay domain's next hop needs of us: SASL credentials, a client certificate.
struct Credentials<'a> {
    auth: Option<(&'a str, &'a str)>,
    client_cert: Option<(&'a str, Arc<rustls::sign::CertifiedKey>)>,
}

/// How one host went, for the loop over a destination's hosts.
enum HostOutcome {
    Session(client::Session),
    /// Final for this attempt: the other hosts would not change it.
    Stop(Outcome, Seen),
    /// Given up for the next host.
    Next(Outcome, Seen),
}

/// What a host showed before it failed: whether it offered STARTTLS, and the TLS of the
/// session a transaction failed in (none when it failed before or without TLS).
#[derive(Default, Clone)]
struct Seen {
    starttls_offered: bool,
    tls: Option<(crate::tls::TlsInfo, Option<String>)>,
}

impl Hop<'_> {
    /// Postfix's `delays=` b: in the queue before this attempt (or since arrival).
    fn queued_secs(&self) -> f64 {
        let since_arrival =
            crate::fsutil::unix_now().saturating_sub(self.entry.envelope.received_unix);
        self.started
            .elapsed()
            .as_secs_f64()
            .max(since_arrival as f64)
    }

    fn job<'j>(
        &'j self,
        (host, addr): (&'j str, std::net::SocketAddr),
        queue_id: &'j str,
        decision: &Decision,
        rcpts: &'j [String],
        creds: &Credentials<'j>,
    ) -> client::Job<'j> {
        let engine = self.engine;
        let (level, check) = tls_for(decision, host);
        client::Job {
            queue_id,
            host,
            addr,
            helo: &engine.helo,
            level,
            sender: &self.entry.envelope.sender,
            recipients: rcpts,
            message: self.message,
            smtputf8: self.entry.envelope.smtputf8,
            eight_bit: self.entry.envelope.eight_bit,
            requiretls: self.entry.envelope.requiretls,
            min_bits: decision.min_bits,
            bounce_on_failure: decision.on_failure == crate::settings::OnFailure::Bounce,
            check: check.map(|c| (c, engine.roots.clone())),
            chain_check: engine.chain_check.clone(),
            connect_timeout: Duration::from_secs(engine.cfg.connect_timeout_secs),
            command_timeout: Duration::from_secs(engine.cfg.command_timeout_secs),
            auth: creds.auth,
            client_cert: creds.client_cert.clone(),
        }
    }
}

/// The same result for every recipient of a group (no host reached, or one final answer).
fn for_all(
    n: usize,
    outcome: Outcome,
    relay: String,
    seen: Seen,
    earlier: &[HostTried],
    queued: f64,
) -> Vec<RcptResult> {
    let (tls, verified_name) = seen.tls.map_or((None, None), |(t, v)| (Some(t), v));
    (0..n)
        .map(|_| RcptResult {
            outcome: outcome.clone(),
            relay: relay.clone(),
            earlier: earlier.to_vec(),
            starttls_offered: seen.starttls_offered,
            tls: tls.clone(),
            verified_name: verified_name.clone(),
            cert_problem: None,
            delays: [0.0, queued, 0.0, 0.0],
        })
        .collect()
}

/// The hosts the published policies and REQUIRETLS leave, or why there are none.
fn usable_hosts(
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

/// The hosts to try and what they need of us: the peer alone while draining (our own node:
/// no published policy, no relay-domain credentials), else the domain's next hops as the
/// policies leave them.
async fn hosts_for<'a>(
    hop: &Hop<'a>,
    domain: &str,
    decision: &Decision,
) -> Result<(Vec<(String, SocketAddr)>, Credentials<'a>), Outcome> {
    if let Some(peer) = hop.handover {
        let none = Credentials {
            auth: None,
            client_cert: None,
        };
        return Ok((vec![(peer.ip().to_string(), peer)], none));
    }
    let engine = hop.engine;
    let resolver = engine.resolver.as_deref();
    let hosts = next_hops(&engine.cfg, resolver, hop.snapshot, domain).await?;
    let hosts = usable_hosts(hop.entry, decision, domain, hosts)?;
    Ok((hosts, credentials(hop, domain).await?))
}

/// Draining: every pending recipient in one transaction to the peer, at `may` (the peer is
/// one of ours; it applies the policies when it relays).
fn handover_group(entry: &QueueEntry, peer: SocketAddr) -> BTreeMap<GroupKey, Group> {
    let defaults = Snapshot::new(crate::settings::Settings::default(), 0);
    let key = (
        format!("[{}]:{}", peer.ip(), peer.port()),
        Level::May,
        0,
        crate::settings::OnFailure::Defer,
        None,
    );
    let group = entry
        .pending()
        .into_iter()
        .map(|i| {
            let mut d = policy::decide(&defaults, &entry.envelope.recipients[i], None, None);
            d.explanation = vec![format!(
                "handed over to [{}]:{} (node drain): may",
                peer.ip(),
                peer.port()
            )];
            (i, d)
        })
        .collect();
    BTreeMap::from([(key, group)])
}

/// One destination's recipients: its hosts in order until one takes or finally refuses them.
async fn deliver_group(
    hop: &Hop<'_>,
    domain: &str,
    decision: &Decision,
    rcpts: &[String],
) -> Vec<RcptResult> {
    let queued = hop.queued_secs();
    let all = |outcome, relay, seen, earlier: &[HostTried]| {
        for_all(rcpts.len(), outcome, relay, seen, earlier, queued)
    };
    let (hosts, creds) = match hosts_for(hop, domain, decision).await {
        Ok(h) => h,
        Err(outcome) => return all(outcome, "none".into(), Seen::default(), &[]),
    };
    let queue_id = hop.entry.id.to_string();
    let mut tried: Vec<HostTried> = Vec::new();
    let mut last = Outcome::connection(format!("no host to try for {domain}"));
    let mut last_relay = "none".to_string();
    let mut last_seen = Seen::default();
    for (host, addr) in &hosts {
        let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
        let job = hop.job((host, *addr), &queue_id, decision, rcpts, &creds);
        match try_host(hop, job, &relay).await {
            HostOutcome::Session(session) => {
                log_tls(hop.entry.id, &relay, &session, decision.level);
                return per_recipient(session, &relay, &tried, queued);
            }
            HostOutcome::Stop(outcome, seen) => return all(outcome, relay, seen, &tried),
            HostOutcome::Next(outcome, seen) => {
                (last, last_relay, last_seen) = (outcome, relay, seen)
            }
        }
        if hosts.len() > 1 {
            tried.push(HostTried::of(&last_relay, &last));
        }
    }
    // The last host failed too: it is the record's own relay, not an earlier one.
    tried.pop();
    all(last, last_relay, last_seen, &tried)
}

/// A session's outcomes, one result per recipient, with the facts of the session.
fn per_recipient(
    session: client::Session,
    relay: &str,
    tried: &[HostTried],
    queued: f64,
) -> Vec<RcptResult> {
    session
        .results
        .into_iter()
        .map(|outcome| RcptResult {
            outcome,
            relay: relay.to_string(),
            earlier: tried.to_vec(),
            starttls_offered: session.starttls_offered,
            tls: session.tls.clone(),
            verified_name: session.verified_name.clone(),
            cert_problem: session.cert_problem,
            delays: [0.0, queued, session.setup_secs, session.transmit_secs],
        })
        .collect()
}

/// Credentials belong to the relay domain; decide() made its level `encrypt` at least. A
/// client certificate that cannot be loaded defers: never a silent fallback to none, since
/// the next hop may accept us only by it.
async fn credentials<'a>(hop: &Hop<'a>, domain: &str) -> Result<Credentials<'a>, Outcome> {
    let relay_domain = hop.snapshot.relay_domain(domain);
    let auth = relay_domain
        .and_then(|d| d.auth.as_ref())
        .and_then(|a| Some((a.username.as_str(), a.password.as_ref()?.expose())));
    let client_cert = match relay_domain.and_then(|d| d.client_certificate.as_deref()) {
        None => None,
        Some(name) => match client_key(hop.engine, name).await {
            Some(Ok(key)) => Some((name, key)),
            Some(Err(e)) => {
                return Err(Outcome::temporary(
                    Enhanced(4, 7, 0),
                    format!("client certificate {name} for {domain} cannot be used: {e}"),
                ));
            }
            None => None,
        },
    };
    Ok(Credentials { auth, client_cert })
}

/// One host; at `may`, a failed handshake is retried once in plaintext, and logged.
async fn try_host(hop: &Hop<'_>, mut job: client::Job<'_>, relay: &str) -> HostOutcome {
    let engine = hop.engine;
    let mut result = client::deliver(&job, &engine.tls, &engine.pool).await;
    if let Err(client::Failure::TlsFailedMay { reason }) = &result {
        tracing::warn!(
            target: "postern/smtp",
            "{}: warning: TLS handshake with {relay} failed ({reason}); opportunistic level may: retrying in plaintext",
            hop.entry.id
        );
        job.level = Level::None;
        result = client::deliver(&job, &engine.tls, &engine.pool).await;
    }
    match result {
        Ok(session) => HostOutcome::Session(session),
        Err(client::Failure::All {
            outcome,
            try_next_host,
            starttls_offered,
            tls,
        }) => {
            let seen = Seen {
                starttls_offered,
                tls,
            };
            if !try_next_host {
                return HostOutcome::Stop(outcome, seen);
            }
            // A host given up for the next one leaves its line, as in Postfix, so the log
            // shows the MX that failed before the one that worked.
            log_host_failure(hop.entry.id, &outcome);
            HostOutcome::Next(outcome, seen)
        }
        Err(client::Failure::TlsFailedMay { reason }) => HostOutcome::Next(
            Outcome::connection(format!(
                "TLS and plaintext both failed with {relay}: {reason}"
            )),
            Seen {
                starttls_offered: true,
                tls: None,
            },
        ),
    }
}

impl HostTried {
    fn of(relay: &str, outcome: &Outcome) -> HostTried {
        HostTried {
            relay: relay.to_string(),
            status: outcome.status().into(),
            dsn: outcome.dsn.to_string(),
            reply: outcome.reason.clone(),
        }
    }
}

/// A relay domain's client certificate; a cache miss reads the settings store, so it runs
/// off the async workers.
async fn client_key(
    engine: &Engine,
    name: &str,
) -> Option<Result<Arc<rustls::sign::CertifiedKey>, String>> {
    let certs = engine.certs.clone()?;
    let name = name.to_string();
    Some(
        tokio::task::spawn_blocking(move || certs.client_key(&name))
            .await
            .unwrap_or_else(|e| Err(format!("certificate load failed: {e}"))),
    )
}

/// The level and certificate check for one host. Under DANE (RFC 7672 section 2.2) a host
/// with secured TLSA records is authenticated by them; the others get the level the other
/// sources decide (`dane-only` hosts without records were left out before).
fn tls_for(decision: &Decision, host: &str) -> (Level, Option<crate::tls::CertCheck>) {
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

/// Postfix logs a refused connection without the queue ID (`connect to host[ip]:port:
/// Connection refused`), everything else with it.
fn log_host_failure(id: QueueId, outcome: &Outcome) {
    if outcome.reason.starts_with("connect to ") {
        tracing::info!(target: "postern/smtp", "{}", outcome.reason);
    } else {
        tracing::info!(target: "postern/smtp", "{id}: {}", outcome.reason);
    }
}

/// The TLS handshake and the STARTTLS offer are logged by the client, once per connection;
/// what is left is plaintext, which only `may` and `none` allow: said per message, so an
/// admin checking a partner before forcing TLS finds it (Hermes' guide).
fn log_tls(id: QueueId, relay: &str, session: &client::Session, level: Level) {
    if session.tls.is_none() && !session.starttls_offered && level > Level::None {
        tracing::info!(
            target: "postern/smtp",
            "{id}: STARTTLS not offered by {relay}: delivered without TLS (policy level {level})"
        );
    }
}

/// Where mail for `domain` goes, in the order to try: a static route from the config, else
/// the relay domain's transport, else the relayhost, else its MX hosts (RFC 5321 5.1).
async fn next_hops(
    cfg: &OutboundConfig,
    resolver: Option<&dyn dns::Resolver>,
    snapshot: &Snapshot,
    domain: &str,
) -> Result<Vec<(String, SocketAddr)>, Outcome> {
    let (name, port, mx) = configured_hop(cfg, snapshot, domain)?;
    let port = cfg.port.unwrap_or(port);
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![(name, SocketAddr::new(ip, port))]);
    }
    if name == "localhost" {
        return Ok(vec![(name, SocketAddr::from(([127, 0, 0, 1], port)))]);
    }
    let Some(resolver) = resolver else {
        return Err(Outcome::temporary(
            Enhanced(4, 4, 3),
            format!("cannot look up {name}: no DNS nameservers configured (outbound.nameservers)"),
        ));
    };
    let hosts = if mx {
        mx_hosts(resolver, &name).await?
    } else {
        vec![name.clone()]
    };
    let mut out = Vec::new();
    let mut last_error = None;
    for host in hosts {
        match resolver.ips(&host).await {
            Ok(ips) => out.extend(
                ips.into_iter()
                    .map(|ip| (host.clone(), SocketAddr::new(ip, port))),
            ),
            Err(e) => last_error = Some(dns_outcome(&host, "A", e)),
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| {
            Outcome::temporary(Enhanced(4, 4, 4), format!("Host or domain name not found. Name service error for name={name}: no address records"))
        }));
    }
    Ok(out)
}

/// The next hop an admin set, in this order: a static route, the relay domain's transport,
/// the relayhost; else the recipient domain itself, by MX. (name, port, MX lookup or not).
fn configured_hop(
    cfg: &OutboundConfig,
    snapshot: &Snapshot,
    domain: &str,
) -> Result<(String, u16, bool), Outcome> {
    let hop = cfg
        .routes
        .get(domain)
        .cloned()
        .or_else(|| {
            snapshot
                .relay_domain(domain)
                .and_then(|d| d.transport.clone())
        })
        .or_else(|| cfg.relayhost.clone());
    match &hop {
        Some(hop) => {
            let hop = NextHop::parse(hop).map_err(|e| {
                Outcome::temporary(Enhanced(4, 3, 5), format!("bad next hop for {domain}: {e}"))
            })?;
            Ok((hop.host, hop.port, hop.mx_lookup))
        }
        None => Ok((domain.to_string(), 25, true)),
    }
}

/// MX hosts by preference, equal preferences in random order (RFC 5321 section 5.1); the
/// domain itself when it has no MX; null MX and NXDOMAIN are final.
async fn mx_hosts(resolver: &dyn dns::Resolver, domain: &str) -> Result<Vec<String>, Outcome> {
    match resolver.mx(domain).await {
        Ok(dns::MxAnswer::Hosts(mut hosts)) => {
            use rand::seq::SliceRandom;
            hosts.shuffle(&mut rand::thread_rng());
            hosts.sort_by_key(|(pref, _)| *pref); // stable: shuffled order kept within a preference
            Ok(hosts.into_iter().map(|(_, h)| h).collect())
        }
        Ok(dns::MxAnswer::NoMx) => Ok(vec![domain.to_string()]),
        Ok(dns::MxAnswer::NullMx) => Err(Outcome::permanent(
            Enhanced(5, 1, 10),
            format!("Domain {domain} does not accept mail (nullMX)"),
        )),
        Err(e) => Err(dns_outcome(domain, "MX", e)),
    }
}

/// Postfix's wording for name service errors.
fn dns_outcome(name: &str, rtype: &str, e: dns::DnsError) -> Outcome {
    match e {
        dns::DnsError::NotFound => Outcome::permanent(
            Enhanced(5, 1, 2),
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found"
            ),
        ),
        dns::DnsError::Temporary(why) => Outcome::temporary(
            Enhanced(4, 4, 3),
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again ({why})"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_cfg() -> OutboundConfig {
        OutboundConfig {
            first_retry_secs: 300,
            max_retry_secs: 3600,
            ..OutboundConfig::default()
        }
    }

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
            engine_cfg(),
            "h".into(),
            events,
            None,
            roots,
        );
        let secs: Vec<u64> = (1..=6).map(|n| e.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![300, 600, 1200, 2400, 3600, 3600]);
    }

    #[tokio::test]
    async fn routes_prefer_config_then_transport() {
        let mut cfg = engine_cfg();
        cfg.routes
            .insert("lab.example".into(), "[127.0.0.1]:2526".into());
        cfg.port = None;
        let mut s = crate::settings::Settings::default();
        s.relay_domains.push(crate::settings::RelayDomain {
            domain: "ours.example".into(),
            recipients: None,
            verify_recipients: false,
            transport: Some("[127.0.0.2]:2600".into()),
            auth: None,
            client_certificate: None,
        });
        let snap = Snapshot::new(s, 0);
        assert_eq!(
            next_hops(&cfg, None, &snap, "lab.example").await.unwrap()[0].1,
            "127.0.0.1:2526".parse().unwrap()
        );
        assert_eq!(
            next_hops(&cfg, None, &snap, "ours.example").await.unwrap()[0].1,
            "127.0.0.2:2600".parse().unwrap()
        );
        let err = next_hops(&cfg, None, &snap, "elsewhere.example")
            .await
            .unwrap_err();
        assert!(
            err.reason.contains("no DNS nameservers configured"),
            "{}",
            err.reason
        );
        assert_eq!((err.class, err.dsn), (Class::Temporary, Enhanced(4, 4, 3)));
        cfg.relayhost = Some("[127.0.0.3]:2700".into());
        let hops = next_hops(&cfg, None, &snap, "elsewhere.example")
            .await
            .unwrap();
        assert_eq!(hops[0].1, "127.0.0.3:2700".parse().unwrap());
        // A transport still wins over the relayhost.
        let hops = next_hops(&cfg, None, &snap, "ours.example").await.unwrap();
        assert_eq!(hops[0].1, "127.0.0.2:2600".parse().unwrap());
    }
}
