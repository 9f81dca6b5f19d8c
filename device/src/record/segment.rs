//! One segment's life around its [`SegmentWriter`]: named and opened (with a thumbnail of its
//! first frame), then finished, filed and followed by retention. The blocking parts run on the
//! blocking pool; the recorder task only starts them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferrocam_protocol::record::FileId;

use super::preroll::Unit;
use super::store::{SegmentInfo, Store};
use super::writer::SegmentWriter;

/// Thumbnails' width.
const THUMBNAIL_WIDTH: u32 = 320;

/// A segment being written.
pub(super) struct OpenSegment {
    pub writer: SegmentWriter,
    pub id: FileId,
    /// The encode time of its first frame.
    pub base: Instant,
    /// The sequence parameter set it began with: a new one (a new size) needs a new file.
    pub sps: Option<Bytes>,
    /// Its first keyframe, for the size it was recorded at.
    first_keyframe: Bytes,
    pub synced_at: Instant,
}

impl OpenSegment {
    /// Names and opens a segment for `units` (which begin with a keyframe), and writes its
    /// thumbnail in the background. Nothing is pushed yet.
    pub async fn open(store: &Store, units: &[Unit], audio: bool) -> anyhow::Result<Self> {
        let Some(Unit::Video(first)) = units.first().cloned() else {
            anyhow::bail!("a segment must begin with a video frame");
        };
        let began = SystemTime::now() - first.encoded_at.elapsed();
        let id = store.new_id(began);
        let (path, base) = (store.part_path(id), first.encoded_at);
        let writer =
            tokio::task::spawn_blocking(move || SegmentWriter::open(&path, base, audio)).await??;
        tracing::info!(%id, audio, preroll = units.len() > 1, "recording a segment");
        let thumbnail = store.thumbnail_path(id);
        let keyframe = first.data.clone();
        tokio::task::spawn_blocking(move || {
            match crate::media::keyframe_jpeg(&keyframe, Some(THUMBNAIL_WIDTH)) {
                Ok(jpeg) => {
                    if let Err(e) = std::fs::write(&thumbnail, jpeg.data) {
                        tracing::debug!(error = %e, "thumbnail not written");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no thumbnail"),
            }
        });
        Ok(Self {
            writer,
            id,
            base,
            sps: sps(&first.data),
            first_keyframe: first.data.clone(),
            synced_at: Instant::now(),
        })
    }

    /// Finishes the segment in the background: the muxer writes its last fragment, the file is
    /// flushed, renamed into place and described, then retention (`budget`, `max_age`) runs.
    /// A segment that ended badly (a full disk) keeps what plays, as after a crash, and is
    /// removed if nothing does. Its size is its first keyframe's (link adaptation may have
    /// stepped the stream down), or `planned` if that does not decode.
    pub fn close(
        self,
        store: Arc<Store>,
        planned: (u32, u32),
        (budget, max_age): (Option<u64>, Option<Duration>),
    ) {
        tokio::task::spawn_blocking(move || {
            let id = self.id;
            let (width, height) = crate::media::keyframe_size(&self.first_keyframe)
                .inspect_err(|e| tracing::debug!(%id, error = %e, "segment size unknown"))
                .unwrap_or(planned);
            let audio = self.writer.has_audio();
            let mut info = SegmentInfo {
                id,
                duration_ms: 0,
                bytes: 0,
                width,
                height,
                audio,
                recovered: false,
            };
            match self.writer.finish() {
                Ok(duration) => info.duration_ms = duration.as_millis() as u64,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "a segment ended badly");
                    match super::probe::probe(&store.part_path(id)) {
                        Ok(probed) => {
                            info.duration_ms = probed.duration.as_millis() as u64;
                            info.recovered = true;
                        }
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "nothing in it plays; removed");
                            store.discard(id);
                            return;
                        }
                    }
                }
            }
            if let Err(e) = store.finish(info) {
                tracing::warn!(%id, error = %e, "segment not filed");
            }
            store.enforce(budget, max_age, SystemTime::now());
        });
    }
}

/// The sequence parameter set of an Annex-B keyframe (NAL type 7), if it carries one.
pub(super) fn sps(annex_b: &[u8]) -> Option<Bytes> {
    split_nals(annex_b)
        .into_iter()
        .find(|nal| nal.first().is_some_and(|b| b & 0x1f == 7))
        .map(Bytes::copy_from_slice)
}

/// The NAL units of an Annex-B byte stream (between 00 00 01 start codes).
fn split_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            // A four-byte start code leaves a zero at the end of the previous unit.
            let mut nal = &data[start..end];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            nal
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sps_is_found_among_a_keyframes_units() {
        let keyframe = [
            &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 1, 0x65, 0x88, 0x84, 0x00],
        ]
        .concat();
        assert_eq!(
            sps(&keyframe).as_deref(),
            Some(&[0x67, 0x42, 0xc0, 0x1f][..])
        );
        assert_eq!(sps(&[0, 0, 1, 0x41, 0x9a]), None);
        assert_eq!(sps(&[]), None);
    }
}
