//! Benchmark: mouth-to-speaker latency of talkback, and what talking costs the device.
//!
//! Runs a gateway and a device from `FERROCAM_BIN_DIR` (release, via `make bench`): the test
//! pattern at 720p30 with its test tone, and the speaker writing to a file at the pace a
//! speaker plays (`--speaker file:…`). Chromium's fake microphone plays a file of clicks (a
//! 10 ms burst every 0.5 s).
//!
//! - Mouth: a WebAudio detector in the page finds each click on the very track the page sends (after
//!   the browser's echo cancellation and noise suppression), timed on the wall clock.
//! - Speaker: the clicks found in the device's speaker file, timed by the device's `speaker
//!   timing` log line (when the file's first sample plays).
//! - Anchor, same run and same clicks: the page also sends its microphone to a second peer
//!   connection in the same page (Chromium ↔ Chromium over loopback), and the same detector
//!   times the clicks on the received track: libwebrtc's own capture-to-playout path.
//! - CPU: the device's share of a core with one viewer watching and listening, then while that
//!   viewer talks.
//!
//! Prints Markdown and writes target/bench/talk.json.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrocam_tests::audio;
use ferrocam_tests::gateway_bench::percentiles;
use ferrocam_tests::process::{cpu_seconds, workspace_root};
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::json;

/// Clicks to time.
const CLICKS: usize = 60;
const CLICK_PERIOD: f64 = 0.5;
const CPU_SAMPLE: Duration = Duration::from_secs(15);

/// Installs `window.__onsets(track, list)`: a detector that pushes the wall-clock time
/// (Unix ms) of every click on `track` into `window[list]`.
const DETECTOR: &str = r#"
  window.__onsets = async (track, list) => {
    window[list] = [];
    const context = new AudioContext({ sampleRate: 48000 });
    // A ScriptProcessor rather than a worklet: the page's CSP allows no blob: modules. Each
    // 256-sample block arrives once complete, so a click at index i came (256 - i) samples
    // before the callback.
    const node = context.createScriptProcessor(256, 1, 1);
    let quiet = 0;
    node.onaudioprocess = (event) => {
      const now = performance.timeOrigin + performance.now();
      const samples = event.inputBuffer.getChannelData(0);
      for (let i = 0; i < samples.length; i++) {
        if (Math.abs(samples[i]) > 0.05) {
          if (quiet > context.sampleRate / 4) window[list].push(now - ((samples.length - i) * 1000) / context.sampleRate);
          quiet = 0;
        } else {
          quiet++;
        }
      }
    };
    const stream = new MediaStream([track]);
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // a ScriptProcessor runs only while connected
    // Remote tracks reach WebAudio only while a media element plays them.
    const sink = new Audio();
    sink.muted = true;
    sink.srcObject = stream;
    sink.play().catch(() => {});
    window[list + 'Nodes'] = [context, node, sink];
  };
"#;

/// Sends the page's microphone to a second connection in the same page, and times the clicks
/// that arrive there.
const LOOPBACK_ANCHOR: &str = r#"
  (async () => {
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const received = new Promise((resolve) => { b.ontrack = (e) => resolve(e.track); });
    a.addTrack(ferrocam.microphone);
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    await window.__onsets(await received, '__anchorClicks');
    window.__anchor = [a, b];
    done(null);
  })().catch((e) => done(String(e)));
"#;

/// Pairs each click sent with the first one heard after it (within a second), in ms.
fn delays(sent: &[f64], heard: &[f64]) -> Vec<f64> {
    sent.iter()
        .filter_map(|&at| {
            heard
                .iter()
                .find(|&&h| h >= at - 5.0 && h < at + 1000.0)
                .map(|h| h - at)
        })
        .collect()
}

/// When each click played on the device's speaker (Unix ms).
fn speaker_clicks(stack: &Stack, file: &Path) -> anyhow::Result<Vec<f64>> {
    let log = std::fs::read_to_string(stack.log_dir.join("device-1.log"))?;
    let (first_us, offset) =
        audio::speaker_timing(&log).ok_or_else(|| anyhow::anyhow!("no speaker timing logged"))?;
    let samples = audio::read_pcm(file, offset)?;
    let quiet = audio::RATE as usize / 4;
    Ok(audio::onsets(&samples, 0.05, quiet)
        .into_iter()
        .map(|i| first_us as f64 / 1000.0 + i as f64 * 1000.0 / f64::from(audio::RATE))
        .collect())
}

/// The device's CPU, % of one core, over [`CPU_SAMPLE`].
async fn device_cpu(pid: u32) -> anyhow::Result<f64> {
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    tokio::time::sleep(CPU_SAMPLE).await;
    Ok((cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64() * 100.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let speaker = out.join("talk-speaker.pcm");
    let _ = std::fs::remove_file(&speaker);
    let speaker_arg = format!("file:{}", speaker.display());
    let stack = Stack::start(StackOptions::new("bench_talk").device_args(&[
        "--speaker",
        &speaker_arg,
        "--audio",
        "test",
    ]))
    .await?;
    let clicks = stack.log_dir.join("clicks.wav");
    audio::write_wav(&clicks, &audio::clicks(CLICK_PERIOD, 300.0))?;
    let browser = Browser::start_with(
        &stack.log_dir,
        &[
            "--use-fake-ui-for-media-stream".to_owned(),
            "--use-fake-device-for-media-stream".to_owned(),
            format!("--use-file-for-fake-audio-capture={}", clicks.display()),
        ],
    )
    .await?;
    stack.open_viewer(&browser, 0).await?;
    browser.before_every_page(DETECTOR).await?;
    browser.client.refresh().await?;
    browser.click_device(&stack.device_id).await?;
    eventually("Talk to be offered", Duration::from_secs(30), || async {
        let available = browser
            .js("return window.ferrocam.talk.available === true;")
            .await?;
        Ok((available == true).then_some(()))
    })
    .await?;
    let pid = stack.device.as_ref().expect("device running").pid();
    let watching = device_cpu(pid).await?;

    browser
        .js("document.getElementById('talk-latch').click(); return null;")
        .await?;
    eventually(
        "the microphone to be sent",
        Duration::from_secs(10),
        || async {
            let on = browser
                .js("return Boolean(window.ferrocam.microphone);")
                .await?;
            Ok((on == true).then_some(()))
        },
    )
    .await?;
    browser
        .js_async("window.__onsets(ferrocam.microphone, '__sentClicks').then(() => done(null), (e) => done(String(e)));")
        .await?;
    let anchor = browser.js_async(LOOPBACK_ANCHOR).await?;
    anyhow::ensure!(anchor.is_null(), "the loopback anchor failed: {anchor}");
    let talking = device_cpu(pid).await?;
    eventually("enough clicks", Duration::from_secs(120), || async {
        let n = browser.js("return window.__sentClicks.length;").await?;
        Ok((n.as_u64().unwrap_or(0) as usize > CLICKS + 2).then_some(()))
    })
    .await?;
    let pages = browser
        .js("return [window.__sentClicks, window.__anchorClicks];")
        .await?;
    let list = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (sent, anchor_heard) = (list(&pages[0]), list(&pages[1]));
    // The first clicks may predate the detectors on the far side; the last may not have
    // arrived yet.
    let sent = &sent[1..sent.len() - 1];
    let heard = speaker_clicks(&stack, &speaker)?;
    let mut ours = delays(sent, &heard);
    let mut anchor = delays(sent, &anchor_heard);
    anyhow::ensure!(
        ours.len() >= CLICKS / 2 && anchor.len() >= CLICKS / 2,
        "matched {} clicks on the speaker and {} on the anchor of {} sent",
        ours.len(),
        anchor.len(),
        sent.len()
    );
    let (ours, anchor) = (percentiles(&mut ours), percentiles(&mut anchor));
    println!("| path | clicks | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| ferrocam: page microphone → device speaker | {} | {:.0} | {:.0} | {:.0} |",
        ours.count, ours.p50, ours.p95, ours.max
    );
    println!(
        "| Chromium → Chromium (same page, loopback) | {} | {:.0} | {:.0} | {:.0} |",
        anchor.count, anchor.p50, anchor.p95, anchor.max
    );
    println!();
    println!("| device CPU, % of a core | value |");
    println!("|---|---|");
    println!("| one viewer, watching and listening | {watching:.1} |");
    println!("| the same viewer talking | {talking:.1} |");
    println!("| talking adds | {:.1} |", talking - watching);
    std::fs::write(
        out.join("talk.json"),
        serde_json::to_string_pretty(&json!({
            "mouth_to_speaker_ms": ours,
            "chromium_to_chromium_ms": anchor,
            "device_cpu_percent": { "watching": watching, "talking": talking },
        }))?,
    )?;
    browser.close().await
}
