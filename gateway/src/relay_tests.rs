//! Unit tests of the relay: sessions, relayed control requests, and broker-link loss.

use crate::auth::grant::GrantSigner;
use ferrocam_protocol::InstanceId;

/// A grant signer with a fresh key, and its public key.
fn signer() -> (GrantSigner, String) {
    let (pem, public) = crate::auth::grant::generate();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let signer = GrantSigner::from_pkcs8(&der, InstanceId::parse("gw-test").unwrap()).unwrap();
    (signer, public)
}

#[path = "relay_tests/sessions.rs"]
mod sessions;

#[path = "relay_tests/takeover.rs"]
mod takeover;

#[path = "relay_tests/control.rs"]
mod control;

#[path = "relay_tests/link.rs"]
mod link;

#[path = "relay_tests/rights.rs"]
mod rights;
