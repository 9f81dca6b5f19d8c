//! Janus's streaming plugin fed by `stamp-source`: the fixed-rate relay the benchmarks compare
//! against (`make bench-peers` on loopback, `make bench-network` behind a shaped link).
//!
//! Configuration comes from `bench/peers/janus/*.jcfg`, templates filled in at run time into
//! `target/bench/janus/conf/`. Janus relays whatever the source sends: it has no say over the
//! encoder's rate, which is the point of having it in the network benchmark.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::netns::NetNs;
use crate::process::workspace_root;
use crate::{Process, free_port};

/// A running Janus and the RTP source feeding its one mountpoint (id 1).
pub struct Janus {
    pub server: Process,
    pub source: Process,
    /// The REST API's base URL (`http://…/janus`).
    pub api: String,
}

/// A binary of the release build (`FERROCAM_BIN_DIR` overrides the folder).
pub fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("FERROCAM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: cargo build --release -p ferrocam-tests --bins (make bench does)",
        path.display()
    );
    Ok(path)
}

/// `program` as a command, run inside `netns` when there is one.
fn command_in(netns: Option<&NetNs>, program: &Path) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.name]).arg(program);
            cmd
        }
    }
}

impl Janus {
    /// Starts Janus and `stamp-source` at `source_kbps`, both inside `netns` when given (the
    /// REST API then listens on the namespace's address, reached over its link), else on
    /// loopback. Logs go to `logs`.
    pub async fn start(
        logs: &Path,
        netns: Option<&NetNs>,
        source_kbps: u32,
    ) -> anyhow::Result<Self> {
        let root = workspace_root();
        let binary = ["/usr/bin/janus", "/usr/local/bin/janus"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .context("janus not installed: run scripts/setup-system.sh bench")?;
        let conf = root.join("target/bench/janus/conf");
        std::fs::create_dir_all(&conf)?;
        let http_ip = netns.map_or("127.0.0.1", |ns| ns.ns_ip.as_str());
        let http_port = free_port();
        let rtp_port = free_port();
        for name in [
            "janus.jcfg",
            "janus.transport.http.jcfg",
            "janus.plugin.streaming.jcfg",
        ] {
            let template = std::fs::read_to_string(root.join("bench/peers/janus").join(name))?;
            let text = template
                .replace("@CONF_DIR@", &conf.display().to_string())
                .replace("@HTTP_IP@", http_ip)
                .replace("@HTTP_PORT@", &http_port.to_string())
                .replace("@RTP_PORT@", &rtp_port.to_string());
            std::fs::write(conf.join(name), text)?;
        }
        let mut cmd = command_in(netns, binary);
        cmd.arg("-F")
            .arg(&conf)
            .arg("-L")
            .arg(logs.join("janus-internal.log"))
            .args(["-N", "-o"]);
        let server = Process::spawn("janus", cmd, logs)?;
        let api = format!("http://{http_ip}:{http_port}/janus");
        wait_http(
            "janus's REST API",
            &format!("{api}/info"),
            Duration::from_secs(15),
        )
        .await?;

        let mut src = command_in(netns, &release_bin("stamp-source")?);
        src.args([
            "--port",
            &rtp_port.to_string(),
            "--bitrate-kbps",
            &source_kbps.to_string(),
        ]);
        let source = Process::spawn("stamp-source", src, logs)?;
        Ok(Self {
            server,
            source,
            api,
        })
    }

    /// The viewer page's path and query under a static server of the repository.
    pub fn page(&self) -> String {
        format!(
            "/bench/peers/janus.html?janus={}&mountpoint=1",
            urlencode(&self.api)
        )
    }
}

/// Blocking HTTP GET, for readiness checks.
fn http_ok(url: &str) -> bool {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    agent.get(url).call().is_ok()
}

/// Polls `url` until a GET succeeds; `what` names it in the timeout error.
pub async fn wait_http(what: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = url.to_owned();
    crate::eventually(what, timeout, || {
        let url = url.clone();
        async move {
            Ok(tokio::task::spawn_blocking(move || http_ok(&url))
                .await?
                .then_some(()))
        }
    })
    .await
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a URL inside a query).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
