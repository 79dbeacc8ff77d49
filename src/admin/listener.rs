//! The admin listener: TLS, HTTP/1, and the limits that keep strangers from holding it
//! (issue 27). Postfix bounds an SMTP client's whole session (`smtpd_timeout`, a minimum data
//! rate); here the same for a request:
//!
//! - the TLS handshake and each request's headers have `header_read_timeout_secs`, idle
//!   connections too;
//! - a whole request of a stranger (body and answer) has `request_timeout_secs` plus its
//!   declared body length at `min_body_rate` bytes a second: a body trickled slower is cut
//!   off with 408 and the connection closed; the signed-in and the API have
//!   `SIGNED_IN_REQUEST` (a policy Test probes hosts for up to 30 s each) plus the same;
//! - before sign-in (no valid bearer token, no signed-in session cookie) a body may hold
//!   `PRE_SIGN_IN_BODY` bytes at most, with a declared length;
//! - `reserved_connections` of `max_connections` serve only the signed-in and the API:
//!   strangers who fill the rest cannot keep the admin out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::AdminState;

/// Bytes a request body may have before sign-in (the sign-in form is well under 1 KiB).
pub const PRE_SIGN_IN_BODY: u64 = 16 * 1024;

/// The whole-request deadline of the signed-in and the API, before their body allowance.
pub const SIGNED_IN_REQUEST: Duration = Duration::from_secs(300);

/// The limits of one listener, from `[admin]`.
#[derive(Clone)]
struct Limits {
    header: Duration,
    request: Duration,
    min_body_rate: u64,
}

/// Serve the admin page and the API over TLS until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: AdminState,
    config: crate::config::AdminConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = config.max_connections.max(2);
    let reserved = config.reserved_connections.clamp(1, max - 1);
    let open = Arc::new(Semaphore::new(max - reserved));
    let reserve = Arc::new(Semaphore::new(reserved));
    let limits = Limits {
        header: Duration::from_secs(config.header_read_timeout_secs.max(1)),
        request: Duration::from_secs(config.request_timeout_secs.max(1)),
        min_body_rate: config.min_body_rate.max(1),
    };
    let app = super::router(state.clone());
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slot(&open, &reserve) => slot,
            _ = crate::server::stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = crate::server::accept(&listener) => accepted,
            _ = crate::server::stopped(&mut shutdown) => break,
        };
        let conn = Conn {
            state: state.clone(),
            // The pages throttle and log by client address.
            app: app.clone().layer(axum::Extension(super::pages::ClientAddr(
                peer.ip().to_canonical(),
            ))),
            limits: limits.clone(),
            reserved: slot.1,
        };
        let tls = tls.clone();
        conns.spawn(async move {
            let _slot = slot.0;
            conn.serve(tls, tcp, peer).await;
        });
    }
    conns.shutdown().await;
}

/// A connection slot: an open one if any is free, else one of the reserve (`true`).
async fn slot(open: &Arc<Semaphore>, reserve: &Arc<Semaphore>) -> (OwnedSemaphorePermit, bool) {
    if let Ok(p) = open.clone().try_acquire_owned() {
        return (p, false);
    }
    if let Ok(p) = reserve.clone().try_acquire_owned() {
        return (p, true);
    }
    tokio::select! {
        Ok(p) = open.clone().acquire_owned() => (p, false),
        Ok(p) = reserve.clone().acquire_owned() => (p, true),
        // Neither semaphore is ever closed: this branch cannot be taken.
        else => std::future::pending().await,
    }
}

struct Conn {
    state: AdminState,
    app: Router,
    limits: Limits,
    reserved: bool,
}

impl Conn {
    async fn serve(self, tls: TlsAcceptor, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let header = self.limits.header;
        let stream = match tokio::time::timeout(header, tls.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(target: "postern/admin", "TLS handshake failed from {peer}: {e}");
                return;
            }
            Err(_) => return,
        };
        let conn = Arc::new(self);
        let service = hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, std::convert::Infallible>(conn.answer(req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header)
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    /// One request, within the gate's limits; every answer carries HSTS.
    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response {
        let mut response = match self.admit(req.headers()) {
            Err((status, why)) => closing(status, why),
            Ok(deadline) => {
                let req = req.map(axum::body::Body::new);
                match tokio::time::timeout(deadline, self.app.clone().oneshot(req)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(_) => closing(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request did not arrive in time",
                    ),
                }
            }
        };
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
        response
    }

    /// The request's deadline, or why it is refused before any handler runs.
    fn admit(&self, headers: &HeaderMap) -> Result<Duration, (StatusCode, &'static str)> {
        let signed_in = self.state.privileged(headers);
        if self.reserved && !signed_in {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin listener is busy: try again shortly",
            ));
        }
        let length = body_length(headers);
        if !signed_in {
            match length {
                Some(n) if n > PRE_SIGN_IN_BODY => {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large before sign-in",
                    ));
                }
                None if headers.contains_key(header::TRANSFER_ENCODING) => {
                    return Err((
                        StatusCode::LENGTH_REQUIRED,
                        "a request body needs a Content-Length before sign-in",
                    ));
                }
                _ => {}
            }
        }
        let body_secs = length.unwrap_or(0) / self.limits.min_body_rate;
        let base = if signed_in {
            SIGNED_IN_REQUEST
        } else {
            self.limits.request
        };
        Ok(base + Duration::from_secs(body_secs))
    }
}

fn body_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An answer after which the connection closes (its body may be unread).
fn closing(status: StatusCode, why: &'static str) -> Response {
    let mut r = (status, why).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}
