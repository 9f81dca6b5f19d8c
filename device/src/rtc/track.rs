//! The tracks a peer sends and the writers that put media on them: [`VideoSender`] for encoded
//! frames, [`AudioSender`] for Opus packets.
//!
//! Apart from the connection code because writing media is the hot path. We packetize here
//! rather than through the crate's sample track because a video track's codec is settled only
//! by the viewer's answer (H.264, or VP8 for a viewer that cannot decode H.264), after the track
//! was bound to the connection: the bound track only forwards RTP, and the packetizer is made
//! once the codec and its payload type are known.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packetizer::{Packetizer, new_packetizer};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::extensions::FrameExtensions;
use crate::media::{AccessUnit, AudioUnit};

/// Largest RTP packet we send (the crate's own sample track uses the same): leaves room for
/// SRTP, TURN and VPN overheads under a 1,500-byte MTU.
const RTP_MTU: usize = 1200;

/// A track we send, with the sender that negotiated it.
pub(super) struct LocalTrack {
    pub(super) track: Arc<TrackLocalStaticRTP>,
    pub(super) sender: Arc<dyn RtpSender>,
    kind: RtpCodecKind,
    ssrc: u32,
}

impl LocalTrack {
    /// Adds a track of `kind` that starts out carrying `codec`: with `add_track` when answering
    /// (it joins the offer's transceiver), or in a new transceiver of the given direction when
    /// offering. Our description lists `offered`, in that order (unless empty): the crate
    /// would otherwise list only the track's own codec.
    pub(super) async fn add(
        pc: &Arc<dyn PeerConnection>,
        kind: RtpCodecKind,
        codec: &RTCRtpCodec,
        direction: Option<RTCRtpTransceiverDirection>,
        offered: &[RTCRtpCodecParameters],
    ) -> anyhow::Result<Self> {
        let ssrc = rand_ssrc();
        let track = Arc::new(TrackLocalStaticRTP::new(describe(kind, ssrc, codec)));
        let local = Arc::clone(&track) as Arc<dyn TrackLocal>;
        let sender = match direction {
            None => {
                let sender = pc
                    .add_track(local)
                    .await
                    .with_context(|| format!("adding the {kind} track"))?;
                if !offered.is_empty() {
                    prefer(pc, &sender, offered).await?;
                }
                sender
            }
            Some(direction) => {
                let transceiver = pc
                    .add_transceiver_from_track(
                        local,
                        Some(RTCRtpTransceiverInit {
                            direction,
                            streams: Vec::new(),
                            send_encodings: Vec::new(),
                        }),
                    )
                    .await
                    .with_context(|| format!("adding the {kind} transceiver"))?;
                transceiver
                    .set_codec_preferences(offered.to_vec())
                    .await
                    .with_context(|| format!("listing the {kind} codecs to offer"))?;
                transceiver
                    .sender()
                    .await
                    .ok()
                    .flatten()
                    .ok_or_else(|| anyhow!("the {kind} transceiver has no sender"))?
            }
        };
        Ok(Self {
            track,
            sender,
            kind,
            ssrc,
        })
    }

    /// Tells the connection that this track carries `codec` from now on. Called before the
    /// answer that chose it is applied, so the connection's RTCP machinery (NACK, sender
    /// reports) binds the stream with the codec it really carries. Same SSRC and ids: the
    /// track already bound keeps forwarding the packets.
    pub(super) async fn switch_codec(&self, codec: &RTCRtpCodec) -> anyhow::Result<()> {
        let described = Arc::new(TrackLocalStaticRTP::new(describe(
            self.kind, self.ssrc, codec,
        )));
        self.sender
            .replace_track(described)
            .await
            .with_context(|| format!("switching the {} track to {}", self.kind, codec.mime_type))
    }

    /// A writer that packetizes `codec` with the payload type the viewer's side chose for it
    /// (Chromium picks its own numbers, not ours); valid once negotiated.
    pub(super) async fn sample_sender(&self, codec: &RTCRtpCodec) -> anyhow::Result<SampleSender> {
        let parameters = self.sender.get_parameters().await?.rtp_parameters;
        let payload_type = parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
            .map(|c| c.payload_type)
            .ok_or_else(|| anyhow!("{} was not negotiated", codec.mime_type))?;
        let packetizer = new_packetizer(
            Instant::now(),
            RTP_MTU,
            payload_type,
            self.ssrc,
            codec.payloader()?,
            Box::new(rtc::rtp::sequence::new_random_sequencer()),
            codec.clock_rate,
        );
        Ok(SampleSender {
            track: Arc::clone(&self.track),
            packetizer: Mutex::new(Box::new(packetizer)),
            clock_rate: codec.clock_rate,
            extensions: FrameExtensions::negotiated(&parameters.header_extensions),
        })
    }
}

/// Sets the codecs the transceiver of `sender` negotiates.
async fn prefer(
    pc: &Arc<dyn PeerConnection>,
    sender: &Arc<dyn RtpSender>,
    codecs: &[RTCRtpCodecParameters],
) -> anyhow::Result<()> {
    // An address, not a pointer, so the future stays `Send`.
    let ours = Arc::as_ptr(sender).cast::<()>() as usize;
    for transceiver in pc.get_transceivers().await {
        let theirs = transceiver.sender().await.ok().flatten();
        if theirs.is_some_and(|s| Arc::as_ptr(&s).cast::<()>() as usize == ours) {
            return transceiver
                .set_codec_preferences(codecs.to_vec())
                .await
                .context("listing the codecs to negotiate");
        }
    }
    Err(anyhow!("the track's transceiver is gone"))
}

/// How the connection sees a track: one encoding, on `ssrc`, in `codec`. The ids are the same
/// for every description of a track, so switching codecs keeps the browser's track.
fn describe(kind: RtpCodecKind, ssrc: u32, codec: &RTCRtpCodec) -> MediaStreamTrack {
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
            codec: codec.clone(),
            ..Default::default()
        }],
    )
}

/// Packetizes frames of one codec and writes them onto one track.
pub(super) struct SampleSender {
    track: Arc<TrackLocalStaticRTP>,
    /// Held only to packetize (no await under it): each frame's packets get consecutive
    /// sequence numbers and one timestamp.
    packetizer: Mutex<Box<dyn Packetizer>>,
    clock_rate: u32,
    /// The header extensions this viewer agreed to (video: playout-delay, abs-capture-time).
    extensions: FrameExtensions,
}

impl SampleSender {
    async fn send(
        &self,
        data: &bytes::Bytes,
        duration: Duration,
        at: Instant,
        captured_at: SystemTime,
    ) -> anyhow::Result<()> {
        let samples = (duration.as_secs_f64() * f64::from(self.clock_rate)).round() as u32;
        let mut packets = self
            .packetizer
            .lock()
            .expect("packetizer lock")
            .packetize(at, data, samples)
            .map_err(|e| anyhow!("packetizing: {e}"))?;
        self.extensions.apply(&mut packets, captured_at);
        // Every packet is offered even after one fails: their sequence numbers are taken, and a
        // hole the receiver can NACK beats a frame cut short.
        let mut failed = None;
        for packet in packets {
            if let Err(e) = self.track.write_rtp(packet).await {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(anyhow!("sending media: {e}")),
            None => Ok(()),
        }
    }
}

/// Writes encoded frames onto one viewer's video track.
pub struct VideoSender(pub(super) SampleSender);

impl VideoSender {
    /// Packetizes and sends one frame.
    pub async fn send(&self, unit: &AccessUnit) -> anyhow::Result<()> {
        self.0
            .send(&unit.data, unit.duration, unit.encoded_at, unit.captured_at)
            .await
    }
}

/// Writes Opus packets onto one viewer's audio track.
pub struct AudioSender(pub(super) SampleSender);

impl AudioSender {
    /// Sends one Opus packet. Audio negotiates no capture-time extension: the time is unused.
    pub async fn send(&self, unit: &AudioUnit) -> anyhow::Result<()> {
        self.0
            .send(
                &unit.data,
                unit.duration,
                unit.encoded_at,
                SystemTime::now(),
            )
            .await
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
