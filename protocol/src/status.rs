//! The `status` reply of the control protocol: what a device reports about its stream, its
//! viewers' paths and its speaker.

use serde::{Deserialize, Serialize};

/// `status` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub uptime_secs: u64,
    pub viewers: usize,
    /// Measured over the last second.
    pub fps: f64,
    /// Measured over the last second, in kbit/s.
    pub bitrate_kbps: f64,
    /// Configured target bitrate: the ceiling link adaptation works under (`video.set`).
    pub target_bitrate_kbps: u32,
    /// What the H.264 encoder is set to now: the target, or less when a viewer's path carries
    /// less (0 while the camera is not running).
    #[serde(default)]
    pub encoder_bitrate_kbps: u32,
    /// Every connected viewer's path, narrowest first (no session ids: one viewer's status
    /// does not identify the others).
    #[serde(default)]
    pub links: Vec<ViewerLink>,
    pub width: u32,
    pub height: u32,
    pub encoder: String,
    /// SoC temperature in °C, when the board exposes one.
    pub temperature_c: Option<f64>,
    /// The speaker viewers talk through (`None`: this device has none, so nobody can talk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<SpeakerStatus>,
    /// Recording on the device (`None`: this device keeps no recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::record::RecordingStatus>,
}

/// The device's speaker and who is talking through it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerStatus {
    /// What kind of sink plays the sound: `alsa`, `file` or `pipeline` (no device names or
    /// paths: every viewer may read this).
    pub sink: String,
    /// Percent of the talkers' own level ([`crate::control::Command::AudioVolume`]).
    pub volume_percent: u32,
    pub muted: bool,
    /// The device's microphone is turned down while the speaker plays.
    pub half_duplex: bool,
    /// Every session that may talk and has sent sound since it began.
    pub talkers: Vec<Talker>,
}

/// One viewer who may talk, as the others see it (no session ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Talker {
    /// The user or token the gateway authenticated.
    pub user: String,
    /// This viewer's sound, louder than a whisper (−50 dBFS), reached the speaker in the last
    /// half second.
    pub talking: bool,
    /// This is the session that asked for the status.
    #[serde(default, skip_serializing_if = "is_false")]
    pub you: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// One viewer's path, as the device estimates it from the viewer's congestion feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerLink {
    /// The codec the viewer receives (its encoder follows the narrowest of its viewers).
    pub codec: crate::VideoCodec,
    /// What the path carries in kbit/s; `None` before the viewer's first feedback, or for a
    /// browser that sends none.
    pub estimate_kbps: Option<u32>,
    /// Which of the codec's streams the viewer receives.
    #[serde(default)]
    pub rendition: Rendition,
    /// The frame size and rate that stream is sent at now: the camera's own, or smaller where
    /// link adaptation stepped it down a rung (0 from a device that does not say).
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub fps: u32,
    /// This is the session that asked for the status.
    #[serde(default, skip_serializing_if = "is_false")]
    pub you: bool,
}

/// The stream a viewer receives: the full one, or the smaller one kept for viewers whose path
/// is far narrower than the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rendition {
    #[default]
    Full,
    Low,
}
