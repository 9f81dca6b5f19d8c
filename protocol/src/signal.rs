//! The signaling envelope exchanged between gateways and devices over MQTT.
//!
//! Request/response uses only MQTT 3.1.1 features: a request names the topic its replies go to
//! (`reply_to`), so each gateway instance listens on its own topic and any number of gateways
//! share one broker without shared state.
//!
//! The two directions are two types: a gateway sends [`Request`]s ([`ToDevice`] bodies) and a
//! device sends [`Reply`]s ([`FromDevice`] bodies), so neither side can even build the other's
//! messages, and a message of the wrong direction does not decode.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::control::Role;
use crate::ids::{DeviceId, InstanceId, SessionId};
use crate::{MAX_SIGNAL_PAYLOAD, PROTOCOL_VERSION};

/// One signaling message with its routing header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// Protocol version, [`PROTOCOL_VERSION`] for this crate.
    pub v: u16,
    /// The viewer session this message belongs to.
    pub session: SessionId,
    /// The device the session is with.
    pub device: DeviceId,
    /// Who sent this envelope.
    pub from: Party,
    /// Topic the receiver sends its replies to (set on gateway → device messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// What is being said.
    #[serde(flatten)]
    pub body: B,
}

/// Gateway → device, on the device's `signal` topic.
pub type Request = Envelope<ToDevice>;

/// Device → gateway, on the device's `reply/<instance>` topic.
pub type Reply = Envelope<FromDevice>;

/// The sender of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// A gateway instance (`{"gateway": "gw-1"}`).
    Gateway(InstanceId),
    /// A device (`{"device": "garage"}`).
    Device(DeviceId),
}

/// What a gateway says to a device, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToDevice {
    /// The viewer's SDP offer, which the device answers; with `trickle: false` the device
    /// waits until it has gathered its candidates and puts them all in the answer (WHEP
    /// players).
    Offer {
        sdp: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        trickle: bool,
        /// What the session may do on its control data channel.
        #[serde(default)]
        role: Role,
        /// The gateway's signed permission for this session ([`crate::grant`]); a device
        /// refuses offers without a valid one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// The viewer asks the device to make the offer (browsers over WebSocket). The device then
    /// controls ICE and nominates the first pair that works instead of waiting for the
    /// browser's next check, and is the DTLS client (first frame in Chromium in about half the
    /// time). Answered by [`FromDevice::Offer`], which the viewer answers with `Answer`.
    Invite {
        /// What the session may do on its control data channel.
        #[serde(default)]
        role: Role,
        /// The gateway's signed permission for this session ([`crate::grant`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// The viewer's SDP answer to the device's offer, with the gateway's grant binding it to
    /// the session ([`crate::grant`]); a device applies no answer without one.
    Answer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// One of the viewer's trickled ICE candidates.
    Candidate { candidate: IceCandidate },
    /// The viewer has gathered all its candidates.
    EndOfCandidates,
    /// The viewer ends the session; the device frees it.
    HangUp { reason: String },
    /// A control-protocol request relayed by the gateway (REST, CLI); `session` is the
    /// request's own id. Answered by one or more `control_reply`.
    Control {
        role: Role,
        request: String,
        /// The gateway's signed permission for this request ([`crate::grant`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// The viewer of a running session now signals through this gateway (the one that started
    /// it restarted or went away, and the viewer reconnected). The device sends the session's
    /// messages to this envelope's `reply_to` from now on. The grant must be an attach grant
    /// naming the session and the user who started it; media never paused, this only moves the
    /// signaling route (for a later hang-up, ICE restart or renegotiation).
    Attach {
        /// The gateway's signed permission for this session ([`crate::grant`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// The viewer asks for an ICE restart of a session the device offered. The device sends a
    /// new `offer` with fresh ICE credentials (at most one every 2 s), and the viewer's
    /// `answer` to it needs a grant naming it, like the first.
    RestartIce,
}

/// What a device says to a gateway, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromDevice {
    /// The device's SDP offer after an [`ToDevice::Invite`] (or an ICE restart).
    Offer {
        sdp: String,
        /// The session's role, repeated for the viewer's information.
        #[serde(default)]
        role: Role,
    },
    /// The device's SDP answer to the viewer's offer.
    Answer { sdp: String },
    /// One of the device's trickled ICE candidates.
    Candidate { candidate: IceCandidate },
    /// The device has gathered all its candidates.
    EndOfCandidates,
    /// The device ended the session.
    HangUp { reason: String },
    /// A request failed; the session is over.
    Error { code: ErrorCode, message: String },
    /// One message answering a relayed control request (the response, then snapshot chunks).
    ControlReply { message: String },
    /// The session is attached to the gateway that sent [`ToDevice::Attach`].
    Attached,
}

/// An ICE candidate as a browser's `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media section's mid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The media section's index.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
}

/// Machine-readable reason carried by [`FromDevice::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The envelope's version is not one the receiver speaks.
    UnsupportedVersion,
    /// The payload could not be parsed or breaks a limit.
    BadRequest,
    /// The offer has no codec the device can send (ferrocam sends H.264).
    NoCommonCodec,
    /// The device is not known or not online.
    UnknownDevice,
    /// The session id names no live session.
    UnknownSession,
    /// The device could not do what was asked (details in the message).
    Internal,
    /// The device did not answer, or the viewer did not connect, in time.
    Timeout,
    /// The device is serving as many viewers as it is configured for.
    Busy,
    /// The message is larger than the protocol allows.
    TooLarge,
    /// The sender sent too many requests too quickly.
    RateLimited,
    /// The request carries no valid grant (or the viewer no valid credentials).
    Unauthorized,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Why an MQTT payload is not a usable envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_SIGNAL_PAYLOAD`].
    #[error("payload is {0} bytes; the limit is {MAX_SIGNAL_PAYLOAD}")]
    TooLarge(usize),
    /// Not JSON, or not an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Well-formed but of another protocol version.
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
}

impl<B> Envelope<B> {
    /// A new envelope of the current protocol version.
    pub fn new(from: Party, device: DeviceId, session: SessionId, body: B) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            session,
            device,
            from,
            reply_to: None,
            body,
        }
    }

    /// Sets the reply topic.
    pub fn reply_to(mut self, topic: String) -> Self {
        self.reply_to = Some(topic);
        self
    }
}

impl<B: Serialize> Envelope<B> {
    /// Serializes for publishing.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }
}

impl<B: DeserializeOwned> Envelope<B> {
    /// Parses an MQTT payload, enforcing the size limit and the version. A message of the
    /// other direction is [`DecodeError::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() > MAX_SIGNAL_PAYLOAD {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        // Check the version before the body so a future message type gets a version error,
        // not a confusing "unknown variant".
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u16,
        }
        let VersionOnly { v } = serde_json::from_slice(payload)?;
        if v != PROTOCOL_VERSION {
            return Err(DecodeError::Version(v));
        }
        Ok(serde_json::from_slice(payload)?)
    }
}

impl Request {
    /// For a payload that is not a valid request, the route an error reply can take: the
    /// session, device and reply topic, if those fields alone parse and are valid. Lets a device
    /// answer a malformed request with a typed error instead of silence.
    pub fn reply_route(payload: &[u8]) -> Option<(SessionId, DeviceId, String)> {
        if payload.len() > MAX_SIGNAL_PAYLOAD {
            return None;
        }
        #[derive(Deserialize)]
        struct Route {
            session: SessionId,
            device: DeviceId,
            reply_to: String,
        }
        let route: Route = serde_json::from_slice(payload).ok()?;
        Some((route.session, route.device, route.reply_to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Party {
        Party::Gateway(InstanceId::parse("gw-1").unwrap())
    }

    fn ids() -> (DeviceId, SessionId) {
        (
            DeviceId::parse("cam").unwrap(),
            SessionId::from_random([7; 16]),
        )
    }

    #[test]
    fn round_trips_with_a_type_tag() {
        let (d, s) = ids();
        let env = Request::new(
            gw(),
            d,
            s,
            ToDevice::Offer {
                sdp: "v=0".into(),
                trickle: true,
                role: Role::View,
                grant: None,
            },
        )
        .reply_to("ferrocam/v1/devices/cam/reply/g".into());
        let bytes = env.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#""type":"offer""#), "{text}");
        assert!(text.contains(r#""from":{"gateway":"gw-1"}"#), "{text}");
        assert_eq!(Request::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn a_message_of_the_other_direction_does_not_decode() {
        let (d, s) = ids();
        let device = Party::Device(d.clone());
        let error = FromDevice::Error {
            code: ErrorCode::Busy,
            message: "full".into(),
        };
        let reply = Reply::new(device, d.clone(), s.clone(), error).encode();
        assert!(matches!(
            Request::decode(&reply),
            Err(DecodeError::Malformed(_))
        ));
        let invite = ToDevice::Invite {
            role: Role::View,
            grant: None,
        };
        let request = Request::new(gw(), d, s, invite).encode();
        assert!(matches!(
            Reply::decode(&request),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn the_devices_offer_reads_as_before() {
        let json = r#"{"v":1,"session":"s","device":"d","from":{"device":"d"},"type":"offer","sdp":"v=0","role":"control"}"#;
        let reply = Reply::decode(json.as_bytes()).unwrap();
        assert_eq!(
            reply.body,
            FromDevice::Offer {
                sdp: "v=0".into(),
                role: Role::Control
            }
        );
    }

    #[test]
    fn rejects_garbage_oversize_and_other_versions() {
        assert!(matches!(
            Request::decode(b"\xff\x00garbage"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Request::decode(&vec![b' '; MAX_SIGNAL_PAYLOAD + 1]),
            Err(DecodeError::TooLarge(_))
        ));
        let (d, s) = ids();
        let mut env = Request::new(gw(), d, s, ToDevice::EndOfCandidates);
        env.v = 99;
        assert!(matches!(
            Request::decode(&env.encode()),
            Err(DecodeError::Version(99))
        ));
    }

    #[test]
    fn rejects_ids_with_wildcards_inside_envelopes() {
        let json = r#"{"v":1,"session":"abc","device":"a/#","from":{"gateway":"g"},"type":"end_of_candidates"}"#;
        assert!(Request::decode(json.as_bytes()).is_err());
    }

    #[test]
    fn offers_trickle_unless_told_otherwise() {
        let json = r#"{"v":1,"session":"s","device":"d","from":{"gateway":"g"},"type":"offer","sdp":"v=0"}"#;
        let env = Request::decode(json.as_bytes()).unwrap();
        assert_eq!(
            env.body,
            ToDevice::Offer {
                sdp: "v=0".into(),
                trickle: true,
                role: Role::View,
                grant: None,
            }
        );
        let (d, s) = ids();
        let whep = Request::new(
            gw(),
            d,
            s,
            ToDevice::Offer {
                sdp: "v=0".into(),
                trickle: false,
                role: Role::View,
                grant: None,
            },
        );
        assert_eq!(Request::decode(&whep.encode()).unwrap(), whep);
    }

    #[test]
    fn malformed_requests_still_yield_a_reply_route_when_the_header_parses() {
        let json = br#"{"v":1,"session":"s1","device":"d","reply_to":"t","type":"warp"}"#;
        assert!(Request::decode(json).is_err());
        let (s, d, t) = Request::reply_route(json).unwrap();
        assert_eq!((s.as_str(), d.as_str(), t.as_str()), ("s1", "d", "t"));
        assert!(
            Request::reply_route(br#"{"session":"a/b","device":"d","reply_to":"t"}"#).is_none()
        );
        assert!(Request::reply_route(b"garbage").is_none());
    }
}

/// Fuzz-style checks: whatever arrives on a signaling topic, decoding returns a value or a typed
/// error and never panics or overflows the stack.
#[cfg(test)]
mod fuzz {
    use super::*;

    /// xorshift64*: deterministic, dependency-free pseudo-random bytes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn sample() -> Vec<u8> {
        Request::new(
            Party::Gateway(InstanceId::parse("gw-1").unwrap()),
            DeviceId::parse("cam").unwrap(),
            SessionId::from_random([1; 16]),
            ToDevice::Candidate {
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                },
            },
        )
        .encode()
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let payload = rng.bytes(i % 700);
            let _ = Request::decode(&payload);
            let _ = Reply::decode(&payload);
            let _ = Request::reply_route(&payload);
        }
    }

    #[test]
    fn every_truncation_of_a_valid_envelope_is_a_typed_error() {
        let full = sample();
        assert!(Request::decode(&full).is_ok());
        for len in 0..full.len() {
            assert!(
                matches!(
                    Request::decode(&full[..len]),
                    Err(DecodeError::Malformed(_))
                ),
                "truncation at {len} decoded"
            );
        }
    }

    #[test]
    fn random_byte_flips_never_panic() {
        let full = sample();
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let mut mutated = full.clone();
            let at = rng.next() as usize % mutated.len();
            mutated[at] = rng.next() as u8;
            let _ = Request::decode(&mutated);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(matches!(
            Request::decode(deep.as_bytes()),
            Err(DecodeError::TooLarge(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Request::decode(deep.as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
        let nested_field = format!(
            r#"{{"v":1,"session":"s","device":"d","from":{{"gateway":"g"}},"type":"hang_up","reason":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(Request::decode(nested_field.as_bytes()).is_err());
    }

    #[test]
    fn huge_strings_within_the_limit_are_fine_and_beyond_it_refused_before_parsing() {
        let sdp = "a".repeat(MAX_SIGNAL_PAYLOAD - 200);
        let fits = format!(
            r#"{{"v":1,"session":"s","device":"d","from":{{"gateway":"g"}},"type":"offer","sdp":"{sdp}"}}"#
        );
        assert!(Request::decode(fits.as_bytes()).is_ok());
        // Over the limit: refused by size even though the bytes are not JSON at all.
        let over = vec![0xffu8; MAX_SIGNAL_PAYLOAD + 1];
        assert!(matches!(
            Request::decode(&over),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
