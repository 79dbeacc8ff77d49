//! Shared test harness: a postern running in-process on loopback port 0, a plain SMTP client
//! that can upgrade to TLS with rustls, and helpers to read the spool from disk.
#![allow(dead_code)]

pub mod browser;
pub mod dns;
pub mod dnssec;
pub mod dsn;
pub mod https;
pub mod inbound_fixture;
pub mod page;
pub mod postgres;
pub mod process;
pub mod published;
pub mod sink;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::{Method, StatusCode};
use postern::admin::client::ApiClient;
use postern::config::Config;
use postern::spool::Spool;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub smtp: SocketAddr,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
    /// The certificate store of the running server (ACME renewals can be awaited on it).
    pub certs: Arc<postern::certs::Certs>,
    events: tokio::sync::broadcast::Receiver<postern::events::Delivery>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(data_dir: &Path, extra: &str) -> Config {
    let text = format!(
        "[server]\nhostname = \"mx.test.example\"\ndata_dir = \"{}\"\n{extra}",
        data_dir.display()
    );
    Config::parse(&text, "test config").expect("test config parses")
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with("").await
    }

    /// `extra`: TOML appended to the config (e.g. `[smtp]\nmax_recipients = 2`).
    pub async fn start_with(extra: &str) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// Start on the data directory a stopped server left (`stop()` returns it): a restart.
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> TestServer {
        let mut config = test_config(dir.path(), extra);
        config.smtp.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        let listeners = postern::Listeners::bind(&config).await.unwrap();
        let (smtp, api) = (listeners.smtp_addr(), listeners.admin_addr());
        // The token and certificates exist once prepare() returns; the listeners are bound,
        // so connections made from here on queue until run() accepts them.
        let server = postern::prepare(config).unwrap();
        let events = server.subscribe_events();
        let certs = server.certs().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listeners, async {
            let _ = stopped.await;
        }));
        TestServer {
            smtp,
            api,
            dir,
            certs,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The next delivery record, waiting at most `secs` seconds.
    pub async fn next_event(&mut self, secs: u64) -> postern::events::Delivery {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.events.recv())
            .await
            .expect("no delivery record in time")
            .expect("delivery record feed closed")
    }

    /// The next delivery record for `rcpt`, skipping others (such as the delivery of a
    /// non-delivery notice, which may be logged before the bounce that caused it).
    pub async fn next_event_for(&mut self, rcpt: &str, secs: u64) -> postern::events::Delivery {
        loop {
            let event = self.next_event(secs).await;
            if event.recipient == rcpt {
                return event;
            }
        }
    }

    /// One message through a fresh session: EHLO, MAIL, RCPTs, DATA. Asserts the 250 and
    /// returns the queue ID.
    pub async fn submit(&self, from: &str, rcpts: &[&str], message: &[u8]) -> String {
        let c = self.connect().await;
        submit_on(c, from, rcpts, message).await
    }

    /// The same from a given local address (127.0.0.x), for relay-control cases.
    pub async fn submit_from(
        &self,
        ip: &str,
        from: &str,
        rcpts: &[&str],
        message: &[u8],
    ) -> String {
        let c = self.connect_from(ip).await;
        submit_on(c, from, rcpts, message).await
    }

    /// Run `postern ARGS` as an admin would, against this server: a config naming its data
    /// directory, `--api` its control API. Returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let config = self.dir.path().join("cli.toml");
        std::fs::write(
            &config,
            format!("[server]\ndata_dir = \"{}\"\n", self.data_dir().display()),
        )
        .unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .args(["--api", &self.api.to_string()])
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `postern policy explain RCPT` as an admin runs it; its output, asserting success.
    pub async fn explain(&self, rcpt: &str) -> String {
        let (ok, out, err) = self.cli(&["policy", "explain", rcpt]).await;
        assert!(ok, "{err}");
        out
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn api_client(&self) -> ApiClient {
        ApiClient::new(self.api, &self.data_dir()).unwrap()
    }

    /// One control-API request with an optional JSON body: the status and the body as text.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (StatusCode, String) {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let (status, bytes) = self.api_client().request(method, path, body).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The same, with the reply parsed (Null when it is not JSON).
    pub async fn api_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.api(method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    pub async fn get_settings(&self) -> serde_json::Value {
        let (status, doc) = self.api_json(Method::GET, "/api/v1/settings", None).await;
        assert_eq!(status, StatusCode::OK);
        doc
    }

    pub async fn put_settings(&self, doc: serde_json::Value) -> (StatusCode, serde_json::Value) {
        self.api_json(Method::PUT, "/api/v1/settings", Some(&doc))
            .await
    }

    /// Replace settings, asserting success.
    pub async fn set(&self, doc: serde_json::Value) {
        let (status, body) = self.put_settings(doc).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub fn system_cert(&self) -> CertificateDer<'static> {
        let pem = std::fs::read(self.data_dir().join("tls/system.crt")).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    pub async fn connect(&self) -> SmtpClient {
        SmtpClient::connect(self.smtp, None, Some(self.system_cert())).await
    }

    /// Connect from another loopback address (127.0.0.0/8 is all local on Linux), to be a
    /// client outside a `127.0.0.1/32` trusted network.
    pub async fn connect_from(&self, ip: &str) -> SmtpClient {
        SmtpClient::connect(
            self.smtp,
            Some(ip.parse().unwrap()),
            Some(self.system_cert()),
        )
        .await
    }

    /// Stop gracefully and return the spool as it is on disk.
    pub async fn stop(mut self) -> (Spool, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let (spool, _) = Spool::open(&self.dir.path().join("spool"), 1 << 26).unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (spool, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether a real peer tool is installed. CI installs them (.ci/run), so there its absence
/// fails; elsewhere the test says it skipped.
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required in CI (.ci/run installs it)"
        );
        eprintln!("skipping: {tool} not installed");
    }
    found
}

/// Every message in the spool, oldest first.
/// `openssl s_client -starttls smtp -brief` against `addr` with `extra` arguments; its
/// stdout and stderr together (where -brief prints the protocol and peer certificate).
pub async fn s_client_starttls(addr: SocketAddr, extra: &[&str]) -> String {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-brief", "-connect"])
        .arg(addr.to_string())
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn spooled(spool: &Spool) -> Vec<(postern::spool::QueueEntry, Vec<u8>)> {
    spool
        .list()
        .into_iter()
        .map(|e| {
            let bytes = spool.read_message(e.id).unwrap();
            (e, bytes)
        })
        .collect()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Resp {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
    /// `554 5.7.1 <x>: Relay access denied` for single-line replies.
    pub fn first(&self) -> String {
        format!("{} {}", self.code, self.lines[0])
    }
}

pub struct SmtpClient {
    io: Option<BufReader<Box<dyn Io>>>,
    pinned: Option<CertificateDer<'static>>,
    pub greeting: Resp,
}

impl SmtpClient {
    pub async fn connect(
        addr: SocketAddr,
        from: Option<IpAddr>,
        pinned: Option<CertificateDer<'static>>,
    ) -> SmtpClient {
        let tcp = match from {
            None => TcpStream::connect(addr).await.unwrap(),
            Some(ip) => {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(ip, 0)).unwrap();
                socket.connect(addr).await.unwrap()
            }
        };
        let mut c = SmtpClient {
            io: Some(BufReader::new(Box::new(tcp))),
            pinned,
            greeting: Resp {
                code: 0,
                lines: vec![],
            },
        };
        c.greeting = c.read().await;
        c
    }

    fn io(&mut self) -> &mut BufReader<Box<dyn Io>> {
        self.io.as_mut().unwrap()
    }

    pub async fn read(&mut self) -> Resp {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.io().read_line(&mut line).await.unwrap();
            assert!(
                n > 0,
                "connection closed while reading a reply; got {lines:?}"
            );
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let code: u16 = line[..3].parse().unwrap();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Resp { code, lines };
            }
        }
    }

    /// Read, or `None` if the server closed the connection.
    pub async fn read_or_eof(&mut self) -> Option<Resp> {
        let buf = self.io().fill_buf().await.ok()?;
        if buf.is_empty() {
            return None;
        }
        Some(self.read().await)
    }

    /// Write, or false once the server has closed the connection.
    pub async fn try_write(&mut self, bytes: &[u8]) -> bool {
        let io = self.io();
        io.get_mut().write_all(bytes).await.is_ok() && io.get_mut().flush().await.is_ok()
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let io = self.io();
        io.get_mut().write_all(bytes).await.unwrap();
        io.get_mut().flush().await.unwrap();
    }

    pub async fn cmd(&mut self, line: &str) -> Resp {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.read().await
    }

    pub async fn ehlo(&mut self) -> Resp {
        let r = self.cmd("EHLO client.test.example").await;
        assert_eq!(r.code, 250, "{r:?}");
        r
    }

    /// STARTTLS and a real rustls handshake, verifying the pinned certificate.
    pub async fn starttls(&mut self) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.first(), "220 2.0.0 Ready to start TLS");
        self.handshake().await;
    }

    pub async fn handshake(&mut self) {
        let config =
            postern::tls::pinned_client_config(self.pinned.clone().expect("a pinned certificate"));
        self.handshake_with(config).await;
    }

    /// STARTTLS with the caller's client config.
    pub async fn starttls_with(&mut self, config: Arc<rustls::ClientConfig>) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.first(), "220 2.0.0 Ready to start TLS");
        self.handshake_with(config).await;
    }

    pub async fn handshake_with(&mut self, config: Arc<rustls::ClientConfig>) {
        let connector = tokio_rustls::TlsConnector::from(config);
        let io = self.io.take().unwrap();
        assert!(io.buffer().is_empty(), "server sent bytes after its 220");
        let tls = connector
            .connect(
                ServerName::try_from("mx.test.example").unwrap(),
                io.into_inner(),
            )
            .await
            .unwrap();
        self.io = Some(BufReader::new(Box::new(tls)));
    }

    /// MAIL, RCPTs, DATA with `message` (dot-stuffed here); returns the final reply.
    pub async fn send(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> Resp {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(r.code, 250, "RCPT {rcpt}: {r:?}");
        }
        self.data(message).await
    }

    pub async fn data(&mut self, message: &[u8]) -> Resp {
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r:?}");
        let mut wire = Vec::new();
        postern::proto::dot_stuff(message, &mut wire);
        self.write(&wire).await;
        self.read().await
    }
}

/// Queue ID from `250 2.0.0 Ok: queued as ID`.
async fn submit_on(mut c: SmtpClient, from: &str, rcpts: &[&str], message: &[u8]) -> String {
    c.ehlo().await;
    let r = c.send(from, rcpts, message).await;
    assert_eq!(r.code, 250, "{r:?}");
    queue_id(&r)
}

pub fn queue_id(r: &Resp) -> String {
    assert_eq!(r.code, 250, "{r:?}");
    r.lines[0].rsplit(' ').next().unwrap().to_string()
}

pub fn message(subject: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: <sender@client.test.example>\r\nTo: <rcpt@ours.example>\r\nSubject: {subject}\r\n{extra_headers}\r\nBody of {subject}.\r\n.leading dot line\r\n"
    )
    .into_bytes()
}

/// `postern check-tls TARGET [--json]` with a config of `[server] data_dir = DIR` and
/// `extra` (the `[outbound]` a lab's server runs with): its stdout, and the parsed JSON
/// (`Null` for text).
pub async fn check_tls(
    dir: &Path,
    extra: &str,
    target: &str,
    json: bool,
) -> (String, serde_json::Value) {
    let config = dir.join("postern.toml");
    let text = format!("[server]\ndata_dir = \"{}\"\n{extra}", dir.display());
    std::fs::write(&config, text).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"));
    cmd.args(["check-tls", target, "--config"]).arg(&config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = serde_json::from_str(&stdout).unwrap_or_default();
    (stdout, parsed)
}

/// A gzip body (a TLS-RPT report) as JSON.
pub fn gunzip_json(gz: &[u8]) -> serde_json::Value {
    use std::io::Read;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut json)
        .expect("gzip");
    serde_json::from_slice(&json).expect("JSON")
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
