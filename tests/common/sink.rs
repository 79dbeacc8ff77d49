//! A test SMTP sink on loopback: the next hop postern delivers to. Offers STARTTLS with an
//! rcgen certificate (real rustls handshake), can refuse recipients or defer sessions, and
//! hands every received message to the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use postern::proto::{DotReader, Progress};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Clone, Default)]
pub struct SinkOptions {
    pub starttls: bool,
    /// The first N transactions get `451 4.3.0` at MAIL.
    pub defer_first: usize,
    /// Recipients refused with `550 5.1.1`.
    pub reject: Vec<String>,
    /// Every MAIL gets `421 4.3.2` (a server closing down).
    pub closing: bool,
    /// TLS limited to AES-128 suites (a weak-but-valid peer for minimum-strength tests).
    pub aes128_only: bool,
    /// Answer STARTTLS with 220, then drop the connection (a failed handshake).
    pub broken_tls: bool,
    /// Certificate and PKCS#8 key (DER) to serve; default: a fresh self-signed one.
    pub cert: Option<Arc<(Vec<u8>, Vec<u8>)>>,
    /// Require SASL before MAIL (`530 5.7.0` otherwise), as a submission relay does.
    pub auth: Option<SinkAuth>,
    /// Ask for a TLS client certificate issued by this CA (PEM), as Microsoft 365's
    /// certificate-based connectors do; handshakes without one fail.
    pub client_ca: Option<String>,
    /// Misbehaviour per stage (see `Sink::act`).
    pub script: Script,
    /// Close a session without a word at its second MAIL: a server that timed out an idle
    /// session just as the client began its next transaction.
    pub drop_second_mail: bool,
    /// Offer REQUIRETLS (RFC 8689) once in TLS.
    pub requiretls: bool,
    /// TLS with X25519 and the NIST curves only: a server without the post-quantum group.
    pub classical_groups: bool,
    /// Reset the connection when the ClientHello's TLS record is longer than this many
    /// bytes: a server (or a middlebox before it) that drops a large first flight.
    pub reset_hello_over: Option<usize>,
}

/// Where in a session the sink can be told to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Greeting,
    Ehlo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    /// The reply after the message's final dot (the message is read first).
    EndOfData,
    Rset,
    Quit,
}

/// What the sink does at a stage instead of its normal reply.
#[derive(Debug, Clone)]
pub enum Act {
    /// This reply line (or lines, with `\r\n` between), `\r\n` added.
    Reply(String),
    /// Never answer; read and ignore whatever comes until the client goes.
    Stall,
    /// Close the connection without a word.
    Drop,
    /// The normal reply, one byte every `ms` milliseconds.
    Trickle(u64),
}

/// The sink's misbehaviour, changeable while it runs (a test makes it behave again).
pub type Script = Arc<Mutex<HashMap<Stage, Act>>>;

#[derive(Clone)]
pub struct SinkAuth {
    pub username: String,
    pub password: String,
    /// What EHLO offers, e.g. `PLAIN LOGIN`.
    pub mechanisms: String,
    /// Offer AUTH before STARTTLS too (a careless server: the client must not use it).
    pub in_plaintext: bool,
}

impl SinkAuth {
    pub fn new(username: &str, password: &str) -> SinkAuth {
        SinkAuth {
            username: username.into(),
            password: password.into(),
            mechanisms: "PLAIN LOGIN".into(),
            in_plaintext: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    /// The SASL user the session authenticated as.
    pub auth_user: Option<String>,
    /// The client certificate (DER) presented in the TLS handshake.
    pub client_cert: Option<Vec<u8>>,
    /// The key-exchange group the TLS session used (rustls's name: `X25519MLKEM768`).
    pub kx_group: Option<String>,
    /// What followed `MAIL FROM:<...>`: the parameters, upper-case (` SIZE=12 REQUIRETLS`).
    pub mail_params: String,
}

pub struct Sink {
    pub addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Received>,
    pub sessions: Arc<AtomicUsize>,
    pub script: Script,
    /// Message bodies the sink read (after a 354), whatever it answered at their end.
    pub bodies: Arc<AtomicUsize>,
    /// AUTH commands received, and the ones that arrived outside TLS.
    pub auth_attempts: Arc<AtomicUsize>,
    pub plaintext_auth_attempts: Arc<AtomicUsize>,
    /// ClientHellos reset for their size (`reset_hello_over`).
    pub hellos_reset: Arc<AtomicUsize>,
    /// QUIT commands received (a client that says goodbye rather than just closing).
    pub quits: Arc<AtomicUsize>,
}

/// Per-sink counters shared by its sessions.
#[derive(Clone, Default)]
struct Counters {
    transactions: Arc<AtomicUsize>,
    bodies: Arc<AtomicUsize>,
    auth: Arc<AtomicUsize>,
    plaintext_auth: Arc<AtomicUsize>,
    hellos_reset: Arc<AtomicUsize>,
    quits: Arc<AtomicUsize>,
}

impl Sink {
    pub async fn start(opts: SinkOptions) -> Sink {
        Sink::start_on("127.0.0.1:0".parse().unwrap(), opts).await
    }

    /// On a given address: MX hosts are different 127.0.0.x addresses with one port.
    pub async fn start_on(bind: SocketAddr, opts: SinkOptions) -> Sink {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let sessions = Arc::new(AtomicUsize::new(0));
        let tls = tls_acceptor(
            (opts.aes128_only, opts.classical_groups),
            opts.cert.clone(),
            opts.client_ca.as_deref(),
        );
        let counters = Counters::default();
        let (auth_attempts, plaintext_auth_attempts) =
            (counters.auth.clone(), counters.plaintext_auth.clone());
        let (script, bodies) = (opts.script.clone(), counters.bodies.clone());
        let hellos_reset = counters.hellos_reset.clone();
        let quits = counters.quits.clone();
        let counter = sessions.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                // Replies go out as written (pipelined replies would otherwise wait on Nagle).
                let _ = tcp.set_nodelay(true);
                if opts.reset_hello_over.is_some() {
                    // A close is then a reset (RST), as a middlebox's drop looks.
                    let _ = tcp.set_zero_linger();
                }
                let (tx, opts, tls, counters) =
                    (tx.clone(), opts.clone(), tls.clone(), counters.clone());
                tokio::spawn(async move {
                    let _ = session(Box::new(tcp), opts, tls, tx, counters).await;
                });
            }
        });
        Sink {
            addr,
            rx,
            sessions,
            script,
            bodies,
            auth_attempts,
            plaintext_auth_attempts,
            hellos_reset,
            quits,
        }
    }

    /// The next message, waiting at most `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> Option<Received> {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    pub fn try_next(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// Misbehave at `stage` from the next command on.
    pub fn act(&self, stage: Stage, act: Act) {
        self.script.lock().unwrap().insert(stage, act);
    }

    /// Behave again.
    pub fn behave(&self) {
        self.script.lock().unwrap().clear();
    }
}

/// What the script says for `stage`, if anything.
fn scripted(script: &Script, stage: Stage) -> Option<Act> {
    script.lock().unwrap().get(&stage).cloned()
}

/// Send `normal` at `stage`, or what the script says instead. False: the session ends.
async fn answer(
    io: &mut BufReader<Box<dyn Io>>,
    script: &Script,
    stage: Stage,
    normal: &str,
) -> std::io::Result<bool> {
    match scripted(script, stage) {
        None => io.get_mut().write_all(normal.as_bytes()).await?,
        Some(Act::Reply(text)) => {
            io.get_mut()
                .write_all(format!("{text}\r\n").as_bytes())
                .await?
        }
        Some(Act::Drop) => return Ok(false),
        Some(Act::Stall) => {
            let mut buf = Vec::new();
            while io.read_until(b'\n', &mut buf).await? > 0 {
                buf.clear();
            }
            return Ok(false);
        }
        Some(Act::Trickle(ms)) => {
            for b in normal.as_bytes() {
                io.get_mut().write_all(&[*b]).await?;
                io.get_mut().flush().await?;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
    }
    io.get_mut().flush().await?;
    Ok(true)
}

/// The stage a command line belongs to (for the script).
fn stage_of(upper: &str) -> Option<Stage> {
    Some(match upper {
        u if u.starts_with("EHLO") || u.starts_with("HELO") => Stage::Ehlo,
        "STARTTLS" => Stage::StartTls,
        u if u.starts_with("MAIL FROM:") => Stage::Mail,
        u if u.starts_with("RCPT TO:") => Stage::Rcpt,
        "DATA" => Stage::Data,
        "RSET" => Stage::Rset,
        "QUIT" => Stage::Quit,
        _ => return None,
    })
}

fn tls_acceptor(
    (aes128_only, classical_groups): (bool, bool),
    given: Option<Arc<(Vec<u8>, Vec<u8>)>>,
    client_ca: Option<&str>,
) -> tokio_rustls::TlsAcceptor {
    let (cert, private) = match given {
        Some(pair) => (
            rustls_pki_types::CertificateDer::from(pair.0.clone()),
            rustls_pki_types::PrivateKeyDer::Pkcs8(pair.1.clone().into()),
        ),
        None => {
            let key =
                rcgen::generate_simple_self_signed(vec!["sink.test.example".to_string()]).unwrap();
            (
                key.cert.der().clone(),
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
        }
    };
    let groups = match classical_groups {
        true => postern::tls::KxGroups::Classical,
        false => postern::tls::KxGroups::PostQuantum,
    };
    let mut provider = (*postern::tls::provider_for(groups)).clone();
    if aes128_only {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).contains("AES_128"));
    }
    let provider = std::sync::Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(vec![cert], private).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The stream to hand the TLS acceptor, or `None` when the ClientHello's record is longer
/// than `limit` and the connection is dropped (a reset: the listener set zero linger).
async fn hello_kept(
    inner: Box<dyn Io>,
    limit: Option<usize>,
    counters: &Counters,
) -> std::io::Result<Option<Box<dyn Io>>> {
    use tokio::io::AsyncReadExt;
    let Some(limit) = limit else {
        return Ok(Some(inner));
    };
    let (mut read, write) = tokio::io::split(inner);
    let mut head = [0u8; 5];
    read.read_exact(&mut head).await?;
    if usize::from(u16::from_be_bytes([head[3], head[4]])) > limit {
        counters.hellos_reset.fetch_add(1, Ordering::SeqCst);
        return Ok(None);
    }
    let replayed = std::io::Cursor::new(head.to_vec()).chain(read);
    Ok(Some(Box::new(tokio::io::join(replayed, write))))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn session(
    io: Box<dyn Io>,
    opts: SinkOptions,
    tls: tokio_rustls::TlsAcceptor,
    tx: mpsc::UnboundedSender<Received>,
    counters: Counters,
) -> std::io::Result<()> {
    let mut io = BufReader::new(io);
    let mut in_tls = false;
    let mut auth_user: Option<String> = None;
    let mut client_cert: Option<Vec<u8>> = None;
    let mut kx_group: Option<String> = None;
    let mut sender = String::new();
    let mut mail_params = String::new();
    let mut in_transaction = false;
    let mut rcpts = Vec::new();
    let mut mails = 0;
    let script = opts.script.clone();
    if !answer(
        &mut io,
        &script,
        Stage::Greeting,
        "220 sink.test.example ESMTP sink\r\n",
    )
    .await?
    {
        return Ok(());
    }
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = String::from(
                "250-sink.test.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 10000000\r\n",
            );
            if opts.starttls && !in_tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if let Some(a) = &opts.auth
                && (in_tls || a.in_plaintext)
            {
                r.push_str(&format!("250-AUTH {}\r\n", a.mechanisms));
            }
            if opts.requiretls && in_tls {
                r.push_str("250-REQUIRETLS\r\n");
            }
            r.push_str("250 ENHANCEDSTATUSCODES\r\n");
            r
        } else if upper == "STARTTLS" && opts.starttls && !in_tls {
            let scripted = scripted(&script, Stage::StartTls);
            if !answer(&mut io, &script, Stage::StartTls, "220 2.0.0 go ahead\r\n").await? {
                return Ok(());
            }
            if opts.broken_tls {
                return Ok(());
            }
            if matches!(scripted, Some(Act::Reply(_))) {
                // Whatever it said, no handshake follows: the session goes on in plaintext.
                continue;
            }
            let Some(inner) = hello_kept(io.into_inner(), opts.reset_hello_over, &counters).await?
            else {
                return Ok(());
            };
            let stream = tls.accept(inner).await?;
            let state = stream.get_ref().1;
            client_cert = state
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            kx_group = state
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()));
            io = BufReader::new(Box::new(stream));
            in_tls = true;
            continue;
        } else if let Some(want) = opts.auth.as_ref().filter(|_| upper.starts_with("AUTH ")) {
            counters.auth.fetch_add(1, Ordering::SeqCst);
            if !in_tls {
                counters.plaintext_auth.fetch_add(1, Ordering::SeqCst);
            }
            match sasl(&mut io, &upper, &line, want).await? {
                Some(user) if user == want.username => {
                    auth_user = Some(user);
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                _ => "535 5.7.8 Error: authentication failed\r\n".into(),
            }
        } else if upper.starts_with("MAIL FROM:") && opts.auth.is_some() && auth_user.is_none() {
            "530 5.7.0 Authentication required\r\n".into()
        } else if upper.starts_with("MAIL FROM:") && opts.drop_second_mail && mails == 1 {
            return Ok(());
        } else if upper.starts_with("MAIL FROM:") {
            mails += 1;
            let n = counters.transactions.fetch_add(1, Ordering::SeqCst);
            if opts.closing {
                "421 4.3.2 Service shutting down\r\n".into()
            } else if n < opts.defer_first {
                "451 4.3.0 try again later\r\n".into()
            } else {
                sender = between(&line);
                mail_params = upper
                    .split_once('>')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default();
                in_transaction = true;
                rcpts.clear();
                "250 2.1.0 Ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = between(&line);
            if !in_transaction {
                "503 5.5.1 need MAIL\r\n".into()
            } else if opts.reject.contains(&rcpt) {
                format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\r\n")
            } else {
                rcpts.push(rcpt);
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 Error: no valid recipients\r\n".into()
            } else {
                let scripted_data = scripted(&script, Stage::Data);
                if !answer(&mut io, &script, Stage::Data, "354 go\r\n").await? {
                    return Ok(());
                }
                if matches!(scripted_data, Some(Act::Reply(_))) {
                    // No 354 was sent: no message follows.
                    continue;
                }
                let data = read_data(&mut io).await?;
                counters.bodies.fetch_add(1, Ordering::SeqCst);
                in_transaction = false;
                let scripted_end = scripted(&script, Stage::EndOfData);
                if !answer(
                    &mut io,
                    &script,
                    Stage::EndOfData,
                    "250 2.0.0 Ok: queued as SINK\r\n",
                )
                .await?
                {
                    return Ok(());
                }
                if matches!(scripted_end, Some(Act::Reply(_))) {
                    // Not accepted, whatever the reply said: not received.
                    sender.clear();
                    rcpts.clear();
                    continue;
                }
                let _ = tx.send(Received {
                    sender: std::mem::take(&mut sender),
                    recipients: std::mem::take(&mut rcpts),
                    data,
                    tls: in_tls,
                    auth_user: auth_user.clone(),
                    client_cert: client_cert.clone(),
                    kx_group: kx_group.clone(),
                    mail_params: std::mem::take(&mut mail_params),
                });
                continue;
            }
        } else if upper == "QUIT" {
            counters.quits.fetch_add(1, Ordering::SeqCst);
            answer(&mut io, &script, Stage::Quit, "221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" {
            sender.clear();
            in_transaction = false;
            rcpts.clear();
            "250 2.0.0 Ok\r\n".into()
        } else {
            "502 5.5.2 Error: command not recognized\r\n".into()
        };
        match stage_of(&upper) {
            None => io.get_mut().write_all(reply.as_bytes()).await?,
            Some(stage) => {
                // A refusal the script says instead of the sink's acceptance takes back what
                // the command did: a refused MAIL opens no transaction, a refused RCPT adds
                // no recipient, as on a real server.
                let refused =
                    matches!(scripted(&script, stage), Some(Act::Reply(t)) if !t.starts_with('2'));
                if refused && reply.starts_with('2') {
                    match stage {
                        Stage::Mail => {
                            in_transaction = false;
                            sender.clear();
                            rcpts.clear();
                        }
                        Stage::Rcpt => {
                            rcpts.pop();
                        }
                        _ => {}
                    }
                }
                if !answer(&mut io, &script, stage, &reply).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// AUTH PLAIN (initial response) or LOGIN (two 334 steps); the user name if the password
/// matches. Mechanisms the sink does not offer fail.
async fn sasl(
    io: &mut BufReader<Box<dyn Io>>,
    upper: &str,
    line: &str,
    want: &SinkAuth,
) -> std::io::Result<Option<String>> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let decode = |b64: &str| {
        STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let offered = |m: &str| want.mechanisms.split_whitespace().any(|o| o == m);
    if upper.starts_with("AUTH PLAIN ") && offered("PLAIN") {
        let Some(token) = decode(&line.trim_end()[11..]) else {
            return Ok(None);
        };
        let parts: Vec<&str> = token.split('\0').collect();
        return Ok((parts.len() == 3 && parts[2] == want.password).then(|| parts[1].to_string()));
    }
    if upper == "AUTH LOGIN" && offered("LOGIN") {
        let mut answers = Vec::new();
        for prompt in ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
            io.get_mut()
                .write_all(format!("334 {prompt}\r\n").as_bytes())
                .await?;
            let mut reply = String::new();
            io.read_line(&mut reply).await?;
            answers.push(decode(&reply).unwrap_or_default());
        }
        return Ok((answers[1] == want.password).then(|| answers[0].clone()));
    }
    Ok(None)
}

fn between(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line.rfind('>').unwrap_or(line.len());
    line[start..end.max(start)].to_string()
}

async fn read_data(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Vec<u8>> {
    let mut reader = DotReader::new(1 << 26);
    loop {
        let buf = io.fill_buf().await?;
        if buf.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match reader.feed(buf) {
            Progress::Done { consumed } => {
                io.consume(consumed);
                return Ok(reader.into_message());
            }
            Progress::NeedMore => {
                let n = buf.len();
                io.consume(n);
            }
        }
    }
}

/// A test CA: its PEM (to give postern as an extra root) and leaf certificates it signs.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "postern test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, as (certificate DER, PKCS#8 key DER).
    pub fn leaf(&self, names: &[&str]) -> Arc<(Vec<u8>, Vec<u8>)> {
        self.leaf_with(names, |_| {})
    }

    /// A leaf for `names` with `edit` applied to its parameters (an extended key usage,
    /// validity dates).
    pub fn leaf_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Arc<(Vec<u8>, Vec<u8>)> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Arc::new((cert.der().to_vec(), key.serialize_der()))
    }
}
