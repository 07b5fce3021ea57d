//! Client token verification (our own header parsing, `read_header`, then
//! the JWT library): never panics, and never accepts a token, since the
//! input cannot know the secret.
//!
//! Input: `p` then up to three parts separated by newlines (header, claims,
//! signature), each base64url-encoded here and joined with `.`, so the
//! fuzzer can mutate the header JSON itself; anything else is the token as
//! text.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::auth::{JwtAlgorithm, TokenVerifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    TokenVerifier::new(
        JwtAlgorithm::HS256,
        b"herald-fuzz-secret-that-no-input-knows-0123456789",
        Duration::ZERO,
    )
    .unwrap()
});

fuzz_target!(|data: &[u8]| {
    let token = match data.split_first() {
        Some((b'p', rest)) => rest
            .splitn(3, |b| *b == b'\n')
            .map(|part| URL_SAFE_NO_PAD.encode(part))
            .collect::<Vec<_>>()
            .join("."),
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    if let Ok(claims) = VERIFIER.verify(&token) {
        panic!("a token made without the secret was accepted: {token:?} → {claims:?}");
    }
});
