//! Files over the data channel, in real Chromium through the page (files.js): a 50 MB upload
//! and download checked by SHA-256 while the live picture and the control channel carry on, a
//! download broken off midway and resumed from its offset, a recording made with the Record
//! button played back in the page, and what a view-only session and path-like names get.
//!
//! Figures are printed (`--nocapture`) and collected in BENCHMARKS.md.

use std::time::Duration;

use ferrocam_tests::files_page::{files_channel_open, upload_random};
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const SIZE: usize = 50 * 1024 * 1024;

fn options(test: &str) -> StackOptions {
    StackOptions::new(test).device_args(&[
        "--width",
        "1280",
        "--height",
        "720",
        "--fps",
        "30",
        "--keyframe-interval",
        "30",
    ])
}

/// Logs in, watches the camera, and waits for the files channel.
async fn watching(stack: &Stack) -> anyhow::Result<Browser> {
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    let opened = files_channel_open(&browser).await;
    if let Err(e) = opened {
        let page = browser
            .js("return { errors: ferrocam.pageErrors, control: Boolean(ferrocam.control),
                          pc: ferrocam.pc && ferrocam.pc.connectionState,
                          files: window.FerrocamFiles ? FerrocamFiles.state.role : 'no files.js' };")
            .await?;
        return Err(e.context(format!("the page: {page}")));
    }
    Ok(browser)
}

/// Runs `script` (an async function body) in the page and waits for its value.
async fn run(browser: &Browser, name: &str, script: &str) -> anyhow::Result<Value> {
    browser.job(name, Duration::from_secs(180), script).await
}

/// The page's helpers: frames decoded so far, and control pings timed until `until` resolves.
const HELPERS: &str = "
  const decoded = async () => {
    const report = await ferrocam.pc.getStats();
    let found = [0, performance.now()];
    // The report's own time, not when the promise resolved: the rate is frames over that.
    report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') found = [s.framesDecoded, s.timestamp]; });
    return found;
  };
  const pingWhile = async (until) => {
    const times = [];
    let finished = false;
    until.finally(() => { finished = true; });
    while (!finished) {
      const sent = performance.now();
      await ferrocam.control.request('ping');
      times.push(performance.now() - sent);
      await new Promise((r) => setTimeout(r, 100));
    }
    return times.sort((a, b) => a - b);
  };
  const p95 = (sorted) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))];
";

#[tokio::test]
async fn chromium_moves_50_mb_over_the_data_channel_while_video_and_control_carry_on()
-> anyhow::Result<()> {
    let stack = Stack::start(options("file_transfer")).await?;
    let browser = watching(&stack).await?;

    // Up: 50 MB of random bytes, checked by the device.
    let uploaded = upload_random(&browser, "fifty.bin", SIZE).await?;
    let file = uploaded["file"].as_str().unwrap_or_default().to_owned();
    let sha256 = uploaded["sha256"].as_str().unwrap_or_default().to_owned();
    let kept = stack
        .recordings_dir()
        .join("uploads")
        .join(format!("{file}.bin"));
    anyhow::ensure!(
        std::fs::metadata(&kept).map(|m| m.len()).ok() == Some(SIZE as u64),
        "the device kept {kept:?}"
    );

    // Down, with the picture and pings measured meanwhile.
    let down = run(
        &browser,
        "the download",
        &format!(
            "{HELPERS}
             const [frames, at] = await decoded();
             const fetching = FerrocamFiles.fetchWhole({{ id: '{file}', kind: 'upload' }});
             const pings = await pingWhile(fetching);
             await fetching;
             const [later, then] = await decoded();
             return {{ ...FerrocamFiles.state.lastDownload,
                       fps: (later - frames) * 1000 / (then - at),
                       ping_p50: pings[Math.floor(pings.length / 2)], ping_p95: p95(pings), pings: pings.length }};"
        ),
    )
    .await?;
    let seconds = down["ms"].as_f64().unwrap_or(f64::MAX) / 1000.0;
    eprintln!(
        "files: 50 MB up in {:.1} s ({:.1} MB/s); down in {seconds:.1} s ({:.1} MB/s) while the \
         page decoded {:.1} fps and control pings took p50 {:.1} ms, p95 {:.1} ms ({} pings)",
        uploaded["ms"].as_f64().unwrap_or(0.0) / 1000.0,
        50.0 / (uploaded["ms"].as_f64().unwrap_or(f64::MAX) / 1000.0),
        50.0 / seconds,
        down["fps"].as_f64().unwrap_or(0.0),
        down["ping_p50"].as_f64().unwrap_or(0.0),
        down["ping_p95"].as_f64().unwrap_or(0.0),
        down["pings"],
    );
    anyhow::ensure!(
        down["verified"] == true && down["sha256"] == sha256.as_str() && down["bytes"] == SIZE,
        "the download: {down}"
    );
    anyhow::ensure!(
        down["fps"].as_f64() >= Some(29.0),
        "video during the transfer: {down}"
    );
    anyhow::ensure!(
        down["ping_p95"].as_f64() <= Some(50.0),
        "pings during the transfer: {down}"
    );

    // Broken off at about 40 % (the channel closes, as when a connection drops), then asked
    // for again on a new channel: it continues from the bytes the page has.
    let resumed = run(
        &browser,
        "the resumed download",
        &format!(
            "const f = {{ id: '{file}', kind: 'upload' }};
             const first = FerrocamFiles.fetchWhole(f).then(() => 'finished', (e) => e.message);
             while ((FerrocamFiles.state.partial.get('{file}') || {{ received: 0 }}).received < {cut}) {{
               await new Promise((r) => setTimeout(r, 20));
             }}
             FerrocamFiles.state.client.channel.close();
             const outcome = await first;
             FerrocamFiles.state.client = null;
             FerrocamFiles.reopen();
             while (!FerrocamFiles.state.client) await new Promise((r) => setTimeout(r, 20));
             await FerrocamFiles.fetchWhole(f);
             return {{ outcome, ...FerrocamFiles.state.lastDownload }};",
            cut = SIZE * 2 / 5,
        ),
    )
    .await?;
    eprintln!(
        "files: broken off ({}), resumed from byte {}",
        resumed["outcome"], resumed["resumedFrom"]
    );
    anyhow::ensure!(
        resumed["resumedFrom"]
            .as_u64()
            .is_some_and(|from| from >= SIZE as u64 * 2 / 5 && from < SIZE as u64)
            && resumed["verified"] == true
            && resumed["sha256"] == sha256.as_str(),
        "the resumed download: {resumed}"
    );

    // A recording made with the Record button, listed with its thumbnail, played in the page.
    browser
        .js("document.getElementById('record').click(); return true;")
        .await?;
    eventually("recording", WAIT, || async {
        let text = browser
            .js("return document.getElementById('record').textContent;")
            .await?;
        Ok((text == "Stop recording").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser
        .js("document.getElementById('record').click(); return true;")
        .await?;
    let row = eventually("the recording listed with its thumbnail", WAIT, || async {
        browser.js("FerrocamFiles.list(); return true;").await?;
        let row = browser
            .js("const row = document.querySelector('#recordings li.file');
                 const img = row && row.querySelector('img.thumb');
                 return row && img && img.naturalWidth > 0 ? { id: row.dataset.id, thumb: img.naturalWidth } : null;")
            .await?;
        Ok((!row.is_null()).then_some(row))
    })
    .await?;
    browser
        .js("document.querySelector('#recordings li.file button').click(); return true;")
        .await?;
    let played = eventually("the recording to play in the page", WAIT, || async {
        let video = browser
            .js("const v = document.getElementById('playback');
                 return { width: v.videoWidth, time: v.currentTime, hidden: v.hidden };")
            .await?;
        let playing = video["width"] == 1280 && video["time"].as_f64() > Some(0.5);
        Ok(playing.then_some(video))
    })
    .await?;
    eprintln!(
        "files: recording {} (thumbnail {} px wide) plays in the page: {played}",
        row["id"], row["thumb"]
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_view_session_may_fetch_but_not_change_and_path_names_are_refused() -> anyhow::Result<()>
{
    let stack =
        Stack::start(options("file_transfer_view").gateway_args(&["--role", "view"])).await?;
    let browser = watching(&stack).await?;
    let answers = run(
        &browser,
        "the requests",
        "const c = FerrocamFiles.state.client;
         const attempt = (cmd, args) => c.request(cmd, args).then((ok) => ({ ok }), (e) => ({ code: e.code, message: e.message }));
         return {
           list: await attempt('files.list', {}),
           delete: await attempt('files.delete', { file: 'rec-20261130-200501-123' }),
           put: await attempt('files.put', { name: 'x', bytes: 10, sha256: '0'.repeat(64) }),
           snapshot: await attempt('files.snapshot', {}),
           path: await attempt('files.get', { file: '../../etc/passwd' }),
           absolute: await attempt('files.get', { file: '/etc/passwd' }),
           missing: await attempt('files.get', { file: 'rec-20000101-000000-000' }),
         };",
    )
    .await?;
    eprintln!("files, view session: {answers}");
    anyhow::ensure!(answers["list"]["ok"]["files"].is_array(), "{answers}");
    for refused in ["delete", "put", "snapshot"] {
        anyhow::ensure!(
            answers[refused]["code"] == "forbidden",
            "{refused}: {answers}"
        );
    }
    for bad in ["path", "absolute"] {
        anyhow::ensure!(answers[bad]["code"] == "bad_request", "{bad}: {answers}");
    }
    anyhow::ensure!(answers["missing"]["code"] == "not_found", "{answers}");
    // The page offers a view session no buttons that would only be refused.
    let hidden = browser
        .js("return ['record', 'keep-snapshot'].map((id) => document.getElementById(id).hidden);")
        .await?;
    anyhow::ensure!(hidden == serde_json::json!([true, true]), "{hidden}");
    browser.close().await?;
    Ok(())
}
