//! Any text as the three fields of a certificate import (admin input over the API): the
//! checks must answer with facts or an error naming a field, never panic. The input is split
//! at the first two NUL bytes into certificate, key and chain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let cert = parts.next().unwrap_or("");
    let key = parts.next().unwrap_or("");
    let chain = parts.next();
    if let Err(e) = postern::certs::check::check(cert, key, chain, "mx.example", 1_800_000_000) {
        assert!(!e.error.is_empty());
    }
});
