//! The control protocol: JSON requests and responses on the `control` data channel (and, for
//! scripts, relayed by the gateway's REST API). Versioned, with request ids and typed errors.
//!
//! ```text
//! → {"v":1,"id":7,"cmd":"controls.set","control":9963776,"value":40}
//! ← {"v":1,"id":7,"ok":{}}
//! ← {"v":1,"id":8,"error":{"code":"forbidden","message":"view sessions cannot …"}}
//! ```

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
pub use crate::record::{MAX_RECORD_SECONDS, RecordingStatus};
pub use crate::status::{Rendition, SpeakerStatus, StatusReply, Talker, ViewerLink};

/// Largest control message either side sends or accepts.
pub const MAX_CONTROL_MESSAGE: usize = 16 * 1024;

/// Bytes of JPEG per snapshot chunk (before base64), under every browser's SCTP message limit.
pub const SNAPSHOT_CHUNK: usize = 12 * 1024;

/// What a session may do.
/// Ordered: `View < Control`, so the lesser of two roles is `min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watch and read state (`ping`, `status`, lists, `snapshot`).
    #[default]
    View,
    /// Also change things (controls, video settings, GPIO, PTZ).
    Control,
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u16,
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    #[serde(flatten)]
    pub command: Command,
}

/// The commands, tagged by `"cmd"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd")]
pub enum Command {
    /// Echo, for round-trip time.
    #[serde(rename = "ping")]
    Ping,
    /// Uptime, viewers, frame rate, bitrate, encoder, temperature.
    #[serde(rename = "status")]
    Status,
    /// The camera's controls with ranges and current values.
    #[serde(rename = "controls.list")]
    ControlsList,
    /// Sets one camera control by its V4L2 id.
    #[serde(rename = "controls.set")]
    ControlsSet { control: u32, value: i64 },
    /// Changes bitrate live; size or rate rebuild the pipeline (viewers stay connected).
    #[serde(rename = "video.set")]
    VideoSet {
        #[serde(default)]
        bitrate_kbps: Option<u32>,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        #[serde(default)]
        fps: Option<u32>,
    },
    /// A JPEG of the live picture, delivered as [`SnapshotChunk`] messages after the reply.
    /// Works whether or not anyone watches (an idle camera is woken for it).
    #[serde(rename = "snapshot")]
    Snapshot {
        /// A picture at most this old will do: the device answers with a recent one, if it has
        /// it, without waking the camera.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_age_ms: Option<u64>,
        /// Scale down to this width (16–3840; aspect ratio kept, never scaled up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
    },
    /// The GPIO lines this device exposes.
    #[serde(rename = "gpio.list")]
    GpioList,
    /// Reads one GPIO line.
    #[serde(rename = "gpio.get")]
    GpioGet { name: String },
    /// Drives one output line.
    #[serde(rename = "gpio.set")]
    GpioSet { name: String, value: bool },
    /// Pan, tilt or zoom one step.
    #[serde(rename = "ptz")]
    Ptz { action: PtzAction },
    /// The loudness of the device's speaker (what viewers say through it), in percent of the
    /// talkers' own level: 0–200.
    #[serde(rename = "audio.volume")]
    AudioVolume { percent: u32 },
    /// Silences the device's speaker (talkers stay connected) or lets it play again.
    #[serde(rename = "audio.mute")]
    AudioMute { muted: bool },
    /// Records until `record.stop`, or for `seconds` (at most [`MAX_RECORD_SECONDS`]). In
    /// continuous mode, resumes recording that `record.stop` paused.
    #[serde(rename = "record.start")]
    RecordStart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u32>,
    },
    /// Stops recording now: a `record.start`, a clip, and continuous recording until the next
    /// `record.start` (or the device's restart).
    #[serde(rename = "record.stop")]
    RecordStop,
    /// An event clip: the pre-roll the device holds (events mode), then `seconds` more (the
    /// device's `--record-clip-s` by default).
    #[serde(rename = "record.clip")]
    RecordClip {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u32>,
    },
}

/// The loudest [`Command::AudioVolume`] a device accepts, in percent.
pub const MAX_SPEAKER_VOLUME: u32 = 200;

/// One PTZ step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PtzAction {
    Left,
    Right,
    Up,
    Down,
    ZoomIn,
    ZoomOut,
}

impl Command {
    /// Whether the command changes the device (needs [`Role::Control`]).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Command::ControlsSet { .. }
                | Command::VideoSet { .. }
                | Command::GpioSet { .. }
                | Command::Ptz { .. }
                | Command::AudioVolume { .. }
                | Command::AudioMute { .. }
                | Command::RecordStart { .. }
                | Command::RecordStop
                | Command::RecordClip { .. }
        )
    }
}

/// A response: `ok` with a command-specific body, or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub v: u16,
    /// The request's id (0 when the request was too broken to have one).
    pub id: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(serde_json::Value),
    Error(ControlError),
}

/// A typed failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    pub code: ControlErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorCode {
    /// Not JSON, not a known command, or wrong argument types.
    BadRequest,
    /// Another protocol version.
    UnsupportedVersion,
    /// The message is over [`MAX_CONTROL_MESSAGE`].
    TooLarge,
    /// A view session asked for a control command.
    Forbidden,
    /// The named control or GPIO line does not exist (or is not in the allow-list).
    NotFound,
    /// A value outside the control's range.
    OutOfRange,
    /// The device cannot do it now (camera down, feature not configured).
    Unavailable,
    /// The device tried and failed.
    Failed,
    /// The device tried, but the hardware did not deliver in time (a camera that will not
    /// produce a frame).
    Timeout,
}

impl ControlError {
    pub fn new(code: ControlErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl ControlResponse {
    pub fn ok(id: u64, body: impl Serialize) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            outcome: Outcome::Ok(serde_json::to_value(body).expect("replies serialize")),
        }
    }

    pub fn error(id: u64, error: ControlError) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            outcome: Outcome::Error(error),
        }
    }
}

impl ControlRequest {
    /// Parses one message, enforcing size and version, and recovering the id for the error
    /// reply when the rest is broken.
    pub fn decode(text: &str) -> Result<Self, (u64, ControlError)> {
        decode_request(text)
    }
}

/// Parses one request of a JSON protocol on a data channel (`control`, `files`): at most
/// [`MAX_CONTROL_MESSAGE`] bytes, this protocol version, and on failure the id for the error
/// reply when the rest is broken.
pub fn decode_request<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (u64, ControlError)> {
    if text.len() > MAX_CONTROL_MESSAGE {
        return Err((
            0,
            ControlError::new(
                ControlErrorCode::TooLarge,
                format!("{} bytes; the limit is {MAX_CONTROL_MESSAGE}", text.len()),
            ),
        ));
    }
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        v: Option<u16>,
        #[serde(default)]
        id: Option<u64>,
    }
    let header: Header = serde_json::from_str(text).map_err(|e| {
        (
            0,
            ControlError::new(
                ControlErrorCode::BadRequest,
                format!("not a JSON object: {e}"),
            ),
        )
    })?;
    let id = header.id.unwrap_or(0);
    if header.v.is_some_and(|v| v != PROTOCOL_VERSION) {
        return Err((
            id,
            ControlError::new(
                ControlErrorCode::UnsupportedVersion,
                format!("this device speaks control protocol v{PROTOCOL_VERSION}"),
            ),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        (
            id,
            ControlError::new(ControlErrorCode::BadRequest, e.to_string()),
        )
    })
}

/// `controls.list` reply entry: the description plus the current value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    #[serde(flatten)]
    pub info: ControlInfo,
    pub value: i64,
}

/// One GPIO line as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpioLine {
    pub name: String,
    /// `input` or `output`.
    pub direction: String,
    pub value: bool,
}

/// Sent after a `snapshot` reply: one piece of the JPEG, base64-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub v: u16,
    /// The `snapshot` request's id.
    pub id: u64,
    /// 0-based chunk index.
    pub chunk: u32,
    /// Total number of chunks.
    pub chunks: u32,
    /// Base64 (standard alphabet, padded).
    pub data: String,
}

/// `snapshot` reply: what the chunks add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReply {
    pub mime: String,
    pub bytes: usize,
    pub chunks: u32,
    pub width: u32,
    pub height: u32,
    /// When the picture was taken, in milliseconds since the Unix epoch (0 from devices that
    /// predate it).
    #[serde(default)]
    pub taken_at_ms: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_dotted_command_names() {
        let req = ControlRequest {
            v: 1,
            id: 7,
            command: Command::ControlsSet {
                control: 9963776,
                value: 40,
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains(r#""cmd":"controls.set""#), "{text}");
        assert_eq!(ControlRequest::decode(&text).unwrap(), req);
        let video =
            ControlRequest::decode(r#"{"v":1,"id":2,"cmd":"video.set","bitrate_kbps":900}"#)
                .unwrap();
        assert_eq!(
            video.command,
            Command::VideoSet {
                bitrate_kbps: Some(900),
                width: None,
                height: None,
                fps: None
            }
        );
    }

    #[test]
    fn a_snapshot_may_name_an_age_and_a_width_or_neither() {
        let plain = ControlRequest::decode(r#"{"v":1,"id":1,"cmd":"snapshot"}"#).unwrap();
        assert_eq!(
            plain.command,
            Command::Snapshot {
                max_age_ms: None,
                width: None
            }
        );
        let thumb = ControlRequest::decode(
            r#"{"v":1,"id":1,"cmd":"snapshot","max_age_ms":5000,"width":320}"#,
        )
        .unwrap();
        assert_eq!(
            thumb.command,
            Command::Snapshot {
                max_age_ms: Some(5000),
                width: Some(320)
            }
        );
        // A reply from a device that predates `taken_at_ms` still reads.
        let old: SnapshotReply = serde_json::from_str(
            r#"{"mime":"image/jpeg","bytes":3,"chunks":1,"width":2,"height":2}"#,
        )
        .unwrap();
        assert_eq!(old.taken_at_ms, 0);
    }

    #[test]
    fn responses_are_ok_or_error() {
        let ok = serde_json::to_string(&ControlResponse::ok(3, serde_json::json!({}))).unwrap();
        assert_eq!(ok, r#"{"v":1,"id":3,"ok":{}}"#);
        let err = ControlResponse::error(4, ControlError::new(ControlErrorCode::Forbidden, "no"));
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"id":4,"error":{"code":"forbidden","message":"no"}}"#
        );
        assert_eq!(serde_json::from_str::<ControlResponse>(&text).unwrap(), err);
    }

    #[test]
    fn bad_requests_get_typed_errors_with_their_id_when_it_parses() {
        let code = |text: &str| ControlRequest::decode(text).unwrap_err();
        assert_eq!(code("nonsense").1.code, ControlErrorCode::BadRequest);
        let (id, e) = code(r#"{"v":1,"id":9,"cmd":"self_destruct"}"#);
        assert_eq!((id, e.code), (9, ControlErrorCode::BadRequest));
        let (id, e) = code(r#"{"v":1,"id":10,"cmd":"controls.set","control":"x","value":1}"#);
        assert_eq!((id, e.code), (10, ControlErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"v":3,"id":1,"cmd":"ping"}"#).1.code,
            ControlErrorCode::UnsupportedVersion
        );
        let huge = format!(
            r#"{{"v":1,"id":1,"cmd":"gpio.get","name":"{}"}}"#,
            "x".repeat(MAX_CONTROL_MESSAGE)
        );
        assert_eq!(code(&huge).1.code, ControlErrorCode::TooLarge);
    }

    #[test]
    fn only_changes_need_the_control_role() {
        assert!(!Command::Status.mutates());
        assert!(
            !Command::Snapshot {
                max_age_ms: None,
                width: None
            }
            .mutates()
        );
        assert!(
            Command::GpioSet {
                name: "lamp".into(),
                value: true
            }
            .mutates()
        );
        assert!(
            Command::Ptz {
                action: PtzAction::Left
            }
            .mutates()
        );
        assert!(Command::AudioVolume { percent: 50 }.mutates());
        assert!(Command::AudioMute { muted: true }.mutates());
    }

    #[test]
    fn speaker_commands_read_as_documented() {
        let volume = ControlRequest::decode(r#"{"v":1,"id":3,"cmd":"audio.volume","percent":80}"#);
        assert_eq!(
            volume.unwrap().command,
            Command::AudioVolume { percent: 80 }
        );
        let mute = ControlRequest::decode(r#"{"v":1,"id":4,"cmd":"audio.mute","muted":true}"#);
        assert_eq!(mute.unwrap().command, Command::AudioMute { muted: true });
        let (id, error) =
            ControlRequest::decode(r#"{"v":1,"id":5,"cmd":"audio.volume","percent":-1}"#)
                .unwrap_err();
        assert_eq!((id, error.code), (5, ControlErrorCode::BadRequest));
    }
}
