//! What the Logs page's search matches, the same for both stores (`store` and `shared`):
//! a recipient or sender as an address, a `domain` or a `.domain` (the domain and every
//! subdomain, as on TLS Policy Domains); and free text, looked for in what the admin reads
//! of a record — its Postfix lines (`Host offered STARTTLS: [host]`, the TLS line, the
//! delivery line) and its values — never in the JSON it is stored as, whose field names
//! (`starttls_offered`, `unix_time`) would match every record.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::Delivery;
use super::records::{Search, domain_of, host_of};
use crate::tls::TlsInfo;

/// Every line starts with the program name, as the log has it.
const PROGRAM: &str = "postern/smtp: ";

/// Every word `write_lines` adds around the values, lower case. A word of the search text
/// found in here may come from a line's own words; any other word must be in the stored
/// record, which lets a store skip a record without reading it whole.
const LINE_WORDS: &str = "postern/smtp: host offered starttls: [ verified trusted untrusted tls connection established to with cipher bits key-exchange server-signature server-digest client-signature client-digest starttls not offered by delivered without tls policy level to=< relay= delay= delays= dsn= status= policy= source= rule=";

/// A recipient or sender as the search fields take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    /// `user@domain`, any case.
    Address(String),
    /// `domain` (or `@domain`): addresses in that domain.
    Domain(String),
    /// `.domain`: the domain and every subdomain.
    Subdomains(String),
}

impl Party {
    /// What a field says, read as leniently as `check` allows; `None` when blank.
    pub fn parse(given: &str) -> Option<Party> {
        let s = given.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return None;
        }
        Some(if let Some(d) = s.strip_prefix('@') {
            Party::Domain(d.to_string())
        } else if s.contains('@') {
            Party::Address(s)
        } else if let Some(d) = s.strip_prefix('.') {
            Party::Subdomains(d.to_string())
        } else {
            Party::Domain(s)
        })
    }

    /// Why `given` is neither an address, a domain nor a `.domain` (blank is fine).
    pub fn check(given: &str) -> Result<(), String> {
        let wrong = || {
            format!(
                "{:?} is not an address, a domain or a .domain",
                given.trim()
            )
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
        };
        let domain_ok = |d: &str| d.split('.').all(label_ok);
        match Party::parse(given) {
            None => Ok(()),
            Some(Party::Address(a)) => match a.rsplit_once('@') {
                Some((local, domain))
                    if !local.is_empty()
                        && !a.contains(char::is_whitespace)
                        && (domain_ok(domain) || domain.starts_with('[')) =>
                {
                    Ok(())
                }
                _ => Err(wrong()),
            },
            Some(Party::Domain(d) | Party::Subdomains(d)) if domain_ok(&d) => Ok(()),
            Some(_) => Err(wrong()),
        }
    }

    pub fn matches(&self, address: &str) -> bool {
        match self {
            Party::Address(a) => address.eq_ignore_ascii_case(a),
            Party::Domain(d) => domain_of(address) == *d,
            Party::Subdomains(d) => {
                let of = domain_of(address);
                of == *d
                    || of
                        .strip_suffix(d.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
        }
    }
}

/// The key a store's domain index keeps an address under: its domain, lower case, written
/// backwards (`partner.example` → `elpmaxe.rentrap`), so a domain's subdomains are the
/// keys that start with its key and a dot. PostgreSQL's index computes the same
/// (`split_part(reverse(recipient), '@', 1)`).
pub fn domain_key(address: &str) -> String {
    domain_of(address).chars().rev().collect()
}

/// The free text of a search.
#[derive(Debug, Clone)]
pub struct Text {
    /// Lower case, trimmed.
    needle: String,
    /// Words of the needle that cannot come from a line's own words: each must be in the
    /// stored record (digits alone are left out: delays are rounded for the line).
    pub words: Vec<String>,
    /// `Host offered STARTTLS: [host]` names the relay host: its index finds the records.
    pub offered_by: Option<String>,
}

impl Text {
    pub fn new(given: &str) -> Option<Text> {
        let needle = given.trim().to_ascii_lowercase();
        if needle.is_empty() {
            return None;
        }
        let words = needle
            .split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .filter(|w| !w.bytes().all(|b| b.is_ascii_digit()))
            .filter(|w| !LINE_WORDS.contains(w))
            .map(str::to_string)
            .collect();
        let offered_by = needle
            .split_once("host offered starttls: [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(host, _)| host.trim().to_string())
            .filter(|h| !h.is_empty());
        Some(Text {
            needle,
            words,
            offered_by,
        })
    }

    /// Whether the stored record (its JSON) holds every word the text needs; `lower` is a
    /// buffer to reuse.
    pub fn may_match(&self, stored: &[u8], lower: &mut Vec<u8>) -> bool {
        if self.words.is_empty() {
            return true;
        }
        lower.clear();
        lower.extend(stored.iter().map(u8::to_ascii_lowercase));
        self.words
            .iter()
            .all(|w| memchr::memmem::find(lower, w.as_bytes()).is_some())
    }

    /// Whether a line of the record, or one of its values, holds the text (any case);
    /// `read` is a buffer to reuse.
    pub fn matches(&self, f: &Facts<'_>, read: &mut String) -> bool {
        read.clear();
        write_lines(f, read);
        for v in [
            Some(&f.sender),
            Some(&f.recipient),
            f.tenant.as_ref(),
            f.node.as_ref(),
        ]
        .into_iter()
        .chain([f.verified_name.as_ref()])
        .flatten()
        {
            read.push('\n');
            read.push_str(v);
        }
        read.make_ascii_lowercase();
        memchr::memmem::find(read.as_bytes(), self.needle.as_bytes()).is_some()
    }
}

/// A search made ready to judge records with.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub recipient: Option<Party>,
    pub sender: Option<Party>,
    /// Upper case.
    pub queue_id: Option<String>,
    /// Lower case.
    pub host: Option<String>,
    pub text: Option<Text>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub failed_only: bool,
    pub from_tenant: bool,
}

impl Query {
    pub fn of(q: &Search) -> Query {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Query {
            recipient: q.recipient.as_deref().and_then(Party::parse),
            sender: q.sender.as_deref().and_then(Party::parse),
            queue_id: given(&q.queue_id).map(|v| v.to_ascii_uppercase()),
            host: given(&q.host).map(|v| v.to_ascii_lowercase()),
            text: q.text.as_deref().and_then(Text::new),
            since: q.since,
            until: q.until,
            failed_only: q.failed_only,
            from_tenant: q.from_tenant,
        }
    }

    /// The host whose index finds the candidates: the field, else the text's
    /// `Host offered STARTTLS: [host]`.
    pub fn relay_host(&self) -> Option<&str> {
        self.host
            .as_deref()
            .or(self.text.as_ref().and_then(|t| t.offered_by.as_deref()))
    }

    /// Whether every field the search gives holds for the record.
    fn holds(&self, f: &Facts<'_>, read: &mut String) -> bool {
        let party = |p: &Option<Party>, a: &str| p.as_ref().is_none_or(|p| p.matches(a));
        party(&self.recipient, &f.recipient)
            && party(&self.sender, &f.sender)
            && self
                .queue_id
                .as_deref()
                .is_none_or(|id| f.queue_id.eq_ignore_ascii_case(id))
            && self.host.as_deref().is_none_or(|h| host_of(&f.relay) == h)
            && self.since.is_none_or(|s| f.unix_time >= s)
            && self.until.is_none_or(|u| f.unix_time <= u)
            && (!self.failed_only || f.status != "sent")
            && (!self.from_tenant || f.tenant.is_some())
            && self.text.as_ref().is_none_or(|t| t.matches(f, read))
    }

    /// The record, if every field the search gives holds for it.
    pub fn judge(&self, d: Delivery) -> Option<Delivery> {
        self.holds(&Facts::of(&d), &mut String::new()).then_some(d)
    }

    /// The same, from the stored JSON: a record without the text's words, or without a
    /// tenant when one is asked for (the field is left out when empty), is not parsed; the
    /// others are judged on their text borrowed where it lies, and only a match is read
    /// whole.
    pub fn judge_stored(&self, stored: &[u8], buffers: &mut Buffers) -> Option<Delivery> {
        if self.from_tenant && memchr::memmem::find(stored, b"\"tenant\":").is_none() {
            return None;
        }
        if let Some(t) = &self.text
            && !t.may_match(stored, &mut buffers.lower)
        {
            return None;
        }
        let facts: Facts<'_> = serde_json::from_slice(stored).ok()?;
        if !self.holds(&facts, &mut buffers.read) {
            return None;
        }
        serde_json::from_slice(stored).ok()
    }
}

/// What a store's page judges each stored record with: a delivery search (`Query`) or a
/// received one (`received_query::ReceivedQuery`).
pub trait Judge {
    type Record;
    /// The record, if it matches.
    fn judge_stored(&self, stored: &[u8], buffers: &mut Buffers) -> Option<Self::Record>;
}

impl Judge for Query {
    type Record = Delivery;

    fn judge_stored(&self, stored: &[u8], buffers: &mut Buffers) -> Option<Delivery> {
        Query::judge_stored(self, stored, buffers)
    }
}

/// Buffers a store reuses from one record to the next.
#[derive(Debug, Default)]
pub struct Buffers {
    lower: Vec<u8>,
    read: String,
}

/// What the lines and the search need of a record, borrowed: from a `Delivery`, or from
/// its stored JSON where no string needed unescaping (parsing it whole, each string its own
/// allocation, was most of a search's time).
#[derive(Debug, Deserialize)]
pub struct Facts<'a> {
    pub unix_time: u64,
    #[serde(borrow)]
    pub queue_id: Cow<'a, str>,
    #[serde(borrow)]
    pub sender: Cow<'a, str>,
    #[serde(borrow)]
    pub recipient: Cow<'a, str>,
    #[serde(borrow)]
    pub relay: Cow<'a, str>,
    pub delay: f64,
    pub delays: [f64; 4],
    #[serde(borrow)]
    pub dsn: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow)]
    pub reply: Cow<'a, str>,
    pub starttls_offered: bool,
    #[serde(borrow)]
    pub tls: Option<TlsFacts<'a>>,
    #[serde(borrow)]
    pub verified_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub policy_level: Cow<'a, str>,
    #[serde(borrow)]
    pub policy_source: Cow<'a, str>,
    #[serde(borrow, default)]
    pub rule: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub node: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub hosts_tried: Vec<HostFacts<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct TlsFacts<'a> {
    #[serde(borrow)]
    pub protocol: Cow<'a, str>,
    #[serde(borrow)]
    pub cipher: Cow<'a, str>,
    pub bits: u16,
    #[serde(default)]
    pub trusted: Option<bool>,
    #[serde(borrow, default)]
    pub key_exchange: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub server_signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub server_digest: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_digest: Option<Cow<'a, str>>,
}

impl TlsFacts<'_> {
    /// The session in the TLS line's words (`TlsInfo::describe_session`).
    fn describe_session(&self) -> String {
        let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_string);
        TlsInfo {
            protocol: self.protocol.to_string(),
            cipher: self.cipher.to_string(),
            bits: self.bits,
            key_exchange: owned(&self.key_exchange),
            server_signature: owned(&self.server_signature),
            server_digest: owned(&self.server_digest),
            client_signature: owned(&self.client_signature),
            client_digest: owned(&self.client_digest),
            ..TlsInfo::default()
        }
        .describe_session()
    }
}

#[derive(Debug, Deserialize)]
pub struct HostFacts<'a> {
    #[serde(borrow)]
    pub relay: Cow<'a, str>,
    #[serde(borrow)]
    pub reply: Cow<'a, str>,
}

impl<'a> Facts<'a> {
    pub fn of(d: &'a Delivery) -> Facts<'a> {
        let b = |s: &'a String| Cow::Borrowed(s.as_str());
        Facts {
            unix_time: d.unix_time,
            queue_id: b(&d.queue_id),
            sender: b(&d.sender),
            recipient: b(&d.recipient),
            relay: b(&d.relay),
            delay: d.delay,
            delays: d.delays,
            dsn: b(&d.dsn),
            status: Cow::Borrowed(&d.status),
            reply: b(&d.reply),
            starttls_offered: d.starttls_offered,
            tls: d.tls.as_ref().map(|t| TlsFacts {
                protocol: b(&t.protocol),
                cipher: b(&t.cipher),
                bits: t.bits,
                trusted: t.trusted,
                key_exchange: t.key_exchange.as_ref().map(b),
                server_signature: t.server_signature.as_ref().map(b),
                server_digest: t.server_digest.as_ref().map(b),
                client_signature: t.client_signature.as_ref().map(b),
                client_digest: t.client_digest.as_ref().map(b),
            }),
            verified_name: d.verified_name.as_ref().map(b),
            policy_level: b(&d.policy_level),
            policy_source: b(&d.policy_source),
            rule: d.rule.as_ref().map(b),
            tenant: d.tenant.as_ref().map(b),
            node: d.node.as_ref().map(b),
            hosts_tried: d
                .hosts_tried
                .iter()
                .map(|h| HostFacts {
                    relay: b(&h.relay),
                    reply: b(&h.reply),
                })
                .collect(),
        }
    }
}

impl Delivery {
    /// The Postfix lines this record stands for, as the log has them: each host given up
    /// before the relay, `Host offered STARTTLS: [host]`, the TLS line, the plaintext
    /// note, the delivery line. (The TLS line says `Verified` where a name was verified;
    /// the record does not keep whether an unverified chain was Trusted.)
    pub fn lines(&self) -> Vec<String> {
        let mut out = String::with_capacity(512);
        write_lines(&Facts::of(self), &mut out);
        out.split('\n').map(str::to_string).collect()
    }

    /// `ID: to=<r>, relay=h[ip]:25, delay=0.3, delays=0/0.01/0.2/0.09, dsn=2.0.0,
    /// status=sent (250 ...) policy=may source=global`, as logged for the attempt.
    pub fn postfix_line(&self) -> String {
        let mut out = String::with_capacity(256);
        write_delivery_line(&Facts::of(self), &mut out);
        out
    }
}

/// `lines`, one per line of `out`. Every value is set off by a character that is not a
/// letter or digit from the words around it, and those words are all in `LINE_WORDS`.
fn write_lines(f: &Facts<'_>, out: &mut String) {
    let id = &f.queue_id;
    let reached = f.relay != "none";
    let given_up = match f.hosts_tried.split_last() {
        Some((last, earlier)) if reached && last.relay == f.relay => earlier,
        _ => &f.hosts_tried[..],
    };
    for h in given_up {
        // Postfix logs a refused connection without the queue ID.
        if h.reply.starts_with("connect to ") {
            let _ = writeln!(out, "{PROGRAM}{}", h.reply);
        } else {
            let _ = writeln!(out, "{PROGRAM}{id}: {}", h.reply);
        }
    }
    if reached && f.starttls_offered {
        let host = f.relay.split('[').next().unwrap_or("");
        let _ = writeln!(out, "{PROGRAM}{id}: Host offered STARTTLS: [{host}]");
    }
    match &f.tls {
        Some(t) => {
            // smtp(8)'s words: Verified (chain and name), Trusted (chain only), Untrusted.
            let trust = match (f.verified_name.is_some(), t.trusted) {
                (true, _) => "Verified ",
                (false, Some(true)) => "Trusted ",
                (false, Some(false)) => "Untrusted ",
                (false, None) => "",
            };
            let _ = writeln!(
                out,
                "{PROGRAM}{trust}TLS connection established to {}: {}",
                f.relay,
                t.describe_session()
            );
        }
        None if reached
            && !f.starttls_offered
            && f.status == "sent"
            && f.policy_level != "none" =>
        {
            let _ = writeln!(
                out,
                "{PROGRAM}{id}: STARTTLS not offered by {}: delivered without TLS (policy level {})",
                f.relay, f.policy_level
            );
        }
        None => {}
    }
    out.push_str(PROGRAM);
    write_delivery_line(f, out);
}

/// The delivery line (`Delivery::postfix_line`), written into `out`.
fn write_delivery_line(f: &Facts<'_>, out: &mut String) {
    let [a, b, c, d] = f.delays;
    let _ = write!(
        out,
        "{}: to=<{}>, relay={}, delay=",
        f.queue_id, f.recipient, f.relay
    );
    super::write_short(out, f.delay);
    for (i, secs) in [a, b, c, d].into_iter().enumerate() {
        out.push_str(if i == 0 { ", delays=" } else { "/" });
        super::write_short(out, secs);
    }
    let _ = write!(
        out,
        ", dsn={}, status={} ({}) policy={} source={}",
        f.dsn, f.status, f.reply, f.policy_level, f.policy_source
    );
    if let Some(rule) = &f.rule {
        let _ = write!(out, " rule={rule}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::HostTried;

    fn record() -> Delivery {
        serde_json::from_value(serde_json::json!({
            "unix_time": 1_790_000_000u64, "queue_id": "66191C1CC5B97",
            "sender": "app@inside.example", "recipient": "ceo@partner.example",
            "relay": "mx2.partner.example[192.0.2.26]:25", "delay": 0.42,
            "delays": [0.013, 0.0, 0.3, 0.1], "dsn": "2.0.0", "status": "sent",
            "reply": "250 2.0.0 Ok: queued as 4XyZ", "starttls_offered": true,
            "tls": {"protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "bits": 256},
            "verified_name": null, "policy_level": "may", "policy_source": "global",
            "hosts_tried": [
                {"relay": "mx1.partner.example[192.0.2.25]:25", "status": "deferred", "dsn": "4.4.1",
                 "reply": "connect to mx1.partner.example[192.0.2.25]:25: Connection refused"},
                {"relay": "mx2.partner.example[192.0.2.26]:25", "status": "sent", "dsn": "2.0.0",
                 "reply": "250 2.0.0 Ok: queued as 4XyZ"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn the_lines_are_the_logs() {
        assert_eq!(
            record().lines(),
            [
                "postern/smtp: connect to mx1.partner.example[192.0.2.25]:25: Connection refused",
                "postern/smtp: 66191C1CC5B97: Host offered STARTTLS: [mx2.partner.example]",
                "postern/smtp: TLS connection established to mx2.partner.example[192.0.2.26]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "postern/smtp: 66191C1CC5B97: to=<ceo@partner.example>, relay=mx2.partner.example[192.0.2.26]:25, delay=0.4, delays=0.01/0/0.3/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ) policy=may source=global",
            ]
        );
        // The trust the handshake found, in the log's words (smtp(8)).
        for (trusted, word) in [(Some(false), "Untrusted "), (Some(true), "Trusted ")] {
            let mut r = record();
            r.tls.as_mut().unwrap().trusted = trusted;
            assert!(
                r.lines()[2].starts_with(&format!(
                    "postern/smtp: {word}TLS connection established to mx2"
                )),
                "{:?}",
                r.lines()
            );
        }
        let mut plain = record();
        plain.starttls_offered = false;
        plain.tls = None;
        plain.hosts_tried.clear();
        assert_eq!(
            plain.lines()[0],
            "postern/smtp: 66191C1CC5B97: STARTTLS not offered by mx2.partner.example[192.0.2.26]:25: delivered without TLS (policy level may)"
        );
    }

    /// The words around the values are all in `LINE_WORDS`, so the stores' shortcut (a word
    /// not among them must be in the stored record) never loses a match.
    #[test]
    fn every_word_of_the_lines_is_a_line_word_or_a_value() {
        let mut d = record();
        let values = [
            &mut d.queue_id,
            &mut d.sender,
            &mut d.recipient,
            &mut d.relay,
            &mut d.dsn,
            &mut d.reply,
            &mut d.policy_level,
            &mut d.policy_source,
        ];
        for (i, v) in values.into_iter().enumerate() {
            *v = format!("qv{i}q");
        }
        d.status = "qvsq".into();
        d.rule = Some("qvrq".into());
        d.verified_name = Some("qvnq".into());
        d.tls = Some(TlsInfo {
            protocol: "qvpq".into(),
            cipher: "qvcq".into(),
            bits: 7,
            trusted: None,
            key_exchange: None,
            ..Default::default()
        });
        d.hosts_tried = vec![
            HostTried {
                relay: "qvh1q".into(),
                status: "deferred".into(),
                dsn: "4.4.1".into(),
                reply: "qvr1q".into(),
            },
            HostTried {
                relay: "qv3q".into(),
                status: "sent".into(),
                dsn: "2.0.0".into(),
                reply: "qvr2q".into(),
            },
        ];
        // Every trust word the TLS line can carry (Verified, Trusted, Untrusted), and the
        // key exchange and signatures a TLS 1.3 line adds.
        let mut lines = d.lines();
        let tls13 = TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "qvcq".into(),
            key_exchange: Some("qvkq".into()),
            server_signature: Some("qvsq".into()),
            server_digest: Some("qvdq".into()),
            client_signature: Some("qvtq".into()),
            client_digest: Some("qveq".into()),
            ..TlsInfo::default()
        };
        let mut with13 = d.clone();
        with13.tls = Some(tls13);
        lines.extend(
            with13
                .lines()
                .into_iter()
                .map(|l| l.replace("TLSv1.3", "qvpq")),
        );
        d.verified_name = None;
        for trusted in [Some(true), Some(false)] {
            d.tls.as_mut().unwrap().trusted = trusted;
            lines.extend(d.lines());
        }
        let text = lines.join("\n").to_ascii_lowercase();
        for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
            let value = word.starts_with("qv") && word.ends_with('q');
            let number = word.bytes().all(|b| b.is_ascii_digit());
            assert!(
                value || number || LINE_WORDS.contains(word),
                "{word:?} is not in LINE_WORDS: {text}"
            );
        }
        // And each value is set off from the words around it.
        for line in d.lines() {
            for w in line.split(|c: char| !c.is_ascii_alphanumeric()) {
                assert!(
                    !w.contains("qv") || (w.starts_with("qv") && w.ends_with('q')),
                    "{w}"
                );
            }
        }
    }

    #[test]
    fn text_is_looked_for_in_the_lines_and_values_not_the_json() {
        let d = record();
        let found = |t: &str| {
            Text::new(t)
                .unwrap()
                .matches(&Facts::of(&d), &mut String::new())
        };
        assert!(found("Host offered STARTTLS: [mx2.partner.example]"));
        assert!(found("host offered starttls"));
        assert!(found("app@inside.example"), "the sender, a value");
        assert!(found("Connection refused"), "a host given up");
        assert!(!found("Host offered STARTTLS: [mx1.partner.example]"));
        for field_name in ["starttls_offered", "unix_time", "policy_level", "\"tls\""] {
            assert!(!found(field_name), "{field_name}");
        }
        let t = Text::new("Host offered STARTTLS: [MX2.partner.example]").unwrap();
        assert_eq!(t.offered_by.as_deref(), Some("mx2.partner.example"));
        assert_eq!(t.words, ["mx2", "partner", "example"]);
        assert!(
            Text::new("host offered starttls: [127.0.0.1]")
                .unwrap()
                .words
                .is_empty()
        );
        assert_eq!(Text::new("unix_time").unwrap().words, ["unix", "time"]);
    }

    #[test]
    fn the_shortcut_never_loses_a_record_the_lines_match() {
        let d = record();
        let stored = serde_json::to_vec(&d).unwrap();
        let mut buf = Buffers::default();
        let q = |t: &str| Query {
            text: Text::new(t),
            ..Query::default()
        };
        for t in [
            "ceo@partner",
            "TLS connection established to mx2",
            "4XyZ",
            "delays=0.01",
        ] {
            assert!(q(t).judge_stored(&stored, &mut buf).is_some(), "{t}");
        }
        assert!(
            q("nowhere.example")
                .judge_stored(&stored, &mut buf)
                .is_none()
        );
    }

    /// The lines read from the stored JSON (borrowed, or unescaped where a string needs it)
    /// are the record's own, and the TLS line has `TlsInfo::describe`'s words.
    #[test]
    fn the_stored_json_reads_as_the_record() {
        let mut d = record();
        d.reply = "250 \"quoted\" \\ ok".into();
        d.tenant = Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into());
        d.rule = Some("partners".into());
        let stored = serde_json::to_vec(&d).unwrap();
        let facts: Facts<'_> = serde_json::from_slice(&stored).unwrap();
        let (mut from_json, mut from_record) = (String::new(), String::new());
        write_lines(&facts, &mut from_json);
        write_lines(&Facts::of(&d), &mut from_record);
        assert_eq!(from_json, from_record);
        assert!(from_json.contains(&d.tls.as_ref().unwrap().describe()));
        assert!(from_json.ends_with(&d.postfix_line()));
        let q = Query {
            text: Text::new("\"QUOTED\""),
            from_tenant: true,
            ..Query::default()
        };
        let found = q.judge_stored(&stored, &mut Buffers::default()).unwrap();
        assert_eq!(found.reply, d.reply);
    }

    #[test]
    fn a_party_is_an_address_a_domain_or_a_dot_domain() {
        let p = |s: &str| Party::parse(s).unwrap();
        assert_eq!(
            p(" CEO@Partner.example "),
            Party::Address("ceo@partner.example".into())
        );
        assert_eq!(
            p("partner.example."),
            Party::Domain("partner.example".into())
        );
        assert_eq!(
            p("@partner.example"),
            Party::Domain("partner.example".into())
        );
        assert_eq!(
            p(".partner.example"),
            Party::Subdomains("partner.example".into())
        );
        assert_eq!(Party::parse("  "), None);
        assert!(p("partner.example").matches("ceo@PARTNER.example"));
        assert!(!p("partner.example").matches("ceo@eu.partner.example"));
        assert!(p(".partner.example").matches("ceo@partner.example"));
        assert!(p(".partner.example").matches("ceo@eu.partner.example"));
        assert!(!p(".partner.example").matches("ceo@mypartner.example"));
        assert!(Party::check("ceo@partner.example").is_ok());
        assert!(Party::check(".partner.example").is_ok());
        assert!(Party::check("").is_ok());
        assert_eq!(
            Party::check("partner example").unwrap_err(),
            "\"partner example\" is not an address, a domain or a .domain"
        );
        assert!(Party::check("ceo@").is_err());
        assert!(Party::check("..example").is_err());
        assert_eq!(domain_key("ceo@Partner.example"), "elpmaxe.rentrap");
    }
}
