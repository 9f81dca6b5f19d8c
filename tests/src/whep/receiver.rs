//! The receiving side of the WHEP player's peer connection: what it counts of the RTP it gets
//! (video and audio packets, keyframes), where the video goes (the decoder's appsrc), and the
//! ICE events the player waits on before trickling.
//!
//! Apart from the player's HTTP exchange because this runs on the `webrtc` crate's callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer_app as gst_app;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::Marshal;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
};

use super::PAYLOAD_TYPE;

/// What the player has received.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) video_packets: AtomicU64,
    pub(super) audio_packets: AtomicU64,
    /// IDR frames seen starting in the RTP stream.
    pub(super) keyframes: AtomicU64,
}

/// Events from the player's peer connection.
pub(super) enum PlayerEvent {
    Candidate(String),
    GatheringComplete,
}

pub(super) struct Handler {
    pub(super) events: mpsc::UnboundedSender<PlayerEvent>,
    pub(super) decoder: Option<gst_app::AppSrc>,
    pub(super) counters: Arc<Counters>,
    pub(super) video_track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
}

/// Whether an H.264 RTP payload starts an IDR picture (single NAL, STAP-A holding one, or the
/// first fragment of an FU-A).
fn starts_idr(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        5 => true,
        24 => {
            // STAP-A: [hdr][size16][nal]…
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                if payload[i + 2] & 0x1f == 5 {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == 5),
        _ => false,
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(PlayerEvent::Candidate(init.candidate));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PlayerEvent::GatheringComplete);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let counters = Arc::clone(&self.counters);
        if track.kind().await == RtpCodecKind::Audio {
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(_) = event {
                        counters.audio_packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            return;
        }
        *self.video_track.lock().expect("track slot") = Some(Arc::clone(&track));
        let src = self.decoder.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(mut packet) = event {
                    if starts_idr(&packet.payload) {
                        counters.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    packet.header.payload_type = PAYLOAD_TYPE;
                    counters.video_packets.fetch_add(1, Ordering::Relaxed);
                    if let Some(src) = &src
                        && let Ok(bytes) = packet.marshal()
                    {
                        let _ = src.push_buffer(gst::Buffer::from_slice(bytes));
                    }
                }
            }
        });
    }
}
