//! `make demo`'s script: starts gateway + device, prints the URL, and stops both on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocam_tests::eventually;
use ferrocam_tests::process::{free_port, workspace_root};

#[tokio::test]
async fn demo_prints_the_url_serves_the_device_and_stops_cleanly_on_ctrl_c() -> anyhow::Result<()> {
    let root = workspace_root();
    let http = format!("127.0.0.1:{}", free_port());
    let mut demo = Command::new("bash");
    demo.arg(root.join("scripts/demo.sh"))
        .env("FERROCAM_BIN_DIR", root.join("target/debug"))
        .env("FERROCAM_HTTP", &http)
        .env("FERROCAM_MQTT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FERROCAM_SOURCE", "test")
        .env("FERROCAM_ICE_UDP", "127.0.0.1:0")
        .env(
            "FERROCAM_DEMO_DIR",
            root.join("target/e2e-logs/demo_script"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Ctrl-C must reach the script however this test was started: a shell that runs a job in
    // the background without job control starts it with SIGINT ignored, and a signal ignored at
    // entry cannot be trapped (the script's `trap stop INT` would never run).
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut demo, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut demo = demo.spawn()?;
    // Should the test fail midway, Ctrl-C the demo anyway: its gateway and device must not
    // outlive the test (they would hold ports, and whatever the test process held).
    let _stop_on_failure = Interrupt(demo.id());

    let stdout = demo.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let url = format!("http://{http}/");
    // The banner names the URL, a login and an API token.
    let (mut printed_url, mut login, mut token) = (false, None, None);
    for _ in 0..100 {
        let Ok(line) = line_rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        printed_url |= line.contains(&url);
        if let Some(rest) = line.trim().strip_prefix("login:") {
            login = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("API token:") {
            token = Some(rest.trim().to_owned());
        }
        if printed_url && login.is_some() && token.is_some() {
            break;
        }
    }
    assert!(printed_url, "the demo did not print {url}");
    let login = login.expect("the demo prints a login");
    assert!(login.starts_with("demo / ") && login.len() > 10, "{login}");
    let token = token.expect("the demo prints an API token");
    assert!(token.starts_with("fct_"), "{token}");

    let devices = format!("{url}api/devices/demo");
    // Without the token: refused.
    let refused = ureq::get(&devices).call();
    assert!(
        matches!(refused, Err(ureq::Error::StatusCode(401))),
        "{refused:?}"
    );
    let bearer = format!("Bearer {token}");
    eventually("the demo device online", Duration::from_secs(30), || {
        let (devices, bearer) = (devices.clone(), bearer.clone());
        async move {
            let body: serde_json::Value = ureq::get(&devices)
                .header("authorization", &bearer)
                .call()?
                .body_mut()
                .read_json()?;
            Ok((body["online"] == true).then_some(()))
        }
    })
    .await?;

    // Ctrl-C: the script stops the device and the gateway and exits.
    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()?;
    let exited = eventually("the demo to exit", Duration::from_secs(10), || {
        let status = demo.try_wait();
        async move { Ok(status?) }
    })
    .await?;
    assert!(
        exited.code().is_some(),
        "demo was killed, not stopped: {exited:?}"
    );
    assert!(
        std::net::TcpStream::connect(&http).is_err(),
        "the gateway is still listening after Ctrl-C"
    );
    Ok(())
}

/// Sends SIGINT to a process when dropped.
struct Interrupt(u32);

impl Drop for Interrupt {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
