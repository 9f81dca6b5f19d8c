//! `ferrocam-files`, the script's way to a camera's files: a real WebRTC session through the
//! gateway's WHEP endpoint and the `files` data channel, with the stack's API token. Uploads a
//! file, lists it, fetches it back whole and from a `.part` left by an interrupted try, fetches
//! a recording that GStreamer then plays, and deletes.

use std::path::Path;
use std::process::Command;

use ferrocam_tests::process::workspace_bin;
use ferrocam_tests::recordings;
use ferrocam_tests::{Stack, StackOptions, eventually};
use serde_json::json;

/// Runs `ferrocam-files <device> <args…>` against the stack; (stdout, stderr).
fn files(stack: &Stack, args: &[&str]) -> anyhow::Result<(String, String)> {
    let token = stack.bearer();
    let token = token.trim_start_matches("Bearer ");
    let output = Command::new(workspace_bin("ferrocam-files")?)
        .args(["--url", &stack.url("")])
        .args(["--token", token])
        .args(["--udp", "127.0.0.1:0"])
        .arg(&stack.device_id)
        .args(args)
        .current_dir(&stack.log_dir)
        .output()?;
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    anyhow::ensure!(output.status.success(), "ferrocam-files {args:?}: {err}");
    Ok((out, err))
}

fn listed(stack: &Stack) -> anyhow::Result<String> {
    Ok(files(stack, &["list"])?.0)
}

#[tokio::test]
async fn a_script_uploads_lists_fetches_resumes_and_deletes_without_a_browser() -> anyhow::Result<()>
{
    let stack = Stack::start(StackOptions::new("files_cli").device_args(&[
        "--width",
        "640",
        "--height",
        "360",
        "--keyframe-interval",
        "30",
    ]))
    .await?;
    let dir = &stack.log_dir;

    // Up, and listed.
    let original: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("data.bin"), &original)?;
    let (id, _) = files(&stack, &["put", "data.bin"])?;
    let id = id.trim().to_owned();
    anyhow::ensure!(id.starts_with("up-"), "put printed {id:?}");
    anyhow::ensure!(
        listed(&stack)?.contains(&format!("{id}\tupload\t3000000")),
        "not listed"
    );

    // Down whole, then from a .part of its first megabyte (as an interrupted run leaves).
    let (_, said) = files(&stack, &["get", &id, "--out", "whole.bin"])?;
    anyhow::ensure!(
        std::fs::read(dir.join("whole.bin"))? == original,
        "whole.bin differs"
    );
    std::fs::write(dir.join("resumed.bin.part"), &original[..1_000_000])?;
    let (_, resumed) = files(&stack, &["get", &id, "--out", "resumed.bin"])?;
    anyhow::ensure!(resumed.contains("resumed at byte 1000000"), "{resumed}");
    anyhow::ensure!(
        std::fs::read(dir.join("resumed.bin"))? == original,
        "resumed.bin differs"
    );
    anyhow::ensure!(!dir.join("resumed.bin.part").exists(), "the .part stayed");
    eprintln!("files cli: {}; {}", said.trim(), resumed.trim());

    // A recording, fetched by a script and played by GStreamer.
    let (code, body) = stack.control(json!({"cmd": "record.start", "seconds": 2}))?;
    anyhow::ensure!(code == 200, "record.start: {code} {body}");
    let recording = eventually(
        "a recording",
        std::time::Duration::from_secs(30),
        || async {
            let list = listed(&stack)?;
            Ok(list
                .lines()
                .find(|l| l.contains("\trecording\t"))
                .map(|l| l.split('\t').next().unwrap_or("").to_owned()))
        },
    )
    .await?;
    files(&stack, &["get", &recording])?;
    let played = recordings::play(&dir.join(format!("{recording}.mp4")))?;
    anyhow::ensure!(
        played.frames >= 50 && (played.width, played.height) == (640, 360),
        "{played:?}"
    );
    files(
        &stack,
        &["get", &recording, "--thumbnail", "--out", "thumb.jpg"],
    )?;
    anyhow::ensure!(
        ferrocam_tests::jpeg_size(&std::fs::read(dir.join("thumb.jpg"))?).is_some(),
        "not a JPEG"
    );

    // Deleted, and a clear error for what is not there.
    files(&stack, &["delete", &id])?;
    anyhow::ensure!(!listed(&stack)?.contains(&id), "still listed");
    let missing = files(&stack, &["get", &id]).unwrap_err().to_string();
    anyhow::ensure!(missing.contains("not_found"), "{missing}");
    anyhow::ensure!(!Path::new(&dir.join(format!("{id}.bin"))).exists());
    Ok(())
}
