//! The recordings directory: which segments exist, what each holds, and removing them.
//!
//! Every segment `rec-…` is up to three files, all named from its [`FileId`]:
//!
//! ```text
//! rec-20261130-200501-123.mp4.part   while it is written (a cut-off one is recovered at start)
//! rec-20261130-200501-123.mp4        once finished
//! rec-20261130-200501-123.json       what it holds (time, duration, size, tracks)
//! rec-20261130-200501-123.jpg        a thumbnail of its first frame
//! ```
//!
//! Names are only ever built from ids the device made; files in the directory with any other
//! name are left alone and never listed.
//!
//! The index lives in memory behind a short lock; reading and writing files is blocking and
//! happens on the callers' blocking threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ferrocam_protocol::record::{FileId, FileKind};
use serde::{Deserialize, Serialize};

use super::probe::Probed;

/// What the device knows about one finished segment (its `.json` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: FileId,
    pub duration_ms: u64,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub audio: bool,
    /// Cut off (the device stopped without finishing it) and recovered at the next start: it
    /// plays up to its last complete fragment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// The directory and its index.
pub struct Store {
    dir: PathBuf,
    segments: Mutex<BTreeMap<FileId, SegmentInfo>>,
}

impl Store {
    /// Opens (creating) the directory and reads what is there. Segments cut off by a crash or
    /// power loss are renamed into place, measured with `measure`, and kept. Blocking.
    pub fn open(
        dir: &Path,
        measure: impl Fn(&Path) -> anyhow::Result<Probed>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the recordings directory {}", dir.display()))?;
        let store = Self {
            dir: dir.to_owned(),
            segments: Mutex::default(),
        };
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((stem, extension)) = name.split_once('.') else {
                continue;
            };
            let Ok(id) = stem.parse::<FileId>() else {
                continue;
            };
            if id.kind() == FileKind::Recording {
                found
                    .entry(id)
                    .or_insert_with(Vec::new)
                    .push(extension.to_owned());
            }
        }
        let mut index = BTreeMap::new();
        for (id, extensions) in found {
            let has = |ext: &str| extensions.iter().any(|e| e == ext);
            if has("mp4.part") {
                if let Some(info) = store.recover(id, &measure) {
                    index.insert(id, info);
                }
            } else if has("mp4") {
                match store.read_info(id) {
                    Some(info) => {
                        index.insert(id, info);
                    }
                    None => {
                        if let Some(info) = store.recover(id, &measure) {
                            index.insert(id, info);
                        }
                    }
                }
            } else {
                // What is left of a removed segment: its thumbnail or its description.
                store.remove_files(id);
            }
        }
        *store.segments.lock().expect("store lock") = index;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where segment `id` is written while it is open.
    pub fn part_path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id}.mp4.part"))
    }

    /// Where finished segment `id` is.
    pub fn media_path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id}.mp4"))
    }

    /// Where segment `id`'s thumbnail is.
    pub fn thumbnail_path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id}.jpg"))
    }

    fn info_path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// An id for a segment beginning now that no other segment has.
    pub fn new_id(&self, began: SystemTime) -> FileId {
        let ms = began
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut id = FileId::new(FileKind::Recording, ms);
        let segments = self.segments.lock().expect("store lock");
        while segments.contains_key(&id) || self.part_path(id).exists() {
            id = id.next();
        }
        id
    }

    /// Files a finished segment: the `.part` becomes the `.mp4`, its description is written,
    /// and both are on disk before this returns. Blocking.
    pub fn finish(&self, mut info: SegmentInfo) -> anyhow::Result<()> {
        let media = self.media_path(info.id);
        std::fs::rename(self.part_path(info.id), &media)
            .with_context(|| format!("filing {}", info.id))?;
        info.bytes = std::fs::metadata(&media).map_or(0, |m| m.len());
        // Listed even if its description cannot be written (a full disk): the next start
        // measures it again, as it does a cut-off one.
        self.segments
            .lock()
            .expect("store lock")
            .insert(info.id, info.clone());
        self.write_info(&info)
    }

    /// Every finished segment, oldest first.
    pub fn list(&self) -> Vec<SegmentInfo> {
        self.segments
            .lock()
            .expect("store lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: FileId) -> Option<SegmentInfo> {
        self.segments.lock().expect("store lock").get(&id).cloned()
    }

    /// (segments, bytes) of the finished segments.
    pub fn totals(&self) -> (usize, u64) {
        let segments = self.segments.lock().expect("store lock");
        (segments.len(), segments.values().map(|s| s.bytes).sum())
    }

    /// Removes a finished segment and its companions. Blocking.
    pub fn remove(&self, id: FileId) -> bool {
        let known = self
            .segments
            .lock()
            .expect("store lock")
            .remove(&id)
            .is_some();
        if known {
            self.remove_files(id);
        }
        known
    }

    /// Removes an unfinished segment that holds nothing worth keeping. Blocking.
    pub fn discard(&self, id: FileId) {
        self.segments.lock().expect("store lock").remove(&id);
        self.remove_files(id);
    }

    /// Removes the oldest segments until the rest are within `budget_bytes` and no older than
    /// `max_age`. Returns the ids removed. Blocking.
    pub fn enforce(
        &self,
        budget_bytes: Option<u64>,
        max_age: Option<Duration>,
        now: SystemTime,
    ) -> Vec<FileId> {
        let doomed = {
            let segments = self.segments.lock().expect("store lock");
            let mut total: u64 = segments.values().map(|s| s.bytes).sum();
            let oldest_kept = max_age
                .and_then(|age| now.checked_sub(age))
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            let mut doomed = Vec::new();
            for info in segments.values() {
                let over_budget = budget_bytes.is_some_and(|budget| total > budget);
                let too_old = info.id.unix_ms() + info.duration_ms < oldest_kept;
                if !over_budget && !too_old {
                    break;
                }
                total -= info.bytes;
                doomed.push(info.id);
            }
            doomed
        };
        doomed.into_iter().filter(|id| self.remove(*id)).collect()
    }

    fn remove_files(&self, id: FileId) {
        for path in [
            self.media_path(id),
            self.part_path(id),
            self.info_path(id),
            self.thumbnail_path(id),
        ] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove");
                }
                _ => {}
            }
        }
    }

    fn read_info(&self, id: FileId) -> Option<SegmentInfo> {
        let text = std::fs::read(self.info_path(id)).ok()?;
        let info: SegmentInfo = serde_json::from_slice(&text).ok()?;
        (info.id == id).then_some(info)
    }

    fn write_info(&self, info: &SegmentInfo) -> anyhow::Result<()> {
        let path = self.info_path(info.id);
        let temporary = self.dir.join(format!("{}.json.tmp", info.id));
        std::fs::write(&temporary, serde_json::to_vec(info)?)?;
        super::writer::sync_file(&temporary);
        std::fs::rename(&temporary, &path)?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// A segment the device never finished: whatever complete fragments it has are kept.
    fn recover(
        &self,
        id: FileId,
        measure: &impl Fn(&Path) -> anyhow::Result<Probed>,
    ) -> Option<SegmentInfo> {
        let part = self.part_path(id);
        let media = self.media_path(id);
        if part.exists() && std::fs::rename(&part, &media).is_err() {
            return None;
        }
        let probed = match measure(&media) {
            Ok(probed) => probed,
            Err(e) => {
                tracing::warn!(%id, error = %e, "a cut-off recording holds nothing playable; removed");
                self.remove_files(id);
                return None;
            }
        };
        let info = SegmentInfo {
            id,
            duration_ms: probed.duration.as_millis() as u64,
            bytes: std::fs::metadata(&media).map_or(0, |m| m.len()),
            width: probed.width,
            height: probed.height,
            audio: probed.audio,
            recovered: true,
        };
        tracing::info!(%id, duration_ms = info.duration_ms, "recovered a cut-off recording");
        self.write_info(&info).ok()?;
        Some(info)
    }
}
