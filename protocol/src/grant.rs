//! Session grants: the gateway's signed permission for one session with one device.
//!
//! Anyone who can publish on a device's signal topic could otherwise open a session with it, so
//! the topic alone proves nothing. Every request that opens something on a device (an offer, a
//! relayed control request) carries a grant: a compact JWS (`header.claims.signature`, EdDSA
//! over Ed25519) whose claims are below. Gateways hold the private key; devices hold only the
//! public key, so a leaked device or broker credential cannot mint grants.
//!
//! A device accepts a grant only if the signature verifies, `aud` is its own id, `sub` is the
//! envelope's session id, the grant has not expired (with a small leeway for clock skew), and
//! the session id was not granted before (replay). The signing and checking live with each
//! side (`jsonwebtoken` in the gateway and the device); this module is the shared vocabulary.
//!
//! When the device makes the offer, the viewer's answer travels over MQTT too, and it names the
//! DTLS certificate the media will be encrypted for: an answer from anyone who can publish on the
//! signal topic would take the stream. So the gateway relays each answer with a grant of its own
//! whose `answer` claim is the SDP's SHA-256 ([`ANSWER_DIGEST`]); the device applies an answer
//! only with such a grant for its session. Such a grant opens nothing by itself.

use serde::{Deserialize, Serialize};

use crate::control::Role;
use crate::viewer::IceServer;

/// How long a grant stays valid. It only has to outlive the trip from gateway to device.
pub const GRANT_TTL_SECS: u64 = 30;

/// Clock skew a device tolerates between its clock and the gateway's.
pub const GRANT_LEEWAY_SECS: u64 = 60;

/// How the `answer` claim digests the answer's SDP: SHA-256 of its UTF-8 bytes, base64url
/// without padding.
pub const ANSWER_DIGEST: &str = "sha-256, base64url";

/// The claims of a session grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// The device the grant is for.
    pub aud: String,
    /// The session (or relayed control request) id the grant is for.
    pub sub: String,
    /// What the session may do; the device never grants more.
    pub role: Role,
    /// The session may talk: the device plays the viewer's microphone. A right of its own, not
    /// part of `role` (a control session may be denied it, a view session granted it); absent
    /// means no.
    #[serde(default, skip_serializing_if = "is_false")]
    pub talk: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// The gateway instance that issued it.
    pub iss: String,
    /// The user or API token the gateway authenticated: in the device's log, and the only one
    /// who may later move the session's signaling to another gateway (`attach`).
    pub usr: String,
    /// STUN/TURN servers for this session's device side, with fresh TURN credentials. Gateways
    /// send them in `ice_sealed` instead; a device fills this in from there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice: Vec<IceServer>,
    /// The ICE servers as JSON, sealed to the device's key ([`crate::sealed`]): a grant is
    /// readable by whoever can read the broker, TURN credentials must not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_sealed: Option<String>,
    /// Only in the grant relayed with a viewer's answer to the device's offer: the digest of
    /// that answer ([`ANSWER_DIGEST`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Only in the grant of an `attach`: it moves a running session's signaling and opens
    /// nothing, and no other grant can move one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attach: bool,
    /// A random id, so two grants with the same claims in the same second still differ (the
    /// device remembers each attach grant it accepted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

fn is_false(value: &bool) -> bool {
    !value
}
