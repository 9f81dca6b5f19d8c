//! The tracks a peer sends and the writers that put media on them: [`VideoSender`] for access
//! units, [`AudioSender`] for Opus packets.
//!
//! Apart from the connection code because writing media is the hot path, and it needs only the
//! track, its SSRC and the payload type negotiation settled on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use crate::media::{AccessUnit, AudioUnit};

/// A track we send, with the sender that negotiated it.
pub(super) struct LocalTrack {
    pub(super) track: Arc<TrackLocalStaticSample>,
    pub(super) sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

impl LocalTrack {
    /// Adds a track of `kind`: with `add_track` when answering (it joins the offer's
    /// transceiver), or in a new transceiver of the given direction when offering.
    pub(super) async fn add(
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
    pub(super) async fn sample_sender(&self) -> anyhow::Result<SampleSender> {
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

/// Writes samples onto one track with the negotiated SSRC and payload type.
pub(super) struct SampleSender {
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
pub struct VideoSender(pub(super) SampleSender);

impl VideoSender {
    /// Packetizes and sends one access unit.
    pub async fn send(&self, unit: &AccessUnit) -> anyhow::Result<()> {
        self.0
            .send(&unit.data, unit.duration, unit.encoded_at)
            .await
    }
}

/// Writes Opus packets onto one viewer's audio track.
pub struct AudioSender(pub(super) SampleSender);

impl AudioSender {
    /// Sends one Opus packet.
    pub async fn send(&self, unit: &AudioUnit) -> anyhow::Result<()> {
        self.0
            .send(&unit.data, unit.duration, unit.encoded_at)
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
