//! Signed broker messages: every payload a gateway takes from a device topic, and every request
//! a device takes from its signal topic, goes through `Verifier::open` before anything else.
//!
//! The input is split into a topic and a payload. Invariants: `open` never panics; it refuses
//! payloads over the limit as `too_large` and nothing smaller that way; a forged payload never
//! verifies (the fuzzer does not hold the key); and when the payload's `msg` is any JSON value,
//! sealing it with the test key opens again to exactly those bytes, on that topic only.

#![no_main]

use ferrocam_protocol::signed::{MAX_SIGNED_PAYLOAD, SignedError, Signer, Verifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A fixed key: the fuzzer explores payloads, not keys.
fn keys() -> &'static (Signer, Verifier) {
    static KEYS: OnceLock<(Signer, Verifier)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer =
            Signer::from_seed_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
        let verifier = Verifier::from_base64(&signer.public_key()).unwrap();
        (signer, verifier)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, verifier) = keys();
    let split = data.iter().position(|b| *b == 0).unwrap_or(0);
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = &data[(split + 1).min(data.len())..];

    match verifier.open(&topic, payload) {
        Ok(opened) => panic!("a payload nobody signed verified: {:?}", opened.msg),
        Err(SignedError::TooLarge) => assert!(payload.len() > MAX_SIGNED_PAYLOAD),
        Err(_) => assert!(payload.len() <= MAX_SIGNED_PAYLOAD),
    }

    // Whatever JSON the payload holds as its message seals and opens back, byte for byte.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        let msg = serde_json::to_vec(&value).expect("values serialize");
        let sealed = signer.seal(&topic, &msg, 1_764_489_600_000);
        if sealed.len() <= MAX_SIGNED_PAYLOAD {
            let opened = verifier.open(&topic, &sealed).expect("own seal opens");
            assert_eq!(opened.msg, msg.as_slice());
            assert_eq!(opened.at_ms, 1_764_489_600_000);
            let elsewhere = format!("{topic}/x");
            assert_eq!(
                verifier.open(&elsewhere, &sealed),
                Err(SignedError::BadSignature)
            );
        }
    }
});
