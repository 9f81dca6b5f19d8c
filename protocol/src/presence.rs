//! Device presence: the retained status message on `ferrocam/v1/devices/<id>/status`.
//!
//! A device publishes `online: true` (retained) after it connects and registers a last will with
//! `online: false` and the same epoch. The epoch grows with every start of the device process, so
//! a receiver can drop a stale "offline" will that arrives after a newer "online".

use serde::{Deserialize, Serialize};

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

/// A camera control as V4L2 describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlInfo {
    /// V4L2 control id.
    pub id: u32,
    /// Name for people (`Brightness`).
    pub name: String,
    /// `integer`, `boolean`, `menu`, `button`…
    pub kind: String,
    pub minimum: i64,
    pub maximum: i64,
    pub step: u64,
    pub default: i64,
    /// For `menu` and `integermenu` controls: the choices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub menu: Vec<MenuEntry>,
}

/// One choice of a menu control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuEntry {
    /// The value to set.
    pub value: i64,
    /// What it means (`Aperture Priority Mode`, `50 Hz`).
    pub name: String,
}

impl DeviceStatus {
    /// Whether `self` should replace `current`: a newer run (epoch) always does; within one run
    /// any update does except an "online" arriving after that run's "offline" (a stale message
    /// must not revive a device that has gone).
    pub fn supersedes(&self, current: &DeviceStatus) -> bool {
        self.epoch > current.epoch
            || (self.epoch == current.epoch && (current.online || !self.online))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(online: bool, epoch: u64) -> DeviceStatus {
        DeviceStatus {
            v: 1,
            device: DeviceId::parse("cam").unwrap(),
            online,
            epoch,
            version: String::new(),
            capabilities: None,
        }
    }

    #[test]
    fn a_late_will_from_an_old_epoch_does_not_mark_a_new_session_offline() {
        assert!(!status(false, 1).supersedes(&status(true, 2)));
        assert!(status(false, 2).supersedes(&status(true, 2)));
        assert!(status(true, 3).supersedes(&status(false, 2)));
        // Within a run: updates (camera state changes) apply; nothing revives an ended run.
        assert!(status(true, 2).supersedes(&status(true, 2)));
        assert!(!status(true, 2).supersedes(&status(false, 2)));
    }
}
