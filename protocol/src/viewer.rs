//! Messages between a browser (or any viewer) and the gateway over the WebSocket at `/ws`.
//!
//! Two ways to start a session: the viewer asks the device to offer ([`ClientMsg::Watch`], what
//! the web page does: the device then controls ICE and the first frame comes sooner), or the
//! viewer offers ([`ClientMsg::Offer`]). Either way the gateway mints the session id and says so
//! with [`ServerMsg::Session`]; the viewer tags its later messages with that id.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, SessionId};
use crate::presence::DeviceStatus;
use crate::signal::{ErrorCode, IceCandidate};

/// Viewer → gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Start a session with a device by offering SDP. At most a few per second per connection
    /// (`offer` and `watch` share the limit).
    Offer { device: DeviceId, sdp: String },
    /// Start a session with a device that makes the offer ([`ServerMsg::Offer`] follows).
    Watch { device: DeviceId },
    /// The viewer's answer to the device's offer.
    Answer { session: SessionId, sdp: String },
    /// One trickled ICE candidate for a session.
    Candidate {
        session: SessionId,
        candidate: IceCandidate,
    },
    /// The viewer has gathered all its candidates.
    EndOfCandidates { session: SessionId },
    /// The viewer ends a session.
    HangUp { session: SessionId },
    /// The viewer's network path changed or is failing: ask the device (which offered) for an
    /// ICE restart. A new [`ServerMsg::Offer`] for the same session follows, with fresh ICE
    /// credentials, which the viewer answers like the first; media goes on meanwhile.
    RestartIce { session: SessionId },
    /// After the WebSocket dropped (the gateway restarted, or another gateway behind the same
    /// name took over): signal for this still-running session through this connection again.
    /// Media and the control channel flow peer to peer meanwhile. Answered by
    /// [`ServerMsg::Resumed`] once the device agrees, or by an `error` naming the session when
    /// it is gone (the viewer then starts a new one).
    Resume {
        device: DeviceId,
        session: SessionId,
    },
}

/// A STUN or TURN server as `RTCPeerConnection`'s `iceServers` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Gateway → viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// First message on every connection: what the viewer needs to build peer connections.
    Hello { ice_servers: Vec<IceServer> },
    /// The device list changed (sent on connect and on every change).
    Devices { devices: Vec<DeviceStatus> },
    /// The session id minted for the viewer's last offer to `device`.
    Session {
        device: DeviceId,
        session: SessionId,
    },
    /// The device's SDP answer (to an `offer`).
    Answer { session: SessionId, sdp: String },
    /// The device's SDP offer (after a `watch`); the viewer replies with an `answer`.
    Offer { session: SessionId, sdp: String },
    /// One of the device's ICE candidates.
    Candidate {
        session: SessionId,
        candidate: IceCandidate,
    },
    /// The device has gathered all its candidates.
    EndOfCandidates { session: SessionId },
    /// The device ended the session.
    HangUp { session: SessionId, reason: String },
    /// The session named by a [`ClientMsg::Resume`] signals through this connection now.
    Resumed { session: SessionId },
    /// Something failed; `session` is absent when the message could not be tied to one.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        code: ErrorCode,
        message: String,
    },
}
