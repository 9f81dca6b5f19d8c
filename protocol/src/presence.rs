//! Device presence: the retained status message on `ferrocam/v1/devices/<id>/status`.
//!
//! A device publishes `online: true` (retained) after it connects and registers a last will with
//! `online: false` naming the same connection. Two counters order these messages:
//! - `epoch` grows with every start of the device process;
//! - `seq` grows with every broker connection within one run (a Wi-Fi blip, a broker restart).
//!
//! The broker may hand out a connection's will late: after the device has already reconnected
//! (a broker only notices a dead TCP connection at its keep-alive timeout), or on its own restart
//! (Mosquitto publishes persisted wills then). Ordering by connection makes that late will lose
//! to the newer connection's "online", while within one connection the will still wins over the
//! "online" it follows. See [`DeviceStatus::supersedes`].

use serde::{Deserialize, Serialize};

use crate::control::ControlInfo;
use crate::ids::DeviceId;

/// What a device says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Protocol version the device speaks.
    pub v: u16,
    /// The device's id (same as in the topic).
    pub device: DeviceId,
    /// Whether the device is connected to the broker.
    pub online: bool,
    /// Grows with every start of the device; newer epochs win.
    pub epoch: u64,
    /// Grows with every broker connection within one epoch; absent (0) from devices that
    /// predate it, which then order by epoch alone.
    #[serde(default)]
    pub seq: u64,
    /// The agent's version string.
    #[serde(default)]
    pub version: String,
    /// What the device can stream (absent in a last will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// Media the device offers. Every field defaults, so older and newer devices interoperate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// The video stream as sent.
    #[serde(default)]
    pub video: Option<VideoCapability>,
    /// The audio stream, when the device has one.
    #[serde(default)]
    pub audio: Option<AudioCapability>,
    /// Every V4L2 capture device found on the board.
    #[serde(default)]
    pub sources: Vec<VideoSource>,
    /// Controls of the camera in use (brightness, exposure…); empty for the test pattern.
    #[serde(default)]
    pub controls: Vec<ControlInfo>,
    /// Names of the GPIO lines the control protocol may use.
    #[serde(default)]
    pub gpio: Vec<String>,
    /// Whether pan/tilt/zoom is configured.
    #[serde(default)]
    pub ptz: bool,
    /// The PTZ actions something is mapped to; older devices leave it out (a page then shows
    /// all six).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ptz_actions: Vec<crate::control::PtzAction>,
    /// Whether the camera is delivering frames right now.
    #[serde(default)]
    pub camera: CameraState,
}

/// The camera's health, as the device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    /// Frames are flowing (or the pipeline is idle and was fine when last used).
    #[default]
    Ok,
    /// The pipeline failed (unplugged camera, driver error, stall); the device is rebuilding it.
    Unavailable { reason: String },
}

/// The video stream a device sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoCapability {
    /// Source description (`/dev/video0`, `test pattern`, `libcamera`).
    pub source: String,
    /// What the source delivers: `raw`, `mjpeg` or `h264`.
    #[serde(default)]
    pub capture_format: String,
    /// Encoder element in use (`v4l2h264enc`, `x264enc`…), or `passthrough` for a camera's own
    /// H.264.
    pub encoder: String,
    /// Why this encoder was chosen.
    #[serde(default)]
    pub encoder_reason: String,
    /// Codec sent to viewers.
    pub codec: String,
    /// Every codec the device can send, preferred first (`["h264", "vp8"]`). Older devices
    /// leave it out: they send H.264 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<crate::VideoCodec>,
    /// The second stream for viewers that cannot decode the first, if the device has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackVideo>,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    #[serde(default)]
    pub bitrate_kbps: u32,
}

/// A second video stream in another codec, encoded only while a viewer needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackVideo {
    pub codec: crate::VideoCodec,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
}

/// The audio stream a device sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioCapability {
    /// `test tone` or the ALSA device name.
    pub source: String,
    /// Codec sent to viewers (`opus`).
    pub codec: String,
}

/// One V4L2 capture device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoSource {
    /// Device node, e.g. `/dev/video0`.
    pub path: String,
    /// The card name the driver reports.
    pub name: String,
    /// The kernel driver (`uvcvideo`, `bcm2835-v4l2`…).
    pub driver: String,
    /// Pixel formats with their sizes and rates.
    pub formats: Vec<SourceFormat>,
}

/// One pixel format of a capture device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFormat {
    /// FourCC, e.g. `YUYV`, `MJPG`, `H264`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// Frame sizes; for stepwise ranges, the largest.
    pub sizes: Vec<FrameSize>,
}

/// A frame size and the rates it supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
    /// Frames per second at this size (discrete intervals; for ranges, the fastest).
    pub fps: Vec<f64>,
}

impl DeviceStatus {
    /// The connection this message speaks for: newer connections sort higher.
    pub fn connection(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    /// Whether `self` should replace `current`. A newer connection (run, then reconnect within
    /// the run) always does, and an older one never does. Within one connection any update
    /// does (camera state changes) except an "online" arriving after that connection's
    /// "offline": a stale message must not revive a connection that has ended.
    pub fn supersedes(&self, current: &DeviceStatus) -> bool {
        match self.connection().cmp(&current.connection()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => current.online || !self.online,
        }
    }
}

#[cfg(test)]
#[path = "presence_tests.rs"]
mod tests;
