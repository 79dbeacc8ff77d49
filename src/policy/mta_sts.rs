//! MTA-STS (RFC 8461) as data: the `_mta-sts` TXT record, the policy file, and whether an
//! MX host is one the policy names. Pure: `outbound` fetches the record and the file, and
//! `decide()` takes the parsed policy as a source (issue 18).

/// The `_mta-sts.<domain>` TXT record (RFC 8461 section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// Changes whenever the policy does: a cached policy with another id is fetched again.
    pub id: String,
}

/// The one record that starts with `v=STSv1;`, if there is exactly one (section 3.1: with
/// several, or none, the domain has no policy). A record that starts so but is malformed
/// is an `Err`, which also means "no policy" (the sender MUST assume none), said with why.
pub fn parse_record(txt: &[String]) -> Result<Option<StsRecord>, String> {
    let sts: Vec<&String> = txt
        .iter()
        .filter(|t| {
            t.trim_start()
                .strip_prefix("v=STSv1")
                .is_some_and(|rest| rest.trim_start().starts_with(';'))
        })
        .collect();
    let [record] = sts.as_slice() else {
        return Ok(None);
    };
    let mut id = None;
    for field in record.split(';').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("TXT record field without '=': {field:?}"))?;
        match key.trim() {
            "v" if value.trim() == "STSv1" => {}
            "v" => return Err(format!("unknown version {value:?}")),
            // sts-id = 1*32(ALPHA / DIGIT)
            "id" => {
                let v = value.trim();
                if v.is_empty() || v.len() > 32 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(format!("id {v:?} is not 1 to 32 letters and digits"));
                }
                id = Some(v.to_string());
            }
            // Extension fields are allowed and ignored (section 3.1).
            _ => {}
        }
    }
    id.map(|id| Some(StsRecord { id }))
        .ok_or_else(|| "TXT record without id".to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The MX must match and TLS must verify for its name, else no delivery.
    Enforce,
    /// Deliver anyway; failures are reported (TLS-RPT).
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// `https://mta-sts.<domain>/.well-known/mta-sts.txt` (section 3.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StsPolicy {
    pub mode: Mode,
    pub mx: Vec<String>,
    /// Seconds a policy may be cached (at most one year).
    pub max_age: u64,
}

/// Section 3.2: the most `max_age` may be.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Parse the policy file: `key: value` lines ending in CRLF or LF; `version: STSv1`,
/// `mode` and `max_age` once each, `mx` once or more (not needed with mode none); unknown
/// keys are ignored.
pub fn parse_policy(text: &str) -> Result<StsPolicy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("policy line without ':': {line:?}"))?;
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode {other:?}")),
                })
            }
            "max_age" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("max_age {value:?} is not a number of seconds"))?;
                max_age = Some(n.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err(format!(
            "version is {:?}, not STSv1",
            version.unwrap_or_default()
        ));
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".into());
    }
    Ok(StsPolicy { mode, mx, max_age })
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        })
    }
}

/// What delivery found out about a domain's MTA-STS policy, for `decide()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StsFact {
    /// No `_mta-sts` record, and no policy in the cache.
    NoPolicy,
    /// The policy in force: fetched for this lookup, or from the cache (`cached`), which
    /// holds until `expires_unix` (fetch time plus `max_age`).
    Policy {
        id: String,
        policy: StsPolicy,
        cached: bool,
        expires_unix: u64,
    },
    /// The domain has a record but no policy could be had (fetch failed, file invalid,
    /// record malformed) and none is cached: delivery goes on as if it had none (section 5),
    /// and TLS-RPT hears of it.
    Unavailable { reason: String, invalid: bool },
}

impl StsPolicy {
    /// Whether `host` (an MX host name) is one of the policy's `mx` patterns.
    pub fn names(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// Section 4.1: a pattern is a host name, or `*.` and a domain, which stands for exactly
/// one more label on the left (`*.example.com` matches `mx.example.com`, not
/// `a.mx.example.com` nor `example.com`). Case and a trailing dot do not matter.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(records: &[&str]) -> Vec<String> {
        records.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_txt_record() {
        // RFC 8461 section 3.1's example.
        assert_eq!(
            parse_record(&txt(&["v=STSv1; id=20160831085700Z;"])).unwrap(),
            Some(StsRecord {
                id: "20160831085700Z".into()
            })
        );
        assert_eq!(
            parse_record(&txt(&["v=spf1 -all", "v=STSv1;id=abc; ext=1"])).unwrap(),
            Some(StsRecord { id: "abc".into() })
        );
        assert_eq!(parse_record(&txt(&["v=spf1 -all"])).unwrap(), None);
        assert_eq!(
            parse_record(&txt(&["v=STSv1; id=a;", "v=STSv1; id=b;"])).unwrap(),
            None,
            "two records: no policy"
        );
        assert!(parse_record(&txt(&["v=STSv1;"])).is_err());
        assert_eq!(parse_record(&txt(&["v=STSv10; id=a;"])).unwrap(), None);
        assert!(parse_record(&txt(&["v=STSv1; id=has-dash;"])).is_err());
    }

    #[test]
    fn the_policy_file() {
        // Section 3.2's example, with CRLF.
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert!(p.names("mail.example.com") && p.names("mx1.example.net"));
        assert!(!p.names("a.b.example.net") && !p.names("example.net"));
        assert!(!p.names("evil.example.org"));
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        assert_eq!(
            parse_policy("version: STSv1\nmode: testing\nmx: m\nmax_age: 99999999999\n")
                .unwrap()
                .max_age,
            MAX_AGE_LIMIT
        );
        for bad in [
            "mode: enforce\nmx: m\nmax_age: 1\n",
            "version: STSv2\nmode: enforce\nmx: m\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: m\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: m\n",
            "version: STSv1\nmode enforce\n",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mx_patterns() {
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(mx_matches("*.example.com", "mx.example.com"));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", ".example.com"));
        assert!(!mx_matches("*.example.com", "a.mx.example.com"));
        assert!(!mx_matches("mail.example.com", "mail.example.com.evil"));
    }
}
