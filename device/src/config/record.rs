//! Flags for recording on the device (`--record …`), flattened into the device's config.

use std::path::PathBuf;
use std::time::Duration;

use ferrocam_protocol::record::RecordMode;

use crate::record::RecordSettings;

/// Recording flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordFlags {
    /// What to record without being asked: `off` (only on `record.start` / `record.clip`),
    /// `continuous`, or `events` (keeps `--record-preroll-s` in memory so a clip begins before
    /// its trigger; the camera then runs all the time).
    #[arg(long = "record", env = "FERROCAM_RECORD", default_value = "off", value_parser = parse_mode)]
    pub mode: RecordMode,

    /// Where recordings are kept (`none` turns recording off altogether).
    #[arg(
        long = "record-dir",
        env = "FERROCAM_RECORD_DIR",
        default_value = "/var/lib/ferrocam/recordings"
    )]
    pub dir: PathBuf,

    /// Seconds of video per file (a new one starts at the first keyframe after this).
    #[arg(long = "record-segment-s", env = "FERROCAM_RECORD_SEGMENT_S", default_value_t = 60, value_parser = clap::value_parser!(u32).range(2..=3600))]
    pub segment_secs: u32,

    /// Seconds before a trigger an event clip begins with (`--record events`).
    #[arg(long = "record-preroll-s", env = "FERROCAM_RECORD_PREROLL_S", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=60))]
    pub preroll_secs: u32,

    /// Seconds an event clip goes on after its trigger, unless the trigger says otherwise.
    #[arg(long = "record-clip-s", env = "FERROCAM_RECORD_CLIP_S", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub clip_secs: u32,

    /// The most the recordings may take on disk, in MB; the oldest go first (0: no budget,
    /// only the free-space guard).
    #[arg(
        long = "record-budget-mb",
        env = "FERROCAM_RECORD_BUDGET_MB",
        default_value_t = 2048
    )]
    pub budget_mb: u64,

    /// Recordings older than this many hours are removed (0: kept until the budget needs room).
    #[arg(
        long = "record-keep-hours",
        env = "FERROCAM_RECORD_KEEP_HOURS",
        default_value_t = 0
    )]
    pub keep_hours: u64,

    /// Recording pauses when the filesystem has less than this free, in MB ...
    #[arg(
        long = "record-min-free-mb",
        env = "FERROCAM_RECORD_MIN_FREE_MB",
        default_value_t = 256
    )]
    pub min_free_mb: u64,

    /// ... and resumes by itself once it has this much again (default: twice the minimum).
    #[arg(long = "record-resume-free-mb", env = "FERROCAM_RECORD_RESUME_FREE_MB")]
    pub resume_free_mb: Option<u64>,

    /// The largest file a viewer with the control role may send to the device (`files.put`),
    /// in MB; all uploads together may take four times this.
    #[arg(
        long = "upload-max-mb",
        env = "FERROCAM_UPLOAD_MAX_MB",
        default_value_t = 100
    )]
    pub upload_max_mb: u64,

    /// A GPIO input line (by its `--gpio` name) whose rising edge starts an event clip.
    #[arg(long = "record-trigger", env = "FERROCAM_RECORD_TRIGGER")]
    pub trigger: Option<String>,
}

const MB: u64 = 1024 * 1024;

impl RecordFlags {
    /// Whether recording is possible at all.
    pub fn enabled(&self) -> bool {
        self.dir.as_os_str() != "none"
    }

    /// The largest upload, in bytes.
    pub fn upload_max_bytes(&self) -> u64 {
        self.upload_max_mb.saturating_mul(MB)
    }

    /// The recorder's settings.
    pub fn settings(&self) -> RecordSettings {
        let seconds = |s: u32| Duration::from_secs(s.into());
        RecordSettings {
            mode: self.mode,
            dir: self.dir.clone(),
            segment: seconds(self.segment_secs),
            preroll: seconds(self.preroll_secs),
            clip: seconds(self.clip_secs),
            budget_bytes: (self.budget_mb > 0).then(|| self.budget_mb.saturating_mul(MB)),
            max_age: (self.keep_hours > 0)
                .then(|| Duration::from_secs(self.keep_hours.saturating_mul(3600))),
            min_free_bytes: self.min_free_mb.saturating_mul(MB),
            resume_free_bytes: self
                .resume_free_mb
                .unwrap_or(self.min_free_mb.saturating_mul(2))
                .max(self.min_free_mb)
                .saturating_mul(MB),
        }
    }
}

fn parse_mode(s: &str) -> Result<RecordMode, String> {
    match s {
        "off" => Ok(RecordMode::Off),
        "continuous" => Ok(RecordMode::Continuous),
        "events" => Ok(RecordMode::Events),
        other => Err(format!("{other:?} is not off, continuous or events")),
    }
}
