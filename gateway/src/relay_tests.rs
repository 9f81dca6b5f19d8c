//! Unit tests of the relay: sessions, relayed control requests, and broker-link loss.

use crate::auth::grant::GrantSigner;
use ferrocam_protocol::InstanceId;

/// A grant signer with a fresh key, and its public key.
fn signer() -> (GrantSigner, String) {
    let (pem, public) = crate::auth::grant::generate();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let signer = GrantSigner::from_pkcs8(&der, InstanceId::parse("gw-test").unwrap()).unwrap();
    (signer, public)
}

mod sessions {
    use super::super::*;
    use ferrocam_protocol::{IceCandidate, PROTOCOL_VERSION};

    fn relay() -> (Relay, mpsc::UnboundedReceiver<Publish>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (signer, _) = super::signer();
        (
            Relay::new(InstanceId::parse("gw-test").unwrap(), tx, signer),
            rx,
        )
    }

    fn status(device: &str, online: bool, epoch: u64) -> DeviceStatus {
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

    fn dev(id: &DeviceId) -> Party {
        Party::Device(id.clone())
    }

    fn opts() -> OfferOptions {
        OfferOptions {
            trickle: true,
            role: Role::Control,
            user: "alice".into(),
            device_ice: Vec::new(),
        }
    }

    fn sid(n: u8) -> SessionId {
        SessionId::from_random([n; 16])
    }

    fn rate_limited(result: &Result<SessionId, Refusal>) -> bool {
        matches!(result, Err(r) if r.code == ErrorCode::RateLimited)
    }

    /// The claims of a grant the relay signed (the signature is the device's business).
    fn claims_of(grant: &str) -> ferrocam_protocol::GrantClaims {
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
                // Every offer from a different viewer: the limit is per device.
                let viewer = relay.new_viewer();
                relay.offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(n))
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
        let early = relay.forward(
            viewer,
            &sid(1),
            ToDevice::Answer {
                sdp: "a".into(),
                grant: None,
            },
        );
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
        let refused = relay.forward(
            intruder,
            &sid(1),
            ToDevice::Answer {
                sdp: "a".into(),
                grant: None,
            },
        );
        assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownSession);
        relay
            .forward(
                viewer,
                &sid(1),
                ToDevice::Answer {
                    sdp: "a".into(),
                    grant: None,
                },
            )
            .unwrap();
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
        let again = relay.forward(
            viewer,
            &sid(1),
            ToDevice::Answer {
                sdp: "a".into(),
                grant: None,
            },
        );
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

        let limited = (2..70)
            .map(|n| relay.invite(relay.new_viewer(), &tx, cam.clone(), opts(), sid(n)))
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
        assert!(
            matches!(rx2.try_recv(), Ok(ServerMsg::Resumed { ref session }) if *session == sid(1))
        );

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
}

mod control {
    use super::super::*;
    use ferrocam_protocol::PROTOCOL_VERSION;

    #[test]
    fn control_replies_reach_the_waiting_request_only_from_its_device() {
        let (tx, mut broker) = mpsc::unbounded_channel();
        let relay = Arc::new(Relay::new(
            InstanceId::parse("gw").unwrap(),
            tx,
            super::signer().0,
        ));
        let cam = DeviceId::parse("cam").unwrap();
        relay.on_status(DeviceStatus {
            v: PROTOCOL_VERSION,
            device: cam.clone(),
            online: true,
            epoch: 1,
            seq: 0,
            version: String::new(),
            capabilities: None,
        });
        let id = SessionId::from_random([9; 16]);
        let mut replies = relay
            .control(cam.clone(), Role::View, "alice", "{}".into(), id.clone())
            .unwrap();
        let sent = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
        assert!(matches!(
            sent.body,
            ToDevice::Control {
                role: Role::View,
                ..
            }
        ));
        assert_eq!(sent.reply_to, Some(relay.reply_topic(&cam)));

        let other = DeviceId::parse("other").unwrap();
        let reply = |from: &DeviceId, message: &str| {
            Reply::new(
                Party::Device(from.clone()),
                from.clone(),
                id.clone(),
                FromDevice::ControlReply {
                    message: message.into(),
                },
            )
        };
        relay.on_reply(&other, reply(&other, "forged"));
        // Arriving on cam's topic but claiming to be other: dropped too.
        relay.on_reply(&cam, reply(&other, "forged"));
        relay.on_reply(&cam, reply(&cam, "real"));
        assert_eq!(replies.try_recv().unwrap(), "real");
        assert!(replies.try_recv().is_none());
        // The caller goes away (its handler dropped mid-wait): the request is forgotten, and a
        // late reply finds nobody.
        assert_eq!(relay.lock().controls.len(), 1);
        drop(replies);
        assert_eq!(relay.lock().controls.len(), 0);
        relay.on_reply(&cam, reply(&cam, "late"));
        let unknown = relay.control(
            DeviceId::parse("ghost").unwrap(),
            Role::View,
            "alice",
            "{}".into(),
            id,
        );
        assert_eq!(
            unknown.err().map(|refusal| refusal.code),
            Some(ErrorCode::UnknownDevice)
        );
    }
}

mod link {
    use super::super::*;
    use ferrocam_protocol::PROTOCOL_VERSION;

    #[test]
    fn losing_the_broker_marks_devices_offline_until_they_report_again() {
        let (tx, _broker) = mpsc::unbounded_channel();
        let relay = Relay::new(InstanceId::parse("gw").unwrap(), tx, super::signer().0);
        let status = DeviceStatus {
            v: PROTOCOL_VERSION,
            device: DeviceId::parse("cam").unwrap(),
            online: true,
            epoch: 7,
            seq: 0,
            version: String::new(),
            capabilities: None,
        };
        relay.on_status(status.clone());
        relay.on_link_down();
        let seen = relay.device(&status.device).unwrap();
        assert!(!seen.online);
        let (vtx, _vrx) = mpsc::unbounded_channel();
        let opts = OfferOptions {
            trickle: true,
            role: Role::View,
            user: "alice".into(),
            device_ice: Vec::new(),
        };
        let refused = relay.offer(
            relay.new_viewer(),
            &vtx,
            status.device.clone(),
            "v=0".into(),
            opts,
            SessionId::from_random([1; 16]),
        );
        assert_eq!(refused.unwrap_err().code, ErrorCode::UnknownDevice);
        // The same run's "online" (same epoch) is accepted again after the reconnect.
        relay.on_status(status.clone());
        assert!(relay.device(&status.device).unwrap().online);
        // But a genuinely stale will still loses to it afterwards.
        relay.on_status(DeviceStatus {
            online: false,
            epoch: 6,
            seq: 0,
            ..status.clone()
        });
        assert!(relay.device(&status.device).unwrap().online);
    }
}
