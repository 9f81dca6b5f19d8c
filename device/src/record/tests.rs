//! The recorder's parts with real GStreamer: segments written from real H.264 and Opus, read
//! back by a demuxer; a segment cut off without finishing, recovered; retention.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::probe::probe;
use super::store::{SegmentInfo, Store};
use super::writer::SegmentWriter;
use crate::media::{AccessUnit, AudioUnit};

const FRAME: Duration = Duration::from_nanos(33_333_333);

/// `frames` of 320×240 H.264 at 30 fps (a keyframe a second) as the engine's access units
/// would carry them, stamped as if encoded from `start` on.
fn video(frames: u32, start: Instant) -> Vec<AccessUnit> {
    pull(
        &format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
             ! x264enc key-int-max=30 tune=zerolatency speed-preset=ultrafast \
             ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
        ),
        |i, buffer, data| AccessUnit {
            data,
            duration: FRAME,
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            encoded_at: start + FRAME * i,
            captured_at: std::time::SystemTime::now(),
        },
    )
}

/// `packets` 20 ms Opus packets (stereo, 48 kHz, as the device's microphone sends).
fn audio(packets: u32, start: Instant) -> Vec<AudioUnit> {
    pull(
        &format!(
            "audiotestsrc num-buffers={packets} samplesperbuffer=960 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 \
             ! appsink name=out sync=false"
        ),
        |i, _, data| AudioUnit {
            data,
            duration: Duration::from_millis(20),
            encoded_at: start + Duration::from_millis(20) * i,
        },
    )
}

fn pull<T>(description: &str, make: impl Fn(u32, &gst::BufferRef, bytes::Bytes) -> T) -> Vec<T> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        let data = bytes::Bytes::copy_from_slice(&buffer.map_readable().unwrap());
        out.push(make(out.len() as u32, buffer, data));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// A new, empty directory under the system's temporary one (the files tests use it too).
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferrocam-record-{name}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes video and sound interleaved in encode order, as the recorder receives them.
fn write(writer: &mut SegmentWriter, video: &[AccessUnit], audio: &[AudioUnit]) {
    let (mut v, mut a) = (video.iter().peekable(), audio.iter().peekable());
    loop {
        match (v.peek(), a.peek()) {
            (Some(frame), Some(packet)) if packet.encoded_at < frame.encoded_at => {
                writer.push_audio(a.next().unwrap()).unwrap();
            }
            (Some(_), _) => writer.push_video(v.next().unwrap()).unwrap(),
            (None, Some(_)) => writer.push_audio(a.next().unwrap()).unwrap(),
            (None, None) => break,
        }
    }
}

#[test]
fn a_finished_segment_plays_every_frame_with_its_sound() {
    let dir = scratch("finished");
    let start = Instant::now();
    let (frames, packets) = (video(150, start), audio(250, start));
    let path = dir.join("segment.mp4");
    let mut writer = SegmentWriter::open(&path, start, true).unwrap();
    write(&mut writer, &frames, &packets);
    let written = writer.finish().unwrap();
    assert_eq!(written, FRAME * 150);

    let probed = probe(&path).unwrap();
    assert_eq!(probed.frames, 150);
    assert_eq!(probed.keyframes, 5, "one a second");
    assert!(probed.audio);
    assert_eq!((probed.width, probed.height), (320, 240));
    let error = probed.duration.as_secs_f64() - written.as_secs_f64();
    assert!(error.abs() < 0.01, "{:?} vs {written:?}", probed.duration);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_segment_cut_off_mid_write_plays_up_to_its_last_fragment_and_is_recovered() {
    let dir = scratch("cut");
    let start = Instant::now();
    let (frames, packets) = (video(150, start), audio(250, start));
    // Opened by a store, as the recorder does, then abandoned without finishing: the muxer never
    // gets its end of stream, as after `kill -9` or a power cut.
    let store = Store::open(&dir, probe).unwrap();
    let id = store.new_id(SystemTime::now());
    let mut writer = SegmentWriter::open(&store.part_path(id), start, true).unwrap();
    write(&mut writer, &frames, &packets);
    // Let the muxer write what it has in fragments, then cut.
    std::thread::sleep(Duration::from_millis(500));
    drop(writer);
    drop(store);

    let store = Store::open(&dir, probe).unwrap();
    let listed = store.list();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!(info.id, id);
    assert!(info.recovered);
    assert!(!store.part_path(id).exists());
    let probed = probe(&store.media_path(id)).unwrap();
    // Five seconds were pushed; all but the fragment in progress must play.
    assert!(
        probed.duration >= Duration::from_secs(3) && probed.duration <= Duration::from_secs(5),
        "{:?}",
        probed.duration
    );
    assert_eq!(info.duration_ms, probed.duration.as_millis() as u64);
    assert!(probed.audio && info.audio);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn retention_removes_the_oldest_segments_first_and_leaves_other_files_alone() {
    let dir = scratch("retention");
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    std::fs::write(dir.join("rec-..-..json"), b"not an id").unwrap();
    let start = Instant::now();
    let frames = video(60, start);
    let store = Store::open(&dir, probe).unwrap();
    let began = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_069_101);
    let mut ids = Vec::new();
    for n in 0..4u64 {
        let id = store.new_id(began + Duration::from_secs(10 * n));
        let mut writer = SegmentWriter::open(&store.part_path(id), start, false).unwrap();
        write(&mut writer, &frames, &[]);
        let duration = writer.finish().unwrap();
        store
            .finish(SegmentInfo {
                id,
                duration_ms: duration.as_millis() as u64,
                bytes: 0,
                width: 320,
                height: 240,
                audio: false,
                recovered: false,
            })
            .unwrap();
        std::fs::write(store.thumbnail_path(id), b"jpeg").unwrap();
        ids.push(id);
    }
    let (count, bytes) = store.totals();
    assert_eq!(count, 4);
    let each = bytes / 4;
    // A budget for two and a half segments keeps the newest two.
    let removed = store.enforce(Some(each * 5 / 2), None, SystemTime::now());
    assert_eq!(removed, ids[..2].to_vec());
    assert_eq!(
        store.list().iter().map(|s| s.id).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    for id in &ids[..2] {
        assert!(!store.media_path(*id).exists() && !store.thumbnail_path(*id).exists());
    }
    // By age: everything that ended more than 15 s before the newest began goes.
    let now = began + Duration::from_secs(30) + Duration::from_secs(15);
    assert_eq!(
        store.enforce(None, Some(Duration::from_secs(15)), now),
        vec![ids[2]]
    );
    // After a restart the index is read back from the descriptions.
    drop(store);
    let store = Store::open(&dir, probe).unwrap();
    assert_eq!(
        store.list().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[3]]
    );
    assert!(dir.join("notes.txt").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_file_cut_in_the_middle_of_a_box_reads_up_to_the_cut() {
    let dir = scratch("mid-box");
    let start = Instant::now();
    let (frames, packets) = (video(150, start), audio(250, start));
    let path = dir.join("segment.mp4");
    let mut writer = SegmentWriter::open(&path, start, true).unwrap();
    write(&mut writer, &frames, &packets);
    writer.finish().unwrap();
    // Power lost anywhere in the file: in a header, in a fragment's index, in its media.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.mp4");
    for percent in (5..100).step_by(5) {
        let length = bytes.len() * percent / 100;
        std::fs::write(&cut, &bytes[..length]).unwrap();
        let started = Instant::now();
        let probed = probe(&cut);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{percent}%: {took:?}");
        // Five seconds of media: the cut keeps what came before it, less one fragment.
        if let Ok(probed) = probed {
            let kept = Duration::from_secs(5) * percent as u32 / 100;
            assert!(
                probed.duration + super::writer::FRAGMENT * 2 >= kept,
                "{percent}%: {probed:?}"
            );
        } else {
            assert!(percent <= 25, "{percent}%: {probed:?}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
