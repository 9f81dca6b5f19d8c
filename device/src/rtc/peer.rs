//! One viewer's peer connection: the device answers a viewer's offer, or makes the offer
//! itself (and then controls ICE).
//!
//! How the connection is put together lives in [`super::building`], the tracks and media
//! writers in [`super::track`], and what it reports in [`super::events`]; this file holds the
//! negotiation a session drives.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ferrocam_protocol::IceCandidate;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

use super::PeerEvent;
use super::building::Building;
use super::codecs::opus_codec;
use super::sdp;
use super::track::{AudioSender, LocalTrack, VideoSender};

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

/// One viewer's connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    video: LocalTrack,
    audio: Option<LocalTrack>,
    /// We made the offer (the SDP we send then names us the DTLS client).
    offering: bool,
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
