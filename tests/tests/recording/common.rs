//! What the recording scenarios share: a device that records, and reading what it says.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ferrocam_protocol::record::FileId;
use ferrocam_tests::recordings::Played;
use ferrocam_tests::{Stack, StackOptions};
use serde_json::{Value, json};

/// Long enough for anything here; reached only when something is broken.
pub const WAIT: Duration = Duration::from_secs(30);

/// A 720p30 test pattern (with its test tone) and these recording flags.
pub fn options(test: &str, extra: &[&str]) -> StackOptions {
    let mut args = vec!["--width", "1280", "--height", "720", "--fps", "30"];
    args.extend_from_slice(extra);
    StackOptions::new(test).device_args(&args)
}

/// `status.recording`, through the gateway's REST relay.
pub fn recording(stack: &Stack) -> anyhow::Result<Value> {
    let (code, body) = stack.control(json!({"cmd": "status"}))?;
    anyhow::ensure!(code == 200, "status answered {code}: {body}");
    Ok(body["ok"]["recording"].clone())
}

/// Waits until `status.recording` satisfies `test`, and returns it. Asks three times a second:
/// the gateway limits how often one client may send control requests.
pub async fn wait_for(
    stack: &Stack,
    what: &str,
    test: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = recording(stack)?;
        if test(&status) {
            return Ok(status);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A control command; its (HTTP status, response).
pub fn command(stack: &Stack, request: Value) -> anyhow::Result<(u16, Value)> {
    stack.control(request)
}

/// When the file named `id` (`rec-…`, a path or a bare name) began, in ms since the epoch.
pub fn began_ms(name: &str) -> anyhow::Result<u64> {
    let name = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name);
    let id = name.split('.').next().unwrap_or(name);
    Ok(id.parse::<FileId>()?.unix_ms())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A segment's description (its `.json`), as the device wrote it.
pub fn description(media: &Path) -> anyhow::Result<Value> {
    let name = media.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let id = name.split('.').next().unwrap_or(name);
    let path = media.with_file_name(format!("{id}.json"));
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

/// Decodes a recording on a blocking thread.
pub async fn play(path: &Path) -> anyhow::Result<Played> {
    let path = path.to_owned();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || ferrocam_tests::recordings::play(&path))
        .await?
        .map_err(|e| e.context(format!("playing {shown}")))
}
