//! Prometheus metrics of the gateway, served at `/metrics` in the text exposition format. Every
//! metric is documented once, in the table of docs/deploy.md ("What to monitor"); a test below
//! holds the two to each other.
//!
//! Gauges that mirror relay state (devices online, sessions) are read at scrape time rather than
//! kept in step with every change; counters and the relay-latency histogram are updated where
//! the events happen. Counters with labels have every label set registered from the start, so a
//! series reads 0 before its first event instead of appearing out of nowhere (`rate()` and
//! alerts on it then see the first increment).

use ferrocam_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::relay::Relay;

/// Label of the sessions gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `awaiting_answer` or `answered`.
    pub state: &'static str,
}

/// Labels of the offers counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `ws` or `whep`.
    pub via: &'static str,
    /// `accepted`, or the refusal's [`ErrorCode`] as it is spelled on the wire (`busy`,
    /// `no_common_codec`, `timeout`…).
    pub result: String,
}

/// The transports offers arrive on.
const OFFER_VIAS: [&str; 2] = ["ws", "whep"];

/// Every [`ErrorCode`]. The match makes a new code a compile error here, so the offers counter
/// cannot miss one.
fn error_codes() -> [ErrorCode; 11] {
    let _exhaustive = |code: ErrorCode| match code {
        ErrorCode::UnsupportedVersion
        | ErrorCode::BadRequest
        | ErrorCode::NoCommonCodec
        | ErrorCode::UnknownDevice
        | ErrorCode::UnknownSession
        | ErrorCode::Internal
        | ErrorCode::Timeout
        | ErrorCode::Busy
        | ErrorCode::TooLarge
        | ErrorCode::RateLimited
        | ErrorCode::Unauthorized => {}
    };
    [
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadRequest,
        ErrorCode::NoCommonCodec,
        ErrorCode::UnknownDevice,
        ErrorCode::UnknownSession,
        ErrorCode::Internal,
        ErrorCode::Timeout,
        ErrorCode::Busy,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
    ]
}

/// An error code as a label value: its wire name (`no_common_codec`), the one spelling viewers,
/// logs and metrics share.
pub fn code_label(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("error codes serialize as strings")
}

/// Offers by transport and outcome.
pub struct OfferCounters(Family<OfferLabels, Counter>);

impl OfferCounters {
    fn new() -> Self {
        let family = Family::default();
        let results =
            std::iter::once("accepted".to_owned()).chain(error_codes().into_iter().map(code_label));
        for result in results {
            for via in OFFER_VIAS {
                family.get_or_create_owned(&OfferLabels {
                    via,
                    result: result.clone(),
                });
            }
        }
        Self(family)
    }

    /// Counts one offer: `Ok` if the device answered, else the code it was refused with (a
    /// device that never answers is `Timeout`).
    pub fn count(&self, via: &'static str, outcome: Result<(), ErrorCode>) {
        let result = match outcome {
            Ok(()) => "accepted".to_owned(),
            Err(code) => code_label(code),
        };
        self.0.get_or_create(&OfferLabels { via, result }).inc();
    }
}

/// Label of the auth-failures counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// One of [`AUTH_FAILURE_REASONS`].
    pub reason: &'static str,
}

/// Why a request was refused: no credentials, a bad token, a bad password (the labels of
/// [`crate::auth::AuthError`]), a device outside the caller's scope, a foreign `Origin`.
pub const AUTH_FAILURE_REASONS: [&str; 5] = [
    "missing",
    "bad_token",
    "bad_password",
    "forbidden_device",
    "bad_origin",
];

/// Messages from the broker the gateway did not believe, by reason (see
/// [`crate::devices::inbound`]).
pub type DeviceDrops = Family<crate::devices::inbound::DropLabels, Counter>;

pub struct Metrics {
    registry: Registry,
    devices_online: Gauge,
    devices_known: Gauge,
    broker_connected: Gauge,
    broker_link_losses: Counter,
    /// Held while the losses counter catches up with the relay, so two scrapes at once cannot
    /// both add the same losses.
    catching_up: std::sync::Mutex<()>,
    sessions: Family<SessionLabels, Gauge>,
    /// Offers by transport and outcome.
    pub offers: OfferCounters,
    /// Requests refused by a rate limit.
    pub rate_limited: Counter,
    /// Control requests relayed over REST.
    pub control_requests: Counter,
    /// Requests refused for want of valid credentials or permission.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
}

impl Metrics {
    /// Registers everything, including the relay's answer-latency histogram.
    pub fn new(answer_latency: Histogram, device_drops: DeviceDrops) -> Self {
        let mut registry = Registry::with_prefix("ferrocam_gateway");
        let m = Self {
            devices_online: Gauge::default(),
            devices_known: Gauge::default(),
            broker_connected: Gauge::default(),
            broker_link_losses: Counter::default(),
            catching_up: std::sync::Mutex::default(),
            sessions: Family::default(),
            offers: OfferCounters::new(),
            rate_limited: Counter::default(),
            control_requests: Counter::default(),
            auth_failures: Family::default(),
            registry: Registry::default(),
        };
        for reason in AUTH_FAILURE_REASONS {
            m.auth_failures
                .get_or_create_owned(&AuthFailureLabels { reason });
        }
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
            m.offers.0.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a per-client rate limit",
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
            "device_messages_dropped",
            "Messages on device topics dropped: not enrolled, unsigned, bad signature (a forgery), too large, malformed",
            device_drops,
        );
        registry.register(
            "answer_latency_seconds",
            "Time from relaying an offer or invite to relaying the device's SDP",
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
        // The relay counts losses; the counter catches up with it.
        {
            let _one_at_a_time = self.catching_up.lock().expect("metrics lock");
            let counted = self.broker_link_losses.get();
            if losses > counted {
                self.broker_link_losses.inc_by(losses - counted);
            }
        }
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

#[cfg(test)]
mod tests {
    use ferrocam_protocol::InstanceId;

    use super::*;

    fn fresh() -> (Metrics, Relay) {
        let (tx, _) = tokio::sync::mpsc::unbounded_channel();
        let instance = InstanceId::parse("gw-test").unwrap();
        let signer = crate::auth::grant::GrantSigner::for_tests(instance.clone());
        let relay = Relay::new(instance, tx, signer);
        (
            Metrics::new(relay.answer_latency.clone(), Default::default()),
            relay,
        )
    }

    fn has(text: &str, series: &str) -> bool {
        text.lines().any(|l| l == series)
    }

    #[test]
    fn a_fresh_registry_shows_every_series_at_zero() {
        let (metrics, relay) = fresh();
        let text = metrics.render(&relay);
        let mut zeros = vec![
            "ferrocam_gateway_devices_online 0".to_owned(),
            "ferrocam_gateway_devices_known 0".to_owned(),
            "ferrocam_gateway_broker_connected 0".to_owned(),
            "ferrocam_gateway_broker_link_losses_total 0".to_owned(),
            r#"ferrocam_gateway_sessions{state="awaiting_answer"} 0"#.to_owned(),
            r#"ferrocam_gateway_sessions{state="answered"} 0"#.to_owned(),
            "ferrocam_gateway_rate_limited_total 0".to_owned(),
            "ferrocam_gateway_control_requests_total 0".to_owned(),
            "ferrocam_gateway_answer_latency_seconds_count 0".to_owned(),
        ];
        for reason in AUTH_FAILURE_REASONS {
            zeros.push(format!(
                r#"ferrocam_gateway_auth_failures_total{{reason="{reason}"}} 0"#
            ));
        }
        for via in OFFER_VIAS {
            for result in [
                "accepted",
                "busy",
                "no_common_codec",
                "unknown_device",
                "timeout",
            ] {
                zeros.push(format!(
                    r#"ferrocam_gateway_offers_total{{via="{via}",result="{result}"}} 0"#
                ));
            }
        }
        for series in zeros {
            assert!(has(&text, &series), "no {series:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_snake_case_and_spelled_one_way() {
        let (metrics, relay) = fresh();
        metrics.offers.count("ws", Err(ErrorCode::NoCommonCodec));
        metrics.offers.count("ws", Err(ErrorCode::NoCommonCodec));
        metrics.offers.count("whep", Ok(()));
        let text = metrics.render(&relay);
        assert!(has(
            &text,
            r#"ferrocam_gateway_offers_total{via="ws",result="no_common_codec"} 2"#
        ));
        assert!(has(
            &text,
            r#"ferrocam_gateway_offers_total{via="whep",result="accepted"} 1"#
        ));
        for value in text
            .split("=\"")
            .skip(1)
            .filter_map(|v| v.split('"').next())
        {
            let snake = value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            // Histogram bucket bounds (`le`) are numbers.
            assert!(
                snake || value.parse::<f64>().is_ok(),
                "label value {value:?}"
            );
        }
        for error in [
            crate::auth::AuthError::Missing,
            crate::auth::AuthError::BadToken,
            crate::auth::AuthError::BadPassword,
        ] {
            assert!(AUTH_FAILURE_REASONS.contains(&error.label()), "{error:?}");
        }
    }
}
