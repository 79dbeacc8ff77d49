//! The lookup tables and files main.cf names, read from the copy being imported.

use std::path::{Path, PathBuf};

use crate::postfix::conf::list;
use crate::postfix::maps::{self, Entry, MapRef};

/// Reads the tables main.cf names: from the copy in `dir` of what Postfix finds under
/// `config_directory`.
pub(super) struct Tables {
    pub(super) dir: PathBuf,
    pub(super) config_directory: String,
}

impl Tables {
    /// A file main.cf names, found in `dir` when it lies inside `config_directory`.
    pub(super) fn file(&self, path: &Path) -> PathBuf {
        MapRef {
            kind: "file".into(),
            name: path.display().to_string(),
        }
        .source(&self.config_directory, &self.dir)
    }

    /// The entries of every table in `value` (a list of references), or why not.
    pub(super) fn read(&mut self, value: &str) -> Result<Vec<Entry>, String> {
        let mut all = Vec::new();
        for item in list(value) {
            let map = MapRef::parse(&item).ok_or_else(|| format!("{item}: not a table"))?;
            if !map.readable() {
                return Err(format!("{map}: table type {} is not read", map.kind));
            }
            let path = map.source(&self.config_directory, &self.dir);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{map}: {}: {e}", path.display()))?;
            all.extend(maps::table(&text));
        }
        Ok(all)
    }
}
