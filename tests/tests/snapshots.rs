//! Snapshots any time: from an idle camera (woken for it, asleep again after the idle
//! timeout), while someone watches, from a camera whose own H.264 passes through, for clients
//! that poll, from the `ctl` CLI and from the page's camera list. Times are printed
//! (`--nocapture`) and collected in BENCHMARKS.md; the assertions wait on events.

use std::process::Command;
use std::time::{Duration, Instant};

use ferrocam_tests::process::{cpu_seconds, free_port, workspace_bin};
use ferrocam_tests::{Browser, Stack, StackOptions, WhepPlayer, eventually, jpeg_size};

/// Long enough for anything here; reached only when something is broken.
const WAIT: Duration = Duration::from_secs(20);

struct Shot {
    status: u16,
    jpeg: Vec<u8>,
    last_modified: Option<String>,
    cache_control: Option<String>,
    took: Duration,
}

fn snapshot(stack: &Stack, query: &str) -> anyhow::Result<Shot> {
    let url = stack.url(&format!(
        "api/devices/{}/snapshot.jpg{query}",
        stack.device_id
    ));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let started = Instant::now();
    let mut response = agent
        .get(&url)
        .header("authorization", &stack.bearer())
        .call()?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (last_modified, cache_control) = (header("last-modified"), header("cache-control"));
    let status = response.status().as_u16();
    let jpeg = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()?;
    Ok(Shot {
        status,
        jpeg,
        last_modified,
        cache_control,
        took: started.elapsed(),
    })
}

/// One series of the device's `/metrics` page on `port`.
fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    ferrocam_tests::metric(&format!("http://127.0.0.1:{port}/metrics"), name)
}

async fn camera_asleep(port: u16) -> anyhow::Result<()> {
    eventually("the camera to go idle", WAIT, || async {
        Ok((metric(port, "ferrocam_device_camera_running")? == 0.0).then_some(()))
    })
    .await
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

fn device(test: &str, metrics: u16, extra: &[&str]) -> StackOptions {
    let metrics = format!("127.0.0.1:{metrics}");
    let mut args = vec![
        "--width",
        "1280",
        "--height",
        "720",
        "--idle-timeout-secs",
        "1",
        "--metrics-listen",
        &metrics,
    ];
    args.extend_from_slice(extra);
    StackOptions::new(test).device_args(&args)
}

#[tokio::test]
async fn an_idle_camera_is_woken_for_a_snapshot_and_sleeps_again() -> anyhow::Result<()> {
    let port = free_port();
    let stack = Stack::start(device("snapshot_cold", port, &[])).await?;

    let mut cold = Vec::new();
    for _ in 0..7 {
        camera_asleep(port).await?;
        let shot = snapshot(&stack, "")?;
        assert_eq!(shot.status, 200, "{}", String::from_utf8_lossy(&shot.jpeg));
        assert_eq!(jpeg_size(&shot.jpeg), Some((1280, 720)));
        assert!(shot.last_modified.is_some(), "a Last-Modified header");
        assert_eq!(shot.cache_control.as_deref(), Some("private, no-cache"));
        cold.push(shot.took);
    }
    let (p50, worst) = (percentile(&mut cold, 0.5), *cold.iter().max().unwrap());

    // A recent picture will do: answered without waking the camera.
    camera_asleep(port).await?;
    let taken = metric(port, "ferrocam_device_snapshots_total")?;
    let shot = snapshot(&stack, "?max_age_ms=600000")?;
    assert_eq!(
        (shot.status, jpeg_size(&shot.jpeg)),
        (200, Some((1280, 720)))
    );
    assert_eq!(metric(port, "ferrocam_device_snapshots_reused_total")?, 1.0);
    assert_eq!(metric(port, "ferrocam_device_snapshots_total")?, taken);
    assert_eq!(metric(port, "ferrocam_device_camera_running")?, 0.0);

    // A thumbnail, and a width out of range.
    let thumb = snapshot(&stack, "?width=640")?;
    assert_eq!(
        (thumb.status, jpeg_size(&thumb.jpeg)),
        (200, Some((640, 360)))
    );
    assert_eq!(snapshot(&stack, "?width=5")?.status, 400);
    assert_eq!(snapshot(&stack, "?width=lots")?.status, 400);

    // The CLI, with nobody watching.
    camera_asleep(port).await?;
    let out = stack.log_dir.join("ctl-snapshot.jpg");
    let ctl = Command::new(workspace_bin("ferrocam-gateway")?)
        .args([
            "ctl",
            "--url",
            &stack.url(""),
            "--token",
            &stack.creds.token,
        ])
        .args([&stack.device_id, "snapshot", "width=320"])
        .arg(format!("out={}", out.display()))
        .output()?;
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert_eq!(jpeg_size(&std::fs::read(&out)?), Some((320, 180)));

    // Warm: while a viewer watches.
    let player = WhepPlayer::connect(&stack.url(&format!("whep/{}", stack.device_id))).await?;
    player.wait_frames(30, WAIT).await?;
    let mut warm = Vec::new();
    for _ in 0..20 {
        let shot = snapshot(&stack, "")?;
        assert_eq!(shot.status, 200);
        warm.push(shot.took);
    }
    let warm_p50 = percentile(&mut warm, 0.5);
    eprintln!(
        "snapshot.jpg 1280×720: cold p50 {p50:?}, worst {worst:?} ({} runs); warm p50 {warm_p50:?} (20 runs)",
        cold.len()
    );
    player.close().await;
    Ok(())
}

#[tokio::test]
async fn a_camera_passing_its_own_h264_through_gives_a_snapshot() -> anyhow::Result<()> {
    let port = free_port();
    // Stands in for a UVC camera with an H.264 encoder of its own.
    let camera = "pipeline:videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 \
                  ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=300 \
                  ! video/x-h264,profile=constrained-baseline";
    let stack = Stack::start(device(
        "snapshot_passthrough",
        port,
        &["--source", camera, "--capture-format", "h264"],
    ))
    .await?;
    camera_asleep(port).await?;
    let shot = snapshot(&stack, "")?;
    assert_eq!(shot.status, 200, "{}", String::from_utf8_lossy(&shot.jpeg));
    assert_eq!(jpeg_size(&shot.jpeg), Some((640, 360)));
    let thumb = snapshot(&stack, "?width=320")?;
    assert_eq!(jpeg_size(&thumb.jpeg), Some((320, 180)));
    Ok(())
}

#[tokio::test]
async fn a_client_polling_every_two_seconds_gets_every_picture() -> anyhow::Result<()> {
    let port = free_port();
    // The default idle timeout (10 s): polling keeps the camera warm, and it sleeps after.
    let metrics = format!("127.0.0.1:{port}");
    let stack = Stack::start(StackOptions::new("snapshot_polling").device_args(&[
        "--width",
        "1280",
        "--height",
        "720",
        "--metrics-listen",
        &metrics,
    ]))
    .await?;
    let pid = stack.device.as_ref().expect("device running").pid();
    camera_asleep(port).await?;
    let cpu_before = cpu_seconds(pid)?;
    let polling = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut times = Vec::new();
    for _ in 0..30 {
        ticker.tick().await;
        let shot = snapshot(&stack, "")?;
        assert_eq!(shot.status, 200, "{}", String::from_utf8_lossy(&shot.jpeg));
        assert_eq!(jpeg_size(&shot.jpeg), Some((1280, 720)));
        times.push(shot.took);
    }
    let cpu = (cpu_seconds(pid)? - cpu_before) / polling.elapsed().as_secs_f64();
    let stopped = Instant::now();
    camera_asleep(port).await?;
    eprintln!(
        "polling every 2 s: 30 of 30 JPEGs, p50 {:?}, worst {:?}; device CPU {:.0} % of one core; \
         camera asleep {:?} after the last",
        percentile(&mut times.clone(), 0.5),
        times.iter().max().unwrap(),
        cpu * 100.0,
        stopped.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn the_page_takes_a_snapshot_from_the_camera_list_without_watching() -> anyhow::Result<()> {
    let port = free_port();
    let stack = Stack::start(device("snapshot_page", port, &[])).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    camera_asleep(port).await?;
    let button = format!("li[data-device='{}'] .still", stack.device_id);
    eventually("the snapshot button", WAIT, || async {
        Ok(browser
            .client
            .find(fantoccini::Locator::Css(&button))
            .await
            .ok())
    })
    .await?
    .click()
    .await?;
    let still = eventually("the snapshot in the list", WAIT, || async {
        let v = browser.js("return window.ferrocam.lastStill;").await?;
        Ok((!v.is_null()).then_some(v))
    })
    .await?;
    assert_eq!(
        (still["width"].as_u64(), still["height"].as_u64()),
        (Some(640), Some(360)),
        "{still}"
    );
    let watching = browser.js("return window.ferrocam.device;").await?;
    assert!(watching.is_null(), "nobody started watching: {watching}");
    Ok(())
}
