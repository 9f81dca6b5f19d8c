//! Every file a viewer may see on the device, by id: recordings (the recorder's [`Store`]),
//! snapshots kept with `files.snapshot`, and uploads.
//!
//! ```text
//! <record-dir>/rec-….mp4, rec-….jpg     recordings and their thumbnails (the Store's)
//! <record-dir>/snap-….jpg, snap-….thumb.jpg
//! <record-dir>/uploads/up-….bin, up-….json (the name it was sent with)
//! ```
//!
//! Paths are only ever built from [`FileId`]s; nothing a client sends becomes part of one.
//! Everything here touches the disk and runs on the blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use ferrocam_protocol::files::{FileEntry, FileList, FilePart, MAX_LIST, MAX_UPLOAD_NAME};
use ferrocam_protocol::record::{FileId, FileKind};

use crate::record::{SegmentInfo, Store};

/// Snapshots kept; the oldest go first.
const MAX_SNAPSHOTS: usize = 500;

pub struct Library {
    recordings: Arc<Store>,
    uploads: PathBuf,
    /// The most one upload may be, and all uploads together four times that.
    pub max_upload: u64,
    /// SHA-256 of files already read, by (id, part), with the size it was taken at: files are
    /// never changed once kept, so one read serves every later transfer.
    digests: Mutex<HashMap<(FileId, FilePart), (u64, String)>>,
}

impl Library {
    pub fn open(recordings: Arc<Store>, max_upload: u64) -> anyhow::Result<Self> {
        let uploads = recordings.dir().join("uploads");
        std::fs::create_dir_all(&uploads)
            .with_context(|| format!("creating {}", uploads.display()))?;
        Ok(Self {
            recordings,
            uploads,
            max_upload,
            digests: Mutex::default(),
        })
    }

    fn snapshot_path(&self, id: FileId, thumbnail: bool) -> PathBuf {
        let ext = if thumbnail { "thumb.jpg" } else { "jpg" };
        self.recordings.dir().join(format!("{id}.{ext}"))
    }

    /// What is known about a snapshot or an upload beyond its bytes (`.json`).
    fn sidecar(&self, id: FileId) -> PathBuf {
        match id.kind() {
            FileKind::Upload => self.uploads.join(format!("{id}.json")),
            _ => self.recordings.dir().join(format!("{id}.json")),
        }
    }

    fn read_sidecar(&self, id: FileId) -> serde_json::Value {
        std::fs::read(self.sidecar(id))
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .unwrap_or_default()
    }

    pub fn upload_path(&self, id: FileId) -> PathBuf {
        self.uploads.join(format!("{id}.bin"))
    }

    pub fn upload_part_path(&self, id: FileId) -> PathBuf {
        self.uploads.join(format!("{id}.bin.part"))
    }

    /// Newest first, at most `limit` (capped), older than `before` if given.
    pub fn list(
        &self,
        kind: Option<FileKind>,
        before: Option<FileId>,
        limit: Option<u32>,
    ) -> FileList {
        let limit = limit.unwrap_or(50).clamp(1, MAX_LIST) as usize;
        let mut entries: Vec<FileEntry> = Vec::new();
        if kind.is_none_or(|k| k == FileKind::Recording) {
            entries.extend(
                self.recordings
                    .list()
                    .into_iter()
                    .map(|s| self.recording(s)),
            );
        }
        if kind.is_none_or(|k| k == FileKind::Snapshot) {
            entries.extend(
                self.snapshots()
                    .into_iter()
                    .filter_map(|id| self.snapshot(id)),
            );
        }
        if kind.is_none_or(|k| k == FileKind::Upload) {
            entries.extend(self.uploads().into_iter().filter_map(|id| self.upload(id)));
        }
        // Newest first whatever the kind: by time, then kind.
        entries.sort_by_key(|e| std::cmp::Reverse((e.id.unix_ms(), e.id)));
        let mut files: Vec<FileEntry> = entries
            .into_iter()
            .filter(|e| before.is_none_or(|b| (e.id.unix_ms(), e.id) < (b.unix_ms(), b)))
            .take(limit + 1)
            .collect();
        let more = files.len() > limit;
        files.truncate(limit);
        FileList { files, more }
    }

    /// The file behind `id` and `part`, with its type, if it exists.
    pub fn locate(&self, id: FileId, part: FilePart) -> Option<(PathBuf, &'static str)> {
        let (path, mime) = match (id.kind(), part) {
            (FileKind::Recording, FilePart::Media) => {
                self.recordings.get(id)?;
                (self.recordings.media_path(id), "video/mp4")
            }
            (FileKind::Recording, FilePart::Thumbnail) => {
                self.recordings.get(id)?;
                (self.recordings.thumbnail_path(id), "image/jpeg")
            }
            (FileKind::Snapshot, part) => (
                self.snapshot_path(id, part == FilePart::Thumbnail),
                "image/jpeg",
            ),
            (FileKind::Upload, FilePart::Media) => {
                (self.upload_path(id), "application/octet-stream")
            }
            (FileKind::Upload, FilePart::Thumbnail) => return None,
        };
        path.is_file().then_some((path, mime))
    }

    /// Removes a file and what belongs to it; whether it existed.
    pub fn delete(&self, id: FileId) -> bool {
        self.forget_digests(id);
        match id.kind() {
            FileKind::Recording => self.recordings.remove(id),
            FileKind::Snapshot => {
                let _ = std::fs::remove_file(self.sidecar(id));
                let _ = std::fs::remove_file(self.snapshot_path(id, true));
                std::fs::remove_file(self.snapshot_path(id, false)).is_ok()
            }
            FileKind::Upload => {
                let _ = std::fs::remove_file(self.sidecar(id));
                std::fs::remove_file(self.upload_path(id)).is_ok()
            }
        }
    }

    /// Keeps a snapshot (and its thumbnail), removing the oldest beyond [`MAX_SNAPSHOTS`].
    pub fn keep_snapshot(
        &self,
        jpeg: &crate::media::Jpeg,
        thumbnail: &[u8],
    ) -> anyhow::Result<FileEntry> {
        let taken = jpeg.taken_at;
        let ms = taken
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut id = FileId::new(FileKind::Snapshot, ms);
        while self.snapshot_path(id, false).exists() {
            id = id.next();
        }
        let size = serde_json::json!({ "width": jpeg.width, "height": jpeg.height });
        write_atomically(&self.sidecar(id), &serde_json::to_vec(&size)?)?;
        write_atomically(&self.snapshot_path(id, true), thumbnail)?;
        write_atomically(&self.snapshot_path(id, false), &jpeg.data)?;
        let snapshots = self.snapshots();
        for old in snapshots
            .iter()
            .take(snapshots.len().saturating_sub(MAX_SNAPSHOTS))
        {
            self.delete(*old);
        }
        self.snapshot(id).context("the snapshot just kept is gone")
    }

    /// Room for an upload of `bytes`: its id, or why not.
    pub fn new_upload(&self, bytes: u64) -> Result<FileId, String> {
        if bytes > self.max_upload {
            return Err(format!(
                "{bytes} bytes is more than this device takes ({} bytes)",
                self.max_upload
            ));
        }
        let used: u64 = self
            .uploads()
            .into_iter()
            .filter_map(|id| std::fs::metadata(self.upload_path(id)).ok())
            .map(|m| m.len())
            .sum();
        if used + bytes > self.max_upload.saturating_mul(4) {
            return Err(format!(
                "the upload folder is full ({used} bytes); delete something first"
            ));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut id = FileId::new(FileKind::Upload, now);
        while self.upload_path(id).exists() || self.upload_part_path(id).exists() {
            id = id.next();
        }
        Ok(id)
    }

    /// Files a complete, checked upload under its id, with the name it was sent with.
    pub fn keep_upload(&self, id: FileId, name: &str) -> anyhow::Result<()> {
        let name: String = name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_UPLOAD_NAME)
            .collect();
        std::fs::rename(self.upload_part_path(id), self.upload_path(id))?;
        write_atomically(
            &self.sidecar(id),
            &serde_json::to_vec(&serde_json::json!({ "name": name }))?,
        )
    }

    /// SHA-256 (hex) of a file, read once and remembered.
    pub fn digest(&self, id: FileId, part: FilePart, path: &Path) -> anyhow::Result<String> {
        let bytes = std::fs::metadata(path)?.len();
        if let Some((size, digest)) = self.digests.lock().expect("digests").get(&(id, part))
            && *size == bytes
        {
            return Ok(digest.clone());
        }
        let digest = super::sha256_file(path)?;
        self.digests
            .lock()
            .expect("digests")
            .insert((id, part), (bytes, digest.clone()));
        Ok(digest)
    }

    fn forget_digests(&self, id: FileId) {
        let mut digests = self.digests.lock().expect("digests");
        digests.remove(&(id, FilePart::Media));
        digests.remove(&(id, FilePart::Thumbnail));
    }

    fn recording(&self, info: SegmentInfo) -> FileEntry {
        FileEntry {
            id: info.id,
            kind: FileKind::Recording,
            bytes: info.bytes,
            duration_ms: Some(info.duration_ms),
            width: Some(info.width).filter(|w| *w > 0),
            height: Some(info.height).filter(|h| *h > 0),
            audio: info.audio,
            thumbnail: self.recordings.thumbnail_path(info.id).is_file(),
            recovered: info.recovered,
            name: None,
            mime: "video/mp4".into(),
        }
    }

    fn snapshot(&self, id: FileId) -> Option<FileEntry> {
        let bytes = std::fs::metadata(self.snapshot_path(id, false)).ok()?.len();
        let size = self.read_sidecar(id);
        let side = |key: &str| size[key].as_u64().map(|v| v as u32);
        Some(FileEntry {
            id,
            kind: FileKind::Snapshot,
            bytes,
            duration_ms: None,
            width: side("width"),
            height: side("height"),
            audio: false,
            thumbnail: self.snapshot_path(id, true).is_file(),
            recovered: false,
            name: None,
            mime: "image/jpeg".into(),
        })
    }

    fn upload(&self, id: FileId) -> Option<FileEntry> {
        let bytes = std::fs::metadata(self.upload_path(id)).ok()?.len();
        let name = self.read_sidecar(id)["name"].as_str().map(str::to_owned);
        Some(FileEntry {
            id,
            kind: FileKind::Upload,
            bytes,
            duration_ms: None,
            width: None,
            height: None,
            audio: false,
            thumbnail: false,
            recovered: false,
            name,
            mime: "application/octet-stream".into(),
        })
    }

    /// Snapshot ids in the directory, oldest first.
    fn snapshots(&self) -> Vec<FileId> {
        ids_in(self.recordings.dir(), FileKind::Snapshot, "jpg")
    }

    /// Finished upload ids, oldest first.
    fn uploads(&self) -> Vec<FileId> {
        ids_in(&self.uploads, FileKind::Upload, "bin")
    }
}

/// Ids of `kind` named `<id>.<ext>` in `dir`, oldest first; every other name is ignored.
fn ids_in(dir: &Path, kind: FileKind, ext: &str) -> Vec<FileId> {
    let mut ids: Vec<FileId> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let (stem, found) = name.to_str()?.split_once('.')?;
                    let id = stem.parse::<FileId>().ok()?;
                    (found == ext && id.kind() == kind).then_some(id)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Writes a file whole or not at all (a temporary name, flushed, renamed).
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, data)?;
    std::fs::File::open(&temporary)?.sync_data()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
