//! Benchmark: ferrocam's stamped source through real third-party WebRTC peers, measured the way
//! ferrocam is measured, so the numbers sit side by side.
//!
//! Peers:
//! - **janus**: Debian's `janus` (streaming plugin, one RTP mountpoint with keyframe buffering)
//!   fed RTP by `stamp-source` (the device's stamped 720p30 pattern through the device's x264
//!   settings at 2 Mbit/s). Configuration: `bench/peers/janus/*.jcfg`, templates filled in at
//!   run time into `target/bench/janus/conf/`.
//! - **aiortc**: `bench/peers/aiortc_server.py` in a venv this harness makes
//!   (`target/bench/venv`, pinned by `bench/peers/requirements.txt`): the same stamp on colour
//!   bars, encoded per viewer by aiortc's libx264 encoder held at 2 Mbit/s.
//!
//! For each: (a) glass-to-glass from ferrocam's meter (`gateway/web/meter.js`) in headless
//! Chromium, (b) time to first frame over fresh page loads with the step breakdown, (c) the
//! peer process's CPU and RSS at 1, 4 and 8 receive-only viewers (`bench/peers/receivers.py`:
//! aiortc clients that count packets without decoding), read from /proc over 10 s after 3 s of
//! settling. Prints Markdown and writes `target/bench/peers.json`.
//!
//! Run with `make bench-peers` (needs `scripts/setup-system.sh bench`: janus, python3-venv,
//! chromium). `BENCH_PEERS=janus` or `=aiortc` runs one; `BENCH_TTFF_RUNS`, `BENCH_G2G_SAMPLES`
//! change the sample counts.

#[path = "bench_peers/cost.rs"]
mod cost;
#[path = "bench_peers/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Browser, Process, free_port};
use serde_json::{Value, json};

use cost::cpu_per_viewer;
use ferrocam_tests::janus::wait_http;
use peers::{Peer, python_venv, start_aiortc, start_janus};

/// Meter samples dropped at the start of the glass-to-glass run (the first second: jitter
/// buffer and decoder warming up).
const G2G_SKIP: usize = 30;
const STEPS: [&str; 9] = [
    "request_sent",
    "gathered",
    "offer_sent",
    "answer",
    "start_sent",
    "ice_connected",
    "dtls_connected",
    "first_packet",
    "first_frame",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank percentile, as `FerrocamMeter.percentile` computes it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).floor() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Loads the page fresh and starts watching; returns once signaling is under way.
async fn start_session(browser: &Browser, url: &str) -> anyhow::Result<()> {
    browser.client.goto(url).await?;
    let result = browser
        .js_async("window.bench.start().then(() => done(null), (e) => done(String(e)));")
        .await?;
    anyhow::ensure!(result.is_null(), "bench.start() failed: {result}");
    Ok(())
}

async fn stop_session(browser: &Browser) -> anyhow::Result<()> {
    browser
        .js_async("window.bench.stop().then(() => done(null), (e) => done(String(e)));")
        .await?;
    Ok(())
}

/// (a) Glass-to-glass: `n` meter samples from one viewer, after the first second's.
async fn glass_to_glass(browser: &Browser, url: &str, n: usize) -> anyhow::Result<Value> {
    start_session(browser, url).await?;
    let want = n + G2G_SKIP;
    let timeout = Duration::from_secs((want / 20 + 30) as u64);
    let count = ferrocam_tests::eventually("meter samples", timeout, || async {
        let v = browser
            .js("return [window.bench.meter ? window.bench.meter.samples.length : 0, window.bench.error];")
            .await?;
        if let Some(err) = v[1].as_str() {
            anyhow::bail!("the page reports: {err}");
        }
        let count = v[0].as_u64().unwrap_or(0) as usize;
        Ok((count >= want).then_some(count))
    })
    .await?;
    let v = browser
        .js(&format!(
            "return {{ samples: window.bench.meter.samples.slice({G2G_SKIP}), frames: window.bench.meter.frames, misses: window.bench.meter.misses }};"
        ))
        .await?;
    stop_session(browser).await?;
    let samples: Vec<f64> = v["samples"]
        .as_array()
        .context("no samples")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    eprintln!(
        "  g2g: {} samples ({count} read, {} frames, {} unreadable)",
        samples.len(),
        v["frames"],
        v["misses"]
    );
    let s = sorted(samples.clone());
    Ok(json!({
        "p50": percentile(&s, 50.0),
        "p95": percentile(&s, 95.0),
        "p99": percentile(&s, 99.0),
        "n": s.len(),
        "samples": samples,
    }))
}

/// (b) Time to first frame: `runs` fresh page loads (one more first, not counted: Chromium's
/// first WebRTC session in a profile pays one-off start-up costs).
async fn time_to_first_frame(browser: &Browser, url: &str, runs: usize) -> anyhow::Result<Value> {
    let mut firsts = Vec::new();
    let mut steps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut setups = Vec::new();
    for run in 0..=runs {
        start_session(browser, url).await?;
        let timing =
            ferrocam_tests::eventually("the first frame", Duration::from_secs(15), || async {
                let v = browser
                    .js("return [window.bench.timing, window.bench.error, window.bench.setup_ms];")
                    .await?;
                if let Some(err) = v[1].as_str() {
                    anyhow::bail!("the page reports: {err}");
                }
                Ok(v[0].get("first_frame").is_some().then_some(v))
            })
            .await?;
        stop_session(browser).await?;
        if run == 0 {
            continue;
        }
        let t = &timing[0];
        firsts.push(t["first_frame"].as_f64().unwrap_or(f64::NAN));
        for step in STEPS {
            if let Some(ms) = t.get(step).and_then(Value::as_f64) {
                steps.entry(step).or_default().push(ms);
            }
        }
        if let Some(ms) = timing[2].as_f64() {
            setups.push(ms);
        }
    }
    let s = sorted(firsts);
    let mut step_p50 = serde_json::Map::new();
    for step in STEPS {
        if let Some(v) = steps.remove(step) {
            step_p50.insert(step.to_owned(), json!(percentile(&sorted(v), 50.0)));
        }
    }
    let mut out = json!({
        "p50": percentile(&s, 50.0),
        "p95": percentile(&s, 95.0),
        "n": s.len(),
        "steps": step_p50,
    });
    if !setups.is_empty() {
        // Janus: session create + plugin attach, before the clock starts (ferrocam's page has
        // its signaling WebSocket open before the click too).
        out["session_setup_ms_p50"] = json!(percentile(&sorted(setups), 50.0));
    }
    Ok(out)
}

async fn bench_peer(
    peer: &Peer,
    browser: &Browser,
    static_base: &str,
    python: &Path,
    logs: &Path,
) -> anyhow::Result<Value> {
    let url = format!("{static_base}{}", peer.page);
    let g2g_n = env_usize("BENCH_G2G_SAMPLES", 600);
    let ttff_runs = env_usize("BENCH_TTFF_RUNS", 20);
    eprintln!("{}: glass-to-glass ({g2g_n} samples)", peer.name);
    let g2g = glass_to_glass(browser, &url, g2g_n).await?;
    eprintln!("{}: time to first frame ({ttff_runs} sessions)", peer.name);
    let ttff = time_to_first_frame(browser, &url, ttff_runs).await?;
    // The browser idles on a blank page while the lightweight viewers run.
    browser.client.goto("about:blank").await?;
    eprintln!("{}: CPU per viewer", peer.name);
    let cpu = cpu_per_viewer(peer, python, logs).await?;
    Ok(json!({ "peer": peer.name, "g2g_ms": g2g, "ttff_ms": ttff, "cpu": cpu }))
}

fn markdown(results: &[Value]) -> String {
    let f = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.0}"));
    let f1 = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.1}"));
    let mut out = String::new();
    out.push_str(
        "| peer | g2g p50 / p95 / p99 (ms, n) | first frame p50 / p95 (ms, n) | answer | ICE connected | DTLS connected | first packet |\n|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let g = &r["g2g_ms"];
        let t = &r["ttff_ms"];
        let s = &t["steps"];
        out.push_str(&format!(
            "| {} | {} / {} / {} ({}) | {} / {} ({}) | {} | {} | {} | {} |\n",
            r["peer"].as_str().unwrap_or("?"),
            f(&g["p50"]),
            f(&g["p95"]),
            f(&g["p99"]),
            g["n"],
            f(&t["p50"]),
            f(&t["p95"]),
            t["n"],
            f(&s["answer"]),
            f(&s["ice_connected"]),
            f(&s["dtls_connected"]),
            f(&s["first_packet"]),
        ));
    }
    out.push_str("\n| peer | viewers | peer CPU (% of one core) | peer RSS (MiB) | RTP packets/s received (all viewers) | video kbit/s per viewer | RTP source CPU (%) |\n|---|---|---|---|---|---|---|\n");
    for r in results {
        for row in r["cpu"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r["peer"].as_str().unwrap_or("?"),
                row["viewers"],
                f1(&row["cpu_pct"]),
                f1(&row["rss_mib"]),
                f(&row["packets_per_s"]),
                f(&row["payload_kbps_per_viewer"]),
                f1(&row["source_cpu_pct"]),
            ));
        }
        let rows = r["cpu"].as_array().cloned().unwrap_or_default();
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let n = (last["viewers"].as_f64().unwrap_or(0.0)
                - first["viewers"].as_f64().unwrap_or(0.0))
            .max(1.0);
            out.push_str(&format!(
                "\n{}: each viewer past the first **{:.2} % of a core** and **{:.2} MiB RSS**.\n\n",
                r["peer"].as_str().unwrap_or("?"),
                (last["cpu_pct"].as_f64().unwrap_or(0.0)
                    - first["cpu_pct"].as_f64().unwrap_or(0.0))
                    / n,
                (last["rss_mib"].as_f64().unwrap_or(0.0)
                    - first["rss_mib"].as_f64().unwrap_or(0.0))
                    / n,
            ));
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    let logs = root.join("target/bench/peers-logs");
    std::fs::create_dir_all(&logs)?;
    let which = std::env::var("BENCH_PEERS").unwrap_or_else(|_| "janus,aiortc".into());
    let python = python_venv(&root)?;

    // The pages and meter.js from the repository, on loopback.
    let static_port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(static_port.to_string())
        .arg("--directory")
        .arg(&root);
    let _static = Process::spawn("static", cmd, &logs)?;
    let static_base = format!("http://127.0.0.1:{static_port}");
    wait_http(
        "the static server",
        &format!("{static_base}/gateway/web/meter.js"),
        Duration::from_secs(10),
    )
    .await?;
    let browser = Browser::start(&logs).await?;

    let mut results = Vec::new();
    for name in which.split(',').map(str::trim) {
        let peer_logs = logs.join(name);
        let peer = match name {
            "janus" => start_janus(&peer_logs).await?,
            "aiortc" => start_aiortc(&root, &peer_logs, &python).await?,
            other => anyhow::bail!("unknown peer {other} (janus, aiortc)"),
        };
        // Let the source's first keyframe reach the peer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let result = bench_peer(&peer, &browser, &static_base, &python, &peer_logs)
            .await
            .with_context(|| {
                format!(
                    "benchmarking {name} (logs in {}):\n{}",
                    peer_logs.display(),
                    peer.server.log_tail(3000)
                )
            })?;
        results.push(result);
    }
    browser.close().await?;

    let table = markdown(&results);
    println!("{table}");
    let out = root.join("target/bench/peers.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
