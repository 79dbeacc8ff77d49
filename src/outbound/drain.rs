//! Node drain (`postern node drain`): new mail refused, every queued message handed to a
//! peer node over SMTP with its original envelope.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Engine;
use super::grouping::{Group, GroupKey};
use crate::policy::{self, Level};
use crate::settings::Snapshot;
use crate::spool::QueueEntry;

impl Engine {
    /// `postern node drain`: from now on SMTP refuses new mail, and every queued message not
    /// on hold is handed to `peer` over SMTP with its original envelope; each is recorded as
    /// delivered only after the peer's 250, as any delivery (so a crash in between sends it
    /// twice, never loses it). Returns how many messages were queued.
    pub fn drain_to(&self, peer: SocketAddr) -> usize {
        self.handover.store(Some(Arc::new(peer)));
        self.draining.store(true, Ordering::SeqCst);
        let queued: Vec<_> = self.spool.list().into_iter().filter(|e| !e.held).collect();
        for e in &queued {
            self.spool.poke(e.id);
        }
        tracing::warn!(target: "postern/qmgr", "draining: new mail refused; {} queued message(s) handed over to [{}]:{}", queued.len(), peer.ip(), peer.port());
        queued.len()
    }

    /// The peer queued mail is handed to, while draining.
    pub fn handing_over(&self) -> Option<SocketAddr> {
        self.handover.load_full().map(|a| *a)
    }

    /// Shared with the SMTP side: true while draining.
    pub fn draining_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }
}

/// Draining: every pending recipient in one transaction to the peer, at `may` (the peer is
/// one of ours; it applies the policies when it relays).
pub(super) fn handover_group(entry: &QueueEntry, peer: SocketAddr) -> BTreeMap<GroupKey, Group> {
    let defaults = Snapshot::new(crate::settings::Settings::default(), 0);
    let key = (
        format!("[{}]:{}", peer.ip(), peer.port()),
        Level::May,
        0,
        crate::settings::OnFailure::Defer,
        None,
    );
    let group = entry
        .pending()
        .into_iter()
        .map(|i| {
            let mut d = policy::decide(&defaults, &entry.envelope.recipients[i], None, None);
            d.explanation = vec![format!(
                "handed over to [{}]:{} (node drain): may",
                peer.ip(),
                peer.port()
            )];
            (i, d)
        })
        .collect();
    BTreeMap::from([(key, group)])
}
