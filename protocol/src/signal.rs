//! The signaling envelope exchanged between gateways and devices over MQTT.
//!
//! Request/response uses only MQTT 3.1.1 features: a request names the topic its replies go to
//! (`reply_to`), so each gateway instance listens on its own topic and any number of gateways
//! share one broker without shared state.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, SessionId};
use crate::{MAX_SIGNAL_PAYLOAD, PROTOCOL_VERSION};

/// One signaling message with its routing header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version, [`PROTOCOL_VERSION`] for this crate.
    pub v: u16,
    /// The viewer session this message belongs to.
    pub session: SessionId,
    /// The device the session is with.
    pub device: DeviceId,
    /// Topic the receiver sends its replies to (set on gateway → device messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// What is being said.
    #[serde(flatten)]
    pub body: Signal,
}

/// The messages of a signaling session, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// The viewer's SDP offer; the device answers it.
    Offer { sdp: String },
    /// The device's SDP answer to an offer.
    Answer { sdp: String },
    /// One trickled ICE candidate from the sender.
    Candidate { candidate: IceCandidate },
    /// The sender has gathered all its candidates.
    EndOfCandidates,
    /// The sender ends the session; the receiver frees it.
    HangUp { reason: String },
    /// A request failed; the session is over.
    Error { code: ErrorCode, message: String },
}

/// An ICE candidate as a browser's `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Machine-readable reason carried by [`Signal::Error`].
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
    /// The device did not answer in time.
    Timeout,
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

impl Envelope {
    /// A new envelope of the current protocol version.
    pub fn new(device: DeviceId, session: SessionId, body: Signal) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            session,
            device,
            reply_to: None,
            body,
        }
    }

    /// Sets the reply topic.
    pub fn reply_to(mut self, topic: String) -> Self {
        self.reply_to = Some(topic);
        self
    }

    /// Parses an MQTT payload, enforcing the size limit and the version.
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

    /// Serializes for publishing.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (DeviceId, SessionId) {
        (
            DeviceId::parse("cam").unwrap(),
            SessionId::from_random([7; 16]),
        )
    }

    #[test]
    fn round_trips_with_a_type_tag() {
        let (d, s) = ids();
        let env = Envelope::new(d, s, Signal::Offer { sdp: "v=0".into() })
            .reply_to("ferrocam/v1/gateways/g/signal".into());
        let bytes = env.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#""type":"offer""#), "{text}");
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn rejects_garbage_oversize_and_other_versions() {
        assert!(matches!(
            Envelope::decode(b"\xff\x00garbage"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(&vec![b' '; MAX_SIGNAL_PAYLOAD + 1]),
            Err(DecodeError::TooLarge(_))
        ));
        let (d, s) = ids();
        let mut env = Envelope::new(d, s, Signal::EndOfCandidates);
        env.v = 99;
        assert!(matches!(
            Envelope::decode(&env.encode()),
            Err(DecodeError::Version(99))
        ));
    }

    #[test]
    fn rejects_ids_with_wildcards_inside_envelopes() {
        let json = r#"{"v":1,"session":"abc","device":"a/#","type":"end_of_candidates"}"#;
        assert!(Envelope::decode(json.as_bytes()).is_err());
    }
}
