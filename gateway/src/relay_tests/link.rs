//! Losing the broker link: devices shown offline until they report again.

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
