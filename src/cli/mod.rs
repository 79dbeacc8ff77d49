//! The subcommands' work, one file each; `main.rs` parses and dispatches (DESIGN.md's
//! layout; the older subcommands still live in main.rs).

pub mod admin;
