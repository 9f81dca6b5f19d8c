//! How the device and the gateway talk to their MQTT broker.
//!
//! - [`settings`]: where the broker is (URLs, failover across cluster nodes), credentials, TLS.
//! - [`link`]: one reconnecting connection, split like rumqttc's own client: a [`Publisher`]
//!   handle anyone may clone, and a [`Link`] whose `next()` drives the I/O and yields
//!   [`LinkEvent`]s. Reconnection, backoff, failover, re-subscription, the per-connection last
//!   will and a clean, flushing shutdown all live inside it, so neither side writes its own loop.
//! - [`outbox`]: the bounded outbound queue and its overflow policy.
//!
//! What each side subscribes to and how it reads the messages stays in that side's `link.rs`.

pub mod backoff;
pub mod link;
pub mod outbox;
pub mod settings;
pub mod url;

pub use backoff::Backoff;
pub use link::{Link, LinkEvent, LinkOptions, Presence, Retained, Step};
pub use outbox::{Message, Outbox, Publisher, Refused, Seal, now_ms, signing_seal};
pub use settings::{BrokerSettings, Failover, client, node_name};
pub use url::{BrokerAddr, BrokerUrlError};
