//! What a peer connection reports to its session ([`PeerEvent`]), and the bridge from the
//! crate's callback trait to a channel the session task can select on.
//!
//! On its own because it is the one place callbacks from the `webrtc` crate's tasks enter the
//! device.

use std::sync::Arc;

use ferrocam_protocol::IceCandidate;
use tokio::sync::mpsc;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState,
};

/// What a peer reports to its session.
pub enum PeerEvent {
    /// The viewer opened a data channel.
    DataChannel(super::ControlChannel),
    /// The viewer's microphone track arrived (it may talk, or a modified page sends anyway:
    /// the session decides whether anyone hears it).
    IncomingAudio(super::IncomingAudio),
    /// The viewer asked for a keyframe (PLI or FIR).
    KeyframeRequest,
    /// A local candidate to trickle to the viewer.
    LocalCandidate(IceCandidate),
    /// All local candidates have been gathered.
    GatheringComplete,
    /// DTLS is up: media can flow.
    Connected,
    /// The connection failed, disconnected or closed.
    Ended(String),
}

/// Bridges the crate's callback trait to a channel the session task can select on.
pub(super) struct Events {
    pub(super) tx: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.tx.send(PeerEvent::LocalCandidate(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                }));
            }
            Err(e) => tracing::warn!(error = %e, "could not serialize a local candidate"),
        }
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn webrtc::data_channel::DataChannel>) {
        let _ = self
            .tx
            .send(PeerEvent::DataChannel(super::ControlChannel::new(
                data_channel,
            )));
    }

    async fn on_track(&self, track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        if track.kind().await == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio {
            let _ = self
                .tx
                .send(PeerEvent::IncomingAudio(super::IncomingAudio::new(track)));
        } else {
            // We never ask for video; whatever arrives on such a track is not read.
            tracing::debug!("ignoring an incoming video track");
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        let event = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Failed
            | RTCPeerConnectionState::Disconnected
            | RTCPeerConnectionState::Closed => PeerEvent::Ended(state.to_string()),
            _ => return,
        };
        let _ = self.tx.send(event);
    }
}
