//! Putting a peer connection together: codecs, interceptors, ICE servers and timing, the video
//! track, and the keyframe-request forwarding, before either description is applied.
//!
//! Shared by answering and offering ([`super::Peer`]), and apart from them because it is all
//! configuration of the `webrtc` crate, with the reasons for each setting next to it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCIceServer,
    SettingEngineBuilder,
};

use super::RtcSettings;
use super::bandwidth::LinkEstimate;
use super::codecs::{opus_codec, video_codecs};
use super::events::{Events, PeerEvent};
use super::extensions;
use super::interceptors::interceptors;
use super::rtcp;
use super::track::LocalTrack;
use crate::media::VideoCodec;

/// How often the ICE agent acts while connecting, and how many checks a pair gets before it
/// counts as failed (see [`Building::new`]).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
const ICE_CHECKS_PER_PAIR: u16 = 140;

/// A connection under construction, before either description is applied.
pub(super) struct Building {
    pub(super) pc: CloseUnlessKept,
    pub(super) video: LocalTrack,
    pub(super) events: mpsc::UnboundedReceiver<PeerEvent>,
    pub(super) estimate: Option<LinkEstimate>,
}

impl Building {
    /// The peer connection with our codecs, interceptors and ICE settings, and the video track.
    /// `direction` is `None` when answering (the offer decides), `Sendonly` when offering.
    /// `codecs` are the video codecs to negotiate, preferred first; the track starts with the
    /// first.
    pub(super) async fn new(
        settings: &RtcSettings,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
        direction: Option<RTCRtpTransceiverDirection>,
        codecs: &[VideoCodec],
    ) -> anyhow::Result<Self> {
        let mut media_engine = MediaEngine::default();
        let offered: Vec<_> = codecs
            .iter()
            .flat_map(|&codec| video_codecs(codec))
            .collect();
        for parameters in &offered {
            media_engine
                .register_codec(parameters.clone(), RtpCodecKind::Video)
                .with_context(|| format!("registering {}", parameters.rtp_codec.mime_type))?;
        }
        let first = offered
            .first()
            .context("no video codec to negotiate")?
            .rtp_codec
            .clone();
        media_engine
            .register_codec(opus_codec(), RtpCodecKind::Audio)
            .context("registering Opus")?;
        extensions::register(&mut media_engine, settings.zero_playout_delay)?;
        let (registry, estimate) = interceptors(&mut media_engine, settings.congestion)?;

        let mut ice_servers: Vec<RTCIceServer> = settings
            .ice_servers
            .iter()
            .map(|url| RTCIceServer {
                urls: vec![url.clone()],
                ..Default::default()
            })
            .collect();
        ice_servers.extend(session_ice_servers.iter().map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        }));
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .build();
        // The ICE agent acts on a timer tick while it connects (the crate's default: 200 ms):
        // the controlling side nominates a working pair only on the next tick, and the DTLS
        // ClientHello queued when a pair is selected leaves only on the tick after that (packet
        // capture: each step one full interval). A 10 ms tick makes both ~10 ms instead of
        // 200 ms each; 140 checks per pair keep the crate's window of 1.4 s before a pair counts
        // as failed. Once connected the agent ticks at its keep-alive rate, so the short tick
        // costs nothing while streaming. mDNS stays off: browsers reach us through
        // peer-reflexive candidates anyway. For the same reason a peer-reflexive pair may be
        // nominated at once (the default waits 1 s for something better): a browser's real
        // address only ever shows up as peer-reflexive, because it hides its host candidates
        // behind mDNS names.
        let setting_engine = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS_PER_PAIR))
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();

        let (events_tx, events) = mpsc::unbounded_channel();
        let keyframe_requests = events_tx.clone();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Events { tx: events_tx }))
            .with_udp_addrs(settings.udp_addrs.clone())
            .with_tcp_addrs(settings.tcp_addrs.clone())
            .with_data_channel_send_buffer_limit(super::channel::SEND_BUFFER)
            .build()
            .await
            .context("creating the peer connection")?;
        let pc = CloseUnlessKept(Some(Arc::new(pc)));

        let video = LocalTrack::add(&pc, RtpCodecKind::Video, &first, direction, &offered).await?;
        forward_keyframe_requests(Arc::clone(&video.track), keyframe_requests);
        Ok(Self {
            pc,
            video,
            events,
            estimate,
        })
    }
}

/// PLI/FIR arrive as events on the video track (see `rtcp`); a task forwards them to the
/// session as [`PeerEvent::KeyframeRequest`] until the track or the session goes away.
fn forward_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    keyframe_requests: mpsc::UnboundedSender<PeerEvent>,
) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            if packets
                .iter()
                .any(|p| rtcp::is_keyframe_request(p.as_ref()))
                && keyframe_requests.send(PeerEvent::KeyframeRequest).is_err()
            {
                return;
            }
        }
    });
}

/// A peer connection that has not made it into a [`super::Peer`] yet. Should building it fail
/// part-way (any `?` in [`Building::new`] or in the peer's answer or offer), dropping it closes
/// the connection: dropping the handle alone would leave the crate's driver task and sockets
/// running.
pub(super) struct CloseUnlessKept(Option<Arc<dyn PeerConnection>>);

impl CloseUnlessKept {
    pub(super) fn keep(mut self) -> Arc<dyn PeerConnection> {
        self.0.take().expect("a connection is kept once")
    }
}

impl std::ops::Deref for CloseUnlessKept {
    type Target = Arc<dyn PeerConnection>;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("not kept yet")
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(pc) = self.0.take() {
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}
