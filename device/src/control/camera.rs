//! Camera controls (brightness, exposure, focus, pan/tilt…) read and written through V4L2.

use std::path::PathBuf;

use ferrocam_protocol::ControlInfo;
use ferrocam_protocol::control::{ControlError, ControlErrorCode, ControlState};

/// What the control handlers need from a camera; V4L2 and the fake implement it.
pub trait CameraControls: Send + Sync {
    /// Every control with its current value.
    fn list(&self) -> Result<Vec<ControlState>, ControlError>;
    /// Sets one control, checking the range first.
    fn set(&self, id: u32, value: i64) -> Result<(), ControlError>;
}

/// Checks `value` against a control's description.
pub fn check_range(info: &ControlInfo, value: i64) -> Result<(), ControlError> {
    let in_range = value >= info.minimum && value <= info.maximum;
    let on_step = info.step <= 1 || (value - info.minimum) % info.step as i64 == 0;
    if in_range && on_step {
        Ok(())
    } else {
        Err(ControlError::new(
            ControlErrorCode::OutOfRange,
            format!(
                "{} takes {}..={} in steps of {}; {value} is not one of them",
                info.name, info.minimum, info.maximum, info.step
            ),
        ))
    }
}

fn unknown(id: u32) -> ControlError {
    ControlError::new(
        ControlErrorCode::NotFound,
        format!("the camera has no control {id}"),
    )
}

/// A V4L2 device's controls.
pub struct V4l2Controls {
    path: PathBuf,
    controls: Vec<ControlInfo>,
}

impl V4l2Controls {
    /// `controls` as discovered at start (`media::controls`).
    pub fn new(path: PathBuf, controls: Vec<ControlInfo>) -> Self {
        Self { path, controls }
    }

    fn open(&self) -> Result<v4l::Device, ControlError> {
        v4l::Device::with_path(&self.path).map_err(|e| {
            ControlError::new(
                ControlErrorCode::Unavailable,
                format!("{}: {e}", self.path.display()),
            )
        })
    }
}

impl CameraControls for V4l2Controls {
    fn list(&self) -> Result<Vec<ControlState>, ControlError> {
        let dev = self.open()?;
        Ok(self
            .controls
            .iter()
            .map(|info| {
                let value = match dev.control(info.id).map(|c| c.value) {
                    Ok(v4l::control::Value::Integer(v)) => v,
                    Ok(v4l::control::Value::Boolean(b)) => i64::from(b),
                    _ => info.default,
                };
                ControlState {
                    info: info.clone(),
                    value,
                }
            })
            .collect())
    }

    fn set(&self, id: u32, value: i64) -> Result<(), ControlError> {
        let info = self
            .controls
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| unknown(id))?;
        check_range(info, value)?;
        let value = if info.kind == "boolean" {
            v4l::control::Value::Boolean(value != 0)
        } else {
            v4l::control::Value::Integer(value)
        };
        self.open()?
            .set_control(v4l::control::Control { id, value })
            .map_err(|e| {
                ControlError::new(
                    ControlErrorCode::Failed,
                    format!("setting control {id}: {e}"),
                )
            })
    }
}

/// Sources without controls (the test pattern, libcamera for now).
pub struct NoControls;

impl CameraControls for NoControls {
    fn list(&self) -> Result<Vec<ControlState>, ControlError> {
        Ok(Vec::new())
    }

    fn set(&self, id: u32, _value: i64) -> Result<(), ControlError> {
        Err(unknown(id))
    }
}

/// In-memory controls with V4L2's rules, for tests.
#[cfg(test)]
pub struct FakeControls {
    state: std::sync::Mutex<Vec<ControlState>>,
}

#[cfg(test)]
impl FakeControls {
    pub fn new(controls: Vec<ControlInfo>) -> Self {
        let state = controls
            .into_iter()
            .map(|info| ControlState {
                value: info.default,
                info,
            })
            .collect();
        Self {
            state: std::sync::Mutex::new(state),
        }
    }
}

#[cfg(test)]
impl CameraControls for FakeControls {
    fn list(&self) -> Result<Vec<ControlState>, ControlError> {
        Ok(self.state.lock().expect("controls lock").clone())
    }

    fn set(&self, id: u32, value: i64) -> Result<(), ControlError> {
        let mut state = self.state.lock().expect("controls lock");
        let control = state
            .iter_mut()
            .find(|c| c.info.id == id)
            .ok_or_else(|| unknown(id))?;
        check_range(&control.info, value)?;
        control.value = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn brightness() -> ControlInfo {
        ControlInfo {
            id: 0x0098_0900,
            name: "Brightness".into(),
            kind: "integer".into(),
            minimum: -64,
            maximum: 64,
            step: 2,
            default: 0,
            menu: vec![],
        }
    }

    #[test]
    fn ranges_and_steps_are_enforced() {
        let cam = FakeControls::new(vec![brightness()]);
        cam.set(0x0098_0900, 40).unwrap();
        assert_eq!(cam.list().unwrap()[0].value, 40);
        assert_eq!(
            cam.set(0x0098_0900, 65).unwrap_err().code,
            ControlErrorCode::OutOfRange
        );
        assert_eq!(
            cam.set(0x0098_0900, 3).unwrap_err().code,
            ControlErrorCode::OutOfRange
        );
        assert_eq!(cam.set(1, 0).unwrap_err().code, ControlErrorCode::NotFound);
        assert_eq!(
            cam.list().unwrap()[0].value,
            40,
            "a refused set changes nothing"
        );
    }

    #[test]
    fn sources_without_controls_refuse_every_id() {
        assert!(NoControls.list().unwrap().is_empty());
        assert_eq!(
            NoControls.set(5, 1).unwrap_err().code,
            ControlErrorCode::NotFound
        );
    }
}
