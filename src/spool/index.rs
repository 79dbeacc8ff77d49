//! The in-memory index: every message not yet final, and per segment how many live
//! messages it holds, which decides when a segment file may go. Rebuilt by recovery at
//! start-up, kept current by the committer (new messages) and by recorded outcomes.

use std::collections::BTreeMap;

use super::envelope::{Final, QueueEntry, QueueId};

/// Messages not yet final, and per segment how many of them it holds.
#[derive(Default)]
pub(super) struct Index {
    pub(super) messages: BTreeMap<QueueId, QueueEntry>,
    live_per_segment: BTreeMap<u64, usize>,
}

impl Index {
    pub(super) fn insert(&mut self, entry: QueueEntry) {
        *self
            .live_per_segment
            .entry(entry.location.segment)
            .or_insert(0) += 1;
        self.messages.insert(entry.id, entry);
    }

    /// Record that `segment` exists (it may hold only outcome records).
    pub(super) fn touch(&mut self, segment: u64) {
        self.live_per_segment.entry(segment).or_insert(0);
    }

    /// A replayed outcome record: applied, and the message finished if nothing is left.
    pub(super) fn apply_outcomes(&mut self, id: QueueId, outcomes: &[(u32, Final)]) {
        if let Some(entry) = self.messages.get_mut(&id) {
            entry.apply(outcomes);
            if entry.is_final() {
                self.finish(id);
            }
        }
    }

    pub(super) fn finish(&mut self, id: QueueId) {
        if let Some(entry) = self.messages.remove(&id)
            && let Some(n) = self.live_per_segment.get_mut(&entry.location.segment)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Whether `take_deletable` would find a segment (checked before a thread is asked to).
    pub(super) fn has_deletable(&self, active: u64) -> bool {
        self.live_per_segment
            .first_key_value()
            .is_some_and(|(&seg, &live)| live == 0 && seg < active)
    }

    /// Segments that may be deleted: oldest first, while they hold no live message, and
    /// never the active one. Oldest-first matters: an outcome record always sits in the
    /// message's segment or a later one, so a later segment never goes before an earlier.
    pub(super) fn take_deletable(&mut self, active: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&seg, &live)) = self.live_per_segment.iter().next() {
            if live > 0 || seg >= active {
                break;
            }
            self.live_per_segment.remove(&seg);
            out.push(seg);
        }
        out
    }
}
