//! The subcommands, one file each (DESIGN.md "Layout"); `main.rs` parses and dispatches.

pub mod check;
