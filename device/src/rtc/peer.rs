//! One viewer's peer connection: the device answers a viewer's offer, or makes the offer
//! itself (and then controls ICE).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ferrocam_protocol::IceCandidate;
use rtc::interceptor::Slot;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, configure_rtcp_reports,
};
use webrtc::rtp_transceiver::RtpSender;

use super::rtcp::{self, KeyframeRequestForwarder};
use super::sdp;
use crate::media::{AccessUnit, AudioUnit};

/// The H.264 formats we answer, all packetization-mode 1. The stream itself is constrained
/// baseline, which every baseline, main and high decoder plays, so offers that list only a main
/// or high profile are answered too. Payload types are ours; the offer's numbers win.
const H264_PROFILES: [(&str, u8); 4] = [
    ("42e01f", 102), // constrained baseline 3.1
    ("42001f", 104), // baseline 3.1
    ("4d001f", 106), // main 3.1
    ("64001f", 108), // high 3.1
];
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// How often the ICE agent acts while connecting, and how many checks a pair gets before it
/// counts as failed (see [`Building::new`]).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
const ICE_CHECKS_PER_PAIR: u16 = 140;

/// Network settings shared by every peer of this device.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local UDP sockets ICE gathers host candidates from.
    pub udp_addrs: Vec<SocketAddr>,
    /// STUN/TURN URLs.
    pub ice_servers: Vec<String>,
}

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No H.264 format both sides support.
    #[error("{0}")]
    NoCommonCodec(String),
    /// The offer is malformed or the connection could not be built.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// What a peer reports to its session.
pub enum PeerEvent {
    /// The viewer opened a data channel.
    DataChannel(super::ControlChannel),
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

/// One viewer's connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    video: LocalTrack,
    audio: Option<LocalTrack>,
    /// We made the offer (the SDP we send then names us the DTLS client).
    offering: bool,
}

/// A track we send, with the sender that negotiated it.
struct LocalTrack {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

/// A connection under construction, before either description is applied.
struct Building {
    pc: CloseUnlessKept,
    video: LocalTrack,
    events: mpsc::UnboundedReceiver<PeerEvent>,
}

impl Peer {
    /// Builds a connection for `offer_sdp` and returns it with its answer SDP and event stream.
    /// Candidates trickle out as [`PeerEvent::LocalCandidate`] after this returns.
    /// `with_audio` adds an Opus track when the offer has an audio section with Opus.
    pub async fn answer(
        settings: &RtcSettings,
        offer_sdp: String,
        with_audio: bool,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
    ) -> Result<(Peer, String, mpsc::UnboundedReceiver<PeerEvent>), AnswerError> {
        if let Err(problem) = sdp::check_offer(&offer_sdp) {
            return Err(AnswerError::NoCommonCodec(problem.to_string()));
        }
        let with_audio = with_audio && sdp::offer_has_opus(&offer_sdp);
        let Building { pc, video, events } =
            Building::new(settings, session_ice_servers, None).await?;
        let audio = if with_audio {
            Some(LocalTrack::add(&pc, RtpCodecKind::Audio, &opus_codec(), None).await?)
        } else {
            None
        };

        let offer = RTCSessionDescription::offer(offer_sdp).context("parsing the offer")?;
        pc.set_remote_description(offer)
            .await
            .context("applying the offer")?;
        if audio.is_none() {
            // Say "no audio" instead of promising a track that never comes: left alone, the
            // answer says `sendonly` for the browser's audio and the page waits for it.
            let ours = Arc::as_ptr(&video.sender).cast::<()>() as usize;
            for transceiver in pc.get_transceivers().await {
                let sender = transceiver.sender().await.ok().flatten();
                if sender.is_none_or(|s| Arc::as_ptr(&s).cast::<()>() as usize != ours) {
                    transceiver
                        .set_direction(RTCRtpTransceiverDirection::Inactive)
                        .await
                        .context("marking audio inactive")?;
                }
            }
        }
        let answer = pc
            .create_answer(None)
            .await
            .context("creating the answer")?;
        if !sdp::answer_has_h264(&answer.sdp) {
            return Err(AnswerError::NoCommonCodec(
                "no H.264 profile in the offer is one this camera can send".to_owned(),
            ));
        }
        pc.set_local_description(answer.clone())
            .await
            .context("applying the answer")?;

        let peer = Peer {
            pc: pc.keep(),
            video,
            audio,
            offering: false,
        };
        Ok((peer, answer.sdp, events))
    }

    /// Builds a connection that offers: send-only H.264 (and Opus with `with_audio`) and the
    /// `control` data channel, created here so the viewer receives it. Returns the offer SDP;
    /// the viewer's answer goes to [`Self::accept_answer`]. As the offerer the device is ICE's
    /// controlling agent (it nominates the first pair that works) and, through the SDP it
    /// sends, the DTLS client ([`sdp::offer_as_dtls_client`]).
    pub async fn offer(
        settings: &RtcSettings,
        with_audio: bool,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
    ) -> anyhow::Result<(
        Peer,
        String,
        mpsc::UnboundedReceiver<PeerEvent>,
        super::ControlChannel,
    )> {
        let send_only = Some(RTCRtpTransceiverDirection::Sendonly);
        let Building { pc, video, events } =
            Building::new(settings, session_ice_servers, send_only).await?;
        let audio = if with_audio {
            Some(LocalTrack::add(&pc, RtpCodecKind::Audio, &opus_codec(), send_only).await?)
        } else {
            None
        };
        let channel = pc
            .create_data_channel("control", None)
            .await
            .context("creating the control channel")?;
        let offer = pc.create_offer(None).await.context("creating the offer")?;
        pc.set_local_description(offer.clone())
            .await
            .context("applying the offer")?;
        let peer = Peer {
            pc: pc.keep(),
            video,
            audio,
            offering: true,
        };
        Ok((
            peer,
            sdp::offer_as_dtls_client(&offer.sdp),
            events,
            super::ControlChannel::new(channel),
        ))
    }

    /// A new offer with fresh ICE credentials for a connection we offered (the viewer's path
    /// changed or is failing). Media goes on over the old path until the new one is chosen;
    /// the viewer's answer goes to [`Self::accept_answer`] as the first did.
    pub async fn restart_ice_offer(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.offering,
            "only the side that offered restarts ICE here"
        );
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        let offer = self
            .pc
            .create_offer(Some(options))
            .await
            .context("creating the ICE-restart offer")?;
        self.pc
            .set_local_description(offer.clone())
            .await
            .context("applying the ICE-restart offer")?;
        Ok(sdp::offer_as_dtls_client(&offer.sdp))
    }

    /// Applies the viewer's answer to our offer. A viewer that cannot play H.264 rejects the
    /// video section; that is [`AnswerError::NoCommonCodec`].
    pub async fn accept_answer(&self, answer_sdp: String) -> Result<(), AnswerError> {
        if !sdp::answer_has_h264(&answer_sdp) {
            return Err(AnswerError::NoCommonCodec(
                "the viewer's answer has no H.264 video: it cannot play this camera".to_owned(),
            ));
        }
        let answer = RTCSessionDescription::answer(answer_sdp).context("parsing the answer")?;
        self.pc
            .set_remote_description(answer)
            .await
            .context("applying the answer")?;
        Ok(())
    }

    /// The current local description as we send it, candidates included once gathered.
    pub async fn local_sdp(&self) -> Option<String> {
        let sdp = self.pc.local_description().await?.sdp;
        Some(if self.offering {
            sdp::offer_as_dtls_client(&sdp)
        } else {
            sdp
        })
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

    /// A sender for access units, valid once the connection is up.
    pub async fn video_sender(&self) -> anyhow::Result<VideoSender> {
        Ok(VideoSender(self.video.sample_sender().await?))
    }

    /// A sender for Opus packets, if the viewer takes audio.
    pub async fn audio_sender(&self) -> anyhow::Result<Option<AudioSender>> {
        match &self.audio {
            Some(track) => Ok(Some(AudioSender(track.sample_sender().await?))),
            None => Ok(None),
        }
    }

    /// Closes the connection; safe to call more than once.
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }
}

impl Building {
    /// The peer connection with our codecs, interceptors and ICE settings, and the video track.
    /// `direction` is `None` when answering (the offer decides), `Sendonly` when offering.
    async fn new(
        settings: &RtcSettings,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
        direction: Option<RTCRtpTransceiverDirection>,
    ) -> anyhow::Result<Self> {
        let mut media_engine = MediaEngine::default();
        let video_codecs = h264_codecs();
        for codec in &video_codecs {
            media_engine
                .register_codec(codec.clone(), RtpCodecKind::Video)
                .context("registering H.264")?;
        }
        media_engine
            .register_codec(opus_codec(), RtpCodecKind::Audio)
            .context("registering Opus")?;
        let registry = interceptors(&mut media_engine);

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
            .build()
            .await
            .context("creating the peer connection")?;
        let pc = CloseUnlessKept(Some(Arc::new(pc)));

        let video = LocalTrack::add(&pc, RtpCodecKind::Video, &video_codecs[0], direction).await?;
        // PLI/FIR arrive as events on the video track (see `rtcp`); forward them to the session.
        let track = Arc::clone(&video.track);
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
        Ok(Self { pc, video, events })
    }
}

/// A peer connection that has not made it into a [`Peer`] yet. Should building it fail part-way
/// (any `?` above), dropping it closes the connection: dropping the handle alone would leave
/// the crate's driver task and sockets running.
struct CloseUnlessKept(Option<Arc<dyn PeerConnection>>);

impl CloseUnlessKept {
    fn keep(mut self) -> Arc<dyn PeerConnection> {
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

impl LocalTrack {
    /// Adds a track of `kind`: with `add_track` when answering (it joins the offer's
    /// transceiver), or in a new transceiver of the given direction when offering.
    async fn add(
        pc: &Arc<dyn PeerConnection>,
        kind: RtpCodecKind,
        codec: &RTCRtpCodecParameters,
        direction: Option<RTCRtpTransceiverDirection>,
    ) -> anyhow::Result<Self> {
        let ssrc = rand_ssrc();
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "ferrocam".to_owned(),
                kind.to_string(),
                "camera".to_owned(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            ),
        )?);
        let local = Arc::clone(&track) as Arc<dyn TrackLocal>;
        let sender = match direction {
            None => pc
                .add_track(local)
                .await
                .with_context(|| format!("adding the {kind} track"))?,
            Some(direction) => pc
                .add_transceiver_from_track(
                    local,
                    Some(RTCRtpTransceiverInit {
                        direction,
                        streams: Vec::new(),
                        send_encodings: Vec::new(),
                    }),
                )
                .await
                .with_context(|| format!("adding the {kind} transceiver"))?
                .sender()
                .await
                .ok()
                .flatten()
                .ok_or_else(|| anyhow!("the {kind} transceiver has no sender"))?,
        };
        Ok(Self {
            track,
            sender,
            ssrc,
        })
    }

    /// Stamps packets with the payload type the viewer's offer chose (Chromium picks its own
    /// number, not ours); valid once negotiated.
    async fn sample_sender(&self) -> anyhow::Result<SampleSender> {
        let payload_type = self
            .sender
            .get_parameters()
            .await?
            .rtp_parameters
            .codecs
            .first()
            .map(|codec| codec.payload_type)
            .ok_or_else(|| anyhow!("no codec was negotiated"))?;
        Ok(SampleSender {
            track: Arc::clone(&self.track),
            ssrc: self.ssrc,
            payload_type,
        })
    }
}

struct SampleSender {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
}

impl SampleSender {
    async fn send(
        &self,
        data: &bytes::Bytes,
        duration: Duration,
        at: Instant,
    ) -> anyhow::Result<()> {
        self.track
            .sample_writer(self.ssrc, self.payload_type)
            .write_sample(&Sample {
                data: data.clone(),
                duration,
                ..Sample::new(at)
            })
            .await
            .map_err(|e| anyhow!("sending media: {e}"))
    }
}

/// Writes access units onto one viewer's video track.
pub struct VideoSender(SampleSender);

impl VideoSender {
    /// Packetizes and sends one access unit.
    pub async fn send(&self, unit: &AccessUnit) -> anyhow::Result<()> {
        self.0
            .send(&unit.data, unit.duration, unit.encoded_at)
            .await
    }
}

/// Writes Opus packets onto one viewer's audio track.
pub struct AudioSender(SampleSender);

impl AudioSender {
    /// Sends one Opus packet.
    pub async fn send(&self, unit: &AudioUnit) -> anyhow::Result<()> {
        self.0
            .send(&unit.data, unit.duration, unit.encoded_at)
            .await
    }
}

fn h264_codecs() -> Vec<RTCRtpCodecParameters> {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    H264_PROFILES
        .iter()
        .map(|(profile, payload_type)| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                ),
                // nack/pli come with the default interceptors; FIR is ours to advertise.
                rtcp_feedback: vec![feedback("ccm", "fir")],
            },
            payload_type: *payload_type,
        })
        .collect()
}

/// Packets kept per stream for retransmission on NACK: about a second of 720p at 2 Mbit/s, far
/// longer than a NACK takes to arrive, and a quarter of the crate's default of 1024, which was
/// most of what a viewer cost in memory (measured: 1.37 MiB per viewer with 1024).
const NACK_BUFFER_PACKETS: u16 = 256;

/// The interceptor chain of a sending-only peer: NACK responder (we retransmit, we never ask),
/// sender/receiver reports, and the keyframe-request forwarder. The crate's default set adds a
/// NACK generator and TWCC receiver a device that receives no media has no use for.
fn interceptors(media_engine: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new().with(
        Slot::NackResponder,
        rtc::interceptor::NackResponderBuilder::new()
            .with_size(NACK_BUFFER_PACKETS)
            .build(),
    );
    configure_rtcp_reports(registry)
        .with(Slot::from(rtcp::SLOT), KeyframeRequestForwarder::default())
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
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

    async fn on_data_channel(&self, data_channel: Arc<dyn webrtc::data_channel::DataChannel>) {
        let _ = self
            .tx
            .send(PeerEvent::DataChannel(super::ControlChannel::new(
                data_channel,
            )));
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
