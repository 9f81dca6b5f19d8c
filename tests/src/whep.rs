//! A WHEP player written against the draft with the `webrtc` crate, decoding what it receives
//! with a real GStreamer H.264 decoder. It proves a non-browser WHEP client can watch a camera,
//! and lets tests poke at PATCH/DELETE edge cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use ferrocam_protocol::VideoCodec;
use gstreamer as gst;
use gstreamer::prelude::*;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

mod decoder;
mod http_client;
mod receiver;

pub use decoder::Stamps;
pub use http_client::{HttpReply, http};

use decoder::decoder;
use receiver::{Counters, Handler, PlayerEvent};

/// The payload type this player offers for `codec`, which its decoder expects.
fn payload_type(codec: VideoCodec) -> u8 {
    match codec {
        VideoCodec::H264 => 102,
        VideoCodec::Vp8 => 96,
    }
}

/// The one video format this player offers.
fn offered(codec: VideoCodec) -> RTCRtpCodec {
    let (mime_type, sdp_fmtp_line) = match codec {
        VideoCodec::H264 => (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        VideoCodec::Vp8 => (MIME_TYPE_VP8, ""),
    };
    RTCRtpCodec {
        mime_type: mime_type.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: sdp_fmtp_line.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A connected WHEP player.
pub struct WhepPlayer {
    pub pc: Arc<dyn PeerConnection>,
    /// Absolute session URL from `Location`.
    pub session_url: String,
    /// `ETag` of the ICE session.
    pub etag: String,
    /// The `201 Created` response.
    pub created: HttpReply,
    /// Candidates this player gathered, as `a=candidate:` lines.
    pub candidates: Vec<String>,
    decoded: Arc<AtomicU64>,
    /// Glass-to-glass samples read from stamped frames ([`ferrocam_protocol::stamp`]).
    stamps: Arc<Stamps>,
    counters: Arc<Counters>,
    video_track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
    pipeline: gst::Pipeline,
}

/// What the player asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhepOptions {
    /// Also receive audio (Opus).
    pub audio: bool,
    /// Count packets but do not decode (load generators that must stay cheap).
    pub skip_decode: bool,
    /// The only video codec offered (H.264 unless set).
    pub codec: VideoCodec,
}

impl WhepPlayer {
    /// POSTs an offer to `endpoint` (`http://…/whep/<device>`), applies the answer, then trickles
    /// this player's candidates with one PATCH, as the draft recommends. Fails unless the POST
    /// returns 201 and the PATCH 204.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        Self::connect_with(endpoint, WhepOptions::default()).await
    }

    /// [`Self::connect`] with options.
    pub async fn connect_with(endpoint: &str, options: WhepOptions) -> anyhow::Result<Self> {
        let (player, events) = Self::offer(endpoint, options).await?;
        let mut player = player;
        player.trickle(events).await?;
        Ok(player)
    }

    /// Like [`Self::connect`] but returns the POST's response when it is not 201.
    pub async fn try_post(endpoint: &str) -> anyhow::Result<Result<Self, HttpReply>> {
        match Self::offer(endpoint, WhepOptions::default()).await {
            Ok((player, events)) => {
                let mut player = player;
                player.trickle(events).await?;
                Ok(Ok(player))
            }
            Err(e) => match e.downcast::<HttpReply>() {
                Ok(reply) => Ok(Err(reply)),
                Err(e) => Err(e),
            },
        }
    }

    /// POSTs an offer and applies the answer, without trickling anything (the caller decides
    /// whether the connection ever completes).
    pub async fn post_only(endpoint: &str) -> anyhow::Result<Self> {
        Ok(Self::offer(endpoint, WhepOptions::default()).await?.0)
    }

    async fn offer(
        endpoint: &str,
        options: WhepOptions,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<PlayerEvent>)> {
        gst::init()?;
        let (pipeline, appsrc, decoded, stamps) = decoder(options.codec)?;

        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: offered(options.codec),
                payload_type: payload_type(options.codec),
            },
            RtpCodecKind::Video,
        )?;
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let video_track = Arc::new(std::sync::Mutex::new(None));
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(25))
                    .build(),
            )
            .with_handler(Arc::new(Handler {
                events: events_tx,
                decoder: (!options.skip_decode).then_some(appsrc),
                codec: options.codec,
                counters: Arc::clone(&counters),
                video_track: Arc::clone(&video_track),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
        if options.audio {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await?;
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer.clone()).await?;

        let created = http(
            "POST",
            endpoint.to_owned(),
            vec![("Content-Type", "application/sdp".to_owned())],
            Some(offer.sdp.clone()),
        )
        .await?;
        if created.status != 201 {
            let _ = pc.close().await;
            return Err(anyhow::Error::new(created));
        }
        let location = created.header("Location").context("201 without Location")?;
        let session_url = absolute(endpoint, location);
        let etag = created
            .header("ETag")
            .context("201 without ETag")?
            .to_owned();
        pc.set_remote_description(RTCSessionDescription::answer(created.body.clone())?)
            .await
            .context("applying the WHEP answer")?;
        Ok((
            Self {
                pc,
                session_url,
                etag,
                created,
                candidates: Vec::new(),
                decoded,
                stamps,
                counters,
                video_track,
                pipeline,
            },
            events,
        ))
    }

    /// Waits for gathering to finish and PATCHes every candidate plus end-of-candidates.
    async fn trickle(
        &mut self,
        mut events: mpsc::UnboundedReceiver<PlayerEvent>,
    ) -> anyhow::Result<()> {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(event) = events.recv().await {
                match event {
                    PlayerEvent::Candidate(c) => self.candidates.push(format!("a={c}")),
                    PlayerEvent::GatheringComplete => break,
                }
            }
        })
        .await;
        let mut body = String::from("a=mid:0\r\n");
        for line in &self.candidates {
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str("a=end-of-candidates\r\n");
        let reply = self.patch(Some(self.etag.clone()), &body).await?;
        if reply.status != 204 {
            bail!("trickle PATCH returned {}: {}", reply.status, reply.body);
        }
        Ok(())
    }

    /// Sends a PATCH with a trickle-ice-sdpfrag body and the given If-Match.
    pub async fn patch(&self, if_match: Option<String>, body: &str) -> anyhow::Result<HttpReply> {
        let mut headers = vec![("Content-Type", "application/trickle-ice-sdpfrag".to_owned())];
        if let Some(tag) = if_match {
            headers.push(("If-Match", tag));
        }
        http(
            "PATCH",
            self.session_url.clone(),
            headers,
            Some(body.to_owned()),
        )
        .await
    }

    /// Frames the H.264 decoder has produced.
    /// Milliseconds from capture to decode of every stamped frame so far.
    pub fn latencies_ms(&self) -> Vec<f64> {
        self.stamps.latencies.lock().expect("stamps lock").clone()
    }

    /// When the first frame was decoded.
    pub fn first_frame_at(&self) -> Option<std::time::Instant> {
        *self.stamps.first_frame.lock().expect("stamps lock")
    }

    pub fn frames_decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// Video RTP packets received.
    pub fn rtp_packets(&self) -> u64 {
        self.counters.video_packets.load(Ordering::Relaxed)
    }

    /// Audio RTP packets received.
    pub fn audio_packets(&self) -> u64 {
        self.counters.audio_packets.load(Ordering::Relaxed)
    }

    /// Keyframes (IDR pictures, or VP8 key frames) received.
    pub fn keyframes(&self) -> u64 {
        self.counters.keyframes.load(Ordering::Relaxed)
    }

    /// Sends a Picture Loss Indication for the video track, as a decoder that lost a frame
    /// would.
    pub async fn send_pli(&self) -> anyhow::Result<()> {
        let (track, media_ssrc) = self.video_ssrc().await?;
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await?;
        Ok(())
    }

    /// Sends a Receiver Estimated Maximum Bitrate of `bits_per_second` for the video track, as
    /// a receiver that estimates its own path would.
    pub async fn send_remb(&self, bits_per_second: f32) -> anyhow::Result<()> {
        let (track, media_ssrc) = self.video_ssrc().await?;
        track
            .write_rtcp(vec![Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 0,
                bitrate: bits_per_second,
                ssrcs: vec![media_ssrc],
            })])
            .await?;
        Ok(())
    }

    async fn video_ssrc(&self) -> anyhow::Result<(Arc<dyn TrackRemote>, u32)> {
        let track = self
            .video_track
            .lock()
            .expect("track slot")
            .clone()
            .context("no video track yet")?;
        let media_ssrc = *track
            .ssrcs()
            .await
            .first()
            .context("video track without SSRC")?;
        Ok((track, media_ssrc))
    }

    /// Waits until `n` frames are decoded.
    pub async fn wait_frames(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        crate::eventually(&format!("{n} decoded frames"), timeout, || async {
            Ok((self.frames_decoded() >= n).then_some(()))
        })
        .await
    }

    /// DELETEs the session and closes the connection; returns the DELETE status.
    pub async fn delete(self) -> anyhow::Result<u16> {
        let reply = http("DELETE", self.session_url.clone(), vec![], None).await?;
        self.close().await;
        Ok(reply.status)
    }

    /// Closes the connection without telling the server.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn absolute(endpoint: &str, location: &str) -> String {
    if location.starts_with("http") {
        return location.to_owned();
    }
    let origin_end = endpoint
        .match_indices('/')
        .nth(2)
        .map(|(i, _)| i)
        .unwrap_or(endpoint.len());
    format!("{}{location}", &endpoint[..origin_end])
}
