//! The rules of one session, without I/O: what to tell the viewer, what to do with the peer
//! connection, and when to give up.
//!
//! The async driver in `session.rs` owns the sockets. It feeds [`Negotiation::handle`] what
//! happened (a viewer's message, a peer event, the result of a peer operation it was asked for,
//! the clock) and carries out the returned [`Action`]s in order. An action that asks for a peer
//! operation ([`Action::ApplyAnswer`], [`Action::FetchLocalDescription`],
//! [`Action::RestartIceOffer`]) is answered by the driver with the matching input before it
//! feeds anything else, so the machine never sees messages overtake each other.
//!
//! Time comes from the caller: every input carries `now`, and [`Negotiation::next_deadline`]
//! says when to feed [`Input::Tick`] next. The tests below drive it with invented instants.

use std::time::{Duration, Instant};

use ferrocam_protocol::control::Role;
use ferrocam_protocol::{ErrorCode, FromDevice, IceCandidate};

/// Candidates a viewer may trickle into one session; real browsers send fewer than 20.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// How long a non-trickle (WHEP) answer waits for candidate gathering before it goes out with
/// what it has. Host candidates take milliseconds; a slow STUN server must not stall the player.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a trickle answer waits for host candidates to put in the SDP. Gathering them takes a
/// few milliseconds; with them in the answer the browser starts its ICE checks the moment it
/// applies it instead of after the first trickled candidate (~40 ms sooner to first frame on
/// loopback, measured). Slower candidates (STUN, TURN) still trickle.
pub const HOST_GATHER_WAIT: Duration = Duration::from_millis(40);

/// How long the device's offer waits for the viewer's answer. A browser answers in
/// milliseconds; a watch that is never answered must not hold a viewer slot and the camera for
/// the whole connect timeout.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest time between two ICE restarts of one session: each costs an offer, a gathering
/// round and new checks, and a flood of requests must not keep a session restarting.
pub const MIN_ICE_RESTART_INTERVAL: Duration = Duration::from_secs(2);

/// Who wrote the session's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The device offered (after an invite); the viewer answers.
    Offerer,
    /// The viewer offered; the device answers, trickling its candidates or (WHEP) putting them
    /// all in the answer.
    Answerer { trickle: bool },
}

/// Something that happened.
#[derive(Debug)]
pub enum Input {
    /// The peer connection is built; `sdp` is our offer (as sent) or our first answer.
    Built { sdp: String },
    /// The current local description, asked for with [`Action::FetchLocalDescription`].
    LocalDescription { sdp: String },
    /// The viewer's answer was applied (`Ok`) or refused (the error to send).
    AnswerApplied(Result<(), FromDevice>),
    /// An ICE-restart offer, asked for with [`Action::RestartIceOffer`], or why there is none.
    IceRestartOffer(Result<String, String>),
    /// From the viewer, through its gateway.
    Viewer(ViewerSaid),
    /// From the peer connection.
    Peer(PeerSaid),
    /// Streaming could not start.
    StreamingFailed(String),
    /// The clock moved (see [`Negotiation::next_deadline`]).
    Tick,
}

/// A viewer's message for this session.
#[derive(Debug)]
pub enum ViewerSaid {
    Answer(String),
    Candidate(IceCandidate),
    EndOfCandidates,
    HangUp(String),
    /// Its signaling moved to the gateway behind this topic.
    Attach(String),
    RestartIce,
    /// Not the viewer: the device is going away.
    Shutdown(String),
}

/// What the peer connection reported.
#[derive(Debug)]
pub enum PeerSaid {
    LocalCandidate(IceCandidate),
    GatheringComplete,
    /// DTLS is up: media can flow.
    Connected,
    /// Failed, disconnected or closed.
    Ended(String),
    /// The viewer closed the control channel.
    ControlClosed,
}

/// Something for the driver to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send `signal` to the viewer's gateway on `topic`.
    Say { topic: String, signal: FromDevice },
    /// Answer with [`Input::LocalDescription`].
    FetchLocalDescription,
    /// Apply the viewer's answer; answer with [`Input::AnswerApplied`].
    ApplyAnswer(String),
    /// Give the peer connection a viewer's candidate.
    AddCandidate(IceCandidate),
    /// Ask the encoder for the viewer's first keyframe now, so it is ready when media can flow.
    WarmUpFeed,
    /// Start sending media; answer only on failure, with [`Input::StreamingFailed`].
    StartStreaming,
    /// Make an ICE-restart offer; answer with [`Input::IceRestartOffer`].
    RestartIceOffer,
    /// The session is over, for this reason; nothing more will be asked.
    End(String),
}

/// One session's negotiation state.
pub struct Negotiation {
    side: Side,
    role: Role,
    /// Where the viewer's gateway listens (changes with `Attach`).
    reply_to: String,
    /// Our SDP has gone out.
    described: bool,
    /// Gathering completed before our answer went out: the answer has every candidate, and the
    /// viewer is told the list is complete right after it.
    gathered_before_describing: bool,
    /// The viewer's answer to our current offer is applied (always true when we answer).
    remote_answered: bool,
    /// Our candidates (and end of candidates), held until the viewer's answer is applied. A
    /// viewer that had them sooner would start its checks at once, and one reaching us before
    /// its answer is applied is dropped (our ICE agent starts with the answer) and repeated only
    /// ~50 ms later: the slowest tenth of first frames, measured.
    held: Vec<FromDevice>,
    /// The viewer's candidates that arrived before its answer.
    early_candidates: Vec<IceCandidate>,
    remote_candidates: usize,
    streaming: bool,
    ended: bool,
    /// Trickle answer: send it at this time even without gathering complete.
    host_wait_until: Option<Instant>,
    /// Non-trickle answer: send it at this time with what has been gathered.
    gather_deadline: Option<Instant>,
    /// Our offer: the viewer must answer by then.
    answer_deadline: Option<Instant>,
    /// Media must flow by then.
    connect_deadline: Instant,
    last_ice_restart: Option<Instant>,
}

impl Negotiation {
    /// A session that starts now and must be streaming within `connect_timeout`.
    pub fn new(
        side: Side,
        role: Role,
        reply_to: String,
        now: Instant,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            side,
            role,
            reply_to,
            described: false,
            gathered_before_describing: false,
            remote_answered: side != Side::Offerer,
            held: Vec::new(),
            early_candidates: Vec::new(),
            remote_candidates: 0,
            streaming: false,
            ended: false,
            host_wait_until: None,
            gather_deadline: None,
            answer_deadline: None,
            connect_deadline: now + connect_timeout,
            last_ice_restart: None,
        }
    }

    /// When the driver should feed [`Input::Tick`] at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiting_to_describe = !self.described;
        [
            self.host_wait_until.filter(|_| waiting_to_describe),
            self.gather_deadline.filter(|_| waiting_to_describe),
            self.answer_deadline.filter(|_| !self.remote_answered),
            Some(self.connect_deadline).filter(|_| !self.streaming),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Where replies go now.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// Handles one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        if self.ended {
            return Vec::new();
        }
        let mut out = Out {
            topic: self.reply_to.clone(),
            actions: Vec::new(),
        };
        match input {
            Input::Built { sdp } => self.built(sdp, now, &mut out),
            Input::LocalDescription { sdp } => self.local_description(sdp, &mut out),
            Input::AnswerApplied(result) => self.answer_applied(result, &mut out),
            Input::IceRestartOffer(result) => self.ice_restart_offer(result, now, &mut out),
            Input::Viewer(said) => self.viewer(said, now, &mut out),
            Input::Peer(said) => self.peer(said, &mut out),
            Input::StreamingFailed(why) => out.end(format!("cannot stream: {why}")),
            Input::Tick => self.tick(now, &mut out),
        }
        if matches!(out.actions.last(), Some(Action::End(_))) {
            self.ended = true;
        }
        out.actions
    }

    fn built(&mut self, sdp: String, now: Instant, out: &mut Out) {
        match self.side {
            Side::Offerer => {
                // Our offer goes out at once and without candidates; they follow once the
                // viewer's answer is applied (see `held`).
                self.described = true;
                self.answer_deadline = Some(now + ANSWER_TIMEOUT);
                out.say(self.describe(sdp));
            }
            Side::Answerer { trickle: true } => {
                // Ask for the viewer's keyframe as ICE starts, not when DTLS is up: the encoder
                // has it ready by the time media can flow.
                out.push(Action::WarmUpFeed);
                self.host_wait_until = Some(now + HOST_GATHER_WAIT);
            }
            Side::Answerer { trickle: false } => {
                out.push(Action::WarmUpFeed);
                self.gather_deadline = Some(now + GATHER_TIMEOUT);
            }
        }
    }

    /// Our answer, with whatever candidates its description has by now.
    fn local_description(&mut self, sdp: String, out: &mut Out) {
        if self.described {
            return;
        }
        self.described = true;
        out.say(self.describe(sdp));
        if self.gathered_before_describing && self.trickles() {
            out.say(FromDevice::EndOfCandidates);
        }
    }

    /// Whether our candidates go out one by one after our description.
    fn trickles(&self) -> bool {
        self.side != Side::Answerer { trickle: false }
    }

    fn answer_applied(&mut self, result: Result<(), FromDevice>, out: &mut Out) {
        if let Err(refusal) = result {
            out.say(refusal);
            return out.end("the viewer's answer was refused".to_owned());
        }
        self.remote_answered = true;
        // The first answer: media is about to flow. (An ICE restart's answer comes while it
        // flows already.)
        if !self.streaming {
            out.push(Action::WarmUpFeed);
        }
        for signal in self.held.drain(..) {
            out.say(signal);
        }
        for candidate in self.early_candidates.drain(..) {
            out.push(Action::AddCandidate(candidate));
        }
    }

    fn ice_restart_offer(&mut self, result: Result<String, String>, now: Instant, out: &mut Out) {
        match result {
            Ok(sdp) => {
                self.last_ice_restart = Some(now);
                // As with the first offer: our candidates wait for the answer, and the viewer
                // gathers a new set of its own.
                self.remote_answered = false;
                self.remote_candidates = 0;
                self.answer_deadline = Some(now + ANSWER_TIMEOUT);
                out.say(self.describe(sdp));
            }
            Err(why) => tracing::warn!(error = %why, "could not restart ICE"),
        }
    }

    fn viewer(&mut self, said: ViewerSaid, now: Instant, out: &mut Out) {
        match said {
            ViewerSaid::Answer(sdp) => {
                if self.remote_answered || self.side != Side::Offerer {
                    tracing::warn!("unexpected answer ignored");
                } else {
                    out.push(Action::ApplyAnswer(sdp));
                }
            }
            ViewerSaid::Candidate(candidate) => {
                self.remote_candidates += 1;
                if self.remote_candidates > MAX_REMOTE_CANDIDATES {
                    tracing::warn!("candidate limit reached; ignoring the rest");
                } else if self.remote_answered {
                    out.push(Action::AddCandidate(candidate));
                } else {
                    self.early_candidates.push(candidate);
                }
            }
            ViewerSaid::EndOfCandidates => {}
            ViewerSaid::HangUp(reason) => out.end(format!("viewer hung up: {reason}")),
            ViewerSaid::Attach(topic) => {
                // This reply, and every later one, goes to the new gateway.
                out.topic = topic.clone();
                self.reply_to = topic;
                out.say(FromDevice::Attached);
            }
            ViewerSaid::RestartIce => {
                let too_soon = self
                    .last_ice_restart
                    .is_some_and(|at| now.duration_since(at) < MIN_ICE_RESTART_INTERVAL);
                if self.side != Side::Offerer || !self.remote_answered || too_soon {
                    tracing::warn!(side = ?self.side, self.remote_answered, too_soon, "ICE restart request ignored");
                } else {
                    out.push(Action::RestartIceOffer);
                }
            }
            ViewerSaid::Shutdown(reason) => {
                out.say(FromDevice::HangUp {
                    reason: reason.clone(),
                });
                out.end(reason);
            }
        }
    }

    fn peer(&mut self, said: PeerSaid, out: &mut Out) {
        let trickle = self.trickles();
        match said {
            PeerSaid::LocalCandidate(candidate) => {
                if !self.remote_answered {
                    self.held.push(FromDevice::Candidate { candidate });
                } else if trickle && self.described {
                    out.say(FromDevice::Candidate { candidate });
                }
                // Otherwise it is in the description we are about to send.
            }
            PeerSaid::GatheringComplete => {
                if !self.remote_answered {
                    self.held.push(FromDevice::EndOfCandidates);
                } else if !self.described {
                    // The answer goes out now, with every candidate in it.
                    self.gathered_before_describing = true;
                    out.push(Action::FetchLocalDescription);
                } else if trickle {
                    out.say(FromDevice::EndOfCandidates);
                }
            }
            PeerSaid::Connected => {
                if !self.streaming {
                    self.streaming = true;
                    out.push(Action::StartStreaming);
                }
            }
            PeerSaid::Ended(state) => {
                out.say(FromDevice::HangUp {
                    reason: format!("connection {state}"),
                });
                out.end(format!("connection {state}"));
            }
            PeerSaid::ControlClosed => {
                out.say(FromDevice::HangUp {
                    reason: "control channel closed".into(),
                });
                out.end("viewer closed the control channel".to_owned());
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Out) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if !self.described && (due(self.host_wait_until) || due(self.gather_deadline)) {
            if due(self.gather_deadline) {
                tracing::warn!("candidate gathering is slow; answering with what there is");
            }
            // Only once: the description fetched now answers it.
            self.host_wait_until = None;
            self.gather_deadline = None;
            out.push(Action::FetchLocalDescription);
        }
        if !self.remote_answered && due(self.answer_deadline) {
            out.say(FromDevice::Error {
                code: ErrorCode::Timeout,
                message: "the viewer did not answer the offer in time".into(),
            });
            return out.end("answer timeout".to_owned());
        }
        if !self.streaming && self.connect_deadline <= now {
            out.say(FromDevice::Error {
                code: ErrorCode::Timeout,
                message: "the viewer did not connect in time".into(),
            });
            out.end("connect timeout".to_owned());
        }
    }

    /// Our SDP as the message our side sends.
    fn describe(&self, sdp: String) -> FromDevice {
        match self.side {
            Side::Offerer => FromDevice::Offer {
                sdp,
                role: self.role,
            },
            Side::Answerer { .. } => FromDevice::Answer { sdp },
        }
    }
}

/// The actions of one input, with the topic replies go to.
struct Out {
    topic: String,
    actions: Vec<Action>,
}

impl Out {
    fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn say(&mut self, signal: FromDevice) {
        let topic = self.topic.clone();
        self.actions.push(Action::Say { topic, signal });
    }

    fn end(&mut self, reason: String) {
        self.actions.push(Action::End(reason));
    }
}

#[cfg(test)]
#[path = "negotiation_tests.rs"]
mod tests;
