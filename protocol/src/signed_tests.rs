use super::*;

const TOPIC: &str = "ferrocam/v1/devices/cam/status";
const MSG: &[u8] = br#"{"v":1,"device":"cam","online":true,"epoch":7}"#;

fn pair() -> (Signer, Verifier) {
    let signer = Signer::from_seed_base64(&generate_seed()).unwrap();
    let verifier = Verifier::from_base64(&signer.public_key()).unwrap();
    (signer, verifier)
}

#[test]
fn a_sealed_message_opens_on_its_topic_with_the_signers_key() {
    let (signer, verifier) = pair();
    let sealed = signer.seal(TOPIC, MSG, 1_000);
    let opened = verifier.open(TOPIC, &sealed).unwrap();
    assert_eq!(opened.msg, MSG);
    assert_eq!(opened.at_ms, 1_000);
    // The wrapper is plain JSON, readable with any MQTT client.
    let json: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    assert_eq!(json["msg"]["device"], "cam");
}

#[test]
fn another_key_topic_time_or_message_does_not_verify() {
    let (signer, verifier) = pair();
    let (_, stranger) = pair();
    let sealed = signer.seal(TOPIC, MSG, 1_000);
    assert_eq!(
        stranger.open(TOPIC, &sealed),
        Err(SignedError::BadSignature)
    );
    // Moved to another device's topic.
    assert_eq!(
        verifier.open("ferrocam/v1/devices/other/status", &sealed),
        Err(SignedError::BadSignature)
    );
    // Re-dated.
    let text = String::from_utf8(sealed.clone()).unwrap();
    let redated = text.replacen("\"at\":1000", "\"at\":9000", 1);
    assert_eq!(
        verifier.open(TOPIC, redated.as_bytes()),
        Err(SignedError::BadSignature)
    );
    // One byte of the message changed.
    let edited = text.replacen("\"epoch\":7", "\"epoch\":8", 1);
    assert_eq!(
        verifier.open(TOPIC, edited.as_bytes()),
        Err(SignedError::BadSignature)
    );
    // Whitespace around the message is not part of what was signed: it still verifies, and
    // the message returned is exactly the signed bytes.
    let spaced = text.replacen("\"msg\":", "\"msg\": ", 1);
    assert_eq!(verifier.open(TOPIC, spaced.as_bytes()).unwrap().msg, MSG);
}

#[test]
fn unsigned_and_oversized_payloads_are_refused_before_any_crypto() {
    let (_, verifier) = pair();
    for payload in [
        MSG,
        b"",
        b"{}",
        br#"{"at":1,"sig":"AA","msg":{}}"#,
        br#"{"at":-1,"sig":"","msg":{}}"#,
        br#"{"at":1,"sig":"not base64!","msg":{}}"#,
    ] {
        assert_eq!(
            verifier.open(TOPIC, payload),
            Err(SignedError::Malformed),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    let huge = vec![b' '; MAX_SIGNED_PAYLOAD + 1];
    assert_eq!(verifier.open(TOPIC, &huge), Err(SignedError::TooLarge));
}

#[test]
fn freshness_is_symmetric_around_now() {
    let (signer, verifier) = pair();
    let sealed = signer.seal(TOPIC, MSG, 1_000_000);
    let opened = verifier.open(TOPIC, &sealed).unwrap();
    assert!(opened.is_fresh(1_000_000 + FRESH_FOR_MS));
    assert!(opened.is_fresh(1_000_000 - FRESH_FOR_MS));
    assert!(!opened.is_fresh(1_000_000 + FRESH_FOR_MS + 1));
    assert!(!opened.is_fresh(1_000_000 - FRESH_FOR_MS - 1));
}

#[test]
fn keys_are_checked_when_loaded() {
    assert!(Signer::from_seed_base64("short").is_err());
    assert!(Verifier::from_base64("AAAA").is_err());
    assert!(Verifier::from_base64("!!").is_err());
    let (signer, _) = pair();
    // A padded public key is accepted too.
    assert!(Verifier::from_base64(&format!("{}=", signer.public_key())).is_ok());
}
