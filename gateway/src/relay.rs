//! The relay: which devices exist, which viewer owns which session, and translation between the
//! browser's WebSocket messages and the device's MQTT envelopes.
//!
//! It does no I/O itself: requests for the broker go to an [`Outbox`] (the broker link's bounded
//! queue in the gateway, a channel in tests), messages for viewers on each viewer's channel.
//! That keeps it testable without sockets or a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocam_mqtt::{Outbox, Refused};
use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::{IceServer, ServerMsg};
use ferrocam_protocol::{
    DeviceId, DeviceStatus, ErrorCode, InstanceId, Party, Request, SessionId, ToDevice, topics,
};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, watch};

use crate::auth::grant::GrantSigner;
use crate::rate::TokenBucket;

mod control;
mod session;

pub use control::ControlReplies;
use session::Session;

/// Offers one device may receive through this gateway: a burst of 30, then 10 a second. Far
/// above what real viewers do; it stops a flood (from many connections or tokens at once)
/// from making the device build peer connections faster than it can.
const DEVICE_OFFER_BURST: u32 = 30;
const DEVICE_OFFERS_PER_SECOND: f64 = 10.0;
/// Control requests (snapshots included) one device may receive through this gateway: a burst
/// of 20, then 5 a second. A snapshot costs a small board a frame, an encode and a blocking
/// thread; a script polling every second is far below this.
const DEVICE_CONTROL_BURST: u32 = 20;
const DEVICE_CONTROLS_PER_SECOND: f64 = 5.0;

/// One MQTT publish requested by the relay.
pub use ferrocam_mqtt::Message as Publish;

/// How far ahead of this gateway's clock a device's run (`epoch`, its start in milliseconds
/// since the Unix epoch) may be. A status from further ahead (a forger's `u64::MAX`) would
/// outrank every real one for good and pin the device's presence. Generous, so a gateway that
/// boots with a clock days behind (no RTC, before NTP) still believes its devices.
const MAX_EPOCH_AHEAD: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

fn plausible_epoch(epoch_ms: u64) -> bool {
    let latest = std::time::SystemTime::now() + MAX_EPOCH_AHEAD;
    let latest_ms = latest
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(u64::MAX, |d| d.as_millis() as u64);
    epoch_ms <= latest_ms
}

/// Takes a token from `device`'s bucket in `limits` (made by `bucket` on first use), or
/// refuses as `rate_limited`, naming `what` was too many.
fn take_token(
    limits: &mut HashMap<DeviceId, TokenBucket>,
    device: &DeviceId,
    bucket: impl FnOnce() -> TokenBucket,
    what: &str,
) -> Result<(), Refusal> {
    if limits
        .entry(device.clone())
        .or_insert_with(bucket)
        .try_take()
    {
        return Ok(());
    }
    Err(Refusal {
        code: ErrorCode::RateLimited,
        message: format!("too many {what} for device {device}; try again in a moment"),
    })
}

/// Identifies one viewer connection (one WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewerId(pub u64);

/// Channel to one viewer.
pub type ViewerTx = mpsc::UnboundedSender<ServerMsg>;

/// Sessions one principal may hold with one device at once, unless the gateway is told
/// otherwise (`--sessions-per-principal`); a device serves 32 by default.
pub const SESSIONS_PER_PRINCIPAL: usize = 8;

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct OfferOptions {
    /// Trickle candidates (WebSocket) or answer with all of them (WHEP).
    pub trickle: bool,
    /// What the session's control channel may do.
    pub role: Role,
    /// The device may play the viewer's microphone (signed into the grant).
    pub talk: bool,
    /// Who asked (a user or API token name), for the grant and the device's log.
    pub user: String,
    /// The asker's unique id (`Principal::id`), which the per-principal session limit counts.
    pub owner: String,
    /// STUN/TURN servers for the device's side of this session (inside the signed grant).
    pub device_ice: Vec<IceServer>,
}

/// A request the relay refuses, with the code the viewer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Which side of a session writes the SDP offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offerer {
    /// The viewer offers, the device answers (WHEP, `offer` on the WebSocket).
    Viewer,
    /// The device offers after an invite, the viewer answers (`watch` on the WebSocket).
    Device,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<DeviceId, DeviceStatus>,
    /// Devices whose status is marked offline only because this gateway lost the broker: the
    /// next status from the device replaces it whatever its epoch.
    unconfirmed: std::collections::BTreeSet<DeviceId>,
    sessions: HashMap<SessionId, Session>,
    /// Relayed control requests awaiting replies, by request id.
    controls: HashMap<SessionId, (DeviceId, mpsc::UnboundedSender<String>)>,
    /// Per-device offer rate limits (devices that exist only: bounded by the device list).
    offer_limits: HashMap<DeviceId, TokenBucket>,
    /// Per-device control request rate limits (likewise bounded).
    control_limits: HashMap<DeviceId, TokenBucket>,
}

/// Shared relay state of one gateway instance.
pub struct Relay {
    instance: InstanceId,
    /// Signs the grant on every offer and control request.
    signer: GrantSigner,
    broker: Box<dyn Outbox>,
    state: Mutex<State>,
    devices_tx: watch::Sender<Vec<DeviceStatus>>,
    next_viewer: AtomicU64,
    /// Whether the broker link is up, and how often it went down (for `/metrics`).
    link_up: std::sync::atomic::AtomicBool,
    link_losses: AtomicU64,
    /// Request relayed → the device's SDP relayed (its answer, or its offer after an invite),
    /// in seconds.
    pub answer_latency: Histogram,
    /// Sessions one principal may hold with one device ([`SESSIONS_PER_PRINCIPAL`]).
    pub sessions_per_principal: usize,
    /// Each device's key for sealing the TURN credentials in its grants (the enrolled
    /// devices, in the running gateway); none in tests that need no TURN.
    pub recipients: Recipients,
    /// Opens the control replies devices seal to the grant key.
    opener: ferrocam_protocol::sealed::Opener,
}

/// Looks up the key to seal a device's secrets to.
pub type Recipients =
    Box<dyn Fn(&DeviceId) -> Option<ferrocam_protocol::sealed::Recipient> + Send + Sync>;

impl Relay {
    pub fn new(instance: InstanceId, broker: impl Outbox + 'static, signer: GrantSigner) -> Self {
        Self {
            opener: signer.opener(),
            recipients: Box::new(|_| None),
            signer,
            instance,
            broker: Box::new(broker),
            state: Mutex::default(),
            devices_tx: watch::Sender::new(Vec::new()),
            next_viewer: AtomicU64::new(1),
            link_up: std::sync::atomic::AtomicBool::new(false),
            link_losses: AtomicU64::new(0),
            // 1 ms to ~16 s.
            answer_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            sessions_per_principal: SESSIONS_PER_PRINCIPAL,
        }
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Where `device` sends its replies to this instance.
    pub fn reply_topic(&self, device: &DeviceId) -> String {
        topics::device_reply(device, &self.instance)
    }

    /// Allocates an id for a new viewer connection.
    pub fn new_viewer(&self) -> ViewerId {
        ViewerId(self.next_viewer.fetch_add(1, Ordering::Relaxed))
    }

    /// The current device list, and a way to wait for changes.
    pub fn watch_devices(&self) -> watch::Receiver<Vec<DeviceStatus>> {
        self.devices_tx.subscribe()
    }

    /// One device's status, if it was ever seen.
    pub fn device(&self, id: &DeviceId) -> Option<DeviceStatus> {
        self.lock().devices.get(id).cloned()
    }

    /// Records a status update, ignoring ones older than what is known.
    pub fn on_status(&self, status: DeviceStatus) {
        if !plausible_epoch(status.epoch) {
            tracing::warn!(device = %status.device, epoch = status.epoch, "ignoring a status from the far future");
            return;
        }
        let mut state = self.lock();
        // A device announces itself twice (a plain copy and the retained one): the same
        // status again changes nothing.
        if !state.unconfirmed.contains(&status.device)
            && state.devices.get(&status.device) == Some(&status)
        {
            return;
        }
        let newer = state.unconfirmed.remove(&status.device)
            || state
                .devices
                .get(&status.device)
                .is_none_or(|current| status.supersedes(current));
        if !newer {
            tracing::debug!(device = %status.device, "ignoring a stale status");
            return;
        }
        tracing::info!(device = %status.device, online = status.online, "device status");
        state.devices.insert(status.device.clone(), status);
        self.publish_devices(&state);
    }

    /// The broker link is down: nobody can reach any device through this gateway, so every
    /// device shows offline (and offers fail fast with "offline" instead of timing out) until
    /// its status arrives again after the reconnect.
    pub fn on_link_down(&self) {
        if self.link_up.swap(false, Ordering::Relaxed) {
            self.link_losses.fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.lock();
        let mut changed = false;
        let ids: Vec<DeviceId> = state.devices.keys().cloned().collect();
        for id in ids {
            if let Some(status) = state.devices.get_mut(&id)
                && status.online
            {
                status.online = false;
                state.unconfirmed.insert(id);
                changed = true;
            }
        }
        if changed {
            tracing::warn!("broker link down; devices shown offline until they report again");
            self.publish_devices(&state);
        }
    }

    /// The broker link is (again) up.
    pub fn on_link_up(&self) {
        self.link_up.store(true, Ordering::Relaxed);
    }

    /// (link up now, times it was lost).
    pub fn link_state(&self) -> (bool, u64) {
        (
            self.link_up.load(Ordering::Relaxed),
            self.link_losses.load(Ordering::Relaxed),
        )
    }

    /// Drops a device whose retained status was cleared.
    pub fn forget_device(&self, id: &DeviceId) {
        let mut state = self.lock();
        state.offer_limits.remove(id);
        state.control_limits.remove(id);
        if state.devices.remove(id).is_some() {
            self.publish_devices(&state);
        }
    }

    /// One request that makes the device work (an offer, an invite, a resume) against its
    /// per-device limit.
    fn take_offer_token(state: &mut State, device: &DeviceId) -> Result<(), Refusal> {
        let bucket = || TokenBucket::new(DEVICE_OFFER_BURST, DEVICE_OFFERS_PER_SECOND);
        take_token(&mut state.offer_limits, device, bucket, "offers")
    }

    /// One relayed control request (a snapshot included) against its per-device limit.
    fn take_control_token(state: &mut State, device: &DeviceId) -> Result<(), Refusal> {
        let bucket = || TokenBucket::new(DEVICE_CONTROL_BURST, DEVICE_CONTROLS_PER_SECOND);
        take_token(
            &mut state.control_limits,
            device,
            bucket,
            "control requests",
        )
    }

    fn check_online(state: &State, device: &DeviceId) -> Result<(), Refusal> {
        match state.devices.get(device) {
            Some(status) if status.online => Ok(()),
            Some(_) => Err(Refusal {
                code: ErrorCode::UnknownDevice,
                message: format!("device {device} is offline"),
            }),
            None => Err(Refusal {
                code: ErrorCode::UnknownDevice,
                message: format!("no device called {device}"),
            }),
        }
    }

    /// A principal may hold at most `sessions_per_principal` sessions with one device, so one
    /// account (a leaked view-only token, a script in a loop) cannot take every viewer slot
    /// the device has.
    fn check_owner_share(
        &self,
        state: &State,
        device: &DeviceId,
        owner: &str,
    ) -> Result<(), Refusal> {
        let held = state
            .sessions
            .values()
            .filter(|s| s.is_owned_by(device, owner))
            .count();
        if held >= self.sessions_per_principal {
            return Err(Refusal {
                code: ErrorCode::Busy,
                message: format!(
                    "this account already has {held} sessions with {device}; close one first"
                ),
            });
        }
        Ok(())
    }

    fn envelope(&self, device: DeviceId, session: SessionId, body: ToDevice) -> Request {
        Request::new(Party::Gateway(self.instance.clone()), device, session, body)
    }

    /// Queues `envelope` for the broker. The link's queue is bounded: when a broker outage has
    /// filled it, the request is refused at once (as `busy`, which viewers retry) rather than
    /// left to time out.
    fn send(&self, envelope: Request) -> Result<(), Refusal> {
        self.broker
            .publish(Publish {
                topic: topics::device_signal(&envelope.device),
                payload: envelope.encode(),
            })
            .map_err(|Refused| Refusal {
                code: ErrorCode::Busy,
                message: "the gateway's link to the broker is backed up; try again shortly"
                    .to_owned(),
            })
    }

    fn publish_devices(&self, state: &State) {
        self.devices_tx
            .send_replace(state.devices.values().cloned().collect());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("relay state lock")
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
