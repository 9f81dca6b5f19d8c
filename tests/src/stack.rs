//! A ferrocam deployment on free loopback ports: a broker (the gateway's embedded rumqttd, or a
//! Mosquitto started here), one or more gateways, and a device on the test pattern.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::{Process, free_port, workspace_bin, workspace_root};

/// Which MQTT broker the stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// rumqttd inside the first gateway.
    Embedded,
    /// Debian's Mosquitto, started by the test.
    Mosquitto,
}

/// Knobs for [`Stack::start`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Name for the log folder (usually the test's name).
    pub test: String,
    /// The device's id.
    pub device_id: String,
    pub broker: BrokerKind,
    /// Number of gateway instances (more than one needs Mosquitto).
    pub gateways: usize,
    /// Extra flags for the device.
    pub device_args: Vec<String>,
    /// Extra flags for every gateway.
    pub gateway_args: Vec<String>,
    /// Extra environment for the device.
    pub device_env: Vec<(String, String)>,
    /// Address the embedded broker listens on and the device connects to.
    pub mqtt_host: String,
    /// Run the device inside this network namespace (`ip netns exec`), with ICE bound to
    /// `device_ice` instead of loopback.
    pub device_netns: Option<(String, String)>,
}

impl StackOptions {
    pub fn new(test: &str) -> Self {
        Self {
            test: test.to_owned(),
            device_id: "demo".to_owned(),
            broker: BrokerKind::Embedded,
            gateways: 1,
            device_args: Vec::new(),
            gateway_args: Vec::new(),
            device_env: Vec::new(),
            mqtt_host: "127.0.0.1".to_owned(),
            device_netns: None,
        }
    }

    pub fn mosquitto(mut self) -> Self {
        self.broker = BrokerKind::Mosquitto;
        self
    }

    pub fn gateways(mut self, n: usize) -> Self {
        self.gateways = n;
        self
    }

    pub fn device_args(mut self, args: &[&str]) -> Self {
        self.device_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Puts the device in network namespace `netns` with its ICE bound to `ice_ip`, reaching the
    /// broker at `broker_ip` (the host's end of the namespace's link).
    pub fn device_in_netns(mut self, netns: &str, ice_ip: &str, broker_ip: &str) -> Self {
        self.device_netns = Some((netns.to_owned(), ice_ip.to_owned()));
        self.mqtt_host = broker_ip.to_owned();
        self
    }

    pub fn device_env(mut self, key: &str, value: &str) -> Self {
        self.device_env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn gateway_args(mut self, args: &[&str]) -> Self {
        self.gateway_args = args.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// One running gateway.
pub struct Gateway {
    pub http_port: u16,
    pub process: Process,
}

/// A running deployment. Fields drop in order: device, gateways, broker.
pub struct Stack {
    pub device: Option<Process>,
    pub gateways: Vec<Gateway>,
    pub mosquitto: Option<Process>,
    pub mqtt_port: u16,
    pub device_id: String,
    pub log_dir: PathBuf,
    options: StackOptions,
    device_starts: usize,
}

impl Stack {
    /// Starts everything and waits until the (first) gateway lists the device as online.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.gateways == 1 || options.broker == BrokerKind::Mosquitto,
            "several gateways need a shared external broker"
        );
        let log_dir = workspace_root().join("target/e2e-logs").join(&options.test);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)?;
        let mqtt_port = free_port();

        let mosquitto = match options.broker {
            BrokerKind::Mosquitto => Some(start_mosquitto(mqtt_port, &log_dir).await?),
            BrokerKind::Embedded => None,
        };
        let mut gateways = Vec::new();
        for i in 0..options.gateways {
            let http_port = free_port();
            let mut cmd = Command::new(workspace_bin("ferrocam-gateway")?);
            cmd.args(["--http", &format!("127.0.0.1:{http_port}")])
                .args(["--instance", &format!("gw-{i}")])
                .args(&options.gateway_args)
                .env("RUST_LOG", "info,ferrocam_gateway=debug,rumqttd=warn");
            match options.broker {
                BrokerKind::Embedded => cmd.args([
                    "--mqtt-listen",
                    &format!("{}:{mqtt_port}", options.mqtt_host),
                ]),
                BrokerKind::Mosquitto => cmd.args([
                    "--broker",
                    &format!("mqtt://{}:{mqtt_port}", options.mqtt_host),
                ]),
            };
            let process = Process::spawn(&format!("gateway-{i}"), cmd, &log_dir)?;
            gateways.push(Gateway { http_port, process });
        }

        let mut stack = Stack {
            device: None,
            gateways,
            mosquitto,
            mqtt_port,
            device_id: options.device_id.clone(),
            log_dir,
            options,
            device_starts: 0,
        };
        stack.start_device()?;
        if let Err(e) = stack.wait_online(true).await {
            // Say why: the usual cause is a process that exited at start.
            let mut logs = String::new();
            for g in &stack.gateways {
                logs.push_str(&format!("\n── gateway ──\n{}", g.process.log_tail(3000)));
            }
            if let Some(d) = &stack.device {
                logs.push_str(&format!("\n── device ──\n{}", d.log_tail(3000)));
            }
            anyhow::bail!("{e:#}{logs}");
        }
        Ok(stack)
    }

    /// Starts (or restarts) the device process.
    pub fn start_device(&mut self) -> anyhow::Result<()> {
        let binary = workspace_bin("ferrocam-device")?;
        let (mut cmd, ice) = match &self.options.device_netns {
            Some((netns, ice_ip)) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns]).arg(&binary);
                (cmd, format!("{ice_ip}:0"))
            }
            None => (Command::new(&binary), "127.0.0.1:0".to_owned()),
        };
        cmd.args(["--id", &self.device_id]).args([
            "--broker",
            &format!("mqtt://{}:{}", self.options.mqtt_host, self.mqtt_port),
        ]);
        if !self.options.device_args.iter().any(|a| a == "--source") {
            cmd.args(["--source", "test"]);
        }
        cmd
            // Test media stays on loopback (or the test's own namespace link).
            .args(["--ice-udp", &ice])
            .args(&self.options.device_args)
            .env("RUST_LOG", "info,ferrocam_device=debug")
            .envs(self.options.device_env.iter().map(|(k, v)| (k, v)));
        self.device_starts += 1;
        let name = format!("device-{}", self.device_starts);
        self.device = Some(Process::spawn(&name, cmd, &self.log_dir)?);
        Ok(())
    }

    /// Kills the device with SIGKILL: no goodbye, so only the broker's last will can say it
    /// went away.
    pub fn kill_device(&mut self) {
        if let Some(mut device) = self.device.take() {
            device.kill();
        }
    }

    /// Kills the Mosquitto broker (SIGKILL: no goodbye to anyone).
    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.mosquitto.take() {
            broker.kill();
        }
    }

    /// Starts Mosquitto again on the same port; returns when it accepts connections.
    pub async fn restart_broker(&mut self) -> anyhow::Result<()> {
        self.mosquitto = Some(start_mosquitto(self.mqtt_port, &self.log_dir).await?);
        Ok(())
    }

    /// Whether the device process is alive.
    pub fn device_running(&mut self) -> bool {
        self.device.as_mut().is_some_and(Process::is_running)
    }

    /// Waits until gateway 0 reports the device `online` (or offline).
    pub async fn wait_online(&self, online: bool) -> anyhow::Result<()> {
        self.wait_online_at(0, online).await
    }

    /// Waits until gateway `i` reports the device `online` (or offline).
    pub async fn wait_online_at(&self, i: usize, online: bool) -> anyhow::Result<()> {
        let url = self.gateway_url(i, &format!("api/devices/{}", self.device_id));
        crate::eventually(
            &format!("gateway {i} to list the device online={online}"),
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let body: serde_json::Value = match ureq::get(&url).call() {
                        Ok(mut resp) => resp.body_mut().read_json().context("device json")?,
                        Err(ureq::Error::StatusCode(404)) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    };
                    Ok((body["online"] == online).then_some(()))
                }
            },
        )
        .await
    }

    /// `http://127.0.0.1:<gateway 0 port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        self.gateway_url(0, path)
    }

    /// `http://127.0.0.1:<gateway i port>/<path>`.
    pub fn gateway_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.gateways[i].http_port)
    }
}

async fn start_mosquitto(port: u16, log_dir: &std::path::Path) -> anyhow::Result<Process> {
    let conf = log_dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
        ),
    )?;
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("mosquitto not found: run scripts/setup-system.sh test")?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(&conf);
    let process = Process::spawn("mosquitto", cmd, log_dir)?;
    crate::eventually(
        "mosquitto to listen",
        Duration::from_secs(10),
        || async move {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ()))
        },
    )
    .await?;
    Ok(process)
}
