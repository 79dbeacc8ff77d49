//! The admin page as a browser without JavaScript sees it: one HTTPS request per connection,
//! a cookie jar, the forms' CSRF tokens (tests/admin_pages.rs, tests/admin_attacks.rs).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::Proc;

/// A TCP connection to `addr`, from the loopback address `from` if given.
pub async fn connect_from(from: Option<IpAddr>, addr: SocketAddr) -> tokio::net::TcpStream {
    match from {
        None => tokio::net::TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
    }
}

pub struct Page {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub cookies: Vec<String>,
    pub body: String,
}

/// One request on its own TLS connection (`Connection: close`), as a browser would send it.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> Page {
    let extra = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    request_with(addr, method, path, extra, form).await
}

/// As `request`, with `extra` header lines (each ending in CRLF).
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: String,
    form: &str,
) -> Page {
    request_from(None, addr, method, path, extra, form).await
}

/// As `request_with`, from the loopback address `from` (another client, to the throttles).
pub async fn request_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: String,
    form: &str,
) -> Page {
    postern::tls::install_provider();
    let tcp = connect_from(from, addr).await;
    let connector = tokio_rustls::TlsConnector::from(postern::tls::unauthenticated_client_config());
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    req.push_str(&extra);
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = HashMap::new();
    let mut cookies = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(": ").unwrap();
        if k.eq_ignore_ascii_case("set-cookie") {
            cookies.push(v.to_string());
        }
        headers.insert(k.to_ascii_lowercase(), v.to_string());
    }
    Page {
        status,
        headers,
        cookies,
        body: body.to_string(),
    }
}

/// A browser's cookie jar for one site: the session cookie and the sign-in form's nonce,
/// each replaced when the server sets it.
pub struct Browser {
    pub addr: SocketAddr,
    /// The client address to connect from (None: the system's choice).
    pub from: Option<IpAddr>,
    pub cookie: Option<String>,
    jar: std::collections::BTreeMap<String, String>,
}

impl Browser {
    pub fn new(proc: &Proc) -> Browser {
        Browser::at(proc.api(), None)
    }

    /// A browser for the listener at `addr`, connecting from `from`.
    pub fn at(addr: SocketAddr, from: Option<IpAddr>) -> Browser {
        Browser {
            addr,
            from,
            cookie: None,
            jar: Default::default(),
        }
    }

    pub async fn go(&mut self, method: &str, path: &str, form: &str) -> Page {
        let mut sent: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sent.extend(self.cookie.clone());
        let sent = (!sent.is_empty()).then(|| sent.join("; "));
        let extra = sent.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        let page = request_from(self.from, self.addr, method, path, extra, form).await;
        for c in &page.cookies {
            let pair = c.split(';').next().unwrap();
            if c.starts_with("postern_session=") {
                self.cookie = Some(pair.to_string());
            } else if let Some((k, v)) = pair.split_once('=') {
                self.jar.insert(k.to_string(), v.to_string());
            }
        }
        page
    }

    /// POST a form and, as a browser does, follow its 303 with a GET: the page a refusal is
    /// shown on after the redirect (post/redirect/get).
    pub async fn submit(&mut self, path: &str, form: &str) -> Page {
        let page = self.go("POST", path, form).await;
        match page.status {
            303 => {
                let to = location(&page).to_string();
                self.go("GET", &to, "").await
            }
            _ => page,
        }
    }

    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.go("GET", path, "").await;
        page.body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no csrf field on {path}: {}", page.body))
            .to_string()
    }

    pub async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let csrf = self.csrf("/sign-in").await;
        let form = format!("csrf={csrf}&user={user}&password={}", urlencode(password));
        self.go("POST", "/sign-in", &form).await
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn location(page: &Page) -> &str {
    page.headers
        .get("location")
        .map(String::as_str)
        .unwrap_or("")
}

pub fn initial_password(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string()
}
