//! Prometheus metrics of the gateway, served at `/metrics` in the text exposition format.
//!
//! Gauges that mirror relay state (devices online, sessions) are read at scrape time rather than
//! kept in step with every change; counters and the relay-latency histogram are updated where
//! the events happen.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::relay::Relay;

/// Label of the sessions gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `awaiting_answer` or `answered`.
    pub state: &'static str,
}

/// Label of the offers counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `ws` or `whep`.
    pub via: &'static str,
    /// `accepted` or the refusal code.
    pub result: String,
}

/// Label of the auth-failures counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// `missing`, `bad_token`, `bad_password`, `forbidden_device`, `bad_origin`.
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    devices_online: Gauge,
    devices_known: Gauge,
    broker_connected: Gauge,
    broker_link_losses: Gauge,
    sessions: Family<SessionLabels, Gauge>,
    /// Offers by transport and outcome.
    pub offers: Family<OfferLabels, Counter>,
    /// Requests refused by a rate limit.
    pub rate_limited: Counter,
    /// Control requests relayed over REST.
    pub control_requests: Counter,
    /// Requests refused for want of valid credentials or permission.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
}

impl Metrics {
    /// Registers everything, including the relay's answer-latency histogram.
    pub fn new(answer_latency: Histogram) -> Self {
        let mut registry = Registry::with_prefix("ferrocam_gateway");
        let m = Self {
            devices_online: Gauge::default(),
            devices_known: Gauge::default(),
            broker_connected: Gauge::default(),
            broker_link_losses: Gauge::default(),
            sessions: Family::default(),
            offers: Family::default(),
            rate_limited: Counter::default(),
            control_requests: Counter::default(),
            auth_failures: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "devices_online",
            "Devices whose presence says online",
            m.devices_online.clone(),
        );
        registry.register(
            "devices_known",
            "Devices this gateway has seen",
            m.devices_known.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the link to the MQTT broker is up",
            m.broker_connected.clone(),
        );
        registry.register(
            "broker_link_losses",
            "Times the link to the MQTT broker was lost since start",
            m.broker_link_losses.clone(),
        );
        registry.register(
            "sessions",
            "Viewer sessions in flight or streaming",
            m.sessions.clone(),
        );
        registry.register(
            "offers",
            "Offers received, by transport and outcome",
            m.offers.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "control_requests",
            "Control requests relayed over REST",
            m.control_requests.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for missing or invalid credentials, a foreign origin, or a device outside the caller's scope",
            m.auth_failures.clone(),
        );
        registry.register(
            "answer_latency_seconds",
            "Time from relaying an offer to relaying the device's answer",
            answer_latency,
        );
        Self { registry, ..m }
    }

    /// The text exposition, with the state gauges read from the relay now.
    pub fn render(&self, relay: &Relay) -> String {
        let devices = relay.watch_devices().borrow().clone();
        self.devices_known.set(devices.len() as i64);
        self.devices_online
            .set(devices.iter().filter(|d| d.online).count() as i64);
        let (up, losses) = relay.link_state();
        self.broker_connected.set(i64::from(up));
        self.broker_link_losses.set(losses as i64);
        let (awaiting, answered) = relay.sessions_by_state();
        for (state, n) in [("awaiting_answer", awaiting), ("answered", answered)] {
            self.sessions
                .get_or_create(&SessionLabels { state })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Buckets for relay latency: 1 ms to ~16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}
