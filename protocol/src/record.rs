//! Recording on the device: the names of the files it keeps, and what `status` says about it.
//!
//! Files on a device are named by a [`FileId`] the device chose, never by a path a client
//! sent: a client can only ever name a file the device listed, and an id cannot spell `..`, a
//! slash or anything else a filesystem would read as a path.
//!
//! ```text
//! rec-20261130-200501-123     a recorded segment that began 2026-11-30 20:05:01.123 UTC
//! snap-20261130-200501-123    a snapshot taken then
//! up-20261130-200501-123      a file a viewer sent to the device then
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest a `record.start` or `record.clip` may ask to record for: a day.
pub const MAX_RECORD_SECONDS: u32 = 24 * 3600;

/// What a device keeps on its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A segment of recorded video and sound (fragmented MP4).
    Recording,
    /// A still picture (JPEG).
    Snapshot,
    /// A file a viewer sent to the device (`files.put`).
    Upload,
}

impl FileKind {
    fn prefix(self) -> &'static str {
        match self {
            FileKind::Recording => "rec",
            FileKind::Snapshot => "snap",
            FileKind::Upload => "up",
        }
    }
}

/// The name of one file on a device: its kind and the UTC time it began, to the millisecond.
/// Ordered by time within a kind, so a sorted list is oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    kind: FileKind,
    /// Milliseconds since the Unix epoch.
    unix_ms: u64,
}

/// Why a string is not a [`FileId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a file id (like rec-20261130-200501-123)")]
pub struct BadFileId(pub String);

impl FileId {
    /// The id of a file of `kind` that began `unix_ms` after the epoch.
    pub fn new(kind: FileKind, unix_ms: u64) -> Self {
        Self { kind, unix_ms }
    }

    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// When the file began, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        self.unix_ms
    }

    /// The id one millisecond later: how a device names two files begun in the same one.
    pub fn next(&self) -> Self {
        Self::new(self.kind, self.unix_ms + 1)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, millis) = (self.unix_ms / 1000, self.unix_ms % 1000);
        let (days, secs) = (date / 86_400, date % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{millis:03}",
            self.kind.prefix(),
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

impl std::str::FromStr for FileId {
    type Err = BadFileId;

    /// Accepts exactly what [`fmt::Display`] writes, and nothing else: a fixed shape of ASCII
    /// digits, so no other string (a path, a wildcard, a long one) gets through.
    fn from_str(s: &str) -> Result<Self, BadFileId> {
        let bad = || BadFileId(s.chars().take(64).collect());
        let (kind, rest) = if let Some(rest) = s.strip_prefix("rec-") {
            (FileKind::Recording, rest)
        } else if let Some(rest) = s.strip_prefix("snap-") {
            (FileKind::Snapshot, rest)
        } else if let Some(rest) = s.strip_prefix("up-") {
            (FileKind::Upload, rest)
        } else {
            return Err(bad());
        };
        let bytes = rest.as_bytes();
        let shape_ok = bytes.len() == 19
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 15 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| -> u64 {
            rest[range].parse().expect("checked to be digits")
        };
        let (y, m, d) = (number(0..4), number(4..6), number(6..8));
        let (hh, mm, ss, ms) = (
            number(9..11),
            number(11..13),
            number(13..15),
            number(16..19),
        );
        let days_in_month = match m {
            2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            1..=12 => 31,
            _ => return Err(bad()),
        };
        if y < 1970 || !(1..=days_in_month).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
            return Err(bad());
        }
        let days = days_from_civil(y as i64, m as u32, d as u32) as u64;
        let unix_ms = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms;
        Ok(Self { kind, unix_ms })
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: the inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What the device records when nobody asks it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Only on `record.start` or `record.clip`.
    #[default]
    Off,
    /// All the time, in segments.
    Continuous,
    /// Keeps the last few seconds in memory, so a clip (`record.clip`, a GPIO edge) begins
    /// before its trigger.
    Events,
}

/// The `recording` part of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordingStatus {
    pub mode: RecordMode,
    /// A segment is being written now.
    pub recording: bool,
    /// Why the device is not recording although it was asked to (in words, for people):
    /// the disk is low, the camera is down, `record.stop` paused continuous recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// The segment being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<FileId>,
    /// When a `record.start` or clip ends by itself, in ms since the epoch (none: it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_unix_ms: Option<u64>,
    /// Seconds of pre-roll a clip begins with (events mode).
    pub preroll_secs: u32,
    /// How far back the pre-roll held now reaches, in ms: a clip started now begins this long
    /// ago (it fills up after the camera starts).
    #[serde(default)]
    pub preroll_held_ms: u64,
    /// Finished segments kept, and their bytes.
    pub segments: usize,
    pub bytes: u64,
    /// The most the recordings may take on disk (none: no budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<u64>,
    /// Free space on the recordings' filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_utc_times() {
        // 2026-11-30 20:05:01.123 UTC
        let id = FileId::new(FileKind::Recording, 1_796_069_101_123);
        assert_eq!(id.to_string(), "rec-20261130-200501-123");
        assert_eq!("rec-20261130-200501-123".parse::<FileId>(), Ok(id));
        let snap: FileId = "snap-20000229-000000-000".parse().unwrap();
        assert_eq!(snap.kind(), FileKind::Snapshot);
        assert_eq!(snap.unix_ms(), 951_782_400_000);
        for ms in [0, 1, 86_399_999, 951_782_400_000, 4_102_444_800_000] {
            let id = FileId::new(FileKind::Snapshot, ms);
            assert_eq!(id.to_string().parse::<FileId>(), Ok(id), "{id}");
        }
    }

    #[test]
    fn anything_that_is_not_exactly_an_id_is_refused() {
        for bad in [
            "",
            "rec-",
            "../rec-20261130-200501-123",
            "rec-20261130-200501-123/..",
            "rec-20261130-200501-12",
            "rec-20261130-200501-1234",
            "rec-20261130_200501-123",
            "rec-2026113a-200501-123",
            "rec-20261131-200501-123",
            "rec-20250229-200501-123",
            "rec-20261130-240000-000",
            "rec-19691231-235959-999",
            "REC-20261130-200501-123",
            "clip-20261130-200501-123",
            "rec-20261130-200501-123\0",
            "rec-２0261130-200501-123",
        ] {
            assert!(bad.parse::<FileId>().is_err(), "{bad:?} was accepted");
        }
        let long = "rec-".repeat(10_000);
        assert!(long.parse::<FileId>().unwrap_err().0.len() <= 64);
    }

    #[test]
    fn ids_sort_oldest_first_and_travel_as_strings() {
        let a: FileId = "rec-20261130-200501-123".parse().unwrap();
        assert!(a < a.next());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"rec-20261130-200501-123\"");
        assert_eq!(serde_json::from_str::<FileId>(&json).unwrap(), a);
        assert!(serde_json::from_str::<FileId>("\"/etc/passwd\"").is_err());
    }
}
