//! The signaling envelope decoder: every MQTT payload on a device's `signal` topic (and every
//! reply a gateway receives) goes through `Envelope::decode`, and malformed ones through
//! `Envelope::reply_route`.
//!
//! Invariants: neither panics; errors are consistent with the input; a decoded envelope
//! re-encodes to bytes that decode to the same value, and encoding is stable; a decodable
//! envelope with a reply topic has the same reply route.

#![no_main]

use ferrocam_protocol::{DecodeError, Envelope, MAX_SIGNAL_PAYLOAD, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let route = Envelope::reply_route(data);
    let envelope = match Envelope::decode(data) {
        Ok(envelope) => envelope,
        Err(error) => {
            match &error {
                DecodeError::TooLarge(n) => {
                    assert_eq!(*n, data.len());
                    assert!(*n > MAX_SIGNAL_PAYLOAD);
                }
                DecodeError::Version(v) => assert_ne!(*v, PROTOCOL_VERSION),
                DecodeError::Malformed(_) => assert!(data.len() <= MAX_SIGNAL_PAYLOAD),
            }
            // The text goes into error replies and logs.
            let _ = error.to_string();
            return;
        }
    };
    assert_eq!(envelope.v, PROTOCOL_VERSION);

    if let Some(reply_to) = &envelope.reply_to {
        let (session, device, topic) = route.expect("a valid envelope has a reply route");
        assert_eq!(session, envelope.session);
        assert_eq!(device, envelope.device);
        assert_eq!(&topic, reply_to);
    }

    let bytes = envelope.encode();
    match Envelope::decode(&bytes) {
        Ok(again) => {
            assert_eq!(again, envelope, "decode(encode(e)) != e");
            assert_eq!(again.encode(), bytes, "encoding is not stable");
        }
        // Defaults written out (`"role":"view"`) can push a payload just under the limit over
        // it; anything else is a real asymmetry between encoder and decoder.
        Err(DecodeError::TooLarge(n)) => assert!(n > MAX_SIGNAL_PAYLOAD),
        Err(error) => panic!("a re-encoded envelope does not decode: {error}"),
    }
});
