//! Command lines in, typed commands out (RFC 5321 section 4.1). No I/O.
//!
//! Every malformed line becomes the 5xx `Reply` the client should see, never a panic.

use super::reply::{Reply, replies};

/// A mailbox as the client wrote it (RFC 5321 section 4.1.2), kept lenient on purpose: the
/// relay check must see through the tricks relay testers use (`user%other@ours`,
/// `"a@b"@ours`, `@route:` forms, `user@[ip]`, no domain) and refuse them, so they must
/// parse rather than fail early with a syntax error that hides what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Local part, without the quotes of a quoted string (escapes resolved).
    pub local: String,
    /// Domain or address literal (`[192.0.2.1]`); `None` when absent or empty.
    pub domain: Option<String>,
}

impl Address {
    /// Sender-specified routing in the local part (`%`, `!`, `@`): the percent hack, bang
    /// paths and quoted `@`. Postfix's `reject_unauth_destination` refuses these from
    /// unauthorised clients even for its own domains; so do we.
    pub fn has_sender_routing(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    pub fn is_address_literal(&self) -> bool {
        self.domain.as_deref().is_some_and(|d| d.starts_with('['))
    }

    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.as_deref().is_none_or(str::is_ascii)
    }

    /// Lower-cased domain for table lookups (domains are case-insensitive, RFC 5321 2.4).
    pub fn domain_lower(&self) -> Option<String> {
        self.domain.as_deref().map(str::to_ascii_lowercase)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let needs_quotes = self.local.is_empty()
            || self
                .local
                .chars()
                .any(|c| c.is_ascii_whitespace() || "\"\\@<>(),;:[]".contains(c));
        if needs_quotes {
            write!(f, "\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"")?;
        } else {
            write!(f, "{}", self.local)?;
        }
        match &self.domain {
            Some(d) => write!(f, "@{d}"),
            None => Ok(()),
        }
    }
}

/// BODY= values of RFC 6152 / RFC 3030.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// MAIL FROM parameters postern understands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS: parsed; not advertised yet.
    pub requiretls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        /// `None` is the null reverse path `<>` (bounces).
        from: Option<Address>,
        params: MailParams,
    },
    Rcpt {
        to: Address,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

impl Command {
    /// The verb, lower-case, as Postfix counts it in its `disconnect from` line.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "ehlo",
            Command::Helo(_) => "helo",
            Command::Mail { .. } => "mail",
            Command::Rcpt { .. } => "rcpt",
            Command::Data => "data",
            Command::Bdat { .. } => "bdat",
            Command::Rset => "rset",
            Command::Noop => "noop",
            Command::Quit => "quit",
            Command::Vrfy => "vrfy",
            Command::Help => "help",
            Command::StartTls => "starttls",
            Command::Auth { .. } => "auth",
        }
    }
}

/// RFC 5321 section 4.5.3.1.4 sets 512 octets; like Postfix we accept more (extensions make
/// MAIL lines longer) but bound it.
pub const MAX_COMMAND_LINE: usize = 2048;

/// Parse one command line, without its terminating CRLF.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let line = std::str::from_utf8(line).map_err(|_| bad_utf8())?;
    if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(replies::syntax("control characters are not allowed"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_matches(' ')),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello(rest, "EHLO").map(Command::Ehlo),
        "HELO" => hello(rest, "HELO").map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(rest, Command::Data, "DATA"),
        "BDAT" => parse_bdat(rest),
        "RSET" => no_args(rest, Command::Rset, "RSET"),
        // RFC 5321 section 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(rest, Command::Quit, "QUIT"),
        "VRFY" if !rest.is_empty() => Ok(Command::Vrfy),
        "VRFY" => Err(replies::syntax("VRFY address")),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(rest, Command::StartTls, "STARTTLS"),
        "AUTH" => parse_auth(rest),
        _ => Err(replies::unrecognized()),
    }
}

fn bad_utf8() -> Reply {
    Reply::new(
        500,
        super::reply::Enhanced(5, 5, 2),
        "Error: bad UTF-8 syntax",
    )
}

fn no_args(rest: &str, cmd: Command, verb: &str) -> Result<Command, Reply> {
    if rest.is_empty() {
        Ok(cmd)
    } else {
        Err(replies::syntax(verb))
    }
}

fn hello(rest: &str, verb: &str) -> Result<String, Reply> {
    // The argument is a domain or address literal; we keep it as given for the Received
    // header and the log, and only insist that there is one word.
    match rest.split_whitespace().next() {
        Some(name) => Ok(name.to_string()),
        None => Err(replies::syntax(&format!("{verb} hostname"))),
    }
}

/// `FROM:` / `TO:` prefix, case-insensitive, tolerating spaces after the colon (Postfix does;
/// so do many clients in the wild).
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start_matches(' '))
}

fn parse_mail(rest: &str) -> Result<Command, Reply> {
    let usage = "MAIL FROM:<address>";
    let rest = strip_keyword(rest, "FROM:").ok_or_else(|| replies::syntax(usage))?;
    let (path, params) = split_path(rest).ok_or_else(|| replies::syntax(usage))?;
    let from = if path == "<>" {
        None
    } else {
        Some(parse_path(path)?)
    };
    let params = parse_mail_params(params)?;
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(rest: &str) -> Result<Command, Reply> {
    let usage = "RCPT TO:<address>";
    let rest = strip_keyword(rest, "TO:").ok_or_else(|| replies::syntax(usage))?;
    let (path, params) = split_path(rest).ok_or_else(|| replies::syntax(usage))?;
    if path == "<>" {
        return Err(replies::bad_address("<>"));
    }
    if let Some(p) = params.split_whitespace().next() {
        // We advertise no RCPT extension (DSN's NOTIFY/ORCPT are not offered).
        return Err(replies::param_unrecognized(p));
    }
    Ok(Command::Rcpt {
        to: parse_path(path)?,
    })
}

/// Split `<path> params` at the `>` that closes the path, honouring quoted strings.
fn split_path(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('<') {
        return None;
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some((&s[..=i], s[i + 1..].trim_start_matches(' '))),
            _ => {}
        }
    }
    None
}

/// `<[@route,@route:]local@domain>` (RFC 5321 section 4.1.2). The source route is accepted
/// and ignored, as section C and 3.6.1 require.
fn parse_path(path: &str) -> Result<Address, Reply> {
    let inner = &path[1..path.len() - 1];
    let inner = strip_source_route(inner).ok_or_else(|| replies::bad_address(path))?;
    if inner.is_empty() {
        return Err(replies::bad_address(path));
    }
    let (local, domain) = if let Some(quoted) = inner.strip_prefix('"') {
        let (local, after) = parse_quoted(quoted).ok_or_else(|| replies::bad_address(path))?;
        match after {
            "" => (local, None),
            _ => match after.strip_prefix('@') {
                Some(d) => (local, Some(d)),
                None => return Err(replies::bad_address(path)),
            },
        }
    } else {
        match inner.rfind('@') {
            Some(i) => (inner[..i].to_string(), Some(&inner[i + 1..])),
            None => (inner.to_string(), None),
        }
    };
    if local.is_empty() || !local.chars().all(local_char_ok) {
        return Err(replies::bad_address(path));
    }
    let domain = match domain {
        None | Some("") => None,
        Some(d) if domain_ok(d) => Some(d.to_string()),
        Some(_) => return Err(replies::bad_address(path)),
    };
    Ok(Address { local, domain })
}

fn strip_source_route(inner: &str) -> Option<&str> {
    if !inner.starts_with('@') {
        return Some(inner);
    }
    let colon = inner.find(':')?;
    let route = &inner[..colon];
    let hops_ok = route
        .split(',')
        .all(|hop| hop.strip_prefix('@').is_some_and(domain_ok));
    hops_ok.then(|| &inner[colon + 1..])
}

/// A quoted string's content (after the opening quote): returns the unescaped text and what
/// follows the closing quote.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

fn local_char_ok(c: char) -> bool {
    // Printable, not the path delimiters; UTF-8 is allowed here and checked against SMTPUTF8
    // by the session (RFC 6531 section 3.3).
    !c.is_control() && c != '<' && c != '>'
}

fn domain_ok(d: &str) -> bool {
    if let Some(lit) = d.strip_prefix('[') {
        return lit.ends_with(']') && lit.len() > 1 && !lit.contains(['[', ' ']);
    }
    !d.is_empty()
        && d.len() <= 255
        && !d.starts_with('.')
        && !d.contains("..")
        && d.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.' || !c.is_ascii())
}

fn parse_mail_params(params: &str) -> Result<MailParams, Reply> {
    let mut out = MailParams::default();
    for param in params.split_whitespace() {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                out.size = Some(v.parse().map_err(|_| replies::syntax("SIZE=<number>"))?)
            }
            ("BODY", Some(v)) => {
                out.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(replies::syntax("BODY=7BIT|8BITMIME|BINARYMIME")),
                }
            }
            ("SMTPUTF8", None) => out.smtputf8 = true,
            ("REQUIRETLS", None) => out.requiretls = true,
            // RFC 4954 section 5: AUTH= is accepted and, from an untrusted client, ignored.
            ("AUTH", Some(_)) => {}
            _ => return Err(replies::param_unrecognized(param)),
        }
    }
    Ok(out)
}

fn parse_bdat(rest: &str) -> Result<Command, Reply> {
    let usage = "BDAT chunk-size [LAST]";
    let mut words = rest.split_whitespace();
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| replies::syntax(usage))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(replies::syntax(usage)),
    };
    if words.next().is_some() {
        return Err(replies::syntax(usage));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(rest: &str) -> Result<Command, Reply> {
    let mut words = rest.split_whitespace();
    let mechanism = words
        .next()
        .ok_or_else(|| replies::syntax("AUTH mechanism [initial-response]"))?
        .to_ascii_uppercase();
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(replies::syntax("AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(local: &str, domain: Option<&str>) -> Address {
        Address {
            local: local.into(),
            domain: domain.map(Into::into),
        }
    }

    fn rcpt(line: &str) -> Result<Address, Reply> {
        match parse(line.as_bytes())? {
            Command::Rcpt { to } => Ok(to),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(parse(b"QuIt"), Ok(Command::Quit));
        assert_eq!(parse(b"STARTTLS"), Ok(Command::StartTls));
    }

    #[test]
    fn mail_with_all_parameters() {
        let cmd =
            parse(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 REQUIRETLS").unwrap();
        assert_eq!(
            cmd,
            Command::Mail {
                from: Some(addr("a", Some("b.example"))),
                params: MailParams {
                    size: Some(1000),
                    body: Body::EightBitMime,
                    smtputf8: true,
                    requiretls: true,
                },
            }
        );
    }

    #[test]
    fn null_sender_and_space_after_colon() {
        assert!(matches!(
            parse(b"MAIL FROM: <>"),
            Ok(Command::Mail { from: None, .. })
        ));
    }

    #[test]
    fn unknown_mail_parameter_is_555() {
        let err = parse(b"MAIL FROM:<a@b> FOO=BAR").unwrap_err();
        assert_eq!(err.code, 555);
    }

    #[test]
    fn relay_tricks_parse_so_relay_control_can_see_them() {
        let percent = rcpt("RCPT TO:<user%other.example@ours.example>").unwrap();
        assert!(percent.has_sender_routing());
        assert_eq!(percent.domain.as_deref(), Some("ours.example"));

        let quoted = rcpt("RCPT TO:<\"user@other.example\"@ours.example>").unwrap();
        assert_eq!(quoted.local, "user@other.example");
        assert!(quoted.has_sender_routing());

        let routed = rcpt("RCPT TO:<@ours.example,@hop.example:user@other.example>").unwrap();
        assert_eq!(routed, addr("user", Some("other.example")));

        let literal = rcpt("RCPT TO:<user@[192.0.2.1]>").unwrap();
        assert!(literal.is_address_literal());

        assert_eq!(rcpt("RCPT TO:<user@>").unwrap().domain, None);
        assert_eq!(rcpt("RCPT TO:<user>").unwrap().domain, None);
        let double = rcpt("RCPT TO:<user@other.example@ours.example>").unwrap();
        assert!(double.has_sender_routing());
    }

    #[test]
    fn malformed_addresses_are_501() {
        for line in [
            "RCPT TO:<>",
            "RCPT TO:<@>",
            "RCPT TO:<a@b..c>",
            "RCPT TO:<\"unterminated@x>",
            "RCPT TO:<a@[1.2.3.4>",
            "RCPT TO:<@:a@b>",
        ] {
            assert_eq!(rcpt(line).unwrap_err().code / 100, 5, "{line}");
        }
        assert_eq!(parse(b"RCPT TO:a@b").unwrap_err().code, 501);
        assert_eq!(parse(b"RCPT <a@b>").unwrap_err().code, 501);
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse(b"BDAT 100 LAST"),
            Ok(Command::Bdat {
                size: 100,
                last: true
            })
        );
        assert_eq!(
            parse(b"BDAT 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        for bad in ["BDAT", "BDAT -1", "BDAT x", "BDAT 1 NEXT", "BDAT 1 LAST x"] {
            assert_eq!(parse(bad.as_bytes()).unwrap_err().code, 501, "{bad}");
        }
    }

    #[test]
    fn garbage_gets_5xx_not_panic() {
        assert_eq!(parse(b"").unwrap_err().code, 502);
        assert_eq!(parse(b"\xff\xfe").unwrap_err().code, 500);
        assert_eq!(parse(b"MAIL FROM:<a\x00@b>").unwrap_err().code, 501);
        assert_eq!(parse(b"EHLO").unwrap_err().code, 501);
        assert_eq!(parse(b"DATA now").unwrap_err().code, 501);
        assert_eq!(parse(b"MAIL FROM:<a@b> SIZE=x").unwrap_err().code, 501);
    }

    #[test]
    fn auth_with_initial_response() {
        assert_eq!(
            parse(b"AUTH plain AGZvbwBiYXI="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGZvbwBiYXI=".into())
            })
        );
    }

    #[test]
    fn display_quotes_when_needed() {
        assert_eq!(addr("a b", Some("x")).to_string(), "\"a b\"@x");
        assert_eq!(addr("plain", Some("x")).to_string(), "plain@x");
    }
}
