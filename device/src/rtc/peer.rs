//! One viewer's peer connection: the device answers a viewer's offer, or makes the offer
//! itself (and then controls ICE).
//!
//! How the connection is put together lives in [`super::building`], the tracks and media
//! writers in [`super::track`], and what it reports in [`super::events`]; this file holds the
//! negotiation a session drives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ferrocam_protocol::IceCandidate;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

use super::PeerEvent;
use super::bandwidth::{LinkEstimate, RateBounds};
use super::building::Building;
use super::codecs::{opus_codec, video_codecs};
use super::sdp;
use super::track::{AudioSender, LocalTrack, VideoSender};
use crate::media::VideoCodec;

/// Network and codec settings shared by every peer of this device.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// Local UDP sockets ICE gathers host candidates from.
    pub udp_addrs: Vec<SocketAddr>,
    /// Local TCP addresses each peer listens on for ICE over TCP (passive candidates, RFC
    /// 6544): the way through for a viewer whose network drops UDP. Empty: UDP only.
    pub tcp_addrs: Vec<SocketAddr>,
    /// STUN/TURN URLs.
    pub ice_servers: Vec<String>,
    /// The video codecs the media engine can send, preferred first (H.264, then VP8 for
    /// viewers that cannot decode H.264, when the device has that fallback).
    pub codecs: Vec<VideoCodec>,
    /// Estimate each viewer's path from its transport-wide feedback, within these rates
    /// (`None`: no congestion control; the encoder runs at its plan's rate).
    pub congestion: Option<RateBounds>,
    /// Offer the playout-delay extension at 0 ms: Chromium then shows each frame as soon as it
    /// is decoded, with no jitter buffer to hide a retransmission (`rtc/extensions.rs`).
    pub zero_playout_delay: bool,
}

impl RtcSettings {
    /// The settings for binding ICE to `udp_addrs`. Loopback addresses are used only when they
    /// are all there is (a device serving browsers on its own machine): next to other
    /// addresses they are dropped. Firefox ignores loopback, yet a device with a loopback
    /// socket can reach Firefox's real address from it, nominate that pair, and leave Firefox
    /// without a working connection (measured: 11 of 20 sessions failed with Firefox on the
    /// device's own host, and about one in three in the field test). Every browser on the
    /// machine reaches its other addresses as well.
    /// The same rule holds for `tcp_addrs`.
    pub fn new(
        udp_addrs: Vec<SocketAddr>,
        tcp_addrs: Vec<SocketAddr>,
        ice_servers: Vec<String>,
        codecs: Vec<VideoCodec>,
    ) -> Self {
        Self {
            udp_addrs: loopback_only_alone(udp_addrs),
            tcp_addrs: loopback_only_alone(tcp_addrs),
            ice_servers,
            codecs,
            congestion: None,
            zero_playout_delay: true,
        }
    }

    /// The same, asking viewers for zero playout delay or not.
    pub fn with_zero_playout_delay(self, on: bool) -> Self {
        Self {
            zero_playout_delay: on,
            ..self
        }
    }

    /// The same, estimating each viewer's path within `bounds`.
    pub fn with_congestion(self, bounds: Option<RateBounds>) -> Self {
        Self {
            congestion: bounds,
            ..self
        }
    }

    /// Whether viewers that cannot decode H.264 can get VP8.
    fn vp8(&self) -> bool {
        self.codecs.contains(&VideoCodec::Vp8)
    }
}

/// `addrs` without its loopback addresses, unless loopback is all there is.
fn loopback_only_alone(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (loopback, other): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|addr| addr.ip().is_loopback());
    if !other.is_empty() && !loopback.is_empty() {
        tracing::info!(
            ?loopback,
            "ICE leaves loopback out: other addresses are configured"
        );
    }
    if other.is_empty() { loopback } else { other }
}

/// What a session does with audio: send the device's own sound, play the viewer's
/// microphone (it may talk and the device has a speaker), both, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioPlan {
    pub send: bool,
    pub receive: bool,
}

impl AudioPlan {
    /// The direction our description gives the audio section (`None`: no audio at all).
    fn direction(self) -> Option<RTCRtpTransceiverDirection> {
        match (self.send, self.receive) {
            (true, true) => Some(RTCRtpTransceiverDirection::Sendrecv),
            (true, false) => Some(RTCRtpTransceiverDirection::Sendonly),
            (false, true) => Some(RTCRtpTransceiverDirection::Recvonly),
            (false, false) => None,
        }
    }
}

/// The mid and direction of the offer's first audio section, if it has one with a mid.
fn first_audio_section(offer_sdp: &str) -> Option<(String, RTCRtpTransceiverDirection)> {
    sdp::media_sections(offer_sdp)
        .into_iter()
        .find(|section| section.kind == "audio")
        .and_then(|section| Some((section.mid?.to_owned(), section.direction.into())))
}

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No video format both sides support.
    #[error("{0}")]
    NoCommonCodec(String),
    /// The offer is malformed or the connection could not be built.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// One viewer's connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    video: LocalTrack,
    /// What this viewer's path carries, from its feedback (`None` without congestion control).
    estimate: Option<LinkEstimate>,
    /// What the video track carries: chosen from the offer when answering, from the viewer's
    /// answer when offering (H.264 until then).
    video_codec: Mutex<VideoCodec>,
    /// A description has settled the codec: later answers (ICE restarts) must keep it, as the
    /// running stream's packetizer and feed are for it.
    answered: AtomicBool,
    audio: Option<LocalTrack>,
    /// We made the offer (the SDP we send then names us the DTLS client).
    offering: bool,
    settings: Arc<RtcSettings>,
}

impl Peer {
    /// Builds a connection for `offer_sdp` and returns it with its answer SDP and event stream.
    /// Candidates trickle out as [`PeerEvent::LocalCandidate`] after this returns.
    /// `audio` says whether we send Opus and play the viewer's, when the offer has an audio
    /// section with Opus; whatever the offer asks, the answer never receives more.
    /// The video codec is H.264 when the offer has it in a profile we answer, else VP8 when we
    /// have it and the offer lists it.
    pub async fn answer(
        settings: &Arc<RtcSettings>,
        offer_sdp: String,
        audio: AudioPlan,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
    ) -> Result<(Peer, String, mpsc::UnboundedReceiver<PeerEvent>), AnswerError> {
        let preferred = sdp::choose_video_codec(&offer_sdp, settings.vp8())
            .map_err(|problem| AnswerError::NoCommonCodec(problem.to_string()))?;
        // VP8 as well when the offer lists it: the crate answers only H.264 profiles it knows
        // exactly, and an offer whose H.264 is of another profile would get no video at all.
        let mut codecs = vec![preferred];
        if preferred == VideoCodec::H264
            && settings.vp8()
            && sdp::lists_video_codec(&offer_sdp, VideoCodec::Vp8)
        {
            codecs.push(VideoCodec::Vp8);
        }
        let opus = sdp::offer_has_opus(&offer_sdp);
        let plan = AudioPlan {
            send: audio.send && opus,
            receive: audio.receive && opus,
        };
        let Building {
            pc,
            video,
            events,
            estimate,
        } = Building::new(settings, session_ice_servers, None, &codecs).await?;
        let audio = if plan.send {
            Some(
                LocalTrack::add(&pc, RtpCodecKind::Audio, &opus_codec().rtp_codec, None, &[])
                    .await?,
            )
        } else {
            None
        };

        let audio_section = first_audio_section(&offer_sdp);
        let offer = RTCSessionDescription::offer(offer_sdp).context("parsing the offer")?;
        pc.set_remote_description(offer)
            .await
            .context("applying the offer")?;
        // Every other section says exactly what we do. The offer's first audio section gets our
        // plan within what the offer allows: "no audio" rather than a track that never comes
        // (the page would wait for it), and never "receive" for a session that may not talk,
        // whatever the offer asked. Any further section is refused (inactive): one session
        // has one microphone, and no viewer's video is wanted.
        let ours = Arc::as_ptr(&video.sender).cast::<()>() as usize;
        for transceiver in pc.get_transceivers().await {
            let sender = transceiver.sender().await.ok().flatten();
            if sender.is_some_and(|s| Arc::as_ptr(&s).cast::<()>() as usize == ours) {
                continue;
            }
            let mid = transceiver.mid().await.ok().flatten();
            let direction = match &audio_section {
                Some((audio_mid, offered)) if mid.as_deref() == Some(audio_mid.as_str()) => plan
                    .direction()
                    .unwrap_or(RTCRtpTransceiverDirection::Inactive)
                    .intersect(offered.reverse()),
                _ => RTCRtpTransceiverDirection::Inactive,
            };
            transceiver
                .set_direction(direction)
                .await
                .context("setting the audio direction")?;
        }
        let answer = pc
            .create_answer(None)
            .await
            .context("creating the answer")?;
        let codec = sdp::answer_video_codec(&answer.sdp)
            .filter(|codec| codecs.contains(codec))
            .ok_or_else(|| {
                AnswerError::NoCommonCodec(format!(
                    "no {preferred} format in the offer is one this camera can send"
                ))
            })?;
        if codec != preferred {
            // Before our answer is applied, so the sender binds the codec really sent.
            video
                .switch_codec(&video_codecs(codec).remove(0).rtp_codec)
                .await?;
        }
        pc.set_local_description(answer.clone())
            .await
            .context("applying the answer")?;

        let peer = Peer {
            pc: pc.keep(),
            video,
            estimate,
            video_codec: Mutex::new(codec),
            answered: AtomicBool::new(true),
            audio,
            offering: false,
            settings: Arc::clone(settings),
        };
        Ok((peer, answer.sdp, events))
    }

    /// Builds a connection that offers: send-only H.264, Opus as `audio` says, and the
    /// `control` data channel, created here so the viewer receives it. Returns the offer SDP;
    /// the viewer's answer goes to [`Self::accept_answer`]. As the offerer the device is ICE's
    /// controlling agent (it nominates the first pair that works) and, through the SDP it
    /// sends, the DTLS client ([`sdp::offer_as_dtls_client`]).
    pub async fn offer(
        settings: &Arc<RtcSettings>,
        audio: AudioPlan,
        session_ice_servers: &[ferrocam_protocol::viewer::IceServer],
    ) -> anyhow::Result<(
        Peer,
        String,
        mpsc::UnboundedReceiver<PeerEvent>,
        super::ControlChannel,
    )> {
        let send_only = Some(RTCRtpTransceiverDirection::Sendonly);
        let Building {
            pc,
            video,
            events,
            estimate,
        } = Building::new(settings, session_ice_servers, send_only, &settings.codecs).await?;
        let audio = match audio.direction() {
            Some(direction) if audio.send => Some(
                LocalTrack::add(
                    &pc,
                    RtpCodecKind::Audio,
                    &opus_codec().rtp_codec,
                    Some(direction),
                    &[opus_codec()],
                )
                .await?,
            ),
            Some(direction) => {
                // Receive only: the device has a speaker but no microphone.
                let transceiver = pc
                    .add_transceiver_from_kind(
                        RtpCodecKind::Audio,
                        Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                            direction,
                            streams: Vec::new(),
                            send_encodings: Vec::new(),
                        }),
                    )
                    .await
                    .context("adding the audio transceiver")?;
                transceiver
                    .set_codec_preferences(vec![opus_codec()])
                    .await
                    .context("listing Opus")?;
                None
            }
            None => None,
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
            estimate,
            video_codec: Mutex::new(VideoCodec::H264),
            answered: AtomicBool::new(false),
            audio,
            offering: true,
            settings: Arc::clone(settings),
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

    /// Applies the viewer's answer to our offer. The video track carries the codec the answer
    /// kept (H.264 if it kept any); a viewer that can play none of ours rejects the video
    /// section, and that is [`AnswerError::NoCommonCodec`].
    pub async fn accept_answer(&self, answer_sdp: String) -> Result<(), AnswerError> {
        let codec = sdp::answer_video_codec(&answer_sdp)
            .filter(|codec| self.settings.codecs.contains(codec))
            .ok_or_else(|| {
                let ours = self.settings.codecs.iter().map(ToString::to_string).collect::<Vec<_>>();
                AnswerError::NoCommonCodec(format!(
                    "the viewer's answer has no video this camera can send ({}): it cannot play this camera",
                    ours.join(" or ")
                ))
            })?;
        let current = self.video_codec();
        if self.answered.load(Ordering::Relaxed) {
            if !sdp::lists_video_codec(&answer_sdp, current) {
                return Err(AnswerError::NoCommonCodec(format!(
                    "the viewer's new answer drops {current}, which this session sends"
                )));
            }
        } else if codec != current {
            let parameters = video_codecs(codec).remove(0).rtp_codec;
            self.video.switch_codec(&parameters).await?;
            *self.video_codec.lock().expect("codec lock") = codec;
        }
        let answer = RTCSessionDescription::answer(answer_sdp).context("parsing the answer")?;
        self.pc
            .set_remote_description(answer)
            .await
            .context("applying the answer")?;
        self.answered.store(true, Ordering::Relaxed);
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

    /// The codec the video track carries.
    /// What this viewer's path carries, as its feedback says (`None` without congestion
    /// control).
    pub fn link_estimate(&self) -> Option<LinkEstimate> {
        self.estimate.clone()
    }

    pub fn video_codec(&self) -> VideoCodec {
        *self.video_codec.lock().expect("codec lock")
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

    /// A sender for frames of [`Self::video_codec`], valid once the connection is up.
    pub async fn video_sender(&self) -> anyhow::Result<VideoSender> {
        let codec = video_codecs(self.video_codec()).remove(0).rtp_codec;
        Ok(VideoSender(self.video.sample_sender(&codec).await?))
    }

    /// A sender for Opus packets, if the viewer takes audio.
    pub async fn audio_sender(&self) -> anyhow::Result<Option<AudioSender>> {
        match &self.audio {
            Some(track) => Ok(Some(AudioSender(
                track.sample_sender(&opus_codec().rtp_codec).await?,
            ))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn loopback_is_used_only_when_it_is_all_there_is() {
        let both = vec![VideoCodec::H264, VideoCodec::Vp8];
        let mixed = RtcSettings::new(
            addrs(&["127.0.0.1:0", "10.0.0.2:0"]),
            addrs(&["127.0.0.1:0", "10.0.0.2:0"]),
            vec![],
            both.clone(),
        );
        assert_eq!(mixed.udp_addrs, addrs(&["10.0.0.2:0"]));
        assert_eq!(mixed.tcp_addrs, addrs(&["10.0.0.2:0"]));
        let only = RtcSettings::new(addrs(&["127.0.0.1:0", "[::1]:0"]), vec![], vec![], both);
        assert_eq!(only.udp_addrs, addrs(&["127.0.0.1:0", "[::1]:0"]));
        assert!(only.tcp_addrs.is_empty());
        let wildcard = RtcSettings::new(
            addrs(&["0.0.0.0:0", "127.0.0.1:0"]),
            vec![],
            vec![],
            vec![VideoCodec::H264],
        );
        assert_eq!(wildcard.udp_addrs, addrs(&["0.0.0.0:0"]));
        assert!(!wildcard.vp8());
        assert!(only.vp8());
    }
}
