//! Where mail goes, as admins write it: Postfix's next-hop syntax (`host`, `host:port`,
//! `[host]`, `[host]:port`) and RFC 1035 host names. A leaf: the config, the settings and
//! delivery all read it.

/// RFC 1035 host name syntax, letters-digits-hyphen labels, at least two labels.
pub fn is_domain_name(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A next hop in Postfix's transport syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
    /// False for `[host]`: connect to that host, no MX lookup.
    pub mx_lookup: bool,
}

impl NextHop {
    pub fn parse(s: &str) -> Result<NextHop, String> {
        let s = s.trim();
        let (host, mx_lookup, rest) = if let Some(inner) = s.strip_prefix('[') {
            let end = inner
                .find(']')
                .ok_or_else(|| format!("{s:?}: missing ']'"))?;
            (&inner[..end], false, &inner[end + 1..])
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, true, &s[h.len()..][..p.len() + 1]),
                None => (s, true, ""),
            }
        };
        let port = match rest {
            "" => 25,
            r => r
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: port must be a number from 1 to 65535"))?,
        };
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        if !is_ip && !is_domain_name(host) && host != "localhost" {
            return Err(format!("{s:?}: {host:?} is not a host name or IP address"));
        }
        Ok(NextHop {
            host: host.to_string(),
            port,
            mx_lookup: mx_lookup && !is_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_forms() {
        assert_eq!(
            NextHop::parse("[mx.example]").unwrap(),
            NextHop {
                host: "mx.example".into(),
                port: 25,
                mx_lookup: false
            }
        );
        assert_eq!(
            NextHop::parse("mx.example:2525").unwrap(),
            NextHop {
                host: "mx.example".into(),
                port: 2525,
                mx_lookup: true
            }
        );
        assert_eq!(NextHop::parse("[127.0.0.1]:10026").unwrap().port, 10026);
        assert!(NextHop::parse("[mx.example").is_err());
        assert!(NextHop::parse("mx.example:0").is_err());
        assert!(NextHop::parse("bad host").is_err());
    }
}
