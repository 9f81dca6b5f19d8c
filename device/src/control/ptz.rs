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

/// `--ptz` as written, checked but not opened: all `--check-config` can judge without the
/// hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtzSpec {
    Off,
    V4l2,
    /// GPIO line name per action (`left`, `zoom_in`…).
    Gpio {
        lines: BTreeMap<String, String>,
        pulse: Duration,
    },
    /// PWM channels (`pwmchip0/1`) of the pan and tilt servos.
    Servo {
        pan: Option<String>,
        tilt: Option<String>,
        step: u32,
    },
}

impl PtzSpec {
    /// Parses `--ptz`: `off`, `v4l2`, `gpio:left=pan_l,right=pan_r,up=…,down=…,pulse_ms=200`, or
    /// `servo:pan=pwmchip0/0,tilt=pwmchip0/1,step=10`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let pairs = |spec: &str| -> anyhow::Result<Vec<(String, String)>> {
            spec.split(',')
                .map(|part| {
                    part.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--ptz: {part:?} is not key=value"))
                })
                .collect()
        };
        let number = |k: &str, v: &str| -> anyhow::Result<u32> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("--ptz: {k}={v:?} is not a whole number"))
        };
        if let Some(spec) = s.strip_prefix("servo:") {
            let (mut pan, mut tilt, mut step) = (None, None, 10);
            for (k, v) in pairs(spec)? {
                match k.as_str() {
                    "pan" => {
                        super::servo::parse_channel(&v)?;
                        pan = Some(v);
                    }
                    "tilt" => {
                        super::servo::parse_channel(&v)?;
                        tilt = Some(v);
                    }
                    "step" => step = number(&k, &v)?,
                    _ => anyhow::bail!("--ptz servo: unknown key {k:?}"),
                }
            }
            anyhow::ensure!(
                pan.is_some() || tilt.is_some(),
                "--ptz servo: name a pan or a tilt PWM channel (pan=pwmchip0/0)"
            );
            return Ok(Self::Servo { pan, tilt, step });
        }
        if let Some(spec) = s.strip_prefix("gpio:") {
            let mut lines = BTreeMap::new();
            let mut pulse = Duration::from_millis(200);
            for (k, v) in pairs(spec)? {
                match k.as_str() {
                    "pulse_ms" => pulse = Duration::from_millis(number(&k, &v)?.into()),
                    "left" | "right" | "up" | "down" | "zoom_in" | "zoom_out" => {
                        lines.insert(k, v);
                    }
                    _ => anyhow::bail!("--ptz: unknown action {k:?}"),
                }
            }
            anyhow::ensure!(!lines.is_empty(), "--ptz gpio: map at least one action");
            return Ok(Self::Gpio { lines, pulse });
        }
        match s {
            "off" => Ok(Self::Off),
            "v4l2" => Ok(Self::V4l2),
            other => anyhow::bail!(
                "--ptz {other:?}: use off, v4l2, gpio:left=<line>,right=…,pulse_ms=200 or \
                 servo:pan=pwmchip0/0,tilt=pwmchip0/1"
            ),
        }
    }
}

impl Ptz {
    /// Parses `--ptz` (see [`PtzSpec::parse`]) and opens what it names.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match PtzSpec::parse(s)? {
            PtzSpec::Off => Self::Off,
            PtzSpec::V4l2 => Self::V4l2 { step: 1 },
            PtzSpec::Gpio { lines, pulse } => Self::Gpio { lines, pulse },
            PtzSpec::Servo { pan, tilt, step } => {
                let open = |channel: Option<String>| -> anyhow::Result<Option<Arc<dyn Servo>>> {
                    Ok(match channel {
                        Some(c) => Some(Arc::new(SysfsServo::open(&c)?)),
                        None => None,
                    })
                };
                Self::Servo(ServoHead {
                    pan: open(pan)?,
                    tilt: open(tilt)?,
                    step,
                    angles: Mutex::new((90, 90)),
                })
            }
        })
    }

    /// The actions this device has something mapped to: what the page's PTZ pad should show.
    pub fn actions(&self) -> Vec<PtzAction> {
        use PtzAction::*;
        match self {
            Self::Off => vec![],
            // The camera's relative controls; which ones a camera has shows on use.
            Self::V4l2 { .. } => vec![Left, Right, Up, Down, ZoomIn, ZoomOut],
            Self::Gpio { lines, .. } => [Left, Right, Up, Down, ZoomIn, ZoomOut]
                .into_iter()
                .filter(|action| lines.contains_key(action_name(*action)))
                .collect(),
            Self::Servo(head) => {
                let mut actions = Vec::new();
                if head.pan.is_some() {
                    actions.extend([Left, Right]);
                }
                if head.tilt.is_some() {
                    actions.extend([Up, Down]);
                }
                actions
            }
        }
    }

    /// Whether PTZ is configured (for capabilities and the page's PTZ pad).
    pub fn available(&self) -> bool {
        !self.actions().is_empty()
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
                let key = action_name(action);
                let Some(line) = lines.get(key) else {
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

/// An action as `--ptz gpio:` and the wire spell it (`zoom_in`).
fn action_name(action: PtzAction) -> &'static str {
    match action {
        PtzAction::Left => "left",
        PtzAction::Right => "right",
        PtzAction::Up => "up",
        PtzAction::Down => "down",
        PtzAction::ZoomIn => "zoom_in",
        PtzAction::ZoomOut => "zoom_out",
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

    #[test]
    fn specs_are_checked_without_touching_hardware() {
        let error = |s: &str| PtzSpec::parse(s).unwrap_err().to_string();
        assert!(
            error("bogus").contains("use off, v4l2"),
            "{}",
            error("bogus")
        );
        assert!(error("gpio:").contains("key=value"));
        assert!(error("gpio:pulse_ms=100").contains("at least one action"));
        assert!(error("gpio:left=a,pulse_ms=fast").contains("whole number"));
        assert!(error("servo:").contains("key=value"));
        assert!(error("servo:step=5").contains("pan or a tilt"));
        assert!(error("servo:pan=eth0").contains("pwmchip"));
        // A PWM chip that does not exist here still parses: only opening it needs the board.
        assert_eq!(
            PtzSpec::parse("servo:pan=pwmchip99/0,step=5").unwrap(),
            PtzSpec::Servo {
                pan: Some("pwmchip99/0".into()),
                tilt: None,
                step: 5
            }
        );
        assert_eq!(PtzSpec::parse("off").unwrap(), PtzSpec::Off);
    }

    #[test]
    fn only_mapped_actions_are_offered() {
        use PtzAction::*;
        assert_eq!(Ptz::Off.actions(), vec![]);
        assert!(!Ptz::Off.available());
        let gpio = Ptz::parse("gpio:right=r,left=l,zoom_in=z").unwrap();
        assert_eq!(gpio.actions(), vec![Left, Right, ZoomIn]);
        let tilt_only = Ptz::Servo(ServoHead {
            pan: None,
            tilt: Some(Arc::new(crate::control::servo::FakeServo::default())),
            step: 10,
            angles: Mutex::new((90, 90)),
        });
        assert_eq!(tilt_only.actions(), vec![Up, Down]);
        assert_eq!(Ptz::parse("v4l2").unwrap().actions().len(), 6);
        // The names `--ptz gpio:` takes are the wire names.
        for action in [Left, Right, Up, Down, ZoomIn, ZoomOut] {
            assert_eq!(serde_json::to_value(action).unwrap(), action_name(action));
        }
    }
}
