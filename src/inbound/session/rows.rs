//! Inbound TLS rows at MAIL FROM: the sender row and the client row in force at this MAIL
//! (the settings now, not those the session started with: a row added or changed applies to
//! the next MAIL of a session already open, which is not dropped), judged by
//! `policy::inbound` against the session's TLS and the client certificate shown at STARTTLS.
//! Judged at MAIL, not at connect or EHLO, so EHLO and STARTTLS still work for the client the
//! row requires them of.

use rustls_pki_types::UnixTime;

use super::Session;
use super::connector::ClientCert;
use crate::policy::inbound::{InboundFacts, InboundRefusal, PresentedCert, decide_inbound, judge};
use crate::proto::{Address, Reply};

impl Session {
    /// The refusal of MAIL FROM `from` by an inbound TLS row, logged as Postfix logs a MAIL
    /// restriction's reject (with the row that decided) and counted; `None`: no row refuses.
    pub(super) fn inbound_rows_refusal(&self, from: Option<&Address>) -> Option<Reply> {
        let snapshot = self.ctx.settings.current();
        let rows = &snapshot.settings.inbound_tls;
        if rows.is_empty() {
            return None;
        }
        let sender = from.map(Address::to_string);
        let decision = decide_inbound(rows, sender.as_deref(), self.peer_ip());
        if decision.sender_row.is_none() && decision.client_row.is_none() {
            return None;
        }
        let refusal = judge(&decision, &self.inbound_facts()).err()?;
        let code = snapshot.settings.inbound.plaintext_reject_code;
        let reply = refusal.reply(code, &self.client);
        tracing::info!(
            target: "postern/smtpd",
            "NOQUEUE: reject: MAIL from {}: {}; from=<{}> proto={} helo=<{}> policy={} source={}",
            self.client,
            reply.summary(),
            sender.unwrap_or_default(),
            if self.esmtp { "ESMTP" } else { "SMTP" },
            self.helo.as_deref().unwrap_or(""),
            refusal.row.row.level,
            refusal.row.source()
        );
        self.count_row_refusal(&refusal, from.and_then(|a| a.domain.as_deref()));
        Some(reply)
    }

    /// What the session has for a row to judge: the cipher's bits, and the client
    /// certificate checked for a row's names when a `verify` row asks
    /// (`crate::tls::verify_client_identity`: chain to the trust roots plus `extra_roots`,
    /// dates, a name, an EKU for TLS in either role).
    fn inbound_facts(&self) -> InboundFacts<'_> {
        let certificate = self
            .client_chain
            .split_first()
            .map(|(leaf, intermediates)| {
                let cn = match &self.client_cert {
                    ClientCert::Presented { cn, .. } => cn.clone(),
                    ClientCert::None => "unknown".to_string(),
                };
                let roots = &self.ctx.client_roots;
                PresentedCert {
                    cn,
                    check: Box::new(move |names: &[String]| {
                        crate::tls::verify_client_identity(
                            leaf,
                            intermediates,
                            roots,
                            names,
                            UnixTime::now(),
                        )
                        .map_err(|problem| problem.to_string())
                    }),
                }
            });
        InboundFacts {
            bits: self.tls.as_ref().map(|t| t.bits),
            certificate,
        }
    }

    /// Count a row's refusal before any message: `postern_inbound_refused_total{reason}`, and
    /// the event log's per-client and sender-domain refusal counters (`EventLog::refused`)
    /// for the reasons it has (it has none for a cipher too weak: metric only).
    fn count_row_refusal(&self, refusal: &InboundRefusal, sender_domain: Option<&str>) {
        use crate::events::received::Refusal;
        use crate::policy::inbound::Refused;
        let (metric, event) = match refusal.why {
            Refused::Plaintext => ("plaintext", Some(Refusal::PlaintextRefused)),
            Refused::TooWeak { .. } => ("strength", None),
            Refused::NoCertificate | Refused::Certificate { .. } => {
                ("certificate", Some(Refusal::CertificateRefused))
            }
        };
        crate::metrics::inbound_refused(metric);
        if let Some(event) = event {
            self.record_refusal(event, sender_domain);
        }
    }
}
