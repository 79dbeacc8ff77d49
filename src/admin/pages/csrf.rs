//! CSRF by construction: one layer on the pages router, before routing, refuses every
//! state-changing request of a signed-in session whose form does not carry the session's
//! token, whatever route it is for (one that exists, one added tomorrow, one that does not
//! exist). The sign-in form has no session yet: its stateless token (`sign_in_token.rs`) is
//! checked here too. A request without a live session passes on: behind sign-in it is sent
//! to the sign-in form and changes nothing. The body, read here, goes on to the handler.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::CSRF_KEY;
use crate::admin::AdminState;

/// The most a form body may have: axum's default body limit, which the handlers' `Form`
/// extractor applies to the same bytes after this layer.
const FORM_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The layer (`middleware::from_fn_with_state`).
pub async fn require_csrf(
    State(state): State<AdminState>,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    if !changes_state(req.method()) {
        return next.run(req).await;
    }
    let sign_in = req.uri().path() == "/sign-in";
    let expected = if sign_in {
        None
    } else {
        if super::signed_in(&state, &session).await.is_none() {
            return next.run(req).await;
        }
        session.get::<String>(CSRF_KEY).await.ok().flatten()
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_BODY_LIMIT).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Payload Too Large: the form is larger than 2 MiB",
        )
            .into_response();
    };
    let given = form_field(&parts.headers, &bytes, "csrf").unwrap_or_default();
    let good = match expected {
        _ if sign_in => state.pages.sign_in.check(&parts.headers, &given),
        Some(t) => crate::admin::constant_time_eq(t.as_bytes(), given.as_bytes()),
        None => false,
    };
    if !good {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// RFC 9110 section 9.2.1: GET, HEAD, OPTIONS and TRACE are safe; everything else may change
/// something.
fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The 403 every refused form gets: nothing changed.
pub fn refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403 Forbidden: the form's security token is missing or out of date; reload the page and try again",
    )
        .into_response()
}

/// A field of an HTML form's body, as a browser sends it: urlencoded, or multipart.
fn form_field(headers: &HeaderMap, body: &Bytes, name: &str) -> Option<String> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = kind.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        return multipart_field(kind, body, name);
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// RFC 7578: parts separated by `--boundary` lines, each with its headers, a blank line and
/// its value; the part named `name` (section 4.2) holds the field.
fn multipart_field(content_type: &str, body: &[u8], name: &str) -> Option<String> {
    let boundary = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })?;
    let delimiter = format!("\r\n--{boundary}");
    // The first boundary has no CRLF before it; pretend it had.
    let body = [b"\r\n".as_slice(), body].concat();
    let wanted = format!("name=\"{name}\"");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let starts: Vec<usize> = finder.find_iter(&body).collect();
    starts.windows(2).find_map(|w| {
        let part = &body[w[0] + delimiter.len()..w[1]];
        let part = part.strip_prefix(b"\r\n")?;
        let blank = memchr::memmem::find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..blank]).ok()?;
        let named = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-disposition:")
                && l.split(';')
                    .any(|p| p.trim() == wanted.to_ascii_lowercase())
        });
        named.then(|| String::from_utf8_lossy(&part[blank + 4..]).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        h
    }

    #[test]
    fn the_token_is_found_in_urlencoded_and_multipart_forms() {
        let form = Bytes::from_static(b"name=mx&csrf=ab%2Bc&cert=x");
        let h = headers("application/x-www-form-urlencoded");
        assert_eq!(form_field(&h, &form, "csrf").as_deref(), Some("ab+c"));
        assert_eq!(form_field(&h, &Bytes::new(), "csrf"), None);

        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmx\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok123\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"cert\"; filename=\"c.pem\"\r\n\
Content-Type: application/x-pem-file\r\n\r\n-----BEGIN\r\n--XyZ--\r\n",
        );
        let h = headers("multipart/form-data; boundary=\"XyZ\"");
        assert_eq!(form_field(&h, &body, "csrf").as_deref(), Some("tok123"));
        assert_eq!(form_field(&h, &body, "cert").as_deref(), Some("-----BEGIN"));
        assert_eq!(form_field(&h, &body, "csrf_x"), None);
        // Without a boundary there is no field to find.
        assert_eq!(
            form_field(&headers("multipart/form-data"), &body, "csrf"),
            None
        );
    }

    #[test]
    fn only_safe_methods_pass_without_a_token() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!changes_state(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&m), "{m}");
        }
    }
}
