//! Any bytes as a command line: the parser must return a command or a 5xx reply, never
//! panic, and every reply must render as a valid SMTP reply line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match postern::proto::parse(line) {
        Ok(cmd) => {
            let _ = cmd.verb();
            if let postern::proto::Command::Rcpt { to } = &cmd {
                let _ = (to.has_sender_routing(), to.is_address_literal(), to.to_string());
            }
        }
        Err(reply) => {
            assert!((500..600).contains(&reply.code), "non-5xx for bad input: {reply:?}");
            let wire = reply.to_wire();
            assert!(wire.ends_with(b"\r\n"));
            assert!(!wire[..wire.len() - 2].contains(&b'\n'), "reply text broke the line: {reply:?}");
        }
    }
});
