//! Any bytes as a message: the one header reader (receipt's strip, delivery's and explain's
//! `x-TLSLevel`) must never panic, its fields must tile the header section, and once
//! `strip_header` has removed a field no reader can find it any more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proto::header;

fuzz_target!(|data: &[u8]| {
    let end = header::section_end(data);
    let mut at = 0;
    for field in header::fields(data) {
        assert_eq!(field.start, at, "fields are contiguous");
        assert!(field.end > field.start && field.end <= end);
        at = field.end;
        let value = header::unfolded_value(&data[field]);
        assert!(!value.contains(['\r', '\n']), "unfolded");
    }
    assert_eq!(at, end, "fields cover the header section");
    let (stripped, _) = postern::inbound::strip_header(data, "x-TLSLevel");
    assert!(stripped.len() <= data.len());
    assert_eq!(header::first_value(&stripped, "x-TLSLevel"), None);
    assert!(stripped.ends_with(&data[end..]), "the body is untouched");
});
