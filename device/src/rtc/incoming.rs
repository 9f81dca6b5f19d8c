//! A viewer's microphone as the device receives it: the RTP packets of the viewer's audio
//! track, in arrival order, as bytes (what the speaker's jitter buffer takes).

use std::sync::Arc;

use rtc::shared::marshal::Marshal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// One viewer's incoming audio track.
pub struct IncomingAudio {
    track: Arc<dyn TrackRemote>,
}

impl IncomingAudio {
    pub(super) fn new(track: Arc<dyn TrackRemote>) -> Self {
        Self { track }
    }

    /// The next RTP packet, serialized; `None` once the track has ended. Must be called
    /// steadily while the track lives, whether the packets are played or not: the crate queues
    /// them for us.
    pub async fn next_packet(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(packet) => match packet.marshal() {
                    Ok(bytes) => return Some(bytes.to_vec()),
                    Err(e) => {
                        tracing::debug!(error = %e, "an incoming RTP packet would not serialize")
                    }
                },
                TrackRemoteEvent::OnEnded => return None,
                _ => {}
            }
        }
    }
}
