//! The device's link to the MQTT broker: presence, the signaling subscription, and what
//! sessions say. It is the only part of the device that knows MQTT exists; the connection itself
//! (reconnects, backoff, failover, the bounded queue, a flushing shutdown) is
//! [`ferrocam_mqtt::Link`].
//!
//! Every connection gets its own number (`seq` in presence) and a last will naming it, so the
//! will of a dropped connection can never outrank the "online" of the next one (see
//! `ferrocam_protocol::presence`). The device also listens to its own status topic: a broker
//! that hands out an old will after the device is back (late keep-alive expiry, a restart)
//! leaves that will as the retained status, and the device then announces itself once more.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_mqtt::{
    BrokerSettings, Link, LinkEvent, LinkOptions, Presence, Publisher, Retained, Step, now_ms,
    signing_seal,
};
use ferrocam_protocol::signed::{Signer, Verifier};
use ferrocam_protocol::{Capabilities, DeviceStatus, topics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::metrics::ReasonLabels;
use crate::requests::RequestGate;

/// Who the device is on the broker.
pub struct Identity {
    pub broker: BrokerSettings,
    pub client_id: String,
    /// The "online" presence document; the link fills in `seq` and the current capabilities.
    pub online: DeviceStatus,
    /// What the device can do right now (camera health, the stream as `video.set` left it),
    /// announced in presence whenever it changes.
    pub capabilities: watch::Receiver<Capabilities>,
    /// This device's own key: everything it publishes is signed with it.
    pub signer: Arc<Signer>,
    /// The gateways' grant key, which must have signed every request.
    pub gateway_key: Verifier,
}

/// What the link exchanges with the rest of the device.
pub struct Wiring {
    pub agent: Arc<Agent>,
    /// Flips to `true` to stop.
    pub shutdown: watch::Receiver<bool>,
    /// Set while connected and announced.
    pub connected: watch::Sender<bool>,
    /// Counts lost connections.
    pub reconnects: Counter,
    /// Counts requests the gate refused, by reason.
    pub requests_dropped: Family<ReasonLabels, Counter>,
}

/// The device's side of the broker, before it runs: sessions publish through the
/// [`Publisher`] from the start, and [`DeviceLink::run`] drives the connection.
pub struct DeviceLink {
    link: Link,
    online: DeviceStatus,
    capabilities: watch::Receiver<Capabilities>,
    gate: RequestGate,
    /// This device's public key, to recognise its own messages on its status topic.
    own_key: Verifier,
}

/// Outbound requests that may wait for the broker: a few sessions' worth of replies and
/// candidates. Beyond that the broker has been gone long enough that they are stale anyway.
const QUEUE: usize = 64;

impl DeviceLink {
    pub fn new(identity: Identity) -> anyhow::Result<(Publisher, Self)> {
        let Identity {
            broker,
            client_id,
            online,
            capabilities,
            signer,
            gateway_key,
        } = identity;
        let status_topic = topics::device_status(&online.device);
        let own_key = Verifier::from_base64(&signer.public_key())
            .map_err(|e| anyhow::anyhow!("the device's own key: {e}"))?;
        let gate = RequestGate::new(
            gateway_key,
            topics::device_signal(&online.device),
            now_ms().saturating_sub(crate::requests::BEFORE_START_MS),
        );
        let (publisher, link) = Link::new(
            &broker,
            LinkOptions {
                client_id,
                // Subscribe first: the broker handles these in order, so no offer can arrive
                // for a device that has announced itself but not yet subscribed. The own status
                // topic comes last, so the retained message it brings is this birth unless an
                // older will overtook it.
                greeting: vec![
                    Step::Subscribe(topics::device_signal(&online.device)),
                    Step::Birth,
                    Step::Subscribe(status_topic.clone()),
                ],
                presence: Some(Box::new(DevicePresence {
                    topic: status_topic,
                    online: online.clone(),
                    capabilities: capabilities.clone(),
                })),
                queue: QUEUE,
                settle_after: Some(SETTLE_AFTER),
                seal: Some(signing_seal(signer)),
            },
        )?;
        let link = Self {
            link,
            online,
            capabilities,
            gate,
            own_key,
        };
        Ok((publisher, link))
    }

    /// Runs the link until `shutdown` flips; then says offline, flushes and disconnects.
    pub async fn run(self, wiring: Wiring) {
        let Self {
            mut link,
            online,
            mut capabilities,
            mut gate,
            own_key,
        } = self;
        let Wiring {
            agent,
            mut shutdown,
            connected,
            reconnects,
            requests_dropped,
        } = wiring;
        let status_topic = topics::device_status(&online.device);
        let signal_topic = topics::device_signal(&online.device);
        let mut repairs = Repairs::default();
        let mut drops = DropLog::default();
        while !*shutdown.borrow() {
            tokio::select! {
                _ = shutdown.changed() => {}
                () = sleep_until(repairs.due) => {
                    repairs.done(Instant::now());
                    tracing::info!("the broker holds an old will as this device's status; announcing again");
                    link.rebirth();
                }
                Ok(()) = capabilities.changed() => {
                    // Presence carries the camera's health and the stream's shape: announce
                    // every change, so pages and the REST API never show a stale size or rate.
                    let caps = capabilities.borrow_and_update();
                    tracing::info!(camera = ?caps.camera, video = ?caps.video, "capabilities changed");
                    drop(caps);
                    link.rebirth();
                }
                event = link.next() => match event {
                    LinkEvent::Up { connection } => {
                        tracing::info!(topic = %signal_topic, connection, "announced on the broker");
                        connected.send_replace(true);
                    }
                    LinkEvent::Down { .. } => {
                        reconnects.inc();
                        connected.send_replace(false);
                    }
                    LinkEvent::Message { topic, payload } if topic == signal_topic => {
                        match gate.admit(&payload, now_ms()) {
                            Ok(request) => agent.handle_payload(request),
                            Err(refusal) => {
                                let reason = refusal.reason();
                                requests_dropped.get_or_create(&ReasonLabels { reason }).inc();
                                if let Some(suppressed) = drops.may_log(Instant::now()) {
                                    tracing::warn!(reason, suppressed, bytes = payload.len(), "dropped a request from the broker");
                                }
                            }
                        }
                    }
                    LinkEvent::Message { topic, payload } if topic == status_topic => {
                        let me = DeviceStatus { seq: link.connection(), ..online.clone() };
                        // Anything on this topic that the device did not sign holds its
                        // retained presence in its place: gateways that subscribe from now on
                        // would find no status they believe, so announce again.
                        let repair = match own_key.open(&status_topic, &payload) {
                            Ok(opened) => outdated_by_stale_will(opened.msg, &me),
                            Err(_) => true,
                        };
                        if repair {
                            repairs.ask(Instant::now());
                        }
                    }
                    LinkEvent::Message { .. } => {}
                }
            }
        }
        link.shutdown().await;
    }
}

/// Birth and will of each connection: "online" with the capabilities of the moment, and
/// "offline", both naming the run (`epoch`) and the connection (`seq`).
struct DevicePresence {
    topic: String,
    online: DeviceStatus,
    capabilities: watch::Receiver<Capabilities>,
}

impl Presence for DevicePresence {
    fn birth(&mut self, connection: u64) -> Retained {
        let status = DeviceStatus {
            seq: connection,
            capabilities: Some(self.capabilities.borrow().clone()),
            ..self.online.clone()
        };
        Retained {
            topic: self.topic.clone(),
            payload: serde_json::to_vec(&status).expect("a status always serializes"),
        }
    }

    fn will(&mut self, connection: u64) -> Retained {
        let online = DeviceStatus {
            seq: connection,
            ..self.online.clone()
        };
        Retained {
            topic: self.topic.clone(),
            payload: offline_payload(&online),
        }
    }
}

/// At most one log line a second about dropped requests, saying how many were left out: a
/// flood of forgeries must not fill the SD card through the journal.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    fn may_log(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// When to answer a stale will with a new birth: at most once a second, so a broker replaying
/// old wills (or a forger) cannot make the device publish in a loop, yet a stale will seen
/// within that second is still answered.
#[derive(Default)]
struct Repairs {
    /// The last repair.
    last: Option<Instant>,
    /// The next one, if one is owed.
    due: Option<Instant>,
}

impl Repairs {
    fn ask(&mut self, now: Instant) {
        if self.due.is_none() {
            self.due = Some(
                self.last
                    .map_or(now, |at| (at + MIN_REPAIR_INTERVAL).max(now)),
            );
        }
    }

    fn done(&mut self, now: Instant) {
        self.due = None;
        self.last = Some(now);
    }
}

/// A clustered broker that just lost a node can acknowledge a retained publish without storing
/// it, or a subscription without serving it, while it re-elects (measured on NATS: 4–8 s).
/// The device subscribes and announces presence once more this long after every connect, so
/// gateways that subscribe later still see it and its offers still arrive.
const SETTLE_AFTER: Duration = Duration::from_secs(15);

/// At most one presence repair this often (see `outdated_by_stale_will`).
const MIN_REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// The "offline" document of the connection `online` describes.
fn offline_payload(online: &DeviceStatus) -> Vec<u8> {
    let offline = DeviceStatus {
        online: false,
        capabilities: None,
        ..online.clone()
    };
    serde_json::to_vec(&offline).expect("a status always serializes")
}

/// Whether `payload`, seen on the device's own status topic while connected, is the will of an
/// earlier connection (or run) of this device: then the broker's retained status says offline
/// although the device is here, and gateways that subscribe from now on would believe it.
/// Anything else (its own announcement, garbage, another device's document) needs nothing.
fn outdated_by_stale_will(payload: &[u8], online: &DeviceStatus) -> bool {
    serde_json::from_slice::<DeviceStatus>(payload).is_ok_and(|seen| {
        !seen.online && seen.device == online.device && seen.connection() < online.connection()
    })
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocam_protocol::DeviceId;

    fn status(online: bool, epoch: u64, seq: u64) -> DeviceStatus {
        DeviceStatus {
            v: 1,
            device: DeviceId::parse("cam").unwrap(),
            online,
            epoch,
            seq,
            version: String::new(),
            capabilities: None,
        }
    }

    fn payload(status: &DeviceStatus) -> Vec<u8> {
        serde_json::to_vec(status).unwrap()
    }

    #[test]
    fn an_older_connections_will_is_repaired() {
        let me = status(true, 10, 3);
        assert!(outdated_by_stale_will(&payload(&status(false, 10, 2)), &me));
        assert!(outdated_by_stale_will(&payload(&status(false, 9, 7)), &me));
    }

    #[test]
    fn nothing_else_is() {
        let me = status(true, 10, 3);
        // Its own announcement coming back, and the current connection's own will.
        assert!(!outdated_by_stale_will(&payload(&me), &me));
        assert!(!outdated_by_stale_will(
            &payload(&status(false, 10, 3)),
            &me
        ));
        // A newer run of the same id (another process took over): not ours to fight.
        assert!(!outdated_by_stale_will(
            &payload(&status(false, 11, 1)),
            &me
        ));
        let mut other = status(false, 1, 1);
        other.device = DeviceId::parse("other").unwrap();
        assert!(!outdated_by_stale_will(&payload(&other), &me));
        assert!(!outdated_by_stale_will(b"{not json", &me));
    }

    fn presence() -> DevicePresence {
        let (_, capabilities) = watch::channel(Capabilities::default());
        DevicePresence {
            topic: "ferrocam/v1/devices/cam/status".into(),
            online: status(true, 10, 0),
            capabilities,
        }
    }

    #[test]
    fn birth_and_will_name_their_connection() {
        let mut presence = presence();
        let said = |r: Retained| serde_json::from_slice::<DeviceStatus>(&r.payload).unwrap();
        let will = said(presence.will(3));
        assert_eq!((will.online, will.epoch, will.seq), (false, 10, 3));
        assert!(will.capabilities.is_none());
        let birth = said(presence.birth(4));
        assert_eq!((birth.online, birth.epoch, birth.seq), (true, 10, 4));
        assert!(birth.capabilities.is_some());
    }

    #[test]
    fn repairs_come_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut repairs = Repairs::default();
        repairs.ask(t0);
        assert_eq!(repairs.due, Some(t0), "the first one is at once");
        repairs.done(t0);
        repairs.ask(t0 + Duration::from_millis(100));
        assert_eq!(
            repairs.due,
            Some(t0 + MIN_REPAIR_INTERVAL),
            "the next waits its turn"
        );
        repairs.ask(t0 + Duration::from_millis(200));
        assert_eq!(
            repairs.due,
            Some(t0 + MIN_REPAIR_INTERVAL),
            "asking again owes no more"
        );
        repairs.done(t0 + MIN_REPAIR_INTERVAL);
        repairs.ask(t0 + Duration::from_secs(5));
        assert_eq!(repairs.due, Some(t0 + Duration::from_secs(5)));
    }
}
