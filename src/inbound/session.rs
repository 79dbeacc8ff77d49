//! The SMTP session as a type: one `handle_<verb>` per command, each returning what the
//! connection should do next. No I/O here; `inbound::serve` drives it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Context;
use super::auth::{self, Credentials, Pending};
use super::connector::{self, ClientCert};
use super::message::{self, ReceivedFacts};
use super::relay;
use crate::proto::{
    Address, Body, Capabilities, Command, DotReader, MailParams, Reply, ehlo_reply, replies,
};
use crate::settings::{Snapshot, TlsMode};
use crate::spool::{Envelope, QueueId};
use crate::tls::TlsInfo;

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

/// A message ready for the spool: our Received header and the body as the client sent it
/// (kept apart, so the spool record is the only copy made of them).
pub struct Prepared {
    pub id: QueueId,
    pub envelope: Envelope,
    pub received: String,
    pub body: Vec<u8>,
}

/// What the 250 and qmgr's line say of a committed message.
pub struct Committed {
    pub id: QueueId,
    pub sender: String,
    pub size: usize,
    pub nrcpt: usize,
}

impl Prepared {
    pub fn summary(&self) -> Committed {
        Committed {
            id: self.id,
            sender: self.envelope.sender.clone(),
            size: self.received.len() + self.body.len(),
            nrcpt: self.envelope.recipients.len(),
        }
    }
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
        // Read once: a settings change applies to the next session, not this one.
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

    /// With the connector profile on, a relay refusal says which connector check failed.
    fn connector_refusal(&self, to: &Address) -> Option<Reply> {
        let relaying = !self.authorised() && relay::needs_relay(&self.snapshot, to);
        (relaying && self.snapshot.settings.m365.enabled && self.tls.is_some())
            .then(|| self.client_cert.refusal(&to.to_string()))
    }

    /// The next hop's answer about `to`, as the reply to its RCPT.
    pub fn rcpt_verified(&mut self, to: Address, verdict: super::verify::Verdict) -> Reply {
        use super::verify::Verdict;
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

    fn handle_data(&mut self) -> Step {
        match self.tx.as_ref() {
            None => Step::Reply(replies::bad_sequence("need RCPT command")),
            Some(tx) if tx.rcpts.is_empty() => Step::Reply(Reply::new(
                554,
                crate::proto::Enhanced(5, 5, 1),
                "Error: no valid recipients",
            )),
            // RFC 3030 section 3: DATA may not follow BDAT in one transaction.
            Some(tx) if !tx.chunks.is_empty() => {
                Step::Reply(replies::bad_sequence("DATA after BDAT"))
            }
            Some(_) => Step::Data(replies::start_data()),
        }
    }

    pub fn data_reader(&self) -> DotReader {
        DotReader::new(self.ctx.limits.max_message_size)
    }

    /// The DATA has ended: check it and prepare it for the spool, or say why not.
    pub fn end_of_data(&mut self, reader: DotReader) -> Result<Prepared, Reply> {
        if reader.overflowed() {
            self.tx = None;
            return Err(replies::message_too_big());
        }
        if reader.saw_bare_lf() {
            self.tx = None;
            return Err(replies::bare_lf());
        }
        if reader.saw_bare_cr() {
            self.tx = None;
            return Err(replies::bare_cr());
        }
        self.prepare(reader.into_message())
    }

    fn handle_bdat(&mut self, size: u64, last: bool) -> Step {
        let limit = self.ctx.limits.max_message_size as u64;
        let accept = match self.tx.as_mut() {
            Some(tx) if !tx.rcpts.is_empty() && !tx.bdat_failed => {
                if tx.chunks.len() as u64 + size > limit {
                    tx.bdat_failed = true;
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        Step::Bdat { size, last, accept }
    }

    /// A BDAT chunk has been read (or discarded). Returns the reply, or the message when
    /// this was the LAST chunk of an accepted transaction.
    pub fn bdat_chunk(
        &mut self,
        chunk: Vec<u8>,
        size: u64,
        last: bool,
    ) -> Result<Option<Prepared>, Reply> {
        let Some(tx) = self.tx.as_mut() else {
            return Err(replies::bad_sequence("need MAIL command"));
        };
        if tx.rcpts.is_empty() {
            return Err(Reply::new(
                554,
                crate::proto::Enhanced(5, 5, 1),
                "Error: no valid recipients",
            ));
        }
        if tx.bdat_failed {
            if last {
                self.tx = None;
            }
            return Err(replies::message_too_big());
        }
        if tx.chunks.is_empty() {
            tx.chunks = chunk;
        } else {
            tx.chunks.extend_from_slice(&chunk);
        }
        if !last {
            return Err(replies::chunk_ok(size as usize));
        }
        let bytes = std::mem::take(&mut tx.chunks);
        // BDAT has no dot-stuffing, but we relay with DATA: its lines must be CRLF too.
        match crate::proto::bare_line_ending(&bytes) {
            Some(ending) => {
                self.tx = None;
                Err(match ending {
                    crate::proto::BareEnding::Lf => replies::bare_lf(),
                    crate::proto::BareEnding::Cr => replies::bare_cr(),
                })
            }
            None => self.prepare(bytes).map(Some),
        }
    }

    /// Received header, control-header removal, envelope.
    fn prepare(&mut self, message: Vec<u8>) -> Result<Prepared, Reply> {
        let tx = self
            .tx
            .take()
            .ok_or_else(|| replies::bad_sequence("need MAIL command"))?;
        let id = tx
            .id
            .ok_or_else(|| replies::bad_sequence("need RCPT command"))?;
        let authorised = self.authorised();
        let tenant = match tx.via_connector {
            true => Some(self.connector_tenant(&message, &tx)?),
            false => None,
        };
        let body = self.without_outsider_tls_header(message, authorised, id);
        let body = self.without_forged_tenant_headers(body, authorised, id);
        let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].to_string());
        let received = message::received_header(&ReceivedFacts {
            helo: self.helo.as_deref().unwrap_or(""),
            client_ip: &self.peer.ip().to_canonical().to_string(),
            tls: self.tls.as_ref(),
            client_cert: self.client_cert.received_note(),
            authenticated: self.user.is_some(),
            esmtp: self.esmtp,
            hostname: &self.ctx.hostname,
            queue_id: &id.to_string(),
            single_recipient: single.as_deref(),
            date: &crate::proto::rfc5322_now(),
        });
        let envelope = Envelope {
            sender: tx.from.as_ref().map(Address::to_string).unwrap_or_default(),
            recipients: tx.rcpts.iter().map(Address::to_string).collect(),
            client_ip: self.peer.ip().to_canonical().to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            authorised,
            smtputf8: tx.params.smtputf8 && needs_smtputf8(&tx, &body),
            eight_bit: tx.params.body != Body::SevenBit,
            received_unix: crate::fsutil::unix_now(),
            rule_levels: Vec::new(),
            // After the strip: an outsider's header is gone, so it reads as absent.
            tls_header: crate::spool::TlsHeader::of(&body),
            tenant,
            requiretls: tx.params.requiretls,
            // RFC 8689 section 5: ignored when REQUIRETLS is also asked for, and here only
            // honoured from clients that may set postern's policy at all.
            tls_required_no: authorised && !tx.params.requiretls && tls_required_no(&body),
        };
        let envelope = crate::spool::Envelope {
            rule_levels: self.rule_levels(&envelope),
            ..envelope
        };
        Ok(Prepared {
            id,
            envelope,
            received,
            body,
        })
    }

    /// The connector's message must name an allowed tenant, or nothing of it is relayed:
    /// the 550 and Postfix's reject line say which check failed.
    fn connector_tenant(&self, message: &[u8], tx: &Transaction) -> Result<String, Reply> {
        connector::tenant_of(message, &self.snapshot.settings.m365).inspect_err(|reply| {
            let from = tx.from.as_ref().map(Address::to_string).unwrap_or_default();
            let to = tx.rcpts.first().map(Address::to_string).unwrap_or_default();
            tracing::info!(
                target: "postern/smtpd",
                "NOQUEUE: reject: END-OF-MESSAGE from {}: {}; from=<{from}> to=<{to}> proto=ESMTP helo=<{}>",
                self.client,
                reply.summary(),
                self.helo.as_deref().unwrap_or("")
            );
        })
    }

    /// Tenant headers from anyone but the connector give no rights and must not reach a
    /// tenant that would trust them: gone before the spool, as an outsider's x-TLSLevel.
    fn without_forged_tenant_headers(
        &self,
        message: Vec<u8>,
        authorised: bool,
        id: crate::spool::QueueId,
    ) -> Vec<u8> {
        if authorised || self.client_cert.is_connector() {
            return message;
        }
        match message::strip_matching(&message, connector::is_tenant_header) {
            (std::borrow::Cow::Owned(kept), removed) => {
                tracing::info!(
                    target: "postern/cleanup",
                    "{id}: removed {removed} Microsoft 365 tenant header(s) from client {}, which is not the connector",
                    self.client
                );
                kept
            }
            (std::borrow::Cow::Borrowed(_), _) => message,
        }
    }

    /// Outsiders must not choose our outbound TLS: no x-TLSLevel a lenient next hop could read
    /// reaches the spool (`strip_header`). The reader's buffer is kept unless a header goes.
    fn without_outsider_tls_header(
        &self,
        message: Vec<u8>,
        authorised: bool,
        id: crate::spool::QueueId,
    ) -> Vec<u8> {
        if authorised {
            return message;
        }
        match message::strip_header(&message, "x-TLSLevel") {
            (std::borrow::Cow::Owned(kept), removed) => {
                tracing::info!(
                    target: "postern/cleanup",
                    "{id}: removed {removed} x-TLSLevel header(s) from unauthorised client {}",
                    self.client
                );
                kept
            }
            (std::borrow::Cow::Borrowed(_), _) => message,
        }
    }

    /// Message rules run per recipient now, at receipt; the result travels in the spool
    /// (nothing at all when no rule matched).
    fn rule_levels(&self, envelope: &Envelope) -> Vec<Option<crate::levels::RuleLevel>> {
        let levels: Vec<_> = envelope
            .recipients
            .iter()
            .map(|r| crate::policy::rule_for(&self.snapshot, &envelope.sender, r))
            .collect();
        if levels.iter().any(Option::is_some) {
            levels
        } else {
            Vec::new()
        }
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

    /// The message is on disk: the 250, and qmgr's line.
    pub fn committed(&self, prepared: &Committed) -> Reply {
        tracing::info!(
            target: "postern/qmgr",
            "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            prepared.id,
            prepared.sender,
            prepared.size,
            prepared.nrcpt
        );
        replies::queued(&prepared.id.to_string())
    }
}

/// `TLS-Required: No` (RFC 8689 section 5; the only value the field has).
fn tls_required_no(message: &[u8]) -> bool {
    crate::proto::header::first_value(message, "TLS-Required")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"))
}

/// SMTPUTF8 asked for, but is it needed? Only for addresses or header fields in UTF-8 (RFC
/// 6531 section 3.4, RFC 6532): an 8-bit body is 8BITMIME's. Exchange Online asks for it on
/// plain ASCII mail; demanding it downstream would bounce that mail at every host without
/// it (Postfix's `smtputf8_autodetect_classes` decides so too).
fn needs_smtputf8(tx: &Transaction, message: &[u8]) -> bool {
    let addresses = tx.from.iter().chain(tx.rcpts.iter()).any(|a| !a.is_ascii());
    let end = crate::proto::header::section_end(message);
    addresses || !message[..end].is_ascii()
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
