//! Sessions that outlive their viewer's connection: left to the peers when the socket drops,
//! taken over with `resume`, and ICE restarts.

use super::super::*;
use super::sessions::{claims_of, dev, opts, relay, sid, status};
use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{FromDevice, IceCandidate, Reply, Request, ToDevice};

#[test]
fn a_departed_viewers_established_session_is_left_to_the_peers_and_can_be_resumed() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    let answer = FromDevice::Answer { sdp: "a".into() };
    relay.on_reply(&cam, Reply::new(dev(&cam), cam.clone(), sid(1), answer));
    while broker.try_recv().is_ok() {}

    // The socket drops (gateway restart, proxy timeout): nothing is said to the device,
    // whose media keeps flowing peer to peer.
    relay.viewer_gone(viewer);
    assert_eq!(relay.session_count(), 0);
    assert!(
        broker.try_recv().is_err(),
        "an established session was hung up"
    );

    // The viewer is back on a new socket and resumes: the device is asked to reply here,
    // with a grant naming the session and the user.
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let back = relay.new_viewer();
    relay
        .resume(back, &tx2, cam.clone(), opts(), sid(1))
        .unwrap();
    let attach = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    assert_eq!(attach.reply_to, Some(relay.reply_topic(&cam)));
    let ToDevice::Attach { grant: Some(grant) } = attach.body else {
        panic!("not an attach with a grant: {attach:?}");
    };
    let claims = claims_of(&grant);
    assert_eq!(claims.sub, sid(1).to_string());
    assert_eq!(claims.usr, "alice");
    assert!(claims.attach, "an attach grant, which opens nothing");

    // Until the device confirms the session is this user's, nothing the viewer says is
    // relayed (a stranger who learned the id could otherwise hang it up), and nothing
    // but the device's verdict reaches the viewer.
    let early = relay.forward(back, &sid(1), ToDevice::HangUp { reason: "x".into() });
    assert_eq!(early.unwrap_err().code, ErrorCode::UnknownSession);
    assert_eq!(
        relay
            .forward(back, &sid(1), ToDevice::RestartIce)
            .unwrap_err()
            .code,
        ErrorCode::UnknownSession
    );
    let candidate = FromDevice::Candidate {
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: None,
            sdp_mline_index: None,
        },
    };
    relay.on_reply(&cam, Reply::new(dev(&cam), cam.clone(), sid(1), candidate));
    assert!(rx2.try_recv().is_err());
    assert!(broker.try_recv().is_err());
    relay.on_reply(
        &cam,
        Reply::new(dev(&cam), cam.clone(), sid(1), FromDevice::Attached),
    );
    assert!(matches!(rx2.try_recv(), Ok(ServerMsg::Resumed { ref session }) if *session == sid(1)));

    // Another connection cannot take the session over while this one holds it…
    let (tx3, _rx3) = mpsc::unbounded_channel();
    let intruder = relay.new_viewer();
    let refused = relay.resume(intruder, &tx3, cam.clone(), opts(), sid(1));
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownSession);
    assert!(broker.try_recv().is_err());
    // …and the session's owner can hang up through this gateway.
    relay
        .forward(
            back,
            &sid(1),
            ToDevice::HangUp {
                reason: "bye".into(),
            },
        )
        .unwrap();
    let hang_up = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    assert!(matches!(hang_up.body, ToDevice::HangUp { .. }));
    assert_eq!(relay.session_count(), 0);
}

#[test]
fn an_ice_restart_lets_the_devices_new_offer_and_the_viewers_answer_through_once_more() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    let offer = |sdp: &str| FromDevice::Offer {
        sdp: sdp.into(),
        role: Role::View,
    };
    let answer = |sdp: &str| ToDevice::Answer {
        sdp: sdp.into(),
        grant: None,
    };
    // Not before the session is established.
    relay
        .invite(viewer, &tx, cam.clone(), opts(), sid(5))
        .unwrap();
    let early = relay.forward(viewer, &sid(5), ToDevice::RestartIce);
    assert_eq!(early.unwrap_err().code, ErrorCode::BadRequest);
    relay.on_reply(
        &cam,
        Reply::new(dev(&cam), cam.clone(), sid(5), offer("o1")),
    );
    relay.forward(viewer, &sid(5), answer("a1")).unwrap();
    while broker.try_recv().is_ok() {}
    while rx.try_recv().is_ok() {}

    relay
        .forward(viewer, &sid(5), ToDevice::RestartIce)
        .unwrap();
    let restart = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    assert_eq!(restart.body, ToDevice::RestartIce);
    relay.on_reply(
        &cam,
        Reply::new(dev(&cam), cam.clone(), sid(5), offer("o2")),
    );
    assert!(matches!(rx.try_recv(), Ok(ServerMsg::Offer { ref sdp, .. }) if sdp == "o2"));
    relay.forward(viewer, &sid(5), answer("a2")).unwrap();
    let relayed = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    let ToDevice::Answer {
        grant: Some(grant), ..
    } = relayed.body
    else {
        panic!("the restart's answer went without a grant: {relayed:?}");
    };
    assert_eq!(
        claims_of(&grant).answer,
        Some(crate::auth::grant::answer_digest("a2"))
    );
    // And once only, as with the first answer.
    let again = relay.forward(viewer, &sid(5), answer("a3"));
    assert_eq!(again.unwrap_err().code, ErrorCode::BadRequest);
}

#[test]
fn an_ice_restart_under_way_still_counts_as_established() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    relay
        .invite(viewer, &tx, cam.clone(), opts(), sid(6))
        .unwrap();
    let offer = FromDevice::Offer {
        sdp: "o1".into(),
        role: Role::View,
    };
    relay.on_reply(&cam, Reply::new(dev(&cam), cam.clone(), sid(6), offer));
    let answer = ToDevice::Answer {
        sdp: "a1".into(),
        grant: None,
    };
    relay.forward(viewer, &sid(6), answer).unwrap();
    relay
        .forward(viewer, &sid(6), ToDevice::RestartIce)
        .unwrap();
    // The device never acts on it (lost, or no offer could be made): asking again works.
    relay
        .forward(viewer, &sid(6), ToDevice::RestartIce)
        .unwrap();
    while broker.try_recv().is_ok() {}
    // The socket drops mid-restart: the media still flows, so nothing is hung up.
    relay.viewer_gone(viewer);
    assert_eq!(relay.session_count(), 0);
    assert!(
        broker.try_recv().is_err(),
        "a restarting session was hung up"
    );
}

#[test]
fn an_unconfirmed_resume_never_hangs_the_session_up() {
    // Whoever sent it (a viewer whose socket drops again, or a stranger who learned the id), a
    // resume the device has not confirmed must not end the session on the device.
    let (relay, mut broker) = relay();
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let claimant = relay.new_viewer();
    relay
        .resume(claimant, &tx, cam.clone(), opts(), sid(7))
        .unwrap();
    assert!(broker.try_recv().is_ok(), "the attach went out");
    relay.viewer_gone(claimant);
    assert_eq!(relay.session_count(), 0);
    assert!(
        broker.try_recv().is_err(),
        "a resume that left hung the session up"
    );

    // Nor when the device's verdict never comes: the viewer hears of the timeout, the device
    // hears nothing.
    let claimant = relay.new_viewer();
    relay
        .resume(claimant, &tx, cam.clone(), opts(), sid(8))
        .unwrap();
    while broker.try_recv().is_ok() {}
    relay.expire_unanswered(&sid(8));
    assert!(matches!(
        rx.try_recv(),
        Ok(ServerMsg::Error {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert!(
        broker.try_recv().is_err(),
        "an expired resume hung the session up"
    );
    assert_eq!(relay.session_count(), 0);
}

#[test]
fn resuming_a_session_the_device_no_longer_has_ends_with_its_error() {
    let (relay, mut broker) = relay();
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    // A gateway that just started may not know the device yet: the attach goes out anyway.
    relay
        .resume(viewer, &tx, cam.clone(), opts(), sid(4))
        .unwrap();
    assert!(broker.try_recv().is_ok());
    let gone = FromDevice::Error {
        code: ErrorCode::UnknownSession,
        message: "the session has ended".into(),
    };
    relay.on_reply(&cam, Reply::new(dev(&cam), cam.clone(), sid(4), gone));
    assert!(matches!(
        rx.try_recv(),
        Ok(ServerMsg::Error {
            code: ErrorCode::UnknownSession,
            ..
        })
    ));
    assert_eq!(relay.session_count(), 0);
}
