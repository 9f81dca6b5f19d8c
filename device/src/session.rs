//! One viewer session on the device: answer the viewer's offer (or make one and take the
//! viewer's answer), trade candidates, stream until it ends.
//!
//! A session is a task with an inbox. Messages for it arrive in order (offer first, then
//! candidates), so no candidate can race ahead of the offer it belongs to. When the device
//! offers, the viewer's candidates may still arrive before its answer is applied: they wait.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_protocol::{DeviceId, Envelope, ErrorCode, IceCandidate, Party, SessionId, Signal};
use tokio::sync::{broadcast, mpsc};

use crate::control::ControlHandler;
use crate::media::{AudioUnit, KeyframeReason, MediaEngine, VideoFeed};
use crate::rtc::{
    AnswerError, AudioSender, ChannelEvent, ControlChannel, Peer, PeerEvent, RtcSettings,
    VideoSender,
};
use ferrocam_protocol::control::Role;

/// Candidates a viewer may trickle into one session; real browsers send fewer than 20.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// A message for a running session.
#[derive(Debug)]
pub enum SessionInput {
    /// The viewer's answer to the device's offer.
    Answer(String),
    Candidate(IceCandidate),
    EndOfCandidates,
    HangUp(String),
    /// The viewer's signaling moved to another gateway: reply to this topic from now on.
    Attach(String),
    /// The viewer asks for an ICE restart (sessions the device offered).
    RestartIce,
    /// The device is going away: tell the viewer, then end.
    Shutdown(String),
}

/// A message the session wants delivered to the viewer's gateway.
#[derive(Debug)]
pub struct Outbound {
    pub topic: String,
    pub envelope: Envelope,
}

/// How long a non-trickle (WHEP) answer waits for candidate gathering before it goes out with
/// what it has. Host candidates take milliseconds; a slow STUN server must not stall the player.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a trickle answer waits for host candidates to put in the SDP. Gathering them takes a
/// few milliseconds; with them in the answer the browser starts its ICE checks the moment it
/// applies it instead of after the first trickled candidate (~40 ms sooner to first frame on
/// loopback, measured). Slower candidates (STUN, TURN) still trickle.
const HOST_GATHER_WAIT: Duration = Duration::from_millis(40);

/// How long the device's offer waits for the viewer's answer. A browser answers in
/// milliseconds; a watch that is never answered must not hold a viewer slot and the camera for
/// the whole connect timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest time between two ICE restarts of one session: each one costs an offer, a
/// gathering round and new checks, and a flood of requests must not keep a session restarting.
const MIN_ICE_RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a session needs from the device.
#[derive(Clone)]
pub struct SessionContext {
    pub device: DeviceId,
    pub media: Arc<MediaEngine>,
    pub rtc: Arc<RtcSettings>,
    pub out: mpsc::UnboundedSender<Outbound>,
    pub connect_timeout: Duration,
    pub control: Arc<ControlHandler>,
}

impl SessionContext {
    /// Queues `body` for the gateway behind `reply_to`.
    pub fn say(&self, reply_to: &str, session: &SessionId, body: Signal) {
        let _ = self.out.send(Outbound {
            topic: reply_to.to_owned(),
            envelope: Envelope::new(
                Party::Device(self.device.clone()),
                self.device.clone(),
                session.clone(),
                body,
            ),
        });
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
    /// STUN/TURN servers for this session (from its grant), on top of the device's own.
    pub ice_servers: Vec<ferrocam_protocol::viewer::IceServer>,
}

/// Runs one session to its end.
pub async fn run(ctx: SessionContext, request: Request, mut inbox: mpsc::Receiver<SessionInput>) {
    let Request {
        session,
        reply_to,
        offer: offer_sdp,
        trickle,
        role,
        ice_servers,
    } = request;
    // Where the viewer's gateway listens; it changes when the viewer resumes through another
    // gateway (`Attach`). Only this task touches it; the mutex just keeps the future `Send`.
    let reply_to = std::sync::Mutex::new(reply_to);
    let say = |body: Signal| {
        let topic = reply_to.lock().expect("reply topic lock").clone();
        ctx.say(&topic, &session, body)
    };

    // Start (or keep) the pipeline now, so it warms up while ICE and DTLS run.
    let _lease = match ctx.media.acquire() {
        Ok(lease) => lease,
        Err(e) => {
            tracing::error!(%session, error = format!("{e:#}"), "camera unavailable");
            say(Signal::Error {
                code: ErrorCode::Internal,
                message: format!("the camera is unavailable: {e:#}"),
            });
            return;
        }
    };
    let with_audio = ctx.media.audio_enabled();
    let built = match offer_sdp {
        Some(offer_sdp) => Peer::answer(&ctx.rtc, offer_sdp, with_audio, &ice_servers)
            .await
            .map(|(peer, answer, events)| (peer, answer, events, None)),
        None => match Peer::offer(&ctx.rtc, with_audio, &ice_servers).await {
            Ok((peer, offer, events, channel)) => Ok((peer, offer, events, Some(channel))),
            // Nothing the viewer sent is at fault here.
            Err(e) => {
                tracing::error!(%session, error = format!("{e:#}"), "could not make an offer");
                return say(Signal::Error {
                    code: ErrorCode::Internal,
                    message: format!("the device could not make an offer: {e:#}"),
                });
            }
        },
    };
    let (peer, local_sdp, mut events, offered_channel) = match built {
        Ok(ok) => ok,
        Err(e) => return say(refusal(&session, e)),
    };
    // Our offer names the control channel; the viewer's answer cannot refuse it.
    let we_offer = offered_channel.is_some();
    let mut channels: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // The viewer closing its control channel is a hang-up too (a closing tab often does only
    // that before its connection times out).
    let (control_closed_tx, mut control_closed) = mpsc::unbounded_channel::<()>();
    if let Some(channel) = offered_channel {
        channels.push(spawn_control(channel, role, &ctx, &control_closed_tx));
    }
    // Ask for the viewer's keyframe as ICE starts (our answer goes out, or the viewer's answer
    // comes in), not when DTLS is up: the encoder then has it ready by the time media can flow
    // (ICE + DTLS take longer than one frame), and the feed holds it.
    let mut early_feed = (!we_offer).then(|| ctx.media.video_feed());
    let describe = |sdp: String| {
        if we_offer {
            Signal::Offer {
                sdp,
                trickle: true,
                role,
                grant: None,
            }
        } else {
            Signal::Answer { sdp, grant: None }
        }
    };
    let answered = if we_offer {
        // Our offer goes out at once and without candidates; they follow once the viewer's
        // answer is applied here (see `held`).
        say(describe(local_sdp));
        tracing::info!(%session, "sent our offer");
        true
    } else if trickle {
        let gathered = tokio::time::timeout(HOST_GATHER_WAIT, async {
            // Candidates gathered meanwhile are in the local description: not trickled again.
            while let Some(event) = events.recv().await {
                if matches!(event, PeerEvent::GatheringComplete) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let sdp = peer.local_sdp().await.unwrap_or(local_sdp);
        say(describe(sdp));
        if gathered {
            say(Signal::EndOfCandidates);
        }
        tracing::info!(%session, "answered the offer");
        true
    } else {
        false
    };
    let gather_deadline = tokio::time::sleep(GATHER_TIMEOUT);
    tokio::pin!(gather_deadline);
    let mut answered = answered;

    let mut remote_candidates = 0usize;
    // When we offered: whether the viewer's answer is applied, and its candidates until then.
    let mut remote_answered = !we_offer;
    let mut early_candidates: Vec<IceCandidate> = Vec::new();
    // When we offered: our own candidates, held until the viewer's answer is applied. A viewer
    // that had them sooner would start its checks at once, and one reaching us before the
    // answer does is dropped (the ICE agent starts with the answer) and repeated only ~50 ms
    // later: the slowest tenth of first frames, measured. Held, they reach the viewer when we
    // can answer its checks.
    let mut held: Vec<Signal> = Vec::new();
    let mut streaming: Option<Streaming> = None;
    let deadline = tokio::time::sleep(ctx.connect_timeout);
    tokio::pin!(deadline);
    let answer_deadline = tokio::time::sleep(ANSWER_TIMEOUT);
    tokio::pin!(answer_deadline);
    let mut last_ice_restart: Option<tokio::time::Instant> = None;

    let reason = loop {
        tokio::select! {
            input = inbox.recv() => match input {
                Some(SessionInput::Answer(sdp)) => {
                    if remote_answered {
                        tracing::warn!(%session, "unexpected answer ignored");
                        continue;
                    }
                    if let Err(e) = peer.accept_answer(sdp).await {
                        say(refusal(&session, e));
                        break "the viewer's answer was refused".to_owned();
                    }
                    remote_answered = true;
                    // The first answer: media is about to flow. (An ICE restart's answer comes
                    // while it flows already.)
                    if streaming.is_none() {
                        early_feed = Some(ctx.media.video_feed());
                    }
                    tracing::info!(%session, "viewer answered");
                    for signal in held.drain(..) {
                        say(signal);
                    }
                    for candidate in early_candidates.drain(..) {
                        add_candidate(&peer, &session, candidate).await;
                    }
                }
                Some(SessionInput::Candidate(candidate)) => {
                    remote_candidates += 1;
                    if remote_candidates > MAX_REMOTE_CANDIDATES {
                        tracing::warn!(%session, "candidate limit reached; ignoring the rest");
                        continue;
                    }
                    if remote_answered {
                        add_candidate(&peer, &session, candidate).await;
                    } else {
                        early_candidates.push(candidate);
                    }
                }
                Some(SessionInput::EndOfCandidates) => {}
                Some(SessionInput::HangUp(reason)) => break format!("viewer hung up: {reason}"),
                Some(SessionInput::RestartIce) => {
                    let too_soon = last_ice_restart.is_some_and(|at| at.elapsed() < MIN_ICE_RESTART_INTERVAL);
                    if !we_offer || !remote_answered || too_soon {
                        tracing::warn!(%session, we_offer, remote_answered, too_soon, "ICE restart request ignored");
                        continue;
                    }
                    match peer.restart_ice_offer().await {
                        Ok(sdp) => {
                            last_ice_restart = Some(tokio::time::Instant::now());
                            // As with the first offer: our candidates wait for the answer.
                            remote_answered = false;
                            answer_deadline.as_mut().reset(tokio::time::Instant::now() + ANSWER_TIMEOUT);
                            say(describe(sdp));
                            tracing::info!(%session, "sent an ICE-restart offer");
                        }
                        Err(e) => tracing::warn!(%session, error = format!("{e:#}"), "could not restart ICE"),
                    }
                }
                Some(SessionInput::Attach(topic)) => {
                    *reply_to.lock().expect("reply topic lock") = topic;
                    say(Signal::Attached);
                }
                Some(SessionInput::Shutdown(reason)) => {
                    say(Signal::HangUp { reason: reason.clone() });
                    break reason;
                }
                None => break "device shutting down".to_owned(),
            },
            event = events.recv() => match event {
                Some(PeerEvent::LocalCandidate(candidate)) if !remote_answered => held.push(Signal::Candidate { candidate }),
                Some(PeerEvent::LocalCandidate(candidate)) if trickle => say(Signal::Candidate { candidate }),
                Some(PeerEvent::LocalCandidate(_)) => {}
                Some(PeerEvent::GatheringComplete) if !remote_answered => held.push(Signal::EndOfCandidates),
                Some(PeerEvent::GatheringComplete) if trickle => say(Signal::EndOfCandidates),
                Some(PeerEvent::GatheringComplete) => {
                    if !answered {
                        answered = true;
                        say(Signal::Answer { sdp: peer.local_sdp().await.unwrap_or_default(), grant: None });
                        tracing::info!(%session, "answered offer with all candidates");
                    }
                }
                Some(PeerEvent::Connected) if streaming.is_none() => {
                    tracing::info!(%session, "viewer connected");
                    let feed = early_feed.take().unwrap_or_else(|| ctx.media.video_feed());
                    match Streaming::start(&ctx.media, &peer, feed).await {
                        Ok(s) => streaming = Some(s),
                        Err(e) => break format!("cannot stream: {e:#}"),
                    }
                }
                Some(PeerEvent::KeyframeRequest) => ctx.media.request_keyframe(KeyframeReason::Feedback),
                Some(PeerEvent::DataChannel(channel)) => {
                    channels.push(spawn_control(channel, role, &ctx, &control_closed_tx));
                }
                Some(PeerEvent::Connected) => {}
                Some(PeerEvent::Ended(state)) => {
                    say(Signal::HangUp { reason: format!("connection {state}") });
                    break format!("connection {state}");
                }
                None => break "peer events ended".to_owned(),
            },
            Some(()) = control_closed.recv() => {
                say(Signal::HangUp { reason: "control channel closed".into() });
                break "viewer closed the control channel".to_owned();
            }
            _ = &mut gather_deadline, if !answered => {
                answered = true;
                tracing::warn!(%session, "candidate gathering is slow; answering with what there is");
                say(Signal::Answer { sdp: peer.local_sdp().await.unwrap_or_default(), grant: None });
            }
            _ = &mut answer_deadline, if !remote_answered => {
                say(Signal::Error { code: ErrorCode::Timeout, message: "the viewer did not answer the offer in time".into() });
                break "answer timeout".to_owned();
            }
            _ = &mut deadline, if streaming.is_none() => {
                say(Signal::Error { code: ErrorCode::Timeout, message: "the viewer did not connect in time".into() });
                break "connect timeout".to_owned();
            }
        }
    };

    drop(streaming);
    for channel in channels {
        channel.abort();
    }
    peer.close().await;
    tracing::info!(%session, %reason, "session ended");
}

/// The error reply for a connection that could not be set up.
fn refusal(session: &SessionId, error: AnswerError) -> Signal {
    match error {
        AnswerError::NoCommonCodec(message) => Signal::Error {
            code: ErrorCode::NoCommonCodec,
            message,
        },
        AnswerError::Failed(e) => {
            tracing::warn!(%session, error = format!("{e:#}"), "could not set up the connection");
            Signal::Error {
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

/// Serves a control channel in its own task; reports on `closed` when the viewer closes it.
fn spawn_control(
    channel: ControlChannel,
    role: Role,
    ctx: &SessionContext,
    closed: &mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<()> {
    let closed = closed.clone();
    let handler = Arc::clone(&ctx.control);
    tokio::spawn(async move {
        if serve_control(channel, role, handler).await {
            let _ = closed.send(());
        }
    })
}

/// Answers control requests on a viewer's `control` data channel, one at a time and in order.
/// Returns `true` when the viewer closed the channel.
async fn serve_control(channel: ControlChannel, role: Role, handler: Arc<ControlHandler>) -> bool {
    let label = channel.label().await;
    if label != "control" {
        tracing::debug!(%label, "ignoring a data channel that is not ferrocam's control channel");
        return false;
    }
    while let Some(event) = channel.next().await {
        let replies = match event {
            ChannelEvent::Text(text) => handler.handle(role, &text).await,
            ChannelEvent::Binary(bytes) => vec![ControlHandler::binary_refusal(bytes)],
        };
        for reply in replies {
            if let Err(e) = channel.send_text(&reply).await {
                tracing::debug!(error = %e, "control reply not sent");
                return true;
            }
        }
    }
    true
}

/// The forwarding tasks of a connected viewer; dropping it stops them.
struct Streaming {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Streaming {
    async fn start(
        media: &std::sync::Arc<MediaEngine>,
        peer: &Peer,
        feed: VideoFeed,
    ) -> anyhow::Result<Self> {
        let video = peer.video_sender().await?;
        let mut tasks = vec![tokio::spawn(forward_video(feed, video))];
        if let (Some(audio), Some(feed)) = (peer.audio_sender().await?, media.audio_feed()) {
            tasks.push(tokio::spawn(forward_audio(feed, audio)));
        }
        Ok(Self { tasks })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends the shared encoder's access units to one viewer.
async fn forward_video(mut feed: VideoFeed, sender: VideoSender) {
    while let Some(unit) = feed.next().await {
        if let Err(e) = sender.send(&unit).await {
            tracing::debug!(error = %e, "video write failed");
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
