//! The gate every message from the broker passes before the gateway believes it.
//!
//! A device's topic says which device a message claims to be from; only that device's
//! signature proves it. So the gate looks up the key of the device the topic names and drops
//! anything that does not verify: messages from devices that are not enrolled, unsigned ones,
//! forgeries by another device or by anyone else on the broker. Each drop is counted by reason
//! (`ferrocam_gateway_device_messages_dropped`) and logged at most once a second, so a flood
//! cannot flood the log too.
//!
//! It also bounds how often each device may change its presence: a verified device that
//! publishes its status in a loop (buggy or compromised) must not make the gateway push device
//! lists to every browser a thousand times a second. Statuses beyond the limit are not lost,
//! only held: the newest one per device is applied on the next tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrocam_protocol::DeviceId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Registry;
use crate::rate::{Keyed, LogThrottle};

/// Label of the dropped-messages counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// One of [`DROP_REASONS`].
    pub reason: &'static str,
}

/// Why a message from the broker was dropped: the device is not enrolled, the payload is not a
/// signed message, the signature is wrong (a forgery), it is too large, or (statuses only) the
/// signed content names another device or does not parse.
pub const DROP_REASONS: [&str; 5] = [
    "not_enrolled",
    "unsigned",
    "bad_signature",
    "too_large",
    "malformed",
];

/// Status changes one device may make: a burst for a restart (birth, capability updates),
/// then four a second. A device whose Wi-Fi drops every half second makes about that many (the
/// broker's will for the lost connection, then the device's birth on the new one); at one a
/// second its births waited for the next tick and it showed online up to a second late
/// (measured: 1.36 s in `tests/tests/blips.rs`, whose bound is 1 s).
const STATUS_BURST: u32 = 10;
const STATUS_PER_SECOND: f64 = 4.0;

/// How often statuses held back by the limit are applied: one per device per tick, which is
/// the limit's rate.
pub const HELD_STATUSES_EVERY: std::time::Duration =
    std::time::Duration::from_millis((1000.0 / STATUS_PER_SECOND) as u64);

/// Checks what arrives from the broker.
pub struct Gatekeeper {
    registry: Arc<Registry>,
    dropped: Family<DropLabels, Counter>,
    statuses: Keyed<DeviceId>,
    /// The newest status of each device that arrived over its limit, applied on the next tick.
    held: Mutex<HashMap<DeviceId, Vec<u8>>>,
    log: Mutex<LogThrottle>,
}

impl Gatekeeper {
    pub fn new(registry: Arc<Registry>) -> Self {
        let dropped = Family::default();
        for reason in DROP_REASONS {
            dropped.get_or_create_owned(&DropLabels { reason });
        }
        Self {
            registry,
            dropped,
            statuses: Keyed::new(STATUS_BURST, STATUS_PER_SECOND, 100_000),
            held: Mutex::default(),
            log: Mutex::new(LogThrottle::default()),
        }
    }

    pub fn is_enrolled(&self, device: &DeviceId) -> bool {
        self.registry.is_enrolled(device)
    }

    /// The counter family, for `/metrics`.
    pub fn dropped(&self) -> Family<DropLabels, Counter> {
        self.dropped.clone()
    }

    /// The message inside `payload` if `device` signed it for `topic`; else counts and logs.
    pub fn open<'a>(&self, device: &DeviceId, topic: &str, payload: &'a [u8]) -> Option<&'a [u8]> {
        let Some(verifier) = self.registry.verifier(device) else {
            self.drop_message(device, "not_enrolled");
            return None;
        };
        match verifier.open(topic, payload) {
            Ok(opened) => Some(opened.msg),
            Err(e) => {
                self.drop_message(device, e.reason());
                None
            }
        }
    }

    /// Whether a verified status of `device` may be applied now; if not, it is held (the newest
    /// replacing any older one) for [`Gatekeeper::take_held`].
    pub fn admit_status(&self, device: &DeviceId, msg: &[u8]) -> bool {
        if self.statuses.allow(device) {
            self.held.lock().expect("held lock").remove(device);
            return true;
        }
        self.held
            .lock()
            .expect("held lock")
            .insert(device.clone(), msg.to_vec());
        false
    }

    /// Statuses held back by the limit, to apply now (call every [`HELD_STATUSES_EVERY`]).
    pub fn take_held(&self) -> Vec<(DeviceId, Vec<u8>)> {
        std::mem::take(&mut *self.held.lock().expect("held lock"))
            .into_iter()
            .collect()
    }

    /// Counts and (rate-limited) logs one dropped message.
    pub fn drop_message(&self, device: &DeviceId, reason: &'static str) {
        debug_assert!(DROP_REASONS.contains(&reason), "{reason}");
        self.dropped.get_or_create(&DropLabels { reason }).inc();
        let mut log = self.log.lock().expect("log lock");
        if let Some(suppressed) = log.may_log(Instant::now()) {
            tracing::warn!(
                %device,
                reason,
                suppressed,
                "dropped a message from the broker that this device did not sign"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocam_protocol::signed::{Signer, Verifier, generate_seed};

    fn device(id: &str) -> (DeviceId, Signer) {
        (
            DeviceId::parse(id).unwrap(),
            Signer::from_seed_base64(&generate_seed()).unwrap(),
        )
    }

    fn gate(enrolled: &[(&DeviceId, &Signer)]) -> Gatekeeper {
        let devices = enrolled
            .iter()
            .map(|(id, s)| {
                (
                    (*id).clone(),
                    Verifier::from_base64(&s.public_key()).unwrap(),
                )
            })
            .collect();
        Gatekeeper::new(Arc::new(Registry::with(devices)))
    }

    fn count(gate: &Gatekeeper, reason: &'static str) -> u64 {
        gate.dropped.get_or_create(&DropLabels { reason }).get()
    }

    #[test]
    fn only_the_named_devices_own_signature_opens_its_topic() {
        let (a, a_key) = device("cam-a");
        let (b, b_key) = device("cam-b");
        let (stranger, stranger_key) = device("cam-x");
        let gate = gate(&[(&a, &a_key), (&b, &b_key)]);
        let topic_b = ferrocam_protocol::topics::device_status(&b);
        let msg = br#"{"v":1}"#;

        assert_eq!(
            gate.open(&b, &topic_b, &b_key.seal(&topic_b, msg, 1)),
            Some(&msg[..])
        );
        // Device A, enrolled and with valid broker credentials, forging B.
        assert_eq!(gate.open(&b, &topic_b, &a_key.seal(&topic_b, msg, 1)), None);
        assert_eq!(count(&gate, "bad_signature"), 1);
        // Unsigned, and from a device nobody enrolled.
        assert_eq!(gate.open(&b, &topic_b, msg), None);
        assert_eq!(count(&gate, "unsigned"), 1);
        let topic_x = ferrocam_protocol::topics::device_status(&stranger);
        let signed = stranger_key.seal(&topic_x, msg, 1);
        assert_eq!(gate.open(&stranger, &topic_x, &signed), None);
        assert_eq!(count(&gate, "not_enrolled"), 1);
    }

    #[test]
    fn a_status_flood_is_held_to_the_newest_per_device() {
        let (a, a_key) = device("cam-a");
        let (b, b_key) = device("cam-b");
        let gate = gate(&[(&a, &a_key), (&b, &b_key)]);
        let admitted = (0..1000)
            .filter(|i| gate.admit_status(&a, format!("{i}").as_bytes()))
            .count();
        assert_eq!(admitted, STATUS_BURST as usize);
        // Another device is not held back by A's flood.
        assert!(gate.admit_status(&b, b"1"));
        let held = gate.take_held();
        assert_eq!(held, vec![(a.clone(), b"999".to_vec())]);
        assert!(gate.take_held().is_empty());
    }
}
