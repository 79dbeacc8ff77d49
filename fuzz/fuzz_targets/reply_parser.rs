//! Any bytes as a next hop's reply: the client-side parser must never panic, and a reply it
//! assembles must render and summarise without breaking the line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proto::{Reply, ReplyLine};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut code = None;
    let mut texts = Vec::new();
    for line in text.split('\n') {
        if let Some(parsed) = ReplyLine::parse(line.trim_end_matches('\r')) {
            code.get_or_insert(parsed.code);
            texts.push(parsed.text.to_string());
            if parsed.last {
                break;
            }
        }
    }
    if let Some(code) = code {
        let reply = Reply::from_lines(code, texts);
        let _ = (reply.summary(), reply.dsn(), reply.to_wire());
    }
});
