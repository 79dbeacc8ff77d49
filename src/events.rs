//! Delivery records: one per recipient per attempt, written as the Postfix line admins grep
//! for and as a JSON line with the same facts (`data/log/delivery.jsonl`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

impl Delivery {
    /// `ID: to=<r>, relay=h[ip]:25, delay=0.3, delays=0/0.01/0.2/0.09, dsn=2.0.0, status=sent (250 ...)`
    pub fn postfix_line(&self) -> String {
        let [a, b, c, d] = self.delays;
        format!(
            "{}: to=<{}>, relay={}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({}) policy={} source={}",
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

/// Where delivery records go.
pub struct EventLog {
    json: Mutex<Option<std::fs::File>>,
    path: PathBuf,
    /// Live feed of records (tests, and later the admin page's live view).
    live: tokio::sync::broadcast::Sender<Delivery>,
}

impl EventLog {
    pub fn open(data_dir: &Path) -> std::io::Result<EventLog> {
        let dir = data_dir.join("log");
        crate::fsutil::private_dir(&dir)?;
        let path = dir.join("delivery.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(EventLog {
            json: Mutex::new(Some(file)),
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

    pub fn record(&self, d: &Delivery) {
        tracing::info!(target: "postern/smtp", "{}", d.postfix_line());
        let mut line = serde_json::to_vec(d).unwrap_or_default();
        line.push(b'\n');
        let mut json = self.json.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = json.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::warn!(target: "postern/smtp", "warning: {}: cannot write delivery record: {e}", self.path.display());
        }
        drop(json);
        let _ = self.live.send(d.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_in_postfix_form() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.013), "0.01");
        assert_eq!(short(0.25), "0.2");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(12.4), "12");
    }
}
