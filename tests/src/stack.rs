//! A ferrocam deployment on free loopback ports: a broker (the gateway's embedded rumqttd, or a
//! Mosquitto started here), one or more gateways, and a device on the test pattern.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::mosquitto::secure_broker_files;
pub use crate::mosquitto::{GATEWAY_BROKER_USER, broker_password, start_mosquitto};
use crate::process::{Process, free_port, workspace_bin, workspace_root};

/// Which MQTT broker the stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// rumqttd inside the first gateway.
    Embedded,
    /// Debian's Mosquitto, started by the test.
    Mosquitto,
    /// A 3-node NATS cluster (MQTT over JetStream), started by the test. The device's home is
    /// node 1 and gateway i's node 2+i (wrapping); each lists every node for failover.
    NatsCluster,
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
    /// Device ids enrolled besides the stack's own device.
    pub extra_devices: Vec<String>,
    /// Run the device inside this network namespace (`ip netns exec`), with ICE bound to
    /// `device_ice` instead of loopback.
    pub device_netns: Option<(String, String)>,
    /// Mosquitto as in production: passwords, the shipped ACL template, and TLS for the
    /// gateways and the device (a plain listener with the same ACL stays for test clients).
    pub secure_broker: bool,
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
            extra_devices: Vec::new(),
            device_netns: None,
            secure_broker: false,
        }
    }

    /// Mosquitto with passwords, the ACL template and TLS (see [`Self::secure_broker`]).
    pub fn secure_mosquitto(mut self) -> Self {
        self.broker = BrokerKind::Mosquitto;
        self.secure_broker = true;
        self
    }

    pub fn mosquitto(mut self) -> Self {
        self.broker = BrokerKind::Mosquitto;
        self
    }

    pub fn nats_cluster(mut self) -> Self {
        self.broker = BrokerKind::NatsCluster;
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

    /// Enrolls more device ids before the gateways start (their config files are in the
    /// credentials directory: [`crate::Credentials::enroll`] reads them back).
    pub fn enroll(mut self, id: &str) -> Self {
        self.extra_devices.push(id.to_owned());
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
    /// The deployment's users, API token and grant keys.
    pub creds: crate::Credentials,
    pub device: Option<Process>,
    pub gateways: Vec<Gateway>,
    pub mosquitto: Option<Process>,
    /// The cluster of [`BrokerKind::NatsCluster`].
    pub nats: Option<crate::nats::NatsCluster>,
    /// The broker's MQTT port (a NATS cluster's node 1: the device's home).
    pub mqtt_port: u16,
    /// The TLS port of a secure Mosquitto, with the CA that signed its certificate.
    pub mqtts: Option<(u16, PathBuf)>,
    pub device_id: String,
    /// The device's enrollment (its config file), made before the gateways start.
    pub enrollment: crate::creds::Enrollment,
    pub log_dir: PathBuf,
    options: StackOptions,
    device_starts: usize,
    gateway_starts: usize,
}

impl Stack {
    /// Starts everything and waits until the (first) gateway lists the device as online.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.gateways == 1 || options.broker != BrokerKind::Embedded,
            "several gateways need a shared external broker"
        );
        let log_dir = workspace_root().join("target/e2e-logs").join(&options.test);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)?;
        let creds = crate::Credentials::create(&log_dir.join("auth"))?;
        let enrollment = creds.enroll(&options.device_id)?;
        for id in &options.extra_devices {
            creds.enroll(id)?;
        }
        let nats = match options.broker {
            BrokerKind::NatsCluster => Some(crate::nats::NatsCluster::start(3, &log_dir).await?),
            _ => None,
        };
        let mqtt_port = nats.as_ref().map_or_else(free_port, |c| c.mqtt_port(0));

        let mqtts = if options.secure_broker {
            Some((
                free_port(),
                secure_broker_files(&log_dir, &[&options.device_id, "cam-b"])?,
            ))
        } else {
            None
        };
        let mosquitto = match options.broker {
            BrokerKind::Mosquitto => {
                Some(start_mosquitto(mqtt_port, mqtts.as_ref().map(|(p, _)| *p), &log_dir).await?)
            }
            BrokerKind::Embedded | BrokerKind::NatsCluster => None,
        };
        let mut stack = Stack {
            creds,
            device: None,
            gateways: Vec::new(),
            mosquitto,
            nats,
            mqtt_port,
            mqtts,
            device_id: options.device_id.clone(),
            enrollment,
            log_dir,
            options,
            device_starts: 0,
            gateway_starts: 0,
        };
        for i in 0..stack.options.gateways {
            let http_port = free_port();
            let process = stack.spawn_gateway(i, http_port)?;
            stack.gateways.push(Gateway { http_port, process });
            crate::creds::set_token_for(&stack.gateway_url(i, ""), &stack.creds.token);
        }
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

    /// Starts gateway `i` on `http_port` (instance `gw-<i>`), against this stack's broker.
    fn spawn_gateway(&mut self, i: usize, http_port: u16) -> anyhow::Result<Process> {
        let (options, mqtt_port, mqtts, nats) =
            (&self.options, self.mqtt_port, &self.mqtts, &self.nats);
        {
            let mut cmd = Command::new(workspace_bin("ferrocam-gateway")?);
            cmd.args(["--http", &format!("127.0.0.1:{http_port}")])
                .args(["--instance", &format!("gw-{i}")])
                .arg("--auth-config")
                .arg(&self.creds.auth_config)
                .args(&options.gateway_args)
                .env("RUST_LOG", "info,ferrocam_gateway=debug,rumqttd=warn");
            match options.broker {
                BrokerKind::Embedded => {
                    if options.mqtt_host != "127.0.0.1" {
                        // A namespace test's device reaches the broker over a veth link.
                        cmd.arg("--mqtt-plaintext-lan");
                    }
                    cmd.args([
                        "--mqtt-listen",
                        &format!("{}:{mqtt_port}", options.mqtt_host),
                    ])
                }
                BrokerKind::Mosquitto => match &mqtts {
                    Some((port, ca)) => cmd
                        .args([
                            "--broker",
                            &format!(
                                "mqtts://{GATEWAY_BROKER_USER}:{}@127.0.0.1:{port}",
                                broker_password(GATEWAY_BROKER_USER)
                            ),
                        ])
                        .arg("--broker-ca")
                        .arg(ca),
                    None => cmd.args([
                        "--broker",
                        &format!("mqtt://{}:{mqtt_port}", options.mqtt_host),
                    ]),
                },
                BrokerKind::NatsCluster => {
                    let nats = nats.as_ref().expect("started above");
                    cmd.args(["--broker", &nats.broker_list((i + 1) % nats.len())])
                }
            };
            self.gateway_starts += 1;
            let name = format!("gateway-{i}-{}", self.gateway_starts);
            Process::spawn(&name, cmd, &self.log_dir)
        }
    }

    /// Stops gateway `i` as systemd would (SIGTERM, then SIGKILL after 10 s) and starts it
    /// again on the same port; returns once it answers HTTP.
    pub async fn restart_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        self.gateways[i].process.terminate(Duration::from_secs(10));
        let http_port = self.gateways[i].http_port;
        self.gateways[i].process = self.spawn_gateway(i, http_port)?;
        let url = self.gateway_url(i, "healthz");
        crate::eventually(
            &format!("gateway {i} to answer again"),
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move { Ok(ureq::get(&url).call().is_ok().then_some(())) }
            },
        )
        .await
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
        let broker = match (&self.nats, &self.mqtts) {
            (Some(nats), _) => nats.broker_list(0),
            (None, Some((port, ca))) => {
                cmd.arg("--broker-ca").arg(ca);
                let id = &self.device_id;
                format!("mqtts://{id}:{}@127.0.0.1:{port}", broker_password(id))
            }
            (None, None) => {
                // The embedded broker checks the enrolled password (Mosquitto's plain
                // listener here admits anyone).
                cmd.env(
                    "FERROCAM_BROKER_PASSWORD",
                    self.enrollment.broker_password(),
                );
                format!(
                    "mqtt://{}@{}:{}",
                    self.device_id, self.options.mqtt_host, self.mqtt_port
                )
            }
        };
        self.enrollment.keys_for(&mut cmd);
        cmd.args(["--id", &self.device_id])
            .args(["--broker", &broker]);
        if !self.options.device_args.iter().any(|a| a == "--source") {
            cmd.args(["--source", "test"]);
        }
        // Recordings stay with the test's logs, never in the machine's /var/lib.
        if !self.options.device_args.iter().any(|a| a == "--record-dir") {
            cmd.arg("--record-dir").arg(self.recordings_dir());
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
        let tls = self.mqtts.as_ref().map(|(p, _)| *p);
        self.mosquitto = Some(start_mosquitto(self.mqtt_port, tls, &self.log_dir).await?);
        Ok(())
    }

    /// Where the device keeps its recordings, unless the test chose `--record-dir` itself.
    pub fn recordings_dir(&self) -> PathBuf {
        self.log_dir.join("recordings")
    }

    /// Sends one control command through gateway 0's REST relay (`v` and `id` filled in) and
    /// returns (HTTP status, the device's response).
    pub fn control(&self, request: serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent
            .post(&self.url(&format!("api/devices/{}/control", self.device_id)))
            .header("authorization", &self.bearer())
            .send_json(request)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null);
        Ok((status, body))
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
        let bearer = self.creds.bearer();
        crate::eventually(
            &format!("gateway {i} to list the device online={online}"),
            Duration::from_secs(30),
            || {
                let (url, bearer) = (url.clone(), bearer.clone());
                async move {
                    let body: serde_json::Value =
                        match ureq::get(&url).header("authorization", &bearer).call() {
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

    /// `Bearer <API token>` for requests to the gateways.
    pub fn bearer(&self) -> String {
        self.creds.bearer()
    }

    /// Logs `browser` in to gateway `i` through the login page and leaves it on the viewer.
    pub async fn open_viewer(&self, browser: &crate::Browser, i: usize) -> anyhow::Result<()> {
        browser
            .login(
                &self.gateway_url(i, ""),
                &self.creds.user,
                &self.creds.password,
            )
            .await
    }

    /// Logs `browser`, running inside `ns`, in to gateway 0 through a front door on the link's
    /// host end (the only address such a browser reaches); keep the door while the page is used.
    pub async fn open_viewer_in(
        &self,
        ns: &crate::netns::NetNs,
        browser: &crate::Browser,
    ) -> anyhow::Result<crate::proxy::FrontDoor> {
        let front =
            crate::proxy::FrontDoor::start_on(ns.host_ip.parse()?, self.gateways[0].http_port)
                .await?;
        browser
            .login(&front.url(""), &self.creds.user, &self.creds.password)
            .await?;
        Ok(front)
    }

    /// The device's status as the gateway's REST API gives it (`/api/devices/<id>`).
    pub fn device_status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(
            ureq::get(&self.url(&format!("api/devices/{}", self.device_id)))
                .header("authorization", &self.bearer())
                .call()?
                .body_mut()
                .read_json()?,
        )
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
