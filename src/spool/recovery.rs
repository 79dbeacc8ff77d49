//! Start-up: replay every segment into the index. A torn tail of the newest segment (a write
//! never acknowledged) is cut off; any other unreadable region may have held acknowledged
//! mail, so its segment is kept in `damaged/` with a report, never deleted.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::committer::segment_path;
use super::envelope::{Location, QueueEntry, QueueId};
use super::index::Index;
use super::record::{self, Decoded};

/// What start-up found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Messages still to be delivered (final ones are not counted).
    pub messages: usize,
    /// Highest queue ID seen, final or not: new IDs must be above it.
    pub max_id: Option<QueueId>,
    pub segments: usize,
    /// Torn tails of the newest segment, cut off: (segment file, offset, bytes skipped, why)
    pub torn: Vec<(String, u64, u64, &'static str)>,
    /// Regions that could not be read elsewhere: their segments are kept in `damaged/`.
    pub damaged: Vec<Damage>,
}

pub(super) type Recovered = (Index, Recovery, u64);

/// Where damaged segments are kept (hard links: the bytes stay when the spool lets the
/// original go), each with a `.damage.json` naming the regions that could not be read.
pub const DAMAGED_DIR: &str = "damaged";

/// A region of a segment recovery could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    pub segment: String,
    pub offset: u64,
    pub bytes: u64,
    pub why: String,
}

/// Replay every segment in order. A record that fails its checks is skipped, and reading
/// resumes at the next intact record: damage in one record loses that record only. A bad
/// region with nothing intact after it in the newest segment is the torn tail of a write
/// that was never acknowledged (the process died before its sync) and is cut off; anything
/// else may have held acknowledged mail, is reported as damage, and the segment is kept in
/// `damaged/`, never deleted.
pub(super) fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    let mut index = Index::default();
    let mut report = Recovery {
        segments: numbers.len(),
        ..Recovery::default()
    };
    for &n in &numbers {
        let newest = numbers.last() == Some(&n);
        replay_segment(dir, n, newest, &mut index, &mut report)?;
    }
    report.messages = index.messages.len();
    Ok((index, report, numbers.last().copied().unwrap_or(0)))
}

fn replay_segment(
    dir: &Path,
    n: u64,
    newest: bool,
    index: &mut Index,
    report: &mut Recovery,
) -> io::Result<()> {
    let path = segment_path(dir, n);
    narrow_to_owner(&path)?;
    let data = std::fs::read(&path)?;
    let name = file_name(&path);
    index.touch(n);
    let torn = Torn {
        path: &path,
        name: &name,
        data: &data,
        newest,
    };
    let mut damage = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        at += match record::decode(&data[at..]) {
            Decoded::Message {
                id,
                envelope,
                message,
                len,
            } => {
                let location = Location {
                    segment: n,
                    offset: at as u64,
                    len: len as u64,
                };
                report.max_id = report.max_id.max(Some(id));
                index.insert(QueueEntry::new(id, envelope, message.len(), location));
                len
            }
            Decoded::Hold { id, held, len } => {
                if let Some(entry) = index.messages.get_mut(&id) {
                    entry.held = held;
                }
                len
            }
            Decoded::Outcome { id, outcomes, len } => {
                index.apply_outcomes(id, &outcomes);
                len
            }
            Decoded::Torn(why) => match torn.skip(at, why, report, &mut damage)? {
                Some(next) => next - at,
                None => break,
            },
        };
    }
    if !damage.is_empty() {
        keep_damaged(dir, &path, &name, &damage)?;
        report.damaged.extend(damage);
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A record that does not decode, in the segment being replayed.
struct Torn<'a> {
    path: &'a Path,
    name: &'a str,
    data: &'a [u8],
    newest: bool,
}

impl Torn<'_> {
    /// Where reading resumes (the next intact record), or `None` to stop. A write cut short
    /// by a crash leaves a record that runs past the end of the newest file: never
    /// acknowledged, cut off. Anything else was written whole and is damage, kept.
    fn skip(
        &self,
        at: usize,
        why: &'static str,
        report: &mut Recovery,
        damage: &mut Vec<Damage>,
    ) -> io::Result<Option<usize>> {
        let name = self.name;
        let next = record::resync(self.data, at);
        let lost = (next.unwrap_or(self.data.len()) - at) as u64;
        let short = matches!(why, "short header" | "record runs past end of file");
        if next.is_none() && self.newest && short {
            tracing::warn!(
                target: "postern/spool",
                "warning: {name}: torn record at offset {at}, {lost} bytes skipped ({why}); it was never acknowledged"
            );
            report.torn.push((name.to_string(), at as u64, lost, why));
            // Cut off, so a later start (when this is no longer the newest) does not take
            // the old tail for damage.
            truncate(self.path, at as u64)?;
            return Ok(None);
        }
        tracing::error!(
            target: "postern/spool",
            "error: {name}: damaged record at offset {at}: {lost} bytes unreadable ({why}); they may have held acknowledged mail; segment kept as {DAMAGED_DIR}/{name}"
        );
        damage.push(Damage {
            segment: name.to_string(),
            offset: at as u64,
            bytes: lost,
            why: why.to_string(),
        });
        Ok(next)
    }
}

/// A segment written by an older version may be 0644: it holds other people's mail.
fn narrow_to_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        crate::fsutil::restrict_to_owner(path)?;
        tracing::warn!(target: "postern/spool", "warning: {}: mode was {mode:04o}, now 0600", path.display());
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Link the segment into `damaged/` (once) and write what was lost next to it.
fn keep_damaged(dir: &Path, path: &Path, name: &str, damage: &[Damage]) -> io::Result<()> {
    let kept = dir.join(DAMAGED_DIR);
    crate::fsutil::private_dir(&kept)?;
    match std::fs::hard_link(path, kept.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let report = serde_json::to_vec_pretty(damage).map_err(io::Error::other)?;
    let sidecar = kept.join(format!("{name}.damage.json"));
    let _ = std::fs::remove_file(&sidecar);
    crate::fsutil::write_secret(&sidecar, &report)?;
    std::fs::File::open(&kept)?.sync_all()
}

/// Every damaged segment kept in `dir/damaged/`, with its regions.
pub fn damaged_segments(dir: &Path) -> Vec<Damage> {
    let Ok(entries) = std::fs::read_dir(dir.join(DAMAGED_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<Damage> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damage.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Vec<Damage>>(&bytes).ok())
        .flatten()
        .collect();
    out.sort_by(|a, b| (&a.segment, a.offset).cmp(&(&b.segment, b.offset)));
    out
}
