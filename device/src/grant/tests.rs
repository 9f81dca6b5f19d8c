use ferrocam_protocol::control::Role;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::KeyPair;

use super::*;

/// A gateway's key pair: the PKCS#8 private key and the base64url public key.
fn keypair() -> (Vec<u8>, String) {
    use base64::Engine;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    (pkcs8.as_ref().to_vec(), public)
}

fn claims(device: &str, session: &SessionId, exp_offset: i64) -> GrantClaims {
    let now = now_secs();
    GrantClaims {
        aud: device.to_owned(),
        sub: session.to_string(),
        role: Role::Control,
        talk: true,
        exp: now.saturating_add_signed(exp_offset),
        iat: now.saturating_add_signed(exp_offset - GRANT_TTL_SECS as i64),
        iss: "gw".into(),
        usr: "alice".into(),
        ice: vec![],
        ice_sealed: None,
        answer: None,
        attach: false,
        jti: String::new(),
    }
}

fn sign(private: &[u8], claims: &GrantClaims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_der(private),
    )
    .unwrap()
}

fn setup() -> (Vec<u8>, GrantVerifier, SessionId) {
    let (private, public) = keypair();
    let verifier = GrantVerifier::new(DeviceId::parse("cam").unwrap(), &public).unwrap();
    (private, verifier, SessionId::from_random([9; 16]))
}

#[test]
fn a_good_grant_is_accepted_once() {
    let (key, mut v, session) = setup();
    let grant = sign(&key, &claims("cam", &session, 30));
    let accepted = v.verify(Some(&grant), &session).unwrap();
    assert_eq!(
        (accepted.role, accepted.usr.as_str()),
        (Role::Control, "alice")
    );
    assert_eq!(v.verify(Some(&grant), &session), Err(GrantError::Replayed));
}

#[test]
fn unsigned_and_forged_grants_are_refused() {
    let (_, mut v, session) = setup();
    assert_eq!(v.verify(None, &session), Err(GrantError::Missing));
    assert!(matches!(
        v.verify(Some("not.a.jwt"), &session),
        Err(GrantError::Invalid(_))
    ));
    // Signed by another key: a leaked broker password is not a grant key.
    let (other, _) = keypair();
    let forged = sign(&other, &claims("cam", &session, 30));
    assert!(matches!(
        v.verify(Some(&forged), &session),
        Err(GrantError::Invalid(_))
    ));
    // An HMAC token with the public key as secret (algorithm confusion) must fail too.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("cam", &session, 30),
        &EncodingKey::from_secret(b"whatever"),
    )
    .unwrap();
    assert!(matches!(
        v.verify(Some(&hs), &session),
        Err(GrantError::Invalid(_))
    ));
}

#[test]
fn expired_wrong_device_and_wrong_session_grants_are_refused() {
    let (key, mut v, session) = setup();
    let expired = sign(
        &key,
        &claims("cam", &session, -(GRANT_LEEWAY_SECS as i64) - 5),
    );
    assert_eq!(v.verify(Some(&expired), &session), Err(GrantError::Expired));
    let elsewhere = sign(&key, &claims("garage", &session, 30));
    assert_eq!(
        v.verify(Some(&elsewhere), &session),
        Err(GrantError::WrongDevice("garage".into()))
    );
    let other_session = SessionId::from_random([1; 16]);
    let grant = sign(&key, &claims("cam", &other_session, 30));
    assert_eq!(
        v.verify(Some(&grant), &session),
        Err(GrantError::WrongSession)
    );
}

#[test]
fn overlong_grants_are_refused() {
    let (key, mut v, session) = setup();
    let mut c = claims("cam", &session, 30);
    c.exp += 3600;
    assert!(matches!(
        v.verify(Some(&sign(&key, &c)), &session),
        Err(GrantError::Invalid(_))
    ));
}

#[test]
fn bad_keys_are_refused_at_load() {
    let id = DeviceId::parse("cam").unwrap();
    assert!(GrantVerifier::new(id.clone(), "not base64 !").is_err());
    assert!(GrantVerifier::new(id, "AAAA").is_err());
}

#[test]
fn an_answer_needs_a_grant_naming_exactly_it_and_such_a_grant_opens_nothing() {
    use base64::Engine;
    let (key, mut v, session) = setup();
    let sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\n";
    let digest = ring::digest::digest(&ring::digest::SHA256, sdp.as_bytes());
    let answer_claims = GrantClaims {
        answer: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())),
        ..claims("cam", &session, 30)
    };
    let grant = sign(&key, &answer_claims);
    assert_eq!(v.verify_answer(Some(&grant), &session, sdp), Ok(()));
    // Another answer (say, another certificate) under the same grant is refused.
    assert_eq!(
        v.verify_answer(
            Some(&grant),
            &session,
            "v=0\r\na=fingerprint:sha-256 EE:FF\r\n"
        ),
        Err(GrantError::WrongAnswer)
    );
    assert_eq!(
        v.verify_answer(None, &session, sdp),
        Err(GrantError::Missing)
    );
    // A session grant is no answer grant, and an answer grant opens no session.
    let session_grant = sign(&key, &claims("cam", &session, 30));
    assert_eq!(
        v.verify_answer(Some(&session_grant), &session, sdp),
        Err(GrantError::WrongAnswer)
    );
    let other = SessionId::from_random([3; 16]);
    assert_eq!(
        v.verify_answer(Some(&grant), &other, sdp),
        Err(GrantError::WrongSession)
    );
    assert_eq!(
        v.verify(Some(&grant), &session).map(|_| ()),
        Err(GrantError::AnswerOnly)
    );
}

#[test]
fn only_attach_grants_move_a_session_and_each_is_accepted_once() {
    let (key, mut v, session) = setup();
    let opening = sign(&key, &claims("cam", &session, 30));
    v.verify(Some(&opening), &session).unwrap();
    // An opening grant (say, read off the broker) does not move the session.
    assert_eq!(
        v.check_attach(Some(&opening), &session),
        Err(GrantError::NotAttach)
    );
    // A new gateway's attach grant does, once; it opens nothing.
    let attach_claims = GrantClaims {
        iss: "gw-2".into(),
        attach: true,
        jti: "n1".into(),
        ..claims("cam", &session, 30)
    };
    let attach = sign(&key, &attach_claims);
    let checked = v.check_attach(Some(&attach), &session).unwrap();
    assert_eq!(checked.iss, "gw-2");
    assert_eq!(v.remember_attach(&attach, &checked), Ok(()));
    assert_eq!(
        v.remember_attach(&attach, &checked),
        Err(GrantError::Replayed)
    );
    let other_session = SessionId::from_random([4; 16]);
    let opens = sign(
        &key,
        &GrantClaims {
            attach: true,
            ..claims("cam", &other_session, 30)
        },
    );
    assert_eq!(
        v.verify(Some(&opens), &other_session),
        Err(GrantError::AttachOnly)
    );
    // The same claims with another nonce are another grant (two resumes in one second).
    let again = sign(
        &key,
        &GrantClaims {
            jti: "n2".into(),
            ..attach_claims
        },
    );
    assert_ne!(again, attach);
    assert_eq!(v.remember_attach(&again, &checked), Ok(()));
    // An answer grant attaches nothing; unsigned or wrong-session ones are refused as ever.
    let answer = sign(
        &key,
        &GrantClaims {
            answer: Some("digest".into()),
            ..claims("cam", &session, 31)
        },
    );
    assert_eq!(
        v.check_attach(Some(&answer), &session),
        Err(GrantError::AnswerOnly)
    );
    assert_eq!(v.check_attach(None, &session), Err(GrantError::Missing));
    let wrong = sign(&key, &claims("cam", &other_session, 30));
    assert_eq!(
        v.check_attach(Some(&wrong), &session),
        Err(GrantError::WrongSession)
    );
}

#[test]
fn turn_servers_sealed_to_this_device_open_and_others_do_not() {
    use ferrocam_protocol::signed::{Signer, Verifier, generate_seed};
    let (private, verifier, session) = setup();
    let device = Signer::from_seed_base64(&generate_seed()).unwrap();
    let mut verifier = verifier.with_opener(device.opener());
    let to_device = Verifier::from_base64(&device.public_key())
        .unwrap()
        .recipient()
        .unwrap();
    let servers = vec![ferrocam_protocol::viewer::IceServer {
        urls: vec!["turn:turn.example.org:3478".into()],
        username: Some("1800000000:device".into()),
        credential: Some("secret".into()),
    }];
    let sealed = to_device.seal(&serde_json::to_vec(&servers).unwrap());
    let grant = sign(
        &private,
        &GrantClaims {
            ice_sealed: Some(sealed),
            ..claims("cam", &session, 30)
        },
    );
    let claims_seen = verifier.verify(Some(&grant), &session).unwrap();
    assert_eq!(claims_seen.ice, servers);

    // Sealed to another device: refused, not opened with nothing.
    let stranger = Signer::from_seed_base64(&generate_seed()).unwrap();
    let to_stranger = Verifier::from_base64(&stranger.public_key())
        .unwrap()
        .recipient()
        .unwrap();
    let other = SessionId::from_random([7; 16]);
    let grant = sign(
        &private,
        &GrantClaims {
            ice_sealed: Some(to_stranger.seal(b"[]")),
            ..claims("cam", &other, 30)
        },
    );
    assert_eq!(
        verifier.verify(Some(&grant), &other).unwrap_err(),
        GrantError::Sealed
    );
}
