//! What the cluster test checks a stream with: a WHEP player through a given gateway, and the
//! gateway's web page in Chromium (what it shows, and that it keeps playing).
//!
//! Apart from the test because the scenario asks the same questions after every failure it
//! causes.

use std::time::Duration;

use anyhow::Context;
use ferrocam_tests::{Browser, WhepPlayer, eventually};
use serde_json::Value;

use crate::fleet::{Fleet, HEIGHT, WIDTH};

/// A WHEP session through gateway `gateway` to `device` decodes frames, and ends cleanly.
pub async fn whep_streams(fleet: &Fleet, gateway: usize, device: &str) -> anyhow::Result<()> {
    let endpoint = fleet.url(gateway, &format!("whep/{device}"));
    let player = WhepPlayer::connect(&endpoint)
        .await
        .with_context(|| format!("WHEP via gateway {gateway} to {device}"))?;
    player
        .wait_frames(20, Duration::from_secs(30))
        .await
        .with_context(|| format!("frames via gateway {gateway} from {device}"))?;
    assert!(
        player.session_url.contains(&format!(
            ":{}/i/gw-{gateway}/whep/{device}/",
            fleet.gateways[gateway].http_port
        )),
        "the session URL names the instance that created it: {}",
        player.session_url
    );
    assert_eq!(player.delete().await?, 200);
    Ok(())
}

/// Opens gateway `gateway`'s page in `browser` and plays `device` over the WebSocket.
pub async fn play_in_page(
    fleet: &Fleet,
    browser: &Browser,
    gateway: usize,
    device: &str,
) -> anyhow::Result<u64> {
    // One login serves every instance: they share the auth file (and its session secret), and
    // the cookie is the host's, whatever the port.
    browser
        .login(
            &fleet.url(gateway, ""),
            &fleet.creds.user,
            &fleet.creds.password,
        )
        .await?;
    browser.client.goto(&fleet.url(gateway, "")).await?;
    browser
        .client
        .find(fantoccini::Locator::Css("#transport"))
        .await?
        .select_by_value("ws")
        .await?;
    browser.click_device(device).await?;
    page_frames_at_least(browser, 30, false).await
}

/// What the page's player shows: decoded frames, picture size, connection state, error.
pub async fn page_state(browser: &Browser) -> anyhow::Result<Value> {
    browser
        .js("const v = document.getElementById('video');
             const pc = window.ferrocam.pc;
             return { width: v.videoWidth, height: v.videoHeight,
                      frames: v.getVideoPlaybackQuality().totalVideoFrames,
                      state: pc ? pc.connectionState : null,
                      device: window.ferrocam.device,
                      error: window.ferrocam.lastError };")
        .await
}

/// Waits until the page has shown `frames` frames of the expected size over a connected peer
/// connection. Fails at once on a page error, except "went offline" when `allow_offline` (a
/// gateway whose broker node died shows its devices offline until it reconnects; the media,
/// peer-to-peer, is not affected).
async fn page_frames_at_least(
    browser: &Browser,
    frames: u64,
    allow_offline: bool,
) -> anyhow::Result<u64> {
    let result = eventually(
        &format!("{frames} frames in the page"),
        Duration::from_secs(30),
        || async {
            let v = page_state(browser).await?;
            let error_code = v["error"]["code"].as_str();
            let tolerated =
                v["error"].is_null() || (allow_offline && error_code == Some("offline"));
            if !tolerated {
                anyhow::bail!("the page shows an error: {v}");
            }
            let ok = v["width"] == WIDTH
                && v["height"] == HEIGHT
                && v["state"] == "connected"
                && v["frames"].as_u64() >= Some(frames);
            Ok(ok.then(|| v["frames"].as_u64().unwrap_or(0)))
        },
    )
    .await;
    match result {
        Ok(frames) => Ok(frames),
        Err(e) => Err(e.context(format!("the page now: {}", page_state(browser).await?))),
    }
}

/// The page keeps playing: at least `more` new frames (about 2 s at 15 fps) on the same peer
/// connection.
pub async fn keeps_playing(
    browser: &Browser,
    more: u64,
    allow_offline: bool,
) -> anyhow::Result<()> {
    let before = page_state(browser).await?;
    let from = before["frames"].as_u64().context("frame count")?;
    page_frames_at_least(browser, from + more, allow_offline)
        .await
        .with_context(|| format!("the stream stopped; before: {before}"))?;
    Ok(())
}
