//! STARTTLS as the policy level demands (RFC 3207): never a fallback to plaintext at a
//! required level; the handshake under the level's certificate check, its log line, and the
//! minimum strength.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::BufReader;

use super::super::classify::{Class, Outcome, Stage, TlsFailure};
use super::conn::Conn;
use super::ehlo::{Extensions, hello};
use super::kx::{ClientTls, Counted, Counts, TlsFailed};
use super::{Failure, Job, with_port};
use crate::policy::Level;
use crate::proto::Enhanced;
use crate::tls::{KxGroups, TlsInfo};

/// A session after `upgrade`: in TLS or not, as the level allowed.
pub(super) struct Upgraded {
    pub(super) conn: Conn,
    pub(super) ext: Extensions,
    pub(super) tls: Option<TlsInfo>,
    /// The name (or pin) the certificate was verified for.
    pub(super) verified_name: Option<String>,
    pub(super) cert_problem: Option<crate::tls::CertProblem>,
}

/// STARTTLS as the level demands. A required level never falls back to plaintext; `may`
/// hands a failed STARTTLS back (`TlsFailedMay`) for a plaintext retry that is logged.
pub(super) async fn upgrade(
    mut conn: Conn,
    ext: Extensions,
    job: &Job<'_>,
    tls: (&ClientTls, KxGroups),
) -> Result<Upgraded, Failure> {
    let starttls_offered = ext.starttls;
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let plain = |conn, ext| Upgraded {
        conn,
        ext,
        tls: None,
        verified_name: None,
        cert_problem: None,
    };
    let peer = conn.name.clone();
    match (job.level, ext.starttls) {
        (Level::None, _) | (Level::May, false) => Ok(plain(conn, ext)),
        (_, false) => {
            // With a minimum strength, the reference's words (GlobalCerts' NDR: "5.7.0
            // encryption too weak 0 less than 112") with Postfix's in parentheses, so a
            // grep for either finds it.
            let not_offered = format!("TLS is required, but was not offered by host {peer}");
            let reason = match job.min_bits {
                0 => not_offered,
                min => format!("encryption too weak 0 less than {min} ({not_offered})"),
            };
            let detail = if job.bounce_on_failure { 0 } else { 4 };
            // The session is in step after EHLO: say goodbye (the peer logs `quit=1`).
            conn.quit_later();
            Err(fail(
                policy_failure(job, detail, reason).tls(TlsFailure::NoStarttls),
            ))
        }
        (_, true) => {
            if let Err((failure, in_step)) = ask_starttls(&mut conn, job, &peer).await {
                if in_step {
                    conn.quit_later();
                }
                return Err(failure);
            }
            let (conn, tls, verified_name, cert_problem) =
                handshake(conn, job, tls, starttls_offered).await?;
            let mut conn = conn;
            let ext = hello(&mut conn, job.helo, &peer).await.map_err(fail)?;
            Ok(Upgraded {
                conn,
                ext,
                tls: Some(tls),
                verified_name,
                cert_problem,
            })
        }
    }
}

/// The STARTTLS command and its reply; on failure, whether the session is still in step
/// (a refusal: a QUIT may follow) or not (no reply, or a protocol error).
async fn ask_starttls(conn: &mut Conn, job: &Job<'_>, peer: &str) -> Result<(), (Failure, bool)> {
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered: true,
        tls: None,
    };
    let reply = match conn.command("STARTTLS", "STARTTLS").await {
        Ok(reply) => reply,
        Err(o) => return Err((fail(o), false)),
    };
    let o = Outcome::from_reply(&reply, peer, Stage::StartTls);
    if o.protocol_error {
        // A 2xx without a handshake to follow: out of step, at any level; never a reason
        // to go on in plaintext on this session or another.
        return Err((fail(o), false));
    }
    if o.class == Class::Delivered {
        return Ok(());
    }
    if job.level == Level::May {
        let reason = format!("STARTTLS refused: {}", reply.summary());
        return Err((Failure::TlsFailedMay { reason }, true));
    }
    Err((
        fail(
            policy_failure(
                job,
                5,
                format!(
                    "TLS is required, but host {peer} refused to start TLS: {}",
                    reply.summary()
                ),
            )
            .tls(TlsFailure::NoStarttls),
        ),
        true,
    ))
}

/// The handshake under the level's certificate check, and its one log line.
async fn handshake(
    conn: Conn,
    job: &Job<'_>,
    (tls, groups): (&ClientTls, KxGroups),
    starttls_offered: bool,
) -> Result<Handshaken, Failure> {
    let fail = |outcome: Outcome| Failure::All {
        outcome,
        try_next_host: false,
        starttls_offered,
        tls: None,
    };
    let peer = conn.name.clone();
    let (config, verifier) = client_tls_config(job, tls, groups).map_err(fail)?;
    let chain_check = job.chain_check.as_deref().filter(|_| verifier.is_none());
    let peer_at = (job.host, job.addr);
    match start_tls(conn, peer_at, job.command_timeout, &config, chain_check).await {
        Ok((conn, mut info, chain_trusted)) => {
            let verified_name = verifier.as_ref().and_then(|v| v.verified_name());
            // Once per handshake, in Postfix's words (smtp(8)): Verified when the chain and
            // the name (or pin) were checked, Trusted when the chain leads to a trusted root
            // but no name was asked for (`may`, `encrypt`), Untrusted otherwise.
            let trust = match (verified_name.is_some(), chain_trusted) {
                (true, _) => "Verified",
                (false, true) => "Trusted",
                (false, false) => "Untrusted",
            };
            tracing::info!(target: "postern/smtp", "{trust} TLS connection established to {}: {}", with_port(job), info.describe_session());
            // Kept in the delivery record, so the Logs page says the line the log said.
            info.trusted = Some(chain_trusted);
            let problem = verifier.as_ref().and_then(|v| v.problem());
            Ok((conn, info, verified_name, problem))
        }
        Err(TlsFailed {
            reason,
            unanswered: Some(hello_bytes),
        }) if groups == KxGroups::PostQuantum => Err(Failure::FirstFlight {
            reason,
            hello_bytes,
        }),
        Err(TlsFailed { reason, .. }) if job.level == Level::May => {
            Err(Failure::TlsFailedMay { reason })
        }
        Err(TlsFailed { reason, .. }) => {
            let kind = match verifier.as_ref().and_then(|v| v.problem()) {
                Some(p) => TlsFailure::Certificate(p),
                None => TlsFailure::Handshake,
            };
            let reason = format!("Cannot start TLS with {peer}: {reason}");
            Err(fail(policy_failure(job, 5, reason).tls(kind)))
        }
    }
}

/// A finished handshake: the session, its TLS, the name the certificate was verified for,
/// and (at an observing check) why it would have failed.
type Handshaken = (
    Conn,
    TlsInfo,
    Option<String>,
    Option<crate::tls::CertProblem>,
);

/// The client config for this job's level, offering `groups`: shared and unauthenticated
/// at `may`/`encrypt` (with the relay domain's client certificate if it has one), checking
/// at the others.
fn client_tls_config(
    job: &Job<'_>,
    tls: &ClientTls,
    groups: KxGroups,
) -> Result<TlsConfigs, Outcome> {
    let client_cert = job.client_cert.as_ref().map(|(_, k)| k.clone());
    match (&job.check, client_cert) {
        (None, None) => Ok((tls.shared(groups).clone(), None)),
        (None, Some(k)) => Ok((
            crate::tls::unauthenticated_client_config_for(Some(k), groups),
            None,
        )),
        (Some((check, roots)), client_cert) => {
            crate::tls::policy_client_config(check.clone(), roots.clone(), client_cert, groups)
                .map(|(c, v)| (c, Some(v)))
                .map_err(|e| policy_failure(job, 5, format!("cannot check certificates: {e}")))
        }
    }
}

type TlsConfigs = (
    Arc<rustls::ClientConfig>,
    Option<Arc<crate::tls::PolicyVerifier>>,
);

/// Minimum strength (GlobalCerts): checked before any transaction, so a message never
/// crosses a session weaker than its policy allows. Plaintext counts as 0 bits.
pub(super) fn check_strength(
    job: &Job<'_>,
    tls: Option<&TlsInfo>,
    peer: &str,
) -> Result<(), Outcome> {
    let bits = tls.map_or(0, |t| t.bits);
    if job.min_bits == 0 || bits >= job.min_bits {
        return Ok(());
    }
    Err(policy_failure(
        job,
        0,
        format!(
            "encryption too weak {bits} less than {} (host {peer})",
            job.min_bits
        ),
    ))
}

/// The handshake over `conn` after the 220 to STARTTLS; what was negotiated (with the
/// signatures Postfix logs) and whether the chain leads to a trusted root.
pub(super) async fn start_tls(
    conn: Conn,
    (host, addr): (&str, SocketAddr),
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    chain_check: Option<&rustls::client::WebPkiServerVerifier>,
) -> Result<(Conn, TlsInfo, bool), TlsFailed> {
    if !conn.io.buffer().is_empty() {
        // The server spoke after its 220: the response-injection mirror of CVE-2011-0411.
        return Err(TlsFailed::new("server sent data after its STARTTLS reply"));
    }
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let counts = Counts::default();
    let stream = Counted {
        inner: conn.io.into_inner(),
        counts: counts.clone(),
    };
    let handshake = crate::tls::noting(connector.connect(name, stream));
    let (tls_stream, noted) = match tokio::time::timeout(timeout, handshake).await {
        Err(_) => {
            let why = "TLS handshake timed out".to_string();
            return Err(TlsFailed::first_flight(why, None, &counts));
        }
        Ok((Err(e), _)) => {
            let why = crate::tls::words::handshake_error(&e);
            return Err(TlsFailed::first_flight(why, Some(&e), &counts));
        }
        Ok((Ok(s), noted)) => (s, noted),
    };
    let session = tls_stream.get_ref().1;
    let info = TlsInfo::from_handshake(session, &noted, false)
        .ok_or_else(|| TlsFailed::new("handshake finished without a cipher suite"))?;
    let chain_trusted = match (chain_check, session.peer_certificates()) {
        (Some(verifier), Some(chain)) => crate::tls::chain_trusted(verifier, chain),
        _ => false,
    };
    Ok((
        Conn {
            io: BufReader::new(Box::new(tls_stream)),
            timeout: conn.timeout,
            name: conn.name,
            replies: conn.replies,
        },
        info,
        chain_trusted,
    ))
}

/// A policy requirement not met: final (5.7.x) when the row says bounce, else retried
/// (4.7.x). Never a fallback to plaintext.
fn policy_failure(job: &Job<'_>, detail: u16, reason: String) -> Outcome {
    if job.bounce_on_failure {
        Outcome::permanent(Enhanced(5, 7, detail), reason)
    } else {
        Outcome::temporary(Enhanced(4, 7, detail), reason)
    }
}
