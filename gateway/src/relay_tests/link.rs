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
        talk: false,
        user: "alice".into(),
        owner: "user:alice".into(),
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

#[test]
fn a_status_from_the_far_future_is_refused() {
    // A forged (or wildly wrong) epoch years ahead would outrank every real status for good
    // and pin the device offline.
    let (tx, _broker) = mpsc::unbounded_channel();
    let relay = Relay::new(InstanceId::parse("gw").unwrap(), tx, super::signer().0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let real = super::sessions::status("cam", true, now_ms);
    relay.on_status(real.clone());
    let mut forged = super::sessions::status("cam", false, u64::MAX);
    forged.seq = u64::MAX;
    relay.on_status(forged);
    assert!(
        relay.device(&real.device).unwrap().online,
        "the forgery was ignored"
    );
    // The device's next real connection still supersedes its last.
    let mut next = real.clone();
    next.seq += 1;
    next.online = false;
    relay.on_status(next);
    assert!(!relay.device(&real.device).unwrap().online);
}
