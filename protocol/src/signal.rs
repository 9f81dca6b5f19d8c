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

fn is_false(value: &bool) -> bool {
    !value
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
    /// With `sealed`, `message` is sealed to the gateways' grant key ([`crate::sealed`]), so a
    /// snapshot cannot be read off the broker.
    ControlReply {
        message: String,
        #[serde(default, skip_serializing_if = "is_false")]
        sealed: bool,
    },
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
    /// The device is serving as many viewers as it is configured for, or the gateway's queue
    /// to the broker is full (a broker outage); either way, worth retrying shortly.
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
#[path = "signal_tests.rs"]
mod tests;
