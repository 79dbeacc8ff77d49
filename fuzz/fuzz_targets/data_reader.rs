//! Any bytes as DATA, fed in arbitrary pieces: the reader must agree with itself whatever the
//! split, never panic, and dot-stuffing then reading must give the message back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proto::{DotReader, Progress, dot_stuff};

fn read(input: &[u8], split: usize) -> (Option<usize>, Vec<u8>, [bool; 3]) {
    let mut r = DotReader::new(1 << 16);
    let split = split.min(input.len());
    let mut end = None;
    for (offset, piece) in [(0, &input[..split]), (split, &input[split..])] {
        if let Progress::Done { consumed } = r.feed(piece) {
            end = Some(offset + consumed);
            break;
        }
    }
    let flags = [r.saw_bare_lf(), r.saw_bare_cr(), r.saw_nul()];
    (end, r.into_message(), flags)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize;
    let input = &data[1..];
    assert_eq!(read(input, split), read(input, 0), "result depends on where the input was split");

    // Round trip, for messages with CRLF line endings only (what we accept).
    if !input.contains(&b'\n') && !input.contains(&b'\r') {
        let mut message = input.to_vec();
        message.extend_from_slice(b"\r\n");
        let mut wire = Vec::new();
        dot_stuff(&message, &mut wire);
        let (end, back, _) = read(&wire, split);
        assert_eq!(end, Some(wire.len()));
        assert_eq!(back, message);
    }
});
