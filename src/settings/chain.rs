//! What binds the rows of the shared settings database together, so that somebody who can
//! write to it but has no key cannot roll anything back (issue 27, break 5).
//!
//! Sealing each row alone proves who wrote it, not when: an old sealed row, kept and written
//! back later, opens as well as the newest. So one row, the head (`postern_settings_current`),
//! is the root of everything else, and its sealed content says:
//! - its **generation**, raised by every write of the store (settings, admin users,
//!   certificates); only a key holder can seal a head with a higher one;
//! - the **chain**: the generation and digest (SHA-256 of the sealed bytes) of the heads before
//!   it, the last being the one it replaced. A node accepts a head only if it is the one it
//!   holds or names that one in its chain: an older head put back, or one written from an
//!   older copy (a fork), is refused;
//! - the settings **version** and the document;
//! - the digest of every admin-user and certificate row, and of the audit row of its version.
//!   A row is used only if its sealed bytes are the ones the head names: an old row put back
//!   has other bytes (a fresh nonce each write), a deleted one put back is not named.
//!
//! Each audit row names the digest of the one before it, so the log is a chain hanging from the
//! head as well. What a node holds is kept in its copy of the settings (`PgStore::remember`), so
//! a restart does not forget which generation it had reached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Settings;
use super::store::AuditEntry;

/// How many earlier heads a head names: a node that missed up to this many writes (an outage)
/// still checks that the head descends from the one it holds. One that missed more can only
/// check the generation, which is still never lower than its own for a replayed head.
pub const CHAIN_KEEP: usize = 64;

/// The sealed content of the head row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    /// The settings version: the audit log's numbering.
    pub version: u64,
    pub settings: Settings,
    pub links: Links,
}

/// What a head binds besides the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// Raised by every write of the store.
    pub generation: u64,
    /// (generation, digest) of the heads before this one, oldest first; at most `CHAIN_KEEP`.
    pub chain: Vec<(u64, String)>,
    /// `table/name` of every admin-user and certificate row -> digest of its sealed bytes.
    pub rows: BTreeMap<String, String>,
    /// Digest of the sealed audit row of `version`; empty when there is none.
    pub audit: String,
}

/// A head this node checked, with the digest of its sealed bytes.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub head: Head,
    pub digest: String,
}

/// An audit row's sealed content: the entry, and the digest of the row before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Empty for the first version.
    #[serde(default)]
    pub chain: String,
}

/// SHA-256 of sealed bytes, in hex.
pub fn digest(sealed: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(sealed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hex of a digest PostgreSQL computed (`sha256(sealed)`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a head read from the database may replace the one held.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The very one held.
    Same,
    /// Written after it, on top of it (or first contact: nothing held yet).
    Follows,
    /// Why not: said in the log and on every page.
    Refused(String),
}

/// The head written after `prev` (with the digest of its sealed bytes): one generation on, the
/// chain one longer; the rows and audit digest as they were, for the writer to change.
pub fn next(prev: Option<(&Head, &str)>, version: u64, settings: Settings) -> Head {
    let mut links = prev.map(|(h, _)| h.links.clone()).unwrap_or_default();
    if let Some((h, d)) = prev {
        links.chain.push((h.links.generation, d.to_string()));
        let over = links.chain.len().saturating_sub(CHAIN_KEEP);
        links.chain.drain(..over);
    }
    links.generation += 1;
    Head {
        version,
        settings,
        links,
    }
}

/// `head` (sealed digest `digest`) judged against `held`.
pub fn judge(held: Option<&Trusted>, head: &Head, digest: &str) -> Verdict {
    let Some(held) = held else {
        return Verdict::Follows;
    };
    if digest == held.digest {
        return Verdict::Same;
    }
    let (g, mine) = (head.links.generation, held.head.links.generation);
    let what = format!(
        "the settings row holds generation {g} (settings version {})",
        head.version
    );
    let ours = format!(
        "generation {mine} (settings version {}) this node holds",
        held.head.version
    );
    if g < mine {
        return Verdict::Refused(format!("{what}, older than {ours}"));
    }
    if g == mine {
        return Verdict::Refused(format!("{what}, another than {ours}"));
    }
    match head.links.chain.iter().find(|(cg, _)| *cg == mine) {
        Some((_, d)) if *d == held.digest => Verdict::Follows,
        // Beyond the chain's reach: the generation alone, which only a key holder raises.
        None if head.links.chain.first().is_some_and(|(cg, _)| *cg > mine) => Verdict::Follows,
        _ => Verdict::Refused(format!("{what}, which does not descend from {ours}")),
    }
}

/// The rows of `table` (name, digest of its sealed bytes) that `links` names with that digest,
/// by index; and what is wrong with the others, and with rows it names that are not there.
pub fn check_rows(
    links: &Links,
    table: &str,
    found: &[(String, String)],
) -> (Vec<usize>, Vec<String>) {
    let (mut good, mut wrong) = (Vec::new(), Vec::new());
    for (i, (name, d)) in found.iter().enumerate() {
        match links.rows.get(&format!("{table}/{name}")) {
            Some(want) if want == d => good.push(i),
            Some(_) => wrong.push(format!(
                "{table}/{name} is not the row generation {} names (an older copy put back?)",
                links.generation
            )),
            None => wrong.push(format!(
                "{table}/{name} is a row generation {} does not name (a deleted row put back?)",
                links.generation
            )),
        }
    }
    let prefix = format!("{table}/");
    for key in links.rows.keys().filter(|k| k.starts_with(&prefix)) {
        if !found.iter().any(|(n, _)| key[prefix.len()..] == *n) {
            wrong.push(format!(
                "{key} is missing (generation {} names it)",
                links.generation
            ));
        }
    }
    (good, wrong)
}

/// Of audit rows newest first (digest of the sealed row, its content), how many lead without a
/// break from the head's version down; and the break, if one comes before they run out.
/// Rows newer than the head are skipped (written by a head this node has not taken).
pub fn check_audit(head: &Head, rows: &[(String, AuditRecord)]) -> (Vec<usize>, Option<String>) {
    let mut want = (head.version, head.links.audit.clone());
    let mut good = Vec::new();
    for (i, (d, record)) in rows.iter().enumerate() {
        let seq = record.entry.seq;
        if seq > want.0 || want.1.is_empty() {
            continue;
        }
        if seq < want.0 {
            return (good, Some(format!("audit version {} is missing", want.0)));
        }
        if *d != want.1 {
            return (
                good,
                Some(format!(
                    "audit version {seq} is not the entry the chain names"
                )),
            );
        }
        good.push(i);
        want = (seq.saturating_sub(1), record.chain.clone());
    }
    (good, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(head: Head, digest: &str) -> Trusted {
        Trusted {
            head,
            digest: digest.into(),
        }
    }

    /// Heads 1..=n, each on the one before, with made-up digests `d1`, `d2`, ...
    fn line(n: u64) -> Vec<Trusted> {
        let mut out: Vec<Trusted> = Vec::new();
        for i in 1..=n {
            let prev = out.last().map(|t| (&t.head, t.digest.as_str()));
            let head = next(prev, i, Settings::default());
            out.push(trusted(head, &format!("d{i}")));
        }
        out
    }

    #[test]
    fn a_head_is_taken_only_on_top_of_the_one_held() {
        let heads = line(5);
        let held = &heads[2];
        let judge_of = |t: &Trusted| judge(Some(held), &t.head, &t.digest);
        assert_eq!(judge_of(&heads[2]), Verdict::Same);
        assert_eq!(judge_of(&heads[3]), Verdict::Follows);
        assert_eq!(judge_of(&heads[4]), Verdict::Follows, "two writes missed");
        let Verdict::Refused(why) = judge_of(&heads[1]) else {
            panic!("an older head put back was taken")
        };
        assert_eq!(
            why,
            "the settings row holds generation 2 (settings version 2), older than generation 3 (settings version 3) this node holds"
        );
        // Written from an older copy: generation 4 on top of 2, not of the 3 held.
        let fork = trusted(
            next(Some((&heads[1].head, "d2")), 3, Settings::default()),
            "x",
        );
        let fork = trusted(next(Some((&fork.head, "x")), 4, Settings::default()), "y");
        assert!(matches!(judge_of(&fork), Verdict::Refused(w) if w.contains("does not descend")));
        assert_eq!(judge(None, &heads[0].head, "d1"), Verdict::Follows);
    }

    #[test]
    fn the_chain_is_bounded_and_beyond_it_the_generation_decides() {
        let heads = line(CHAIN_KEEP as u64 + 3);
        let last = heads.last().unwrap();
        assert_eq!(last.head.links.chain.len(), CHAIN_KEEP);
        assert_eq!(
            judge(Some(&heads[0]), &last.head, &last.digest),
            Verdict::Follows
        );
        assert!(matches!(
            judge(Some(last), &heads[0].head, &heads[0].digest),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn rows_are_used_only_as_the_head_names_them() {
        let mut links = Links {
            generation: 7,
            ..Links::default()
        };
        links.rows.insert("admins/alice".into(), "a1".into());
        links.rows.insert("admins/bob".into(), "b1".into());
        links.rows.insert("certs/mx".into(), "c1".into());
        let found = [
            ("alice".to_string(), "a1".to_string()),
            ("bob".to_string(), "b0".to_string()),
            ("carol".to_string(), "c0".to_string()),
        ];
        let (good, wrong) = check_rows(&links, "admins", &found);
        assert_eq!(good, vec![0]);
        assert_eq!(
            wrong,
            vec![
                "admins/bob is not the row generation 7 names (an older copy put back?)"
                    .to_string(),
                "admins/carol is a row generation 7 does not name (a deleted row put back?)"
                    .to_string(),
            ]
        );
        let (_, wrong) = check_rows(&links, "certs", &[]);
        assert_eq!(
            wrong,
            vec!["certs/mx is missing (generation 7 names it)".to_string()]
        );
    }

    fn record(seq: u64, chain: &str) -> AuditRecord {
        AuditRecord {
            entry: AuditEntry {
                seq,
                unix_time: 0,
                actor: "t".into(),
                previous: None,
                new: Settings::default(),
                certificates: Vec::new(),
            },
            chain: chain.into(),
        }
    }

    #[test]
    fn the_audit_log_is_shown_as_far_as_it_chains() {
        let mut head = next(None, 3, Settings::default());
        head.links.audit = "a3".into();
        let rows = vec![
            ("a3".to_string(), record(3, "a2")),
            ("a2".to_string(), record(2, "a1")),
            ("a1".to_string(), record(1, "")),
        ];
        assert_eq!(check_audit(&head, &rows), (vec![0, 1, 2], None));
        let mut replaced = rows.clone();
        replaced[1].0 = "old".into();
        assert_eq!(
            check_audit(&head, &replaced),
            (
                vec![0],
                Some("audit version 2 is not the entry the chain names".into())
            )
        );
        let gap = vec![rows[0].clone(), rows[2].clone()];
        assert_eq!(
            check_audit(&head, &gap),
            (vec![0], Some("audit version 2 is missing".into()))
        );
        // Pruned history just ends.
        assert_eq!(check_audit(&head, &rows[..2]), (vec![0, 1], None));
    }
}
