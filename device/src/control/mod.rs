//! Remote control: the commands of `protocol::control`, executed against the camera, the media
//! engine and GPIO. Transport-agnostic: the data channel and the gateway's REST relay both hand
//! a request's text to [`ControlHandler::handle`] and send back whatever messages it returns.

pub mod camera;
pub mod gpio;
mod ptz;
pub mod servo;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrocam_protocol::PROTOCOL_VERSION;
use ferrocam_protocol::control::{
    Command, ControlError, ControlErrorCode, ControlRequest, ControlResponse, Role, SNAPSHOT_CHUNK,
    SnapshotChunk, SnapshotReply, StatusReply,
};

use crate::media::{MediaEngine, SnapshotError, SnapshotRequest, Stream};
use crate::speaker::Speaker;
pub use camera::CameraControls;
use ferrocam_protocol::SessionId;
use ferrocam_protocol::control::MAX_SPEAKER_VOLUME;
pub use gpio::Gpio;
pub use ptz::{Ptz, PtzSpec};

/// Executes control commands for every session of this device.
pub struct ControlHandler {
    pub media: Arc<MediaEngine>,
    /// The viewers' paths, for status (`None` with `--adaptive off`).
    pub adaptation: Option<Arc<crate::adapt::LinkAdaptation>>,
    pub camera: Arc<dyn CameraControls>,
    pub gpio: Arc<dyn Gpio>,
    pub ptz: Ptz,
    pub encoder: String,
    pub started: Instant,
    /// Where viewers' voices play (`None`: this device has no speaker).
    pub speaker: Option<Arc<Speaker>>,
    /// Recording on the device (`None`: `--record-dir none`, or its directory failed).
    pub recorder: Option<Arc<crate::record::Recorder>>,
}

/// Who sent a request: what it may do, and which session it came on (none when relayed by
/// the gateway's REST API).
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub session: Option<SessionId>,
}

impl Caller {
    /// A request relayed by a gateway, outside any session.
    pub fn relayed(role: Role) -> Self {
        Self {
            role,
            session: None,
        }
    }
}

impl ControlHandler {
    /// Handles one request and returns the messages to send back, in order: the response, then
    /// (for `snapshot`) the chunks. Never fails: every problem is a typed error response.
    pub async fn handle(&self, caller: &Caller, text: &str) -> Vec<String> {
        let request = match ControlRequest::decode(text) {
            Ok(request) => request,
            Err((id, error)) => return vec![encode(&ControlResponse::error(id, error))],
        };
        let id = request.id;
        if request.command.mutates() && caller.role != Role::Control {
            let error = ControlError::new(
                ControlErrorCode::Forbidden,
                "this session may watch but not control; ask for a control session",
            );
            return vec![encode(&ControlResponse::error(id, error))];
        }
        match self.execute(caller, request.command).await {
            Ok(Reply::Body(body)) => vec![encode(&ControlResponse::ok(id, body))],
            Ok(Reply::Snapshot(jpeg)) => snapshot_messages(id, jpeg),
            Err(error) => vec![encode(&ControlResponse::error(id, error))],
        }
    }

    /// The reply to a binary message: the protocol is JSON text only.
    pub fn binary_refusal(bytes: usize) -> String {
        let error = ControlError::new(
            ControlErrorCode::BadRequest,
            format!("a binary message of {bytes} bytes; the control protocol is JSON text"),
        );
        encode(&ControlResponse::error(0, error))
    }

    async fn execute(&self, caller: &Caller, command: Command) -> Result<Reply, ControlError> {
        let body = match command {
            Command::Ping => serde_json::json!({}),
            Command::Status => to_value(self.status(caller)),
            Command::ControlsList => to_value(self.camera.list()?),
            Command::ControlsSet { control, value } => {
                self.camera.set(control, value)?;
                serde_json::json!({})
            }
            Command::VideoSet {
                bitrate_kbps,
                width,
                height,
                fps,
            } => {
                self.video_set(bitrate_kbps, width, height, fps).await?;
                serde_json::json!({})
            }
            Command::Snapshot { max_age_ms, width } => {
                return Ok(Reply::Snapshot(self.snapshot(max_age_ms, width).await?));
            }
            Command::GpioList => to_value(self.gpio.lines()),
            Command::GpioGet { name } => {
                serde_json::json!({ "name": name, "value": self.gpio.get(&name)? })
            }
            Command::GpioSet { name, value } => {
                self.gpio.set(&name, value)?;
                serde_json::json!({})
            }
            Command::Ptz { action } => {
                self.ptz
                    .step(action, self.camera.as_ref(), self.gpio.as_ref())
                    .await?;
                serde_json::json!({})
            }
            Command::AudioVolume { percent } => {
                if percent > MAX_SPEAKER_VOLUME {
                    return Err(ControlError::new(
                        ControlErrorCode::OutOfRange,
                        format!("volume {percent}% is outside 0..={MAX_SPEAKER_VOLUME}"),
                    ));
                }
                self.speaker()?.set_volume(percent);
                serde_json::json!({})
            }
            Command::AudioMute { muted } => {
                self.speaker()?.set_muted(muted);
                serde_json::json!({})
            }
            Command::RecordStart { seconds } => {
                self.recorder()?.record(seconds).await?;
                to_value(self.recorder()?.status())
            }
            Command::RecordStop => {
                self.recorder()?.stop().await?;
                to_value(self.recorder()?.status())
            }
            Command::RecordClip { seconds } => {
                self.recorder()?.clip(seconds).await?;
                to_value(self.recorder()?.status())
            }
        };
        Ok(Reply::Body(body))
    }

    async fn snapshot(
        &self,
        max_age_ms: Option<u64>,
        width: Option<u32>,
    ) -> Result<crate::media::Jpeg, ControlError> {
        if let Some(w) = width.filter(|w| !crate::media::SNAPSHOT_WIDTHS.contains(w)) {
            return Err(ControlError::new(
                ControlErrorCode::OutOfRange,
                format!("a snapshot {w} pixels wide is outside 16..=3840"),
            ));
        }
        let request = SnapshotRequest {
            max_age: max_age_ms.map(Duration::from_millis),
            width,
        };
        self.media.snapshot(request).await.map_err(|e| match e {
            SnapshotError::Unavailable(why) => {
                ControlError::new(ControlErrorCode::Unavailable, why)
            }
            SnapshotError::Timeout(why) => ControlError::new(ControlErrorCode::Timeout, why),
        })
    }

    fn speaker(&self) -> Result<&Speaker, ControlError> {
        self.speaker.as_deref().ok_or_else(|| {
            ControlError::new(
                ControlErrorCode::Unavailable,
                "this device has no speaker (--speaker off)",
            )
        })
    }

    fn recorder(&self) -> Result<&crate::record::Recorder, ControlError> {
        self.recorder.as_deref().ok_or_else(|| {
            ControlError::new(
                ControlErrorCode::Unavailable,
                "this device keeps no recordings (--record-dir)",
            )
        })
    }

    fn status(&self, caller: &Caller) -> StatusReply {
        let plan = self.media.plan();
        let (fps, bitrate_kbps) = self.media.rates();
        StatusReply {
            uptime_secs: self.started.elapsed().as_secs(),
            viewers: self.media.viewers(),
            fps,
            bitrate_kbps,
            target_bitrate_kbps: plan.bitrate_kbps,
            encoder_bitrate_kbps: self.media.encoder_kbps(Stream::H264),
            links: self
                .adaptation
                .as_ref()
                .map(|adaptation| adaptation.links(caller.session.as_ref()))
                .unwrap_or_default(),
            width: plan.width,
            height: plan.height,
            encoder: self.encoder.clone(),
            temperature_c: temperature(),
            speaker: self
                .speaker
                .as_ref()
                .map(|speaker| speaker.status(caller.session.as_ref())),
            recording: self.recorder.as_ref().map(|recorder| recorder.status()),
        }
    }

    async fn video_set(
        &self,
        bitrate: Option<u32>,
        width: Option<u32>,
        height: Option<u32>,
        fps: Option<u32>,
    ) -> Result<(), ControlError> {
        if let Some(kbps) = bitrate {
            if !(100..=20_000).contains(&kbps) {
                return Err(ControlError::new(
                    ControlErrorCode::OutOfRange,
                    format!("bitrate {kbps} kbit/s is outside 100..=20000"),
                ));
            }
            self.media
                .set_bitrate(kbps)
                .await
                .map_err(|e| ControlError::new(ControlErrorCode::Unavailable, format!("{e:#}")))?;
        }
        if width.is_some() || height.is_some() || fps.is_some() {
            let plan = self.media.plan();
            let (w, h, f) = (
                width.unwrap_or(plan.width),
                height.unwrap_or(plan.height),
                fps.unwrap_or(plan.fps),
            );
            let sane =
                (160..=3840).contains(&w) && (120..=2160).contains(&h) && w % 2 == 0 && h % 2 == 0;
            if !sane || !(1..=60).contains(&f) {
                return Err(ControlError::new(
                    ControlErrorCode::OutOfRange,
                    format!("{w}x{h} at {f} fps is not a size and rate this device streams"),
                ));
            }
            self.media
                .reconfigure(w, h, f)
                .await
                .map_err(|e| failed(format!("{e:#}")))?;
        }
        Ok(())
    }
}

enum Reply {
    Body(serde_json::Value),
    Snapshot(crate::media::Jpeg),
}

fn failed(message: String) -> ControlError {
    ControlError::new(ControlErrorCode::Failed, message)
}

fn to_value(body: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(body).expect("replies serialize")
}

fn encode(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).expect("replies serialize")
}

/// The `snapshot` reply followed by the JPEG in base64 chunks.
fn snapshot_messages(id: u64, jpeg: crate::media::Jpeg) -> Vec<String> {
    let chunks: Vec<&[u8]> = jpeg.data.chunks(SNAPSHOT_CHUNK).collect();
    let total = chunks.len() as u32;
    let mut out = vec![encode(&ControlResponse::ok(
        id,
        SnapshotReply {
            mime: "image/jpeg".into(),
            bytes: jpeg.data.len(),
            chunks: total,
            width: jpeg.width,
            height: jpeg.height,
            taken_at_ms: jpeg
                .taken_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        },
    ))];
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.push(encode(&SnapshotChunk {
            v: PROTOCOL_VERSION,
            id,
            chunk: i as u32,
            chunks: total,
            data: base64::engine::general_purpose::STANDARD.encode(chunk),
        }));
    }
    out
}

/// The SoC temperature, from the first thermal zone (millidegrees in sysfs).
fn temperature() -> Option<f64> {
    let text = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    text.trim().parse::<f64>().ok().map(|m| m / 1000.0)
}
