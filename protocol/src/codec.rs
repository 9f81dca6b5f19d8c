//! The video codecs a device can send. H.264 is the camera's own stream, shared by every viewer
//! that can decode it; VP8 is the fallback for viewers that cannot (Firefox builds without the
//! OpenH264 plugin, VP8-only players), encoded only while such a viewer watches.

use serde::{Deserialize, Serialize};

/// A video codec, in the order a device prefers them.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    #[default]
    H264,
    Vp8,
}

impl VideoCodec {
    /// The name in SDP `a=rtpmap` lines (compared without case).
    pub fn rtpmap_name(self) -> &'static str {
        match self {
            Self::H264 => "H264",
            Self::Vp8 => "VP8",
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H264 => "H.264",
            Self::Vp8 => "VP8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_is_preferred_and_names_are_lowercase_on_the_wire() {
        assert!(VideoCodec::H264 < VideoCodec::Vp8);
        assert_eq!(serde_json::to_string(&VideoCodec::Vp8).unwrap(), "\"vp8\"");
        assert_eq!(
            serde_json::from_str::<VideoCodec>("\"h264\"").unwrap(),
            VideoCodec::H264
        );
    }
}
