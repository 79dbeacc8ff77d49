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
//!
//! One file per concern, in the order `import` runs them: `levels` (the TLS security
//! levels), `routes` (transport_maps), `relay_domains` (relay domains, their credentials
//! and recipients), `policy` (smtp_tls_policy_maps), `inbound_tls` (TLS required of named
//! senders and clients by access maps), `parameters` (the one-to-one parameters),
//! `certificates` (the STARTTLS certificate), `master` (master.cf's overrides); `tables`
//! reads the lookup tables main.cf names.

mod certificates;
mod inbound_tls;
mod levels;
mod master;
mod parameters;
mod policy;
mod relay_domains;
mod routes;
mod tables;

use std::collections::BTreeMap;
use std::path::Path;

use crate::postfix::conf::MainCf;
use crate::settings::SettingsDoc;
use tables::Tables;

pub use certificates::{CertFiles, split_chain};

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

#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub settings: SettingsDoc,
    /// Config-file keys: section → key → value.
    pub config: BTreeMap<String, BTreeMap<String, toml::Value>>,
    pub certificates: Vec<CertFiles>,
    pub report: Vec<ReportLine>,
    /// `check_*_access table` restrictions carried whole (as inbound TLS rows): the
    /// restriction lists do not name them as left behind.
    restrictions_carried: Vec<String>,
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
    levels::inbound_mode(&cf, &mut out);
    let outbound_level = levels::outbound_level(&cf, &mut out);
    let transport = routes::transports(&cf, &mut tables, &mut out)?;
    relay_domains::relay_domains(&cf, &mut tables, &transport, &mut out)?;
    policy::policy(&cf, &mut tables, &transport, outbound_level, &mut out)?;
    relay_domains::credentials(&cf, &mut tables, &mut out);
    relay_domains::recipients(&cf, &mut tables, &mut out);
    inbound_tls::inbound_tls(&cf, &mut tables, &mut out);
    for p in &cf.parameters {
        if !out.report.iter().any(|l| l.parameter == p.name) {
            parameters::simple(&cf, &p.name, &mut out);
        }
    }
    master::master(dir, &mut out)?;
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
