//! TLS-RPT (RFC 8460): once a day, every policy domain the day's delivery records counted
//! gets its aggregate report at the addresses its `_smtp._tls` record names: as a message
//! through postern's own queue (`mailto:`, section 5.3) and as an HTTPS POST (`https:`,
//! section 5.4), gzip-compressed. What was sent is kept in `data/tls-rpt.json`, so a
//! day's report goes to each address once, across restarts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::events::tls_rpt::{Aggregate, PolicyType, ReportAbout, Rua};

const DAY: u64 = 86_400;
/// A report is posted within this time, or tried again at the next round.
const POST_TIMEOUT: Duration = Duration::from_secs(60);
/// How many past days the sent-state keeps.
const KEEP_DAYS: usize = 14;

/// Who the reports are from.
#[derive(Debug, Clone)]
pub struct Reporting {
    /// `organization-name` and the submitter: postern's host name.
    pub organization: String,
    /// `contact-info`, and the envelope sender and From of mailed reports.
    pub contact: String,
    pub state: PathBuf,
}

/// Day (`2026-12-01`) → policy domain → the `rua` addresses its report reached.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sent {
    days: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// What one domain's report came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub domain: String,
    /// `rua` addresses reached now.
    pub sent: Vec<String>,
    /// Reached on an earlier round: not sent again.
    pub already: Vec<String>,
    /// Why an address (or the domain) got nothing; tried again at the next round.
    pub failed: Vec<String>,
}

impl Outcome {
    fn of(domain: &str) -> Outcome {
        Outcome {
            domain: domain.to_string(),
            sent: Vec::new(),
            already: Vec::new(),
            failed: Vec::new(),
        }
    }
}

/// `2026-12-01` for a UNIX day start.
pub fn day_name(day: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day as i64)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default()
}

/// The UNIX start of the UTC day `2026-12-01`.
pub fn day_start(name: &str) -> Result<u64, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(name.trim(), &format)
        .map_err(|_| format!("day: {name:?} is not a date as YYYY-MM-DD"))?;
    Ok(date.midnight().assume_utc().unix_timestamp().max(0) as u64)
}

impl Engine {
    /// Send the reports of the UTC day starting at `day`, to every address not reached yet.
    pub async fn send_tls_reports(&self, day: u64) -> Result<Vec<Outcome>, String> {
        let reporting = self
            .tls_rpt
            .as_ref()
            .ok_or("TLS-RPT reports are off (outbound.tls_rpt = false)")?;
        let _one = self.tls_rpt_round.lock().await;
        let aggregate = self.day_aggregate(day).await?;
        let name = day_name(day);
        let mut sent = read_state(&reporting.state);
        let mut outcomes = Vec::new();
        for domain in aggregate.domains() {
            let done = sent
                .days
                .get(&name)
                .and_then(|d| d.get(&domain))
                .cloned()
                .unwrap_or_default();
            let outcome = self
                .report_domain(&aggregate, &domain, day, reporting, &done)
                .await;
            if !outcome.sent.is_empty() {
                let entry = sent.days.entry(name.clone()).or_default();
                entry
                    .entry(domain.clone())
                    .or_default()
                    .extend(outcome.sent.clone());
                save_state(&reporting.state, &mut sent);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// The day's counts from the delivery records, with the policies as cached.
    async fn day_aggregate(&self, day: u64) -> Result<Aggregate, String> {
        let store = self.events.store().ok_or("no delivery records store")?;
        let rows = tokio::task::spawn_blocking(move || store.tls_rpt_day(day))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut aggregate = Aggregate::default();
        for (outcome, n) in &rows {
            if outcome.policy_type == PolicyType::Sts
                && let Some((lines, mx)) = self
                    .sts
                    .as_ref()
                    .and_then(|s| s.policy_text(&outcome.policy_domain))
            {
                aggregate.policy(&outcome.policy_domain, PolicyType::Sts, &lines, &mx);
            }
            aggregate.add(outcome, *n);
        }
        Ok(aggregate)
    }

    async fn report_domain(
        &self,
        aggregate: &Aggregate,
        domain: &str,
        day: u64,
        reporting: &Reporting,
        done: &[String],
    ) -> Outcome {
        let mut outcome = Outcome::of(domain);
        let ruas = match self.rua_of(domain).await {
            Ok(r) => r,
            Err(why) => {
                outcome.failed.push(why);
                return outcome;
            }
        };
        let (start, end) = (rfc3339(day), rfc3339(day + DAY - 1));
        let about = ReportAbout {
            organization: &reporting.organization,
            contact: &reporting.contact,
            start: &start,
            end: &end,
        };
        let Some(report) = aggregate.report(domain, &about) else {
            return outcome;
        };
        let json = serde_json::to_vec(&report).unwrap_or_default();
        let gz = gzip(&json);
        let file = format!(
            "{}!{domain}!{day}!{}!{}.json.gz",
            reporting.organization,
            day + DAY - 1,
            crate::fsutil::unix_now()
        );
        let built = Built {
            domain,
            report_id: &report.report_id,
            file: &file,
            gz: &gz,
        };
        for rua in ruas {
            let label = rua.to_string();
            if done.contains(&label) {
                outcome.already.push(label);
                continue;
            }
            self.send_claimed(&rua, &built, (day, reporting), &mut outcome)
                .await;
        }
        log_outcome(&outcome, day);
        outcome
    }

    /// Send to `rua` once this node has claimed it (a report another node has is `already`).
    async fn send_claimed(
        &self,
        rua: &Rua,
        built: &Built<'_>,
        (day, reporting): (u64, &Reporting),
        outcome: &mut Outcome,
    ) {
        let (label, domain) = (rua.to_string(), built.domain);
        match self.claim(day, domain, &label, true).await {
            Ok(true) => {}
            Ok(false) => return outcome.already.push(label),
            Err(why) => return outcome.failed.push(format!("{label}: {why}")),
        }
        match self.send_to(rua, built, reporting).await {
            Ok(()) => outcome.sent.push(label),
            Err(why) => {
                let _ = self.claim(day, domain, &label, false).await;
                outcome.failed.push(format!("{label}: {why}"))
            }
        }
    }

    /// With records shared by several nodes, one node sends each report: claim it (or give a
    /// failed one back). True where this node may send; always with its own records.
    async fn claim(&self, day: u64, domain: &str, rua: &str, take: bool) -> Result<bool, String> {
        let Some(store) = self.events.store() else {
            return Ok(true);
        };
        let (domain, rua) = (domain.to_string(), rua.to_string());
        let claimed = tokio::task::spawn_blocking(move || match take {
            true => store.claim_report(day, &domain, &rua),
            false => store.unclaim_report(day, &domain, &rua).map(|()| true),
        })
        .await;
        // Not knowing whether another node sent it: not sent now, tried at the next round.
        match claimed {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn send_to(&self, rua: &Rua, b: &Built<'_>, reporting: &Reporting) -> Result<(), String> {
        match rua {
            Rua::Mailto(to) => self.mail_report(to, b, reporting).await,
            Rua::Https(url) => self.post_report(url, b.gz).await,
        }
    }

    /// The `rua` of `_smtp._tls.<domain>` (section 3).
    async fn rua_of(&self, domain: &str) -> Result<Vec<Rua>, String> {
        let resolver = self
            .resolver
            .as_deref()
            .ok_or("no DNS nameservers configured")?;
        let txt = match resolver.txt(&format!("_smtp._tls.{domain}")).await {
            Ok(t) => t,
            Err(super::dns::DnsError::NotFound) => Vec::new(),
            Err(super::dns::DnsError::Temporary(why)) => {
                return Err(format!("_smtp._tls.{domain}: lookup failed: {why}"));
            }
        };
        crate::events::tls_rpt::parse_record(&txt)
            .map_err(|e| format!("_smtp._tls.{domain}: {e}"))?
            .ok_or_else(|| format!("{domain} publishes no TLS-RPT record"))
    }

    /// Section 5.3: a multipart/report message with the gzip report attached, queued like
    /// any other message (its 250 is the spool's).
    async fn mail_report(
        &self,
        to: &str,
        b: &Built<'_>,
        reporting: &Reporting,
    ) -> Result<(), String> {
        let message = report_message(to, b, reporting);
        let domain = b.domain;
        let envelope = crate::spool::Envelope {
            sender: reporting.contact.clone(),
            recipients: vec![to.to_string()],
            client_ip: "127.0.0.1".into(),
            helo: self.helo.clone(),
            received_unix: crate::fsutil::unix_now(),
            tls_header: crate::spool::TlsHeader::Absent,
            ..crate::spool::Envelope::default()
        };
        let id = self.spool.next_id();
        self.spool
            .commit(id, envelope, &message)
            .await
            .map_err(|e| format!("not queued: {e}"))?;
        tracing::info!(target: "postern/tlsrpt", "{id}: TLS-RPT report for {domain} to <{to}>");
        Ok(())
    }

    /// Section 5.4: POST the gzip report; any 2xx is taken.
    async fn post_report(&self, url: &str, gz: &[u8]) -> Result<(), String> {
        let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (rest, "/".to_string()),
        };
        let resolver = self
            .resolver
            .as_deref()
            .ok_or("no DNS nameservers configured")?;
        let addr = super::https::address(&self.cfg.policy_hosts, resolver, host).await?;
        let req = super::https::Request {
            method: hyper::Method::POST,
            host,
            path: &path,
            content_type: Some("application/tlsrpt+gzip"),
            body: gz.to_vec(),
            limit: 64 * 1024,
        };
        let (status, _) =
            tokio::time::timeout(POST_TIMEOUT, super::https::send(addr, req, &self.roots))
                .await
                .map_err(|_| format!("{url} did not answer in time"))??;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {status}"))
        }
    }
}

/// One domain's report, ready to go.
struct Built<'a> {
    domain: &'a str,
    report_id: &'a str,
    /// The attachment's name (section 5.3).
    file: &'a str,
    gz: &'a [u8],
}

fn log_outcome(outcome: &Outcome, day: u64) {
    let (domain, day) = (&outcome.domain, day_name(day));
    for line in &outcome.failed {
        tracing::warn!(target: "postern/tlsrpt", "warning: TLS-RPT report for {domain} on {day} not sent: {line}");
    }
    for to in &outcome.sent {
        tracing::info!(target: "postern/tlsrpt", "TLS-RPT report for {domain} on {day} sent to {to}");
    }
}

/// The report message of section 5.3.
fn report_message(to: &str, b: &Built<'_>, reporting: &Reporting) -> Vec<u8> {
    use base64::Engine as _;
    let (domain, report_id, file, gz) = (b.domain, b.report_id, b.file, b.gz);
    let org = &reporting.organization;
    let boundary = format!("tlsrpt.{}", crate::fsutil::unix_now());
    let encoded = base64::engine::general_purpose::STANDARD.encode(gz);
    let mut m = String::new();
    m.push_str(&format!("From: <{}>\r\nTo: <{to}>\r\n", reporting.contact));
    m.push_str(&format!(
        "Subject: Report Domain: {domain} Submitter: {org} Report-ID: <{report_id}>\r\n"
    ));
    m.push_str(&format!("Date: {}\r\n", crate::proto::rfc5322_now()));
    m.push_str(&format!("Message-ID: <{report_id}>\r\n"));
    m.push_str(&format!(
        "TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {org}\r\n"
    ));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is an aggregate TLS report from {org} for {domain} (RFC 8460).\r\n\r\n"
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\n"
    ));
    m.push_str(&format!("Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n\tfilename=\"{file}\"\r\n\r\n"));
    for line in encoded.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn read_state(path: &std::path::Path) -> Sent {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(target: "postern/tlsrpt", "warning: {}: {e}; treated as nothing sent", path.display());
            Sent::default()
        }),
        Err(_) => Sent::default(),
    }
}

/// Written before the next address is tried: a crash re-sends at most the report of the
/// address in flight.
fn save_state(path: &std::path::Path, sent: &mut Sent) {
    while sent.days.len() > KEEP_DAYS {
        sent.days.pop_first();
    }
    let written = serde_json::to_vec_pretty(sent)
        .map_err(std::io::Error::other)
        .and_then(|b| crate::fsutil::replace_file(path, &b));
    if let Err(e) = written {
        tracing::warn!(target: "postern/tlsrpt", "warning: {}: cannot save what was sent: {e}", path.display());
    }
}

/// Once a day, a little after UTC midnight, the previous day's reports; at start, the
/// previous day's if a round was missed while postern was down.
pub async fn run(engine: std::sync::Arc<Engine>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if engine.tls_rpt.is_none() {
        return;
    }
    loop {
        let now = crate::fsutil::unix_now();
        let yesterday = now - now % DAY - DAY;
        if let Err(e) = engine.send_tls_reports(yesterday).await {
            tracing::warn!(target: "postern/tlsrpt", "warning: TLS-RPT reports for {}: {e}", day_name(yesterday));
        }
        // Ten minutes past midnight: the day's last records are written by then.
        let next = now - now % DAY + DAY + 600;
        let wait = Duration::from_secs(next.saturating_sub(crate::fsutil::unix_now()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::server::stopped(&mut shutdown) => return,
        }
    }
}
