//! How the embedded store walks its records for a search: the sequence numbers index
//! ranges give (several ranges merged newest first, for a `.domain` or a client network),
//! and the page they fill.

use std::collections::BinaryHeap;

use redb::{Key, ReadOnlyTable, StorageError};

use super::super::records::{Found, MAX_SCAN, Stored};
use super::super::search::{Buffers, Judge};

/// Past this many subdomains a `.domain` search walks the records instead of merging the
/// index ranges of each.
const MAX_SUBDOMAINS: usize = 256;

/// Sequence numbers of one index range, newest first.
pub(super) type SeqRange<'a> = Box<dyn Iterator<Item = Result<u64, StorageError>> + 'a>;

/// The sequence numbers of an index range of `(key, seq)` entries, newest first.
pub(super) fn newest_first<'a, K: Key + 'static>(
    range: redb::Range<'a, (K, u64), ()>,
) -> SeqRange<'a> {
    Box::new(range.rev().map(|entry| entry.map(|(k, _)| k.value().1)))
}

/// Sequence numbers from index ranges, each newest first, merged newest first.
pub(super) struct Seqs<'a> {
    ranges: Vec<SeqRange<'a>>,
    /// The next sequence number of each range that has one, and the range's place.
    heads: BinaryHeap<(u64, usize)>,
}

impl<'a> Seqs<'a> {
    pub(super) fn new(mut ranges: Vec<SeqRange<'a>>) -> Result<Seqs<'a>, StorageError> {
        let mut heads = BinaryHeap::with_capacity(ranges.len());
        for (i, range) in ranges.iter_mut().enumerate() {
            if let Some(seq) = range.next() {
                heads.push((seq?, i));
            }
        }
        Ok(Seqs { ranges, heads })
    }
}

impl Iterator for Seqs<'_> {
    type Item = Result<u64, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (seq, i) = self.heads.pop()?;
        match self.ranges[i].next() {
            Some(Ok(next)) => self.heads.push((next, i)),
            Some(Err(e)) => return Some(Err(e)),
            None => {}
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
pub(super) struct Page<'q, J: Judge> {
    query: &'q J,
    limit: usize,
    pub(super) found: Found<J::Record>,
    /// Reused from one record to the next.
    buffers: Buffers,
}

impl<'q, J: Judge> Page<'q, J> {
    pub(super) fn new(query: &'q J, limit: usize) -> Page<'q, J> {
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
