//! Opening sessions, relaying their messages both ways, and refusing what is not theirs.

use super::super::*;
use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{FromDevice, Party, Reply, Request, ToDevice};
use ferrocam_protocol::{IceCandidate, PROTOCOL_VERSION};

pub(super) fn relay() -> (Relay, mpsc::UnboundedReceiver<Publish>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (signer, _) = super::signer();
    (
        Relay::new(InstanceId::parse("gw-test").unwrap(), tx, signer),
        rx,
    )
}

pub(super) fn status(device: &str, online: bool, epoch: u64) -> DeviceStatus {
    DeviceStatus {
        v: PROTOCOL_VERSION,
        device: DeviceId::parse(device).unwrap(),
        online,
        epoch,
        seq: 0,
        version: String::new(),
        capabilities: None,
    }
}

pub(super) fn dev(id: &DeviceId) -> Party {
    Party::Device(id.clone())
}

pub(super) fn opts() -> OfferOptions {
    OfferOptions {
        trickle: true,
        role: Role::Control,
        talk: true,
        user: "alice".into(),
        owner: "user:alice".into(),
        device_ice: Vec::new(),
    }
}

pub(super) fn sid(n: u8) -> SessionId {
    SessionId::from_random([n; 16])
}

fn rate_limited(result: &Result<SessionId, Refusal>) -> bool {
    matches!(result, Err(r) if r.code == ErrorCode::RateLimited)
}

/// The claims of a grant the relay signed (the signature is the device's business).
pub(super) fn claims_of(grant: &str) -> ferrocam_protocol::GrantClaims {
    use base64::Engine as _;
    let payload = grant.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn a_flood_of_offers_for_one_device_is_rate_limited() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    relay.on_status(status("porch", true, 1));
    let (tx, _rx) = mpsc::unbounded_channel();
    let cam = DeviceId::parse("cam").unwrap();
    let results: Vec<_> = (0..60)
        .map(|n| {
            // Every offer from a different viewer and account: the limit is per device.
            let viewer = relay.new_viewer();
            let options = OfferOptions {
                owner: format!("user:viewer-{n}"),
                ..opts()
            };
            relay.offer(viewer, &tx, cam.clone(), "v=0".into(), options, sid(n))
        })
        .collect();
    let limited = results.iter().filter(|r| rate_limited(r)).count();
    assert!(
        (25..=30).contains(&limited),
        "{limited} of 60 refused; the burst is 30"
    );
    let mut sent = 0;
    while broker.try_recv().is_ok() {
        sent += 1;
    }
    assert_eq!(
        sent,
        60 - limited,
        "refused offers must not reach the broker"
    );
    // Another device is unaffected.
    let porch = DeviceId::parse("porch").unwrap();
    assert!(
        relay
            .offer(
                relay.new_viewer(),
                &tx,
                porch,
                "v=0".into(),
                opts(),
                sid(99)
            )
            .is_ok()
    );
}

#[test]
fn one_account_cannot_take_every_viewer_slot_of_a_device() {
    let (relay, _broker) = relay();
    relay.on_status(status("cam", true, 1));
    relay.on_status(status("porch", true, 1));
    let (tx, _rx) = mpsc::unbounded_channel();
    let cam = DeviceId::parse("cam").unwrap();
    let open = |n: u8, owner: &str, device: &DeviceId| {
        let options = OfferOptions {
            owner: owner.to_owned(),
            ..opts()
        };
        relay.offer(
            relay.new_viewer(),
            &tx,
            device.clone(),
            "v=0".into(),
            options,
            sid(n),
        )
    };
    for n in 0..crate::relay::SESSIONS_PER_PRINCIPAL as u8 {
        assert!(open(n, "token:aaaa", &cam).is_ok());
    }
    let refused = open(50, "token:aaaa", &cam).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Busy, "{refused:?}");
    // Others still get in, and the same account may watch another device.
    assert!(open(51, "user:bob", &cam).is_ok());
    assert!(open(52, "token:aaaa", &DeviceId::parse("porch").unwrap()).is_ok());
}

#[test]
fn offers_to_unknown_or_offline_devices_are_refused() {
    let (relay, mut broker) = relay();
    let (tx, _rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    let cam = DeviceId::parse("cam").unwrap();
    let refused = relay.offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1));
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownDevice);

    relay.on_status(status("cam", false, 1));
    let refused = relay.offer(viewer, &tx, cam, "v=0".into(), opts(), sid(1));
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownDevice);
    assert!(broker.try_recv().is_err(), "nothing may reach the broker");
}

#[test]
fn an_offer_goes_to_the_device_with_this_instances_reply_topic() {
    let (relay, mut broker) = relay();
    let (tx, _rx) = mpsc::unbounded_channel();
    relay.on_status(status("cam", true, 1));
    let viewer = relay.new_viewer();
    let cam = DeviceId::parse("cam").unwrap();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    let sent = broker.try_recv().unwrap();
    assert_eq!(sent.topic, topics::device_signal(&cam));
    let envelope = Request::decode(&sent.payload).unwrap();
    assert_eq!(envelope.reply_to, Some(relay.reply_topic(&cam)));
    assert_eq!(
        relay.reply_topic(&cam),
        "ferrocam/v1/devices/cam/reply/gw-test"
    );
    assert_eq!(envelope.session, sid(1));
    // Every offer carries a grant for exactly this device and session.
    let ToDevice::Offer {
        grant: Some(grant), ..
    } = envelope.body
    else {
        panic!("offer without a grant");
    };
    let claims = claims_of(&grant);
    assert_eq!((claims.aud.as_str(), claims.usr.as_str()), ("cam", "alice"));
    assert_eq!(claims.sub, sid(1).to_string());
}

#[test]
fn replies_reach_only_the_owning_viewer_and_others_cannot_use_the_session() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (owner_tx, mut owner_rx) = mpsc::unbounded_channel();
    let owner = relay.new_viewer();
    let intruder = relay.new_viewer();
    relay
        .offer(owner, &owner_tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    broker.try_recv().unwrap();

    let candidate = ToDevice::Candidate {
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: None,
            sdp_mline_index: Some(0),
        },
    };
    let refused = relay.forward(intruder, &sid(1), candidate.clone());
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownSession);
    assert!(broker.try_recv().is_err());
    relay.forward(owner, &sid(1), candidate).unwrap();
    assert!(broker.try_recv().is_ok());

    // A reply claiming to come from another device is dropped.
    let other = DeviceId::parse("other").unwrap();
    relay.on_reply(
        &other.clone(),
        Reply::new(
            dev(&other),
            other,
            sid(1),
            FromDevice::Answer { sdp: "x".into() },
        ),
    );
    assert!(owner_rx.try_recv().is_err());

    relay.on_reply(
        &cam.clone(),
        Reply::new(
            dev(&cam),
            cam,
            sid(1),
            FromDevice::Answer { sdp: "x".into() },
        ),
    );
    assert!(matches!(owner_rx.try_recv(), Ok(ServerMsg::Answer { .. })));
}

/// A viewer's answer as it leaves the browser: no grant yet (the relay adds one).
fn viewer_answer(sdp: &str) -> ToDevice {
    ToDevice::Answer {
        sdp: sdp.into(),
        grant: None,
    }
}

#[test]
fn an_invite_carries_a_grant_and_the_devices_offer_meets_the_viewers_answer() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    relay
        .invite(viewer, &tx, cam.clone(), opts(), sid(1))
        .unwrap();
    let invite = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    assert_eq!(invite.reply_to, Some(relay.reply_topic(&cam)));
    assert!(
        matches!(
            invite.body,
            ToDevice::Invite {
                role: Role::Control,
                grant: Some(_)
            }
        ),
        "{invite:?}"
    );

    // The viewer cannot answer before there is an offer to answer.
    let early = relay.forward(viewer, &sid(1), viewer_answer("a"));
    assert_eq!(early.unwrap_err().code, ErrorCode::BadRequest);
    assert!(broker.try_recv().is_err());

    // A device answer (instead of an offer) is not what an invite waits for.
    relay.on_reply(
        &cam.clone(),
        Reply::new(
            dev(&cam),
            cam.clone(),
            sid(1),
            FromDevice::Answer { sdp: "x".into() },
        ),
    );
    assert!(rx.try_recv().is_err());

    let offer = FromDevice::Offer {
        sdp: "o".into(),
        role: Role::View,
    };
    relay.on_reply(
        &cam.clone(),
        Reply::new(dev(&cam), cam.clone(), sid(1), offer.clone()),
    );
    assert!(
        matches!(rx.try_recv(), Ok(ServerMsg::Offer { ref sdp, .. }) if sdp == "o"),
        "the device's offer reaches the viewer"
    );
    // A second offer for the same session is ignored.
    relay.on_reply(&cam.clone(), Reply::new(dev(&cam), cam, sid(1), offer));
    assert!(rx.try_recv().is_err());

    // Someone else's answer is refused; the owner's goes through, once.
    let intruder = relay.new_viewer();
    let refused = relay.forward(intruder, &sid(1), viewer_answer("a"));
    assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownSession);
    relay.forward(viewer, &sid(1), viewer_answer("a")).unwrap();
    let answer = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    // It goes with a grant for exactly this answer in this session.
    let ToDevice::Answer {
        sdp,
        grant: Some(grant),
    } = answer.body
    else {
        panic!("an answer relayed without a grant: {answer:?}");
    };
    assert_eq!(sdp, "a");
    let claims = claims_of(&grant);
    assert_eq!(claims.sub, sid(1).to_string());
    assert_eq!(claims.answer, Some(crate::auth::grant::answer_digest("a")));
    let again = relay.forward(viewer, &sid(1), viewer_answer("a"));
    assert_eq!(again.unwrap_err().code, ErrorCode::BadRequest);
}

#[test]
fn a_viewer_cannot_answer_a_session_it_offered_and_invites_share_the_offer_limit() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    broker.try_recv().unwrap();
    let refused = relay.forward(
        viewer,
        &sid(1),
        ToDevice::Answer {
            sdp: "a".into(),
            grant: None,
        },
    );
    assert_eq!(refused.unwrap_err().code, ErrorCode::BadRequest);
    // Nor does a device offer reach a viewer that made its own.
    relay.on_reply(
        &cam.clone(),
        Reply::new(
            dev(&cam),
            cam.clone(),
            sid(1),
            FromDevice::Offer {
                sdp: "o".into(),
                role: Role::View,
            },
        ),
    );
    assert!(rx.try_recv().is_err());

    // Each from its own account: the per-device offer limit is what is counted here.
    let limited = (2..70)
        .map(|n| {
            let options = OfferOptions {
                owner: format!("user:viewer-{n}"),
                ..opts()
            };
            relay.invite(relay.new_viewer(), &tx, cam.clone(), options, sid(n))
        })
        .filter(rate_limited)
        .count();
    assert!(
        limited >= 35,
        "{limited} of 68 invites refused; the burst is 30"
    );
}

#[test]
fn device_errors_end_the_session_and_a_departed_viewer_hangs_up() {
    let (relay, mut broker) = relay();
    relay.on_status(status("cam", true, 1));
    let cam = DeviceId::parse("cam").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(2))
        .unwrap();
    relay.on_reply(
        &cam.clone(),
        Reply::new(
            dev(&cam),
            cam.clone(),
            sid(1),
            FromDevice::Error {
                code: ErrorCode::NoCommonCodec,
                message: "no".into(),
            },
        ),
    );
    assert!(matches!(
        rx.try_recv(),
        Ok(ServerMsg::Error {
            code: ErrorCode::NoCommonCodec,
            ..
        })
    ));
    assert_eq!(relay.session_count(), 1);

    while broker.try_recv().is_ok() {}
    relay.viewer_gone(viewer);
    assert_eq!(relay.session_count(), 0);
    let hang_up = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    assert_eq!(hang_up.session, sid(2));
    assert!(matches!(hang_up.body, ToDevice::HangUp { .. }));
}

#[test]
fn unanswered_sessions_expire_with_a_timeout_error() {
    let (relay, _broker) = relay();
    relay.on_status(status("cam", true, 1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let viewer = relay.new_viewer();
    let cam = DeviceId::parse("cam").unwrap();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(2))
        .unwrap();
    relay.on_reply(
        &cam.clone(),
        Reply::new(
            dev(&cam),
            cam,
            sid(2),
            FromDevice::Answer { sdp: "x".into() },
        ),
    );
    rx.try_recv().unwrap();

    relay.expire_unanswered(&sid(1));
    relay.expire_unanswered(&sid(2));
    assert!(matches!(
        rx.try_recv(),
        Ok(ServerMsg::Error {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert!(
        rx.try_recv().is_err(),
        "an answered session must not expire"
    );
    assert_eq!(relay.session_count(), 1);
}

#[test]
fn a_device_cannot_flood_a_viewer_with_candidates() {
    let (relay, _broker) = relay();
    relay.on_status(status("cam", true, 1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cam = DeviceId::parse("cam").unwrap();
    let viewer = relay.new_viewer();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    let reply = |body| Reply::new(dev(&cam), cam.clone(), sid(1), body);
    let candidate = |n: usize| FromDevice::Candidate {
        candidate: IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 10_000 + n),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
    };
    relay.on_reply(&cam, reply(FromDevice::Answer { sdp: "a".into() }));
    for n in 0..200 {
        relay.on_reply(&cam, reply(candidate(n)));
    }
    let mut relayed = 0;
    while let Ok(msg) = rx.try_recv() {
        if matches!(msg, ServerMsg::Candidate { .. }) {
            relayed += 1;
        }
    }
    assert_eq!(relayed, 64, "candidates past the limit reach the viewer");
    // The session itself lives on: its end still reaches the viewer.
    relay.on_reply(
        &cam,
        reply(FromDevice::HangUp {
            reason: "bye".into(),
        }),
    );
    assert!(matches!(rx.try_recv(), Ok(ServerMsg::HangUp { .. })));
}
