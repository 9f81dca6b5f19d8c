//! The device under systemd's `Type=notify` protocol: READY, WATCHDOG while healthy, STOPPING
//! and a graceful exit on SIGTERM that hangs up viewers first. The test plays systemd's part
//! with a datagram socket in `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use ferrocam_tests::whep::http;
use ferrocam_tests::{Stack, StackOptions, WhepPlayer, eventually};

/// Collects notify messages until `until` returns true for one, or the timeout.
fn wait_for(socket: &UnixDatagram, timeout: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&msg);
            seen.push(msg);
            if done {
                break;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_speaks_sd_notify_and_stops_gracefully() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferrocam-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;

    let mut stack = Stack::start(
        StackOptions::new("sd_notify")
            .device_env("NOTIFY_SOCKET", &path.display().to_string())
            .device_env("WATCHDOG_USEC", "400000"),
    )
    .await?;
    let seen = wait_for(&socket, Duration::from_secs(15), |m| m.contains("READY=1"));
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=streaming ready; connected to the broker")),
        "{seen:?}"
    );

    // With a viewer attached and frames flowing, the watchdog keeps being petted.
    let viewer = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    viewer.wait_frames(10, Duration::from_secs(20)).await?;
    let pets = wait_for(&socket, Duration::from_secs(2), |_| false);
    let count = pets.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        count >= 5,
        "{count} watchdog pings in 2 s at a 400 ms watchdog: {pets:?}"
    );

    // SIGTERM: STOPPING, viewers hung up through the gateway, a clean exit within 5 s.
    let device = stack.device.as_mut().expect("device");
    let started = Instant::now();
    let status = device
        .terminate(Duration::from_secs(5))
        .expect("the device exits within 5 s");
    assert!(status.success(), "{status:?}");
    eprintln!("device stopped in {:?}", started.elapsed());
    let stopping = wait_for(&socket, Duration::from_millis(500), |m| {
        m.contains("STOPPING=1")
    });
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "{stopping:?}"
    );
    eventually(
        "the gateway to drop the session",
        Duration::from_secs(3),
        || async {
            let health = http("GET", stack.url("healthz"), vec![], None).await?;
            Ok(health.body.contains("\"sessions\":0").then_some(()))
        },
    )
    .await?;
    stack.wait_online(false).await?;
    viewer.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
