//! Recording on the device, with real devices, real GStreamer and real filesystems:
//!
//! - ten minutes of continuous 720p30 recording, every segment decoded, durations adding up;
//! - `kill -9` mid-segment: earlier segments intact, the cut one plays up to the kill and is
//!   recovered at the next start; retention then removes the oldest within the budget;
//! - the same in short segments with no periodic keyframes (`--keyframe-interval 0`): the
//!   recorder asks for each segment's first keyframe;
//! - event clips that begin before their trigger, and `record.start` / `record.stop`;
//! - a filesystem (a tmpfs of its own) filled to the last byte: recording pauses and says why,
//!   streaming and control go on, and recording resumes once there is room.
//!
//! The ten-minute run takes ten minutes whatever else happens, so the other scenarios run
//! beside it, each with its own gateway and device. `FERROCAM_RECORDING_MINUTES` shortens the
//! long run for local work.

#[path = "recording/clips.rs"]
mod clips;
#[path = "recording/common.rs"]
mod common;
#[path = "recording/continuous.rs"]
mod continuous;
#[path = "recording/crash.rs"]
mod crash;
#[path = "recording/disk_full.rs"]
mod disk_full;

use std::time::Duration;

use clips::clips_and_commands;
use continuous::{Run, continuous};
use crash::kill_and_retention;
use disk_full::disk_full;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recordings_play_survive_kill_9_follow_their_budget_and_pause_on_a_full_disk()
-> anyhow::Result<()> {
    let minutes: u64 = std::env::var("FERROCAM_RECORDING_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    // Only some scenarios, for local work:
    // FERROCAM_RECORDING_ONLY=kill,clips,full,continuous,long_gop
    let only = std::env::var("FERROCAM_RECORDING_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|n| n == name);
    let long = async {
        match run("continuous") {
            true => {
                continuous(Run {
                    name: "recording_continuous",
                    length: Duration::from_secs(60 * minutes),
                    segment: Duration::from_secs(60),
                    args: &[],
                })
                .await
            }
            false => Ok(()),
        }
    };
    let others = async {
        // One after another beside the long run: two extra devices at a time at most.
        let killed = match run("kill") {
            true => kill_and_retention().await,
            false => Ok(()),
        };
        let long_gop = match run("long_gop") {
            true => {
                continuous(Run {
                    name: "recording_long_gop",
                    length: Duration::from_secs(22),
                    segment: Duration::from_secs(5),
                    args: &["--keyframe-interval", "0"],
                })
                .await
            }
            false => Ok(()),
        };
        let clips = match run("clips") {
            true => clips_and_commands().await,
            false => Ok(()),
        };
        let full = match run("full") {
            true => disk_full().await,
            false => Ok(()),
        };
        (killed, long_gop, clips, full)
    };
    let (long, (killed, long_gop, clips, full)) = tokio::join!(long, others);
    let mut failed = Vec::new();
    for (name, outcome) in [
        ("continuous", long),
        ("kill -9 and retention", killed),
        ("no periodic keyframes", long_gop),
        ("clips and commands", clips),
        ("disk full", full),
    ] {
        if let Err(e) = outcome {
            failed.push(format!("{name}: {e:#}"));
        }
    }
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
