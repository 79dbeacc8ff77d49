//! How the embedded store walks its records for a search: the sequence numbers an index
//! range gives (several ranges merged newest first, for a `.domain`), and the page they
//! fill.

use std::iter::Rev;

use redb::{Range, ReadOnlyTable, StorageError};

use super::super::records::{Found, MAX_SCAN, Stored};
use super::super::search::{Buffers, Query};

/// Past this many subdomains a `.domain` search walks the records instead of merging the
/// index ranges of each.
const MAX_SUBDOMAINS: usize = 256;

type IndexRange = Rev<Range<'static, (&'static str, u64), ()>>;

/// Sequence numbers from index ranges, each newest first, merged newest first.
pub(super) struct Seqs {
    heads: Vec<(u64, IndexRange)>,
}

impl Seqs {
    pub(super) fn new(ranges: Vec<IndexRange>) -> Result<Seqs, StorageError> {
        let mut heads = Vec::with_capacity(ranges.len());
        for mut range in ranges {
            if let Some(entry) = range.next() {
                heads.push((entry?.0.value().1, range));
            }
        }
        Ok(Seqs { heads })
    }
}

impl Iterator for Seqs {
    type Item = Result<u64, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (i, _) = self
            .heads
            .iter()
            .enumerate()
            .max_by_key(|(_, (seq, _))| *seq)?;
        let seq = self.heads[i].0;
        match self.heads[i].1.next() {
            Some(Ok(entry)) => self.heads[i].0 = entry.0.value().1,
            Some(Err(e)) => return Some(Err(e)),
            None => drop(self.heads.swap_remove(i)),
        }
        Some(Ok(seq))
    }
}

/// `key` and every key of the index under it (`key.` and more), each once; `None` past
/// `MAX_SUBDOMAINS`. One seek per key found.
pub(super) fn keys_under(
    index: &ReadOnlyTable<(&'static str, u64), ()>,
    key: &str,
) -> Result<Option<Vec<String>>, StorageError> {
    let mut keys = vec![key.to_string()];
    // '/' follows '.' in ASCII: the keys that start with `key.` sort before `key/`.
    let end = format!("{key}/");
    let mut from = (format!("{key}."), 0u64);
    loop {
        let next = index
            .range((from.0.as_str(), from.1)..(end.as_str(), 0))?
            .next();
        let Some(entry) = next else {
            return Ok(Some(keys));
        };
        let found = entry?.0.value().0.to_string();
        if keys.len() > MAX_SUBDOMAINS {
            return Ok(None);
        }
        keys.push(found.clone());
        // After every entry of `found`: no record has the last sequence number.
        from = (found, u64::MAX);
    }
}

/// A page being filled, newest first.
pub(super) struct Page<'q> {
    query: &'q Query,
    limit: usize,
    pub(super) found: Found,
    /// Reused from one record to the next.
    buffers: Buffers,
}

impl<'q> Page<'q> {
    pub(super) fn new(query: &'q Query, limit: usize) -> Page<'q> {
        Page {
            query,
            limit: limit.max(1),
            found: Found::default(),
            buffers: Buffers::default(),
        }
    }

    /// Look at one stored record; true when the page is done (full, or `MAX_SCAN`
    /// records looked at: said, with the cursor to go on from).
    pub(super) fn look(&mut self, seq: u64, stored: &[u8]) -> bool {
        self.found.scanned += 1;
        if let Some(record) = self.query.judge_stored(stored, &mut self.buffers) {
            self.found.records.push(Stored { seq, record });
        }
        if self.found.records.len() >= self.limit {
            self.found.next = Some(seq);
            return true;
        }
        if self.found.scanned >= MAX_SCAN {
            self.found.stopped_early = true;
            self.found.next = Some(seq);
            return true;
        }
        false
    }
}
