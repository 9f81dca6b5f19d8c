//! ferrocam's wire formats, shared by the device agent and the gateway.
//!
//! This crate is pure data: ids with validation, the MQTT topic scheme, the signaling envelope
//! that travels over MQTT, presence (device status), and the messages a browser exchanges with
//! the gateway over WebSocket, and how broker messages are signed ([`signed`]). It performs no I/O, so both sides, and any other implementation,
//! can test against it directly.

pub mod codec;
pub mod control;
pub mod files;
pub mod grant;
pub mod ids;
pub mod presence;
pub mod record;
pub mod sdp;
pub mod sdpfrag;
pub mod sealed;
pub mod signal;
pub mod signed;
pub mod stamp;
pub mod status;
pub mod topics;
pub mod viewer;

pub use codec::VideoCodec;
pub use control::{ControlInfo, MenuEntry};
pub use grant::GrantClaims;
pub use ids::{DeviceId, IdError, InstanceId, SessionId};
pub use presence::{
    AudioCapability, CameraState, Capabilities, DeviceStatus, FallbackVideo, FrameSize,
    SourceFormat, VideoCapability, VideoSource,
};
pub use signal::{
    DecodeError, Envelope, ErrorCode, FromDevice, IceCandidate, Party, Reply, Request, ToDevice,
};

/// Version of the signaling protocol carried in every envelope. A receiver answers an envelope
/// with another version with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest MQTT payload either side publishes or accepts on a signaling topic. SDP offers from
/// browsers are 3–8 KiB; 64 KiB leaves room for many codecs while bounding what a hostile
/// publisher can make a device parse.
pub const MAX_SIGNAL_PAYLOAD: usize = 64 * 1024;

/// Largest WebSocket text message the gateway accepts from a browser.
pub const MAX_VIEWER_MESSAGE: usize = 64 * 1024;
