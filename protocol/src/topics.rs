//! The MQTT topic scheme. Every topic either side uses is built here, from validated ids, so
//! the scheme lives in one place and no topic can contain a wildcard.
//!
//! ```text
//! ferrocam/v1/devices/<device>/status     retained presence, last will = offline
//! ferrocam/v1/devices/<device>/signal     requests to a device (offer, candidate, hang-up)
//! ferrocam/v1/gateways/<instance>/signal  replies to one gateway instance (answer, candidates, errors)
//! ```

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

/// Where one gateway instance receives replies.
pub fn gateway_signal(instance: &InstanceId) -> String {
    format!("{ROOT}/gateways/{instance}/signal")
}

/// Subscription filter matching every device's status topic.
pub fn all_device_status() -> String {
    format!("{ROOT}/devices/+/status")
}

/// Recovers the device id from a status topic, or `None` if the topic is not one.
pub fn parse_device_status(topic: &str) -> Option<DeviceId> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/devices/")?;
    let id = rest.strip_suffix("/status")?;
    DeviceId::parse(id).ok()
}

/// Recovers the instance id from a gateway reply topic. A device only replies to topics that pass
/// this check, so a forged `reply_to` cannot make it publish anywhere else.
pub fn parse_gateway_signal(topic: &str) -> Option<InstanceId> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/gateways/")?;
    let id = rest.strip_suffix("/signal")?;
    InstanceId::parse(id).ok()
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
    fn only_gateway_signal_topics_are_valid_reply_topics() {
        let gw = InstanceId::parse("gw-1").unwrap();
        assert_eq!(parse_gateway_signal(&gateway_signal(&gw)), Some(gw));
        assert_eq!(parse_gateway_signal("ferrocam/v1/devices/x/status"), None);
        assert_eq!(parse_gateway_signal("ferrocam/v1/gateways/#/signal"), None);
        assert_eq!(
            parse_gateway_signal("ferrocam/v1/gateways/a/b/signal"),
            None
        );
    }

    #[test]
    fn foreign_topics_are_not_status_topics() {
        assert_eq!(parse_device_status("ferrocam/v1/devices/a/b/status"), None);
        assert_eq!(parse_device_status("ferrocam/v1/devices/cam/signal"), None);
        assert_eq!(parse_device_status("other/devices/cam/status"), None);
    }
}
