//! The facts of a TLS session that log lines, Received headers and the minimum-strength
//! policy report: protocol, cipher (OpenSSL's names, as Postfix logs them) and key bits.

use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

/// What was negotiated, in the words Postfix logs use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The key exchange, as Postfix logs it after `key-exchange` (OpenSSL's names):
    /// `X25519`, `ECDHE (prime256v1)`, `X25519MLKEM768`. Unknown on records made before it
    /// was kept, and on a TLS 1.2 session resumed (no key exchange took place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_exchange: Option<String>,
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
            trusted: None,
            key_exchange: conn
                .negotiated_key_exchange_group()
                .map(|g| key_exchange_name(g.name())),
        })
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`
    pub fn describe(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        )
    }

    /// `describe`, and the key exchange where it is known, as smtpd's TLS line has them:
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519`.
    pub fn describe_session(&self) -> String {
        match &self.key_exchange {
            Some(kx) => format!("{} key-exchange {kx}", self.describe()),
            None => self.describe(),
        }
    }
}

/// The group in Postfix's words (`tls_misc.c`, `tls_get_signature_params`): X25519 and X448
/// by name, an elliptic curve as `ECDHE (curve)` with OpenSSL 3's curve names, finite-field
/// groups as `DHE (bits)`, hybrids by their IANA name as OpenSSL 3.5 calls them.
fn key_exchange_name(group: NamedGroup) -> String {
    let name = match group {
        NamedGroup::X25519 => "X25519",
        NamedGroup::X448 => "X448",
        NamedGroup::secp256r1 => "ECDHE (prime256v1)",
        NamedGroup::secp384r1 => "ECDHE (secp384r1)",
        NamedGroup::secp521r1 => "ECDHE (secp521r1)",
        NamedGroup::FFDHE2048 => "DHE (2048 bits)",
        NamedGroup::FFDHE3072 => "DHE (3072 bits)",
        NamedGroup::FFDHE4096 => "DHE (4096 bits)",
        NamedGroup::FFDHE6144 => "DHE (6144 bits)",
        NamedGroup::FFDHE8192 => "DHE (8192 bits)",
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
