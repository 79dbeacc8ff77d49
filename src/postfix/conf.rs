//! Postfix's configuration files as postconf(5) and master(5) define them: `main.cf`
//! (parameters, continuation lines, `$name` expansion) and `master.cf` (service lines).
//! Pure: text in, values out.

use std::collections::BTreeMap;

/// One `name = value` of main.cf, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    /// As written (continuation lines joined with a space), not expanded.
    pub raw: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// main.cf: the parameters in file order (a later one of the same name wins, as in
/// Postfix), and the values given from outside (`config_directory`).
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    pub parameters: Vec<Parameter>,
    values: BTreeMap<String, String>,
}

/// Logical lines: a line that starts with whitespace continues the previous one; blank
/// lines and lines whose first non-blank character is `#` are comments (postconf(5)).
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some((_, last)) = out.last_mut()
        {
            last.push(' ');
            last.push_str(trimmed);
            continue;
        }
        out.push((n + 1, trimmed.to_string()));
    }
    out
}

impl MainCf {
    pub fn parse(text: &str) -> Result<MainCf, ParseError> {
        let mut cf = MainCf::default();
        for (line, text) in logical_lines(text) {
            let Some((name, value)) = text.split_once('=') else {
                return Err(ParseError {
                    line,
                    message: format!("missing '=' after parameter name: {text:?}"),
                });
            };
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ParseError {
                    line,
                    message: format!("bad parameter name {name:?}"),
                });
            }
            cf.parameters.push(Parameter {
                name: name.to_string(),
                raw: value.trim().to_string(),
                line,
            });
            cf.values.insert(name.to_string(), value.trim().to_string());
        }
        Ok(cf)
    }

    /// Set a value main.cf may refer to without setting it (`config_directory`,
    /// `myhostname`); a value main.cf sets wins.
    pub fn set_default(&mut self, name: &str, value: &str) {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }

    /// Whether main.cf sets `name` itself.
    pub fn has(&self, name: &str) -> bool {
        self.parameters.iter().any(|p| p.name == name)
    }

    /// The expanded value of `name`, `None` when neither main.cf nor a default sets it.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|raw| self.expand(raw))
    }

    /// `$name`, `${name}`, `$(name)`, `${name?text}` (text when name is non-empty),
    /// `${name:text}` (text when it is empty) and `$$`, expanded recursively (postconf(5));
    /// an unknown name expands to nothing, and a loop stops after 100 levels.
    pub fn expand(&self, raw: &str) -> String {
        self.expand_at(raw, 0)
    }

    fn expand_at(&self, raw: &str, depth: usize) -> String {
        if depth > 100 {
            return String::new();
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(tail) = rest.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let (inner, tail) = match rest.chars().next() {
                Some(open @ ('{' | '(')) => {
                    let close = if open == '{' { '}' } else { ')' };
                    match rest[1..].find(close) {
                        Some(end) => (&rest[1..1 + end], &rest[2 + end..]),
                        None => {
                            // Unclosed: kept as written.
                            out.push('$');
                            continue;
                        }
                    }
                }
                _ => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    (&rest[..end], &rest[end..])
                }
            };
            out.push_str(&self.substitute(inner, depth));
            rest = tail;
        }
        out.push_str(rest);
        out
    }

    fn substitute(&self, inner: &str, depth: usize) -> String {
        let value = |name: &str| {
            self.values
                .get(name)
                .map(|v| self.expand_at(v, depth + 1))
                .unwrap_or_default()
        };
        if let Some((name, text)) = inner.split_once('?') {
            return if value(name).is_empty() {
                String::new()
            } else {
                self.expand_at(text, depth + 1)
            };
        }
        if let Some((name, text)) = inner.split_once(':') {
            let v = value(name);
            return if v.is_empty() {
                self.expand_at(text, depth + 1)
            } else {
                String::new()
            };
        }
        value(inner)
    }
}

/// A list value (`mynetworks`, `relay_domains`): items separated by commas and/or
/// whitespace.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One service of master.cf: `service type private unpriv chroot wakeup maxproc command
/// args`, and the `-o name=value` overrides among its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub kind: String,
    pub command: String,
    pub overrides: Vec<(String, String)>,
    pub line: usize,
}

pub fn master_cf(text: &str) -> Result<Vec<Service>, ParseError> {
    let mut out = Vec::new();
    for (line, text) in logical_lines(text) {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(ParseError {
                line,
                message: format!("a service needs 8 fields, found {}", fields.len()),
            });
        }
        let mut overrides = Vec::new();
        let mut args = fields[8..].iter();
        while let Some(a) = args.next() {
            let pair = match a.strip_prefix("-o") {
                Some("") => args.next().copied(),
                Some(rest) => Some(rest),
                None => None,
            };
            if let Some((k, v)) = pair.and_then(|p| p.split_once('=')) {
                overrides.push((k.to_string(), v.to_string()));
            }
        }
        out.push(Service {
            name: fields[0].to_string(),
            kind: fields[1].to_string(),
            command: fields[7].to_string(),
            overrides,
            line,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_continuations_and_comments() {
        let cf = MainCf::parse(
            "# comment\nmyhostname = mx.example.com\n\nmynetworks = 127.0.0.0/8,\n    10.0.0.0/8\n  # not a continuation: a comment\nrelayhost =\n",
        )
        .unwrap();
        assert_eq!(cf.get("mynetworks").unwrap(), "127.0.0.0/8, 10.0.0.0/8");
        assert_eq!(cf.get("relayhost").unwrap(), "");
        assert_eq!(cf.parameters[1].line, 4);
        assert_eq!(
            list(&cf.get("mynetworks").unwrap()),
            ["127.0.0.0/8", "10.0.0.0/8"]
        );
        let err = MainCf::parse("a = 1\nno equals here\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn expansion_as_postconf_does_it() {
        let mut cf = MainCf::parse(
            "myhostname = mx.$mydomain\nmydomain = example.com\nmap = hash:${config_directory}/tls_policy\nloop = $loop\nq = ${relayhost?relay:$relayhost}\ne = ${relayhost:direct}\nmoney = $$5 $(mydomain)\nrelayhost =\n",
        )
        .unwrap();
        cf.set_default("config_directory", "/etc/postfix");
        cf.set_default("mydomain", "ignored: main.cf sets it");
        assert_eq!(cf.get("myhostname").unwrap(), "mx.example.com");
        assert_eq!(cf.get("map").unwrap(), "hash:/etc/postfix/tls_policy");
        assert_eq!(cf.get("loop").unwrap(), "");
        assert_eq!(cf.get("q").unwrap(), "", "relayhost is empty");
        assert_eq!(cf.get("e").unwrap(), "direct");
        assert_eq!(cf.get("money").unwrap(), "$5 example.com");
        assert_eq!(cf.get("unset"), None);
    }

    #[test]
    fn master_cf_services_and_overrides() {
        let services = master_cf(
            "smtp      inet  n       -       y       -       -       smtpd\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_sasl_auth_enable=yes\nsubmission inet n - y - - smtpd -osyslog_name=postfix/submission\n",
        )
        .unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].command, "smtpd");
        assert_eq!(
            services[0].overrides,
            [
                (
                    "smtpd_tls_security_level".to_string(),
                    "encrypt".to_string()
                ),
                ("smtpd_sasl_auth_enable".to_string(), "yes".to_string())
            ]
        );
        assert_eq!(services[1].overrides[0].0, "syslog_name");
        assert!(master_cf("smtp inet n -\n").is_err());
    }
}
