//! The MQTT topic scheme. Every topic either side uses is built here, from validated ids, so
//! the scheme lives in one place and no topic can contain a wildcard.
//!
//! ```text
//! ferrocam/v1/devices/<device>/status            retained presence, last will = offline
//! ferrocam/v1/devices/<device>/signal            requests to a device (offer, candidate, hang-up)
//! ferrocam/v1/devices/<device>/reply/<instance>  the device's replies to one gateway instance
//! ```
//!
//! Everything a device publishes lives under its own `devices/<device>/` prefix, so a broker
//! ACL keyed on the device's username (`%u` in Mosquitto, `${username}` in EMQX) can confine
//! each device to its own topics, and a gateway knows which device spoke from the topic alone.

use crate::ids::{DeviceId, InstanceId};

/// Common prefix; the `v1` level changes only with an incompatible topic layout.
pub const ROOT: &str = "ferrocam/v1";

/// Retained presence of one device.
pub fn device_status(device: &DeviceId) -> String {
    format!("{ROOT}/devices/{device}/status")
}

/// Where a device receives signaling requests.
pub fn device_signal(device: &DeviceId) -> String {
    format!("{ROOT}/devices/{device}/signal")
}

/// Where `device` sends its replies for gateway instance `instance`.
pub fn device_reply(device: &DeviceId, instance: &InstanceId) -> String {
    format!("{ROOT}/devices/{device}/reply/{instance}")
}

/// Subscription filter matching every device's replies to `instance`.
pub fn replies_to(instance: &InstanceId) -> String {
    format!("{ROOT}/devices/+/reply/{instance}")
}

/// Subscription filter matching every device's status topic.
pub fn all_device_status() -> String {
    format!("{ROOT}/devices/+/status")
}

/// The MQTT client id of `device`. The embedded broker admits a device's credentials only
/// under this id, so no other client can take over (and kick) the device's connection.
pub fn device_client_id(device: &DeviceId) -> String {
    format!("ferrocam-device-{device}")
}

/// The MQTT client id of gateway instance `instance`.
pub fn gateway_client_id(instance: &InstanceId) -> String {
    format!("ferrocam-gw-{instance}")
}

/// Recovers the device id from a status topic, or `None` if the topic is not one.
pub fn parse_device_status(topic: &str) -> Option<DeviceId> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/devices/")?;
    let id = rest.strip_suffix("/status")?;
    DeviceId::parse(id).ok()
}

/// Recovers the device and gateway instance from a reply topic. A device only replies to
/// topics that pass this check and name itself, so a forged `reply_to` cannot make it publish
/// anywhere else; a gateway trusts the device id of a reply only from its topic.
pub fn parse_device_reply(topic: &str) -> Option<(DeviceId, InstanceId)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/devices/")?;
    let (device, instance) = rest.split_once("/reply/")?;
    Some((
        DeviceId::parse(device).ok()?,
        InstanceId::parse(instance).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_topic_round_trips() {
        let id = DeviceId::parse("cam-1").unwrap();
        assert_eq!(parse_device_status(&device_status(&id)), Some(id));
    }

    #[test]
    fn only_device_reply_topics_are_valid_reply_topics() {
        let gw = InstanceId::parse("gw-1").unwrap();
        let cam = DeviceId::parse("cam.1").unwrap();
        assert_eq!(
            parse_device_reply(&device_reply(&cam, &gw)),
            Some((cam, gw.clone()))
        );
        assert_eq!(parse_device_reply("ferrocam/v1/devices/x/status"), None);
        assert_eq!(parse_device_reply("ferrocam/v1/devices/x/reply/#"), None);
        assert_eq!(parse_device_reply("ferrocam/v1/devices/+/reply/gw"), None);
        assert_eq!(parse_device_reply("ferrocam/v1/devices/a/reply/b/c"), None);
        assert_eq!(parse_device_reply("ferrocam/v1/devices/a/b/reply/c"), None);
        assert_eq!(replies_to(&gw), "ferrocam/v1/devices/+/reply/gw-1");
    }

    #[test]
    fn foreign_topics_are_not_status_topics() {
        assert_eq!(parse_device_status("ferrocam/v1/devices/a/b/status"), None);
        assert_eq!(parse_device_status("ferrocam/v1/devices/cam/signal"), None);
        assert_eq!(parse_device_status("other/devices/cam/status"), None);
    }
}
