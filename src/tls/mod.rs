//! rustls configuration: one crypto provider (aws-lc-rs), TLS 1.2 and 1.3 with ECDHE suites
//! only, a certificate resolver that can be swapped at run time, the system self-signed
//! certificate, and the TLS facts that log lines and Received headers report.
//!
//! This file holds the provider and the error; each concern has its file: `resolver` (the
//! certificate served), `server` and `client` (the configs), `verifier` (the certificate
//! checks a policy demands), `client_identity` (who a client certificate proves the client
//! is), `signatures` (handshake signatures, checked alike by every verifier), `facts` (what
//! was negotiated), `notes` (which signatures a handshake made, for its log line) and
//! `words` (errors as an admin reads them).

mod client;
mod client_identity;
mod facts;
mod notes;
mod resolver;
mod server;
mod signatures;
mod verifier;
pub mod words;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use client::{
    chain_trusted, chain_verifier, pinned_client_config, pinned_client_config_for,
    policy_client_config, trust_roots, unauthenticated_client_config,
    unauthenticated_client_config_for, unauthenticated_client_config_with, webpki_client_config,
};
pub use client_identity::{IdentityProblem, verify_client_identity};
pub use facts::TlsInfo;
pub use notes::{Noted, noting};
pub use resolver::{CertResolver, Served, certified_key_from_pem, system_certificate};
pub use server::{server_config, smtp_server_config};
pub use verifier::{CertCheck, CertProblem, PolicyVerifier, fingerprints};

/// Install aws-lc-rs as the process-wide provider (the one provider we build with), as
/// `provider()` sets it: a config built without naming a provider offers the same groups.
/// Idempotent: a second call finds it installed.
pub fn install_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// aws-lc-rs restricted to forward-secret AEAD suites: TLS 1.3's three, and TLS 1.2's
/// ECDHE with AES-GCM or ChaCha20-Poly1305. No RSA key exchange, no CBC. Key exchange:
/// the post-quantum hybrid X25519MLKEM768 first, then X25519 and the NIST curves, in both
/// directions (`KxGroups::PostQuantum`).
pub fn provider() -> Arc<CryptoProvider> {
    provider_for(KxGroups::PostQuantum)
}

/// Which key-exchange groups a handshake offers (a client) or accepts (a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KxGroups {
    /// X25519MLKEM768 preferred (draft-ietf-tls-ecdhe-mlkem), as OpenSSL 3.5 and Postfix
    /// 3.10+ do by default; a client sends its share and an X25519 one in the ClientHello.
    PostQuantum,
    /// X25519 and the NIST curves only: a ClientHello of a few hundred bytes, for a peer (or
    /// a middlebox in front of it) that drops the 1.2 KB+ one the hybrid share makes.
    Classical,
}

/// The provider offering `groups`. Set here, explicitly, rather than by rustls's
/// `prefer-post-quantum` feature (README, Dependencies): the order is the project's
/// decision, not a feature another crate in the build could switch on or off.
pub fn provider_for(groups: KxGroups) -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let classical = [kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    p.kx_groups = match groups {
        KxGroups::PostQuantum => std::iter::once(kx_group::X25519MLKEM768)
            .chain(classical)
            .collect(),
        KxGroups::Classical => classical.to_vec(),
    };
    Arc::new(p)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_group_first_then_classical() {
        let names = |g: KxGroups| -> Vec<String> {
            provider_for(g)
                .kx_groups
                .iter()
                .map(|k| format!("{:?}", k.name()))
                .collect()
        };
        assert_eq!(
            names(KxGroups::PostQuantum),
            ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
        );
        assert_eq!(
            names(KxGroups::Classical),
            ["X25519", "secp256r1", "secp384r1"]
        );
    }

    #[test]
    fn only_forward_secret_aead_suites() {
        for s in provider().cipher_suites.iter() {
            let name = format!("{:?}", s.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(!name.contains("CBC"), "{name}");
        }
    }
}
