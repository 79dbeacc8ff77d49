//! The DATA reader: removes dot-stuffing and finds the end of data (RFC 5321 section 4.5.2),
//! as a pure state machine fed with whatever bytes the socket produced.
//!
//! Only `<CR><LF>.<CR><LF>` ends the data. A bare LF or a bare CR anywhere is remembered so the
//! session can refuse the message: accepting `<LF>.<LF>`-style endings is the SMTP smuggling
//! class of bugs (CVE-2023-51764), and forwarding bare LFs or CRs (`<CR>.<CR>`) lets a
//! downstream server that ends lines on them be smuggled.
//!
//! A NUL anywhere is remembered too: message text carries no NUL (RFC 5322 section 2.3 and
//! section 3.5 `text`, RFC 2045 section 2.7/2.8 for 7bit and 8bit data; RFC 5321 section
//! 4.1.1.4 warns against control characters), and a receiver that drops NULs before looking
//! for the end of data reads `<CR><LF><NUL>.<CR><LF>` as one (the smuggling scanners' probe).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line.
    LineStart,
    /// Saw `.` at the start of a line (dropped unless the line turns out to be the end).
    Dot,
    /// Saw `.<CR>` at the start of a line.
    DotCr,
    /// Inside a line.
    Text,
    /// Saw `<CR>` inside a line.
    Cr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the end of data has not been seen yet.
    NeedMore,
    /// End of data seen; `consumed` bytes of the last input belonged to the message
    /// (the rest is pipelined commands).
    Done { consumed: usize },
}

#[derive(Debug)]
pub struct DotReader {
    state: State,
    out: Vec<u8>,
    limit: usize,
    size: usize,
    bare_lf: bool,
    bare_cr: bool,
    nul: bool,
}

impl DotReader {
    /// `limit`: the most bytes kept; beyond it bytes are counted but dropped, and
    /// `overflowed()` tells the session to answer 552 once the data has ended.
    pub fn new(limit: usize) -> Self {
        DotReader {
            state: State::LineStart,
            out: Vec::with_capacity(limit.min(64 * 1024)),
            limit,
            size: 0,
            bare_lf: false,
            bare_cr: false,
            nul: false,
        }
    }

    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Inside a line only CR, LF and NUL change anything: the run up to the next
                // one is copied at once (memchr), the rest goes byte by byte.
                let run = memchr::memchr3(b'\r', b'\n', 0, &input[i..]).unwrap_or(input.len() - i);
                self.push_slice(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            if self.step(input[i]) {
                return Progress::Done { consumed: i + 1 };
            }
            i += 1;
        }
        Progress::NeedMore
    }

    /// One byte; true at the end of data.
    fn step(&mut self, b: u8) -> bool {
        // NUL is data to the state machine (never CR, LF or a dot), only flagged.
        self.nul |= b == 0;
        match (self.state, b) {
            (State::LineStart, b'.') => self.state = State::Dot,
            (State::Dot, b'\r') => self.state = State::DotCr,
            (State::DotCr, b'\n') => return true,
            (State::DotCr, _) => {
                // `.<CR>x`: the dot was a (removed) stuffing dot, the CR is data.
                self.push(b'\r');
                self.state = State::Cr;
                return self.step(b);
            }
            (State::Cr, b'\r') => {
                // The first CR had no LF after it.
                self.bare_cr = true;
                self.push(b'\r');
            }
            (State::LineStart | State::Text, b'\r') => {
                self.push(b'\r');
                self.state = State::Cr;
            }
            (State::Cr, b'\n') => {
                self.push(b'\n');
                self.state = State::LineStart;
            }
            (_, b'\n') => {
                self.bare_lf = true;
                self.push(b'\n');
                self.state = State::Text;
            }
            (State::Cr, _) => {
                self.bare_cr = true;
                self.push(b);
                self.state = State::Text;
            }
            // RFC 5321 section 4.5.2: a leading dot is removed, whatever follows it.
            (_, _) => {
                self.push(b);
                self.state = State::Text;
            }
        }
        false
    }

    fn push(&mut self, b: u8) {
        self.size += 1;
        if self.size <= self.limit {
            self.out.push(b);
        }
    }

    fn push_slice(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.size);
        self.out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.size += bytes.len();
    }

    pub fn overflowed(&self) -> bool {
        self.size > self.limit
    }

    pub fn saw_bare_lf(&self) -> bool {
        self.bare_lf
    }

    pub fn saw_bare_cr(&self) -> bool {
        self.bare_cr
    }

    pub fn saw_nul(&self) -> bool {
        self.nul
    }

    /// The message as received, dot-stuffing removed.
    pub fn into_message(self) -> Vec<u8> {
        self.out
    }
}

/// A line ending other than `<CR><LF>` in a message (BDAT content, which has no dot-stuffing
/// to find it on the way in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareEnding {
    Lf,
    Cr,
}

/// The first bare LF or bare CR in `message`, if any. A CR as the very last byte counts: the
/// line it would end has no LF.
pub fn bare_line_ending(message: &[u8]) -> Option<BareEnding> {
    let mut prev_cr = false;
    for &b in message {
        match (prev_cr, b) {
            (true, b'\n') => prev_cr = false,
            (true, _) => return Some(BareEnding::Cr),
            (false, b'\n') => return Some(BareEnding::Lf),
            (false, b'\r') => prev_cr = true,
            (false, _) => {}
        }
    }
    prev_cr.then_some(BareEnding::Cr)
}

/// Whether `message` holds a NUL (BDAT content; DATA's reader flags it on the way in).
pub fn contains_nul(message: &[u8]) -> bool {
    memchr::memchr(0, message).is_some()
}

/// Dot-stuff a message for sending (RFC 5321 section 4.5.2), ending it with `.<CR><LF>`.
/// What to send after `message` when it can go as it is: `None` when a line starts with a
/// dot (it needs `dot_stuff`), else the end of data, with the line end the message lacks.
pub fn end_without_stuffing(message: &[u8]) -> Option<&'static [u8]> {
    if message.first() == Some(&b'.') || memchr::memmem::find(message, b"\n.").is_some() {
        return None;
    }
    Some(if message.is_empty() || message.ends_with(b"\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    })
}

/// A line at a time (memchr for each LF).
pub fn dot_stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 8);
    let mut rest = message;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(at) => {
                out.extend_from_slice(&rest[..=at]);
                rest = &rest[at + 1..];
            }
            None => {
                // The last line has no LF: the end needs a line of its own.
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\r\n");
                break;
            }
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> (Vec<u8>, usize, bool) {
        let mut r = DotReader::new(1 << 20);
        for (n, chunk) in chunks.iter().enumerate() {
            if let Progress::Done { consumed } = r.feed(chunk) {
                assert_eq!(n, chunks.len() - 1, "ended early");
                let bare = r.saw_bare_lf();
                return (r.into_message(), consumed, bare);
            }
        }
        panic!("no end of data");
    }

    #[test]
    fn unstuffs_and_stops_at_end() {
        let data = b"Subject: x\r\n\r\n..leading\r\n.\r\n";
        let mut input = data.to_vec();
        input.extend_from_slice(b"QUIT\r\n");
        let (msg, consumed, bare) = read_all(&[&input]);
        assert_eq!(msg, b"Subject: x\r\n\r\n.leading\r\n");
        assert_eq!(consumed, data.len());
        assert!(!bare);
    }

    #[test]
    fn end_sequence_split_across_reads() {
        let input = b"a\r\nb\r\n.\r\n";
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            let (msg, _, _) = read_all(&[a, b]);
            assert_eq!(msg, b"a\r\nb\r\n", "split at {split}");
        }
    }

    #[test]
    fn empty_message() {
        let (msg, consumed, _) = read_all(&[b".\r\n"]);
        assert!(msg.is_empty());
        assert_eq!(consumed, 3);
    }

    #[test]
    fn bare_lf_endings_do_not_end_data_and_are_flagged() {
        let mut r = DotReader::new(1024);
        assert_eq!(r.feed(b"a\n.\nb\r\n.\nc\n.\r\n"), Progress::NeedMore);
        assert!(r.saw_bare_lf());
        assert!(matches!(r.feed(b"\r\n.\r\n"), Progress::Done { .. }));
    }

    #[test]
    fn dot_cr_not_followed_by_lf_is_data() {
        let (msg, _, _) = read_all(&[b".\rx\r\n.\r\n"]);
        assert_eq!(msg, b"\rx\r\n");
    }

    /// `<CR>.<CR>` and friends: never an end of data, always flagged, wherever the reads split.
    #[test]
    fn bare_cr_sequences_are_flagged() {
        for data in [
            &b"a\r.\r\nb\r\n.\r\n"[..],
            b"a\r\n\r.\r\r\n.\r\n",
            b"x\ry\r\n.\r\n",
            b"x\r\r\n.\r\n",
            b".\r.\r\n.\r\n",
        ] {
            for split in 0..data.len() {
                let (a, b) = data.split_at(split);
                let mut r = DotReader::new(1024);
                let first = r.feed(a);
                let done = first != Progress::NeedMore || r.feed(b) != Progress::NeedMore;
                assert!(done, "{data:?}");
                assert!(r.saw_bare_cr(), "{data:?} split at {split}");
            }
        }
        let mut r = DotReader::new(1024);
        assert!(matches!(r.feed(b"a\r\nb\r\n.\r\n"), Progress::Done { .. }));
        assert!(!r.saw_bare_cr() && !r.saw_bare_lf());
    }

    #[test]
    fn bare_endings_in_bdat_content() {
        assert_eq!(bare_line_ending(b"a\r\nb\r\n"), None);
        assert_eq!(bare_line_ending(b"a\r\nno newline at the end"), None);
        assert_eq!(bare_line_ending(b"a\r.\r\n"), Some(BareEnding::Cr));
        assert_eq!(bare_line_ending(b"a\r\r\n"), Some(BareEnding::Cr));
        assert_eq!(bare_line_ending(b"a\r"), Some(BareEnding::Cr));
        assert_eq!(bare_line_ending(b"a\n.\n"), Some(BareEnding::Lf));
    }

    /// The scanners' NUL probes: never an end of data, always flagged, wherever the reads split.
    #[test]
    fn nul_is_flagged_and_never_ends_data() {
        for data in [
            &b"a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n"[..],
            b"a\x00b\r\n.\r\n",
            b"\x00\r\n.\r\n",
            b".\x00\r\n.\r\n",
        ] {
            for split in 0..data.len() {
                let (a, b) = data.split_at(split);
                let mut r = DotReader::new(1024);
                let first = r.feed(a);
                let second = if first == Progress::NeedMore {
                    r.feed(b)
                } else {
                    first
                };
                assert!(matches!(second, Progress::Done { .. }), "{data:?}");
                assert!(r.saw_nul(), "{data:?} split at {split}");
            }
        }
        let mut r = DotReader::new(1024);
        assert!(matches!(r.feed(b"a\r\nb\r\n.\r\n"), Progress::Done { .. }));
        assert!(!r.saw_nul());
        assert!(contains_nul(b"a\r\n\x00.\r\n"));
        assert!(!contains_nul(b"a\r\n.\r\n"));
    }

    #[test]
    fn overflow_counts_but_keeps_limit() {
        let mut r = DotReader::new(4);
        assert!(matches!(r.feed(b"123456\r\n.\r\n"), Progress::Done { .. }));
        assert!(r.overflowed());
        assert_eq!(r.into_message(), b"1234");
    }

    /// The byte-at-a-time reader and stuffer these replaced, as the reference.
    fn reference_read(input: &[u8], limit: usize) -> (Progress, Vec<u8>, [bool; 4]) {
        let mut r = DotReader::new(limit);
        let mut progress = Progress::NeedMore;
        for (i, &b) in input.iter().enumerate() {
            if r.step(b) {
                progress = Progress::Done { consumed: i + 1 };
                break;
            }
        }
        let flags = flags(&r);
        (progress, r.into_message(), flags)
    }

    fn flags(r: &DotReader) -> [bool; 4] {
        [
            r.overflowed(),
            r.saw_bare_lf(),
            r.saw_bare_cr(),
            r.saw_nul(),
        ]
    }

    fn reference_stuff(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for &b in message {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        if !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Seeded random inputs over the bytes that matter (`.`, CR, LF, NUL, text), fed in random
    /// chunks: the fast paths give exactly what the byte-at-a-time versions gave.
    #[test]
    fn fast_paths_agree_with_the_byte_at_a_time_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for _ in 0..5_000 {
            let len = rng.gen_range(0..200);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    *[b'.', b'\r', b'\n', b'a', b'b', 0]
                        .get(rng.gen_range(0..6))
                        .unwrap()
                })
                .collect();
            let limit = rng.gen_range(0..250);
            let mut r = DotReader::new(limit);
            let mut progress = Progress::NeedMore;
            let mut at = 0;
            while at < input.len() && progress == Progress::NeedMore {
                let end = (at + rng.gen_range(1..40)).min(input.len());
                progress = match r.feed(&input[at..end]) {
                    Progress::Done { consumed } => Progress::Done {
                        consumed: at + consumed,
                    },
                    p => p,
                };
                at = end;
            }
            let flags = flags(&r);
            let got = (progress, r.into_message(), flags);
            assert_eq!(
                got,
                reference_read(&input, limit),
                "{input:?} limit {limit}"
            );
            let mut stuffed = Vec::new();
            dot_stuff(&input, &mut stuffed);
            assert_eq!(stuffed, reference_stuff(&input), "{input:?}");
            if let Some(end) = end_without_stuffing(&input) {
                assert_eq!([&input[..], end].concat(), stuffed, "{input:?}");
            } else {
                let dots = |b: &[u8]| b.iter().filter(|&&c| c == b'.').count();
                assert!(
                    dots(&stuffed) > dots(&input) + 1,
                    "{input:?} needed no stuffing"
                );
            }
        }
    }

    #[test]
    fn stuff_then_read_round_trips() {
        let original = b"..a\r\n.\r\nb.\r\n.";
        let mut wire = Vec::new();
        dot_stuff(original, &mut wire);
        let (msg, consumed, _) = read_all(&[&wire]);
        assert_eq!(consumed, wire.len());
        assert_eq!(msg, b"..a\r\n.\r\nb.\r\n.\r\n");
    }
}
