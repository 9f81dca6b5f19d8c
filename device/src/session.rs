//! One viewer session on the device: answer the viewer's offer (or make one and take the
//! viewer's answer), trade candidates, stream until it ends.
//!
//! A session is a task with an inbox. Messages for it arrive in order (offer first, then
//! candidates), so no candidate can race ahead of the offer it belongs to. When the device
//! offers, the viewer's candidates may still arrive before its answer is applied: they wait.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocam_mqtt::{Message, Outbox};
use ferrocam_protocol::{DeviceId, ErrorCode, FromDevice, IceCandidate, Party, Reply, SessionId};
use tokio::sync::{broadcast, mpsc, watch};

use crate::control::ControlHandler;
use crate::media::{AudioUnit, KeyframeReason, MediaEngine, Stream, VideoFeed};
use crate::rtc::{
    AnswerError, AudioPlan, AudioSender, ControlChannel, Peer, PeerEvent, RtcSettings, VideoSender,
};
use crate::speaker::Speaker;
use ferrocam_protocol::control::Role;

mod listening;
mod negotiation;
mod tasks;

/// A message for a running session: the viewer's (through its gateway), or the device's own
/// shutdown.
pub use negotiation::ViewerSaid as SessionInput;
use negotiation::{Action, Input, Negotiation, PeerSaid, Side};
use tasks::SessionTasks;

/// Everything a session needs from the device.
#[derive(Clone)]
pub struct SessionContext {
    pub device: DeviceId,
    pub media: Arc<MediaEngine>,
    pub rtc: Arc<RtcSettings>,
    /// Where replies go: the broker link's bounded queue. A reply it refuses (the broker has
    /// been away long enough to fill it) is lost like one lost in transit; the viewer's
    /// deadline covers both.
    pub out: Arc<dyn Outbox>,
    pub connect_timeout: Duration,
    pub control: Arc<ControlHandler>,
    /// Where each streaming viewer's path estimate goes (`None` with `--adaptive off`).
    pub adaptation: Option<Arc<crate::adapt::LinkAdaptation>>,
    /// The gateways' key to seal relayed control replies to (snapshots must not be readable
    /// off the broker).
    pub gateways: ferrocam_protocol::sealed::Recipient,
    /// Where viewers who may talk are heard (`None`: no speaker).
    pub speaker: Option<Arc<Speaker>>,
    /// The device's files, for `files` channels (`None`: it keeps none, `--record-dir none`).
    pub files: Option<Arc<crate::files::FileService>>,
}

impl SessionContext {
    /// Queues `body` for the gateway behind `reply_to`.
    pub fn say(&self, reply_to: &str, session: &SessionId, body: FromDevice) {
        let _ = self.out.publish(self.message(reply_to, session, body));
    }

    /// Queues `body`, waiting until `deadline` for room: for bursts larger than the queue (a
    /// snapshot's chunks). Refused once the deadline has passed.
    pub async fn say_by(
        &self,
        deadline: Instant,
        reply_to: &str,
        session: &SessionId,
        body: FromDevice,
    ) -> Result<(), ferrocam_mqtt::Refused> {
        let limit = deadline.saturating_duration_since(Instant::now());
        let message = self.message(reply_to, session, body);
        self.out.publish_within(message, limit).await
    }

    fn message(&self, reply_to: &str, session: &SessionId, body: FromDevice) -> Message {
        let envelope = Reply::new(
            Party::Device(self.device.clone()),
            self.device.clone(),
            session.clone(),
            body,
        );
        Message {
            topic: reply_to.to_owned(),
            payload: envelope.encode(),
        }
    }
}

/// What a session starts from.
pub struct Request {
    pub session: SessionId,
    pub reply_to: String,
    /// The viewer's offer, or `None` when the viewer asked the device to offer.
    pub offer: Option<String>,
    /// Trickle candidates (browsers over WebSocket) or put them all in the answer (WHEP).
    pub trickle: bool,
    /// What the session's control channel may do.
    pub role: Role,
    /// The grant lets the viewer talk: its microphone is played.
    pub talk: bool,
    /// Who the grant names.
    pub user: String,
    /// STUN/TURN servers for this session (from its grant), on top of the device's own.
    pub ice_servers: Vec<ferrocam_protocol::viewer::IceServer>,
}

/// Runs one session to its end: builds the peer connection, then carries out what the
/// negotiation ([`negotiation`]) decides for each message, peer event and deadline.
pub async fn run(ctx: SessionContext, request: Request, mut inbox: mpsc::Receiver<SessionInput>) {
    let Request {
        session,
        reply_to,
        offer: offer_sdp,
        trickle,
        role,
        talk,
        user,
        ice_servers,
    } = request;
    let speaker = ctx.speaker.clone().filter(|_| talk);
    let side = match offer_sdp {
        Some(_) => Side::Answerer { trickle },
        None => Side::Offerer,
    };
    let mut negotiation =
        Negotiation::new(side, role, reply_to, Instant::now(), ctx.connect_timeout);
    let refuse = |negotiation: &Negotiation, signal: FromDevice| {
        ctx.say(negotiation.reply_to(), &session, signal);
    };

    // Start (or keep) the pipeline now, so it warms up while ICE and DTLS run.
    let _lease = match ctx.media.acquire().await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::error!(%session, error = format!("{e:#}"), "camera unavailable");
            let message = format!("the camera is unavailable: {e:#}");
            let code = ErrorCode::Internal;
            return refuse(&negotiation, FromDevice::Error { code, message });
        }
    };
    let (peer, local_sdp, mut events, offered_channel) =
        match build_peer(&ctx, &session, offer_sdp, speaker.is_some(), &ice_servers).await {
            Ok(built) => built,
            Err(refusal) => return refuse(&negotiation, refusal),
        };
    let (mut tasks, mut control_closed) = SessionTasks::new(&ctx, &session, role, user, speaker);
    // Our offer names the control channel; the viewer's answer cannot refuse it.
    if let Some(channel) = offered_channel {
        tasks.serve_control(channel);
    }
    let mut driver = Driver {
        ctx: &ctx,
        session: &session,
        peer: &peer,
        first_sdp: local_sdp.clone(),
        early_feed: None,
        streaming: None,
    };
    let mut ended = driver
        .apply(&mut negotiation, Input::Built { sdp: local_sdp })
        .await;

    let reason = loop {
        if let Some(reason) = ended {
            break reason;
        }
        let deadline = negotiation.next_deadline();
        let input = tokio::select! {
            said = inbox.recv() => match said {
                Some(said) => Input::Viewer(said),
                None => break "device shutting down".to_owned(),
            },
            event = events.recv() => match event {
                Some(PeerEvent::LocalCandidate(candidate)) => Input::Peer(PeerSaid::LocalCandidate(candidate)),
                Some(PeerEvent::GatheringComplete) => Input::Peer(PeerSaid::GatheringComplete),
                Some(PeerEvent::Connected) => Input::Peer(PeerSaid::Connected),
                Some(PeerEvent::Ended(state)) => Input::Peer(PeerSaid::Ended(state)),
                // Neither changes the negotiation.
                Some(PeerEvent::KeyframeRequest) => {
                    ctx.media.request_keyframe(driver.stream(), KeyframeReason::Feedback);
                    continue;
                }
                Some(PeerEvent::DataChannel(channel)) => {
                    tasks.serve_control(channel);
                    continue;
                }
                Some(PeerEvent::IncomingAudio(audio)) => {
                    tasks.listen(audio);
                    continue;
                }
                None => break "peer events ended".to_owned(),
            },
            Some(()) = control_closed.recv() => Input::Peer(PeerSaid::ControlClosed),
            () = sleep_until(deadline) => Input::Tick,
        };
        ended = driver.apply(&mut negotiation, input).await;
    };

    drop(driver);
    drop(tasks);
    peer.close().await;
    tracing::info!(%session, %reason, "session ended");
}

/// What a peer connection reports, in order.
type PeerEvents = mpsc::UnboundedReceiver<PeerEvent>;

/// The peer connection, our SDP (the answer to `offer_sdp`, or our offer without one), its
/// events, and the control channel when we offered it; or what to tell the viewer instead.
async fn build_peer(
    ctx: &SessionContext,
    session: &SessionId,
    offer_sdp: Option<String>,
    talk: bool,
    ice_servers: &[ferrocam_protocol::viewer::IceServer],
) -> Result<(Peer, String, PeerEvents, Option<ControlChannel>), FromDevice> {
    let audio = AudioPlan {
        send: ctx.media.audio_enabled(),
        receive: talk,
    };
    match offer_sdp {
        Some(offer_sdp) => Peer::answer(&ctx.rtc, offer_sdp, audio, ice_servers)
            .await
            .map(|(peer, answer, events)| (peer, answer, events, None))
            .map_err(|e| refusal(session, e)),
        None => Peer::offer(&ctx.rtc, audio, ice_servers)
            .await
            .map(|(peer, offer, events, channel)| (peer, offer, events, Some(channel)))
            // Nothing the viewer sent is at fault here.
            .map_err(|e| {
                tracing::error!(%session, error = format!("{e:#}"), "could not make an offer");
                FromDevice::Error {
                    code: ErrorCode::Internal,
                    message: format!("the device could not make an offer: {e:#}"),
                }
            }),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Carries out the negotiation's actions on the real peer connection and media.
struct Driver<'a> {
    ctx: &'a SessionContext,
    session: &'a SessionId,
    peer: &'a Peer,
    /// Our first SDP, in case the peer has no local description to give.
    first_sdp: String,
    /// Subscribed before media can flow, so the viewer's first keyframe is on its way.
    early_feed: Option<VideoFeed>,
    streaming: Option<Streaming>,
}

impl Driver<'_> {
    /// The stream this viewer receives (its codec's main stream until it streams).
    fn stream(&self) -> Stream {
        self.streaming
            .as_ref()
            .map_or(Stream::main(self.peer.video_codec()), |streaming| {
                *streaming.receiving.borrow()
            })
    }

    /// Feeds `input` and does what follows, including the inputs those actions produce (they
    /// are handled before anything else arrives). Returns the reason once the session ends.
    async fn apply(&mut self, negotiation: &mut Negotiation, input: Input) -> Option<String> {
        let mut queue: VecDeque<Action> = negotiation.handle(input, Instant::now()).into();
        while let Some(action) = queue.pop_front() {
            let follow_up = match action {
                Action::End(reason) => return Some(reason),
                Action::Say { topic, signal } => {
                    if matches!(signal, FromDevice::Offer { .. } | FromDevice::Answer { .. }) {
                        tracing::info!(session = %self.session, "sent our description");
                    }
                    self.ctx.say(&topic, self.session, signal);
                    None
                }
                Action::FetchLocalDescription => {
                    let sdp = self.peer.local_sdp().await;
                    let sdp = sdp.unwrap_or_else(|| self.first_sdp.clone());
                    Some(Input::LocalDescription { sdp })
                }
                Action::ApplyAnswer(sdp) => {
                    let applied = self.peer.accept_answer(sdp).await;
                    match &applied {
                        Ok(()) => {
                            let codec = self.peer.video_codec();
                            tracing::info!(session = %self.session, %codec, "viewer answered");
                        }
                        Err(e) => {
                            tracing::info!(session = %self.session, error = %e, "viewer's answer refused");
                        }
                    }
                    Some(Input::AnswerApplied(
                        applied.map_err(|e| refusal(self.session, e)),
                    ))
                }
                Action::AddCandidate(candidate) => {
                    add_candidate(self.peer, self.session, candidate).await;
                    None
                }
                Action::WarmUpFeed => {
                    // Fails only for a codec the engine lacks, which negotiation never picks;
                    // streaming then says so.
                    self.early_feed = self.ctx.media.video_feed(self.peer.video_codec()).ok();
                    None
                }
                Action::StartStreaming => {
                    let codec = self.peer.video_codec();
                    tracing::info!(session = %self.session, %codec, "viewer connected");
                    let feed = match self.early_feed.take() {
                        Some(feed) if feed.codec() == codec => Ok(feed),
                        _ => self.ctx.media.video_feed(codec),
                    };
                    let started = match feed {
                        Ok(feed) => Streaming::start(self.ctx, self.session, self.peer, feed).await,
                        Err(e) => Err(e),
                    };
                    match started {
                        Ok(streaming) => {
                            self.streaming = Some(streaming);
                            None
                        }
                        Err(e) => Some(Input::StreamingFailed(format!("{e:#}"))),
                    }
                }
                Action::RestartIceOffer => {
                    tracing::info!(session = %self.session, "restarting ICE");
                    let offer = self.peer.restart_ice_offer().await;
                    Some(Input::IceRestartOffer(offer.map_err(|e| format!("{e:#}"))))
                }
            };
            if let Some(input) = follow_up {
                for action in negotiation.handle(input, Instant::now()).into_iter().rev() {
                    queue.push_front(action);
                }
            }
        }
        None
    }
}

/// The error reply for a connection that could not be set up.
fn refusal(session: &SessionId, error: AnswerError) -> FromDevice {
    match error {
        AnswerError::NoCommonCodec(message) => FromDevice::Error {
            code: ErrorCode::NoCommonCodec,
            message,
        },
        AnswerError::Failed(e) => {
            tracing::warn!(%session, error = format!("{e:#}"), "could not set up the connection");
            FromDevice::Error {
                code: ErrorCode::BadRequest,
                message: format!("could not set up the connection: {e:#}"),
            }
        }
    }
}

async fn add_candidate(peer: &Peer, session: &SessionId, candidate: IceCandidate) {
    if let Err(e) = peer.add_remote_candidate(candidate).await {
        tracing::debug!(%session, error = %e, "bad remote candidate");
    }
}

/// The forwarding tasks of a connected viewer, and its path's say in the encoder's bitrate;
/// dropping it stops both.
struct Streaming {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _adapting: Option<crate::adapt::Watching>,
    /// The stream the viewer receives, where its keyframe requests go.
    receiving: watch::Receiver<Stream>,
}

impl Streaming {
    async fn start(
        ctx: &SessionContext,
        session: &SessionId,
        peer: &Peer,
        feed: VideoFeed,
    ) -> anyhow::Result<Self> {
        let adapting =
            ctx.adaptation
                .as_ref()
                .zip(peer.link_estimate())
                .map(|(adaptation, estimate)| {
                    adaptation.watch(session.clone(), feed.codec(), estimate)
                });
        let video = peer.video_sender().await?;
        let told = adapting.as_ref().map(crate::adapt::Watching::stream);
        let receiving = feed.receiving();
        let mut tasks = vec![tokio::spawn(forward_video(feed, video, told))];
        if let (Some(audio), Some(feed)) = (peer.audio_sender().await?, ctx.media.audio_feed()) {
            tasks.push(tokio::spawn(forward_audio(feed, audio)));
        }
        Ok(Self {
            tasks,
            _adapting: adapting,
            receiving,
        })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends the shared encoders' access units to one viewer, moving it to the stream link
/// adaptation says (the feed makes the move at that stream's next keyframe).
async fn forward_video(
    mut feed: VideoFeed,
    sender: VideoSender,
    mut stream: Option<watch::Receiver<Stream>>,
) {
    loop {
        let told = async {
            match stream.as_mut() {
                Some(stream) => stream.changed().await.map(|()| *stream.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        let moved = tokio::select! {
            unit = feed.next() => {
                let Some(unit) = unit else { return };
                if let Err(e) = sender.send(&unit).await {
                    tracing::debug!(error = %e, "video write failed");
                }
                continue;
            }
            moved = told => moved,
        };
        match moved {
            Ok(to) => feed.move_to(to),
            // Adaptation let go of this viewer: it stays where it is.
            Err(_) => stream = None,
        }
    }
}

/// Sends the shared Opus packets to one viewer; a lagging viewer just skips ahead (audio has no
/// keyframes to wait for).
async fn forward_audio(mut feed: broadcast::Receiver<AudioUnit>, sender: AudioSender) {
    loop {
        match feed.recv().await {
            Ok(unit) => {
                if let Err(e) = sender.send(&unit).await {
                    tracing::debug!(error = %e, "audio write failed");
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
