//! Pan/tilt/zoom steps, mapped in config to the camera's own V4L2 PTZ controls, to GPIO pulses
//! (a motor driver pin per direction), or to hobby servos on PWM outputs (a pan/tilt head).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocam_protocol::control::{ControlError, ControlErrorCode, PtzAction};

use super::camera::CameraControls;
use super::gpio::Gpio;
use super::servo::{Servo, SysfsServo};

// V4L2 relative PTZ control ids (linux/v4l2-controls.h, camera class).
const PAN_RELATIVE: u32 = 0x009a_0904;
const TILT_RELATIVE: u32 = 0x009a_0905;
const ZOOM_RELATIVE: u32 = 0x009a_090f;

/// A pan/tilt head of two servos and where they point.
pub struct ServoHead {
    pub pan: Option<Arc<dyn Servo>>,
    pub tilt: Option<Arc<dyn Servo>>,
    /// Degrees per step.
    pub step: u32,
    /// Current (pan, tilt), starting centred.
    pub angles: Mutex<(u32, u32)>,
}

/// How PTZ is done on this device.
#[derive(Default)]
pub enum Ptz {
    /// No PTZ: every step is `unavailable`.
    #[default]
    Off,
    /// The camera's relative pan/tilt/zoom controls, `step` units per action.
    V4l2 { step: i64 },
    /// A GPIO output per action, pulsed high for `pulse`.
    Gpio {
        lines: BTreeMap<String, String>,
        pulse: Duration,
    },
    /// Servos on PWM outputs.
    Servo(ServoHead),
}

impl Ptz {
    /// Parses `--ptz`: `off`, `v4l2`, `gpio:left=pan_l,right=pan_r,up=…,down=…,pulse_ms=200`, or
    /// `servo:pan=pwmchip0/0,tilt=pwmchip0/1,step=10`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "v4l2" => Ok(Self::V4l2 { step: 1 }),
            other if other.starts_with("servo:") => {
                let mut head = ServoHead {
                    pan: None,
                    tilt: None,
                    step: 10,
                    angles: Mutex::new((90, 90)),
                };
                for part in other["servo:".len()..].split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--ptz: {part:?} is not key=value"))?;
                    match k {
                        "pan" => head.pan = Some(Arc::new(SysfsServo::open(v)?)),
                        "tilt" => head.tilt = Some(Arc::new(SysfsServo::open(v)?)),
                        "step" => head.step = v.parse()?,
                        _ => anyhow::bail!("--ptz servo: unknown key {k:?}"),
                    }
                }
                Ok(Self::Servo(head))
            }
            other => {
                let Some(spec) = other.strip_prefix("gpio:") else {
                    anyhow::bail!(
                        "--ptz {other:?}: use off, v4l2 or gpio:left=<line>,right=…,pulse_ms=200"
                    );
                };
                let mut lines = BTreeMap::new();
                let mut pulse = Duration::from_millis(200);
                for part in spec.split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--ptz: {part:?} is not key=value"))?;
                    match k {
                        "pulse_ms" => pulse = Duration::from_millis(v.parse()?),
                        "left" | "right" | "up" | "down" | "zoom_in" | "zoom_out" => {
                            lines.insert(k.to_owned(), v.to_owned());
                        }
                        _ => anyhow::bail!("--ptz: unknown action {k:?}"),
                    }
                }
                Ok(Self::Gpio { lines, pulse })
            }
        }
    }

    /// Whether PTZ is configured (for capabilities and the page's PTZ pad).
    pub fn available(&self) -> bool {
        !matches!(self, Self::Off)
    }

    pub async fn step(
        &self,
        action: PtzAction,
        camera: &dyn CameraControls,
        gpio: &dyn Gpio,
    ) -> Result<(), ControlError> {
        match self {
            Self::Off => Err(ControlError::new(
                ControlErrorCode::Unavailable,
                "PTZ is not configured on this device",
            )),
            Self::V4l2 { step } => {
                let (control, value) = match action {
                    PtzAction::Left => (PAN_RELATIVE, -step),
                    PtzAction::Right => (PAN_RELATIVE, *step),
                    PtzAction::Up => (TILT_RELATIVE, *step),
                    PtzAction::Down => (TILT_RELATIVE, -step),
                    PtzAction::ZoomIn => (ZOOM_RELATIVE, *step),
                    PtzAction::ZoomOut => (ZOOM_RELATIVE, -step),
                };
                camera.set(control, value)
            }
            Self::Servo(head) => head.step(action),
            Self::Gpio { lines, pulse } => {
                let key = serde_json::to_value(action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let Some(line) = lines.get(&key) else {
                    return Err(ControlError::new(
                        ControlErrorCode::Unavailable,
                        format!("no GPIO line is mapped to PTZ {key}"),
                    ));
                };
                gpio.set(line, true)?;
                tokio::time::sleep(*pulse).await;
                gpio.set(line, false)
            }
        }
    }
}

impl ServoHead {
    fn step(&self, action: PtzAction) -> Result<(), ControlError> {
        let unavailable = |what: &str| {
            ControlError::new(
                ControlErrorCode::Unavailable,
                format!("no {what} servo is configured"),
            )
        };
        let mut angles = self.angles.lock().expect("servo lock");
        let (servo, angle, delta) = match action {
            PtzAction::Left => (&self.pan, &mut angles.0, -(self.step as i64)),
            PtzAction::Right => (&self.pan, &mut angles.0, self.step as i64),
            PtzAction::Up => (&self.tilt, &mut angles.1, self.step as i64),
            PtzAction::Down => (&self.tilt, &mut angles.1, -(self.step as i64)),
            PtzAction::ZoomIn | PtzAction::ZoomOut => return Err(unavailable("zoom")),
        };
        let servo = servo.as_ref().ok_or_else(|| unavailable("pan or tilt"))?;
        let target = (i64::from(*angle) + delta).clamp(0, 180) as u32;
        servo.set_angle(target)?;
        *angle = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::camera::FakeControls;
    use crate::control::gpio::FakeGpio;

    #[tokio::test]
    async fn gpio_ptz_pulses_the_mapped_line() {
        let gpio = FakeGpio::new(
            &["name=pan_l,chip=gpiochip0,line=5,direction=output"
                .parse()
                .unwrap()],
            None,
        );
        let ptz = Ptz::parse("gpio:left=pan_l,pulse_ms=1").unwrap();
        let cam = FakeControls::new(vec![]);
        ptz.step(PtzAction::Left, &cam, &gpio).await.unwrap();
        assert!(!gpio.get("pan_l").unwrap(), "the pulse ends low");
        let err = ptz.step(PtzAction::Up, &cam, &gpio).await.unwrap_err();
        assert_eq!(err.code, ControlErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn a_servo_head_steps_within_its_range() {
        use crate::control::servo::FakeServo;
        let pan = Arc::new(FakeServo::default());
        let head = Ptz::Servo(ServoHead {
            pan: Some(pan.clone()),
            tilt: None,
            step: 60,
            angles: Mutex::new((90, 90)),
        });
        let cam = FakeControls::new(vec![]);
        let gpio = FakeGpio::new(&[], None);
        head.step(PtzAction::Right, &cam, &gpio).await.unwrap();
        assert_eq!(*pan.angle.lock().unwrap(), Some(150));
        head.step(PtzAction::Right, &cam, &gpio).await.unwrap();
        assert_eq!(
            *pan.angle.lock().unwrap(),
            Some(180),
            "clamped at the end stop"
        );
        let err = head.step(PtzAction::Up, &cam, &gpio).await.unwrap_err();
        assert_eq!(err.code, ControlErrorCode::Unavailable, "no tilt servo");
        assert!(
            Ptz::parse("servo:pan=pwmchip99/0").is_err(),
            "no such PWM chip here"
        );
    }

    #[tokio::test]
    async fn off_refuses_and_parsing_checks_actions() {
        let cam = FakeControls::new(vec![]);
        let gpio = FakeGpio::new(&[], None);
        let err = Ptz::Off
            .step(PtzAction::ZoomIn, &cam, &gpio)
            .await
            .unwrap_err();
        assert_eq!(err.code, ControlErrorCode::Unavailable);
        assert!(Ptz::parse("gpio:spin=x").is_err());
        assert!(Ptz::parse("servo").is_err());
    }
}
