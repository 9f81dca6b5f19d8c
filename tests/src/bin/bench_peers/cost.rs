//! (c) What a viewer costs a peer: the receive-only load generator (`bench/peers/receivers.py`)
//! driven over stdin/stdout, and the peer's CPU and RSS read from /proc at each viewer level.
//!
//! Apart from the browser measurements because it runs no browser: lightweight aiortc clients
//! that count packets without decoding.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrocam_tests::Process;
use ferrocam_tests::process::{cpu_seconds, rss_mib, workspace_root};
use serde_json::{Value, json};

use crate::peers::Peer;

const LEVELS: [usize; 3] = [1, 4, 8];
const SETTLE: Duration = Duration::from_secs(3);
const SAMPLE: Duration = Duration::from_secs(10);

/// The receive-only load generator (`bench/peers/receivers.py`), driven over stdin/stdout.
struct Receivers {
    child: Child,
    stdin: ChildStdin,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Receivers {
    fn spawn(python: &Path, args: &[String], logs: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(logs.join("receivers.log"))?;
        let mut child = Command::new(python)
            .arg(workspace_root().join("bench/peers/receivers.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting receivers.py")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = Some(BufReader::new(child.stdout.take().context("stdout")?));
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    async fn ask(&mut self, command: &str) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        // Blocking read, on a blocking thread; the reader moves there and back.
        let mut stdout = self
            .stdout
            .take()
            .context("receivers.py's stdout is gone")?;
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let n = stdout.read_line(&mut line);
            (stdout, n.map(|_| line))
        })
        .await?;
        self.stdout = Some(stdout);
        let line = line?;
        let v: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("receivers.py said {line:?}"))?;
        if let Some(err) = v.get("error") {
            anyhow::bail!("receivers.py: {err}");
        }
        Ok(v)
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (c) CPU and RSS of the peer's process (and of its RTP source) at each viewer level.
pub async fn cpu_per_viewer(peer: &Peer, python: &Path, logs: &Path) -> anyhow::Result<Vec<Value>> {
    let pid = peer.server.pid();
    let source_pid = peer.source.as_ref().map(Process::pid);
    let mut receivers = Receivers::spawn(python, &peer.receiver_args, logs)?;
    let mut rows = Vec::new();
    for level in LEVELS {
        receivers.ask(&format!("viewers {level}")).await?;
        tokio::time::sleep(SETTLE).await;
        let before = receivers.ask("packets").await?;
        let packets_before = before["packets"].as_u64().unwrap_or(0);
        let bytes_before = before["bytes"].as_u64().unwrap_or(0);
        let cpu_before = cpu_seconds(pid)?;
        let source_before = source_pid.map(cpu_seconds).transpose()?;
        let started = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(pid)? - cpu_before) / elapsed * 100.0;
        let source_cpu = match (source_pid, source_before) {
            (Some(p), Some(before)) => Some((cpu_seconds(p)? - before) / elapsed * 100.0),
            _ => None,
        };
        let reply = receivers.ask("packets").await?;
        let packets = reply["packets"].as_u64().unwrap_or(0) - packets_before;
        let bytes = reply["bytes"].as_u64().unwrap_or(0) - bytes_before;
        let kbps_per_viewer = bytes as f64 * 8.0 / 1000.0 / elapsed / level as f64;
        let rss = rss_mib(pid)?;
        eprintln!(
            "  {level} viewers: {cpu:.1} % CPU, {rss:.1} MiB RSS, {:.0} packets/s, \
             {kbps_per_viewer:.0} kbit/s each{}",
            packets as f64 / elapsed,
            source_cpu
                .map(|c| format!(" (source {c:.1} % CPU)"))
                .unwrap_or_default()
        );
        let mut row = json!({
            "viewers": level,
            "cpu_pct": cpu,
            "rss_mib": rss,
            "packets_per_s": packets as f64 / elapsed,
            "payload_kbps_per_viewer": kbps_per_viewer,
        });
        if let Some(c) = source_cpu {
            row["source_cpu_pct"] = json!(c);
        }
        rows.push(row);
    }
    Ok(rows)
}
