//! SMTP wire format with no I/O: command parser, replies with enhanced status codes, EHLO
//! capabilities, the DATA reader and dot-stuffing. Fuzzed (`fuzz/`).

mod command;
mod data;
mod date;
mod ehlo;
pub mod header;
mod reply;

pub use command::{Address, Body, Command, MAX_COMMAND_LINE, MailParams, parse};
pub use data::{
    BareEnding, DotReader, Progress, bare_line_ending, contains_nul, dot_stuff,
    end_without_stuffing,
};
pub use date::{rfc5322_at, rfc5322_now, utc_at};
pub use ehlo::{Capabilities, ehlo_reply};
pub use reply::{Enhanced, Reply, ReplyLine, replies};
