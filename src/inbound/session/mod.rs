//! The SMTP session as a type: one `handle_<verb>` per command, each returning what the
//! connection should do next. No I/O here; `inbound::serve` drives it.
//!
//! Here: the greeting, EHLO, STARTTLS, the envelope (MAIL, RCPT), RSET and AUTH. The
//! message stage (DATA, BDAT, the message made ready for the spool) is in `data`.

mod data;
mod rows;

use std::net::SocketAddr;
use std::sync::Arc;

use super::Context;
use super::auth::{self, Credentials, Pending};
use super::connector::{self, ClientCert};
use super::relay;
use crate::events::received::Refusal;
use crate::proto::{Address, Body, Capabilities, Command, MailParams, Reply, ehlo_reply, replies};
use crate::settings::{Snapshot, TlsMode};
use crate::spool::QueueId;
use crate::tls::TlsInfo;
pub use data::Prepared;

/// What the connection does after a command.
pub enum Step {
    Reply(Reply),
    /// Send the 220, then hand the plaintext stream over to the TLS handshake.
    StartTls(Reply),
    /// Send the 354, then read DATA.
    Data(Reply),
    /// Read a BDAT chunk of `size` bytes; keep it only if `accept` is true.
    Bdat {
        size: u64,
        last: bool,
        accept: bool,
    },
    /// Check these credentials (argon2, off the async threads).
    Auth(Credentials),
    /// Ask the relay domain's next hop whether it takes this recipient, then answer RCPT.
    VerifyRcpt(Address),
    /// Send the 221 and close.
    Quit(Reply),
}

/// Counters for the `disconnect from ... ehlo=1 mail=1 ...` line, in Postfix's order.
const VERBS: [&str; 14] = [
    "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "help", "quit", "unknown",
];

#[derive(Default)]
pub struct Counters {
    ok: [u32; VERBS.len()],
    total: [u32; VERBS.len()],
}

impl Counters {
    pub fn record(&mut self, verb: &str, ok: bool) {
        let i = VERBS
            .iter()
            .position(|v| *v == verb)
            .unwrap_or(VERBS.len() - 1);
        self.total[i] += 1;
        self.ok[i] += u32::from(ok);
    }

    /// `ehlo=1 starttls=1 mail=1 rcpt=0/1 quit=1 commands=4/5`, as Postfix logs it.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (i, verb) in VERBS.iter().enumerate() {
            if self.total[i] > 0 {
                parts.push(fraction(verb, self.ok[i], self.total[i]));
            }
        }
        let (ok, total) = (self.ok.iter().sum(), self.total.iter().sum());
        parts.push(fraction("commands", ok, total));
        parts.join(" ")
    }
}

fn fraction(name: &str, ok: u32, total: u32) -> String {
    if ok == total {
        format!("{name}={total}")
    } else {
        format!("{name}={ok}/{total}")
    }
}

struct Transaction {
    id: Option<QueueId>,
    from: Option<Address>,
    params: MailParams,
    rcpts: Vec<Address>,
    /// BDAT chunks so far.
    chunks: Vec<u8>,
    /// A BDAT chunk overflowed the size limit: the rest of the chunks are discarded.
    bdat_failed: bool,
    /// A recipient was accepted only because the session is the Microsoft 365 connector:
    /// the message must name an allowed tenant at the end of DATA.
    via_connector: bool,
}

pub struct Session {
    ctx: Arc<Context>,
    snapshot: Arc<Snapshot>,
    peer: SocketAddr,
    /// `unknown[192.0.2.1]`: no reverse lookup, as Postfix logs with peername lookup off.
    pub client: String,
    helo: Option<String>,
    esmtp: bool,
    pub tls: Option<TlsInfo>,
    /// The client certificate shown at STARTTLS, and what it is worth.
    pub client_cert: ClientCert,
    /// The chain the client showed at STARTTLS (leaf first, DER): inbound `verify` rows
    /// judge it at each MAIL against the rows then in force.
    client_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The same certificate as the received records keep it.
    cert_facts: Option<crate::events::received::CertFacts>,
    /// The SMTP AUTH user, and the mechanism it logged in with (for Postfix's
    /// `sasl_method=` on the client line).
    user: Option<String>,
    sasl_method: &'static str,
    tx: Option<Transaction>,
    pending_auth: Option<Pending>,
    pub counters: Counters,
    /// Recipients refused for `max_recipients` in this session, and whether the last reply
    /// was one of those still under the overshoot limit (not an error).
    excess_recipients: usize,
    overshoot_pardon: bool,
    /// Where the session is, as Postfix's smtpd names it in `timeout after X` and `lost
    /// connection after X`: `CONNECT`, the last command's verb, `END-OF-MESSAGE`.
    pub state: &'static str,
}

impl Session {
    pub fn new(ctx: Arc<Context>, peer: SocketAddr) -> Session {
        // Read once: a settings change applies to the next session, not this one (inbound
        // TLS rows excepted: each MAIL reads the rows in force, rows.rs).
        let snapshot = ctx.settings.current();
        Session {
            client: format!("unknown[{}]", peer.ip().to_canonical()),
            ctx,
            snapshot,
            peer,
            helo: None,
            esmtp: false,
            tls: None,
            client_cert: ClientCert::None,
            client_chain: Vec::new(),
            cert_facts: None,
            user: None,
            sasl_method: "",
            tx: None,
            pending_auth: None,
            counters: Counters::default(),
            excess_recipients: 0,
            overshoot_pardon: false,
            state: "CONNECT",
        }
    }

    /// Whether the last refusal was an excess recipient that does not count as an error
    /// (cleared by asking).
    pub fn take_overshoot_pardon(&mut self) -> bool {
        std::mem::take(&mut self.overshoot_pardon)
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP postern", self.ctx.hostname))
    }

    fn mode(&self) -> TlsMode {
        self.snapshot.settings.inbound.tls_mode
    }

    /// Trusted network or SMTP AUTH: may relay anywhere, and its `x-TLSLevel` counts.
    pub fn authorised(&self) -> bool {
        self.user.is_some() || self.snapshot.is_trusted(self.peer.ip())
    }

    pub fn awaiting_auth_response(&self) -> bool {
        self.pending_auth.is_some()
    }

    pub fn handle(&mut self, cmd: Command) -> Step {
        match cmd {
            Command::Ehlo(name) => Step::Reply(self.handle_ehlo(name)),
            Command::Helo(name) => Step::Reply(self.handle_helo(name)),
            Command::Mail { from, params } => Step::Reply(self.handle_mail(from, params)),
            Command::Rcpt { to } => self.handle_rcpt(to),
            Command::Data => self.handle_data(),
            Command::Bdat { size, last } => self.handle_bdat(size, last),
            Command::Rset => Step::Reply(self.handle_rset()),
            Command::Noop => Step::Reply(replies::ok()),
            Command::Quit => Step::Quit(replies::bye()),
            Command::Vrfy => Step::Reply(replies::vrfy()),
            Command::Help => Step::Reply(replies::help()),
            Command::StartTls => self.handle_starttls(),
            Command::Auth { mechanism, initial } => self.handle_auth(&mechanism, initial),
        }
    }

    fn handle_ehlo(&mut self, name: String) -> Reply {
        self.helo = Some(name);
        self.esmtp = true;
        self.tx = None;
        let has_users = !self.snapshot.settings.smtp_auth_users.is_empty();
        ehlo_reply(
            &self.ctx.hostname,
            &Capabilities {
                max_size: self.ctx.limits.max_message_size,
                starttls: self.tls.is_none() && self.mode() != TlsMode::Disabled,
                // RFC 4954 section 4: never offer AUTH where the password would cross in plaintext.
                auth: self.tls.is_some() && has_users && self.user.is_none(),
                // RFC 8689 section 2: only inside TLS.
                requiretls: self.tls.is_some(),
            },
        )
    }

    fn handle_helo(&mut self, name: String) -> Reply {
        self.helo = Some(name);
        self.esmtp = false;
        self.tx = None;
        Reply::plain(250, self.ctx.hostname.clone())
    }

    fn handle_starttls(&mut self) -> Step {
        // RFC 3207 section 4.2 would discard the transaction: Postfix refuses STARTTLS in one.
        if self.tx.is_some() {
            return Step::Reply(replies::bad_sequence("MAIL transaction in progress"));
        }
        if self.tls.is_some() {
            return Step::Reply(replies::bad_sequence("TLS already active"));
        }
        if self.mode() == TlsMode::Disabled {
            return Step::Reply(replies::starttls_not_offered());
        }
        Step::StartTls(replies::ready_to_start_tls())
    }

    /// After the handshake: RFC 3207 section 4.2, forget everything learnt in plaintext.
    pub fn tls_established(
        &mut self,
        info: TlsInfo,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) {
        self.tls = Some(info);
        self.client_cert = connector::examine(
            chain,
            &self.ctx.client_roots,
            &self.snapshot.settings.m365,
            self.peer.ip(),
        );
        self.client_chain = chain.to_vec();
        self.cert_facts = super::received::cert_facts(chain, &self.ctx.client_roots);
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.user = None;
    }

    fn handle_mail(&mut self, from: Option<Address>, params: MailParams) -> Reply {
        if self.helo.is_none() {
            return replies::bad_sequence("send HELO/EHLO first");
        }
        if self.mode() == TlsMode::Encrypt && self.tls.is_none() {
            let domain = from.as_ref().and_then(|a| a.domain.as_deref());
            self.record_refusal(Refusal::PlaintextRefused, domain);
            return replies::must_starttls();
        }
        if self.tx.is_some() {
            return replies::bad_sequence("nested MAIL command");
        }
        if params
            .size
            .is_some_and(|s| s > self.ctx.limits.max_message_size as u64)
        {
            return replies::size_exceeds_limit();
        }
        if from.as_ref().is_some_and(|a| !a.is_ascii()) && !params.smtputf8 {
            return replies::smtputf8_required();
        }
        if params.requiretls && self.tls.is_none() {
            return replies::requiretls_without_tls();
        }
        if params.body == Body::BinaryMime {
            // RFC 3030 section 3: BINARYMIME only where advertised, and we do not advertise
            // it: delivery uses DATA, which cannot carry unstructured binary content.
            return replies::param_unrecognized("BODY=BINARYMIME");
        }
        if let Some(reply) = self.inbound_rows_refusal(from.as_ref()) {
            return reply;
        }
        self.tx = Some(Transaction {
            id: None,
            from,
            params,
            rcpts: Vec::new(),
            chunks: Vec::new(),
            bdat_failed: false,
            via_connector: false,
        });
        replies::sender_ok()
    }

    fn handle_rcpt(&mut self, to: Address) -> Step {
        let authorised = self.authorised();
        let Some(tx) = self.tx.as_mut() else {
            return Step::Reply(replies::bad_sequence("need MAIL command"));
        };
        if !to.is_ascii() && !tx.params.smtputf8 {
            return Step::Reply(replies::smtputf8_required());
        }
        if tx.rcpts.len() >= self.ctx.limits.max_recipients {
            self.excess_recipients += 1;
            self.overshoot_pardon =
                self.excess_recipients <= self.ctx.limits.recipient_overshoot_limit;
            return Step::Reply(replies::too_many_recipients());
        }
        // The connector may relay anywhere, pending the tenant check at the end of DATA.
        let connector = !authorised && self.client_cert.is_connector();
        if let Err(reply) = relay::check_recipient(&self.snapshot, authorised || connector, &to) {
            if !(authorised || connector) && relay::needs_relay(&self.snapshot, &to) {
                let sender = tx.from.as_ref().and_then(|a| a.domain.clone());
                self.record_refusal(Refusal::RelayDenied, sender.as_deref());
            }
            let reply = self.connector_refusal(&to).unwrap_or(reply);
            return Step::Reply(self.rcpt_rejected(&to, reply));
        }
        if connector && relay::needs_relay(&self.snapshot, &to) {
            tx.via_connector = true;
        }
        if self.snapshot.verifies_by_call_ahead(&to.to_string()) {
            return Step::VerifyRcpt(to);
        }
        Step::Reply(self.rcpt_accepted(to))
    }

    /// A refusal before a message, counted by the event log (per day, client, sender domain).
    fn record_refusal(&self, reason: Refusal, sender_domain: Option<&str>) {
        if let Some(events) = &self.ctx.events {
            events.refused(self.peer_ip(), sender_domain, reason);
        }
    }

    /// With the connector profile on, a relay refusal says which connector check failed.
    fn connector_refusal(&self, to: &Address) -> Option<Reply> {
        let relaying = !self.authorised() && relay::needs_relay(&self.snapshot, to);
        (relaying && self.snapshot.settings.m365.enabled && self.tls.is_some())
            .then(|| self.client_cert.refusal(&to.to_string()))
    }

    /// The next hop's answer about `to`, as the reply to its RCPT.
    pub fn rcpt_verified(&mut self, to: Address, verdict: crate::recipient::Verdict) -> Reply {
        use crate::recipient::Verdict;
        match verdict {
            Verdict::Exists => self.rcpt_accepted(to),
            Verdict::Unknown(why) => {
                let reply = replies::undeliverable_address(&to.to_string(), &why);
                self.rcpt_rejected(&to, reply)
            }
            Verdict::Unverified(why) => {
                let reply = replies::unverified_address(&to.to_string(), &why);
                self.rcpt_rejected(&to, reply)
            }
        }
    }

    fn rcpt_rejected(&self, to: &Address, reply: Reply) -> Reply {
        let from = self
            .tx
            .as_ref()
            .and_then(|tx| tx.from.as_ref())
            .map(Address::to_string)
            .unwrap_or_default();
        tracing::info!(
            target: "postern/smtpd",
            "NOQUEUE: reject: RCPT from {}: {}; from=<{from}> to=<{to}> proto={} helo=<{}>",
            self.client,
            reply.summary(),
            if self.esmtp { "ESMTP" } else { "SMTP" },
            self.helo.as_deref().unwrap_or("")
        );
        reply
    }

    fn rcpt_accepted(&mut self, to: Address) -> Reply {
        let Some(tx) = self.tx.as_mut() else {
            return replies::bad_sequence("need MAIL command");
        };
        if tx.id.is_none() {
            // Like Postfix, the queue ID is assigned when the first recipient is accepted.
            let id = self.ctx.spool.next_id();
            tx.id = Some(id);
            let sasl = self
                .user
                .as_deref()
                .map(|u| format!(", sasl_method={}, sasl_username={u}", self.sasl_method))
                .unwrap_or_default();
            tracing::info!(target: "postern/smtpd", "{id}: client={}{sasl}", self.client);
        }
        tx.rcpts.push(to);
        replies::recipient_ok()
    }

    fn handle_rset(&mut self) -> Reply {
        self.tx = None;
        replies::ok()
    }

    fn handle_auth(&mut self, mechanism: &str, initial: Option<String>) -> Step {
        if self.tls.is_none() || self.snapshot.settings.smtp_auth_users.is_empty() {
            return Step::Reply(replies::auth_not_enabled());
        }
        if self.user.is_some() {
            return Step::Reply(replies::bad_sequence("already authenticated"));
        }
        if self.tx.is_some() {
            return Step::Reply(replies::bad_sequence("MAIL transaction in progress"));
        }
        match (mechanism, initial) {
            // RFC 4954 section 4: "=" is an empty initial response.
            ("PLAIN", Some(text)) if text != "=" => self.auth_step(auth::decode_plain(&text)),
            ("PLAIN", _) => {
                self.pending_auth = Some(Pending::Plain);
                Step::Reply(Reply::plain(334, ""))
            }
            ("LOGIN", Some(user)) => match auth::decode_b64(&user) {
                Ok(user) => {
                    self.pending_auth = Some(Pending::LoginPassword { user });
                    Step::Reply(auth::challenge("Password:"))
                }
                Err(reply) => Step::Reply(reply),
            },
            ("LOGIN", None) => {
                self.pending_auth = Some(Pending::LoginUser);
                Step::Reply(auth::challenge("Username:"))
            }
            _ => Step::Reply(replies::auth_mechanism_unknown()),
        }
    }

    /// A line sent in answer to a 334 challenge.
    pub fn handle_auth_response(&mut self, line: &[u8]) -> Step {
        let Some(pending) = self.pending_auth.take() else {
            return Step::Reply(replies::bad_sequence("no authentication in progress"));
        };
        let Ok(text) = std::str::from_utf8(line) else {
            return Step::Reply(auth::cannot_decode());
        };
        if text.trim() == "*" {
            return Step::Reply(replies::auth_cancelled());
        }
        match pending {
            Pending::Plain => self.auth_step(auth::decode_plain(text)),
            Pending::LoginUser => match auth::decode_b64(text) {
                Ok(user) => {
                    self.pending_auth = Some(Pending::LoginPassword { user });
                    Step::Reply(auth::challenge("Password:"))
                }
                Err(reply) => Step::Reply(reply),
            },
            Pending::LoginPassword { user } => match auth::decode_b64(text) {
                Ok(password) => Step::Auth(Credentials {
                    mechanism: "LOGIN",
                    user,
                    password,
                }),
                Err(reply) => Step::Reply(reply),
            },
        }
    }

    fn auth_step(&mut self, decoded: Result<Credentials, Reply>) -> Step {
        match decoded {
            Ok(creds) => Step::Auth(creds),
            Err(reply) => Step::Reply(reply),
        }
    }

    /// The stored hash for `user` (or `None`: the caller still spends the time of a check).
    pub fn peer_ip(&self) -> std::net::IpAddr {
        self.peer.ip().to_canonical()
    }

    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.snapshot.password_hash(user).map(str::to_string)
    }

    pub fn auth_result(&mut self, creds: &Credentials, ok: bool) -> Reply {
        if ok {
            self.user = Some(creds.user.clone());
            self.sasl_method = creds.mechanism;
            replies::auth_ok()
        } else {
            self.log_auth_failure(creds, "authentication failure");
            replies::auth_failed()
        }
    }

    /// The client address is over its limit: refused without a check, and logged as a
    /// failure so fail2ban sees every attempt.
    pub fn auth_refused(&mut self, creds: &Credentials) -> Reply {
        self.log_auth_failure(creds, "too many failed attempts from this address");
        replies::auth_locked_out()
    }

    /// Postfix's wording, one line per failed attempt naming client and user (fail2ban's
    /// `postfix[mode=auth]` filter matches it; the log escapes what the client sent). The
    /// password is never logged.
    fn log_auth_failure(&self, creds: &Credentials, why: &str) {
        tracing::warn!(
            target: "postern/smtpd",
            "warning: {}: SASL {} authentication failed: {why}, sasl_username={}",
            self.client,
            creds.mechanism,
            creds.user
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_in_postfix_form() {
        let mut c = Counters::default();
        c.record("ehlo", true);
        c.record("starttls", true);
        c.record("mail", true);
        c.record("rcpt", false);
        c.record("rcpt", true);
        c.record("quit", true);
        assert_eq!(
            c.summary(),
            "ehlo=1 starttls=1 mail=1 rcpt=1/2 quit=1 commands=5/6"
        );
    }
}
