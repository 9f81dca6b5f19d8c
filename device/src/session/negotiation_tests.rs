//! The negotiation rules, driven by hand: no sockets, no clock but invented instants.

use std::time::{Duration, Instant};

use ferrocam_protocol::control::Role;
use ferrocam_protocol::{ErrorCode, FromDevice, IceCandidate};

use super::*;

const GW: &str = "ferrocam/v1/devices/cam/reply/gw-1";
const CONNECT: Duration = Duration::from_secs(30);

fn candidate(n: u32) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    }
}

fn say(signal: FromDevice) -> Action {
    Action::Say {
        topic: GW.into(),
        signal,
    }
}

fn offer(sdp: &str) -> FromDevice {
    FromDevice::Offer {
        sdp: sdp.into(),
        role: Role::View,
    }
}

fn answer(sdp: &str) -> FromDevice {
    FromDevice::Answer { sdp: sdp.into() }
}

fn ends(actions: &[Action]) -> bool {
    matches!(actions.last(), Some(Action::End(_)))
}

/// A session in its first instant, and that instant.
fn start(side: Side) -> (Negotiation, Instant) {
    let t0 = Instant::now();
    (
        Negotiation::new(side, Role::View, GW.into(), t0, CONNECT),
        t0,
    )
}

/// The device's offer is out and the viewer's answer applied.
fn offered_and_answered() -> (Negotiation, Instant) {
    let (mut n, t0) = start(Side::Offerer);
    n.handle(Input::Built { sdp: "o".into() }, t0);
    n.handle(Input::Viewer(ViewerSaid::Answer("a".into())), t0);
    n.handle(Input::AnswerApplied(Ok(())), t0);
    (n, t0)
}

mod device_offers {
    use super::*;

    #[test]
    fn candidates_both_ways_wait_for_the_viewers_answer() {
        let (mut n, t0) = start(Side::Offerer);
        assert_eq!(
            n.handle(Input::Built { sdp: "o".into() }, t0),
            [say(offer("o"))]
        );
        // Ours are held, the viewer's kept.
        assert!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(1))), t0)
                .is_empty()
        );
        assert!(
            n.handle(Input::Peer(PeerSaid::GatheringComplete), t0)
                .is_empty()
        );
        assert!(
            n.handle(Input::Viewer(ViewerSaid::Candidate(candidate(7))), t0)
                .is_empty()
        );

        let answer = n.handle(Input::Viewer(ViewerSaid::Answer("a".into())), t0);
        assert_eq!(answer, [Action::ApplyAnswer("a".into())]);
        // Applied: the feed warms up, ours go out in order, the viewer's go in.
        assert_eq!(
            n.handle(Input::AnswerApplied(Ok(())), t0),
            [
                Action::WarmUpFeed,
                say(FromDevice::Candidate {
                    candidate: candidate(1)
                }),
                say(FromDevice::EndOfCandidates),
                Action::AddCandidate(candidate(7)),
            ]
        );
        // From now on both trickle straight through.
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(2))), t0),
            [say(FromDevice::Candidate {
                candidate: candidate(2)
            })]
        );
        assert_eq!(
            n.handle(Input::Viewer(ViewerSaid::Candidate(candidate(8))), t0),
            [Action::AddCandidate(candidate(8))]
        );
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::Connected), t0),
            [Action::StartStreaming]
        );
        assert!(
            n.handle(Input::Peer(PeerSaid::Connected), t0).is_empty(),
            "streams once"
        );
        assert_eq!(n.next_deadline(), None, "nothing left to wait for");
    }

    #[test]
    fn a_second_answer_is_ignored_and_a_refused_one_ends_the_session() {
        let (mut n, t0) = offered_and_answered();
        assert!(
            n.handle(Input::Viewer(ViewerSaid::Answer("b".into())), t0)
                .is_empty()
        );

        let (mut n, t0) = start(Side::Offerer);
        n.handle(Input::Built { sdp: "o".into() }, t0);
        n.handle(Input::Viewer(ViewerSaid::Answer("a".into())), t0);
        let refusal = FromDevice::Error {
            code: ErrorCode::NoCommonCodec,
            message: "no H.264".into(),
        };
        let actions = n.handle(Input::AnswerApplied(Err(refusal.clone())), t0);
        assert_eq!(actions[0], say(refusal));
        assert!(ends(&actions));
        assert!(
            n.handle(Input::Peer(PeerSaid::Connected), t0).is_empty(),
            "over is over"
        );
    }

    #[test]
    fn an_unanswered_offer_times_out() {
        let (mut n, t0) = start(Side::Offerer);
        n.handle(Input::Built { sdp: "o".into() }, t0);
        assert_eq!(n.next_deadline(), Some(t0 + ANSWER_TIMEOUT));
        assert!(
            n.handle(Input::Tick, t0 + ANSWER_TIMEOUT - Duration::from_millis(1))
                .is_empty()
        );
        let actions = n.handle(Input::Tick, t0 + ANSWER_TIMEOUT);
        assert!(matches!(
            &actions[0],
            Action::Say {
                signal: FromDevice::Error {
                    code: ErrorCode::Timeout,
                    ..
                },
                ..
            }
        ));
        assert_eq!(actions[1], Action::End("answer timeout".into()));
    }

    #[test]
    fn an_ice_restart_re_offers_holds_candidates_again_and_is_rate_limited() {
        let (mut n, t0) = offered_and_answered();
        n.handle(Input::Peer(PeerSaid::Connected), t0);
        assert_eq!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), t0),
            [Action::RestartIceOffer]
        );
        assert_eq!(
            n.handle(Input::IceRestartOffer(Ok("o2".into())), t0),
            [say(offer("o2"))]
        );
        assert_eq!(n.next_deadline(), Some(t0 + ANSWER_TIMEOUT));
        // New candidates wait for the new answer again.
        assert!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(3))), t0)
                .is_empty()
        );
        // A second request meanwhile, or too soon after, is ignored.
        let soon = t0 + MIN_ICE_RESTART_INTERVAL - Duration::from_millis(1);
        assert!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), soon)
                .is_empty()
        );
        n.handle(Input::Viewer(ViewerSaid::Answer("a2".into())), soon);
        assert_eq!(
            n.handle(Input::AnswerApplied(Ok(())), soon),
            [say(FromDevice::Candidate {
                candidate: candidate(3)
            })],
            "no second warm-up while streaming"
        );
        assert!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), soon)
                .is_empty()
        );
        let later = t0 + MIN_ICE_RESTART_INTERVAL;
        assert_eq!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), later),
            [Action::RestartIceOffer]
        );
        // A restart that could not be made changes nothing.
        assert!(
            n.handle(Input::IceRestartOffer(Err("no".into())), later)
                .is_empty()
        );
        assert_eq!(n.next_deadline(), None);
    }

    #[test]
    fn each_ice_restart_takes_a_fresh_set_of_viewer_candidates() {
        let (mut n, t0) = offered_and_answered();
        let trickle = |n: &mut Negotiation, at| {
            (0..MAX_REMOTE_CANDIDATES as u32)
                .map(|i| n.handle(Input::Viewer(ViewerSaid::Candidate(candidate(i))), at))
                .filter(|actions| !actions.is_empty())
                .count()
        };
        assert_eq!(trickle(&mut n, t0), MAX_REMOTE_CANDIDATES);
        let later = t0 + MIN_ICE_RESTART_INTERVAL;
        n.handle(Input::Viewer(ViewerSaid::RestartIce), later);
        n.handle(Input::IceRestartOffer(Ok("o2".into())), later);
        n.handle(Input::Viewer(ViewerSaid::Answer("a2".into())), later);
        n.handle(Input::AnswerApplied(Ok(())), later);
        assert_eq!(trickle(&mut n, later), MAX_REMOTE_CANDIDATES);
    }

    #[test]
    fn an_ice_restart_before_the_first_answer_is_ignored() {
        let (mut n, t0) = start(Side::Offerer);
        n.handle(Input::Built { sdp: "o".into() }, t0);
        assert!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), t0)
                .is_empty()
        );
    }
}

mod device_answers {
    use super::*;

    #[test]
    fn a_trickle_answer_waits_briefly_for_host_candidates() {
        let (mut n, t0) = start(Side::Answerer { trickle: true });
        assert_eq!(
            n.handle(Input::Built { sdp: "a0".into() }, t0),
            [Action::WarmUpFeed]
        );
        // Candidates found meanwhile are in the description, not trickled.
        assert!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(1))), t0)
                .is_empty()
        );
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::GatheringComplete), t0),
            [Action::FetchLocalDescription]
        );
        assert_eq!(
            n.handle(Input::LocalDescription { sdp: "a1".into() }, t0),
            [say(answer("a1")), say(FromDevice::EndOfCandidates)]
        );
    }

    #[test]
    fn a_trickle_answer_goes_out_after_the_host_wait_and_trickles_the_rest() {
        let (mut n, t0) = start(Side::Answerer { trickle: true });
        n.handle(Input::Built { sdp: "a0".into() }, t0);
        assert_eq!(n.next_deadline(), Some(t0 + HOST_GATHER_WAIT));
        assert_eq!(
            n.handle(Input::Tick, t0 + HOST_GATHER_WAIT),
            [Action::FetchLocalDescription]
        );
        let later = t0 + HOST_GATHER_WAIT;
        assert_eq!(
            n.handle(Input::LocalDescription { sdp: "a1".into() }, later),
            [say(answer("a1"))]
        );
        assert_eq!(
            n.next_deadline(),
            Some(t0 + CONNECT),
            "only the connect deadline is left"
        );
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(2))), later),
            [say(FromDevice::Candidate {
                candidate: candidate(2)
            })]
        );
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::GatheringComplete), later),
            [say(FromDevice::EndOfCandidates)]
        );
        // The viewer's candidates go straight in: its offer came first.
        assert_eq!(
            n.handle(Input::Viewer(ViewerSaid::Candidate(candidate(9))), later),
            [Action::AddCandidate(candidate(9))]
        );
        // An answer from the viewer makes no sense here.
        assert!(
            n.handle(Input::Viewer(ViewerSaid::Answer("x".into())), later)
                .is_empty()
        );
        assert!(
            n.handle(Input::Viewer(ViewerSaid::RestartIce), later)
                .is_empty()
        );
    }

    #[test]
    fn a_whep_answer_carries_every_candidate_or_goes_out_when_gathering_is_slow() {
        let (mut n, t0) = start(Side::Answerer { trickle: false });
        n.handle(Input::Built { sdp: "a0".into() }, t0);
        assert!(
            n.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(1))), t0)
                .is_empty()
        );
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::GatheringComplete), t0),
            [Action::FetchLocalDescription]
        );
        assert_eq!(
            n.handle(Input::LocalDescription { sdp: "a1".into() }, t0),
            [say(answer("a1"))],
            "no end-of-candidates message: they are all in the answer"
        );

        let (mut slow, t0) = start(Side::Answerer { trickle: false });
        slow.handle(Input::Built { sdp: "a0".into() }, t0);
        assert_eq!(slow.next_deadline(), Some(t0 + GATHER_TIMEOUT));
        assert_eq!(
            slow.handle(Input::Tick, t0 + GATHER_TIMEOUT),
            [Action::FetchLocalDescription]
        );
        slow.handle(
            Input::LocalDescription { sdp: "a1".into() },
            t0 + GATHER_TIMEOUT,
        );
        // Gathering finishing later adds nothing: the answer is out.
        let late = t0 + GATHER_TIMEOUT;
        assert!(
            slow.handle(Input::Peer(PeerSaid::GatheringComplete), late)
                .is_empty()
        );
        assert!(
            slow.handle(Input::Peer(PeerSaid::LocalCandidate(candidate(2))), late)
                .is_empty()
        );
    }

    #[test]
    fn a_viewer_that_never_connects_times_out() {
        let (mut n, t0) = start(Side::Answerer { trickle: true });
        n.handle(Input::Built { sdp: "a0".into() }, t0);
        n.handle(Input::Tick, t0 + HOST_GATHER_WAIT);
        n.handle(Input::LocalDescription { sdp: "a1".into() }, t0);
        let actions = n.handle(Input::Tick, t0 + CONNECT);
        assert!(matches!(
            &actions[0],
            Action::Say {
                signal: FromDevice::Error {
                    code: ErrorCode::Timeout,
                    ..
                },
                ..
            }
        ));
        assert_eq!(actions[1], Action::End("connect timeout".into()));
    }
}

mod any_side {
    use super::*;

    /// Sessions in each state a hang-up can meet.
    fn states() -> Vec<(&'static str, Negotiation, Instant)> {
        let (fresh, t0) = start(Side::Offerer);
        let (mut offered, _) = start(Side::Offerer);
        offered.handle(Input::Built { sdp: "o".into() }, t0);
        let (mut streaming, _) = offered_and_answered();
        streaming.handle(Input::Peer(PeerSaid::Connected), t0);
        let (mut answering, _) = start(Side::Answerer { trickle: true });
        answering.handle(Input::Built { sdp: "a".into() }, t0);
        vec![
            ("before anything", fresh, t0),
            ("offer out", offered, t0),
            ("streaming", streaming, t0),
            ("answer pending", answering, t0),
        ]
    }

    #[test]
    fn every_ending_in_every_state_ends_it_once() {
        type Ending = (fn() -> Input, Option<FromDevice>);
        let endings: [Ending; 4] = [
            (|| Input::Viewer(ViewerSaid::HangUp("bye".into())), None),
            (
                || Input::Viewer(ViewerSaid::Shutdown("restarting".into())),
                Some(FromDevice::HangUp {
                    reason: "restarting".into(),
                }),
            ),
            (
                || Input::Peer(PeerSaid::Ended("failed".into())),
                Some(FromDevice::HangUp {
                    reason: "connection failed".into(),
                }),
            ),
            (
                || Input::Peer(PeerSaid::ControlClosed),
                Some(FromDevice::HangUp {
                    reason: "control channel closed".into(),
                }),
            ),
        ];
        for (ending, told) in endings {
            for (state, mut n, t0) in states() {
                let actions = n.handle(ending(), t0);
                assert!(ends(&actions), "{state}: {actions:?}");
                let expected_say = told.clone().map(say);
                assert_eq!(
                    actions.first().filter(|a| matches!(a, Action::Say { .. })),
                    expected_say.as_ref(),
                    "{state}"
                );
                // Nothing afterwards, whatever arrives.
                assert!(
                    n.handle(Input::Peer(PeerSaid::Connected), t0).is_empty(),
                    "{state}"
                );
                assert!(n.handle(Input::Tick, t0 + CONNECT).is_empty(), "{state}");
            }
        }
    }

    #[test]
    fn an_attach_moves_every_later_reply_to_the_new_gateway() {
        let (mut n, t0) = offered_and_answered();
        let moved = "ferrocam/v1/devices/cam/reply/gw-2";
        assert_eq!(
            n.handle(Input::Viewer(ViewerSaid::Attach(moved.into())), t0),
            [Action::Say {
                topic: moved.into(),
                signal: FromDevice::Attached
            }]
        );
        assert_eq!(n.reply_to(), moved);
        assert_eq!(
            n.handle(Input::Peer(PeerSaid::Ended("closed".into())), t0)[0],
            Action::Say {
                topic: moved.into(),
                signal: FromDevice::HangUp {
                    reason: "connection closed".into()
                }
            }
        );
    }

    #[test]
    fn a_candidate_flood_stops_at_the_limit() {
        let (mut n, t0) = offered_and_answered();
        let added = (0..MAX_REMOTE_CANDIDATES as u32 + 10)
            .map(|i| n.handle(Input::Viewer(ViewerSaid::Candidate(candidate(i))), t0))
            .filter(|actions| !actions.is_empty())
            .count();
        assert_eq!(added, MAX_REMOTE_CANDIDATES);
    }

    #[test]
    fn a_streaming_failure_ends_the_session() {
        let (mut n, t0) = offered_and_answered();
        n.handle(Input::Peer(PeerSaid::Connected), t0);
        let actions = n.handle(Input::StreamingFailed("no sender".into()), t0);
        assert_eq!(actions, [Action::End("cannot stream: no sender".into())]);
    }
}
