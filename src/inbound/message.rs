//! What happens to the message bytes at the end of DATA: the Received header in Postfix's
//! form, and removal of control headers an unauthorised client must not set.

use std::borrow::Cow;

use crate::proto::header;
use crate::tls::TlsInfo;

/// Remove every header field named `name` (case-insensitive), with its continuation lines,
/// from everything a lenient next hop could read as the header section (up to the first
/// empty line, past malformed lines). The body and every other byte are left as they are.
pub fn strip_header<'a>(message: &'a [u8], name: &str) -> (Cow<'a, [u8]>, usize) {
    strip_matching(message, |n| n.eq_ignore_ascii_case(name))
}

/// Every header field whose name `unwanted` says yes to, with its continuation lines, as
/// `header::lenient_fields` finds them: a field postern would not read (after a line that
/// ends its own reading) is still one a next hop may read.
pub fn strip_matching<'a>(
    message: &'a [u8],
    unwanted: impl Fn(&str) -> bool,
) -> (Cow<'a, [u8]>, usize) {
    let mut out: Option<Vec<u8>> = None;
    let mut removed = 0;
    let mut kept_to = 0;
    for field in header::lenient_fields(message) {
        let name = header::lenient_name(&message[field.clone()]);
        if name.is_some_and(|n| unwanted(&String::from_utf8_lossy(n))) {
            removed += 1;
            out.get_or_insert_with(Vec::new)
                .extend_from_slice(&message[kept_to..field.start]);
            kept_to = field.end;
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&message[kept_to..]);
            (Cow::Owned(out), removed)
        }
        None => (Cow::Borrowed(message), 0),
    }
}

/// The facts a Received header records.
pub struct ReceivedFacts<'a> {
    pub helo: &'a str,
    pub client_ip: &'a str,
    pub tls: Option<&'a TlsInfo>,
    /// Postfix's `(Client CN "…", Issuer "…" (verified OK))`, when one was shown.
    pub client_cert: Option<String>,
    pub authenticated: bool,
    pub esmtp: bool,
    pub hostname: &'a str,
    pub queue_id: &'a str,
    /// Named in a `for` clause only when there is exactly one, as Postfix does.
    pub single_recipient: Option<&'a str>,
    pub date: &'a str,
}

/// `Received:` in Postfix's layout, with the protocol keyword of RFC 3848.
pub fn received_header(f: &ReceivedFacts<'_>) -> String {
    let mut h = format!("Received: from {} (unknown [{}])\r\n", f.helo, f.client_ip);
    if let Some(tls) = f.tls {
        for line in tls.received_comment() {
            h.push_str(&format!("\t{line}\r\n"));
        }
        match &f.client_cert {
            Some(note) => h.push_str(&format!("\t{note}\r\n")),
            // smtpd.c's words when the client was asked (smtpd_tls_ask_ccert, as postern
            // always asks) and showed none.
            None => h.push_str("\t(Client did not present a certificate)\r\n"),
        }
    }
    let proto = match (f.esmtp, f.tls.is_some(), f.authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    h.push_str(&format!(
        "\tby {} (postern) with {proto} id {}",
        f.hostname, f.queue_id
    ));
    match f.single_recipient {
        Some(rcpt) => h.push_str(&format!("\r\n\tfor <{rcpt}>; {}\r\n", f.date)),
        None => h.push_str(&format!(";\r\n\t{}\r\n", f.date)),
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_header_with_continuations_any_case() {
        let msg = b"From: a\r\nX-TLSLevel: Require\r\nSubject: s\r\nx-tlslevel : Try\r\n  folded\r\n\r\nx-TLSLevel: body stays\r\n";
        let (out, n) = strip_header(msg, "x-TLSLevel");
        assert_eq!(n, 2);
        assert_eq!(
            &*out,
            b"From: a\r\nSubject: s\r\n\r\nx-TLSLevel: body stays\r\n"
        );
    }

    #[test]
    fn untouched_when_absent() {
        let msg = b"From: a\r\n\r\nbody\r\n";
        let (out, n) = strip_header(msg, "x-TLSLevel");
        assert_eq!(n, 0);
        assert!(matches!(out, Cow::Borrowed(_)));
    }

    #[test]
    fn past_malformed_lines_up_to_the_first_empty_line() {
        // Issue 27: a next hop that skips the malformed line would read what follows it.
        for (msg, kept) in [
            (
                &b"not a header line\r\nX-TLSLevel: Require\r\n\r\nbody\r\n"[..],
                &b"not a header line\r\n\r\nbody\r\n"[..],
            ),
            (
                "Fr\u{f6}m: a\r\nx-TLSLevel : Require\r\n\r\n".as_bytes(),
                "Fr\u{f6}m: a\r\n\r\n".as_bytes(),
            ),
            (
                b": x\r\nx-tlslevel:\r\n\tRequire\r\nTo: b\r\n\r\n",
                b": x\r\nTo: b\r\n\r\n",
            ),
            (b"junk\r\n x-TLSLevel: Require\r\n\r\n", b"junk\r\n\r\n"),
            (b"junk\r\nx-TLSLevel: Require", b"junk\r\n"),
        ] {
            let (out, n) = strip_header(msg, "x-TLSLevel");
            assert_eq!((&*out, n), (kept, 1), "{}", String::from_utf8_lossy(msg));
        }
        // The first empty line ends every reading: the body is left alone.
        let msg = b"junk\r\n\r\nx-TLSLevel: Require\r\n";
        assert_eq!(strip_header(msg, "x-TLSLevel").1, 0);
        // A folded line under a real field is that field's value.
        let msg = b"Subject: a\r\n x-TLSLevel: b\r\n\r\n";
        assert_eq!(strip_header(msg, "x-TLSLevel").1, 0);
    }

    /// Postfix's `smtpd.c` (`smtpd_proto`, the Received header): the `(using …` comment,
    /// the key exchange and server signature on a line of their own, the client's
    /// signature on the next, the closing parenthesis after the last.
    #[test]
    fn received_in_postfix_layout() {
        let mut tls = TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            key_exchange: Some("X25519MLKEM768".into()),
            server_signature: Some("ECDSA (prime256v1)".into()),
            server_digest: Some("SHA256".into()),
            ..TlsInfo::default()
        };
        fn facts(tls: Option<&TlsInfo>) -> ReceivedFacts<'_> {
            ReceivedFacts {
                helo: "client.example",
                client_ip: "192.0.2.1",
                tls,
                client_cert: None,
                authenticated: false,
                esmtp: true,
                hostname: "mx.example",
                queue_id: "ABC",
                single_recipient: Some("r@ours.example"),
                date: "Mon, 23 Nov 2026 10:00:00 +0000 (UTC)",
            }
        }
        assert_eq!(
            received_header(&facts(Some(&tls))),
            "Received: from client.example (unknown [192.0.2.1])\r\n\
             \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
             \t key-exchange X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256)\r\n\
             \t(Client did not present a certificate)\r\n\
             \tby mx.example (postern) with ESMTPS id ABC\r\n\
             \tfor <r@ours.example>; Mon, 23 Nov 2026 10:00:00 +0000 (UTC)\r\n"
        );
        tls.client_signature = Some("RSA-PSS (2048 bits)".into());
        tls.client_digest = Some("SHA256".into());
        let h = received_header(&facts(Some(&tls)));
        assert!(
            h.contains(
                "\t key-exchange X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256\r\n\
                 \t client-signature RSA-PSS (2048 bits) client-digest SHA256)\r\n"
            ),
            "{h}"
        );
        // TLS 1.2: Postfix adds nothing after the cipher.
        let old = TlsInfo {
            protocol: "TLSv1.2".into(),
            cipher: "ECDHE-ECDSA-AES256-GCM-SHA384".into(),
            key_exchange: Some("x25519".into()),
            ..tls
        };
        let h = received_header(&facts(Some(&old)));
        assert!(
            h.contains("\t(using TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits))\r\n\t(Client"),
            "{h}"
        );
    }
}
