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

use ferrocam_protocol::VideoCodec;

use super::payload_type;

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
    pub(super) codec: VideoCodec,
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

/// Whether a VP8 RTP payload starts a key frame (RFC 7741 §4.2–4.3): the first packet of
/// partition 0 (S set, PID 0), after the optional extension bytes, a payload header whose
/// P bit (bit 0) is 0.
fn starts_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&descriptor) = payload.first() else {
        return false;
    };
    if descriptor & 0x10 == 0 || descriptor & 0x07 != 0 {
        return false;
    }
    let mut at = 1;
    if descriptor & 0x80 != 0 {
        let Some(&extension) = payload.get(1) else {
            return false;
        };
        at = 2;
        if extension & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M bit).
            at += if payload.get(at).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if extension & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if extension & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
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
        let codec = self.codec;
        let starts_keyframe = match codec {
            VideoCodec::H264 => starts_idr,
            VideoCodec::Vp8 => starts_vp8_keyframe,
        };
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(mut packet) = event {
                    if starts_keyframe(&packet.payload) {
                        counters.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    packet.header.payload_type = payload_type(codec);
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
