//! Benchmark: file transfer over the data channel, and what recording costs the device.
//!
//! Runs a gateway and a device from `FERROCAM_BIN_DIR` (release, via `make bench`): the test
//! pattern at 720p30 with its test tone, watched by headless Chromium through the page.
//!
//! - Throughput: the page uploads 50 MB to the device (`files.put`), then downloads it three
//!   times (`files.get`, the page's own code: files.js), in MB/s on loopback.
//! - Anchor, same run and same page: two RTCPeerConnections in the page, Chromium ↔ Chromium
//!   over loopback, move the same 50 MB in 64 KiB messages paced on `bufferedAmount` (as
//!   files.js paces its uploads), three times.
//! - Recording: the device's share of a core over 15 s with the viewer watching, then over 15 s
//!   while it also records (`record.start`), three times each, alternating.
//!
//! Prints Markdown and writes target/bench/files.json.

use std::time::{Duration, Instant};

use ferrocam_tests::files_page::{files_channel_open, upload_random};
use ferrocam_tests::process::{cpu_seconds, workspace_root};
use ferrocam_tests::{Browser, Stack, StackOptions};
use serde_json::{Value, json};

const SIZE: usize = 50 * 1024 * 1024;
const RUNS: usize = 3;
const CPU_SAMPLE: Duration = Duration::from_secs(15);

/// Moves `size` bytes from one connection to another in the page; resolves to milliseconds.
const ANCHOR: &str = r#"
  window.__anchor = async (size) => {
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const send = a.createDataChannel('bench');
    send.binaryType = 'arraybuffer';
    const arrived = new Promise((resolve) => {
      b.ondatachannel = (e) => {
        let got = 0;
        e.channel.binaryType = 'arraybuffer';
        e.channel.onmessage = (m) => { got += m.data.byteLength - 16; if (got >= size) resolve(); };
      };
    });
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    await new Promise((resolve) => { send.onopen = resolve; });
    const chunk = 64 * 1024 - 16;
    const message = new Uint8Array(64 * 1024);
    crypto.getRandomValues(message.subarray(0, 65536));
    send.bufferedAmountLowThreshold = 1 << 20;
    const started = performance.now();
    for (let sent = 0; sent < size; sent += chunk) {
      if (send.bufferedAmount > 4 << 20) {
        await new Promise((resolve) => send.addEventListener('bufferedamountlow', resolve, { once: true }));
      }
      send.send(message.subarray(0, 16 + Math.min(chunk, size - sent)));
    }
    await arrived;
    const ms = performance.now() - started;
    a.close(); b.close();
    return ms;
  };
"#;

/// Runs `script` (an async function body) in the page and waits for its value.
async fn run(browser: &Browser, name: &str, script: &str) -> anyhow::Result<Value> {
    browser.job(name, Duration::from_secs(300), script).await
}

/// The device's CPU, % of one core, over [`CPU_SAMPLE`].
async fn device_cpu(pid: u32) -> anyhow::Result<f64> {
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    tokio::time::sleep(CPU_SAMPLE).await;
    Ok((cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64() * 100.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mb_per_s(ms: f64) -> f64 {
    SIZE as f64 / (1024.0 * 1024.0) / (ms / 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let stack = Stack::start(StackOptions::new("bench_files").device_args(&[
        "--width", "1280", "--height", "720", "--fps", "30", "--audio", "test",
    ]))
    .await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.before_every_page(ANCHOR).await?;
    browser.client.refresh().await?;
    browser.click_device(&stack.device_id).await?;
    files_channel_open(&browser).await?;

    let upload = upload_random(&browser, "bench.bin", SIZE).await?;
    let file = upload["file"].as_str().unwrap_or_default().to_owned();
    let (mut down, mut anchor) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let got = run(
            &browser,
            "a download",
            &format!(
                "await FerrocamFiles.fetchWhole({{ id: '{file}', kind: 'upload' }});
                 return FerrocamFiles.state.lastDownload;"
            ),
        )
        .await?;
        anyhow::ensure!(
            got["verified"] == true && got["sha256"] == upload["sha256"],
            "{got}"
        );
        down.push(mb_per_s(got["ms"].as_f64().unwrap_or(f64::MAX)));
        let ms = run(
            &browser,
            "the anchor",
            &format!("return await window.__anchor({SIZE});"),
        )
        .await?;
        anchor.push(mb_per_s(ms.as_f64().unwrap_or(f64::MAX)));
    }
    let up = mb_per_s(upload["ms"].as_f64().unwrap_or(f64::MAX));

    let pid = stack.device.as_ref().expect("device running").pid();
    let (mut watching, mut recording) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        watching.push(device_cpu(pid).await?);
        let (code, body) = stack.control(json!({"cmd": "record.start"}))?;
        anyhow::ensure!(code == 200, "record.start: {code} {body}");
        recording.push(device_cpu(pid).await?);
        let (code, body) = stack.control(json!({"cmd": "record.stop"}))?;
        anyhow::ensure!(code == 200, "record.stop: {code} {body}");
    }
    let added: Vec<f64> = watching
        .iter()
        .zip(&recording)
        .map(|(w, r)| r - w)
        .collect();

    println!("| data channel, loopback, 50 MB | MB/s (runs) |");
    println!("|---|---|");
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| ferrocam device → Chromium (`files.get`) | {} |",
        list(&down)
    );
    println!("| Chromium → ferrocam device (`files.put`) | {up:.1} |");
    println!("| Chromium → Chromium (same page) | {} |", list(&anchor));
    println!();
    println!("| device CPU, % of a core (15 s each) | runs |");
    println!("|---|---|");
    println!("| one viewer watching | {} |", list(&watching));
    println!("| the same, recording too | {} |", list(&recording));
    println!("| recording adds | {} |", list(&added));
    std::fs::write(
        out.join("files.json"),
        serde_json::to_string_pretty(&json!({
            "download_mb_per_s": down,
            "upload_mb_per_s": up,
            "chromium_to_chromium_mb_per_s": anchor,
            "device_cpu_percent": { "watching": watching, "recording": recording },
            "recording_adds_percent_median": median(&mut added.clone()),
        }))?,
    )?;
    browser.close().await
}
