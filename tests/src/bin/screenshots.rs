//! Takes the README's screenshots of the web viewer (desktop and phone width) from a real
//! gateway + device in headless Chromium, into `docs/screenshots/`. Run with `make screenshots`.

use std::time::Duration;

use ferrocam_tests::process::workspace_root;
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let state = std::env::temp_dir().join(format!("ferrocam-shots-{}", std::process::id()));
    let stack = Stack::start(StackOptions::new("screenshots").device_args(&[
        "--gpio-line",
        "name=lamp,chip=gpiochip0,line=17,direction=output;name=door,chip=gpiochip0,line=27,direction=input;name=pan_l,chip=gpiochip0,line=5,direction=output;name=pan_r,chip=gpiochip0,line=6,direction=output",
        "--gpio-fake",
        &state.display().to_string(),
        "--ptz",
        "gpio:left=pan_l,right=pan_r",
    ]))
    .await?;
    let browser = Browser::start(&stack.log_dir).await?;
    let out = workspace_root().join("docs/screenshots");
    std::fs::create_dir_all(&out)?;

    browser.client.set_window_size(1280, 1150).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    eventually("a playing stream and the panel", Duration::from_secs(20), || async {
        let ready = browser
            .js("return document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > 60
                        && !!document.querySelector(\"input[data-gpio='lamp']\")
                        && !!(window.ferrocam.stats && window.ferrocam.stats.Bitrate !== '–');")
            .await?;
        Ok(ready.as_bool().filter(|r| *r).map(|_| ()))
    })
    .await?;
    std::fs::write(out.join("desktop.png"), browser.client.screenshot().await?)?;

    browser.client.set_window_size(390, 1400).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(out.join("phone.png"), browser.client.screenshot().await?)?;
    browser.close().await?;
    let _ = std::fs::remove_file(state);
    println!("wrote {}", out.display());
    Ok(())
}
