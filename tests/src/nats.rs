//! A clustered MQTT broker for tests: an N-node NATS cluster (Debian's `nats-server`) with
//! JetStream and the MQTT listener on every node, all on free loopback ports.
//!
//! NATS serves MQTT 3.1.1 on top of JetStream: sessions, retained messages and QoS 1 state
//! live in replicated streams, so MQTT clients are refused until the cluster has elected its
//! JetStream meta leader and created those streams (1–9 s after a cold start on two cores,
//! under 1 s for a node rejoining a running cluster). [`NatsCluster::start`] and
//! [`NatsCluster::restart`] return only when every started node answers an MQTT CONNECT with
//! "accepted".
//!
//! Known NATS 2.9 behaviour the suites rely on or work around (measured; see docs/deploy.md,
//! "Broker compatibility"):
//! - a `.` in a topic is refused (publish: the connection is closed; subscribe: SUBACK failure;
//!   last will: CONNECT refused), so device ids on this broker must not contain `.`;
//! - the last will is sent when the client's connection drops, but not when the client's node
//!   itself dies (the will dies with it; the retained status keeps its last value);
//! - retained messages and persistent sessions are replicated to every node and survive a
//!   node's death while a majority of nodes is up; with no majority, new connections are
//!   refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{Process, free_port};

/// Ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct NatsPorts {
    /// NATS protocol clients.
    pub client: u16,
    /// Routes between the nodes.
    pub cluster: u16,
    /// MQTT listener.
    pub mqtt: u16,
    /// HTTP monitoring (`/varz`, `/connz`, `/jsz`).
    pub monitor: u16,
}

struct Node {
    name: String,
    ports: NatsPorts,
    config: PathBuf,
    process: Option<Process>,
    starts: usize,
}

/// A running NATS cluster. Dropping it kills every node and deletes the JetStream stores.
pub struct NatsCluster {
    nodes: Vec<Node>,
    log_dir: PathBuf,
    store: PathBuf,
}

/// How long a cold cluster may take to accept MQTT on every node.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl NatsCluster {
    /// Starts `n` nodes (named `n1`…`nN`) on free loopback ports, logging to
    /// `<log_dir>/nats-nK.log`, and waits until each accepts MQTT connections.
    pub async fn start(n: usize, log_dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "a cluster needs at least one node");
        let binary = nats_server()?;
        std::fs::create_dir_all(log_dir)?;
        let store = std::env::temp_dir().join(format!(
            "ferrocam-nats-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&store)?;
        let ports: Vec<NatsPorts> = (0..n)
            .map(|_| NatsPorts {
                client: free_port(),
                cluster: free_port(),
                mqtt: free_port(),
                monitor: free_port(),
            })
            .collect();
        let routes = ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{}", p.cluster))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, ports) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = log_dir.join(format!("nats-{name}.conf"));
            std::fs::write(&config, node_config(&name, ports, &routes, &store, n))?;
            nodes.push(Node {
                name,
                ports: *ports,
                config,
                process: None,
                starts: 0,
            });
        }
        let mut cluster = Self {
            nodes,
            log_dir: log_dir.to_owned(),
            store,
        };
        // All at once: a node alone cannot elect a JetStream leader, so starting them one by
        // one and waiting for each would never finish.
        for i in 0..n {
            cluster.spawn(i, &binary)?;
        }
        let started = Instant::now();
        for i in 0..n {
            cluster.wait_mqtt(i, START_TIMEOUT).await?;
        }
        eprintln!(
            "nats: {n} nodes accept MQTT {:?} after start",
            started.elapsed()
        );
        Ok(cluster)
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: [`Self::start`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The ports of node `i` (0-based).
    pub fn ports(&self, i: usize) -> NatsPorts {
        self.nodes[i].ports
    }

    /// The MQTT port of node `i` (0-based).
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].ports.mqtt
    }

    /// `mqtt://127.0.0.1:<port>` of node `i` (0-based).
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[i].ports.mqtt)
    }

    /// Every node's MQTT URL, starting with node `first` and wrapping around: the failover list
    /// for a client whose home is node `first`, comma-separated as `--broker` takes it.
    pub fn broker_list(&self, first: usize) -> String {
        (0..self.nodes.len())
            .map(|k| self.mqtt_url((first + k) % self.nodes.len()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` with SIGKILL: its clients' connections drop without a goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            process.kill();
        }
    }

    /// Starts node `i` again on the same ports and store; returns once it accepts MQTT.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[i].process.is_none(),
            "node {} is running",
            self.nodes[i].name
        );
        self.spawn(i, &nats_server()?)?;
        let started = Instant::now();
        self.wait_mqtt(i, START_TIMEOUT).await?;
        eprintln!(
            "nats: node {} accepts MQTT {:?} after restart",
            self.nodes[i].name,
            started.elapsed()
        );
        Ok(())
    }

    /// Whether node `i`'s process is alive.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .process
            .as_mut()
            .is_some_and(Process::is_running)
    }

    /// The MQTT client ids connected to node `i` right now (from its `/connz` monitoring
    /// endpoint).
    pub fn mqtt_clients(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let url = format!(
            "http://127.0.0.1:{}/connz?limit=4096",
            self.nodes[i].ports.monitor
        );
        let body: serde_json::Value = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .read_json()
            .context("connz json")?;
        Ok(body["connections"]
            .as_array()
            .map(|conns| {
                conns
                    .iter()
                    .filter_map(|c| c["mqtt_client"].as_str())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The node (0-based) MQTT client `client_id` is connected to, if any running node has it.
    pub fn node_of(&self, client_id: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].process.is_some()
                && self
                    .mqtt_clients(i)
                    .is_ok_and(|ids| ids.iter().any(|id| id == client_id))
        })
    }

    /// Waits until MQTT client `client_id` is connected to node `i`.
    pub async fn wait_client_on(
        &self,
        client_id: &str,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::eventually(
            &format!("MQTT client {client_id} on node {}", self.nodes[i].name),
            timeout,
            || async move {
                Ok(self
                    .mqtt_clients(i)?
                    .iter()
                    .any(|c| c == client_id)
                    .then_some(()))
            },
        )
        .await
    }

    /// The last `bytes` of node `i`'s current log.
    pub fn log_tail(&self, i: usize, bytes: u64) -> String {
        self.nodes[i]
            .process
            .as_ref()
            .map(|p| p.log_tail(bytes))
            .unwrap_or_default()
    }

    fn spawn(&mut self, i: usize, binary: &Path) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.starts += 1;
        // A restarted node logs to a new file, so the first run's log survives for diagnosis.
        let name = match node.starts {
            1 => format!("nats-{}", node.name),
            k => format!("nats-{}-{k}", node.name),
        };
        let mut cmd = Command::new(binary);
        cmd.arg("-c").arg(&node.config);
        node.process = Some(Process::spawn(&name, cmd, &self.log_dir)?);
        Ok(())
    }

    /// Whether node `i`'s monitoring says JetStream is usable: `/healthz` is OK (a restarted
    /// node has caught up with the cluster) and `/jsz` names a meta leader (on a cold start
    /// `/healthz` is OK before the election).
    fn jetstream_ready(&self, i: usize) -> bool {
        let base = format!("http://127.0.0.1:{}", self.nodes[i].ports.monitor);
        let healthy = ureq::get(&format!("{base}/healthz")).call().is_ok();
        let led = self.nodes.len() == 1
            || ureq::get(&format!("{base}/jsz"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
                .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned))
                .is_some_and(|leader| !leader.is_empty());
        healthy && led
    }

    /// Waits until node `i` answers an MQTT CONNECT with return code 0. A CONNECT sent before
    /// JetStream is usable may be held for the server's internal request timeout (4 s) and
    /// then refused, so the monitoring endpoints are asked first and each CONNECT gets 6 s.
    async fn wait_mqtt(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let port = self.nodes[i].ports.mqtt;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut attempt = 0;
        while Instant::now() < deadline {
            anyhow::ensure!(
                self.is_running(i),
                "nats node {} exited at start:\n{}",
                self.nodes[i].name,
                self.log_tail(i, 3000)
            );
            if !self.jetstream_ready(i) {
                last = "JetStream not ready (monitoring)".to_owned();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            attempt += 1;
            match mqtt_connack(
                port,
                &format!("ferrocam-probe-{port}-{attempt}"),
                Duration::from_secs(6),
            )
            .await
            {
                Ok(0) => return Ok(()),
                Ok(rc) => last = format!("CONNACK return code {rc}"),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "nats node {} did not accept MQTT within {timeout:?} (last: {last}):\n{}",
            self.nodes[i].name,
            self.log_tail(i, 3000)
        )
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // SIGKILL: a terminating node first tries to hand over its JetStream leaderships, which
        // is wasted time when every node goes.
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                process.kill();
            }
        }
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn node_config(name: &str, ports: &NatsPorts, routes: &str, store: &Path, n: usize) -> String {
    let store_dir = store.join(name);
    // MQTT's streams are replicated to every node up to 3, so a node's death loses nothing.
    let replicas = n.min(3);
    // A lone node runs JetStream standalone; a cluster block would make it wait for peers.
    let cluster_block = if n == 1 {
        String::new()
    } else {
        format!(
            "cluster {{\n  name: ferrocam-test\n  listen: 127.0.0.1:{}\n  routes: [ {routes} ]\n}}\n",
            ports.cluster
        )
    };
    format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:{client}\n\
         http: 127.0.0.1:{monitor}\n\
         jetstream {{\n  store_dir: \"{store_dir}\"\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}}\n\
         {cluster_block}\
         mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: {replicas}\n}}\n",
        client = ports.client,
        monitor = ports.monitor,
        mqtt = ports.mqtt,
        store_dir = store_dir.display(),
    )
}

fn nats_server() -> anyhow::Result<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("nats-server not found: run scripts/setup-system.sh test")
}

/// Sends an MQTT 3.1.1 CONNECT (clean session) to `127.0.0.1:port` and returns the CONNACK's
/// return code (0 = accepted), disconnecting cleanly afterwards.
pub async fn mqtt_connack(port: u16, client_id: &str, timeout: Duration) -> anyhow::Result<u8> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .context("connecting")?;
        let id = client_id.as_bytes();
        anyhow::ensure!(id.len() < 100, "client id too long for this probe");
        // Variable header: protocol name "MQTT", level 4, flags: clean session, keep-alive 30 s.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        stream.write_all(&packet).await.context("sending CONNECT")?;
        let mut connack = [0u8; 4];
        stream
            .read_exact(&mut connack)
            .await
            .context("the connection closed before CONNACK")?;
        anyhow::ensure!(
            connack[..2] == [0x20, 0x02],
            "not a CONNACK: {connack:02x?}"
        );
        if connack[3] == 0 {
            let _ = stream.write_all(&[0xe0, 0x00]).await;
        }
        Ok(connack[3])
    })
    .await
    .map_err(|_| anyhow::anyhow!("no CONNACK within {timeout:?}"))?
}
