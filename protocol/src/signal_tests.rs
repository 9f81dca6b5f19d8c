//! The envelope on the wire: round trips, limits, and decoding whatever arrives.

use super::*;

fn gw() -> Party {
    Party::Gateway(InstanceId::parse("gw-1").unwrap())
}

fn ids() -> (DeviceId, SessionId) {
    (
        DeviceId::parse("cam").unwrap(),
        SessionId::from_random([7; 16]),
    )
}

#[test]
fn round_trips_with_a_type_tag() {
    let (d, s) = ids();
    let env = Request::new(
        gw(),
        d,
        s,
        ToDevice::Offer {
            sdp: "v=0".into(),
            trickle: true,
            role: Role::View,
            grant: None,
        },
    )
    .reply_to("ferrocam/v1/devices/cam/reply/g".into());
    let bytes = env.encode();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(r#""type":"offer""#), "{text}");
    assert!(text.contains(r#""from":{"gateway":"gw-1"}"#), "{text}");
    assert_eq!(Request::decode(&bytes).unwrap(), env);
}

#[test]
fn a_message_of_the_other_direction_does_not_decode() {
    let (d, s) = ids();
    let device = Party::Device(d.clone());
    let error = FromDevice::Error {
        code: ErrorCode::Busy,
        message: "full".into(),
    };
    let reply = Reply::new(device, d.clone(), s.clone(), error).encode();
    assert!(matches!(
        Request::decode(&reply),
        Err(DecodeError::Malformed(_))
    ));
    let invite = ToDevice::Invite {
        role: Role::View,
        grant: None,
    };
    let request = Request::new(gw(), d, s, invite).encode();
    assert!(matches!(
        Reply::decode(&request),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn the_devices_offer_reads_as_before() {
    let json = r#"{"v":1,"session":"s","device":"d","from":{"device":"d"},"type":"offer","sdp":"v=0","role":"control"}"#;
    let reply = Reply::decode(json.as_bytes()).unwrap();
    assert_eq!(
        reply.body,
        FromDevice::Offer {
            sdp: "v=0".into(),
            role: Role::Control
        }
    );
}

#[test]
fn rejects_garbage_oversize_and_other_versions() {
    assert!(matches!(
        Request::decode(b"\xff\x00garbage"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        Request::decode(&vec![b' '; MAX_SIGNAL_PAYLOAD + 1]),
        Err(DecodeError::TooLarge(_))
    ));
    let (d, s) = ids();
    let mut env = Request::new(gw(), d, s, ToDevice::EndOfCandidates);
    env.v = 99;
    assert!(matches!(
        Request::decode(&env.encode()),
        Err(DecodeError::Version(99))
    ));
}

#[test]
fn rejects_ids_with_wildcards_inside_envelopes() {
    let json = r#"{"v":1,"session":"abc","device":"a/#","from":{"gateway":"g"},"type":"end_of_candidates"}"#;
    assert!(Request::decode(json.as_bytes()).is_err());
}

#[test]
fn offers_trickle_unless_told_otherwise() {
    let json =
        r#"{"v":1,"session":"s","device":"d","from":{"gateway":"g"},"type":"offer","sdp":"v=0"}"#;
    let env = Request::decode(json.as_bytes()).unwrap();
    assert_eq!(
        env.body,
        ToDevice::Offer {
            sdp: "v=0".into(),
            trickle: true,
            role: Role::View,
            grant: None,
        }
    );
    let (d, s) = ids();
    let whep = Request::new(
        gw(),
        d,
        s,
        ToDevice::Offer {
            sdp: "v=0".into(),
            trickle: false,
            role: Role::View,
            grant: None,
        },
    );
    assert_eq!(Request::decode(&whep.encode()).unwrap(), whep);
}

#[test]
fn malformed_requests_still_yield_a_reply_route_when_the_header_parses() {
    let json = br#"{"v":1,"session":"s1","device":"d","reply_to":"t","type":"warp"}"#;
    assert!(Request::decode(json).is_err());
    let (s, d, t) = Request::reply_route(json).unwrap();
    assert_eq!((s.as_str(), d.as_str(), t.as_str()), ("s1", "d", "t"));
    assert!(Request::reply_route(br#"{"session":"a/b","device":"d","reply_to":"t"}"#).is_none());
    assert!(Request::reply_route(b"garbage").is_none());
}

/// Fuzz-style checks: whatever arrives on a signaling topic, decoding returns a value or a typed
/// error and never panics or overflows the stack.
mod fuzz {
    use super::*;

    /// xorshift64*: deterministic, dependency-free pseudo-random bytes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn sample() -> Vec<u8> {
        Request::new(
            Party::Gateway(InstanceId::parse("gw-1").unwrap()),
            DeviceId::parse("cam").unwrap(),
            SessionId::from_random([1; 16]),
            ToDevice::Candidate {
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                },
            },
        )
        .encode()
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let payload = rng.bytes(i % 700);
            let _ = Request::decode(&payload);
            let _ = Reply::decode(&payload);
            let _ = Request::reply_route(&payload);
        }
    }

    #[test]
    fn every_truncation_of_a_valid_envelope_is_a_typed_error() {
        let full = sample();
        assert!(Request::decode(&full).is_ok());
        for len in 0..full.len() {
            assert!(
                matches!(
                    Request::decode(&full[..len]),
                    Err(DecodeError::Malformed(_))
                ),
                "truncation at {len} decoded"
            );
        }
    }

    #[test]
    fn random_byte_flips_never_panic() {
        let full = sample();
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let mut mutated = full.clone();
            let at = rng.next() as usize % mutated.len();
            mutated[at] = rng.next() as u8;
            let _ = Request::decode(&mutated);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(matches!(
            Request::decode(deep.as_bytes()),
            Err(DecodeError::TooLarge(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Request::decode(deep.as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
        let nested_field = format!(
            r#"{{"v":1,"session":"s","device":"d","from":{{"gateway":"g"}},"type":"hang_up","reason":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(Request::decode(nested_field.as_bytes()).is_err());
    }

    #[test]
    fn huge_strings_within_the_limit_are_fine_and_beyond_it_refused_before_parsing() {
        let sdp = "a".repeat(MAX_SIGNAL_PAYLOAD - 200);
        let fits = format!(
            r#"{{"v":1,"session":"s","device":"d","from":{{"gateway":"g"}},"type":"offer","sdp":"{sdp}"}}"#
        );
        assert!(Request::decode(fits.as_bytes()).is_ok());
        // Over the limit: refused by size even though the bytes are not JSON at all.
        let over = vec![0xffu8; MAX_SIGNAL_PAYLOAD + 1];
        assert!(matches!(
            Request::decode(&over),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
