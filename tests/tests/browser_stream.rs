//! The product's spine, end to end: a real gateway (embedded rumqttd), a real device
//! (GStreamer test pattern → x264 → webrtc), and headless Chromium playing the stream from the
//! gateway's own page.

use std::time::Duration;

use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

/// Opens the page, clicks the device and waits until the browser has decoded 60 frames.
/// Returns the page's measurements. `transport` is the page's selector value.
async fn play_from_page(
    stack: &Stack,
    browser: &Browser,
    transport: &str,
) -> anyhow::Result<Value> {
    stack.open_viewer(browser, 0).await?;
    browser
        .client
        .find(fantoccini::Locator::Css("#transport"))
        .await?
        .select_by_value(transport)
        .await?;
    browser.click_device(&stack.device_id).await?;

    wait_for_frames(browser, 60).await
}

/// Waits until the page's `<video>` shows 1280×720 with at least `frames` decoded; fails at
/// once if the page shows an error.
async fn wait_for_frames(browser: &Browser, frames: u64) -> anyhow::Result<Value> {
    eventually(
        &format!("{frames} decoded frames at 1280x720"),
        Duration::from_secs(30),
        || async {
            let v = browser
                .js("const v = document.getElementById('video');
                 const q = v.getVideoPlaybackQuality();
                 return { width: v.videoWidth, height: v.videoHeight,
                          frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
                          error: window.ferrocam.lastError };")
                .await?;
            if !v["error"].is_null() {
                anyhow::bail!("page shows an error: {}", v["error"]);
            }
            let ready =
                v["width"] == 1280 && v["height"] == 720 && v["frames"].as_u64() >= Some(frames);
            Ok(ready.then_some(v))
        },
    )
    .await
}

/// Reads inbound-rtp `packetsReceived` for video from the page's peer connection.
async fn packets_received(browser: &Browser) -> anyhow::Result<u64> {
    let v = browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => {
               let n = null;
               r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.packetsReceived; });
               done(n);
             });",
        )
        .await?;
    v.as_u64()
        .ok_or_else(|| anyhow::anyhow!("no inbound-rtp video stats: {v}"))
}

#[tokio::test]
async fn browser_plays_live_h264_from_the_gateway_page() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("browser_plays_live_h264")).await?;
    let browser = Browser::start(&stack.log_dir).await?;

    let seen = play_from_page(&stack, &browser, "ws").await?;
    assert_eq!(seen["width"], 1280, "{seen}");
    assert_eq!(seen["height"], 720, "{seen}");
    assert!(seen["frames"].as_u64().unwrap() >= 60, "{seen}");

    let first = packets_received(&browser).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = packets_received(&browser).await?;
    assert!(
        second > first,
        "packetsReceived did not grow: {first} then {second}"
    );

    // The test pattern comes with a test tone: Chromium receives Opus too.
    let audio = browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => {
               let n = 0;
               r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n = s.packetsReceived; });
               done(n);
             });",
        )
        .await?;
    assert!(audio.as_u64().unwrap_or(0) > 10, "audio packets: {audio}");

    // The codec really is H.264.
    let codec = browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => {
               let m = null;
               r.forEach((s) => { if (s.type === 'codec' && s.mimeType.startsWith('video/')) m = s.mimeType; });
               done(m);
             });",
        )
        .await?;
    assert_eq!(codec, "video/H264");

    // The device made the offer (and with it the control channel), and is the DTLS client.
    let shape = browser
        .js("const pc = window.ferrocam.pc;
             return { remote: pc.remoteDescription.type,
                      setup: /a=setup:(\\w+)/.exec(pc.remoteDescription.sdp)[1] };")
        .await?;
    assert_eq!(shape["remote"], "offer", "{shape}");
    assert_eq!(shape["setup"], "active", "{shape}");
    eventually(
        "the device's control channel",
        Duration::from_secs(10),
        || async {
            Ok(browser
                .js("return !!window.ferrocam.control;")
                .await?
                .as_bool()
                .filter(|open| *open))
        },
    )
    .await?;

    // A client that offers itself is still served over the same WebSocket.
    browser
        .js("window.ferrocam.watch('demo', { offerer: 'browser' }); return null;")
        .await?;
    let seen = wait_for_frames(&browser, 30).await?;
    assert!(seen["frames"].as_u64().unwrap() >= 30, "{seen}");
    let remote = browser
        .js("return window.ferrocam.pc.remoteDescription.type;")
        .await?;
    assert_eq!(remote, "answer");
    browser.close().await
}

#[tokio::test]
async fn a_browser_taking_no_codec_the_camera_sends_gets_a_clear_error() -> anyhow::Result<()> {
    // VP9 only: neither H.264 nor the VP8 fallback (browsers.rs covers VP8).
    let stack = Stack::start(StackOptions::new("offer_without_h264")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    eventually("the device list", Duration::from_secs(15), || async {
        Ok(browser
            .js("return window.ferrocam.devices.some((d) => d.online);")
            .await?
            .as_bool()
            .filter(|b| *b))
    })
    .await?;

    browser
        .js("window.ferrocam.watch('demo', { codecs: ['video/VP9'] }); return null;")
        .await?;
    let error = eventually("an error on the page", Duration::from_secs(15), || async {
        let v = browser
            .js("const e = document.getElementById('error');
                 return { code: window.ferrocam.lastError && window.ferrocam.lastError.code,
                          shown: !e.hidden, text: e.textContent };")
            .await?;
        Ok((!v["code"].is_null()).then_some(v))
    })
    .await?;
    assert_eq!(error["code"], "no_common_codec", "{error}");
    assert_eq!(error["shown"], true, "{error}");
    assert!(error["text"].as_str().unwrap().contains("H.264"), "{error}");
    browser.close().await
}

#[tokio::test]
async fn browser_plays_over_whep_from_the_same_page() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("browser_whep")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    let seen = play_from_page(&stack, &browser, "whep").await?;
    assert!(seen["frames"].as_u64().unwrap() >= 60, "{seen}");
    let whep = browser.js("return window.ferrocam.whep;").await?;
    assert!(
        whep["url"]
            .as_str()
            .unwrap_or_default()
            .contains("/whep/demo/"),
        "the page did not use WHEP: {whep}"
    );
    assert!(packets_received(&browser).await? > 0);
    // Stop: the page DELETEs its WHEP session and the gateway frees it.
    browser.js("window.ferrocam.hangUp(); return null;").await?;
    eventually(
        "the WHEP session to be freed",
        Duration::from_secs(10),
        || async {
            let health: Value = ureq::get(&stack.url("healthz"))
                .call()?
                .body_mut()
                .read_json()?;
            Ok((health["sessions"] == 0).then_some(()))
        },
    )
    .await?;
    browser.close().await
}

#[tokio::test]
async fn an_offer_flood_is_throttled_while_other_viewers_keep_playing() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("offer_flood")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    play_from_page(&stack, &browser, "ws").await?;

    // A second connection from the same page floods offers.
    let flood = browser
        .js_async(
            "const ws = new WebSocket(`ws://${location.host}/ws`);
             const counts = { rate_limited: 0, session: 0 };
             let replies = 0;
             ws.onmessage = (e) => {
               const m = JSON.parse(e.data);
               if (m.type === 'session') { counts.session++; replies++; }
               else if (m.type === 'error' && m.code === 'rate_limited') { counts.rate_limited++; replies++; }
               if (replies === 30) { ws.close(); done(counts); }
             };
             ws.onopen = () => {
               for (let i = 0; i < 30; i++) ws.send(JSON.stringify({ type: 'offer', device: 'demo', sdp: 'v=0' }));
             };",
        )
        .await?;
    let limited = flood["rate_limited"].as_u64().unwrap_or(0);
    let accepted = flood["session"].as_u64().unwrap_or(0);
    assert!(limited >= 20, "the flood was not throttled: {flood}");
    assert!(accepted <= 6, "too many flood offers got through: {flood}");
    let metrics = ureq::get(&stack.url("metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let limited_metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocam_gateway_rate_limited_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        limited_metric >= limited,
        "metrics say {limited_metric}, the page saw {limited}"
    );

    // The first viewer kept playing throughout.
    let before = browser
        .js("return document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames;")
        .await?
        .as_u64()
        .unwrap_or(0);
    wait_for_frames(&browser, before + 30).await?;
    assert!(
        browser
            .js("return window.ferrocam.lastError;")
            .await?
            .is_null()
    );
    browser.close().await
}

#[tokio::test]
async fn the_page_shows_a_device_going_offline_and_back_without_reload() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::new("page_presence")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    let state = || async {
        browser
            .js(
                "const b = document.querySelector(\"button.device[data-device='demo']\");
                 return b ? { disabled: b.disabled, text: b.textContent } : null;",
            )
            .await
    };
    eventually("demo listed online", Duration::from_secs(15), || async {
        let v = state().await?;
        Ok((v["disabled"] == false).then_some(()))
    })
    .await?;
    // Mark the page so a reload would be noticed.
    browser.js("window.__marker = 42; return null;").await?;

    stack.kill_device();
    let offline = eventually("demo shown offline", Duration::from_secs(15), || async {
        let v = state().await?;
        Ok((v["disabled"] == true).then_some(v))
    })
    .await?;
    assert!(
        offline["text"]
            .as_str()
            .unwrap_or_default()
            .contains("offline"),
        "{offline}"
    );

    stack.start_device()?;
    eventually(
        "demo shown online again",
        Duration::from_secs(30),
        || async {
            let v = state().await?;
            Ok((v["disabled"] == false).then_some(()))
        },
    )
    .await?;
    assert_eq!(
        browser.js("return window.__marker;").await?,
        42,
        "the page reloaded"
    );
    browser.close().await
}

#[tokio::test]
async fn closing_the_control_channel_or_the_tab_frees_the_session() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("tab_close")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    let sessions = || async {
        let health: Value = ureq::get(&stack.url("healthz"))
            .call()?
            .body_mut()
            .read_json()?;
        anyhow::Ok(health["sessions"].as_u64().unwrap_or(99))
    };

    // Data channel closed while the media would go on: the device ends the session.
    play_from_page(&stack, &browser, "ws").await?;
    assert_eq!(sessions().await?, 1);
    browser
        .js("window.ferrocam.control.channel.close(); return null;")
        .await?;
    eventually(
        "the session freed after the channel closed",
        Duration::from_secs(10),
        || async { Ok((sessions().await? == 0).then_some(())) },
    )
    .await?;

    // A tab that just goes away: its WebSocket closes, so the gateway forgets its sessions, and
    // its peer connection closes, so the device ends them (the gateway leaves established
    // sessions to the peers: a socket can also drop while the picture goes on).
    play_from_page(&stack, &browser, "ws").await?;
    assert_eq!(sessions().await?, 1);
    browser.client.close_window().await?;
    eventually(
        "the session freed after the tab closed",
        Duration::from_secs(10),
        || async { Ok((sessions().await? == 0).then_some(())) },
    )
    .await?;
    let viewers = || async {
        let status = ureq::post(&stack.url("api/devices/demo/control"))
            .header("authorization", &stack.bearer())
            .send_json(serde_json::json!({ "cmd": "status" }))?
            .body_mut()
            .read_json::<Value>()?;
        anyhow::Ok(status["ok"]["viewers"].as_u64())
    };
    eventually(
        "the device to end the closed tab's session",
        Duration::from_secs(10),
        || async { Ok((viewers().await? == Some(0)).then_some(())) },
    )
    .await?;
    let _ = browser.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_measures_glass_to_glass_and_the_first_frame() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("page_meter").device_args(&[
        "--latency-stamp",
        "--audio",
        "off",
    ]))
    .await?;
    let browser = Browser::start(&stack.log_dir).await?;
    play_from_page(&stack, &browser, "ws").await?;
    let samples = eventually(
        "30 glass-to-glass samples",
        Duration::from_secs(20),
        || async {
            let v = browser
                .js("return window.ferrocam.meter ? window.ferrocam.meter.samples : [];")
                .await?;
            let samples: Vec<f64> = serde_json::from_value(v)?;
            Ok((samples.len() >= 30).then_some(samples))
        },
    )
    .await?;
    let skipped = browser
        .js("return window.ferrocam.meter.readAhead;")
        .await?;
    eprintln!(
        "glass to glass: {} samples, {skipped} frames read ahead and skipped",
        samples.len()
    );
    // (With `--audio off` the page plays video alone: the device answers audio `inactive`.)
    // The stamp is read back as this moment's wall clock (a sanity bound, not a target; both
    // ends read the clock in whole milliseconds).
    assert!(
        samples.iter().all(|ms| (-2.0..5_000.0).contains(ms)),
        "{samples:?}"
    );
    // Every step of the time to first frame is recorded, in order.
    let timing = browser.js("return window.ferrocam.timing;").await?;
    let steps = [
        "offer_sent",
        "answer",
        "ice_connected",
        "dtls_connected",
        "first_packet",
        "first_frame",
    ];
    let at: Vec<f64> = steps
        .iter()
        .map(|s| timing[s].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert!(at.iter().all(|t| t.is_finite()), "{timing}");
    assert!(
        at[0] <= at[1] && at[1] <= at[3] && at[2] <= at[3],
        "{timing}"
    );
    assert!(at[3] <= at[5] && at[4] <= at[5], "{timing}");
    // And the page shows it.
    let stats = eventually(
        "the latency in the stats",
        Duration::from_secs(5),
        || async {
            let v = browser.js("return window.ferrocam.stats || {};").await?;
            Ok(v.get("Glass to glass")
                .and_then(Value::as_str)
                .map(str::to_owned))
        },
    )
    .await?;
    assert!(stats.ends_with(')') && stats.contains("ms"), "{stats}");
    let _ = browser.close().await;
    Ok(())
}
