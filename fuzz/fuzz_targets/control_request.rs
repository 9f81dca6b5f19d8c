//! Control-protocol request parsing: every text message on a session's `control` data channel
//! (and every request the gateway relays) goes through `ControlRequest::decode`.
//!
//! Invariants: decode never panics, on valid UTF-8 or on arbitrary bytes made text the way a
//! lenient peer would (lossy); errors carry only the codes decode may produce (`too_large` only
//! over the limit); every error becomes a reply that serializes and parses back; a decoded
//! request re-serializes to text that decodes to the same request.

#![no_main]

use ferrocam_protocol::PROTOCOL_VERSION;
use ferrocam_protocol::control::{
    ControlErrorCode, ControlRequest, ControlResponse, MAX_CONTROL_MESSAGE,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});

fn check(text: &str) {
    match ControlRequest::decode(text) {
        Ok(request) => {
            assert_eq!(request.v, PROTOCOL_VERSION);
            let _ = request.command.mutates();
            let again = serde_json::to_string(&request).expect("requests serialize");
            match ControlRequest::decode(&again) {
                Ok(decoded) => assert_eq!(decoded, request, "decode(encode(r)) != r"),
                // Defaults written out (`"width":null`) can grow a request past the limit.
                Err((_, e)) if e.code == ControlErrorCode::TooLarge => {
                    assert!(again.len() > MAX_CONTROL_MESSAGE)
                }
                Err((id, e)) => panic!("re-serialized request {again:?} fails: {id} {e:?}"),
            }
        }
        Err((id, error)) => {
            match error.code {
                ControlErrorCode::TooLarge => {
                    assert!(text.len() > MAX_CONTROL_MESSAGE);
                    assert_eq!(id, 0);
                }
                ControlErrorCode::BadRequest | ControlErrorCode::UnsupportedVersion => {
                    assert!(text.len() <= MAX_CONTROL_MESSAGE)
                }
                other => panic!("decode produced {other:?}"),
            }
            let reply = ControlResponse::error(id, error);
            let json = serde_json::to_string(&reply).expect("replies serialize");
            let parsed: ControlResponse =
                serde_json::from_str(&json).expect("error replies parse back");
            assert_eq!(parsed, reply);
        }
    }
}
