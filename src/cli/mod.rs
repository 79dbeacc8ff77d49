//! The subcommands, one file each (DESIGN.md "Layout"); `main.rs` parses and dispatches
//! (the older subcommands still live in main.rs: issue 30 moves them).

pub mod admin;
pub mod check;

use std::path::{Path, PathBuf};

/// The configuration the Debian package and the container image install.
pub const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

/// `--config`, else `POSTERN_CONFIG` (clap reads both into `given`), else the packaged file
/// when it exists, as Postfix's commands read /etc/postfix/main.cf: `postern queue list` on
/// an installed gateway then finds its data directory and API. `None`: the embedded defaults.
pub fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        Path::new(SYSTEM_CONFIG)
            .is_file()
            .then(|| PathBuf::from(SYSTEM_CONFIG))
    })
}
