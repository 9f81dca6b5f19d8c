//! The media engine: one capture + encode pipeline whose H.264 access units fan out to every
//! viewer. It knows nothing about MQTT, HTTP or WebRTC; viewers subscribe to [`AccessUnit`]s and
//! ask for keyframes, and that is the whole interface.

mod encoder;
mod pipeline;
mod source;

use std::time::{Duration, Instant};

use bytes::Bytes;

pub use encoder::Encoder;
pub use pipeline::{MediaEngine, VideoSettings};
pub use source::Source;

/// One encoded H.264 access unit (a whole frame) in Annex-B byte-stream form, with SPS/PPS in
/// front of every keyframe.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// The Annex-B bytes.
    pub data: Bytes,
    /// How long the frame lasts; RTP timestamps advance by this.
    pub duration: Duration,
    /// An IDR frame a decoder can start from.
    pub keyframe: bool,
    /// When the frame left the encoder.
    pub encoded_at: Instant,
}
