//! What a session may do travels in its signed grant: the role, and the right to talk.

use super::super::*;
use super::sessions::{claims_of, opts, relay, sid, status};
use ferrocam_protocol::{Request, ToDevice};

/// The claims of the grant in the offer the relay just published.
fn offered_claims(broker: &mut mpsc::UnboundedReceiver<Publish>) -> ferrocam_protocol::GrantClaims {
    let envelope = Request::decode(&broker.try_recv().unwrap().payload).unwrap();
    let ToDevice::Offer {
        grant: Some(grant), ..
    } = envelope.body
    else {
        panic!("offer without a grant");
    };
    claims_of(&grant)
}

#[test]
fn the_right_to_talk_is_signed_into_the_grant_with_the_role() {
    let (relay, mut broker) = relay();
    let (tx, _rx) = mpsc::unbounded_channel();
    relay.on_status(status("cam", true, 1));
    let viewer = relay.new_viewer();
    let cam = DeviceId::parse("cam").unwrap();
    relay
        .offer(viewer, &tx, cam.clone(), "v=0".into(), opts(), sid(1))
        .unwrap();
    let claims = offered_claims(&mut broker);
    assert_eq!((claims.role, claims.talk), (Role::Control, true));
    let silent = OfferOptions {
        talk: false,
        ..opts()
    };
    relay
        .offer(viewer, &tx, cam, "v=0".into(), silent, sid(2))
        .unwrap();
    let claims = offered_claims(&mut broker);
    assert_eq!((claims.role, claims.talk), (Role::Control, false));
}
