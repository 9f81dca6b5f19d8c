//! Picking an H.264 encoder: hardware first, then software.
//!
//! A Pi 3/4/Zero 2 has the `v4l2h264enc` hardware encoder; a Pi 5 has none, and x86 test boxes
//! have none either, so the software encoders are a normal path, not an error path.

use anyhow::bail;

/// An H.264 encoder element that exists on this system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// The Raspberry Pi's hardware encoder (V4L2 M2M).
    V4l2H264,
    /// libx264, tuned for latency.
    X264,
    /// Cisco's OpenH264.
    OpenH264,
}

/// Preference order when probing.
const PREFERENCE: [Encoder; 3] = [Encoder::V4l2H264, Encoder::X264, Encoder::OpenH264];

impl Encoder {
    /// GStreamer element name.
    pub fn element(self) -> &'static str {
        match self {
            Encoder::V4l2H264 => "v4l2h264enc",
            Encoder::X264 => "x264enc",
            Encoder::OpenH264 => "openh264enc",
        }
    }

    /// The first available encoder, or the forced one if it exists.
    pub fn select(forced: Option<&str>) -> anyhow::Result<(Encoder, &'static str)> {
        if let Some(name) = forced {
            let Some(enc) = PREFERENCE.into_iter().find(|e| e.element() == name) else {
                bail!("unknown encoder {name:?}; known: v4l2h264enc, x264enc, openh264enc");
            };
            if !enc.available() {
                bail!("encoder {name} was requested but its GStreamer plugin is not installed");
            }
            return Ok((enc, "forced by configuration"));
        }
        match PREFERENCE.into_iter().find(|e| e.available()) {
            Some(Encoder::V4l2H264) => Ok((Encoder::V4l2H264, "hardware encoder present")),
            Some(enc) => Ok((enc, "no hardware encoder; software fallback")),
            None => bail!(
                "no H.264 encoder found: install gstreamer1.0-plugins-ugly (x264enc) \
                 or gstreamer1.0-plugins-bad (openh264enc)"
            ),
        }
    }

    fn available(self) -> bool {
        gstreamer::ElementFactory::find(self.element()).is_some()
    }

    /// The encoder's launch fragment, from raw I420/NV12 to H.264 constrained baseline.
    pub(super) fn launch_fragment(self, bitrate_kbps: u32, keyframe_interval: u32) -> String {
        match self {
            // level 4 covers 1080p30; repeat_sequence_header puts SPS/PPS before every IDR.
            Encoder::V4l2H264 => format!(
                "v4l2h264enc extra-controls=\"controls,video_bitrate={bps},h264_i_frame_period={keyframe_interval},repeat_sequence_header=1\" \
                 ! video/x-h264,level=(string)4,profile=(string)constrained-baseline",
                bps = bitrate_kbps * 1000
            ),
            // zerolatency: no lookahead, no B-frames, sliced threads: a frame leaves as soon as
            // it is encoded.
            Encoder::X264 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={keyframe_interval} \
                 bitrate={bitrate_kbps} ! video/x-h264,profile=constrained-baseline"
            ),
            Encoder::OpenH264 => format!(
                "openh264enc usage-type=camera complexity=low rate-control=bitrate \
                 bitrate={bps} gop-size={keyframe_interval} ! video/x-h264,profile=constrained-baseline",
                bps = bitrate_kbps * 1000
            ),
        }
    }
}
