//! GPIO lines the device config names, through the Linux GPIO character device (`gpiocdev`).
//! Only configured lines exist as far as the control protocol is concerned: a name not in the
//! allow-list is `not_found`, whatever the chip has.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, bail};
use ferrocam_protocol::control::{ControlError, ControlErrorCode, GpioLine};

/// One line from the config: `name=lamp,chip=gpiochip0,line=17,direction=output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConfig {
    pub name: String,
    pub chip: String,
    pub line: u32,
    pub output: bool,
}

impl std::str::FromStr for LineConfig {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("GPIO line {s:?}: {part:?} is not key=value"))?;
            fields.insert(k.trim(), v.trim());
        }
        let get = |k: &str| {
            fields
                .get(k)
                .copied()
                .with_context(|| format!("GPIO line {s:?} has no {k}="))
        };
        let name = get("name")?;
        ferrocam_protocol::ids::validate_id(name)
            .with_context(|| format!("GPIO line name {name:?}"))?;
        let output = match get("direction")? {
            "output" | "out" => true,
            "input" | "in" => false,
            other => bail!("GPIO line {name}: direction {other:?} is not input or output"),
        };
        Ok(Self {
            name: name.to_owned(),
            chip: get("chip")?.to_owned(),
            line: get("line")?
                .parse()
                .with_context(|| format!("GPIO line {name}: bad line number"))?,
            output,
        })
    }
}

/// What the control handlers need from GPIO; the real chip and the fake implement it.
pub trait Gpio: Send + Sync {
    fn lines(&self) -> Vec<GpioLine>;
    fn get(&self, name: &str) -> Result<bool, ControlError>;
    fn set(&self, name: &str, value: bool) -> Result<(), ControlError>;
}

fn not_found(name: &str) -> ControlError {
    ControlError::new(
        ControlErrorCode::NotFound,
        format!("no GPIO line called {name:?} is configured"),
    )
}

fn read_only(name: &str) -> ControlError {
    ControlError::new(
        ControlErrorCode::Forbidden,
        format!("GPIO line {name} is an input"),
    )
}

/// Lines requested from the kernel's GPIO character devices.
pub struct CdevGpio {
    lines: Vec<(LineConfig, gpiocdev::Request)>,
}

impl CdevGpio {
    /// Requests every configured line (outputs start low).
    pub fn open(config: &[LineConfig]) -> anyhow::Result<Self> {
        let mut lines = Vec::new();
        for line in config {
            let chip = if line.chip.starts_with('/') {
                PathBuf::from(&line.chip)
            } else {
                PathBuf::from("/dev").join(&line.chip)
            };
            let mut builder = gpiocdev::Request::builder();
            builder
                .on_chip(&chip)
                .with_consumer("ferrocam")
                .with_line(line.line);
            if line.output {
                builder.as_output(gpiocdev::line::Value::Inactive);
            } else {
                builder.as_input();
            }
            let request = builder.request().with_context(|| {
                format!(
                    "requesting {} line {} for {}",
                    chip.display(),
                    line.line,
                    line.name
                )
            })?;
            lines.push((line.clone(), request));
        }
        Ok(Self { lines })
    }

    fn find(&self, name: &str) -> Result<&(LineConfig, gpiocdev::Request), ControlError> {
        self.lines
            .iter()
            .find(|(c, _)| c.name == name)
            .ok_or_else(|| not_found(name))
    }
}

impl Gpio for CdevGpio {
    fn lines(&self) -> Vec<GpioLine> {
        self.lines
            .iter()
            .map(|(c, r)| GpioLine {
                name: c.name.clone(),
                direction: if c.output { "output" } else { "input" }.to_owned(),
                value: r
                    .value(c.line)
                    .is_ok_and(|v| v == gpiocdev::line::Value::Active),
            })
            .collect()
    }

    fn get(&self, name: &str) -> Result<bool, ControlError> {
        let (c, r) = self.find(name)?;
        r.value(c.line)
            .map(|v| v == gpiocdev::line::Value::Active)
            .map_err(|e| ControlError::new(ControlErrorCode::Failed, e.to_string()))
    }

    fn set(&self, name: &str, value: bool) -> Result<(), ControlError> {
        let (c, r) = self.find(name)?;
        if !c.output {
            return Err(read_only(name));
        }
        let value = if value {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        r.set_value(c.line, value)
            .map_err(|e| ControlError::new(ControlErrorCode::Failed, e.to_string()))
    }
}

/// A GPIO chip that exists only in memory, for boards without one (and tests). Same allow-list
/// rules as the real one. With a state file, every change is written there as JSON
/// (`{"lamp":true}`), so a test can watch the "pins" from outside the process, and inputs are
/// read from it: writing `{"door":true}` there is a sensor's edge.
pub struct FakeGpio {
    lines: Vec<LineConfig>,
    values: Mutex<BTreeMap<String, bool>>,
    state_file: Option<PathBuf>,
}

impl FakeGpio {
    pub fn new(lines: &[LineConfig], state_file: Option<PathBuf>) -> Self {
        let values = lines.iter().map(|l| (l.name.clone(), false)).collect();
        let fake = Self {
            lines: lines.to_vec(),
            values: Mutex::new(values),
            state_file,
        };
        fake.persist(&fake.values.lock().expect("gpio lock"));
        fake
    }

    /// An input's level as the state file says (a file half written reads as nothing).
    fn outside_level(&self, name: &str) -> Option<bool> {
        let text = std::fs::read(self.state_file.as_ref()?).ok()?;
        let levels: BTreeMap<String, bool> = serde_json::from_slice(&text).ok()?;
        levels.get(name).copied()
    }

    fn persist(&self, values: &BTreeMap<String, bool>) {
        if let Some(path) = &self.state_file {
            let _ = std::fs::write(path, serde_json::to_vec(values).unwrap_or_default());
        }
    }
}

impl Gpio for FakeGpio {
    fn lines(&self) -> Vec<GpioLine> {
        let values = self.values.lock().expect("gpio lock");
        self.lines
            .iter()
            .map(|c| GpioLine {
                name: c.name.clone(),
                direction: if c.output { "output" } else { "input" }.to_owned(),
                value: values[&c.name],
            })
            .collect()
    }

    fn get(&self, name: &str) -> Result<bool, ControlError> {
        let mut values = self.values.lock().expect("gpio lock");
        let is_input = self.lines.iter().any(|c| c.name == name && !c.output);
        if is_input && let Some(level) = self.outside_level(name) {
            values.insert(name.to_owned(), level);
        }
        values.get(name).copied().ok_or_else(|| not_found(name))
    }

    fn set(&self, name: &str, value: bool) -> Result<(), ControlError> {
        let line = self
            .lines
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| not_found(name))?;
        if !line.output {
            return Err(read_only(name));
        }
        let mut values = self.values.lock().expect("gpio lock");
        values.insert(name.to_owned(), value);
        self.persist(&values);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<LineConfig> {
        vec![
            "name=lamp,chip=gpiochip0,line=17,direction=output"
                .parse()
                .unwrap(),
            "name=door,chip=gpiochip0,line=27,direction=input"
                .parse()
                .unwrap(),
        ]
    }

    #[test]
    fn parses_line_config() {
        let l: LineConfig = "name=lamp, chip=gpiochip0, line=17, direction=out"
            .parse()
            .unwrap();
        assert_eq!((l.name.as_str(), l.line, l.output), ("lamp", 17, true));
        assert!(
            "name=a/b,chip=c,line=1,direction=out"
                .parse::<LineConfig>()
                .is_err()
        );
        assert!(
            "name=a,chip=c,line=x,direction=out"
                .parse::<LineConfig>()
                .is_err()
        );
        assert!(
            "name=a,chip=c,line=1,direction=sideways"
                .parse::<LineConfig>()
                .is_err()
        );
        assert!("name=a,chip=c".parse::<LineConfig>().is_err());
    }

    #[test]
    fn the_fake_chip_keeps_the_allow_list_and_directions() {
        let dir = std::env::temp_dir().join(format!("ferrocam-gpio-{}", std::process::id()));
        let gpio = FakeGpio::new(&lines(), Some(dir.clone()));
        gpio.set("lamp", true).unwrap();
        assert!(gpio.get("lamp").unwrap());
        assert_eq!(
            std::fs::read_to_string(&dir).unwrap(),
            r#"{"door":false,"lamp":true}"#
        );
        assert_eq!(
            gpio.set("door", true).unwrap_err().code,
            ControlErrorCode::Forbidden
        );
        assert_eq!(
            gpio.set("heater", true).unwrap_err().code,
            ControlErrorCode::NotFound
        );
        assert_eq!(
            gpio.get("gpio17").unwrap_err().code,
            ControlErrorCode::NotFound
        );
        assert_eq!(gpio.lines().len(), 2);
        // An input follows the state file, as a sensor would; an output does not.
        std::fs::write(&dir, r#"{"door":true,"lamp":false}"#).unwrap();
        assert!(gpio.get("door").unwrap());
        assert!(gpio.get("lamp").unwrap());
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn a_missing_chip_is_a_clear_error() {
        let bad: LineConfig = "name=x,chip=gpiochip99,line=1,direction=out"
            .parse()
            .unwrap();
        let err = CdevGpio::open(&[bad])
            .err()
            .expect("no such chip here")
            .to_string();
        assert!(err.contains("gpiochip99"), "{err}");
    }
}
