//! The processes of the cluster test: a 3-node NATS cluster, two devices homed on nodes 1 and 2
//! and two gateways homed on nodes 2 and 3, each with all three nodes as its `--broker`
//! failover list; plus the queries the test makes of them (presence as each gateway lists it,
//! which node hosts which MQTT client).
//!
//! Apart from the test so the scenario reads as steps, not process plumbing.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::nats::NatsCluster;
use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Credentials, Process, eventually, free_port};
use serde_json::Value;

pub const DEVICES: [&str; 2] = ["cam-a", "cam_b"];
pub const INSTANCES: [&str; 2] = ["gw-0", "gw-1"];
/// Home node (0-based) of each device and each gateway: devices on nodes 1 and 2, gateways on
/// nodes 2 and 3.
pub const DEVICE_HOME: [usize; 2] = [0, 1];
pub const GATEWAY_HOME: [usize; 2] = [1, 2];
/// Small pictures: two encoders, two browsers and three brokers share two cores.
pub const WIDTH: u64 = 320;
pub const HEIGHT: u64 = 240;

/// The command line of gateway `instance` on the broker list `brokers`. Keep in step with
/// `Stack::start` (flags every test gateway needs, e.g. credentials).
fn gateway_command(
    creds: &Credentials,
    instance: &str,
    http_port: u16,
    brokers: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(ferrocam_tests::process::workspace_bin("ferrocam-gateway")?);
    cmd.args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--instance", instance])
        .args(["--broker", brokers])
        .arg("--auth-config")
        .arg(&creds.auth_config)
        .env("RUST_LOG", "info,ferrocam_gateway=debug");
    Ok(cmd)
}

/// The command line of device `id` on the broker list `brokers`. Keep in step with
/// `Stack::start_device`.
fn device_command(creds: &Credentials, id: &str, brokers: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new(ferrocam_tests::process::workspace_bin("ferrocam-device")?);
    creds.enroll(id)?.keys_for(&mut cmd);
    cmd.args(["--id", id])
        .args(["--broker", brokers])
        // The test tone stays on: with `--audio off` Chromium connected but showed no frames
        // (to be investigated; WHEP players decoded fine).
        .args(["--source", "test"])
        .args([
            "--width",
            &WIDTH.to_string(),
            "--height",
            &HEIGHT.to_string(),
        ])
        .args(["--fps", "15", "--bitrate-kbps", "300"])
        .args(["--ice-udp", "127.0.0.1:0"])
        .env("RUST_LOG", "info,ferrocam_device=debug");
    Ok(cmd)
}

pub struct Gateway {
    pub http_port: u16,
    pub process: Option<Process>,
}

/// Everything the test runs. Fields drop in order: devices, gateways, cluster.
pub struct Fleet {
    pub devices: Vec<Option<Process>>,
    pub gateways: Vec<Gateway>,
    pub cluster: NatsCluster,
    /// Users, API token and grant keys, made by `ferrocam-gateway init`; every gateway shares
    /// them, as the instances of one site do.
    pub creds: Credentials,
    pub log_dir: std::path::PathBuf,
}

impl Fleet {
    pub async fn start(test: &str) -> anyhow::Result<Self> {
        let log_dir = workspace_root().join("target/e2e-logs").join(test);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)?;
        let creds = Credentials::create(&log_dir.join("auth"))?;
        let started = std::time::Instant::now();
        let cluster = NatsCluster::start(3, &log_dir).await?;
        eprintln!(
            "nats cluster accepting MQTT on all 3 nodes after {:?}",
            started.elapsed()
        );
        let mut gateways = Vec::new();
        for (i, instance) in INSTANCES.iter().enumerate() {
            let http_port = free_port();
            let cmd = gateway_command(
                &creds,
                instance,
                http_port,
                &cluster.broker_list(GATEWAY_HOME[i]),
            )?;
            let process = Process::spawn(&format!("gateway-{instance}"), cmd, &log_dir)?;
            ferrocam_tests::creds::set_token_for(
                &format!("http://127.0.0.1:{http_port}"),
                &creds.token,
            );
            gateways.push(Gateway {
                http_port,
                process: Some(process),
            });
        }
        let mut devices = Vec::new();
        for (i, id) in DEVICES.iter().enumerate() {
            let cmd = device_command(&creds, id, &cluster.broker_list(DEVICE_HOME[i]))?;
            devices.push(Some(Process::spawn(
                &format!("device-{id}"),
                cmd,
                &log_dir,
            )?));
        }
        Ok(Self {
            devices,
            gateways,
            cluster,
            creds,
            log_dir,
        })
    }

    pub fn url(&self, gateway: usize, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{path}",
            self.gateways[gateway].http_port
        )
    }

    /// Gateway `gateway`'s view of the devices: id → online.
    fn presence(&self, gateway: usize) -> anyhow::Result<Vec<(String, bool)>> {
        let body: Value = ureq::get(&self.url(gateway, "api/devices"))
            .header("authorization", &self.creds.bearer())
            .call()?
            .body_mut()
            .read_json()
            .context("device list json")?;
        Ok(body["devices"]
            .as_array()
            .context("devices array")?
            .iter()
            .filter_map(|d| Some((d["device"].as_str()?.to_owned(), d["online"] == true)))
            .collect())
    }

    /// Waits until gateway `gateway` lists `device` with `online`.
    pub async fn wait_presence(
        &self,
        gateway: usize,
        device: &str,
        online: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        eventually(
            &format!("gateway {gateway} to list {device} online={online}"),
            timeout,
            || async move {
                let seen = self.presence(gateway)?;
                Ok(seen
                    .iter()
                    .any(|(d, o)| d == device && *o == online)
                    .then_some(()))
            },
        )
        .await
    }

    /// The node (0-based) whose MQTT clients include one whose id contains `needle`.
    pub fn node_hosting(&self, needle: &str) -> Option<usize> {
        (0..self.cluster.len()).find(|&i| {
            self.cluster
                .mqtt_clients(i)
                .is_ok_and(|ids| ids.iter().any(|id| id.contains(needle)))
        })
    }

    pub async fn wait_hosted_on(
        &self,
        needle: &str,
        node: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        eventually(
            &format!("the MQTT client of {needle} on node {}", node + 1),
            timeout,
            || async move {
                Ok(self
                    .cluster
                    .mqtt_clients(node)
                    .ok()
                    .filter(|ids| ids.iter().any(|id| id.contains(needle)))
                    .map(|_| ()))
            },
        )
        .await
    }
}
