//! Inbound TLS rows beyond their list routes (`sections`, `/api/v1/inbound-tls`): the Test
//! of a row before it is saved (`POST /api/v1/inbound-tls/test`), validated as the change
//! would be and stored nowhere, with its impact over the received records of the last 30
//! days (how much mail from that sender or client arrived, how much the row would now
//! refuse, and the latest of those); and the reply code of a refusal. The explain of a
//! sender and client is `inbound_tls`. The admin page's Inbound TLS calls these functions.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::sections::{ListChange, proposed_list};
use super::{AdminState, ApiError, apply_settings};
use crate::events::received::{Received, ReceivedFrom};
use crate::inbound::connector::common_name;
use crate::policy::inbound::{
    AppliedRow, InboundDecision, InboundFacts, InboundRefusal, Refused, RowKind, StoredCert,
    decide_inbound, judge,
};
use crate::settings::{Apply, InboundTarget, InboundTlsRow, Settings, inbound_target};

/// How far back the impact looks in the received records.
pub const IMPACT_DAYS: u64 = 30;
/// The messages the impact lists, newest first.
pub const LATEST: usize = 10;
/// The most records one impact reads: the newest first; past it the figures say so.
pub const MAX_RECORDS: u64 = 100_000;

/// A row to test, as it would be added, or as it would replace the row stored as
/// `replacing` (an edit).
#[derive(Debug, Deserialize)]
pub struct TestRequest {
    pub row: InboundTlsRow,
    #[serde(default)]
    pub replacing: Option<String>,
}

/// What the received records say the row would have done over the last `days` days.
#[derive(Debug, Serialize)]
pub struct Impact {
    /// The row as it would be stored (pattern and names normalised).
    pub row: InboundTlsRow,
    /// Whether it names senders (their domain) or clients (their address).
    pub kind: RowKind,
    /// The stored row it was tested in place of (an edit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    pub days: u64,
    /// UNIX seconds: the oldest record looked at is from this time or later.
    pub since: u64,
    /// The reply code the row would refuse with (`plaintext_reject_code`).
    pub reject_code: u16,
    /// What a session without TLS would now hear at MAIL FROM.
    pub plaintext_reply: String,
    /// Why there are no figures (this node keeps no records); the row itself is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Messages received from the row's sender domain or client network.
    pub arrived: u64,
    /// Of those, the ones a more specific row of the same kind decides, not this one.
    pub decided_by_other_rows: u64,
    /// Of those, the ones this row would now refuse.
    pub refused: u64,
    pub reasons: Reasons,
    /// The latest of the refused ones, newest first (at most `LATEST`).
    pub latest: Vec<WouldRefuse>,
    /// More than `MAX_RECORDS` records matched: the figures count the newest of them.
    pub partial: bool,
}

/// The refusals counted by why.
#[derive(Debug, Default, Serialize)]
pub struct Reasons {
    /// No TLS.
    pub plaintext: u64,
    /// TLS below the row's minimum bits.
    pub too_weak: u64,
    /// `verify` without a client certificate.
    pub no_certificate: u64,
    /// `verify` with a certificate that is not verified or names none of the row's names.
    pub certificate: u64,
}

/// One message that would now be refused, with the facts it was received with.
#[derive(Debug, Serialize)]
pub struct WouldRefuse {
    pub unix_time: u64,
    /// UTC, `2026-12-01 14:30:00`.
    pub time: String,
    pub queue_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `name[address]`, as the smtpd lines name a client.
    pub client: String,
    pub sender: String,
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`; absent: plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The client certificate's subject, issuer and whether it verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Why, in the words of the refusal.
    pub why: Refused,
    /// The reply the client would get now.
    pub reply: String,
}

/// `POST /api/v1/inbound-tls/test`.
pub async fn test(
    State(state): State<AdminState>,
    Json(req): Json<TestRequest>,
) -> Result<Json<Impact>, ApiError> {
    test_row(&state, req).await.map(Json)
}

/// The one Test of the API and the page: the change validated as it would be made (nothing
/// is stored), then each received record from the row's sender domain or client network of
/// the last `IMPACT_DAYS` days judged against the table with the row in place.
pub(crate) async fn test_row(state: &AdminState, req: TestRequest) -> Result<Impact, ApiError> {
    let typed = inbound_target(&req.row.pattern);
    let change = match req.replacing.clone() {
        Some(key) => ListChange::Replace { key, item: req.row },
        None => ListChange::Add(req.row),
    };
    let proposed = proposed_list(state, "test".into(), change).await?;
    let settings = proposed.snapshot.settings.clone();
    // Validated: the typed pattern names what exactly one stored row names.
    let (row, target) = settings
        .inbound_tls
        .iter()
        .find_map(|r| {
            let t = inbound_target(&r.pattern);
            (t.is_some() && t == typed).then(|| (r.clone(), t))
        })
        .and_then(|(r, t)| t.map(|t| (r, t)))
        .ok_or_else(|| ApiError::internal("the tested row is not in the table it was added to"))?;
    let since = crate::fsutil::unix_now().saturating_sub(IMPACT_DAYS * 86_400);
    let kind = match target {
        InboundTarget::Sender { .. } => RowKind::Sender,
        InboundTarget::Client(_) => RowKind::Client,
    };
    let reject_code = settings.inbound.plaintext_reject_code;
    let plaintext = InboundRefusal {
        row: Box::new(AppliedRow {
            kind,
            row: row.clone(),
        }),
        why: Refused::Plaintext,
    };
    let mut impact = Impact {
        kind,
        plaintext_reply: plaintext.reply(reject_code, "unknown").summary(),
        row,
        replaces: req.replacing.map(|k| k.trim().to_ascii_lowercase()),
        days: IMPACT_DAYS,
        since,
        reject_code,
        unavailable: None,
        arrived: 0,
        decided_by_other_rows: 0,
        refused: 0,
        reasons: Reasons::default(),
        latest: Vec::new(),
        partial: false,
    };
    let Some(store) = state.engine.as_ref().and_then(|e| e.events().store()) else {
        impact.unavailable = Some(NO_RECORDS.into());
        return Ok(impact);
    };
    let from = received_from(target);
    let read = super::blocking(move || store.received_from(&from, since, MAX_RECORDS)).await?;
    let (records, partial) = read.map_err(ApiError::internal)?;
    impact.partial = partial;
    count(&mut impact, &settings, &records);
    Ok(impact)
}

/// Why a node has no figures.
const NO_RECORDS: &str = "this node has no record store open (its log says why: data/log/records.redb could not be opened), so there is nothing to count from";

/// Who a row names, as the records are searched for it.
fn received_from(target: InboundTarget) -> ReceivedFrom {
    match target {
        InboundTarget::Sender { domain, subdomains } => ReceivedFrom::Domain { domain, subdomains },
        InboundTarget::Client(net) => ReceivedFrom::Network(net),
    }
}

/// Judge each record (newest first) by the tested row alone, where it is the row of its kind
/// that decides for the record's sender and client with the whole table in place.
fn count(impact: &mut Impact, settings: &Settings, records: &[Received]) {
    for r in records {
        impact.arrived += 1;
        let Ok(client) = r.client_addr.parse::<IpAddr>() else {
            continue;
        };
        let sender = (!r.sender.is_empty()).then_some(r.sender.as_str());
        let decision = decide_inbound(&settings.inbound_tls, sender, client);
        let Some(only) = only_the_row(&decision, impact.kind, &impact.row.pattern) else {
            impact.decided_by_other_rows += 1;
            continue;
        };
        let Err(refusal) = judge(&only, &facts_of(r)) else {
            continue;
        };
        impact.refused += 1;
        let reasons = &mut impact.reasons;
        *match refusal.why {
            Refused::Plaintext => &mut reasons.plaintext,
            Refused::TooWeak { .. } => &mut reasons.too_weak,
            Refused::NoCertificate => &mut reasons.no_certificate,
            Refused::Certificate { .. } => &mut reasons.certificate,
        } += 1;
        if impact.latest.len() < LATEST {
            let client = r.client();
            let reply = refusal.reply(impact.reject_code, &client).summary();
            impact.latest.push(WouldRefuse {
                unix_time: r.unix_time,
                time: crate::proto::utc_at(r.unix_time),
                queue_id: r.queue_id.clone(),
                node: r.node.clone(),
                client,
                sender: r.sender.clone(),
                tls: r.tls.as_ref().map(crate::tls::TlsInfo::describe),
                certificate: r.client_cert.as_ref().map(|c| {
                    let verified = if c.verified {
                        "verified"
                    } else {
                        "not verified"
                    };
                    format!("{}, issued by {}; {verified}", c.subject, c.issuer)
                }),
                why: refusal.why,
                reply,
            });
        }
    }
}

/// The decision with the tested row alone, when it is the one of its kind that decides.
fn only_the_row(
    decision: &InboundDecision,
    kind: RowKind,
    pattern: &str,
) -> Option<InboundDecision> {
    let applied: &Option<AppliedRow> = match kind {
        RowKind::Sender => &decision.sender_row,
        RowKind::Client => &decision.client_row,
    };
    let applied = applied.as_ref().filter(|a| a.row.pattern == pattern)?;
    let mut only = decision.clone();
    only.sender_row = None;
    only.client_row = None;
    match kind {
        RowKind::Sender => only.sender_row = Some(applied.clone()),
        RowKind::Client => only.client_row = Some(applied.clone()),
    }
    Some(only)
}

/// A record's facts as `judge` reads them: the bits of its TLS, its client certificate's
/// DNS names and whether it verified when it was received. The certificate is named by its
/// CN, as a live session's refusal names it (`check_ccert_access`'s `<CN>`), so the reply
/// the preview shows is the one the client would get.
fn facts_of(r: &Received) -> InboundFacts<'static> {
    InboundFacts::stored(
        r.tls.as_ref().map(|t| t.bits),
        r.client_cert.as_ref().map(|c| StoredCert {
            subject: common_name(&c.subject),
            names: c.names.clone(),
            verified: c.verified,
        }),
    )
}

/// Set the reply code of a row's refusal (Postfix's `plaintext_reject_code`), validated as
/// any settings change, audited as `actor`.
pub(crate) async fn set_reject_code(
    state: &AdminState,
    actor: String,
    code: u16,
) -> Result<crate::settings::Changed, ApiError> {
    apply_settings(state, actor, Apply::Yes, move |current| {
        let mut doc = current.to_doc();
        doc.inbound.plaintext_reject_code = code;
        Ok(doc)
    })
    .await
}
