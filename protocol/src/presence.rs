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

/// Media the device offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// The video stream as encoded.
    pub video: Option<VideoCapability>,
}

/// The video stream a device sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoCapability {
    /// Source description (`/dev/video0`, `test pattern`).
    pub source: String,
    /// Encoder element in use (`x264enc`, `v4l2h264enc`…).
    pub encoder: String,
    /// Codec sent to viewers.
    pub codec: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl DeviceStatus {
    /// Whether `self` should replace `current` (newer epoch, or same epoch going offline).
    pub fn supersedes(&self, current: &DeviceStatus) -> bool {
        self.epoch > current.epoch || (self.epoch == current.epoch && !self.online)
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
    }
}
