//! Viewers ride through restarts: a gateway restart does not stop a picture that flows peer to
//! peer, and the page resumes its signaling on the new gateway; a camera restart is followed by
//! a new session the page starts by itself. Real gateway, device and headless Chromium.

use std::time::{Duration, Instant};

use ferrocam_tests::proxy::FrontDoor;
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

/// The page's video receiver right now: frames decoded, and Chromium's own freeze accounting
/// (a freeze is a gap well above the usual frame interval).
async fn video_stats(browser: &Browser) -> anyhow::Result<Value> {
    browser
        .js_async(
            "const pc = window.ferrocam.pc;
             if (!pc) { done(null); return; }
             pc.getStats().then((r) => {
               let v = null;
               r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') v = s; });
               done(v && { frames: v.framesDecoded || 0, freezes: v.freezeCount || 0,
                           frozen: v.totalFreezesDuration || 0 });
             });",
        )
        .await
}

/// Waits until the page's current peer connection has decoded `frames`; fails at once if the
/// page shows an error.
async fn wait_decoding(browser: &Browser, frames: u64, within: Duration) -> anyhow::Result<Value> {
    eventually(&format!("{frames} frames decoded"), within, || async {
        let error = browser.js("return window.ferrocam.lastError;").await?;
        anyhow::ensure!(error.is_null(), "the page shows an error: {error}");
        let stats = video_stats(browser).await?;
        Ok((stats["frames"].as_u64() >= Some(frames)).then_some(stats))
    })
    .await
}

/// The device's own view, asked through gateway 0 (whichever process serves it now).
fn device_status(stack: &Stack) -> anyhow::Result<Value> {
    device_status_at(stack, 0)
}

/// The device's own view, asked through gateway `i`.
fn device_status_at(stack: &Stack, i: usize) -> anyhow::Result<Value> {
    let url = stack.gateway_url(i, &format!("api/devices/{}/control", stack.device_id));
    let reply: Value = ureq::post(&url)
        .header("authorization", &stack.bearer())
        .send_json(serde_json::json!({ "cmd": "status" }))?
        .body_mut()
        .read_json()?;
    Ok(reply["ok"].clone())
}

/// Marks the page's peer connection and takes its stats, before something happens to the
/// gateway.
async fn before_the_outage(browser: &Browser) -> anyhow::Result<Value> {
    browser
        .js("window.__pcBefore = window.ferrocam.pc; window.__marker = 7; return null;")
        .await?;
    video_stats(browser).await
}

/// After the gateway went away: the page resumed its session on the socket it got back, the
/// same peer connection decoded two more seconds of picture (no reload, no new session), and
/// the picture froze for at most 1 s in all.
async fn rode_through(browser: &Browser, before: &Value, what: &str) -> anyhow::Result<()> {
    eventually(
        "the page to resume its session",
        Duration::from_secs(15),
        || async {
            let resumed = browser.js("return window.ferrocam.resumed;").await?;
            Ok((resumed.as_u64() >= Some(1)).then_some(()))
        },
    )
    .await?;
    let frames = before["frames"].as_u64().unwrap_or(0);
    wait_decoding(browser, frames + 60, Duration::from_secs(10)).await?;
    let same = browser
        .js("return window.ferrocam.pc === window.__pcBefore && window.__marker === 7;")
        .await?;
    assert_eq!(
        same, true,
        "{what}: the page rebuilt its connection or reloaded"
    );
    let after = video_stats(browser).await?;
    let frozen = after["frozen"].as_f64().unwrap_or(0.0) - before["frozen"].as_f64().unwrap_or(0.0);
    eprintln!("{what}: {frozen:.3} s frozen; stats before {before}, after {after}");
    assert!(frozen <= 1.0, "{what}: the picture froze for {frozen:.3} s");
    Ok(())
}

/// The page hangs up, and gateway `i` (which now carries the session's signaling) relays it:
/// the device, asked through that gateway, ends the session.
async fn hang_up_through(stack: &Stack, browser: &Browser, i: usize) -> anyhow::Result<()> {
    assert_eq!(device_status_at(stack, i)?["viewers"], 1);
    browser.js("window.ferrocam.hangUp(); return null;").await?;
    eventually(
        "the device to end the session",
        Duration::from_secs(10),
        || async { Ok((device_status_at(stack, i)?["viewers"] == 0).then_some(())) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picture_keeps_playing_through_a_gateway_restart() -> anyhow::Result<()> {
    // The default install: the gateway embeds the broker, so its restart also drops the
    // device's broker connection. Nothing of that may reach the picture.
    let mut stack = Stack::start(StackOptions::new("ride_gateway_restart")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    wait_decoding(&browser, 60, Duration::from_secs(30)).await?;
    let before = before_the_outage(&browser).await?;

    stack.restart_gateway(0).await?;
    stack.wait_online(true).await?;
    rode_through(&browser, &before, "gateway restart").await?;

    // Signaling that needs the device works through the new gateway: an ICE restart (the
    // device's new offer with fresh credentials, the page's answer) while the picture goes on.
    let ufrag =
        "return (window.ferrocam.pc.remoteDescription.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1];";
    let old_ufrag = browser.js(ufrag).await?;
    assert_eq!(
        browser.js("return window.ferrocam.restartIce();").await?,
        true
    );
    eventually(
        "the ICE restart to complete",
        Duration::from_secs(10),
        || async {
            let now = browser.js(ufrag).await?;
            let state = browser
                .js("return window.ferrocam.pc.iceConnectionState;")
                .await?;
            let done = now != old_ufrag && (state == "connected" || state == "completed");
            Ok(done.then_some(()))
        },
    )
    .await?;
    let frames = video_stats(&browser).await?["frames"].as_u64().unwrap_or(0);
    wait_decoding(&browser, frames + 30, Duration::from_secs(10)).await?;

    // The page's next control command works, and the device's state says so through the new
    // gateway process.
    let reply = browser
        .js_async(
            "window.ferrocam.control.request('video.set', { bitrate_kbps: 1234 })
               .then((ok) => done({ ok }), (e) => done({ error: e.message }));",
        )
        .await?;
    assert!(reply["error"].is_null(), "bitrate change refused: {reply}");
    assert_eq!(device_status(&stack)?["target_bitrate_kbps"], 1234);

    // Signaling for the session works on the new gateway: the page's hang-up reaches the device.
    hang_up_through(&stack, &browser, 0).await?;
    browser.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_watches_again_when_the_camera_restarts() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::new("ride_device_restart")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    wait_decoding(&browser, 30, Duration::from_secs(30)).await?;
    browser
        .js("window.__pcBefore = window.ferrocam.pc; return null;")
        .await?;

    // A crash: no goodbye from the device, only its broker's last will.
    stack.kill_device();
    stack.wait_online(false).await?;
    stack.start_device()?;
    stack.wait_online(true).await?;
    let online_at = Instant::now();
    // No click: the page notices the camera's new run and starts a session by itself.
    let stats = eventually(
        "a new session decoding",
        Duration::from_secs(10),
        || async {
            let fresh = browser
                .js("return window.ferrocam.pc !== window.__pcBefore;")
                .await?;
            if fresh != true {
                return Ok(None);
            }
            let stats = video_stats(&browser).await?;
            Ok((stats["frames"].as_u64() >= Some(1)).then_some(stats))
        },
    )
    .await?;
    let took = online_at.elapsed();
    let page = browser
        .js("return { restarts: window.ferrocam.restarts, notice: window.ferrocam.lastNotice, error: window.ferrocam.lastError };")
        .await?;
    eprintln!(
        "device restart: playing again {took:?} after the gateway listed it online; {stats} {page}"
    );
    assert_eq!(page["restarts"], 1, "{page}");
    assert!(page["error"].is_null(), "{page}");
    assert!(
        page["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("restarted"),
        "{page}"
    );
    assert!(
        took <= Duration::from_secs(2),
        "playing again only {took:?} after the device was online"
    );
    browser.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_the_gateway_that_started_it() -> anyhow::Result<()> {
    // Two gateways on one Mosquitto behind one address; the one the page started on goes away
    // for good, and the address now leads to the other.
    let mut stack = Stack::start(
        StackOptions::new("ride_gateway_failover")
            .mosquitto()
            .gateways(2),
    )
    .await?;
    stack.wait_online_at(1, true).await?;
    let door = FrontDoor::start(stack.gateways[0].http_port).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    browser
        .login(&door.url(""), &stack.creds.user, &stack.creds.password)
        .await?;
    browser.click_device(&stack.device_id).await?;
    wait_decoding(&browser, 60, Duration::from_secs(30)).await?;
    let before = before_the_outage(&browser).await?;

    door.switch_to(stack.gateways[1].http_port);
    stack.gateways[0].process.terminate(Duration::from_secs(10));
    rode_through(&browser, &before, "gateway failover").await?;

    // The surviving gateway now carries the session's signaling: the page's hang-up ends it.
    hang_up_through(&stack, &browser, 1).await?;
    browser.close().await
}
