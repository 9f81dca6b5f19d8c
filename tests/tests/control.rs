//! Remote control, clicked through the web page in Chromium: bitrate, snapshot, GPIO on a fake
//! chip, and what a view-only session sees and gets refused. Plus the REST relay and the `ctl`
//! CLI.

use std::process::Command;
use std::time::Duration;

use ferrocam_tests::process::workspace_bin;
use ferrocam_tests::{Browser, Stack, StackOptions, eventually, jpeg_size};
use serde_json::Value;

/// A device whose picture is noise (so the encoder really spends the bitrate it is given), with
/// one GPIO output on a fake chip whose state lands in `state`.
fn options(test: &str, state: &std::path::Path) -> StackOptions {
    let state = state.display().to_string();
    let gpio = "name=lamp,chip=gpiochip0,line=17,direction=output";
    StackOptions::new(test).device_args(&[
        "--source",
        "pipeline:videotestsrc is-live=true pattern=snow",
        "--gpio-line",
        gpio,
        "--gpio-fake",
        &state,
    ])
}

async fn open_panel(stack: &Stack, browser: &Browser) -> anyhow::Result<()> {
    stack.open_viewer(browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    let shown = eventually(
        "the control panel with its GPIO toggle",
        Duration::from_secs(20),
        || async {
            Ok(browser
                .client
                .find(fantoccini::Locator::Css("input[data-gpio='lamp']"))
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await;
    if shown.is_err() {
        // Which of the three ways it fails (seen once in CI): SCTP never up (`sctp` stays
        // `connecting`), the channel open but its requests unanswered (`control` set), or the
        // page's peer connection replaced under it (`restarts`).
        let page = browser
            .js("const f = window.ferrocam || {}; const p = f.pc;
                 const m = document.getElementById('panel-message');
                 return { connection: p && p.connectionState, sctp: p && p.sctp && p.sctp.state,
                          control: !!f.control, panel_hidden: document.getElementById('panel').hidden,
                          message: m && m.textContent, restarts: f.restarts, ice_restarts: f.iceRestarts };")
            .await;
        eprintln!("CONTROL PANEL MISSING: {page:?}");
    }
    shown
}

async fn page_bitrate(browser: &Browser) -> anyhow::Result<Option<f64>> {
    let v = browser
        .js("return window.ferrocam.stats && window.ferrocam.stats.Bitrate;")
        .await?;
    Ok(v.as_str()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok()))
}

#[tokio::test]
async fn the_page_controls_bitrate_snapshot_and_gpio() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferrocam-gpio-ui-{}", std::process::id()));
    let stack = Stack::start(options("control_panel", &dir)).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    open_panel(&stack, &browser).await?;

    // Bitrate: 2000 kbit/s by default; lowering it shows in the page's own stats.
    let high = eventually(
        "the stream near 2000 kbit/s",
        Duration::from_secs(20),
        || async { Ok(page_bitrate(&browser).await?.filter(|b| *b > 1300.0)) },
    )
    .await?;
    browser
        .client
        .find(fantoccini::Locator::Css("#bitrate"))
        .await?
        .select_by_value("300")
        .await?;
    let low = eventually(
        "the stream near 300 kbit/s",
        Duration::from_secs(20),
        || async { Ok(page_bitrate(&browser).await?.filter(|b| *b < 600.0)) },
    )
    .await?;
    assert!(low < high / 2.0, "{high} → {low}");

    // Snapshot: a full-size JPEG assembled from the channel's chunks.
    browser
        .client
        .find(fantoccini::Locator::Css("#snapshot"))
        .await?
        .click()
        .await?;
    let shot = eventually("a snapshot", Duration::from_secs(15), || async {
        let v = browser.js("return window.ferrocam.lastSnapshot;").await?;
        Ok((!v.is_null()).then_some(v))
    })
    .await?;
    assert_eq!(
        (shot["width"].as_u64(), shot["height"].as_u64()),
        (Some(1280), Some(720)),
        "{shot}"
    );
    assert_eq!(shot["magic"], serde_json::json!([0xff, 0xd8]), "{shot}");

    // GPIO: the toggle drives the (fake) pin.
    assert_eq!(std::fs::read_to_string(&dir)?, r#"{"lamp":false}"#);
    browser
        .client
        .find(fantoccini::Locator::Css("input[data-gpio='lamp']"))
        .await?
        .click()
        .await?;
    eventually("the lamp pin high", Duration::from_secs(10), || async {
        Ok((std::fs::read_to_string(&dir)? == r#"{"lamp":true}"#).then_some(()))
    })
    .await?;

    // The same snapshot over REST, and the CLI through the REST relay.
    let mut resp = ureq::get(&stack.url("api/devices/demo/snapshot.jpg"))
        .header("authorization", &stack.bearer())
        .call()?;
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/jpeg");
    let jpeg = resp
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()?;
    assert_eq!(jpeg_size(&jpeg), Some((1280, 720)));

    let ctl = Command::new(workspace_bin("ferrocam-gateway")?)
        .args([
            "ctl",
            "--url",
            &stack.url(""),
            "--token",
            &stack.creds.token,
            "demo",
            "gpio.set",
            "name=lamp",
            "value=false",
        ])
        .output()?;
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let reply: Value = serde_json::from_slice(&ctl.stdout)?;
    assert!(reply["ok"].is_object(), "{reply}");
    assert_eq!(std::fs::read_to_string(&dir)?, r#"{"lamp":false}"#);
    let refused = Command::new(workspace_bin("ferrocam-gateway")?)
        .args([
            "ctl",
            "--url",
            &stack.url(""),
            "--token",
            &stack.creds.token,
            "demo",
            "gpio.set",
            "name=heater",
            "value=true",
        ])
        .output()?;
    assert!(!refused.status.success());
    let reply: Value = serde_json::from_slice(&refused.stdout)?;
    assert_eq!(reply["error"]["code"], "not_found", "{reply}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("the device refused"), "{said}");
    // A device the gateway does not know: the gateway refuses, and ctl says it was the gateway.
    let unknown = Command::new(workspace_bin("ferrocam-gateway")?)
        .args([
            "ctl",
            "--url",
            &stack.url(""),
            "--token",
            &stack.creds.token,
            "ghost",
            "status",
        ])
        .output()?;
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("the gateway knows no device ghost"), "{said}");

    let _ = std::fs::remove_file(&dir);
    browser.close().await
}

#[tokio::test]
async fn a_view_only_session_gets_no_controls_and_the_device_refuses_changes() -> anyhow::Result<()>
{
    let dir = std::env::temp_dir().join(format!("ferrocam-gpio-view-{}", std::process::id()));
    let stack =
        Stack::start(options("control_view_only", &dir).gateway_args(&["--role", "view"])).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    open_panel(&stack, &browser).await?;
    // The page knows the session's role (the user's, capped by --role) and offers nothing that
    // would be refused: no bitrate or size pickers, no PTZ pad, the GPIO toggle read-only.
    let page = browser
        .js(
            "return [window.ferrocam.me.role, document.getElementById('who').textContent,
                     !!document.getElementById('bitrate'), !!document.getElementById('size'),
                     !!document.querySelector('.ptz'),
                     document.querySelector(\"input[data-gpio='lamp']\").disabled,
                     !!document.getElementById('snapshot')];",
        )
        .await?;
    assert_eq!(
        page,
        serde_json::json!(["view", "tester · view", false, false, false, true, true]),
        "{page}"
    );
    // Should a page ask anyway, the device refuses, and the page says so.
    browser
        .js_async("act('lamp', 'gpio.set', { name: 'lamp', value: true }).then(done);")
        .await?;
    let refusal = eventually("the refusal message", Duration::from_secs(10), || async {
        let v = browser.js("return window.ferrocam.lastRefusal;").await?;
        Ok(v.as_str().map(str::to_owned))
    })
    .await?;
    assert!(refusal.contains("forbidden"), "{refusal}");
    let shown = browser
        .js("const m = document.getElementById('panel-message'); return m.className + '|' + m.textContent;")
        .await?;
    assert!(shown.as_str().unwrap().starts_with("refused|"), "{shown}");
    assert_eq!(
        std::fs::read_to_string(&dir)?,
        r#"{"lamp":false}"#,
        "a view session moved the pin"
    );
    // The stream is unaffected: decoding goes on (counted by the decoder, since the panel may
    // have scrolled the video away).
    let decoded = || async {
        let v = browser
            .js_async(
                "window.ferrocam.pc.getStats().then((r) => { let n = 0;
                   r.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') n = x.framesDecoded; });
                   done(n); });",
            )
            .await?;
        anyhow::Ok(v.as_u64().unwrap_or(0))
    };
    let before = decoded().await?;
    eventually("frames still decoded", Duration::from_secs(10), || async {
        Ok((decoded().await? > before + 15).then_some(()))
    })
    .await?;
    let _ = std::fs::remove_file(&dir);
    browser.close().await
}
