//! Hobby servos on PWM outputs (sysfs PWM, e.g. the Pi's hardware PWM with the `pwm-2chan`
//! overlay), for pan/tilt heads: 50 Hz, 1–2 ms pulses for 0–180°.

use ferrocam_protocol::control::{ControlError, ControlErrorCode};

/// 50 Hz.
const PERIOD_NS: u32 = 20_000_000;
const MIN_PULSE_NS: u32 = 1_000_000;
const MAX_PULSE_NS: u32 = 2_000_000;

/// The pulse width for an angle in 0..=180°.
pub fn pulse_ns(degrees: u32) -> u32 {
    let degrees = degrees.min(180);
    MIN_PULSE_NS + (MAX_PULSE_NS - MIN_PULSE_NS) * degrees / 180
}

/// One servo output.
pub trait Servo: Send + Sync {
    /// Moves to `degrees` (0..=180).
    fn set_angle(&self, degrees: u32) -> Result<(), ControlError>;
}

/// A PWM channel from sysfs: `pwmchip0/1` means `/sys/class/pwm/pwmchip0`, channel 1.
pub struct SysfsServo {
    pwm: sysfs_pwm::Pwm,
}

/// Parses `pwmchip<N>/<channel>` into (chip, channel), touching nothing.
pub fn parse_channel(spec: &str) -> anyhow::Result<(u32, u32)> {
    spec.strip_prefix("pwmchip")
        .and_then(|s| s.split_once('/'))
        .and_then(|(chip, channel)| Some((chip.parse().ok()?, channel.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("PWM {spec:?}: use pwmchip<N>/<channel>"))
}

impl SysfsServo {
    pub fn open(spec: &str) -> anyhow::Result<Self> {
        let (chip, channel) = parse_channel(spec)?;
        let pwm =
            sysfs_pwm::Pwm::new(chip, channel).map_err(|e| anyhow::anyhow!("PWM {spec}: {e:?}"))?;
        pwm.export()
            .map_err(|e| anyhow::anyhow!("exporting PWM {spec}: {e:?}"))?;
        pwm.set_period_ns(PERIOD_NS)
            .and_then(|_| pwm.set_duty_cycle_ns(pulse_ns(90)))
            .and_then(|_| pwm.enable(true))
            .map_err(|e| anyhow::anyhow!("configuring PWM {spec}: {e:?}"))?;
        Ok(Self { pwm })
    }
}

impl Servo for SysfsServo {
    fn set_angle(&self, degrees: u32) -> Result<(), ControlError> {
        self.pwm
            .set_duty_cycle_ns(pulse_ns(degrees))
            .map_err(|e| ControlError::new(ControlErrorCode::Failed, format!("PWM: {e:?}")))
    }
}

/// A servo that remembers its angle, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct FakeServo {
    pub angle: std::sync::Mutex<Option<u32>>,
}

#[cfg(test)]
impl Servo for FakeServo {
    fn set_angle(&self, degrees: u32) -> Result<(), ControlError> {
        *self.angle.lock().expect("servo lock") = Some(degrees);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angles_map_to_one_to_two_millisecond_pulses() {
        assert_eq!(pulse_ns(0), 1_000_000);
        assert_eq!(pulse_ns(90), 1_500_000);
        assert_eq!(pulse_ns(180), 2_000_000);
        assert_eq!(pulse_ns(500), 2_000_000, "clamped");
    }
}
