//! The library on a real directory: listing newest first in pages, what each role's ids can
//! reach, uploads within their caps, snapshots kept and pruned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrocam_protocol::files::FilePart;
use ferrocam_protocol::record::{FileId, FileKind};

use super::Library;
use crate::media::Jpeg;
use crate::record::tests::scratch;
use crate::record::{SegmentInfo, Store};

fn no_probe(_: &std::path::Path) -> anyhow::Result<crate::record::probe::Probed> {
    anyhow::bail!("not needed")
}

fn library(dir: &std::path::Path) -> (Arc<Store>, Library) {
    let store = Arc::new(Store::open(dir, no_probe).unwrap());
    let library = Library::open(Arc::clone(&store), 1000).unwrap();
    (store, library)
}

fn recording(store: &Store, at_ms: u64) -> FileId {
    let id = store.new_id(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms));
    std::fs::write(store.part_path(id), vec![7u8; 100]).unwrap();
    store
        .finish(SegmentInfo {
            id,
            duration_ms: 1000,
            bytes: 0,
            width: 1280,
            height: 720,
            audio: true,
            recovered: false,
        })
        .unwrap();
    id
}

#[test]
fn lists_every_kind_newest_first_in_pages() {
    let dir = scratch("list");
    let (store, library) = library(&dir);
    let base = 1_796_069_101_000;
    let recordings: Vec<FileId> = (0..5)
        .map(|i| recording(&store, base + i * 10_000))
        .collect();
    let jpeg = Jpeg {
        data: vec![0xff, 0xd8, 0xff, 0xd9],
        width: 1280,
        height: 720,
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_millis(base + 25_000),
    };
    let snapshot = library.keep_snapshot(&jpeg, &[0xff, 0xd8]).unwrap();
    assert_eq!(snapshot.width, Some(1280));

    let first = library.list(None, None, Some(3));
    let ids: Vec<FileId> = first.files.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![recordings[4], recordings[3], snapshot.id]);
    assert!(first.more);
    let second = library.list(None, Some(*ids.last().unwrap()), Some(3));
    let ids: Vec<FileId> = second.files.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![recordings[2], recordings[1], recordings[0]]);
    assert!(!second.more);
    let only = library.list(Some(FileKind::Snapshot), None, None);
    assert_eq!(only.files.len(), 1);
    assert_eq!(only.files[0].mime, "image/jpeg");

    // Ids reach only files that exist; a recording's thumbnail only if it has one.
    assert!(library.locate(recordings[0], FilePart::Media).is_some());
    assert!(library.locate(recordings[0], FilePart::Thumbnail).is_none());
    assert!(library.locate(snapshot.id, FilePart::Thumbnail).is_some());
    let stranger = FileId::new(FileKind::Recording, 1);
    assert!(library.locate(stranger, FilePart::Media).is_none());
    assert!(library.delete(recordings[0]));
    assert!(!library.delete(recordings[0]));
    assert!(library.delete(snapshot.id));
    assert_eq!(library.list(None, None, None).files.len(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn uploads_stay_within_their_caps_and_keep_a_clean_name() {
    let dir = scratch("upload");
    let (_store, library) = library(&dir);
    assert!(library.new_upload(1001).unwrap_err().contains("more than"));
    let mut kept = Vec::new();
    for _ in 0..4 {
        let id = library.new_upload(1000).unwrap();
        std::fs::write(library.upload_part_path(id), vec![1u8; 1000]).unwrap();
        library.keep_upload(id, "a\u{0}b/../c\nd.txt").unwrap();
        kept.push(id);
        std::thread::sleep(Duration::from_millis(2));
    }
    // Four times the per-file cap, together.
    assert!(library.new_upload(1).unwrap_err().contains("full"));
    let listed = library.list(Some(FileKind::Upload), None, None);
    assert_eq!(listed.files.len(), 4);
    assert_eq!(listed.files[0].name.as_deref(), Some("ab/../cd.txt"));
    // The name is only a label: the file is where its id says.
    assert!(
        library
            .upload_path(kept[0])
            .starts_with(dir.join("uploads"))
    );
    assert!(library.delete(kept[0]));
    assert!(library.new_upload(1000).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}
