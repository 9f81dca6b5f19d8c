//! Benchmark: three senders behind the same narrow uplink, watched by the same headless
//! Chromium and judged by the same code (`ferrocam_tests::link_steps`, which is also issue
//! 15's test `narrow_link`).
//!
//! The sender sits in a network namespace whose uplink is shaped with `tc tbf` (150 ms queue)
//! through 3000 → 1000 → 500 → 3000 kbit/s, 20 s each. The viewer is on the host.
//! - **ferrocam**: the device (test pattern with the glass-to-glass stamp, x264, a 2800 kbit/s
//!   ceiling) and the gateway's page, as `narrow_link` runs them.
//! - **ferrocam-buffered**: the same with `--zero-playout-delay off`, so the viewer's jitter
//!   buffer may grow (our page still asks for the smallest): what zero playout delay costs in
//!   freezes and saves in latency.
//! - **chromium**: libwebrtc's own adaptation, the anchor. Chromium inside the namespace
//!   paints the same picture and stamp into a canvas at 720p30 and sends it as H.264 with
//!   the same 2800 kbit/s ceiling (`bench/network/sender.html`); a Chromium page on the host
//!   receives it (`bench/network/viewer.html`). This harness carries the SDP between them.
//! - **janus**: a relay that does not adapt: Janus's streaming plugin in the namespace fed
//!   2000 kbit/s by `stamp-source` (the device's picture and x264 settings).
//!
//! For each step: seconds until the received rate is below the link, frozen seconds after
//! the first 3 s, frames per second, mean received rate, decoded width, the decoder's mean QP,
//! glass to glass p50/p95 and the receiver's jitter-buffer delay. Prints Markdown and writes `target/bench/network.json` (with the rate of every
//! second, for `scripts/plot-bench.py`).
//!
//! `make bench-network` (a release build; needs root for the namespace, and
//! `scripts/setup-system.sh bench` for Janus). `BENCH_NETWORK=ferrocam,chromium` runs a subset.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::janus::{Janus, wait_http};
use ferrocam_tests::link_steps::{self, StepReport};
use ferrocam_tests::netns::NetNs;
use ferrocam_tests::playback::{wait_connected, wait_decoded};
use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Browser, Process, Stack, StackOptions, eventually, free_port};
use serde_json::json;

const LINKS: [u32; 4] = [3000, 1000, 500, 3000];
const STEP: Duration = Duration::from_secs(20);
/// Every sender's ceiling: above 70 % of the widest step, as in `narrow_link`.
const CEILING_KBPS: u32 = 2800;
/// What Janus's source sends whatever the link: the rate the other benchmarks feed it.
const JANUS_SOURCE_KBPS: u32 = 2000;
/// Chromium hides host addresses behind mDNS names unless told not to, and nothing resolves
/// them across the namespace's link.
const NO_MDNS: &str = "--disable-features=WebRtcHideLocalIpsWithMdns";

async fn steps(viewer: &Browser, ns: &NetNs) -> anyhow::Result<Vec<StepReport>> {
    link_steps::run(viewer, &LINKS, STEP, |kbps| ns.shape_uplink(kbps)).await
}

/// ferrocam's device with `extra` arguments; its logs go to `target/e2e-logs/<stack>`.
async fn ferrocam(ns: &NetNs, stack: &str, extra: &[&str]) -> anyhow::Result<Vec<StepReport>> {
    let ceiling = CEILING_KBPS.to_string();
    let mut args = vec![
        "--audio",
        "off",
        "--latency-stamp",
        "--bitrate-kbps",
        &ceiling,
    ];
    args.extend_from_slice(extra);
    let stack = Stack::start(
        StackOptions::new(stack)
            .device_in_netns(&ns.name, &ns.ns_ip, &ns.host_ip)
            .device_args(&args),
    )
    .await?;
    let viewer = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&viewer, 0).await?;
    viewer.click_device(&stack.device_id).await?;
    // Every sender's first step starts with the picture playing.
    wait_connected(&viewer).await?;
    wait_decoded(&viewer, 1.0).await?;
    let reports = steps(&viewer, ns).await?;
    viewer.close().await?;
    Ok(reports)
}

async fn chromium(ns: &NetNs, pages: &str, logs: &Path) -> anyhow::Result<Vec<StepReport>> {
    let (sender_logs, viewer_logs) = (logs.join("sender"), logs.join("viewer"));
    std::fs::create_dir_all(&sender_logs)?;
    std::fs::create_dir_all(&viewer_logs)?;
    let switches = [NO_MDNS.to_owned()];
    let sender = Browser::start_in_with(ns, &sender_logs, &switches).await?;
    let viewer = Browser::start_with(&viewer_logs, &switches).await?;
    sender
        .client
        .goto(&format!("{pages}/bench/network/sender.html"))
        .await?;
    viewer
        .client
        .goto(&format!("{pages}/bench/network/viewer.html"))
        .await?;
    let limit = Duration::from_secs(20);
    let offer = sender
        .job(
            "the sender's offer",
            limit,
            &format!("return await window.sender.offer({CEILING_KBPS});"),
        )
        .await?;
    let answer = viewer
        .job(
            "the viewer's answer",
            limit,
            &format!("return await window.bench.answer({offer});"),
        )
        .await?;
    sender
        .job(
            "the sender taking the answer",
            limit,
            &format!("await window.sender.accept({answer});"),
        )
        .await?;
    // Every sender's first step starts with the picture playing.
    wait_connected(&viewer).await?;
    wait_decoded(&viewer, 1.0).await?;
    let reports = steps(&viewer, ns).await?;
    viewer.close().await?;
    sender.close().await?;
    Ok(reports)
}

async fn janus(ns: &NetNs, pages: &str, logs: &Path) -> anyhow::Result<Vec<StepReport>> {
    let janus = Janus::start(logs, Some(ns), JANUS_SOURCE_KBPS).await?;
    let viewer = Browser::start(logs).await?;
    viewer
        .client
        .goto(&format!("{pages}{}", janus.page()))
        .await?;
    // Janus needs the source's first keyframe before a viewer can start: retry the watch
    // request until it is accepted.
    eventually(
        "Janus to start the stream",
        Duration::from_secs(30),
        || async {
            let started = viewer
                .job(
                    "a watch request",
                    Duration::from_secs(10),
                    "await window.bench.start(); return true;",
                )
                .await;
            Ok(started.ok())
        },
    )
    .await?;
    // Every sender's first step starts with the picture playing.
    wait_connected(&viewer).await?;
    wait_decoded(&viewer, 1.0).await?;
    let reports = steps(&viewer, ns).await?;
    viewer.close().await?;
    drop(janus);
    Ok(reports)
}

fn cell(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".to_owned()
    }
}

fn markdown(results: &[(String, Vec<StepReport>)]) -> String {
    let mut out = String::from(
        "| sender | link kbit/s | below the link after | frozen after 3 s | fps | received kbit/s | width | QP | glass to glass p50 / p95 | of which jitter buffer |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, steps) in results {
        for step in steps {
            let below = step
                .below_link_after_s
                .map_or("never".to_owned(), |s| format!("{s} s"));
            let width = step.width_per_second.last().copied().unwrap_or(0.0);
            out.push_str(&format!(
                "| {name} | {} | {below} | {} s | {} | {} | {width:.0} | {} | {} / {} ms | {} ms |\n",
                step.link_kbps,
                cell(step.frozen_s, 2),
                cell(step.fps, 1),
                cell(step.steady_kbps, 0),
                cell(step.qp, 1),
                cell(step.g2g_p50_ms, 0),
                cell(step.g2g_p95_ms, 0),
                cell(step.jitter_buffer_ms, 0),
            ));
        }
    }
    out
}

/// The repository's pages on the host's end of the link, where both the host and the
/// namespace reach them.
async fn serve_pages(root: &Path, ns: &NetNs, logs: &Path) -> anyhow::Result<(Process, String)> {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", &ns.host_ip])
        .arg(port.to_string())
        .arg("--directory")
        .arg(root);
    let server = Process::spawn("static", cmd, logs)?;
    let base = format!("http://{}:{port}", ns.host_ip);
    wait_http(
        "the static server",
        &format!("{base}/gateway/web/meter.js"),
        Duration::from_secs(10),
    )
    .await?;
    Ok((server, base))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    let logs = root.join("target/bench/network-logs");
    std::fs::create_dir_all(&logs)?;
    let which = std::env::var("BENCH_NETWORK")
        .unwrap_or_else(|_| "ferrocam,ferrocam-buffered,chromium,janus".into());
    let ns = NetNs::create((std::process::id() % 10_000) as u16)?;
    let (_pages, pages) = serve_pages(&root, &ns, &logs).await?;

    let mut results = Vec::new();
    for name in which.split(',').map(str::trim) {
        let own_logs = logs.join(name);
        std::fs::create_dir_all(&own_logs)?;
        ns.shape_uplink(LINKS[0])?;
        eprintln!("bench-network: {name}");
        let steps = match name {
            "ferrocam" => ferrocam(&ns, "bench_network_ferrocam", &[]).await,
            "ferrocam-buffered" => {
                let off = ["--zero-playout-delay", "off"];
                ferrocam(&ns, "bench_network_ferrocam_buffered", &off).await
            }
            "chromium" => chromium(&ns, &pages, &own_logs).await,
            "janus" => janus(&ns, &pages, &own_logs).await,
            other => anyhow::bail!(
                "unknown sender {other} (ferrocam, ferrocam-buffered, chromium, janus)"
            ),
        }
        .with_context(|| format!("{name} (logs in {})", own_logs.display()))?;
        results.push((name.to_owned(), steps));
    }

    println!("{}", markdown(&results));
    let json = json!({
        "links_kbps": LINKS,
        "step_s": STEP.as_secs(),
        "ceiling_kbps": CEILING_KBPS,
        "janus_source_kbps": JANUS_SOURCE_KBPS,
        "senders": results
            .iter()
            .map(|(name, steps)| json!({ "name": name, "steps": steps }))
            .collect::<Vec<_>>(),
    });
    let out = root.join("target/bench/network.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
