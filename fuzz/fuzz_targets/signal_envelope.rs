//! The signaling envelope decoder: every MQTT payload on a device's `signal` topic goes through
//! `Request::decode`, every reply a gateway receives through `Reply::decode`, and malformed
//! requests through `Request::reply_route`.
//!
//! Invariants: neither panics; errors are consistent with the input; a decoded envelope
//! re-encodes to bytes that decode to the same value, and encoding is stable; a decodable
//! request with a reply topic has the same reply route.

#![no_main]

use ferrocam_protocol::{
    DecodeError, Envelope, MAX_SIGNAL_PAYLOAD, PROTOCOL_VERSION, Reply, Request,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let route = Request::reply_route(data);
    if let Some(request) = check::<ferrocam_protocol::ToDevice>(data)
        && let Some(reply_to) = &request.reply_to
    {
        let (session, device, topic) = route.expect("a valid request has a reply route");
        assert_eq!(session, request.session);
        assert_eq!(device, request.device);
        assert_eq!(&topic, reply_to);
    }
    let _: Option<Reply> = check(data);
});

/// Decodes `data` as an envelope with a `B` body and checks the invariants.
fn check<B>(data: &[u8]) -> Option<Envelope<B>>
where
    B: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let envelope = match Envelope::<B>::decode(data) {
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
            return None;
        }
    };
    assert_eq!(envelope.v, PROTOCOL_VERSION);
    let bytes = envelope.encode();
    match Envelope::<B>::decode(&bytes) {
        Ok(again) => {
            assert_eq!(again, envelope, "decode(encode(e)) != e");
            assert_eq!(again.encode(), bytes, "encoding is not stable");
        }
        // Defaults written out (`"role":"view"`) can push a payload just under the limit over
        // it; anything else is a real asymmetry between encoder and decoder.
        Err(DecodeError::TooLarge(n)) => assert!(n > MAX_SIGNAL_PAYLOAD),
        Err(error) => panic!("a re-encoded envelope does not decode: {error}"),
    }
    Some(envelope)
}
