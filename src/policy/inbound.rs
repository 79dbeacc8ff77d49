//! Inbound TLS rows: which row names a sender domain or a client address (`decide_inbound`),
//! and whether a session, or a message received earlier, meets it (`judge`). Pure: the
//! session, `postern policy explain --inbound`, the admin page's Explain and the impact
//! preview over received records all ask these two functions.
//!
//! Most specific row wins within each kind, as outbound: for the sender's domain an exact
//! `domain` row, then the longest `.domain` row (the domain and all its subdomains); for the
//! client address the longest prefix. A sender row and a client row that both match both hold.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::levels::InboundLevel;
use crate::proto::{Enhanced, Reply};
use crate::settings::{InboundTarget, InboundTlsRow, inbound_target};

/// What a row is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// The domain of the envelope sender (MAIL FROM).
    Sender,
    /// The client's IP address.
    Client,
}

impl fmt::Display for RowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RowKind::Sender => "sender",
            RowKind::Client => "client",
        })
    }
}

/// A row that applies, with what it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedRow {
    pub kind: RowKind,
    #[serde(flatten)]
    pub row: InboundTlsRow,
}

impl AppliedRow {
    /// `sender-row:partner.example`, `client-row:192.0.2.0/24`: what the refusal's log line
    /// names as its `source=` (the delivery lines' key).
    pub fn source(&self) -> String {
        format!("{}-row:{}", self.kind, self.row.pattern)
    }
}

/// The rows that hold for one sender and client, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundDecision {
    /// The sender's domain, lower case; `None` for the null sender `<>`.
    pub sender_domain: Option<String>,
    pub client: IpAddr,
    pub sender_row: Option<AppliedRow>,
    pub client_row: Option<AppliedRow>,
    /// One line per row looked at, the ones that decide marked, then what is required.
    pub explanation: Vec<String>,
}

impl InboundDecision {
    /// The rows that hold, sender row first: the order `judge` checks them in.
    pub fn rows(&self) -> impl Iterator<Item = &AppliedRow> {
        self.sender_row.iter().chain(self.client_row.iter())
    }
}

/// The domain of `sender` (an address, `<address>`, or a bare domain), lower case, without
/// the trailing dot; `None` for the null sender.
fn sender_domain(sender: Option<&str>) -> Option<String> {
    let s = sender?.trim().trim_start_matches('<').trim_end_matches('>');
    let domain = s.rsplit_once('@').map_or(s, |(_, d)| d);
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Rows that match, each with how specifically: more is more specific.
type Ranked<'a> = Vec<(usize, &'a InboundTlsRow)>;

/// The rows that name `sender` (its domain) and `client`, most specific first in each kind,
/// and the explanation of which decide.
pub fn decide_inbound(
    rows: &[InboundTlsRow],
    sender: Option<&str>,
    client: IpAddr,
) -> InboundDecision {
    let client = client.to_canonical();
    let domain = sender_domain(sender);
    let (senders, clients) = matching(rows, domain.as_deref(), client);
    let mut explanation = Vec::new();
    let sender_what = match &domain {
        Some(d) => format!("sender domain {d}"),
        None => "the null sender <>".to_string(),
    };
    explain_kind(&mut explanation, "sender", &sender_what, &senders);
    let client_what = format!("client {client}");
    explain_kind(&mut explanation, "client", &client_what, &clients);
    let applied = |kind, found: &Ranked<'_>| {
        found.first().map(|(_, r)| AppliedRow {
            kind,
            row: (*r).clone(),
        })
    };
    let mut decision = InboundDecision {
        sender_domain: domain,
        client,
        sender_row: applied(RowKind::Sender, &senders),
        client_row: applied(RowKind::Client, &clients),
        explanation,
    };
    let required = required_words(&decision);
    decision.explanation.push(required);
    decision
}

/// The sender rows that name `domain` and the client rows that hold `client`, each most
/// specific first: an exact domain, then the longest parent; the longest prefix.
fn matching<'a>(
    rows: &'a [InboundTlsRow],
    domain: Option<&str>,
    client: IpAddr,
) -> (Ranked<'a>, Ranked<'a>) {
    let (mut senders, mut clients) = (Vec::new(), Vec::new());
    for row in rows {
        match inbound_target(&row.pattern) {
            Some(InboundTarget::Sender {
                domain: d,
                subdomains,
            }) => {
                if let Some(rank) = domain.and_then(|s| sender_rank(s, &d, subdomains)) {
                    senders.push((rank, row));
                }
            }
            Some(InboundTarget::Client(net)) if net.contains(&client) => {
                clients.push((usize::from(net.prefix_len()), row));
            }
            _ => {}
        }
    }
    senders.sort_by_key(|a| std::cmp::Reverse(a.0));
    clients.sort_by_key(|a| std::cmp::Reverse(a.0));
    (senders, clients)
}

/// How specifically a `domain` (`subdomains` false) or `.domain` row names `sender`: `None`
/// when it does not; an exact row outranks every parent, a longer parent a shorter one.
fn sender_rank(sender: &str, row: &str, subdomains: bool) -> Option<usize> {
    if !subdomains {
        return (sender == row).then_some(usize::MAX);
    }
    let under = sender.len() > row.len()
        && sender.ends_with(row)
        && sender.as_bytes()[sender.len() - row.len() - 1] == b'.';
    (sender == row || under).then_some(row.len())
}

/// The lines of one kind: the row that decides, the less specific ones it overrides, or
/// that no row names it.
fn explain_kind<K>(out: &mut Vec<String>, kind: &str, what: &str, found: &[(K, &InboundTlsRow)]) {
    let Some((_, first)) = found.first() else {
        out.push(format!("no {kind} row names {what}"));
        return;
    };
    out.push(format!(
        "{kind} row {} names {what}: {} (decides)",
        first.pattern,
        row_words(first)
    ));
    for (_, r) in &found[1..] {
        out.push(format!(
            "{kind} row {}: {}, overridden by the more specific {}",
            r.pattern,
            row_words(r),
            first.pattern
        ));
    }
}

/// `verify (names mx.partner.example), at least 128 bits; contract 42`.
fn row_words(row: &InboundTlsRow) -> String {
    let mut out = row.level.to_string();
    if row.level == InboundLevel::Verify {
        out.push_str(&format!(
            " (a certificate from the trust roots naming {})",
            row.match_names.join(" or ")
        ));
    }
    if let Some(bits) = row.min_bits {
        out.push_str(&format!(", at least {bits} bits"));
    }
    if !row.note.is_empty() {
        out.push_str(&format!("; {}", row.note));
    }
    out
}

/// The last line: what the session must have by MAIL FROM.
fn required_words(d: &InboundDecision) -> String {
    let rows: Vec<&AppliedRow> = d.rows().collect();
    match rows.as_slice() {
        [] => "required: nothing beyond inbound STARTTLS (no row applies)".to_string(),
        [one] => format!(
            "required by MAIL FROM: {} (from the {} row {})",
            requirement(&one.row),
            one.kind,
            one.row.pattern
        ),
        _ => format!(
            "required by MAIL FROM: both rows hold: {} (sender row {}) and {} (client row {})",
            requirement(&rows[0].row),
            rows[0].row.pattern,
            requirement(&rows[1].row),
            rows[1].row.pattern
        ),
    }
}

fn requirement(row: &InboundTlsRow) -> &'static str {
    match row.level {
        InboundLevel::Encrypt => "TLS",
        InboundLevel::Verify => "TLS with a verified client certificate",
    }
}

/// A certificate checked for a row's names: the name it matched, or what is wrong with it.
pub type NameCheck<'a> = Box<dyn Fn(&[String]) -> Result<String, String> + Send + Sync + 'a>;

/// A client certificate as `judge` needs it: what to call it, and its check for a row's
/// names (the name it matched, or what is wrong with it in the admin's words).
pub struct PresentedCert<'a> {
    /// The subject's CN (Postfix names the peer CN in `check_ccert_access` refusals).
    pub cn: String,
    pub check: NameCheck<'a>,
}

/// What a session had by MAIL FROM, or what a received record says it had.
pub struct InboundFacts<'a> {
    /// Cipher key bits; `None`: plaintext.
    pub bits: Option<u16>,
    pub certificate: Option<PresentedCert<'a>>,
}

/// A client certificate as a received record keeps it (the impact preview's facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    /// Its subject, for the refusal's words.
    pub subject: String,
    /// Its SAN DNS names.
    pub names: Vec<String>,
    /// It chained to the trust roots plus `extra_roots`, was in date and had an acceptable
    /// EKU, when it was received.
    pub verified: bool,
}

impl InboundFacts<'_> {
    /// A received record's facts: the cipher's bits (`None`: plaintext) and the client
    /// certificate it kept. Names are matched as a server's are: exactly, or by a wildcard
    /// in the certificate's leftmost label.
    pub fn stored(bits: Option<u16>, certificate: Option<StoredCert>) -> InboundFacts<'static> {
        InboundFacts {
            bits,
            certificate: certificate.map(|c| PresentedCert {
                cn: c.subject.clone(),
                check: Box::new(move |wanted: &[String]| {
                    stored_check(&c.names, c.verified, wanted)
                }),
            }),
        }
    }
}

fn stored_check(names: &[String], verified: bool, wanted: &[String]) -> Result<String, String> {
    if !verified {
        return Err(
            "certificate not verified when it was received (chain, dates or usage)".to_string(),
        );
    }
    wanted
        .iter()
        .find(|w| names.iter().any(|n| name_matches(n, w)))
        .cloned()
        .ok_or_else(|| {
            format!(
                "certificate is not valid for {} (it names {})",
                wanted.join(" or "),
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
}

/// A certificate's DNS name against a wanted name: equal (any case), or `*.rest` covering
/// exactly one more label (RFC 6125 section 6.4.3).
fn name_matches(cert: &str, wanted: &str) -> bool {
    let (cert, wanted) = (cert.to_ascii_lowercase(), wanted.to_ascii_lowercase());
    match cert.strip_prefix("*.") {
        None => cert == wanted,
        Some(rest) => wanted
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
    }
}

/// Why a row refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refused {
    /// No TLS by MAIL FROM.
    Plaintext,
    /// TLS below the row's minimum.
    TooWeak { bits: u16, min: u16 },
    /// `verify` without a client certificate.
    NoCertificate,
    /// `verify` with a certificate that does not verify for the row's names.
    Certificate { cn: String, problem: String },
}

/// A row's refusal: which row, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundRefusal {
    pub row: Box<AppliedRow>,
    #[serde(flatten)]
    pub why: Refused,
}

impl InboundRefusal {
    /// The reply, in Postfix's words where it has them, with `code` (Postfix's
    /// `plaintext_reject_code`) and the enhanced code's class made to agree with it, as
    /// Postfix's smtpd_check_reject() does. `client` is `unknown[192.0.2.7]`.
    pub fn reply(&self, code: u16, client: &str) -> Reply {
        let class = if code >= 500 { 5 } else { 4 };
        let text = match &self.why {
            // smtpd_check.c, reject_plaintext_session(): "4.7.1", "Session encryption is required".
            Refused::Plaintext => "Session encryption is required".to_string(),
            // The minimum strength's words, as outbound delivery says them.
            Refused::TooWeak { bits, min } => {
                return Reply::new(
                    code,
                    Enhanced(class, 7, 0),
                    format!("encryption too weak {bits} less than {min}"),
                );
            }
            // check_ccert_access's refusal: "<%s>: %s rejected: %s" with the peer CN and the
            // class SMTPD_NAME_CCERT; without a certificate Postfix has no CN: the client.
            Refused::NoCertificate => {
                format!("<{client}>: Client certificate rejected: no client certificate presented")
            }
            Refused::Certificate { cn, problem } => {
                format!("<{cn}>: Client certificate rejected: {problem}")
            }
        };
        Reply::new(code, Enhanced(class, 7, 1), text)
    }
}

/// Whether `facts` meet every row of `decision`, the sender row first: the first refusal.
pub fn judge(decision: &InboundDecision, facts: &InboundFacts<'_>) -> Result<(), InboundRefusal> {
    for applied in decision.rows() {
        if let Err(why) = judge_row(&applied.row, facts) {
            return Err(InboundRefusal {
                row: Box::new(applied.clone()),
                why,
            });
        }
    }
    Ok(())
}

fn judge_row(row: &InboundTlsRow, facts: &InboundFacts<'_>) -> Result<(), Refused> {
    let Some(bits) = facts.bits else {
        return Err(Refused::Plaintext);
    };
    if let Some(min) = row.min_bits.filter(|min| bits < *min) {
        return Err(Refused::TooWeak { bits, min });
    }
    if row.level == InboundLevel::Encrypt {
        return Ok(());
    }
    let Some(cert) = &facts.certificate else {
        return Err(Refused::NoCertificate);
    };
    (cert.check)(&row.match_names)
        .map(|_| ())
        .map_err(|problem| Refused::Certificate {
            cn: cert.cn.clone(),
            problem,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pattern: &str, level: InboundLevel) -> InboundTlsRow {
        let mut r = InboundTlsRow::new(pattern, level);
        if level == InboundLevel::Verify {
            r.match_names = vec!["mx.partner.example".into()];
        }
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cert(subject: &str, name: &str, verified: bool) -> StoredCert {
        StoredCert {
            subject: subject.into(),
            names: vec![name.into()],
            verified,
        }
    }

    fn patterns(d: &InboundDecision) -> (Option<&str>, Option<&str>) {
        (
            d.sender_row.as_ref().map(|r| r.row.pattern.as_str()),
            d.client_row.as_ref().map(|r| r.row.pattern.as_str()),
        )
    }

    #[test]
    fn the_most_specific_row_of_each_kind_decides() {
        let rows = vec![
            row(".partner.example", InboundLevel::Encrypt),
            row(".eu.partner.example", InboundLevel::Encrypt),
            row("partner.example", InboundLevel::Verify),
            row("192.0.2.0/24", InboundLevel::Encrypt),
            row("192.0.2.7", InboundLevel::Verify),
            row("2001:db8::/32", InboundLevel::Encrypt),
        ];
        let d = decide_inbound(&rows, Some("a@Partner.Example."), ip("192.0.2.7"));
        assert_eq!(patterns(&d), (Some("partner.example"), Some("192.0.2.7")));
        let d = decide_inbound(&rows, Some("a@mx.eu.partner.example"), ip("192.0.2.9"));
        assert_eq!(
            patterns(&d),
            (Some(".eu.partner.example"), Some("192.0.2.0/24"))
        );
        assert_eq!(
            d.explanation[0],
            "sender row .eu.partner.example names sender domain mx.eu.partner.example: encrypt (decides)"
        );
        assert_eq!(
            d.explanation[1],
            "sender row .partner.example: encrypt, overridden by the more specific .eu.partner.example"
        );
        let d = decide_inbound(&rows, Some("<b@other.test>"), ip("::ffff:198.51.100.1"));
        assert_eq!(patterns(&d), (None, None));
        assert_eq!(
            d.explanation,
            [
                "no sender row names sender domain other.test",
                "no client row names client 198.51.100.1",
                "required: nothing beyond inbound STARTTLS (no row applies)"
            ]
        );
        // `.partner.example` covers the domain itself; a plain row never its subdomains.
        let only_dot = vec![row(".partner.example", InboundLevel::Encrypt)];
        let d = decide_inbound(&only_dot, Some("partner.example"), ip("192.0.2.1"));
        assert_eq!(patterns(&d).0, Some(".partner.example"));
        let plain = vec![row("partner.example", InboundLevel::Encrypt)];
        let d = decide_inbound(&plain, Some("a@sub.partner.example"), ip("192.0.2.1"));
        assert_eq!(patterns(&d).0, None);
        let d = decide_inbound(&plain, Some("a@notpartner.example"), ip("192.0.2.1"));
        assert_eq!(patterns(&d).0, None, "a suffix is not a parent");
        // The null sender has no sender row; the client row still holds.
        let d = decide_inbound(&rows, None, ip("2001:db8::25"));
        assert_eq!(patterns(&d), (None, Some("2001:db8::/32")));
        assert_eq!(d.explanation[0], "no sender row names the null sender <>");
    }

    #[test]
    fn both_rows_hold_and_the_sender_row_is_judged_first() {
        let rows = vec![
            row("partner.example", InboundLevel::Encrypt),
            row("192.0.2.0/24", InboundLevel::Verify),
        ];
        let d = decide_inbound(&rows, Some("a@partner.example"), ip("192.0.2.7"));
        assert!(
            d.explanation.last().unwrap().contains("both rows hold"),
            "{:?}",
            d.explanation
        );
        let plaintext = InboundFacts {
            bits: None,
            certificate: None,
        };
        let r = judge(&d, &plaintext).unwrap_err();
        assert_eq!(
            (r.row.source(), &r.why),
            ("sender-row:partner.example".into(), &Refused::Plaintext)
        );
        let tls = InboundFacts {
            bits: Some(256),
            certificate: None,
        };
        let r = judge(&d, &tls).unwrap_err();
        assert_eq!(
            (r.row.source(), &r.why),
            ("client-row:192.0.2.0/24".into(), &Refused::NoCertificate)
        );
    }

    #[test]
    fn each_refusal_has_its_own_words_and_the_configured_code() {
        let mut strong = row("partner.example", InboundLevel::Encrypt);
        strong.min_bits = Some(256);
        let d = decide_inbound(&[strong], Some("a@partner.example"), ip("192.0.2.7"));
        let client = "unknown[192.0.2.7]";
        let refuse = |facts: InboundFacts<'_>, code| {
            judge(&d, &facts).unwrap_err().reply(code, client).summary()
        };
        assert_eq!(
            refuse(
                InboundFacts {
                    bits: None,
                    certificate: None
                },
                450
            ),
            "450 4.7.1 Session encryption is required"
        );
        assert_eq!(
            refuse(
                InboundFacts {
                    bits: None,
                    certificate: None
                },
                550
            ),
            "550 5.7.1 Session encryption is required",
            "the enhanced class follows the code, as Postfix's smtpd_check_reject()"
        );
        assert_eq!(
            refuse(
                InboundFacts {
                    bits: Some(128),
                    certificate: None
                },
                450
            ),
            "450 4.7.0 encryption too weak 128 less than 256"
        );
        assert!(
            judge(
                &d,
                &InboundFacts {
                    bits: Some(256),
                    certificate: None
                }
            )
            .is_ok()
        );

        let v = decide_inbound(
            &[row("partner.example", InboundLevel::Verify)],
            Some("a@partner.example"),
            ip("192.0.2.7"),
        );
        let refuse =
            |facts: InboundFacts<'_>| judge(&v, &facts).unwrap_err().reply(450, client).summary();
        assert_eq!(
            refuse(InboundFacts {
                bits: Some(128),
                certificate: None
            }),
            "450 4.7.1 <unknown[192.0.2.7]>: Client certificate rejected: no client certificate presented"
        );
        let other = InboundFacts::stored(
            Some(128),
            Some(cert("other.example", "other.example", true)),
        );
        assert_eq!(
            refuse(other),
            "450 4.7.1 <other.example>: Client certificate rejected: certificate is not valid for mx.partner.example (it names other.example)"
        );
        let unverified =
            InboundFacts::stored(Some(128), Some(cert("mx", "mx.partner.example", false)));
        assert!(refuse(unverified).contains(
            "Client certificate rejected: certificate not verified when it was received"
        ));
        let good = InboundFacts::stored(Some(128), Some(cert("mx", "*.partner.example", true)));
        assert!(
            judge(&v, &good).is_ok(),
            "a wildcard in the certificate covers one label"
        );
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.partner.example", "MX.partner.example"));
        assert!(!name_matches("*.partner.example", "a.mx.partner.example"));
        assert!(!name_matches("*.partner.example", "partner.example"));
        assert!(name_matches("mx.partner.example", "mx.partner.example"));
    }
}
