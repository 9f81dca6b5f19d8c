//! Reaching the camera: a WHEP session through the gateway (the gateway only relays the SDP,
//! as it does for a browser), carrying the `files` data channel. Media and files flow peer to
//! peer between this process and the device.
//!
//! The device answers only offers that can receive its video, so the session asks for the
//! video too and throws it away unread: while this client is connected it counts as a viewer
//! (the camera runs; one viewer costs the device a fraction of a percent of a core).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

/// How long gathering our candidates may take.
const GATHERING: Duration = Duration::from_secs(5);

/// Where and as whom.
pub struct Target {
    /// The gateway's base URL (`http://127.0.0.1:8080`).
    pub gateway: String,
    pub token: String,
    pub device: String,
}

/// A connected session and its `files` channel.
pub struct Session {
    pc: Arc<dyn PeerConnection>,
    pub channel: Arc<dyn DataChannel>,
    /// The WHEP session resource, deleted on [`Session::close`].
    resource: String,
    token: String,
}

enum Gathered {
    Candidate(String),
    Complete,
}

struct Events {
    gathered: mpsc::UnboundedSender<Gathered>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.gathered.send(Gathered::Candidate(init.candidate));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(Gathered::Complete);
        }
    }

    /// The camera's video is read and dropped, so nothing piles up.
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(async move { while track.poll().await.is_some() {} });
    }
}

impl Session {
    /// Offers, posts the offer to the gateway's WHEP endpoint, applies the answer, sends our
    /// candidates, and waits for the `files` channel to open.
    pub async fn connect(target: &Target, udp: &str) -> anyhow::Result<Self> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line:
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                            .to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 102,
            },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let (gathered, mut candidates) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(Arc::new(Events { gathered }))
            .with_udp_addrs(vec![udp.to_owned()])
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
        let channel = pc
            .create_data_channel(ferrocam_protocol::files::FILES_CHANNEL, None)
            .await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer.clone()).await?;

        let endpoint = format!(
            "{}/whep/{}",
            target.gateway.trim_end_matches('/'),
            target.device
        );
        let created = http(
            "POST",
            &endpoint,
            &target.token,
            &[("content-type", "application/sdp")],
            offer.sdp,
        )
        .await?;
        if created.status != 201 {
            let _ = pc.close().await;
            bail!(
                "the gateway answered {}: {}",
                created.status,
                created.body.trim()
            );
        }
        let resource = absolute(
            &endpoint,
            created.location.as_deref().context("no Location")?,
        );
        pc.set_remote_description(RTCSessionDescription::answer(created.body)?)
            .await
            .context("applying the camera's answer")?;

        // Our candidates, in one PATCH once gathered.
        let mut fragment = String::from("a=mid:0\r\n");
        let _ = tokio::time::timeout(GATHERING, async {
            while let Some(event) = candidates.recv().await {
                match event {
                    Gathered::Candidate(c) => fragment.push_str(&format!("a={c}\r\n")),
                    Gathered::Complete => break,
                }
            }
        })
        .await;
        fragment.push_str("a=end-of-candidates\r\n");
        let etag = created.etag.unwrap_or_default();
        let patched = http(
            "PATCH",
            &resource,
            &target.token,
            &[
                ("content-type", "application/trickle-ice-sdpfrag"),
                ("if-match", &etag),
            ],
            fragment,
        )
        .await?;
        if patched.status != 204 {
            bail!(
                "sending our candidates: {} {}",
                patched.status,
                patched.body.trim()
            );
        }
        let session = Self {
            pc,
            channel,
            resource,
            token: target.token.clone(),
        };
        session.opened().await?;
        Ok(session)
    }

    async fn opened(&self) -> anyhow::Result<()> {
        let opened = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match self.channel.poll().await {
                    Some(webrtc::data_channel::DataChannelEvent::OnOpen) => return Ok(()),
                    Some(webrtc::data_channel::DataChannelEvent::OnClose) | None => {
                        bail!("the files channel closed before it opened")
                    }
                    Some(_) => continue,
                }
            }
        })
        .await;
        opened.context("the files channel did not open within 20 s (is the camera online?)")?
    }

    /// Ends the session: the gateway forgets it and the camera lets this viewer go.
    pub async fn close(self) {
        let _ = http("DELETE", &self.resource, &self.token, &[], String::new()).await;
        let _ = self.pc.close().await;
    }
}

/// What the gateway said.
struct Reply {
    status: u16,
    body: String,
    location: Option<String>,
    etag: Option<String>,
}

/// One HTTP request, off the async runtime (ureq blocks).
async fn http(
    method: &'static str,
    url: &str,
    token: &str,
    headers: &[(&'static str, &str)],
    body: String,
) -> anyhow::Result<Reply> {
    let url = url.to_owned();
    let bearer = format!("Bearer {token}");
    let headers: Vec<(&'static str, String)> =
        headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", &bearer);
        for (k, v) in &headers {
            request = request.header(*k, v);
        }
        let mut response = agent
            .run(request.body(body)?)
            .with_context(|| format!("{method} {url}"))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, etag) = (header("location"), header("etag"));
        Ok(Reply {
            status: response.status().as_u16(),
            location,
            etag,
            body: response
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default(),
        })
    })
    .await?
}

/// `Location` may be relative to the endpoint.
fn absolute(endpoint: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = endpoint
        .find("://")
        .and_then(|scheme| endpoint[scheme + 3..].find('/').map(|i| scheme + 3 + i))
        .unwrap_or(endpoint.len());
    format!("{}{location}", &endpoint[..origin_end])
}
