//! One viewer's peer connection, with the device as the answering side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ferrocam_protocol::IceCandidate;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::media::AccessUnit;

/// H.264 constrained baseline, level 3.1, packetization mode 1: what every browser decodes.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// Payload type we register; the one actually used is whatever the offer chose.
const H264_PAYLOAD_TYPE: u8 = 102;

/// Network settings shared by every peer of this device.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local UDP sockets ICE gathers host candidates from.
    pub udp_addrs: Vec<SocketAddr>,
    /// STUN/TURN URLs.
    pub ice_servers: Vec<String>,
}

/// What a peer reports to its session.
#[derive(Debug)]
pub enum PeerEvent {
    /// A local candidate to trickle to the viewer.
    LocalCandidate(IceCandidate),
    /// All local candidates have been gathered.
    GatheringComplete,
    /// DTLS is up: media can flow.
    Connected,
    /// The connection failed, disconnected or closed.
    Ended(String),
}

/// One viewer's connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

impl Peer {
    /// Builds a connection for `offer_sdp` and returns it with its answer SDP and event stream.
    /// Candidates trickle out as [`PeerEvent::LocalCandidate`] after this returns.
    pub async fn answer(
        settings: &RtcSettings,
        offer_sdp: String,
    ) -> anyhow::Result<(Peer, String, mpsc::UnboundedReceiver<PeerEvent>)> {
        let video_codec = h264_codec();
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(video_codec.clone(), RtpCodecKind::Video)?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;

        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(
                settings
                    .ice_servers
                    .iter()
                    .map(|url| RTCIceServer {
                        urls: vec![url.clone()],
                        ..Default::default()
                    })
                    .collect(),
            )
            .build();
        // A 20 ms check interval instead of 200 ms takes ~150 ms off the first frame (measured);
        // mDNS stays off: browsers reach us through peer-reflexive candidates anyway.
        let setting_engine = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(25))
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();

        let (events_tx, events) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Events { tx: events_tx }))
            .with_udp_addrs(settings.udp_addrs.clone())
            .build()
            .await
            .context("creating the peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand_ssrc();
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "ferrocam".to_owned(),
                "video".to_owned(),
                "camera".to_owned(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: video_codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            ),
        )?);
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .context("adding the video track")?;

        let offer = RTCSessionDescription::offer(offer_sdp).context("parsing the offer")?;
        pc.set_remote_description(offer)
            .await
            .context("applying the offer")?;
        let answer = pc
            .create_answer(None)
            .await
            .context("creating the answer")?;
        pc.set_local_description(answer.clone())
            .await
            .context("applying the answer")?;

        Ok((
            Peer {
                pc,
                track,
                sender,
                ssrc,
            },
            answer.sdp,
            events,
        ))
    }

    /// The current local description, candidates included once gathered.
    pub async fn local_sdp(&self) -> Option<String> {
        self.pc.local_description().await.map(|d| d.sdp)
    }

    /// Adds a candidate trickled by the viewer.
    pub async fn add_remote_candidate(&self, candidate: IceCandidate) -> anyhow::Result<()> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
                ..Default::default()
            })
            .await
            .context("adding a remote candidate")
    }

    /// A sender for access units, valid once the connection is up. It stamps packets with the
    /// payload type the viewer's offer chose (Chromium picks its own number, not ours).
    pub async fn video_sender(&self) -> anyhow::Result<VideoSender> {
        let payload_type = self
            .sender
            .get_parameters()
            .await?
            .rtp_parameters
            .codecs
            .first()
            .map(|codec| codec.payload_type)
            .ok_or_else(|| anyhow!("no H.264 codec was negotiated"))?;
        Ok(VideoSender {
            track: Arc::clone(&self.track),
            ssrc: self.ssrc,
            payload_type,
        })
    }

    /// Closes the connection; safe to call more than once.
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }
}

/// Writes access units onto one viewer's video track.
pub struct VideoSender {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
}

impl VideoSender {
    /// Packetizes and sends one access unit.
    pub async fn send(&self, unit: &AccessUnit) -> anyhow::Result<()> {
        self.track
            .sample_writer(self.ssrc, self.payload_type)
            .write_sample(&Sample {
                data: unit.data.clone(),
                duration: unit.duration,
                ..Sample::new(unit.encoded_at)
            })
            .await
            .map_err(|e| anyhow!("sending video: {e}"))
    }
}

fn h264_codec() -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            // nack/pli come with the default interceptors; FIR is ours to advertise.
            rtcp_feedback: vec![feedback("ccm", "fir")],
        },
        payload_type: H264_PAYLOAD_TYPE,
    }
}

fn rand_ssrc() -> u32 {
    // SSRCs only need to be distinct within a session; the clock's low bits are enough and keep
    // this module free of an RNG dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ 0x5eed_f00d
}

/// Bridges the crate's callback trait to a channel the session task can select on.
struct Events {
    tx: mpsc::UnboundedSender<PeerEvent>,
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
