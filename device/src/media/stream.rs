//! The encoded streams a camera makes. Each has an encoder, a fan-out and a keyframe gate of its
//! own, so one stream's viewers never force keyframes or bitrate changes on another's.

use ferrocam_protocol::VideoCodec;

/// One of the encoded streams viewers are fed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// H.264 at the plan's size: what every H.264 viewer gets, unless its path is far narrower
    /// than the others'.
    H264,
    /// H.264 scaled down (to fit 640×360 by default) for viewers whose path is far narrower
    /// than the others', so they do not drag everyone down. Its encoder runs only while such a
    /// viewer watches.
    H264Low,
    /// The VP8 fallback, for browsers without H.264; its encoder runs only while one watches.
    Vp8,
}

impl Stream {
    /// The stream a viewer of `codec` starts on.
    pub fn main(codec: VideoCodec) -> Self {
        match codec {
            VideoCodec::H264 => Self::H264,
            VideoCodec::Vp8 => Self::Vp8,
        }
    }

    /// The codec this stream is encoded with (a viewer can only move between streams of its
    /// negotiated codec).
    pub fn codec(self) -> VideoCodec {
        match self {
            Self::H264 | Self::H264Low => VideoCodec::H264,
            Self::Vp8 => VideoCodec::Vp8,
        }
    }

    /// Whether this stream's encoder runs only while someone watches it (a branch behind a
    /// valve), rather than whenever the camera runs.
    pub fn gated(self) -> bool {
        self != Self::H264
    }

    /// A short name for logs, status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H264Low => "h264-low",
            Self::Vp8 => "vp8",
        }
    }
}
