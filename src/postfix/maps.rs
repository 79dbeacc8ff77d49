//! Postfix lookup tables named in main.cf (`hash:/etc/postfix/tls_policy`), read from their
//! text source as postmap(1) reads it: `key value` lines, comments and continuation lines as
//! in main.cf, keys folded to lower case.

use std::path::{Path, PathBuf};

use super::conf::logical_lines;

/// `type:name` of a main.cf table reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRef {
    pub kind: String,
    pub name: String,
}

/// Table types whose text source can be read: the indexed ones postmap builds from the
/// file named without its suffix, and `texthash`, which is that file.
const READABLE: &[&str] = &["hash", "btree", "lmdb", "cdb", "dbm", "texthash"];

impl MapRef {
    pub fn parse(value: &str) -> Option<MapRef> {
        let (kind, name) = value.trim().split_once(':')?;
        (!kind.is_empty() && !name.is_empty()).then(|| MapRef {
            kind: kind.to_ascii_lowercase(),
            name: name.to_string(),
        })
    }

    pub fn readable(&self) -> bool {
        READABLE.contains(&self.kind.as_str())
    }

    /// Where its source is, for a configuration copied from `config_directory` into `dir`:
    /// a path inside `config_directory` is looked for in `dir`.
    pub fn source(&self, config_directory: &str, dir: &Path) -> PathBuf {
        let named = Path::new(&self.name);
        match named.strip_prefix(config_directory) {
            Ok(rel) => dir.join(rel),
            Err(_) if named.is_relative() => dir.join(named),
            Err(_) => named.to_path_buf(),
        }
    }
}

impl std::fmt::Display for MapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// One entry of a table source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A table's entries; a later duplicate key replaces the earlier one, as postmap does
/// (with a warning).
pub fn table(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for (line, text) in logical_lines(text) {
        let (key, value) = match text.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (text.as_str(), ""),
        };
        let key = key.to_ascii_lowercase();
        out.retain(|e| e.key != key);
        out.push(Entry {
            key,
            value: value.to_string(),
            line,
        });
    }
    out
}

/// The entry for `key`, as a lookup would find it.
pub fn find<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    let key = key.to_ascii_lowercase();
    entries.iter().find(|e| e.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_sources() {
        let m = MapRef::parse("hash:/etc/postfix/tls_policy").unwrap();
        assert!(m.readable());
        assert_eq!(
            m.source("/etc/postfix", Path::new("/tmp/pf")),
            Path::new("/tmp/pf/tls_policy")
        );
        assert_eq!(
            m.source("/srv/pf", Path::new("/tmp/pf")),
            Path::new("/etc/postfix/tls_policy")
        );
        assert!(
            !MapRef::parse("ldap:/etc/postfix/ldap.cf")
                .unwrap()
                .readable()
        );
        assert_eq!(MapRef::parse("no-colon"), None);
    }

    #[test]
    fn table_sources_as_postmap_reads_them() {
        let t = table(
            "# TLS policy\n.Example.COM   encrypt\nexample.com     may\n[mx.partner.example]:25 secure\n  match=partner.example\nexample.com     encrypt\n",
        );
        assert_eq!(t.len(), 3);
        assert_eq!(find(&t, ".example.com").unwrap().value, "encrypt");
        assert_eq!(
            find(&t, "EXAMPLE.com").unwrap().value,
            "encrypt",
            "the later one"
        );
        assert_eq!(
            find(&t, "[mx.partner.example]:25").unwrap().value,
            "secure match=partner.example"
        );
    }
}
