//! One viewer's view of the shared frames: it starts at a keyframe, skips to the next keyframe
//! after falling behind instead of decoding a stream with holes, and can move to another stream
//! of the same codec (the low H.264 stream and back) without a gap.
//!
//! A move is made at a keyframe of the stream moved to: until one arrives the viewer keeps
//! getting the stream it is on, so its decoder never sees a delta frame of a picture it does
//! not have. Both streams encode the same captured frames, and RTP timestamps advance by each
//! frame's duration, so the viewer's clock runs on across the move; the new stream's keyframe
//! carries its SPS, which decoders follow to the new size.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::MediaEngine;
use crate::media::{AccessUnit, KeyframeReason, Stream, VideoCodec};

pub struct VideoFeed {
    units: broadcast::Receiver<AccessUnit>,
    stream: Stream,
    /// The stream the frames come from, for whoever routes the viewer's keyframe requests.
    receiving: watch::Sender<Stream>,
    /// The stream being moved to, until its first keyframe.
    moving_to: Option<(Stream, broadcast::Receiver<AccessUnit>)>,
    engine: Arc<MediaEngine>,
    need_keyframe: bool,
}

impl VideoFeed {
    /// Subscribes to `stream` and asks it for a keyframe to start from.
    pub(super) fn open(engine: Arc<MediaEngine>, stream: Stream) -> Self {
        let units = engine.shared.rendition(stream).units.subscribe();
        engine.watching(stream, true);
        engine.request_keyframe(stream, KeyframeReason::Join);
        Self {
            units,
            stream,
            receiving: watch::Sender::new(stream),
            moving_to: None,
            engine,
            need_keyframe: true,
        }
    }

    /// The codec of the frames this feed gives.
    pub fn codec(&self) -> VideoCodec {
        self.stream.codec()
    }

    /// The stream the frames come from now.
    #[cfg(test)]
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The stream the frames come from, and its changes: a viewer's keyframe requests belong
    /// there (during a move, the viewer still decodes the stream it is leaving).
    pub fn receiving(&self) -> watch::Receiver<Stream> {
        self.receiving.subscribe()
    }

    /// Moves to `stream` at its next keyframe (asked for now). Ignored for a stream of another
    /// codec (the viewer could not decode it) or one this camera does not make.
    pub fn move_to(&mut self, stream: Stream) {
        if stream.codec() != self.codec() || !self.engine.streams().contains(&stream) {
            return;
        }
        if self.moving_to.as_ref().is_some_and(|(s, _)| *s == stream) {
            return;
        }
        if let Some((abandoned, _)) = self.moving_to.take() {
            self.engine.watching(abandoned, false);
        }
        if stream == self.stream {
            return;
        }
        let units = self.engine.shared.rendition(stream).units.subscribe();
        self.engine.watching(stream, true);
        self.engine.request_keyframe(stream, KeyframeReason::Join);
        self.moving_to = Some((stream, units));
        tracing::debug!(
            from = self.stream.name(),
            to = stream.name(),
            "viewer moving"
        );
    }

    /// The next access unit to send, or `None` when the engine is gone. Cancel-safe: a unit is
    /// taken off a channel only in the same step that returns it or drops it for good.
    pub async fn next(&mut self) -> Option<AccessUnit> {
        loop {
            let (from_new, received) = match &mut self.moving_to {
                Some((_, new)) => tokio::select! {
                    biased;
                    received = new.recv() => (true, received),
                    received = self.units.recv() => (false, received),
                },
                None => (false, self.units.recv().await),
            };
            if from_new {
                match received {
                    Ok(unit) if unit.keyframe => return Some(self.arrive(unit)),
                    // Until the new stream's keyframe, the old stream's frames are the ones
                    // this viewer can decode.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        if let Some((abandoned, _)) = self.moving_to.take() {
                            self.engine.watching(abandoned, false);
                        }
                        continue;
                    }
                }
            }
            match received {
                Ok(unit) => {
                    if self.need_keyframe && !unit.keyframe {
                        continue;
                    }
                    self.need_keyframe = false;
                    return Some(unit);
                }
                // The frames this viewer missed are gone; only this viewer pays for it.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "viewer lagged; waiting for a keyframe");
                    self.need_keyframe = true;
                    self.engine
                        .request_keyframe(self.stream, KeyframeReason::Join);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Completes a move with the new stream's first keyframe.
    fn arrive(&mut self, keyframe: AccessUnit) -> AccessUnit {
        let (stream, units) = self.moving_to.take().expect("a move in progress");
        let left = std::mem::replace(&mut self.stream, stream);
        self.units = units;
        self.receiving.send_replace(stream);
        self.need_keyframe = false;
        self.engine.watching(left, false);
        tracing::debug!(from = left.name(), to = stream.name(), "viewer moved");
        keyframe
    }
}

impl Drop for VideoFeed {
    fn drop(&mut self) {
        self.engine.watching(self.stream, false);
        if let Some((stream, _)) = &self.moving_to {
            self.engine.watching(*stream, false);
        }
    }
}
