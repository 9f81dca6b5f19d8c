//! The third-party WebRTC peers the benchmark measures, started and ready to serve: Janus fed
//! by `stamp-source`, and the aiortc server in its own venv.
//!
//! Everything peer-specific (configuration templates, ports, page URLs, the load generator's
//! arguments) lives here, so the measurements in `bench-peers.rs` treat every peer alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::janus::{Janus, urlencode, wait_http};
use ferrocam_tests::{Process, free_port};

/// The venv with aiortc, made (or brought up to date with `requirements.txt`) on first use.
pub fn python_venv(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/bench/venv");
    let python = venv.join("bin/python");
    let requirements = root.join("bench/peers/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)?;
    let marker = venv.join("ferrocam-requirements.txt");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("bench-peers: making {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv (install python3-venv: scripts/setup-system.sh bench)")?;
        anyhow::ensure!(status.success(), "python3 -m venv failed");
    }
    eprintln!("bench-peers: pip install -r {}", requirements.display());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .context("pip install")?;
    anyhow::ensure!(status.success(), "pip install -r requirements.txt failed");
    std::fs::write(&marker, wanted)?;
    Ok(python)
}

/// A running peer: its processes and where a browser and the load generator reach it.
pub struct Peer {
    pub name: &'static str,
    /// The process whose CPU and RSS are the peer's cost.
    pub server: Process,
    /// The RTP source feeding it, if separate (Janus).
    pub source: Option<Process>,
    /// Page path and query under the static server.
    pub page: String,
    /// Arguments for `receivers.py`.
    pub receiver_args: Vec<String>,
}

pub async fn start_janus(logs: &Path) -> anyhow::Result<Peer> {
    let janus = Janus::start(logs, None, 2000).await?;
    let page = janus.page();
    let api = janus.api.clone();
    Ok(Peer {
        name: "janus",
        server: janus.server,
        source: Some(janus.source),
        page,
        receiver_args: vec!["--peer".into(), "janus".into(), "--url".into(), api],
    })
}

pub async fn start_aiortc(root: &Path, logs: &Path, python: &Path) -> anyhow::Result<Peer> {
    let port = free_port();
    let mut cmd = Command::new(python);
    cmd.arg(root.join("bench/peers/aiortc_server.py")).args([
        "--port",
        &port.to_string(),
        "--bitrate-kbps",
        "2000",
    ]);
    let server = Process::spawn("aiortc", cmd, logs)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(
        "the aiortc server",
        &format!("{base}/health"),
        Duration::from_secs(30),
    )
    .await?;
    Ok(Peer {
        name: "aiortc",
        server,
        source: None,
        page: format!("/bench/peers/aiortc.html?server={}", urlencode(&base)),
        receiver_args: vec!["--peer".into(), "aiortc".into(), "--url".into(), base],
    })
}
