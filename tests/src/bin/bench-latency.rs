//! Benchmark: glass-to-glass latency and time to first frame, as a viewer sees them.
//!
//! Runs a gateway and a device from `FERROCAM_BIN_DIR` (release, via `make bench`): 1280×720 @
//! 30 fps, 2 Mbit/s, the test pattern with `--latency-stamp`, video only, on loopback.
//!
//! - Chromium (the real web viewer): glass-to-glass from the page's meter over ≥ 600 frames
//!   (capture → displayed, read from the stamp), and 20 fresh sessions' time from the click to
//!   the first presented frame, with the page's step marks (answer, ICE, DTLS, first packet).
//! - A WHEP player (Rust, `ferrocam_tests::WhepPlayer`, decoding with GStreamer): 20 sessions'
//!   time from the POST to the first decoded frame, and its own glass-to-glass (capture →
//!   decoded) for comparison without a browser's jitter buffer and display.
//! - "Cold" variants: the first viewer after the pipeline stopped (it then starts the camera
//!   and the encoder too).
//! - "Browser offers": the same page with `offerer: 'browser'` (the browser writes the offer,
//!   as before the device offered), 20 warm sessions and a glass-to-glass run, so the two
//!   signaling shapes are compared in one run.
//!
//! Prints Markdown and writes target/bench/ferrocam-latency.json.

use std::time::{Duration, Instant};

use ferrocam_tests::{Browser, Stack, StackOptions, WhepOptions, WhepPlayer, eventually};
use serde_json::{Value, json};

const SESSIONS: usize = 30;
const G2G_FRAMES: usize = 600;

/// p-th percentile (0–100), nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut values: Vec<f64>) -> Value {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    json!({
        "n": values.len(),
        "p50": percentile(&values, 50.0),
        "p95": percentile(&values, 95.0),
        "p99": percentile(&values, 99.0),
        "min": values.first(),
        "max": values.last(),
    })
}

/// One session from the page: watch, wait for the first frame, return the step marks.
/// `offerer` is the page's option: `device` (the default) or `browser`.
async fn page_session(browser: &Browser, offerer: &str) -> anyhow::Result<Value> {
    browser
        .js(&format!(
            "window.ferrocam.hangUp(); \
             window.ferrocam.watch('demo', {{ transport: 'ws', offerer: '{offerer}' }}); \
             return null;"
        ))
        .await?;
    eventually("the first frame", Duration::from_secs(20), || async {
        let v = browser
            .js("return { timing: window.ferrocam.timing, error: window.ferrocam.lastError };")
            .await?;
        if !v["error"].is_null() {
            anyhow::bail!("the page shows an error: {}", v["error"]);
        }
        Ok(v["timing"]["first_frame"]
            .is_number()
            .then(|| v["timing"].clone()))
    })
    .await
}

/// Glass to glass of the session playing now: skip the first second (start-up), then take
/// G2G_FRAMES samples.
async fn g2g_samples(browser: &Browser) -> anyhow::Result<Vec<f64>> {
    eventually(
        "glass-to-glass samples",
        Duration::from_secs(60),
        || async {
            let v = browser
                .js("return window.ferrocam.meter ? window.ferrocam.meter.samples : [];")
                .await?;
            let all: Vec<f64> = serde_json::from_value(v)?;
            Ok((all.len() >= G2G_FRAMES + 30).then(|| all[30..].to_vec()))
        },
    )
    .await
}

async fn chromium(stack: &Stack, browser: &Browser) -> anyhow::Result<Value> {
    stack.open_viewer(browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    let samples = g2g_samples(browser).await?;
    eprintln!("chromium: {} glass-to-glass samples", samples.len());

    // Warm sessions: the pipeline is running (another viewer just left). 2.1 s apart: the
    // gateway lets one WebSocket start a burst of 5 offers, then one every 2 s.
    let mut warm = Vec::new();
    for _ in 0..SESSIONS {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        warm.push(page_session(browser, "device").await?);
    }
    let mut browser_offers = Vec::new();
    for _ in 0..SESSIONS {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        browser_offers.push(page_session(browser, "browser").await?);
    }
    let browser_offer_samples = g2g_samples(browser).await?;
    // Cold sessions: the pipeline stopped (idle timeout 1 s) before each.
    let mut cold = Vec::new();
    for _ in 0..5 {
        browser.js("window.ferrocam.hangUp(); return null;").await?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cold.push(page_session(browser, "device").await?);
    }
    browser.js("window.ferrocam.hangUp(); return null;").await?;
    let steps = [
        "offer_sent",
        "answer",
        "ice_connected",
        "dtls_connected",
        "first_packet",
        "first_frame",
    ];
    let breakdown = |sessions: &[Value]| -> Value {
        let mut out = serde_json::Map::new();
        for step in steps {
            let values = sessions.iter().filter_map(|t| t[step].as_f64()).collect();
            out.insert(step.to_owned(), summary(values));
        }
        Value::Object(out)
    };
    Ok(json!({
        "g2g_ms": summary(samples.clone()),
        "g2g_samples": samples,
        "ttff_ms": breakdown(&warm),
        "ttff_cold_ms": breakdown(&cold),
        "ttff_browser_offer_ms": breakdown(&browser_offers),
        "g2g_browser_offer_ms": summary(browser_offer_samples),
    }))
}

async fn whep(stack: &Stack) -> anyhow::Result<Value> {
    let endpoint = stack.url("whep/demo");
    let options = WhepOptions {
        audio: false,
        skip_decode: false,
        ..Default::default()
    };
    let mut answer = Vec::new();
    let mut first = Vec::new();
    let mut g2g = Vec::new();
    for i in 0..SESSIONS {
        let started = Instant::now();
        let player = WhepPlayer::connect_with(&endpoint, options).await?;
        answer.push(started.elapsed().as_secs_f64() * 1000.0);
        player.wait_frames(1, Duration::from_secs(10)).await?;
        let at = player.first_frame_at().expect("a decoded frame");
        first.push(at.duration_since(started).as_secs_f64() * 1000.0);
        if i == 0 {
            player
                .wait_frames(G2G_FRAMES as u64 + 30, Duration::from_secs(60))
                .await?;
            g2g = player.latencies_ms().split_off(30);
        }
        player.delete().await?;
    }
    Ok(json!({
        "post_to_answer_ms": summary(answer),
        "ttff_ms": summary(first),
        "g2g_decoded_ms": summary(g2g),
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("bench_latency").device_args(&[
        "--latency-stamp",
        "--audio",
        "off",
        "--bitrate-kbps",
        "2000",
        "--idle-timeout-secs",
        "1",
    ]))
    .await?;
    let whep = whep(&stack).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    let page = chromium(&stack, &browser).await?;
    let _ = browser.close().await;

    let result = json!({ "peer": "ferrocam", "chromium": page, "whep": whep });
    let out = ferrocam_tests::process::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("ferrocam-latency.json"),
        serde_json::to_string_pretty(&result)?,
    )?;

    let f = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.0}"));
    let g = &result["chromium"]["g2g_ms"];
    println!("| measure | n | p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|");
    println!(
        "| glass to glass, Chromium (capture → displayed) | {} | {} | {} | {} |",
        g["n"],
        f(&g["p50"]),
        f(&g["p95"]),
        f(&g["p99"])
    );
    let g = &result["chromium"]["g2g_browser_offer_ms"];
    println!(
        "| glass to glass, Chromium, browser offers | {} | {} | {} | {} |",
        g["n"],
        f(&g["p50"]),
        f(&g["p95"]),
        f(&g["p99"])
    );
    let g = &result["whep"]["g2g_decoded_ms"];
    println!(
        "| glass to glass, WHEP player (capture → decoded) | {} | {} | {} | {} |",
        g["n"],
        f(&g["p50"]),
        f(&g["p95"]),
        f(&g["p99"])
    );
    for (name, key) in [
        ("warm", "ttff_ms"),
        ("cold", "ttff_cold_ms"),
        ("warm, browser offers", "ttff_browser_offer_ms"),
    ] {
        for (step, v) in result["chromium"][key].as_object().expect("steps") {
            println!(
                "| Chromium first frame ({name}): {step} | {} | {} | {} | {} |",
                v["n"],
                f(&v["p50"]),
                f(&v["p95"]),
                f(&v["p99"])
            );
        }
    }
    for (label, key) in [
        (
            "WHEP POST → answer applied, candidates sent",
            "post_to_answer_ms",
        ),
        ("WHEP POST → first decoded frame", "ttff_ms"),
    ] {
        let v = &result["whep"][key];
        println!(
            "| {label} | {} | {} | {} | {} |",
            v["n"],
            f(&v["p50"]),
            f(&v["p95"]),
            f(&v["p99"])
        );
    }
    Ok(())
}
