//! The media engine: capture, encode and fan out. It knows nothing about MQTT, HTTP or WebRTC;
//! viewers take a lease, read access units from a feed and ask for keyframes, and that is the
//! whole interface.

mod audio;
mod discovery;
mod encoder;
mod engine;
mod keyframes;
mod pipeline;
mod rung;
mod snapshot;
mod source;
mod stream;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_blocking;
#[cfg(test)]
mod tests_ladder;
#[cfg(test)]
mod tests_long_gop;
#[cfg(test)]
mod tests_low;
#[cfg(test)]
mod tests_vp8;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

pub use audio::{AudioSource, AudioUnit, has_alsa_pcm};
pub use discovery::{capture_devices, controls};
pub use encoder::{Encoder, GstProbe, vp8_encoder_installed};
pub use engine::{
    EngineSettings, MediaEngine, SnapshotError, SnapshotRequest, VideoFeed, ViewerLease,
};
pub use ferrocam_protocol::VideoCodec;
pub use keyframes::KeyframeReason;
pub use pipeline::{VideoPlan, Vp8Size};
pub use rung::{Frame, Rung};
pub use snapshot::{Jpeg, WIDTHS as SNAPSHOT_WIDTHS, keyframe_jpeg, keyframe_size};
pub use source::{CaptureFormat, Source};
pub use stream::Stream;

/// One encoded frame: an H.264 access unit in Annex-B byte-stream form, with SPS/PPS in front
/// of every keyframe, or a VP8 frame from the fallback encoder.
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
    /// When the frame was captured, on the wall clock (RTP's abs-capture-time extension).
    pub captured_at: SystemTime,
}
