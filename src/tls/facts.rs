//! The facts of a TLS session that log lines, Received headers and the minimum-strength
//! policy report: protocol, cipher (OpenSSL's names, as Postfix logs them), key bits, the
//! key exchange and the handshake's signatures.

use rustls::{CipherSuite, HandshakeKind, NamedGroup, ProtocolVersion};

use super::notes::{Noted, signature_words};

/// What was negotiated, in the words Postfix logs use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// OpenSSL's name, as Postfix logs it: `TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: String,
    /// Symmetric key bits (Postfix's `(256/256 bits)`); the minimum-strength policy compares these.
    pub bits: u16,
    /// Outbound: whether the peer's chain led to a trusted root (Postfix's Trusted/Untrusted
    /// line; Verified is the record's `verified_name`). Unknown for sessions before it was
    /// recorded and inbound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
    /// The key-exchange group in OpenSSL 3's TLS group names, as Postfix 3.10+ logs it after
    /// `key-exchange`: `X25519MLKEM768`, `x25519`, `secp256r1`. Unknown on records made
    /// before it was kept, and on a TLS 1.2 session resumed (no key exchange took place).
    /// Kept for TLS 1.2 too, though Postfix's line names it for TLS 1.3 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_exchange: Option<String>,
    /// The server's handshake signature, as Postfix logs it after `server-signature`
    /// (`ECDSA (prime256v1)`, `RSA-PSS (2048 bits)`, `ED25519`), and its digest (`SHA256`;
    /// none for EdDSA). Like Postfix, only for a TLS 1.3 handshake that was not resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_digest: Option<String>,
    /// The client's, when it signed with a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_digest: Option<String>,
}

impl TlsInfo {
    pub fn from_connection(conn: &rustls::CommonState) -> Option<TlsInfo> {
        let protocol = match conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let suite = conn.negotiated_cipher_suite()?.suite();
        let (cipher, bits) = openssl_name(suite);
        Some(TlsInfo {
            protocol: protocol.to_string(),
            cipher,
            bits,
            key_exchange: conn
                .negotiated_key_exchange_group()
                .map(|g| key_exchange_name(g.name())),
            ..TlsInfo::default()
        })
    }

    /// `from_connection`, with the signatures `noted` while the handshake ran; `server`:
    /// we were its server. Postfix (`tls_get_signature_params`) reports signatures for a
    /// TLS 1.3 handshake only, and none for a resumed one, which signs nothing.
    pub fn from_handshake(
        conn: &rustls::CommonState,
        noted: &Noted,
        server: bool,
    ) -> Option<TlsInfo> {
        let mut info = TlsInfo::from_connection(conn)?;
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            || conn.handshake_kind() == Some(HandshakeKind::Resumed)
        {
            return Some(info);
        }
        let local = noted
            .local
            .as_ref()
            .and_then(|(key, scheme)| signature_words(key.end_entity_cert().ok()?, *scheme));
        let peer = noted.peer.and_then(|scheme| {
            let leaf = conn.peer_certificates()?.first()?;
            signature_words(leaf, scheme)
        });
        let (by_server, by_client) = if server { (local, peer) } else { (peer, local) };
        let split =
            |s: Option<(String, Option<String>)>| s.map_or((None, None), |(a, d)| (Some(a), d));
        (info.server_signature, info.server_digest) = split(by_server);
        (info.client_signature, info.client_digest) = split(by_client);
        Some(info)
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`
    pub fn describe(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        )
    }

    /// The session as Postfix's TLS line has it after the peer's name (`tls_misc.c`,
    /// `tls_log_summary`): `describe`, then for TLS 1.3 ` key-exchange GROUP`,
    /// ` server-signature ALG (CURVE or BITS bits) server-digest DIGEST` and, when the client
    /// signed with a certificate, ` client-signature … client-digest …`. Postfix 3.10+ with
    /// OpenSSL 3.5:
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange
    /// X25519MLKEM768 server-signature ECDSA (prime256v1) server-digest SHA256`.
    pub fn describe_session(&self) -> String {
        let mut out = self.describe();
        for part in self.details() {
            out.push(' ');
            out.push_str(&part);
        }
        out
    }

    /// The Received header's comment, one folded line each (Postfix's `smtpd.c`): `(using
    /// … bits)`, then ` key-exchange … server-signature … server-digest …` on the next,
    /// ` client-signature … client-digest …` on the one after; the last ends with `)`.
    /// Without a tab or line end: the header writer adds them.
    pub fn received_comment(&self) -> Vec<String> {
        let mut lines = vec![format!("(using {}", self.describe())];
        for part in self.details() {
            if part.starts_with("client-") || lines.len() == 1 {
                lines.push(format!(" {part}"));
            } else if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(&part);
            }
        }
        if let Some(last) = lines.last_mut() {
            last.push(')');
        }
        lines
    }

    /// What Postfix adds after the cipher: `key-exchange …`, `server-signature …` (with
    /// its digest), `client-signature …` (with its digest); TLS 1.3 only.
    fn details(&self) -> Vec<String> {
        if self.protocol != "TLSv1.3" {
            return Vec::new();
        }
        let mut parts = Vec::with_capacity(3);
        if let Some(kx) = &self.key_exchange {
            parts.push(format!("key-exchange {kx}"));
        }
        let signed = |who: &str, alg: &Option<String>, digest: &Option<String>| {
            alg.as_ref().map(|alg| match digest {
                Some(d) => format!("{who}-signature {alg} {who}-digest {d}"),
                None => format!("{who}-signature {alg}"),
            })
        };
        parts.extend(signed(
            "server",
            &self.server_signature,
            &self.server_digest,
        ));
        parts.extend(signed(
            "client",
            &self.client_signature,
            &self.client_digest,
        ));
        parts
    }
}

/// The group as Postfix 3.10+ logs it: OpenSSL 3's TLS group name (`tls_misc.c`,
/// `tls_get_signature_params`, takes `SSL_get0_group_name`, or `SSL_group_to_name` before
/// OpenSSL 3.2, first; both answer the group table's `tlsname`: lower-case `x25519` and
/// `x448`, `secp256r1` for P-256, `ffdhe2048`, the hybrids by their IANA names). Checked
/// against this machine's OpenSSL 3.0: `SSL_group_to_name` says `x25519` and `secp256r1`.
/// (Postfix before 3.10 named the peer's key instead: `X25519`, `ECDHE (prime256v1)`.)
fn key_exchange_name(group: NamedGroup) -> String {
    let name = match group {
        NamedGroup::X25519 => "x25519",
        NamedGroup::X448 => "x448",
        NamedGroup::secp256r1 => "secp256r1",
        NamedGroup::secp384r1 => "secp384r1",
        NamedGroup::secp521r1 => "secp521r1",
        NamedGroup::FFDHE2048 => "ffdhe2048",
        NamedGroup::FFDHE3072 => "ffdhe3072",
        NamedGroup::FFDHE4096 => "ffdhe4096",
        NamedGroup::FFDHE6144 => "ffdhe6144",
        NamedGroup::FFDHE8192 => "ffdhe8192",
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        NamedGroup::secp256r1MLKEM768 => "SecP256r1MLKEM768",
        NamedGroup::MLKEM512 => "MLKEM512",
        NamedGroup::MLKEM768 => "MLKEM768",
        NamedGroup::MLKEM1024 => "MLKEM1024",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

fn openssl_name(suite: CipherSuite) -> (String, u16) {
    let (name, bits) = match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls13(kx: &str) -> TlsInfo {
        TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            key_exchange: Some(kx.into()),
            ..TlsInfo::default()
        }
    }

    /// Postfix's own examples (README_FILES/FORWARD_SECRECY_README, "How can I see that a
    /// connection has forward secrecy?"), byte for byte from the same facts.
    #[test]
    fn the_line_as_postfix_documents_it() {
        let mut t = tls13("X25519");
        t.server_signature = Some("RSA-PSS (2048 bits)".into());
        t.server_digest = Some("SHA256".into());
        t.client_signature = Some("ECDSA (P-256)".into());
        t.client_digest = Some("SHA256".into());
        assert_eq!(
            t.describe_session(),
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256 client-signature ECDSA (P-256) client-digest SHA256"
        );
        // No key exchange known (a peer's KEM before OpenSSL 3.2), EdDSA without a digest.
        let ed = TlsInfo {
            key_exchange: None,
            server_signature: Some("ED25519".into()),
            ..tls13("")
        };
        assert_eq!(
            ed.describe_session(),
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) server-signature ED25519"
        );
        // TLS 1.2: Postfix adds nothing after the cipher (tls_get_signature_params returns
        // before TLS 1.3).
        let old = TlsInfo {
            protocol: "TLSv1.2".into(),
            cipher: "ECDHE-RSA-AES256-GCM-SHA384".into(),
            ..t
        };
        assert_eq!(
            old.describe_session(),
            "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"
        );
    }

    #[test]
    fn received_comment_folds_where_smtpd_does() {
        let mut t = tls13("X25519MLKEM768");
        assert_eq!(
            t.received_comment(),
            [
                "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                " key-exchange X25519MLKEM768)"
            ]
        );
        t.key_exchange = None;
        t.server_signature = Some("ECDSA (prime256v1)".into());
        t.server_digest = Some("SHA256".into());
        t.client_signature = Some("ECDSA (prime256v1)".into());
        t.client_digest = Some("SHA384".into());
        assert_eq!(
            t.received_comment(),
            [
                "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                " server-signature ECDSA (prime256v1) server-digest SHA256",
                " client-signature ECDSA (prime256v1) client-digest SHA384)"
            ]
        );
    }

    /// OpenSSL 3's TLS group names (`SSL_group_to_name`, `SSL_get0_group_name`), as Postfix
    /// 3.10+ logs them.
    #[test]
    fn groups_in_openssl_3_words() {
        assert_eq!(
            key_exchange_name(NamedGroup::X25519MLKEM768),
            "X25519MLKEM768"
        );
        assert_eq!(key_exchange_name(NamedGroup::X25519), "x25519");
        assert_eq!(key_exchange_name(NamedGroup::secp256r1), "secp256r1");
        assert_eq!(key_exchange_name(NamedGroup::secp384r1), "secp384r1");
    }
}
