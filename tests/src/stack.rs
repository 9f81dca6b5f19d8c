//! A gateway (with its embedded broker) and a device on the test pattern, on free ports.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::{Process, free_port, workspace_bin, workspace_root};

/// Knobs for [`Stack::start`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Name for the log folder (usually the test's name).
    pub test: String,
    /// The device's id.
    pub device_id: String,
}

impl StackOptions {
    pub fn new(test: &str) -> Self {
        Self {
            test: test.to_owned(),
            device_id: "demo".to_owned(),
        }
    }
}

/// Running gateway + device.
pub struct Stack {
    pub http_port: u16,
    pub mqtt_port: u16,
    pub device_id: String,
    pub log_dir: PathBuf,
    // Dropped in reverse order: device first, so it can say "offline" to a live broker.
    pub gateway: Process,
    pub device: Process,
}

impl Stack {
    /// Starts both processes and waits until the gateway lists the device as online.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let log_dir = workspace_root().join("target/e2e-logs").join(&options.test);
        let http_port = free_port();
        let mqtt_port = free_port();

        let mut gateway = Command::new(workspace_bin("ferrocam-gateway")?);
        gateway
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
            .env("RUST_LOG", "info,ferrocam_gateway=debug,rumqttd=warn");
        let gateway = Process::spawn("gateway", gateway, &log_dir)?;

        let mut device = Command::new(workspace_bin("ferrocam-device")?);
        device
            .args(["--id", &options.device_id])
            .args(["--broker", &format!("mqtt://127.0.0.1:{mqtt_port}")])
            .args(["--source", "test"])
            // Test media stays on loopback.
            .args(["--ice-udp", "127.0.0.1:0"])
            .env("RUST_LOG", "info,ferrocam_device=debug");
        let device = Process::spawn("device", device, &log_dir)?;

        let stack = Stack {
            http_port,
            mqtt_port,
            device_id: options.device_id,
            log_dir,
            gateway,
            device,
        };
        let id = stack.device_id.clone();
        crate::eventually(
            "the device to be listed online",
            Duration::from_secs(30),
            || {
                let url = stack.url(&format!("api/devices/{id}"));
                async move {
                    let body: serde_json::Value = match ureq::get(&url).call() {
                        Ok(mut resp) => resp.body_mut().read_json().context("device json")?,
                        Err(e) => return Err(e.into()),
                    };
                    Ok((body["online"] == true).then_some(()))
                }
            },
        )
        .await?;
        Ok(stack)
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.http_port)
    }
}
