//! The settings key and what it does: seals every row the shared database keeps
//! (AES-256-GCM, the row's key authenticated with it) and derives the token the nodes show
//! each other's control API. Below both the PostgreSQL store and the chain's head, which
//! seal with it.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::store::StoreError;

/// The settings key: 32 bytes, given as 64 hex digits.
pub struct Sealer {
    key: LessSafeKey,
    /// The same key for HMAC: the nodes' credential between their control APIs is derived
    /// from it (`cluster_token`), so there is no second secret to hand out.
    mac: aws_lc_rs::hmac::Key,
}

impl Sealer {
    pub fn from_hex(hex: &str) -> Result<Sealer, String> {
        let hex = hex.trim();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<_>>()
            .filter(|b: &Vec<u8>| b.len() == 32 && hex.len() == 64)
            .ok_or("the settings key must be 64 hex digits (32 bytes)")?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "bad settings key")?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            mac: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The bearer token one node shows another's control API: HMAC-SHA256 of a fixed label
    /// under the settings key, in hex. Every node holding the key derives the same one; the
    /// database never sees it.
    pub fn cluster_token(&self) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.mac, b"postern cluster control API v1");
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Nonce, then ciphertext and tag; `what` (the row's key) is authenticated with it, so a
    /// sealed row cannot be moved to another.
    pub(crate) fn seal(&self, what: &str, plain: &[u8]) -> Vec<u8> {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = plain.to_vec();
        // Sealing into a Vec cannot fail for inputs under the 64 GiB AES-GCM limit.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(what.as_bytes()),
            &mut data,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        out
    }

    pub(crate) fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let fail = || StoreError::Db(format!("{what}: cannot be opened with this settings key"));
        let (nonce, data) = sealed.split_at_checked(NONCE_LEN).ok_or_else(fail)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut data)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}
