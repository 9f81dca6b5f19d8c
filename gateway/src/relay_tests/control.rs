//! Relayed control requests: replies reach only the waiting request, from its device.

use super::super::*;
use ferrocam_protocol::PROTOCOL_VERSION;
use ferrocam_protocol::{FromDevice, Party, Reply, Request, ToDevice};
use std::sync::Arc;

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
    // Devices seal their control replies to the grant key.
    let gateways = ferrocam_protocol::signed::Verifier::from_base64(relay.signer.public_key())
        .unwrap()
        .recipient()
        .unwrap();
    let reply = |from: &DeviceId, message: &str| {
        Reply::new(
            Party::Device(from.clone()),
            from.clone(),
            id.clone(),
            FromDevice::ControlReply {
                message: gateways.seal(message.as_bytes()),
                sealed: true,
            },
        )
    };
    // One that does not open (sealed to another key, or mangled) is dropped.
    let mangled = Reply::new(
        Party::Device(cam.clone()),
        cam.clone(),
        id.clone(),
        FromDevice::ControlReply {
            message: "AAAA".into(),
            sealed: true,
        },
    );
    relay.on_reply(&cam, mangled);
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
