//! Delivery records: one per recipient per attempt, written as the Postfix line admins grep
//! for and as a JSON line with the same facts (`data/log/delivery.jsonl`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::tls::TlsInfo;

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub unix_time: u64,
    pub queue_id: String,
    pub sender: String,
    pub recipient: String,
    /// `host[ip]:port`, or `none` when no host was reached.
    pub relay: String,
    /// Postfix's `delay` and `delays=a/b/c/d`: before the queue, in the queue, connection
    /// set-up (including TLS), transmission.
    pub delay: f64,
    pub delays: [f64; 4],
    pub dsn: String,
    /// sent, deferred, bounced
    pub status: &'static str,
    pub reply: String,
    pub starttls_offered: bool,
    pub tls: Option<TlsInfo>,
    /// Whether the peer certificate was verified, and for which name (none yet at `may`/`encrypt`).
    pub verified_name: Option<String>,
    pub policy_level: String,
    pub policy_source: String,
    /// The message rule that matched the recipient, even where another source decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Every host tried in this attempt, in order, the one of `relay` last: an MX given up
    /// for the next one is on the record with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts_tried: Vec<HostTried>,
}

/// One host of an attempt and how it went.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostTried {
    /// `host[ip]:port`
    pub relay: String,
    /// sent, deferred, bounced
    pub status: &'static str,
    pub dsn: String,
    pub reply: String,
}

impl Delivery {
    /// `ID: to=<r>, relay=h[ip]:25, delay=0.3, delays=0/0.01/0.2/0.09, dsn=2.0.0, status=sent (250 ...)`
    pub fn postfix_line(&self) -> String {
        let [a, b, c, d] = self.delays;
        let rule = self
            .rule
            .as_ref()
            .map(|r| format!(" rule={r}"))
            .unwrap_or_default();
        format!(
            "{}: to=<{}>, relay={}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({}) policy={} source={}{rule}",
            self.queue_id,
            self.recipient,
            self.relay,
            short(self.delay),
            short(a),
            short(b),
            short(c),
            short(d),
            self.dsn,
            self.status,
            self.reply,
            self.policy_level,
            self.policy_source,
        )
    }
}

/// Postfix prints delays with at most two significant decimals and no trailing zeros.
fn short(secs: f64) -> String {
    let text = if secs >= 10.0 {
        format!("{secs:.0}")
    } else if secs >= 0.1 {
        format!("{secs:.1}")
    } else {
        format!("{secs:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text.is_empty() { "0".into() } else { text }
}

/// Where delivery records go. The JSON file is kept to a size: past `max_bytes` it becomes
/// `delivery.jsonl.1` (replacing the previous one) and a new file starts, so at most twice
/// that is kept for the log search. The file is written by a thread of its own, so a slow
/// disk never stalls the async workers that deliver mail.
pub struct EventLog {
    writer: std::sync::mpsc::Sender<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>,
    path: PathBuf,
    /// Live feed of records (tests, and later the admin page's live view).
    live: tokio::sync::broadcast::Sender<Delivery>,
}

impl EventLog {
    pub fn open(data_dir: &Path, max_bytes: u64) -> std::io::Result<EventLog> {
        let dir = data_dir.join("log");
        crate::fsutil::private_dir(&dir)?;
        let path = dir.join("delivery.jsonl");
        let file = Writer::open_file(&path)?;
        let len = file.metadata()?.len();
        let mut writer = Writer {
            file: Some((file, len)),
            path: path.clone(),
            max_bytes: max_bytes.max(1),
        };
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("delivery-log".into())
            .spawn(move || {
                for (line, done) in rx {
                    if let Err(e) = writer.append(&line) {
                        tracing::warn!(target: "postern/smtp", "warning: {}: cannot write delivery record: {e}", writer.path.display());
                    }
                    let _ = done.send(());
                }
            })?;
        Ok(EventLog {
            writer: tx,
            path,
            live: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Every record from now on (a slow reader misses the oldest, never blocks delivery).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Delivery> {
        self.live.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Log the line, append the JSON record, then publish it: whoever sees it in the feed
    /// finds it in the file.
    pub async fn record(&self, d: &Delivery) {
        tracing::info!(target: "postern/smtp", "{}", d.postfix_line());
        let mut line = serde_json::to_vec(d).unwrap_or_default();
        line.push(b'\n');
        let (done, written) = tokio::sync::oneshot::channel();
        if self.writer.send((line, done)).is_ok() {
            let _ = written.await;
        }
        let _ = self.live.send(d.clone());
    }
}

/// What the delivery records say of one host's STARTTLS (Hermes' "search the log for `Host
/// offered STARTTLS`", answered directly).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StarttlsSeen {
    pub host: String,
    /// Records of deliveries (any status) that reached the host since the cut-off.
    pub connections: u64,
    /// Of those, how many saw STARTTLS offered.
    pub offered: u64,
    /// UNIX seconds of the latest such record.
    pub last: Option<u64>,
}

/// The facts of a delivery record the STARTTLS history needs.
#[derive(serde::Deserialize)]
struct Seen {
    unix_time: u64,
    relay: String,
    starttls_offered: bool,
}

/// For each of `hosts`: the records since `since` (UNIX seconds) whose relay is that host,
/// from the rotated file and the current one. A missing file is an empty history.
pub fn starttls_history(log: &Path, hosts: &[String], since: u64) -> Vec<StarttlsSeen> {
    use std::io::BufRead;
    let wanted: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let mut out: Vec<StarttlsSeen> = hosts
        .iter()
        .map(|h| StarttlsSeen {
            host: h.clone(),
            ..StarttlsSeen::default()
        })
        .collect();
    for path in [log.with_extension("jsonl.1"), log.to_path_buf()] {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            // Most records are of other hosts: skip them before parsing.
            let lower = line.to_ascii_lowercase();
            if !wanted.iter().any(|h| lower.contains(h.as_str())) {
                continue;
            }
            let Ok(seen) = serde_json::from_str::<Seen>(&line) else {
                continue;
            };
            let host = seen.relay.split('[').next().unwrap_or("");
            let Some(entry) = out.iter_mut().find(|e| e.host.eq_ignore_ascii_case(host)) else {
                continue;
            };
            if seen.unix_time < since {
                continue;
            }
            entry.connections += 1;
            entry.offered += u64::from(seen.starttls_offered);
            entry.last = entry.last.max(Some(seen.unix_time));
        }
    }
    out
}

/// The delivery log file, owned by its writer thread.
struct Writer {
    file: Option<(std::fs::File, u64)>,
    path: PathBuf,
    max_bytes: u64,
}

impl Writer {
    /// Created 0600; an older file with wider rights is narrowed (records name addresses).
    fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        crate::fsutil::restrict_to_owner(path)?;
        Ok(file)
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self
            .file
            .as_ref()
            .is_some_and(|(_, len)| *len > 0 && len + line.len() as u64 > self.max_bytes)
        {
            self.file = None;
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        if self.file.is_none() {
            self.file = Some((Writer::open_file(&self.path)?, 0));
        }
        let (file, len) = self.file.as_mut().expect("opened just above");
        file.write_all(line)?;
        *len += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Delivery {
        Delivery {
            unix_time: 0,
            queue_id: format!("ID{n}"),
            sender: "s@x.example".into(),
            recipient: "r@y.example".into(),
            relay: "none".into(),
            delay: 0.0,
            delays: [0.0; 4],
            dsn: "2.0.0".into(),
            status: "sent",
            reply: "250 ok".into(),
            starttls_offered: false,
            tls: None,
            verified_name: None,
            policy_level: "may".into(),
            policy_source: "global".into(),
            rule: None,
            hosts_tried: Vec::new(),
        }
    }

    #[test]
    fn starttls_history_counts_each_host_since_the_cut_off_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("delivery.jsonl");
        let line = |t: u64, relay: &str, offered: bool| {
            let mut r = record(1);
            r.unix_time = t;
            r.relay = relay.into();
            r.starttls_offered = offered;
            serde_json::to_string(&r).unwrap() + "\n"
        };
        let old = line(500, "mx1.example.net[127.0.0.1]:25", true)
            + &line(1500, "mx1.example.net[127.0.0.1]:25", true);
        std::fs::write(log.with_extension("jsonl.1"), old).unwrap();
        let new = line(2000, "MX1.example.net[127.0.0.1]:25", false)
            + &line(2500, "mx9.example.org[127.0.0.9]:25", true)
            + "not json mx1.example.net\n";
        std::fs::write(&log, new).unwrap();
        let hosts = vec!["mx1.example.net".to_string(), "mx2.example.net".to_string()];
        let seen = starttls_history(&log, &hosts, 1000);
        assert_eq!(
            seen,
            vec![
                StarttlsSeen {
                    host: "mx1.example.net".into(),
                    connections: 2,
                    offered: 1,
                    last: Some(2000),
                },
                StarttlsSeen {
                    host: "mx2.example.net".into(),
                    ..StarttlsSeen::default()
                },
            ]
        );
    }

    #[test]
    fn the_line_names_a_matched_rule_after_the_source() {
        let mut r = record(1);
        assert!(
            r.postfix_line()
                .ends_with("(250 ok) policy=may source=global")
        );
        r.rule = Some("partners".into());
        assert!(
            r.postfix_line()
                .ends_with("(250 ok) policy=may source=global rule=partners"),
            "{}",
            r.postfix_line()
        );
    }

    #[tokio::test]
    async fn json_log_rotates_at_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 1000).unwrap();
        for n in 0..20 {
            log.record(&record(n)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("log/delivery.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let current = std::fs::read_to_string(dir.path().join("log/delivery.jsonl")).unwrap();
        let previous = std::fs::read_to_string(dir.path().join("log/delivery.jsonl.1")).unwrap();
        assert!(current.len() <= 1000 && previous.len() <= 1000);
        assert!(current.ends_with("\n") && current.contains("\"queue_id\":\"ID19\""));
        let kept = current.lines().count() + previous.lines().count();
        assert!(kept < 20, "nothing was dropped");
        for line in current.lines().chain(previous.lines()) {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn delays_in_postfix_form() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.013), "0.01");
        assert_eq!(short(0.25), "0.2");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(12.4), "12");
    }
}
