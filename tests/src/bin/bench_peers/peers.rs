//! The third-party WebRTC peers the benchmark measures, started and ready to serve: Janus fed
//! by `stamp-source`, and the aiortc server in its own venv.
//!
//! Everything peer-specific (configuration templates, ports, page URLs, the load generator's
//! arguments) lives here, so the measurements in `bench-peers.rs` treat every peer alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Process, free_port};

/// Blocking HTTP GET, for readiness checks.
fn http_ok(url: &str) -> bool {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    agent.get(url).call().is_ok()
}

/// Polls `url` until a GET succeeds (used for every server the benchmark starts); `what` names
/// it in the timeout error.
pub async fn wait_http(what: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = url.to_owned();
    ferrocam_tests::eventually(what, timeout, || {
        let url = url.clone();
        async move {
            Ok(tokio::task::spawn_blocking(move || http_ok(&url))
                .await?
                .then_some(()))
        }
    })
    .await
}

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

fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("FERROCAM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: cargo build --release -p ferrocam-tests --bins (make bench-peers does)",
        path.display()
    );
    Ok(path)
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

pub async fn start_janus(root: &Path, logs: &Path) -> anyhow::Result<Peer> {
    let janus = ["/usr/bin/janus", "/usr/local/bin/janus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("janus not installed: run scripts/setup-system.sh bench")?;
    let conf = root.join("target/bench/janus/conf");
    std::fs::create_dir_all(&conf)?;
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
            .replace("@HTTP_PORT@", &http_port.to_string())
            .replace("@RTP_PORT@", &rtp_port.to_string());
        std::fs::write(conf.join(name), text)?;
    }
    let mut cmd = Command::new(janus);
    cmd.arg("-F")
        .arg(&conf)
        .arg("-L")
        .arg(logs.join("janus-internal.log"))
        .args(["-N", "-o"]);
    let server = Process::spawn("janus", cmd, logs)?;
    let base = format!("http://127.0.0.1:{http_port}/janus");
    wait_http(
        "janus's REST API",
        &format!("{base}/info"),
        Duration::from_secs(15),
    )
    .await?;

    let mut src = Command::new(release_bin("stamp-source")?);
    src.args(["--port", &rtp_port.to_string(), "--bitrate-kbps", "2000"]);
    let source = Process::spawn("stamp-source", src, logs)?;
    Ok(Peer {
        name: "janus",
        server,
        source: Some(source),
        page: format!(
            "/bench/peers/janus.html?janus={}&mountpoint=1",
            urlencode(&base)
        ),
        receiver_args: vec!["--peer".into(), "janus".into(), "--url".into(), base],
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
