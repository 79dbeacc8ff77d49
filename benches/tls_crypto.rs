//! The cryptography a STARTTLS session costs, timed on its own (issue 17's yardstick for
//! the TLS relay CPU per message): one RSA-2048 signature (the relay's certificate key,
//! RSA-PSS SHA-256 as TLS 1.3 uses it), one X25519 exchange (an ephemeral key made and
//! agreed), and AES-256-GCM over 4 KiB each way (sealed and opened). aws-lc-rs, the
//! provider rustls uses here. `cargo bench --bench tls_crypto`.

use aws_lc_rs::{aead, agreement, rand, rsa, signature};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn crypto(c: &mut Criterion) {
    let rng = rand::SystemRandom::new();
    let rsa =
        rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("aws-lc-rs generates RSA-2048 keys");
    let transcript = [7u8; 48];
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    let mut g = c.benchmark_group("tls_crypto");
    g.bench_function("rsa2048_pss_sign", |b| {
        b.iter(|| {
            rsa.sign(
                &signature::RSA_PSS_SHA256,
                &rng,
                black_box(&transcript),
                &mut sig,
            )
            .expect("sign");
            black_box(&sig);
        })
    });
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap();
    g.bench_function("x25519_exchange", |b| {
        b.iter(|| {
            let mine = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
            black_box(mine.compute_public_key().unwrap());
            let theirs =
                agreement::UnparsedPublicKey::new(&agreement::X25519, peer_public.as_ref());
            agreement::agree_ephemeral(mine, theirs, aws_lc_rs::error::Unspecified, |k| {
                Ok(black_box(k[0]))
            })
            .unwrap()
        })
    });
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &[3u8; 32]).unwrap());
    let data = vec![0x58u8; 4096];
    g.bench_function("aes256gcm_4k_seal_and_open", |b| {
        let mut buf = Vec::with_capacity(4096 + 16);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&data);
            let nonce = aead::Nonce::assume_unique_for_key([1u8; 12]);
            key.seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut buf)
                .unwrap();
            let nonce = aead::Nonce::assume_unique_for_key([1u8; 12]);
            black_box(
                key.open_in_place(nonce, aead::Aad::empty(), &mut buf)
                    .unwrap()
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
