//! What a Postfix gateway's configuration becomes in postern: a settings document, the
//! config file's keys, and one report line per main.cf parameter saying what it became or
//! why it was not carried over.
//!
//! The TLS policy is carried over by Postfix's lookup, not by copying rows: Postfix looks
//! `smtp_tls_policy_maps` up by *next hop* (the recipient domain, or the transport's
//! `[host]`, or `relayhost`), and a `.domain` key matches only subdomains; postern looks
//! its rows up by recipient domain, and `.domain` covers the domain too. So each row is
//! placed where Postfix would have found it, and a `.domain` key without its `domain` gets
//! a `domain` row at the global level beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::conf::{MainCf, list};
use super::maps::{self, Entry, MapRef};
use crate::levels::Level;
use crate::settings::{PolicyRow, RelayDomain, SettingsDoc, TlsMode};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub parameter: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// What it became.
    Carried(String),
    /// Not carried over, and why; `security`: the gateway would be less strict (or serve
    /// another certificate) than Postfix was, so the import's exit code says so.
    Dropped { why: String, security: bool },
}

/// A certificate main.cf names, to import into the certificate store and bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `smtpd_tls_chain_files`: the key and its chain in these files (then `cert` and `key`
    /// are where `split_chain`'s two halves are to be written).
    pub chain: Vec<PathBuf>,
}

/// The PEM of `smtpd_tls_chain_files` (one private key, then its certificates, in one or
/// more files) as the certificate chain and the key, each PEM.
pub fn split_chain(pem: &str) -> Result<(String, String), String> {
    let (mut certs, mut keys) = (String::new(), Vec::new());
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let label_end = rest[start + 11..]
            .find("-----")
            .ok_or("a BEGIN line without its end")?;
        let label = &rest[start + 11..start + 11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..]
            .find(&end_marker)
            .ok_or_else(|| format!("no {end_marker}"))?;
        let block = &rest[start..start + end + end_marker.len()];
        if label.contains("PRIVATE KEY") {
            keys.push(format!("{block}\n"));
        } else if label == "CERTIFICATE" {
            certs.push_str(block);
            certs.push('\n');
        }
        rest = &rest[start + end + end_marker.len()..];
    }
    match (keys.len(), certs.is_empty()) {
        (1, false) => Ok((certs, keys.remove(0))),
        (0, _) => Err("no private key".into()),
        (1, true) => Err("no certificate".into()),
        (n, _) => Err(format!(
            "{n} private keys: postern binds one certificate for STARTTLS"
        )),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub settings: SettingsDoc,
    /// Config-file keys: section → key → value.
    pub config: BTreeMap<String, BTreeMap<String, toml::Value>>,
    pub certificates: Vec<CertFiles>,
    pub report: Vec<ReportLine>,
}

impl Imported {
    /// True when something security-relevant was not carried over.
    pub fn dropped_security(&self) -> bool {
        self.report
            .iter()
            .any(|l| matches!(l.outcome, Outcome::Dropped { security: true, .. }))
    }

    fn carried(&mut self, parameter: &str, what: impl Into<String>) {
        self.report.push(ReportLine {
            parameter: parameter.to_string(),
            outcome: Outcome::Carried(what.into()),
        });
    }

    fn dropped(&mut self, parameter: &str, why: impl Into<String>, security: bool) {
        self.report.push(ReportLine {
            parameter: parameter.to_string(),
            outcome: Outcome::Dropped {
                why: why.into(),
                security,
            },
        });
    }

    fn set(&mut self, section: &str, key: &str, value: toml::Value) {
        self.config
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }
}

/// Why an import could not be made at all.
#[derive(Debug)]
pub struct ImportError(pub String);

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read `dir` (a copy of /etc/postfix, or the directory itself) and translate it.
pub fn import(dir: &Path) -> Result<Imported, ImportError> {
    let path = dir.join("main.cf");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ImportError(format!("{}: {e}", path.display())))?;
    let mut cf =
        MainCf::parse(&text).map_err(|e| ImportError(format!("{}: {e}", path.display())))?;
    cf.set_default("config_directory", "/etc/postfix");
    let mut tables = Tables {
        dir: dir.to_path_buf(),
        config_directory: cf.get("config_directory").unwrap_or_default(),
    };
    let mut out = Imported::default();
    let outbound_level = outbound_level(&cf, &mut out);
    let transport = transports(&cf, &mut tables, &mut out)?;
    relay_domains(&cf, &mut tables, &transport, &mut out)?;
    policy(&cf, &mut tables, &transport, outbound_level, &mut out)?;
    credentials(&cf, &mut tables, &mut out);
    recipients(&cf, &mut tables, &mut out);
    for p in &cf.parameters {
        if !out.report.iter().any(|l| l.parameter == p.name) {
            simple(&cf, &p.name, &mut out);
        }
    }
    master(dir, &mut out)?;
    for c in &mut out.certificates {
        if c.chain.is_empty() {
            c.cert = tables.file(&c.cert);
            c.key = tables.file(&c.key);
        } else {
            c.chain = c.chain.iter().map(|f| tables.file(f)).collect();
        }
    }
    Ok(out)
}

/// master.cf's `-o` overrides: postern has one SMTP listener, whose settings are main.cf's;
/// an override is named so that nothing changes silently.
fn master(dir: &Path, out: &mut Imported) -> Result<(), ImportError> {
    let path = dir.join("master.cf");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let services = super::conf::master_cf(&text)
        .map_err(|e| ImportError(format!("{}: {e}", path.display())))?;
    for s in services.iter().filter(|s| s.command == "smtpd") {
        for (k, v) in &s.overrides {
            let security = k.starts_with("smtpd_tls_")
                || k.starts_with("smtpd_sasl_")
                || k.ends_with("_restrictions");
            out.dropped(
                &format!("master.cf {} -o {k}", s.name),
                format!("{v:?}: postern has one SMTP listener, configured by main.cf's values"),
                security,
            );
        }
    }
    Ok(())
}

/// Reads the tables main.cf names.
struct Tables {
    dir: PathBuf,
    config_directory: String,
}

impl Tables {
    /// A file main.cf names, found in `dir` when it lies inside `config_directory`.
    fn file(&self, path: &Path) -> PathBuf {
        MapRef {
            kind: "file".into(),
            name: path.display().to_string(),
        }
        .source(&self.config_directory, &self.dir)
    }

    /// The entries of every table in `value` (a list of references), or why not.
    fn read(&mut self, value: &str) -> Result<Vec<Entry>, String> {
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

fn mode(level: &str) -> Option<TlsMode> {
    match level {
        "none" | "" => Some(TlsMode::Disabled),
        "may" => Some(TlsMode::May),
        "encrypt" => Some(TlsMode::Encrypt),
        _ => None,
    }
}

/// `smtpd_tls_security_level` and `smtp_tls_security_level`; the outbound level Postfix
/// uses where no policy row applies.
fn outbound_level(cf: &MainCf, out: &mut Imported) -> Level {
    if let Some(v) = cf
        .get("smtpd_tls_security_level")
        .or_else(|| legacy(cf, "smtpd", out))
    {
        match mode(&v) {
            Some(m) => {
                out.settings.inbound.tls_mode = m;
                if cf.has("smtpd_tls_security_level") {
                    out.carried(
                        "smtpd_tls_security_level",
                        format!("inbound.tls_mode = {m}"),
                    );
                }
            }
            None => out.dropped(
                "smtpd_tls_security_level",
                format!("{v:?}: postern takes none, may or encrypt"),
                true,
            ),
        }
    } else {
        // Postfix's default: no STARTTLS offered.
        out.settings.inbound.tls_mode = TlsMode::Disabled;
    }
    let level = cf
        .get("smtp_tls_security_level")
        .or_else(|| legacy(cf, "smtp", out))
        .unwrap_or_default();
    let parsed = level_of(if level.is_empty() { "none" } else { &level });
    match (parsed, mode(&level)) {
        (Some(l), Some(m)) => {
            out.settings.outbound.tls_mode = m;
            if cf.has("smtp_tls_security_level") {
                out.carried(
                    "smtp_tls_security_level",
                    format!("outbound.tls_mode = {m}"),
                );
            }
            l
        }
        (Some(l), None) => {
            // verify, secure, fingerprint: the global mode stays may, a `*` row says the rest.
            out.settings.outbound.tls_mode = TlsMode::May;
            out.settings.policy.push(PolicyRow {
                note: "imported: smtp_tls_security_level".into(),
                ..PolicyRow::new("*", l)
            });
            out.carried("smtp_tls_security_level", format!("policy row * {l}"));
            l
        }
        (None, _) => {
            out.dropped(
                "smtp_tls_security_level",
                format!(
                    "{level:?}: not a level postern has (none, may, encrypt, verify, dane, dane-only, secure, fingerprint)"
                ),
                true,
            );
            Level::May
        }
    }
}

/// Postfix's older switches, used when `<side>_tls_security_level` is not set:
/// `<side>_enforce_tls = yes` is encrypt, `<side>_use_tls = yes` is may.
fn legacy(cf: &MainCf, side: &str, out: &mut Imported) -> Option<String> {
    let yes = |name: &str| cf.get(name).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let (enforce, use_tls) = (format!("{side}_enforce_tls"), format!("{side}_use_tls"));
    let level = if yes(&enforce) {
        "encrypt"
    } else if yes(&use_tls) {
        "may"
    } else {
        return None;
    };
    for name in [&enforce, &use_tls] {
        if cf.has(name) {
            let mode = if side == "smtpd" {
                "inbound"
            } else {
                "outbound"
            };
            out.carried(
                name,
                format!("read as {side}_tls_security_level = {level} ({mode}.tls_mode)"),
            );
        }
    }
    Some(level.to_string())
}

fn level_of(word: &str) -> Option<Level> {
    word.parse().ok()
}

/// `transport_maps`: domain key (`d` exact, `.d` subdomains) → `[host]:port` next hop.
type Transports = Vec<(String, String)>;

fn transports(
    cf: &MainCf,
    tables: &mut Tables,
    out: &mut Imported,
) -> Result<Transports, ImportError> {
    let Some(value) = cf.get("transport_maps").filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => {
            out.dropped("transport_maps", why, false);
            return Ok(Vec::new());
        }
    };
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for e in entries {
        // `smtp:[host]:port`, `relay:[host]`, `:[host]`: the next hop after the transport.
        let hop = e.value.split_once(':').map(|(_, h)| h.trim()).unwrap_or("");
        let transport = e.value.split(':').next().unwrap_or("");
        if matches!(transport, "smtp" | "relay" | "lmtp" | "") && !hop.is_empty() {
            routes.push((e.key, hop.to_string()));
        } else {
            skipped.push(format!("{} {}", e.key, e.value));
        }
    }
    let what = format!(
        "{} route(s) (relay domains' transport, else outbound.routes)",
        routes.len()
    );
    if skipped.is_empty() {
        out.carried("transport_maps", what);
    } else {
        out.carried(
            "transport_maps",
            format!(
                "{what}; not carried: {} (postern delivers by SMTP only)",
                skipped.join(", ")
            ),
        );
    }
    Ok(routes)
}

/// Postfix's transport lookup for `domain`: the exact key, then `.parent` keys.
fn route_for<'a>(transport: &'a Transports, domain: &str) -> Option<&'a str> {
    let exact = transport.iter().find(|(k, _)| k == domain);
    exact
        .or_else(|| {
            parents(domain).find_map(|p| transport.iter().find(|(k, _)| *k == format!(".{p}")))
        })
        .map(|(_, hop)| hop.as_str())
}

/// `a.b.c` → `b.c`, `c`.
fn parents(domain: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(domain);
    std::iter::from_fn(move || {
        let next = rest?.split_once('.').map(|(_, r)| r);
        rest = next;
        next
    })
}

fn relay_domains(
    cf: &MainCf,
    tables: &mut Tables,
    transport: &Transports,
    out: &mut Imported,
) -> Result<(), ImportError> {
    if let Some(v) = cf.get("mynetworks") {
        let nets: Vec<String> = list(&v)
            .into_iter()
            .map(|n| n.replace(['[', ']'], ""))
            .collect();
        out.carried("mynetworks", format!("trusted_networks = {nets:?}"));
        out.settings.trusted_networks = nets;
    }
    let Some(value) = cf.get("relay_domains") else {
        return Ok(());
    };
    let mut names = Vec::new();
    for item in list(&value) {
        if item.contains(':') {
            match tables.read(&item) {
                Ok(entries) => names.extend(entries.into_iter().map(|e| e.key)),
                Err(why) => out.dropped("relay_domains", why, false),
            }
        } else {
            names.push(item.to_ascii_lowercase());
        }
    }
    for domain in &names {
        let hop = route_for(transport, domain.trim_start_matches('.'));
        out.settings.relay_domains.push(RelayDomain {
            domain: domain.clone(),
            transport: hop.map(str::to_string),
            ..RelayDomain::default()
        });
    }
    // Routes for domains that are not relay domains go to outbound.routes.
    for (key, hop) in transport {
        if !names.contains(key) {
            out.set("outbound.routes", key, toml::Value::String(hop.clone()));
        }
    }
    out.carried(
        "relay_domains",
        format!(
            "{} relay domain(s); Postfix's also cover their subdomains (parent_domain_matches_subdomains), postern's rows are exact: add a .domain row where subdomains must be relayed",
            names.len()
        ),
    );
    Ok(())
}

/// A parsed policy value: the level and its attributes.
struct PolicyValue {
    level: Option<Level>,
    word: String,
    matches: Vec<String>,
    /// Attributes and match patterns not carried over.
    ignored: Vec<String>,
}

fn policy_value(value: &str) -> PolicyValue {
    let mut words = value.split_whitespace();
    let word = words.next().unwrap_or("").to_ascii_lowercase();
    let mut v = PolicyValue {
        level: level_of(&word),
        word,
        matches: Vec::new(),
        ignored: Vec::new(),
    };
    for attr in words {
        match attr.split_once('=') {
            Some(("match", names)) => {
                for n in names.split(':') {
                    match n {
                        // Postfix's own words for what postern checks by default.
                        "nexthop" | "dot-nexthop" | "hostname" => {}
                        // "any subdomain of": postern matches names, so it is stricter here.
                        n if n.starts_with('.') => v.ignored.push(format!("match {n}")),
                        n => v.matches.push(n.to_string()),
                    }
                }
            }
            _ => v.ignored.push(attr.to_string()),
        }
    }
    v
}

/// Postfix's policy lookup for a next hop: `[host]` keys verbatim; a domain exact, then
/// `.parent` keys (subdomains only).
fn policy_for<'a>(entries: &'a [Entry], hop: &str) -> Option<&'a Entry> {
    if hop.starts_with('[') {
        let bare = hop.strip_suffix(":25").unwrap_or(hop);
        return maps::find(entries, hop).or_else(|| maps::find(entries, bare));
    }
    maps::find(entries, hop)
        .or_else(|| parents(hop).find_map(|p| maps::find(entries, &format!(".{p}"))))
}

fn policy(
    cf: &MainCf,
    tables: &mut Tables,
    transport: &Transports,
    global: Level,
    out: &mut Imported,
) -> Result<(), ImportError> {
    let Some(value) = cf.get("smtp_tls_policy_maps").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => {
            out.dropped("smtp_tls_policy_maps", why, true);
            return Ok(());
        }
    };
    let relayhost = cf.get("relayhost").filter(|r| !r.is_empty());
    let mut rows: Vec<PolicyRow> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    // Mail routed by the transport table: its rows are found by the route's next hop.
    for (key, hop) in transport {
        if let Some(e) = policy_for(&entries, hop) {
            rows.extend(row(key, e, &mut notes));
            // Postfix's `.d` route leaves `d` itself to the MX (and its own row); postern's
            // `.d` row would cover it, so `d` gets the row Postfix finds for it.
            if let Some(bare) = key.strip_prefix('.')
                && route_for(transport, bare).is_none()
            {
                match policy_for(&entries, bare) {
                    Some(own) => rows.extend(row(bare, own, &mut notes)),
                    None => rows.push(PolicyRow {
                        note: format!(
                            "imported: Postfix's route .{bare} does not cover {bare} itself"
                        ),
                        ..PolicyRow::new(bare, global)
                    }),
                }
            }
        }
    }
    match &relayhost {
        // Everything else goes to the relayhost: one lookup decides it all.
        Some(hop) => {
            if let Some(e) = policy_for(&entries, hop) {
                rows.extend(row("*", e, &mut notes));
            }
            notes.push(format!(
                "domain rows are not used by Postfix with relayhost {hop}"
            ));
        }
        None => domain_rows(&entries, transport, global, &mut rows, &mut notes),
    }
    rows.retain(|r| {
        if r.level < global && r.pattern != "*" {
            notes.push(format!(
                "{} {}: below the global level {global}, which postern keeps (the stricter wins)",
                r.pattern, r.level
            ));
        }
        true
    });
    let dropped_level = notes.iter().any(|n| n.contains("not a level postern has"));
    let what = format!("{} policy row(s)", rows.len());
    out.settings.policy.extend(rows);
    if dropped_level {
        out.dropped(
            "smtp_tls_policy_maps",
            format!("{what}; {}", notes.join("; ")),
            true,
        );
    } else if notes.is_empty() {
        out.carried("smtp_tls_policy_maps", what);
    } else {
        out.carried(
            "smtp_tls_policy_maps",
            format!("{what}; {}", notes.join("; ")),
        );
    }
    Ok(())
}

/// Domain keys, for mail delivered by MX: `d` as `d`; `.d` as `.d`, with a `d` row at the
/// global level when the table has none (postern's `.d` covers `d` too, Postfix's does not).
fn domain_rows(
    entries: &[Entry],
    transport: &Transports,
    global: Level,
    rows: &mut Vec<PolicyRow>,
    notes: &mut Vec<String>,
) {
    for e in entries {
        if e.key.starts_with('[') {
            if !transport
                .iter()
                .any(|(_, hop)| policy_for(std::slice::from_ref(e), hop).is_some())
            {
                notes.push(format!(
                    "{}: no transport route goes there, so Postfix never uses it",
                    e.key
                ));
            }
            continue;
        }
        if let Some(hop) = route_for(transport, e.key.trim_start_matches('.'))
            && transport.iter().any(|(k, _)| *k == e.key)
        {
            notes.push(format!(
                "{}: routed to {hop}, so Postfix looks up {hop}, not this row",
                e.key
            ));
            continue;
        }
        rows.extend(row(&e.key, e, notes));
        if let Some(bare) = e.key.strip_prefix('.')
            && maps::find(entries, bare).is_none()
        {
            rows.push(PolicyRow {
                note: format!("imported: Postfix's .{bare} does not cover {bare} itself"),
                ..PolicyRow::new(bare, global)
            });
        }
    }
}

/// The postern row for Postfix's entry `e`, placed at `pattern`.
fn row(pattern: &str, e: &Entry, notes: &mut Vec<String>) -> Option<PolicyRow> {
    let v = policy_value(&e.value);
    let Some(level) = v.level else {
        notes.push(format!("{} {}: not a level postern has", e.key, v.word));
        return None;
    };
    if !v.ignored.is_empty() {
        notes.push(format!(
            "{}: {} not carried (postern's TLS baseline is fixed; it matches certificate names, not subdomains of them)",
            e.key,
            v.ignored.join(" ")
        ));
    }
    let mut r = PolicyRow::new(pattern, level);
    r.note = format!("imported from smtp_tls_policy_maps line {}", e.line);
    if level == Level::Fingerprint {
        r.fingerprints = v.matches;
    } else {
        r.match_names = v.matches;
    }
    Some(r)
}

/// `smtp_sasl_password_maps` (`[host]:port` or domain → `user:password`): credentials of the
/// relay domains whose transport goes to that next hop. postern then keeps an `encrypt` row
/// for each (Hermes' "Auto-added: domain requires authentication"), which takes the place
/// of an imported row of that pattern at `encrypt` or below. Passwords never appear in the
/// report.
fn credentials(cf: &MainCf, tables: &mut Tables, out: &mut Imported) {
    const NAME: &str = "smtp_sasl_password_maps";
    let Some(value) = cf.get(NAME).filter(|v| !v.is_empty()) else {
        return;
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => return out.dropped(NAME, why, false),
    };
    let mut carried = Vec::new();
    let mut left = Vec::new();
    for e in &entries {
        let Some((user, password)) = e.value.split_once(':') else {
            left.push(format!("{} (no user:password)", e.key));
            continue;
        };
        let domains: Vec<usize> = (0..out.settings.relay_domains.len())
            .filter(|&i| {
                let d = &out.settings.relay_domains[i];
                d.transport.as_deref() == Some(e.key.as_str()) || d.domain == e.key
            })
            .collect();
        if domains.is_empty() {
            left.push(format!("{} (not a relay domain's next hop)", e.key));
        }
        for i in domains {
            let domain = out.settings.relay_domains[i].domain.clone();
            let stricter = out
                .settings
                .policy
                .iter()
                .any(|r| r.pattern == domain && r.level > Level::Encrypt);
            if stricter {
                left.push(format!(
                    "{} for {domain} (its policy row is stricter than the managed encrypt row)",
                    e.key
                ));
                continue;
            }
            out.settings.policy.retain(|r| r.pattern != domain);
            out.settings.relay_domains[i].auth = Some(crate::settings::RelayAuth {
                username: user.to_string(),
                password: Some(crate::settings::Secret::new(password)),
            });
            carried.push(domain);
        }
    }
    let what = format!(
        "credentials for {} relay domain(s) {carried:?}, each with its managed encrypt row",
        carried.len()
    );
    if left.is_empty() {
        out.carried(NAME, what);
    } else {
        out.carried(NAME, format!("{what}; not carried: {}", left.join(", ")));
    }
}

/// `relay_recipient_maps`: the addresses that exist behind each relay domain (`@domain`:
/// every address). A relay domain with no entry accepts nobody, as in Postfix.
fn recipients(cf: &MainCf, tables: &mut Tables, out: &mut Imported) {
    const NAME: &str = "relay_recipient_maps";
    let Some(value) = cf.get(NAME).filter(|v| !v.is_empty()) else {
        return;
    };
    let entries = match tables.read(&value) {
        Ok(e) => e,
        Err(why) => return out.dropped(NAME, why, true),
    };
    let mut counts = Vec::new();
    for d in &mut out.settings.relay_domains {
        let domain = d.domain.trim_start_matches('.');
        let mine: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.key.rsplit_once('@').is_some_and(|(_, dom)| dom == domain))
            .collect();
        if mine.iter().any(|e| e.key.starts_with('@')) {
            d.recipients = None;
            counts.push(format!("{domain}: every address"));
        } else {
            d.recipients = Some(mine.iter().map(|e| e.key.clone()).collect());
            counts.push(format!("{domain}: {}", mine.len()));
        }
    }
    out.carried(
        NAME,
        format!("relay_domains[].recipients ({})", counts.join(", ")),
    );
}

/// Parameters carried over one to one, or reported as not carried.
fn simple(cf: &MainCf, name: &str, out: &mut Imported) {
    let value = cf.get(name).unwrap_or_default();
    let int = |v: &str| v.parse::<i64>().ok().map(toml::Value::Integer);
    match name {
        "myhostname" => {
            out.set("server", "hostname", toml::Value::String(value.clone()));
            out.carried(name, format!("server.hostname = {value:?}"));
        }
        "relayhost" if value.is_empty() => out.carried(name, "none (delivery by MX)"),
        "relayhost" => {
            out.set("outbound", "relayhost", toml::Value::String(value.clone()));
            out.carried(name, format!("outbound.relayhost = {value:?}"));
        }
        "message_size_limit" => config_int(out, name, &value, "smtp", "max_message_size", int),
        "smtpd_recipient_limit" => config_int(out, name, &value, "smtp", "max_recipients", int),
        "smtpd_client_connection_count_limit" => {
            config_int(out, name, &value, "smtp", "max_connections_per_client", int)
        }
        "maximal_queue_lifetime" => match postfix_time(&value, 'd') {
            Some(secs) => {
                out.set(
                    "outbound",
                    "queue_lifetime_secs",
                    toml::Value::Integer(secs),
                );
                out.carried(name, format!("outbound.queue_lifetime_secs = {secs}"));
            }
            None => out.dropped(name, format!("{value:?}: not a Postfix time"), false),
        },
        "smtp_tls_CAfile" => {
            out.set(
                "tls",
                "extra_roots",
                toml::Value::Array(vec![toml::Value::String(value.clone())]),
            );
            out.carried(name, format!("tls.extra_roots = [{value:?}]"));
        }
        "smtpd_tls_cert_file" | "smtpd_tls_key_file" | "smtpd_tls_chain_files" => {
            certificate(cf, name, out)
        }
        "smtpd_relay_restrictions" | "smtpd_recipient_restrictions" => {
            restrictions(name, &value, out)
        }
        _ => {
            let security = ["smtpd_tls_", "smtp_tls_", "smtpd_sasl_", "smtp_sasl_"]
                .iter()
                .any(|p| name.starts_with(p))
                || name.ends_with("_restrictions");
            out.dropped(name, "no postern setting for it", security);
        }
    }
}

/// The relay restrictions postern's own relay control already is (trusted networks, SMTP
/// AUTH, relay domains); anything else is named as left behind.
fn restrictions(name: &str, value: &str, out: &mut Imported) {
    const SAME: &[&str] = &[
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "reject_unauth_destination",
        "defer_unauth_destination",
        "reject_unlisted_recipient",
    ];
    let other: Vec<String> = list(value)
        .into_iter()
        .filter(|r| !SAME.contains(&r.as_str()))
        .collect();
    if other.is_empty() {
        out.carried(
            name,
            "postern's relay control does the same: trusted networks, SMTP AUTH, relay domains",
        );
    } else {
        out.dropped(
            name,
            format!(
                "{}: not postern's relay control (trusted networks, SMTP AUTH, relay domains)",
                other.join(", ")
            ),
            true,
        );
    }
}

fn config_int(
    out: &mut Imported,
    name: &str,
    value: &str,
    section: &str,
    key: &str,
    int: impl Fn(&str) -> Option<toml::Value>,
) {
    match int(value) {
        Some(v) => {
            out.carried(name, format!("{section}.{key} = {v}"));
            out.set(section, key, v);
        }
        None => out.dropped(name, format!("{value:?}: not a number"), false),
    }
}

/// `5d`, `12h`, `30m`, `90s`, `2w`, or a bare number in `unit`.
fn postfix_time(value: &str, unit: char) -> Option<i64> {
    let (num, u) = match value.chars().last()? {
        c if c.is_ascii_digit() => (value, unit),
        c => (&value[..value.len() - 1], c),
    };
    let n: i64 = num.parse().ok()?;
    let secs = match u {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    Some(n * secs)
}

/// `smtpd_tls_cert_file` + `smtpd_tls_key_file`, or `smtpd_tls_chain_files` (which Postfix
/// prefers): a certificate to import and bind.
fn certificate(cf: &MainCf, name: &str, out: &mut Imported) {
    const HOW: &str = "certificate postfix-smtpd (import it first: the `next:` line, or --apply), bound as inbound.certificate";
    let chain = cf
        .get("smtpd_tls_chain_files")
        .map(|v| list(&v))
        .unwrap_or_default();
    if !chain.is_empty() {
        if name == "smtpd_tls_chain_files" {
            out.certificates.push(CertFiles {
                name: "postfix-smtpd".into(),
                cert: PathBuf::from("postfix-smtpd.crt"),
                key: PathBuf::from("postfix-smtpd.key"),
                chain: chain.iter().map(PathBuf::from).collect(),
            });
            out.settings.inbound.certificate = Some("postfix-smtpd".into());
            out.carried(name, HOW);
        } else {
            out.carried(
                name,
                "not used: smtpd_tls_chain_files is set, and Postfix prefers it",
            );
        }
        return;
    }
    let (cert, key) = (cf.get("smtpd_tls_cert_file"), cf.get("smtpd_tls_key_file"));
    let (Some(cert), Some(key)) = (
        cert.filter(|c| !c.is_empty()),
        key.filter(|k| !k.is_empty()),
    ) else {
        out.dropped(
            name,
            "needs both smtpd_tls_cert_file and smtpd_tls_key_file",
            true,
        );
        return;
    };
    if out.certificates.is_empty() {
        out.certificates.push(CertFiles {
            name: "postfix-smtpd".into(),
            cert: PathBuf::from(&cert),
            key: PathBuf::from(&key),
            chain: Vec::new(),
        });
        out.settings.inbound.certificate = Some("postfix-smtpd".into());
    }
    out.carried(name, HOW);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_files_split_into_key_and_chain() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nLEAFDATA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nROOTDATA\n-----END CERTIFICATE-----\n";
        let (certs, key) = split_chain(pem).unwrap();
        assert!(key.contains("AAA") && !key.contains("LEAFDATA"));
        assert!(
            certs.find("LEAFDATA").unwrap() < certs.find("ROOTDATA").unwrap(),
            "order kept"
        );
        assert!(
            split_chain("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n").is_err()
        );
        let two = format!("{pem}{pem}");
        assert!(split_chain(&two).unwrap_err().contains("2 private keys"));
    }

    #[test]
    fn postfix_times() {
        assert_eq!(postfix_time("5d", 'd'), Some(5 * 86_400));
        assert_eq!(postfix_time("3", 'd'), Some(3 * 86_400));
        assert_eq!(postfix_time("12h", 'd'), Some(12 * 3600));
        assert_eq!(postfix_time("1y", 'd'), None);
    }

    #[test]
    fn lookups_as_postfix_does_them() {
        let t = maps::table(".example.com encrypt\nexample.org may\n[relay.example]:2525 verify\n");
        assert_eq!(policy_for(&t, "a.example.com").unwrap().value, "encrypt");
        assert!(
            policy_for(&t, "example.com").is_none(),
            ".d is subdomains only"
        );
        assert!(policy_for(&t, "a.example.org").is_none(), "d is exact");
        assert_eq!(
            policy_for(&t, "[relay.example]:2525").unwrap().value,
            "verify"
        );
        let routes = vec![(".corp.example".to_string(), "[10.0.0.5]".to_string())];
        assert_eq!(route_for(&routes, "mail.corp.example"), Some("[10.0.0.5]"));
        assert_eq!(route_for(&routes, "corp.example"), None);
    }
}
