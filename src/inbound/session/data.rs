//! DATA and BDAT (RFC 5321 section 4.1.1.4, RFC 3030): the message taken in, and made
//! ready for the spool: our Received header, control headers an outsider may not set
//! removed, and the envelope's facts read at receipt (x-TLSLevel, TLS-Required, message
//! rules, the connector's tenant). The 250 waits for the spool's commit (`committed`).

use super::{Session, Step, Transaction};
use crate::events::received::{Received, Trust};
use crate::inbound::connector::{self, ClientCert, Verdict};
use crate::inbound::message::{self, ReceivedFacts};
use crate::proto::{Address, Body, DotReader, Reply, replies};
use crate::spool::{Envelope, QueueId};

/// A message ready for the spool: our Received header and the body as the client sent it
/// (kept apart, so the spool record is the only copy made of them).
pub struct Prepared {
    pub id: QueueId,
    pub envelope: Envelope,
    pub received: String,
    pub body: Vec<u8>,
}

/// What the 250, qmgr's line and the received record say of a committed message.
pub struct Committed {
    pub id: QueueId,
    pub sender: String,
    pub size: usize,
    pub nrcpt: usize,
    /// The Microsoft 365 tenant the connector relayed it for.
    pub tenant: Option<String>,
}

impl Prepared {
    pub fn summary(&self) -> Committed {
        Committed {
            id: self.id,
            sender: self.envelope.sender.clone(),
            size: self.received.len() + self.body.len(),
            nrcpt: self.envelope.recipients.len(),
            tenant: self.envelope.tenant.clone(),
        }
    }
}

impl Session {
    pub(super) fn handle_data(&mut self) -> Step {
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
            return Err(self.refuse_content(replies::bare_lf(), "bare <LF>"));
        }
        if reader.saw_bare_cr() {
            return Err(self.refuse_content(replies::bare_cr(), "bare <CR>"));
        }
        if reader.saw_nul() {
            return Err(self.refuse_content(replies::nul_in_message(), "<NUL>"));
        }
        self.prepare(reader.into_message())
    }

    /// A message refused for what its content carries (the smuggling probes): the
    /// transaction ends, and one line names the client and the sequence, in Postfix's
    /// words: smtpd.c `log_whatsup(state, "reject", "bare <LF> received")`, which
    /// smtpd_check.c writes as `<queueid>: reject: END-OF-MESSAGE from <client>: <text>;
    /// from=<..> to=<..> proto=.. helo=<..>` (first recipient, as Postfix keeps it). The
    /// shipped fail2ban filter (config/fail2ban/postern-smtpd.conf) matches it.
    fn refuse_content(&mut self, reply: Reply, sequence: &str) -> Reply {
        let tx = self.tx.take();
        let id = tx
            .as_ref()
            .and_then(|tx| tx.id)
            .map_or_else(|| "NOQUEUE".to_string(), |id| id.to_string());
        let from = tx.as_ref().and_then(|tx| tx.from.as_ref());
        let to = tx.as_ref().and_then(|tx| tx.rcpts.first());
        tracing::info!(
            target: "postern/smtpd",
            "{id}: reject: END-OF-MESSAGE from {}: {sequence} received; from=<{}> to=<{}> proto={} helo=<{}>",
            self.client,
            from.map(Address::to_string).unwrap_or_default(),
            to.map(Address::to_string).unwrap_or_default(),
            if self.esmtp { "ESMTP" } else { "SMTP" },
            self.helo.as_deref().unwrap_or("")
        );
        reply
    }

    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) -> Step {
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
        // BDAT has no dot-stuffing, but we relay with DATA: its lines must be CRLF too, and
        // free of NUL as DATA's are (`replies::nul_in_message`).
        let refusal = match crate::proto::bare_line_ending(&bytes) {
            Some(crate::proto::BareEnding::Lf) => Some((replies::bare_lf(), "bare <LF>")),
            Some(crate::proto::BareEnding::Cr) => Some((replies::bare_cr(), "bare <CR>")),
            None if crate::proto::contains_nul(&bytes) => {
                Some((replies::nul_in_message(), "<NUL>"))
            }
            None => None,
        };
        match refusal {
            Some((reply, sequence)) => Err(self.refuse_content(reply, sequence)),
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
        match message::strip_header(&message, crate::proto::header::TLS_LEVEL) {
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

impl Session {
    /// The received record of a committed message: who sent it, how the client was
    /// trusted, the session's TLS and client certificate.
    pub fn received_record(&self, c: &Committed) -> Received {
        let trust = if let Some(user) = &self.user {
            Trust::AuthUser { user: user.clone() }
        } else if self.snapshot.is_trusted(self.peer.ip()) {
            Trust::TrustedNetwork
        } else if let ClientCert::Presented {
            verdict: Verdict::Connector(name),
            ..
        } = &self.client_cert
        {
            Trust::Connector {
                name: name.clone(),
                tenant: c.tenant.clone().unwrap_or_default(),
            }
        } else {
            Trust::None
        };
        Received {
            unix_time: crate::fsutil::unix_now(),
            queue_id: c.id.to_string(),
            node: None,
            client_name: "unknown".into(),
            client_addr: self.peer_ip().to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            sender: c.sender.clone(),
            recipients: u32::try_from(c.nrcpt).unwrap_or(u32::MAX),
            size: c.size as u64,
            trust,
            tls: self.tls.clone(),
            client_cert: self.cert_facts.clone(),
        }
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
